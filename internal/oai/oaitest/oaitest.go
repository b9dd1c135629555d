// Package oaitest provides a fake OpenAI-compatible (vLLM-flavoured) server
// for tests: an httptest server, plain or TLS, that records what it was sent,
// plus the Server-Sent Events chunks vLLM streams and scripted handlers that
// stream them with chosen timing, usage, errors and truncation.
//
// It imports nothing from internal/oai, so the tests of internal/oai itself
// can use it as well as those of the packages built on it.
package oaitest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// SSE writes Server-Sent Events to a fake server's response.
type SSE struct {
	w http.ResponseWriter
}

// StartSSE sends the event-stream header and a 200 status, flushed, and
// returns a writer for the events.
func StartSSE(w http.ResponseWriter) *SSE {
	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	return &SSE{w: w}
}

// Raw writes str as is and flushes it.
func (s *SSE) Raw(str string) {
	_, _ = io.WriteString(s.w, str)
	s.w.(http.Flusher).Flush()
}

// Data writes one data event.
func (s *SSE) Data(payload string) { s.Raw("data: " + payload + "\n\n") }

// Done writes the [DONE] event that ends an OpenAI stream.
func (s *SSE) Done() { s.Data("[DONE]") }

// UsageJSON returns a usage object with cumulative completion tokens.
func UsageJSON(prompt, completion int) string {
	return fmt.Sprintf(`{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}`, prompt, prompt+completion, completion)
}

// ChatRole is vLLM's role-only first chat chunk; cum < 0 leaves usage out.
func ChatRole(cum int) string {
	return ChatChunk(`{"role":"assistant","content":""}`, cum)
}

// ChatContent is a chat content chunk; cum < 0 leaves usage out.
func ChatContent(text string, cum int) string {
	b, _ := json.Marshal(map[string]string{"content": text})
	return ChatChunk(string(b), cum)
}

// ChatChunk is a chat chunk carrying the JSON object delta; cum < 0 leaves
// usage out, otherwise usage counts 7 prompt and cum completion tokens.
func ChatChunk(delta string, cum int) string {
	s := `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":` + delta + `,"logprobs":null,"finish_reason":null}]`
	if cum >= 0 {
		s += `,"usage":` + UsageJSON(7, cum)
	}
	return s + "}"
}

// CompletionText is a completions chunk; cum < 0 gives "usage":null.
func CompletionText(text string, cum int) string {
	b, _ := json.Marshal(text)
	u := "null"
	if cum >= 0 {
		u = UsageJSON(7, cum)
	}
	return `{"id":"cmpl-1","object":"text_completion","created":1,"model":"m","choices":[{"index":0,"text":` + string(b) + `,"logprobs":null,"finish_reason":null,"stop_reason":null}],"usage":` + u + `}`
}

// FinalUsage is the include_usage chunk with empty choices.
func FinalUsage(prompt, completion int) string {
	return `{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":` + UsageJSON(prompt, completion) + `}`
}

// ErrorJSON is vLLM's error body for status code with message; its type is
// the status text as vLLM names it ("BadRequestError" for 400).
func ErrorJSON(code int, message string) string {
	b, _ := json.Marshal(message)
	typ := strings.ReplaceAll(http.StatusText(code), " ", "")
	if !strings.HasSuffix(typ, "Error") {
		typ += "Error"
	}
	return fmt.Sprintf(`{"object":"error","message":%s,"type":%q,"param":null,"code":%d}`, b, typ, code)
}

// Stream scripts one streamed chat (or completions) response.
type Stream struct {
	// Tokens is how many content chunks to send, each one token.
	Tokens int
	// Gap is the wait before each content chunk, the first included.
	Gap time.Duration
	// FirstDelay, when positive, replaces Gap before the first content
	// chunk (a slow prefill).
	FirstDelay time.Duration
	// Completions streams /v1/completions chunks instead of chat ones (no
	// role chunk).
	Completions bool
	// NoUsage leaves the continuous usage and the final usage chunk out.
	NoUsage bool
	// TruncateAfter, when positive, ends the response after that many
	// content chunks, with neither the usage chunk nor [DONE].
	TruncateAfter int
	// Status, when not 0 or 200, answers with this status and ErrorJSON
	// instead of a stream.
	Status int
	// Message is the error message sent with Status.
	Message string
}

