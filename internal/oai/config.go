// Package oai is an OpenAI-compatible streaming client that times what it
// reads: each request's send, first byte, first chunk, first token, every
// token-bearing chunk and end (Result), with failures sorted into error
// kinds (Error). It speaks /v1/chat/completions and /v1/completions with
// stream_options, reads Server-Sent Events through its own chunk scanner,
// and carries them over one of two transports: h1 (its own HTTP/1.1 client,
// one goroutine per stream) or net/http.
//
// Files: config.go (Config, NewClient), result.go (Result), errors.go
// (error kinds and classification), encode.go (request encoding), client.go
// (one request's life, shared by both transports), stream.go (the SSE
// stream state machine), sse.go (SSE line splitting), chunk.go (the chunk
// scanner), h1.go and nethttp.go (the transports).
package oai

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/http"
	"slices"
	"time"
)

// Config configures a Client. A zero field takes its default; a negative
// one is refused by NewClient.
type Config struct {
	// MaxConns is the number of keep-alive connections kept per host; size it
	// to the concurrency. 0 means 64.
	MaxConns int
	// ConnectTimeout bounds the TCP (and TLS) connect. 0 means 10 s.
	ConnectTimeout time.Duration
	// TTFTTimeout cancels a request that has produced no token (content or
	// reasoning) this long after it was sent. 0 means no separate limit.
	TTFTTimeout time.Duration
	// Timeout bounds a whole request, connect included. 0 means none.
	Timeout time.Duration
	// MaxLineBytes bounds one SSE line. 0 means 64 MiB.
	MaxLineBytes int
	// Transport picks the HTTP client: TransportH1 (the default when
	// empty; http:// and https:// targets), TransportNetHTTP (HTTP/1.1
	// through net/http) or TransportH2 (net/http with HTTP/2: negotiated
	// by ALPN on https://, HTTP/1.1 when the server does not offer h2 and
	// on http://). NewClient refuses any other value.
	Transport string
	// TLS, when set, is the TLS configuration of https:// targets on every
	// transport: RootCAs for a private CA, InsecureSkipVerify for a test
	// gateway, client certificates. It is cloned; ServerName (SNI) and
	// NextProtos (ALPN) are set per host by the transport unless given.
	// nil means the system roots.
	TLS *tls.Config
	// RxTimestamps picks the clock of h1's arrival stamps (FirstChunk,
	// FirstToken, every mark): ClockKernelRx (the default when empty) asks
	// the kernel for each socket read's receive timestamp on Linux
	// (SO_TIMESTAMPNS), so a stamp is when the bytes reached the socket,
	// not when the client was scheduled to read them; where the kernel
	// gives none (other platforms, the option refused) the read's return
	// time is used. ClockReadReturn always stamps a read when it returns.
	// Result.FirstTokenClock says which one a request's first token got.
	// net/http and h2 always stamp when bytes are handed on. NewClient
	// refuses any other value.
	RxTimestamps string
}

// Transports and Clocks are the values Config.Transport and
// Config.RxTimestamps accept besides "" (the default), for callers that
// check a setting before they build a client.
var (
	Transports = []string{TransportH1, TransportNetHTTP, TransportH2}
	Clocks     = []string{ClockKernelRx, ClockReadReturn}
)

// Transports accepted in Config.Transport.
const (
	// TransportH1 is the package's own HTTP/1.1 transport (h1.go): one
	// goroutine per stream, the caller's, and a few KiB per connection.
	TransportH1 = "h1"
	// TransportNetHTTP is net/http's Transport, HTTP/1.1 only.
	TransportNetHTTP = "net/http"
	// TransportH2 is net/http's Transport with HTTP/2 enabled: many
	// streams share one connection, for targets (gateways) that speak h2.
	TransportH2 = "h2"
)

// Client sends streaming OpenAI-compatible requests and times them. It holds
// one pool of keep-alive connections per transport (h1 unless configured
// otherwise, net/http for Models and the other transports), shared by all
// requests. A Client is safe for concurrent use.
type Client struct {
	cfg Config
	tr  *http.Transport
	hc  *http.Client
	h1  *h1 // nil when every request goes through net/http
}

// Defaults for a zero Config field.
const (
	DefaultMaxConns       = 64
	DefaultConnectTimeout = 10 * time.Second
)

