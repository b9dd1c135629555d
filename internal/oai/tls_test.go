package oai

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/internal/oai/oaitest"
)

// TestTLSTransports: an https:// target is served by h1 over TLS (ALPN
// http/1.1 even though the server offers h2, SNI set from the URL's host,
// one kept-alive connection), by net/http over HTTP/1.1, and by the h2
// transport over HTTP/2.
func TestTLSTransports(t *testing.T) {
	tests := []struct {
		name      string
		transport string
		wantH1    bool
		wantProto int
		wantALPN  string
	}{
		{"h1", TransportH1, true, 1, "http/1.1"},
		{"default", "", true, 1, "http/1.1"},
		{"net/http", TransportNetHTTP, false, 1, ""}, // offers no ALPN
		{"h2", TransportH2, false, 2, "h2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := oaitest.NewTLSServer(t, oaitest.StreamTokens(5, 0))
			c := newClient(t, Config{Transport: tt.transport, TLS: f.RootCAs(), MaxConns: 4})
			if (c.h1 != nil) != tt.wantH1 {
				t.Fatalf("h1 transport %v, want %v", c.h1 != nil, tt.wantH1)
			}
			for i := range 3 {
				r := c.Do(context.Background(), chatReq(f.URL))
				wantOK(t, r)
				if r.OutputTokens != 5 || r.FirstToken.IsZero() || r.TTFT() <= 0 {
					t.Fatalf("request %d: %d tokens, TTFT %v; want 5 tokens and a TTFT", i, r.OutputTokens, r.TTFT())
				}
				if i > 0 && !r.Reused && tt.wantH1 {
					t.Errorf("request %d: connection not reused", i)
				}
				r.Release()
			}
			for i, p := range f.Protos() {
				if p != tt.wantProto {
					t.Errorf("request %d over HTTP/%d, want HTTP/%d", i, p, tt.wantProto)
				}
			}
			if n := f.Conns.Load(); n != 1 {
				t.Errorf("%d connections for 3 sequential requests, want 1", n)
			}
			alpn := f.ALPN()
			if len(alpn) != 1 || (tt.wantALPN != "" && !containsString(alpn[0], tt.wantALPN)) {
				t.Fatalf("ClientHellos offered %v, want one offering %q", alpn, tt.wantALPN)
			}
			if tt.wantH1 && (len(alpn[0]) != 1 || alpn[0][0] != "http/1.1") {
				t.Errorf("h1 offered ALPN %v, want only http/1.1", alpn[0])
			}
		})
	}
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// TestH1TLSServerNameAndVerification: h1 sends the URL's host name as SNI
// and verifies the certificate against it. The httptest certificate is for
// example.com and 127.0.0.1, so https://localhost fails verification with
// an error that names the host and the fix, and passes with
// InsecureSkipVerify, sending SNI "localhost"; an untrusted CA fails too.
func TestH1TLSServerNameAndVerification(t *testing.T) {
	f := oaitest.NewTLSServer(t, oaitest.StreamTokens(2, 0))
	port := f.URL[strings.LastIndexByte(f.URL, ':')+1:]
	localhost := "https://localhost:" + port
	tests := []struct {
		name    string
		url     string
		tls     *tls.Config
		wantErr []string // substrings of the error; nil for success
		wantSNI string
	}{
		{"trusted IP", f.URL, f.RootCAs(), nil, ""},
		{"name mismatch", localhost, f.RootCAs(), []string{"TLS handshake with localhost:" + port, `server name "localhost"`, "certificate", "RootCAs"}, "localhost"},
		{"insecure skip verify", localhost, &tls.Config{InsecureSkipVerify: true}, nil, "localhost"},
		{"untrusted CA", f.URL, nil, []string{"TLS handshake with 127.0.0.1:" + port, "certificate", "RootCAs"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f.ResetHandshakes()
			c := newClient(t, Config{TLS: tt.tls})
			r := c.Do(context.Background(), chatReq(tt.url))
			if tt.wantErr == nil {
				wantOK(t, r)
			} else {
				if r.Err == nil {
					t.Fatal("request succeeded, want a TLS verification error")
				}
				if r.Err.Kind != KindOther {
					t.Errorf("kind %q, want %q", r.Err.Kind, KindOther)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(r.Err.Error(), w) {
						t.Errorf("error %q does not mention %q", r.Err, w)
					}
				}
			}
			if sni := f.SNI(); len(sni) == 0 || sni[0] != tt.wantSNI {
				t.Errorf("SNI %q, want %q", sni, tt.wantSNI)
			}
		})
	}
}

