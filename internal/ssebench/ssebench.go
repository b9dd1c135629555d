// Package ssebench is a fast local server that streams vLLM-shaped SSE
// chunks, for benchmarks of the agent's HTTP/SSE client.
//
// It is a raw-TCP HTTP/1.1 responder, not net/http: every stream writes
// pre-built, pre-framed bytes (chunked transfer encoding, one SSE event per
// HTTP chunk, as uvicorn sends them), so that on a small machine the server
// leaves as much CPU as possible to the client being measured. It speaks
// just enough HTTP for a keep-alive client: a request line, headers, a
// Content-Length body.
//
// POST /v1/chat/completions and POST /v1/completions stream chat or
// completion chunks with continuous usage (VLLM-FACTS §3 shapes, vLLM
// 0.10.2+ fields). The stream's shape comes from Config, and each request
// may override it with headers: X-Bench-Tokens, X-Bench-Tokens-Per-Chunk,
// X-Bench-Delay and X-Bench-TTFT (Go durations) and X-Bench-Hold-After.
// GET /bench/stats returns counters as JSON, and POST /bench/release lets
// the held streams finish. With Config.RecordFirstTokens, GET
// /bench/first-tokens returns (and forgets) the CLOCK_MONOTONIC times just
// before and just after each stream's first token write, keyed by its
// X-Request-Id ({"id": [before, after]}), so that a client in another
// process can compare its own arrival times with them.
//
// With Config.TLS the server speaks TLS (URL https://...), on the same
// raw HTTP/1.1 responder; with Config.HTTP2 as well, it serves through
// net/http's server instead, HTTP/2 offered by ALPN, writing the same
// events (one DATA frame per event, flushed), for measuring a client over
// h2.
package ssebench

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Config is the default shape of every stream.
type Config struct {
	// Tokens is the number of completion tokens per stream; 0 means 16.
	Tokens int
	// TokensPerChunk is the number of tokens each content chunk carries;
	// 0 means 1.
	TokensPerChunk int
	// TTFT is the wait between the headers (and the chat role chunk) and
	// the first token chunk.
	TTFT time.Duration
	// Delay is the wait between content chunks; 0 writes them back to back,
	// coalesced into as few writes as possible.
	Delay time.Duration
	// HoldAfter, when positive, makes each stream stop after this many
	// tokens and wait for Release (or Close) before finishing.
	HoldAfter int
	// OnFirstToken, when set, is called with the request's X-Request-Id
	// header and the time taken just before the write of the first token
	// chunk. It is called from connection goroutines, concurrently.
	OnFirstToken func(id string, at time.Time)
	// RecordFirstTokens keeps, for every request with an X-Request-Id,
	// Monotonic() read just before and just after the write of its first
	// token chunk, until GET /bench/first-tokens returns them.
	RecordFirstTokens bool
	// TLS, when set, makes the server speak TLS with this configuration
	// (its Certificates): the URL is https://.
	TLS *tls.Config
	// HTTP2 serves through net/http's server with HTTP/2 offered by ALPN
	// (and HTTP/1.1 to clients that do not offer h2). It needs TLS.
	HTTP2 bool
}

