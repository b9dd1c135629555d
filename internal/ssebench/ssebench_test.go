package ssebench

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

func TestStreamShapeAndKeepAlive(t *testing.T) {
	var firsts atomic.Int64
	s, err := Start(Config{Tokens: 10, TokensPerChunk: 3, OnFirstToken: func(id string, at time.Time) {
		if id == "r1" && !at.IsZero() {
			firsts.Add(1)
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	for _, path := range []string{"/v1/chat/completions", "/v1/completions", "/v1/chat/completions"} {
		req, _ := http.NewRequest(http.MethodPost, s.URL+path, strings.NewReader(`{"stream":true}`))
		req.Header.Set("X-Request-Id", "r1")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream; charset=utf-8" {
			t.Fatalf("status %d, content type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
		var data []string
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
				data = append(data, v)
			}
		}
		resp.Body.Close()
		if err := sc.Err(); err != nil {
			t.Fatal(err)
		}
		wantEvents := 4 + 1 + 1 // 4 content chunks (3+3+3+1), usage, [DONE]
		if path == "/v1/chat/completions" {
			wantEvents++ // role chunk
		}
		if len(data) != wantEvents || data[len(data)-1] != "[DONE]" {
			t.Fatalf("%s: %d events ending %q, want %d ending [DONE]", path, len(data), data[len(data)-1], wantEvents)
		}
		for _, d := range data[:len(data)-1] {
			if !json.Valid([]byte(d)) {
				t.Fatalf("invalid chunk JSON %s", d)
			}
		}
		var last struct {
			Usage struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		_ = json.Unmarshal([]byte(data[len(data)-2]), &last)
		if last.Usage.CompletionTokens != 10 {
			t.Errorf("final usage %d, want 10", last.Usage.CompletionTokens)
		}
	}
	if st := s.Stats(); st.Conns != 1 || st.Streams != 3 || st.Tokens != 30 || firsts.Load() != 3 {
		t.Errorf("stats %+v, first tokens %d; want 1 connection, 3 streams, 30 tokens, 3 first tokens", st, firsts.Load())
	}
}

func TestHoldAndRelease(t *testing.T) {
	s, err := Start(Config{Tokens: 8, HoldAfter: 4})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	done := make(chan string)
	go func() {
		resp, err := http.Post(s.URL+"/v1/completions", "application/json", strings.NewReader("{}"))
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- string(b)
	}()
	deadline := time.Now().Add(5 * time.Second)
	for s.Stats().Held != 1 {
		if time.Now().After(deadline) {
			t.Fatal("stream never held")
		}
		time.Sleep(time.Millisecond)
	}
	if st := s.Stats(); st.Tokens != 4 {
		t.Errorf("tokens written before the hold = %d, want 4", st.Tokens)
	}
	resp, err := http.Post(s.URL+"/bench/release", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if b := <-done; !strings.Contains(b, "data: [DONE]") {
		t.Errorf("body does not end with [DONE]: %q", b)
	}
	if st := s.Stats(); st.Held != 0 || st.MaxHeld != 1 || st.Tokens != 8 {
		t.Errorf("stats %+v, want 0 held, max 1, 8 tokens", st)
	}
}

// TestMonotonicIsGoClock checks that Go's monotonic clock is
// CLOCK_MONOTONIC: a time.Now converted with MonoOffset matches a raw read
// taken right after it, 50 ms later, to within a few microseconds (no
// drift, no different base).
func TestMonotonicIsGoClock(t *testing.T) {
	ref, at := MonoOffset()
	time.Sleep(50 * time.Millisecond)
	best := int64(-1)
	for range 100 {
		a := Monotonic()
		now := time.Now()
		b := Monotonic()
		d := at + int64(now.Sub(ref)) - (a + (b-a)/2)
		if d < 0 {
			d = -d
		}
		if best < 0 || d < best {
			best = d
		}
	}
	if best > 5000 {
		t.Fatalf("time.Now converted to CLOCK_MONOTONIC is off by %d ns", best)
	}
}

func TestRecordFirstTokens(t *testing.T) {
	s, err := Start(Config{Tokens: 3, RecordFirstTokens: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
	before := Monotonic()
	for _, id := range []string{"a", "b", ""} {
		req, _ := http.NewRequest(http.MethodPost, s.URL+"/v1/completions", strings.NewReader(`{}`))
		if id != "" {
			req.Header.Set("X-Request-Id", id)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	after := Monotonic()
	get := func() map[string][2]int64 {
		resp, err := c.Get(s.URL + "/bench/first-tokens")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string][2]int64
		if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	m := get()
	if len(m) != 2 || m["a"][0] < before || m["b"][1] > after || m["a"][1] > m["b"][0] || m["a"][0] > m["a"][1] {
		t.Fatalf("stamps %v, want a's before ≤ after ≤ b's, within [%d, %d]", m, before, after)
	}
	if m := get(); len(m) != 0 {
		t.Fatalf("stamps %v after they were read, want none", m)
	}
}

// TestTLSAndHTTP2Modes: with TLS the raw server answers over HTTP/1.1 on
// https://, and with HTTP2 as well net/http's server answers over HTTP/2,
// both with the same events and first-token stamps.
func TestTLSAndHTTP2Modes(t *testing.T) {
	certPEM, keyPEM, err := SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	srvTLS, err := ServerTLS(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	cliTLS, err := ClientRoots(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		http2     bool
		wantProto int
	}{
		{"tls", false, 1},
		{"http2", true, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Start(Config{Tokens: 4, TLS: srvTLS, HTTP2: tt.http2, RecordFirstTokens: true})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if !strings.HasPrefix(s.URL, "https://") {
				t.Fatalf("URL %q, want https://", s.URL)
			}
			c := &http.Client{Transport: &http.Transport{TLSClientConfig: cliTLS, ForceAttemptHTTP2: true}}
			defer c.CloseIdleConnections()
			req, _ := http.NewRequest(http.MethodPost, s.URL+"/v1/chat/completions", strings.NewReader(`{}`))
			req.Header.Set("X-Request-Id", "r1")
			req.Header.Set("X-Bench-Delay", "1ms")
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.ProtoMajor != tt.wantProto {
				t.Errorf("HTTP/%d, want HTTP/%d", resp.ProtoMajor, tt.wantProto)
			}
			if n := strings.Count(string(b), "data: "); n != 1+4+1+1 || !strings.HasSuffix(string(b), "data: [DONE]\n\n") {
				t.Errorf("%d events, body ending %q: want 7 ending [DONE]", n, b[max(0, len(b)-20):])
			}
			resp, err = c.Get(s.URL + "/bench/first-tokens")
			if err != nil {
				t.Fatal(err)
			}
			var stamps map[string][2]int64
			err = json.NewDecoder(resp.Body).Decode(&stamps)
			resp.Body.Close()
			if err != nil || stamps["r1"][0] == 0 || stamps["r1"][1] < stamps["r1"][0] {
				t.Errorf("first-token stamps %v (err %v), want r1's before ≤ after", stamps, err)
			}
			if st := s.Stats(); st.Conns != 1 || st.Tokens != 4 {
				t.Errorf("stats %+v, want 1 connection and 4 tokens", st)
			}
		})
	}
	if _, err := Start(Config{HTTP2: true}); err == nil || !strings.Contains(err.Error(), "needs TLS") {
		t.Errorf("HTTP2 without TLS: error %v, want one saying it needs TLS", err)
	}
}