// TestH1TLSHandshakeTimeout: a server that accepts but never answers the
// ClientHello fails the request as connect_timeout within the connect
// timeout (asserted with a generous margin), with no goroutine left.
func TestH1TLSHandshakeTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var held []net.Conn
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	c := newClient(t, Config{ConnectTimeout: 200 * time.Millisecond})
	start := time.Now()
	r := c.Do(context.Background(), chatReq("https://"+ln.Addr().String()))
	if r.Err == nil || r.Err.Kind != KindConnectTimeout {
		t.Fatalf("error %v, want kind %s", r.Err, KindConnectTimeout)
	}
	if !strings.Contains(r.Err.Error(), "TLS handshake") {
		t.Errorf("error %q does not say the TLS handshake timed out", r.Err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("failed after %v, want about 200ms", d)
	}
	if c.h1.host(h1Target{addr: ln.Addr().String(), tls: true}).n != 0 {
		t.Error("the failed dial kept its connection slot")
	}
}

// stampedBody is a body whose bytes arrived at a fixed time.
type stampedBody struct {
	io.Reader
	at time.Time
}

func (b *stampedBody) arrived() time.Time { return b.at }

// TestLineReaderUsesArrivalStamp: a line is stamped with the time its
// bytes came off the socket when the body knows it (h1), not with the time
// the body's Read returned, and with the time of the read otherwise.
func TestLineReaderUsesArrivalStamp(t *testing.T) {
	arrived := time.Now().Add(-time.Hour)
	tests := []struct {
		name  string
		body  io.Reader
		check func(at time.Time) bool
	}{
		{"arrival clock", &stampedBody{strings.NewReader("data: x\n"), arrived}, func(at time.Time) bool { return at.Equal(arrived) }},
		{"zero arrival falls back to now", &stampedBody{strings.NewReader("data: x\n"), time.Time{}}, func(at time.Time) bool { return time.Since(at) < time.Minute }},
		{"plain reader", strings.NewReader("data: x\n"), func(at time.Time) bool { return time.Since(at) < time.Minute }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lr := getLineReader(tt.body, defaultMaxLine)
			defer lr.put()
			line, at, err := lr.next()
			if err != nil || string(line) != "data: x\n" {
				t.Fatalf("line %q, err %v", line, err)
			}
			if !tt.check(at) {
				t.Errorf("line stamped %v (arrival %v)", at, arrived)
			}
		})
	}
}

// TestH1FirstTokenIsSocketArrival: on h1 the first token's stamp is the
// socket read that brought it: no later than the end of the request, no
// earlier than the headers' read, and equal for lines that arrived in one
// read.
func TestH1FirstTokenIsSocketArrival(t *testing.T) {
	for _, scheme := range []string{"http", "https"} {
		t.Run(scheme, func(t *testing.T) {
			h := func(w http.ResponseWriter, r *http.Request) {
				s := oaitest.StartSSE(w)
				time.Sleep(20 * time.Millisecond)
				// Two token chunks in one write: one read, one stamp.
				s.Raw("data: " + oaitest.ChatContent("a", 1) + "\n\ndata: " + oaitest.ChatContent("b", 2) + "\n\n")
				s.Data(oaitest.FinalUsage(7, 2))
				s.Done()
			}
			var url string
			var cfg Config
			if scheme == "https" {
				f := oaitest.NewTLSServer(t, h)
				url, cfg = f.URL, Config{TLS: f.RootCAs()}
			} else {
				url = oaitest.NewServer(t, h).URL
			}
			c := newClient(t, cfg)
			r := c.Do(context.Background(), chatReq(url))
			wantOK(t, r)
			if len(r.Marks) != 2 || r.Marks[0].At != r.Marks[1].At {
				t.Errorf("marks %+v: want two with one arrival time", r.Marks)
			}
			if r.FirstToken.Before(r.Header) || r.FirstToken.After(r.Done) || r.FirstToken.Sub(r.Header) < 10*time.Millisecond {
				t.Errorf("header %v, first token %v, done %v: want header + ~20ms ≤ first token ≤ done", r.Header, r.FirstToken, r.Done)
			}
		})
	}
}