// Monotonic returns CLOCK_MONOTONIC in nanoseconds: a clock shared by every
// process on the machine. On Linux it is also the clock behind the
// monotonic reading of Go's time.Now (runtime.nanotime), so a time.Time
// taken in another process converts to it by a fixed offset; see
// MonoOffset.
func Monotonic() int64 {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// MonoOffset measures the offset between this process's time.Now
// monotonic readings and Monotonic: for a time t taken in this process,
// Monotonic() at that instant is at.Add(t.Sub(ref)). It keeps the sample
// whose two Monotonic reads were closest together, so the error is at most
// half that gap (well under a microsecond).
func MonoOffset() (ref time.Time, at int64) {
	best := int64(-1)
	for range 200 {
		a := Monotonic()
		t := time.Now()
		b := Monotonic()
		if best < 0 || b-a < best {
			best, ref, at = b-a, t, a+(b-a)/2
		}
	}
	return ref, at
}

// Stats are the server's counters.
type Stats struct {
	// Conns is the number of connections accepted so far.
	Conns int64 `json:"conns"`
	// OpenConns is the number of connections open now.
	OpenConns int64 `json:"open_conns"`
	// Streams is the number of streams started so far.
	Streams int64 `json:"streams"`
	// Held is the number of streams waiting for Release now.
	Held int64 `json:"held"`
	// MaxHeld is the largest Held seen.
	MaxHeld int64 `json:"max_held"`
	// Tokens is the number of tokens written so far.
	Tokens int64 `json:"tokens"`
}

// Server is a running benchmark SSE server. It is safe for concurrent use.
type Server struct {
	// URL is the base URL, http://127.0.0.1:port.
	URL string

	cfg Config
	ln  net.Listener

	conns, open, streams, held, maxHeld, tokens atomic.Int64

	mu      sync.Mutex
	release chan struct{} // closed by Release, then replaced
	live    map[net.Conn]struct{}
	closed  bool
	done    chan struct{} // closed by Close
	wg      sync.WaitGroup

	bodies sync.Map // shape → *body

	hs *http.Server // the HTTP2 mode's server; nil otherwise

	stampMu sync.Mutex
	stamps  map[string][2]int64 // X-Request-Id → Monotonic() before and after the first token write
}

// Start listens on 127.0.0.1 on a free port and serves until Close.
func Start(cfg Config) (*Server, error) {
	if cfg.HTTP2 && cfg.TLS == nil {
		return nil, errors.New("ssebench: HTTP2 needs TLS: set Config.TLS (h2 is negotiated by ALPN)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("ssebench: listen: %w", err)
	}
	scheme := "http://"
	if cfg.TLS != nil {
		scheme = "https://"
		tc := cfg.TLS.Clone()
		if cfg.HTTP2 {
			tc.NextProtos = []string{"h2", "http/1.1"}
		} else {
			tc.NextProtos = []string{"http/1.1"}
		}
		ln = tls.NewListener(ln, tc)
	}
	s := &Server{
		URL:     scheme + ln.Addr().String(),
		cfg:     cfg,
		ln:      ln,
		release: make(chan struct{}),
		live:    map[net.Conn]struct{}{},
		done:    make(chan struct{}),
		stamps:  map[string][2]int64{},
	}
	if cfg.HTTP2 {
		s.hs = &http.Server{Handler: http.HandlerFunc(s.serveHTTP), ConnState: s.connState}
		s.hs.Protocols = new(http.Protocols)
		s.hs.Protocols.SetHTTP1(true)
		s.hs.Protocols.SetHTTP2(true)
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			_ = s.hs.Serve(ln)
		}()
		return s, nil
	}
	s.wg.Add(1)
	go s.accept()
	return s, nil
}

// connState counts the HTTP2 mode's connections.
func (s *Server) connState(_ net.Conn, st http.ConnState) {
	switch st {
	case http.StateNew:
		s.conns.Add(1)
		s.open.Add(1)
	case http.StateClosed, http.StateHijacked:
		s.open.Add(-1)
	}
}

// serveHTTP is the HTTP2 mode's handler: the same endpoints as serve.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	req := s.newRequest()
	req.method, req.path = r.Method, r.URL.Path
	for name, vs := range r.Header {
		if len(vs) > 0 {
			req.header(strings.ToLower(name), vs[0])
		}
	}
	_, _ = io.Copy(io.Discard, r.Body)
	req.finish()
	switch {
	case req.method == "POST" && (req.path == "/v1/chat/completions" || req.path == "/v1/completions"):
		fl, _ := w.(http.Flusher)
		b := s.body(req.shape)
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.WriteHeader(http.StatusOK)
		s.run(req, b, func(from, to int) error {
			if _, err := w.Write(b.raw[from:to]); err != nil {
				return err
			}
			if fl != nil {
				fl.Flush()
			}
			return nil
		}, b.rawOffs, len(b.raw))
	case req.method == "GET" && req.path == "/bench/stats":
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(s.Stats())
	case req.method == "GET" && req.path == "/bench/first-tokens":
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(s.takeStamps())
	case req.method == "POST" && req.path == "/bench/release":
		s.Release()
		w.WriteHeader(http.StatusNoContent)
	default:
		http.NotFound(w, r)
	}
}

