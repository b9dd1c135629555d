package oai

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/internal/oai/oaitest"
	"github.com/ttftlab/ttftlab/internal/ssebench"
)

// rawServer is a TCP server whose responses are written byte for byte by
// the test, for the framing cases net/http's server never produces.
type rawServer struct {
	URL   string
	conns atomic.Int64
}

// newRawServer calls serve for every request on every connection; serve
// returns false to close the connection.
func newRawServer(t *testing.T, serve func(c net.Conn, req *http.Request) bool) *rawServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawServer{URL: "http://" + ln.Addr().String()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	live := map[net.Conn]bool{}
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s.conns.Add(1)
			mu.Lock()
			live[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					_, _ = io.Copy(io.Discard, req.Body)
					if !serve(c, req) {
						return
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range live {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return s
}

const sseHead = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"

// sseEvents is a short chat stream: role, two tokens, usage, [DONE].
func sseEvents() []string {
	return []string{
		"data: " + oaitest.ChatRole(0) + "\n\n",
		"data: " + oaitest.ChatContent("a", 1) + "\n\n",
		"data: " + oaitest.ChatContent("b", 2) + "\n\n",
		"data: " + oaitest.FinalUsage(7, 2) + "\n\n",
		"data: [DONE]\n\n",
	}
}

// chunked frames each event as one HTTP chunk, with ext after the size.
func chunked(events []string, ext, trailer string) string {
	var b strings.Builder
	for _, e := range events {
		fmt.Fprintf(&b, "%x%s\r\n%s\r\n", len(e), ext, e)
	}
	b.WriteString("0\r\n" + trailer + "\r\n")
	return b.String()
}

func wantTwoTokens(t *testing.T, r Result) {
	t.Helper()
	wantOK(t, r)
	if r.OutputTokens != 2 || len(r.Marks) != 2 || r.Preview != "ab" || r.UsageSource != UsageContinuous {
		t.Fatalf("out %d marks %d preview %q source %q; want 2, 2, ab, continuous", r.OutputTokens, len(r.Marks), r.Preview, r.UsageSource)
	}
}

func TestH1Framing(t *testing.T) {
	body := strings.Join(sseEvents(), "")
	tests := []struct {
		name      string
		resp      string
		split     bool // write one byte at a time
		wantReuse bool
	}{
		{"chunked", sseHead + chunked(sseEvents(), "", ""), false, true},
		{"chunk extensions", sseHead + chunked(sseEvents(), ` ; name=value;q="a;b"`, ""), false, true},
		{"trailers", sseHead + chunked(sseEvents(), "", "X-Trailer: 1\r\nX-Other: two\r\n"), false, true},
		{"upper-case hex and one chunk split across reads", sseHead + strings.ToUpper(fmt.Sprintf("%x", len(body))) + "\r\n" + body + "\r\n0\r\n\r\n", true, true},
		{"every byte a separate read", sseHead + chunked(sseEvents(), ";x=y", "T: v\r\n"), true, true},
		{"Content-Length body", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s", len(body), body), false, true},
		{"Connection: close", "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(sseEvents(), "", ""), false, false},
		{"HTTP/1.0 body until close", "HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\n" + body, false, false},
		{"100 Continue first", "HTTP/1.1 100 Continue\r\n\r\n" + sseHead + chunked(sseEvents(), "", ""), false, true},
		{"long header line", "HTTP/1.1 200 OK\r\nX-Long: " + strings.Repeat("v", 10000) + "\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(sseEvents(), "", ""), false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newRawServer(t, func(c net.Conn, req *http.Request) bool {
				if !tt.split {
					_, err := io.WriteString(c, tt.resp)
					return err == nil && tt.wantReuse
				}
				for i := range len(tt.resp) {
					if _, err := c.Write([]byte{tt.resp[i]}); err != nil {
						return false
					}
					if i%16 == 0 {
						time.Sleep(50 * time.Microsecond)
					}
				}
				return true
			})
			c := newClient(t, Config{MaxConns: 1})
			defer c.Close()
			for i := range 2 {
				r := c.Do(context.Background(), chatReq(s.URL))
				wantTwoTokens(t, r)
				if i == 1 && r.Reused != tt.wantReuse {
					t.Errorf("second request Reused = %v, want %v", r.Reused, tt.wantReuse)
				}
			}
			if want := int64(2); tt.wantReuse {
				if s.conns.Load() != 1 {
					t.Errorf("server accepted %d connections, want 1", s.conns.Load())
				}
			} else if s.conns.Load() != want {
				t.Errorf("server accepted %d connections, want %d", s.conns.Load(), want)
			}
		})
	}
}

func TestH1Errors(t *testing.T) {
	body := strings.Join(sseEvents(), "")
	tests := []struct {
		name       string
		resp       string
		wantKind   string
		wantDetail string
	}{
		{"server closes mid-chunk", sseHead + "200\r\ndata: {", KindTruncated, ""},
		{"server closes between chunks", sseHead + chunked(sseEvents()[:2], "", "")[:len(chunked(sseEvents()[:2], "", ""))-5], KindTruncated, ""},
		{"server closes mid Content-Length body", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: %d\r\n\r\n%s", len(body), body[:len(body)/2]), KindTruncated, ""},
		{"malformed status line", "HTTP/1.1 2xx OK\r\n\r\n", KindOther, "malformed HTTP status line"},
		{"not HTTP", "SSH-2.0-OpenSSH_9.2\r\n\r\n", KindOther, "malformed HTTP status line"},
		{"malformed chunk size", sseHead + "zz\r\n", KindOther, "malformed chunked encoding"},
		{"chunk without CRLF", sseHead + "3\r\nabcX\r\n", KindOther, "malformed chunked encoding"},
		{"headers cut", "HTTP/1.1 200 OK\r\nContent-Type: text/ev", KindConnectionReset, ""},
		{"bad Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", KindOther, "Content-Length"},
		{"503 with body", "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 29\r\n\r\n{\"error\":\"engine overloaded\"}", "http_503", "engine overloaded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newRawServer(t, func(c net.Conn, req *http.Request) bool {
				_, _ = io.WriteString(c, tt.resp)
				return false
			})
			c := newClient(t, Config{MaxConns: 1})
			defer c.Close()
			r := c.Do(context.Background(), chatReq(s.URL))
			if r.Err == nil || r.Err.Kind != tt.wantKind || !strings.Contains(r.Err.Detail, tt.wantDetail) {
				t.Fatalf("err %v, want kind %s with %q", r.Err, tt.wantKind, tt.wantDetail)
			}
			if r.Done.IsZero() {
				t.Errorf("Done not set")
			}
		})
	}
}