// Handler returns an http.HandlerFunc that plays s, stopping early when
// the client goes away.
func (s Stream) Handler() http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.Status != 0 && s.Status != http.StatusOK {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(s.Status)
			_, _ = io.WriteString(w, ErrorJSON(s.Status, s.Message))
			return
		}
		cum := func(i int) int {
			if s.NoUsage {
				return -1
			}
			return i
		}
		e := StartSSE(w)
		if !s.Completions {
			e.Data(ChatRole(cum(0)))
		}
		for i := 1; i <= s.Tokens; i++ {
			wait := s.Gap
			if i == 1 && s.FirstDelay > 0 {
				wait = s.FirstDelay
			}
			if wait > 0 {
				select {
				case <-time.After(wait):
				case <-r.Context().Done():
					return
				}
			}
			text := fmt.Sprintf("t%d ", i)
			if s.Completions {
				e.Data(CompletionText(text, cum(i)))
			} else {
				e.Data(ChatContent(text, cum(i)))
			}
			if i == s.TruncateAfter {
				return
			}
		}
		if !s.NoUsage {
			e.Data(FinalUsage(7, s.Tokens))
		}
		e.Done()
	}
}

// StreamTokens is a handler that streams n chat tokens with continuous
// usage, gap apart, then the usage chunk and [DONE].
func StreamTokens(n int, gap time.Duration) http.HandlerFunc {
	return Stream{Tokens: n, Gap: gap}.Handler()
}

// Server is an httptest server that records each request's JSON body,
// headers and HTTP major version, counts requests and connections, and
// tracks how many requests run at once. A TLS Server also records each
// ClientHello's server name and offered ALPN protocols.
type Server struct {
	*httptest.Server
	// Requests counts the requests received.
	Requests atomic.Int64
	// Conns counts the connections accepted.
	Conns atomic.Int64

	mu      sync.Mutex
	open    int
	maxOpen int
	bodies  []map[string]any
	headers []http.Header
	protos  []int
	sni     []string
	alpn    [][]string
}

// NewServer starts a plain HTTP fake serving h, closed when tb ends.
func NewServer(tb testing.TB, h http.HandlerFunc) *Server {
	tb.Helper()
	s := newUnstarted(h)
	s.Start()
	tb.Cleanup(s.Close)
	return s
}

// NewTLSServer starts a TLS fake serving h, offering HTTP/2 by ALPN, closed
// when tb ends. Its certificate is httptest's; RootCAs trusts it. Failed
// handshakes are not logged, since tests provoke them.
func NewTLSServer(tb testing.TB, h http.HandlerFunc) *Server {
	tb.Helper()
	s := newUnstarted(h)
	s.EnableHTTP2 = true
	s.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.StartTLS()
	base := s.TLS.Clone()
	s.TLS.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
		s.mu.Lock()
		s.sni = append(s.sni, hello.ServerName)
		s.alpn = append(s.alpn, hello.SupportedProtos)
		s.mu.Unlock()
		return base, nil
	}
	tb.Cleanup(s.Close)
	return s
}

func newUnstarted(h http.HandlerFunc) *Server {
	s := &Server{}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.Requests.Add(1)
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		_, _ = io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		s.open++
		s.maxOpen = max(s.maxOpen, s.open)
		s.bodies = append(s.bodies, body)
		s.headers = append(s.headers, r.Header.Clone())
		s.protos = append(s.protos, r.ProtoMajor)
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			s.open--
			s.mu.Unlock()
		}()
		h(w, r)
	}))
	s.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			s.Conns.Add(1)
		}
	}
	return s
}

// Open is how many requests are being served now.
func (s *Server) Open() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.open
}

// MaxOpen is the most requests served at once so far.
func (s *Server) MaxOpen() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxOpen
}

// Bodies returns each request's JSON body, in arrival order (nil for a body
// that was not a JSON object).
func (s *Server) Bodies() []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.bodies)
}

// Headers returns each request's headers, in arrival order.
func (s *Server) Headers() []http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.headers)
}

// Protos returns each request's HTTP major version, in arrival order.
func (s *Server) Protos() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.protos)
}

// SNI returns the server name of each TLS ClientHello, in arrival order.
func (s *Server) SNI() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.sni)
}

// ALPN returns the protocols each TLS ClientHello offered, in arrival order.
func (s *Server) ALPN() [][]string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.alpn)
}

// ResetHandshakes forgets the ClientHellos recorded so far.
func (s *Server) ResetHandshakes() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sni, s.alpn = nil, nil
}

// RootCAs returns a TLS configuration that trusts a TLS Server's
// certificate.
func (s *Server) RootCAs() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(s.Certificate())
	return &tls.Config{RootCAs: pool}
}

// RefusedURL returns an http:// URL on the loopback interface on which
// nothing listens.
func RefusedURL(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return "http://" + addr
}