// takeStamps returns the first-token stamps as JSON and forgets them.
func (s *Server) takeStamps() []byte {
	s.stampMu.Lock()
	b, _ := json.Marshal(s.stamps)
	s.stamps = map[string][2]int64{}
	s.stampMu.Unlock()
	return b
}

// Stats returns the counters.
func (s *Server) Stats() Stats {
	return Stats{
		Conns: s.conns.Load(), OpenConns: s.open.Load(), Streams: s.streams.Load(),
		Held: s.held.Load(), MaxHeld: s.maxHeld.Load(), Tokens: s.tokens.Load(),
	}
}

// Release lets every stream held so far finish.
func (s *Server) Release() {
	s.mu.Lock()
	close(s.release)
	s.release = make(chan struct{})
	s.mu.Unlock()
}

// Close stops the server, closes every connection and waits for the
// connection goroutines.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	close(s.done)
	if s.hs != nil {
		s.mu.Unlock()
		ctx, cancel := context.WithCancel(context.Background())
		cancel() // no grace: streams end at once, as on the raw server
		_ = s.hs.Shutdown(ctx)
		err := s.hs.Close()
		s.wg.Wait()
		return err
	}
	err := s.ln.Close()
	for c := range s.live {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *Server) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of descriptors and the like: back off briefly.
			time.Sleep(5 * time.Millisecond)
			continue
		}
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.live[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		s.conns.Add(1)
		s.open.Add(1)
		go s.serve(c)
	}
}

// request is what serve reads of one HTTP request.
type request struct {
	method, path string
	id           string
	shape        shape
	ttft, delay  time.Duration
	holdAfter    int
	close        bool
}

func (s *Server) serve(c net.Conn) {
	defer func() {
		s.mu.Lock()
		delete(s.live, c)
		s.mu.Unlock()
		c.Close()
		s.open.Add(-1)
		s.wg.Done()
	}()
	br := bufio.NewReaderSize(c, 2<<10)
	for {
		req, err := s.readRequest(br)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
			}
			return
		}
		switch {
		case req.method == "POST" && (req.path == "/v1/chat/completions" || req.path == "/v1/completions"):
			if !s.stream(c, req) {
				return
			}
		case req.method == "GET" && req.path == "/bench/stats":
			b, _ := json.Marshal(s.Stats())
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(b), b); err != nil {
				return
			}
		case req.method == "GET" && req.path == "/bench/first-tokens":
			b := s.takeStamps()
			if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", len(b), b); err != nil {
				return
			}
		case req.method == "POST" && req.path == "/bench/release":
			s.Release()
			if _, err := io.WriteString(c, "HTTP/1.1 204 No Content\r\n\r\n"); err != nil {
				return
			}
		default:
			if _, err := io.WriteString(c, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"); err != nil {
				return
			}
		}
		if req.close {
			return
		}
	}
}

// newRequest returns a request with the server's default shape.
func (s *Server) newRequest() request {
	return request{
		shape:     shape{tokens: s.cfg.Tokens, perChunk: s.cfg.TokensPerChunk},
		ttft:      s.cfg.TTFT,
		delay:     s.cfg.Delay,
		holdAfter: s.cfg.HoldAfter,
	}
}

// header applies one request header; name is lower case. A malformed
// X-Bench value leaves the default (a benchmark's own server).
func (req *request) header(name, value string) {
	switch name {
	case "connection":
		req.close = strings.EqualFold(value, "close")
	case "x-request-id":
		req.id = value
	case "x-bench-tokens":
		req.shape.tokens, _ = strconv.Atoi(value)
	case "x-bench-tokens-per-chunk":
		req.shape.perChunk, _ = strconv.Atoi(value)
	case "x-bench-hold-after":
		req.holdAfter, _ = strconv.Atoi(value)
	case "x-bench-delay":
		req.delay, _ = time.ParseDuration(value)
	case "x-bench-ttft":
		req.ttft, _ = time.ParseDuration(value)
	}
}