// validate checks cfg and returns an error that names the bad field and the
// fix.
func (cfg *Config) validate() error {
	switch {
	case cfg.MaxConns < 0:
		return fmt.Errorf("client max conns %d is negative: set it ≥ 1, or 0 for %d", cfg.MaxConns, DefaultMaxConns)
	case cfg.ConnectTimeout < 0:
		return fmt.Errorf("client connect timeout %v is negative: set it > 0, or 0 for %v", cfg.ConnectTimeout, DefaultConnectTimeout)
	case cfg.TTFTTimeout < 0:
		return fmt.Errorf("client TTFT timeout %v is negative: set it > 0, or 0 for no separate limit", cfg.TTFTTimeout)
	case cfg.Timeout < 0:
		return fmt.Errorf("client timeout %v is negative: set it > 0, or 0 for none", cfg.Timeout)
	case cfg.MaxLineBytes < 0:
		return fmt.Errorf("client max line bytes %d is negative: set it > 0, or 0 for %d", cfg.MaxLineBytes, defaultMaxLine)
	}
	if cfg.RxTimestamps != "" && !slices.Contains(Clocks, cfg.RxTimestamps) {
		return fmt.Errorf("client rx timestamps %q is unknown: use %q (the kernel's receive time, the default) or %q (the time the read returned)", cfg.RxTimestamps, ClockKernelRx, ClockReadReturn)
	}
	if cfg.Transport != "" && !slices.Contains(Transports, cfg.Transport) {
		return fmt.Errorf("client transport %q is unknown: use %q, %q or %q", cfg.Transport, TransportH1, TransportNetHTTP, TransportH2)
	}
	return nil
}

// NewClient returns a Client for cfg, or an error naming the field of cfg
// that is invalid.
func NewClient(cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if cfg.MaxConns == 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = DefaultConnectTimeout
	}
	if cfg.MaxLineBytes == 0 {
		cfg.MaxLineBytes = defaultMaxLine
	}
	d := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	tr := &http.Transport{
		// No proxy from the environment: load must go where the spec says.
		Proxy:               nil,
		DialContext:         d.DialContext,
		TLSHandshakeTimeout: cfg.ConnectTimeout,
		MaxIdleConns:        max(100, cfg.MaxConns),
		MaxIdleConnsPerHost: cfg.MaxConns,
		// A request that finds every connection busy waits for one rather
		// than dialling: a connection goes back to the pool a moment after
		// its body ends, and a worker's next request must not race it into
		// an extra dial (and later an idle close: port churn).
		MaxConnsPerHost: cfg.MaxConns,
		IdleConnTimeout: 90 * time.Second,
		// Each connection keeps a read and a write buffer for its lifetime.
		// Responses are read through a lineReader, and requests are small
		// or written straight through, so small buffers keep an open
		// stream's memory down without costing throughput.
		ReadBufferSize:  transportReadBuffer,
		WriteBufferSize: transportWriteBuffer,
		// Compression would let a gzip layer buffer chunks and skew timing.
		DisableCompression: true,
		ForceAttemptHTTP2:  cfg.Transport == TransportH2,
	}
	if cfg.TLS != nil {
		tr.TLSClientConfig = cfg.TLS.Clone()
	}
	if cfg.Transport == TransportH2 {
		// HTTP/2 over TLS by ALPN, HTTP/1.1 when the server does not
		// offer h2 and on http:// (no h2c: vLLM's uvicorn does not
		// speak it).
		var p http.Protocols
		p.SetHTTP1(true)
		p.SetHTTP2(true)
		tr.Protocols = &p
	}
	c := &Client{
		cfg: cfg,
		tr:  tr,
		hc: &http.Client{
			Transport: tr,
			// A redirected POST turns into a GET; report the 3xx instead.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
	}
	if cfg.Transport == "" || cfg.Transport == TransportH1 {
		c.h1 = newH1(d, cfg.MaxConns, tr.IdleConnTimeout, cfg.TLS, cfg.ConnectTimeout, cfg.RxTimestamps != ClockReadReturn)
	}
	return c, nil
}

// Close releases the Client's idle connections. Requests still running are
// not affected; on the h1 transport their connections are closed when they
// end rather than kept idle (net/http keeps them idle until its idle
// timeout).
func (c *Client) Close() {
	c.tr.CloseIdleConnections()
	if c.h1 != nil {
		c.h1.closeIdle()
	}
}

// Transport buffer sizes; see NewClient.
const (
	transportReadBuffer  = 2 << 10
	transportWriteBuffer = 1 << 10
)
