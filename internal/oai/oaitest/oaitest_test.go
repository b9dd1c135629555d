package oaitest

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestStreamHandler: each Stream option changes the body it serves as
// documented, and the server records what it was sent.
func TestStreamHandler(t *testing.T) {
	tests := []struct {
		name       string
		stream     Stream
		wantStatus int
		wantBody   []string // substrings, in order
		wantNot    []string
	}{
		{"tokens with usage", Stream{Tokens: 2}, 200,
			[]string{`"role":"assistant"`, `"content":"t1 "`, `"completion_tokens":1`, `"content":"t2 "`, `"choices":[],"usage":{"prompt_tokens":7,"total_tokens":9,"completion_tokens":2}`, "data: [DONE]"},
			nil},
		{"no usage", Stream{Tokens: 2, NoUsage: true}, 200,
			[]string{`"content":"t1 "`, `"content":"t2 "`, "data: [DONE]"},
			[]string{`"usage"`}},
		{"truncated", Stream{Tokens: 5, TruncateAfter: 2}, 200,
			[]string{`"content":"t1 "`, `"content":"t2 "`},
			[]string{`"content":"t3 "`, "[DONE]", `"choices":[]`}},
		{"completions", Stream{Tokens: 1, Completions: true}, 200,
			[]string{`"object":"text_completion"`, `"text":"t1 "`, "data: [DONE]"},
			[]string{`"role"`}},
		{"error", Stream{Status: 503, Message: "overloaded"}, 503,
			[]string{`"message":"overloaded"`, `"type":"ServiceUnavailableError"`, `"code":503`},
			[]string{"data:"}},
		{"bad request type", Stream{Status: 400, Message: "no"}, 400,
			[]string{`"type":"BadRequestError"`},
			nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := NewServer(t, tt.stream.Handler())
			resp, err := http.Post(s.URL+"/v1/chat/completions", "application/json", strings.NewReader(`{"model":"m"}`))
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatal(err)
			}
			body := string(b)
			if resp.StatusCode != tt.wantStatus {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.wantStatus)
			}
			rest := body
			for _, w := range tt.wantBody {
				i := strings.Index(rest, w)
				if i < 0 {
					t.Fatalf("body lacks %q after the earlier parts:\n%s", w, body)
				}
				rest = rest[i+len(w):]
			}
			for _, w := range tt.wantNot {
				if strings.Contains(body, w) {
					t.Errorf("body has %q, want none:\n%s", w, body)
				}
			}
			if s.Requests.Load() != 1 || len(s.Bodies()) != 1 || s.Bodies()[0]["model"] != "m" || s.MaxOpen() != 1 || s.Open() != 0 {
				t.Errorf("recorded %d requests, bodies %v, max open %d, open %d; want 1, the model, 1, 0",
					s.Requests.Load(), s.Bodies(), s.MaxOpen(), s.Open())
			}
		})
	}
}

// TestStreamTiming: FirstDelay and Gap space the chunks out.
func TestStreamTiming(t *testing.T) {
	s := NewServer(t, Stream{Tokens: 3, FirstDelay: 100 * time.Millisecond, Gap: 50 * time.Millisecond}.Handler())
	start := time.Now()
	resp, err := http.Get(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took < 200*time.Millisecond {
		t.Errorf("stream took %v, want at least 100ms + 2×50ms", took)
	}
}

// TestTLSServer: a TLS fake records the handshake and trusts its RootCAs.
func TestTLSServer(t *testing.T) {
	s := NewTLSServer(t, StreamTokens(1, 0))
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: s.RootCAs(), ForceAttemptHTTP2: true}}
	defer c.CloseIdleConnections()
	resp, err := c.Get(s.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if p := s.Protos(); len(p) != 1 || p[0] != 2 {
		t.Errorf("protocols %v, want one HTTP/2 request", p)
	}
	if a := s.ALPN(); len(a) != 1 || len(a[0]) == 0 {
		t.Errorf("ALPN %v, want one ClientHello offering protocols", a)
	}
	if s.Conns.Load() != 1 {
		t.Errorf("%d connections, want 1", s.Conns.Load())
	}
	s.ResetHandshakes()
	if len(s.SNI()) != 0 || len(s.ALPN()) != 0 {
		t.Errorf("handshakes %v %v after reset, want none", s.SNI(), s.ALPN())
	}
}

// TestRefusedURL: nothing answers on the URL.
func TestRefusedURL(t *testing.T) {
	resp, err := http.Get(RefusedURL(t))
	if err == nil {
		resp.Body.Close()
		t.Fatal("request succeeded, want connection refused")
	}
}