// finish sets the shape's defaults once the headers are read.
func (req *request) finish() {
	req.shape.chat = req.path == "/v1/chat/completions"
	if req.shape.tokens <= 0 {
		req.shape.tokens = 16
	}
	if req.shape.perChunk <= 0 {
		req.shape.perChunk = 1
	}
}

// readRequest reads one request's head and discards its body.
func (s *Server) readRequest(br *bufio.Reader) (request, error) {
	req := s.newRequest()
	line, err := readLine(br)
	if err != nil {
		return req, err
	}
	parts := strings.SplitN(line, " ", 3)
	if len(parts) != 3 {
		return req, fmt.Errorf("bad request line %q", line)
	}
	req.method, req.path = parts[0], parts[1]
	if i := strings.IndexByte(req.path, '?'); i >= 0 {
		req.path = req.path[:i]
	}
	var length int64
	for {
		line, err := readLine(br)
		if err != nil {
			return req, err
		}
		if line == "" {
			break
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok {
			return req, fmt.Errorf("bad header line %q", line)
		}
		value = strings.TrimSpace(value)
		name = strings.ToLower(name)
		if name == "content-length" {
			if length, err = strconv.ParseInt(value, 10, 64); err != nil || length < 0 {
				return req, fmt.Errorf("bad content-length %q", value)
			}
			continue
		}
		req.header(name, value)
	}
	if _, err := br.Discard(int(length)); err != nil {
		return req, err
	}
	req.finish()
	return req, nil
}

func readLine(br *bufio.Reader) (string, error) {
	b, err := br.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, io.EOF) && len(b) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return "", err
	}
	return string(bytes.TrimRight(b, "\r\n")), nil
}

// stream writes one streamed response and reports whether the connection
// is still usable.
func (s *Server) stream(c net.Conn, req request) bool {
	b := s.body(req.shape)
	return s.run(req, b, func(from, to int) error {
		_, err := c.Write(b.all[from:to])
		return err
	}, b.offs, len(b.all))
}

// run writes one streamed response through write, which writes bytes
// from:to of the body in the form offs indexes and total measures (b.all
// with HTTP/1.1 framing, or b.raw, the bare events), and reports whether
// it was written whole.
func (s *Server) run(req request, b *body, write func(from, to int) error, offs []int, total int) bool {
	s.streams.Add(1)
	if err := write(0, offs[0]); err != nil {
		return false
	}
	if req.ttft > 0 && !s.sleep(req.ttft) {
		return false
	}
	n := len(offs) - 1 // content chunks
	held := false
	for k := 0; k < n; {
		if k > 0 && req.delay > 0 && !s.sleep(req.delay) {
			return false
		}
		if req.holdAfter > 0 && !held && b.tokensBefore(k) >= req.holdAfter {
			held = true
			if !s.hold() {
				return false
			}
		}
		// Write chunk k, and when nothing waits in between, the chunks
		// after it up to the next hold point.
		end := k + 1
		if req.delay == 0 {
			for end < n && (req.holdAfter <= 0 || held || b.tokensBefore(end) < req.holdAfter) {
				end++
			}
		}
		if k == 0 && s.cfg.OnFirstToken != nil {
			s.cfg.OnFirstToken(req.id, time.Now())
		}
		var mono int64
		if k == 0 && s.cfg.RecordFirstTokens && req.id != "" {
			mono = Monotonic()
		}
		if err := write(offs[k], offs[end]); err != nil {
			return false
		}
		if mono != 0 {
			after := Monotonic()
			s.stampMu.Lock()
			s.stamps[req.id] = [2]int64{mono, after}
			s.stampMu.Unlock()
		}
		s.tokens.Add(int64(b.tokensBefore(end) - b.tokensBefore(k)))
		k = end
	}
	return write(offs[n], total) == nil
}

func (s *Server) sleep(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-s.done:
		return false
	}
}

func (s *Server) hold() bool {
	s.mu.Lock()
	rel := s.release
	s.mu.Unlock()
	h := s.held.Add(1)
	for {
		m := s.maxHeld.Load()
		if h <= m || s.maxHeld.CompareAndSwap(m, h) {
			break
		}
	}
	defer s.held.Add(-1)
	select {
	case <-rel:
		return true
	case <-s.done:
		return false
	}
}