// TestH1ServerClosedIdle covers a keep-alive timeout: the server closes an
// idle connection (without Connection: close), and the next request must
// go through on a new one.
func TestH1ServerClosedIdle(t *testing.T) {
	s := newRawServer(t, func(c net.Conn, req *http.Request) bool {
		_, _ = io.WriteString(c, sseHead+chunked(sseEvents(), "", ""))
		return false
	})
	c := newClient(t, Config{MaxConns: 1})
	defer c.Close()
	for range 3 {
		wantTwoTokens(t, c.Do(context.Background(), chatReq(s.URL)))
		// Let the FIN arrive: the liveness check then sees it. (A FIN that
		// arrives only after the request was written fails that request,
		// as with net/http: see TestH1NoResendAfterWrite.)
		time.Sleep(20 * time.Millisecond)
	}
	if s.conns.Load() != 3 {
		t.Errorf("server accepted %d connections, want 3", s.conns.Load())
	}
}

// TestH1RequestHeaders checks what h1 sends: Host, the body, user headers
// over the built ones, and that a header with a line break is refused.
func TestH1RequestHeaders(t *testing.T) {
	var got http.Header
	var host string
	f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
		got, host = r.Header.Clone(), r.Host
		s := oaitest.StartSSE(w)
		for _, e := range sseEvents() {
			s.Raw(e)
		}
	})
	c := newClient(t, Config{MaxConns: 1})
	defer c.Close()
	req := chatReq(f.URL)
	req.APIKey = "k"
	req.Headers = map[string]string{"x-tenant": "t1", "content-type": "application/json; charset=utf-8", "Host": "ignored"}
	wantTwoTokens(t, c.Do(context.Background(), req))
	if got.Get("X-Tenant") != "t1" || got.Get("Content-Type") != "application/json; charset=utf-8" ||
		got.Get("Authorization") != "Bearer k" || got.Get("Accept") != "text/event-stream" || host != strings.TrimPrefix(f.URL, "http://") {
		t.Errorf("headers %v, host %q", got, host)
	}
	body := f.Bodies()[0]
	if body["model"] != "m" {
		t.Errorf("body %v", body)
	}
	req.Headers = map[string]string{"X-Evil": "a\r\nX-Injected: 1"}
	if r := c.Do(context.Background(), req); r.Err == nil || r.Err.Kind != KindOther || !r.Send.IsZero() {
		t.Errorf("header with CRLF: err %v, Send %v; want kind other before sending", r.Err, r.Send)
	}
}