// shape identifies one pre-built response.
type shape struct {
	chat     bool
	tokens   int
	perChunk int
}

// body is one pre-built response: all holds the status line, headers and
// chat role chunk (up to offs[0]), content chunk k in offs[k]:offs[k+1],
// and the usage chunk, [DONE] and the last chunk after offs[n]. raw and
// rawOffs are the same events without the HTTP/1.1 head and framing, for
// the HTTP2 mode.
type body struct {
	all              []byte
	offs             []int
	raw              []byte
	rawOffs          []int
	perChunk, tokens int
}

// tokensBefore returns the tokens carried by content chunks 0..k-1.
func (b *body) tokensBefore(k int) int { return min(k*b.perChunk, b.tokens) }

func (s *Server) body(sh shape) *body {
	if b, ok := s.bodies.Load(sh); ok {
		return b.(*body)
	}
	b, _ := s.bodies.LoadOrStore(sh, build(sh))
	return b.(*body)
}

const (
	chatID = "chatcmpl-b3f1c2d4e5f60718293a4b5c6d7e8f90"
	cmplID = "cmpl-b3f1c2d4e5f60718293a4b5c6d7e8f90"
	model  = "Qwen/Qwen2.5-7B-Instruct"
	prompt = 128
)

// build renders a response. The last chunk carries the remainder when
// tokens is not a multiple of perChunk, so tokensBefore holds for every
// chunk but the last.
func build(sh shape) *body {
	var all []byte
	all = append(all, "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nCache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n\r\n"...)
	var raw []byte
	event := func(json string) {
		ev := "data: " + json + "\n\n"
		raw = append(raw, ev...)
		all = strconv.AppendInt(all, int64(len(ev)), 16)
		all = append(all, "\r\n"...)
		all = append(all, ev...)
		all = append(all, "\r\n"...)
	}
	usage := func(n int) string {
		return fmt.Sprintf(`{"prompt_tokens":%d,"total_tokens":%d,"completion_tokens":%d}`, prompt, prompt+n, n)
	}
	if sh.chat {
		event(`{"id":"` + chatID + `","object":"chat.completion.chunk","created":1718000000,"model":"` + model + `","prompt_token_ids":null,"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}],"usage":` + usage(0) + `}`)
	}
	b := &body{perChunk: sh.perChunk, tokens: sh.tokens}
	for done := 0; done < sh.tokens; {
		k := min(sh.perChunk, sh.tokens-done)
		done += k
		text := strings.Repeat(" tok", k)
		finish := "null"
		if done == sh.tokens {
			finish = `"length"`
		}
		b.offs = append(b.offs, len(all))
		b.rawOffs = append(b.rawOffs, len(raw))
		if sh.chat {
			event(`{"id":"` + chatID + `","object":"chat.completion.chunk","created":1718000000,"model":"` + model + `","choices":[{"index":0,"delta":{"content":"` + text + `"},"logprobs":null,"finish_reason":` + finish + `,"token_ids":null}],"usage":` + usage(done) + `}`)
		} else {
			event(`{"id":"` + cmplID + `","object":"text_completion","created":1718000000,"model":"` + model + `","choices":[{"index":0,"text":"` + text + `","logprobs":null,"finish_reason":` + finish + `,"stop_reason":null,"prompt_token_ids":null,"token_ids":null}],"usage":` + usage(done) + `}`)
		}
	}
	b.offs = append(b.offs, len(all))
	b.rawOffs = append(b.rawOffs, len(raw))
	obj, id := "text_completion", cmplID
	if sh.chat {
		obj, id = "chat.completion.chunk", chatID
	}
	event(`{"id":"` + id + `","object":"` + obj + `","created":1718000000,"model":"` + model + `","choices":[],"usage":` + usage(sh.tokens) + `}`)
	event("[DONE]")
	all = append(all, "0\r\n\r\n"...)
	b.all, b.raw = all, raw
	return b
}