// TestH1PoolWaitCanceled: with every connection busy, a request waits for
// one; cancelling the wait must not lose the slot.
func TestH1PoolWaitCanceled(t *testing.T) {
	srv, err := ssebench.Start(ssebench.Config{Tokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := newClient(t, Config{MaxConns: 1})
	defer c.Close()
	first := make(chan Result, 1)
	held := chatReq(srv.URL)
	held.Headers = map[string]string{"X-Bench-Hold-After": "2"}
	go func() { first <- c.Do(context.Background(), held) }()
	for srv.Stats().Held == 0 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	r := c.Do(ctx, chatReq(srv.URL))
	cancel()
	if r.Err == nil || r.Err.Kind != KindCanceled {
		t.Fatalf("waiting request: err %v, want canceled", r.Err)
	}
	srv.Release()
	wantOK(t, <-first)
	for range 3 {
		r := c.Do(context.Background(), chatReq(srv.URL))
		wantOK(t, r)
		if !r.Reused {
			t.Errorf("request did not reuse the one connection")
		}
	}
	if st := srv.Stats(); st.Conns != 1 {
		t.Errorf("server accepted %d connections, want 1", st.Conns)
	}
}

// TestH1NoGoroutineLeak runs successes, failures and cancellations and
// checks that no goroutine is left once the client is closed: h1 starts
// none of its own.
func TestH1NoGoroutineLeak(t *testing.T) {
	srv, err := ssebench.Start(ssebench.Config{Tokens: 20, Delay: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	settle := func() int {
		n := runtime.NumGoroutine()
		for range 100 {
			time.Sleep(5 * time.Millisecond)
			if m := runtime.NumGoroutine(); m == n {
				return n
			} else {
				n = m
			}
		}
		return n
	}
	before := settle()
	c := newClient(t, Config{MaxConns: 4, TTFTTimeout: time.Second})
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			ctx := context.Background()
			if i%3 == 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, time.Duration(i%7)*time.Millisecond)
				defer cancel()
			}
			r := c.Do(ctx, chatReq(srv.URL))
			r.Release()
		})
	}
	wg.Wait()
	c.Close()
	if after := settle(); after > before {
		buf := make([]byte, 1<<16)
		t.Fatalf("%d goroutines before, %d after:\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}

func TestTransportConfig(t *testing.T) {
	f := oaitest.NewServer(t, oaitest.StreamTokens(2, 0))
	tests := []struct {
		name      string
		cfg       Config
		wantH1    bool
		wantConns int
	}{
		{"default", Config{}, true, DefaultMaxConns},
		{"h1", Config{Transport: TransportH1, MaxConns: 3}, true, 3},
		{"net/http", Config{Transport: TransportNetHTTP, MaxConns: 5}, false, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newClient(t, tt.cfg)
			wantOK(t, c.Do(context.Background(), chatReq(f.URL)))
			if (c.h1 != nil) != tt.wantH1 {
				t.Errorf("h1 transport %v, want %v", c.h1 != nil, tt.wantH1)
			}
			if c.h1 != nil && c.h1.max != tt.wantConns {
				t.Errorf("h1 pool of %d connections, want %d", c.h1.max, tt.wantConns)
			}
			if c.tr.MaxConnsPerHost != tt.wantConns {
				t.Errorf("net/http pool of %d connections, want %d", c.tr.MaxConnsPerHost, tt.wantConns)
			}
		})
	}
}

// TestNewClientRefusesBadConfig: a bad Config is refused up front with an
// error that names the field, its value and the fix.
func TestNewClientRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
		want []string
	}{
		{"unknown transport", Config{Transport: "h3"}, []string{`"h3"`, TransportH1, TransportNetHTTP}},
		{"negative max conns", Config{MaxConns: -1}, []string{"max conns -1", "≥ 1"}},
		{"negative connect timeout", Config{ConnectTimeout: -time.Second}, []string{"connect timeout -1s"}},
		{"negative TTFT timeout", Config{TTFTTimeout: -time.Second}, []string{"TTFT timeout -1s"}},
		{"negative timeout", Config{Timeout: -time.Second}, []string{"timeout -1s"}},
		{"negative max line", Config{MaxLineBytes: -2}, []string{"max line bytes -2"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := NewClient(tt.cfg)
			if err == nil {
				c.Close()
				t.Fatalf("NewClient(%+v) succeeded, want an error", tt.cfg)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// TestH1NoResendAfterWrite: a server that read a request on a kept-alive
// connection and closed it without answering may have acted on it, so the
// request must not be sent again (net/http does not resend a POST either):
// the client reports the failure and the server sees the request once.
func TestH1NoResendAfterWrite(t *testing.T) {
	var n atomic.Int64
	s := newRawServer(t, func(c net.Conn, req *http.Request) bool {
		if n.Add(1) == 2 {
			return false // read it, then close without a byte of response
		}
		_, _ = io.WriteString(c, sseHead+chunked(sseEvents(), "", ""))
		return true
	})
	c := newClient(t, Config{MaxConns: 1})
	defer c.Close()
	wantTwoTokens(t, c.Do(context.Background(), chatReq(s.URL)))
	r := c.Do(context.Background(), chatReq(s.URL))
	if r.Err == nil || (r.Err.Kind != KindConnectionReset && r.Err.Kind != KindTruncated) {
		t.Errorf("request the server dropped: err %v, want connection_reset or truncated", r.Err)
	}
	if !r.Reused {
		t.Errorf("second request did not reuse the kept-alive connection")
	}
	if got := n.Load(); got != 2 {
		t.Errorf("server saw %d requests, want 2 (the dropped one must not be resent)", got)
	}
}

// TestH1PutAfterClose: a connection whose request ends after Close must be
// closed, not kept idle for ever.
func TestH1PutAfterClose(t *testing.T) {
	srv, err := ssebench.Start(ssebench.Config{Tokens: 5})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	c := newClient(t, Config{MaxConns: 1})
	held := chatReq(srv.URL)
	held.Headers = map[string]string{"X-Bench-Hold-After": "2"}
	done := make(chan Result, 1)
	go func() { done <- c.Do(context.Background(), held) }()
	for srv.Stats().Held == 0 {
		time.Sleep(time.Millisecond)
	}
	c.Close()
	srv.Release()
	wantOK(t, <-done)
	h := c.h1.host(h1Target{addr: strings.TrimPrefix(srv.URL, "http://")})
	h.mu.Lock()
	idle, n := len(h.idle), h.n
	h.mu.Unlock()
	if idle != 0 || n != 0 {
		t.Errorf("after Close: %d idle and %d open connections, want 0 and 0", idle, n)
	}
	for deadline := time.Now().Add(5 * time.Second); srv.Stats().OpenConns != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("server still has %d open connections", srv.Stats().OpenConns)
		}
	}
}

// FuzzH1Response feeds arbitrary bytes to h1's response parser and body
// reader, as a server (or anything listening on its port) could send them:
// they must never panic or hang, a head that parses has a three-digit
// status, and the body never yields more bytes than were sent.
func FuzzH1Response(f *testing.F) {
	f.Add([]byte(sseHead + chunked(sseEvents(), "", "")))
	f.Add([]byte(sseHead + chunked(sseEvents(), ";ext=1", "X-Trailer: 1\r\n")))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"))
	f.Add([]byte("HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: [DONE]\n\n"))
	f.Add([]byte("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Service Unavailable\r\nContent-Length: 3\r\n\r\nbad"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffff\r\n"))
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		br := bufio.NewReaderSize(bytes.NewReader(data), h1ReadBuffer)
		var body h1Body
		resp, err := readResponse(br, nil, &body)
		if err != nil {
			return
		}
		if resp.status < 100 || resp.status > 999 {
			t.Fatalf("status %d parsed from %q", resp.status, data)
		}
		n, err := io.Copy(io.Discard, &body)
		if n > int64(len(data)) {
			t.Fatalf("body of %d bytes from %d bytes of input", n, len(data))
		}
		if body.done && err != nil {
			t.Fatalf("body done with error %v", err)
		}
	})
}

// TestH1HeaderNotAfterFirstChunk: when the header and the first chunks
// arrive in one read, the header is stamped with that read's arrival, like
// the chunks, so Header ≤ FirstChunk ≤ FirstToken (agent's FirstByte ≤
// FirstChunk ≤ TTFT). Parsing the header used to stamp it later.
func TestH1HeaderNotAfterFirstChunk(t *testing.T) {
	// Each response comes whole in a new connection's first read. The
	// server says Connection: close, so the client never reuses a
	// connection the server is about to close (without it, a request
	// written before the server's FIN arrives is reset, as with net/http:
	// TestH1ServerClosedIdle).
	const head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
	s := newRawServer(t, func(c net.Conn, req *http.Request) bool {
		_, _ = io.WriteString(c, head+chunked(sseEvents(), "", ""))
		return false
	})
	c := newClient(t, Config{MaxConns: 1})
	for i := range 20 {
		r := c.Do(context.Background(), chatReq(s.URL))
		wantTwoTokens(t, r)
		if r.Header.IsZero() || r.FirstChunk.Before(r.Header) || r.FirstToken.Before(r.FirstChunk) {
			t.Fatalf("request %d: header %v, first chunk %v, first token %v; want header ≤ first chunk ≤ first token",
				i, r.Header, r.FirstChunk, r.FirstToken)
		}
	}
}
