package oai

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// h1 is a minimal HTTP/1.1 client transport for http:// and https://
// targets (TLS through crypto/tls, ALPN http/1.1, SNI). It
// exists for the measurement path: net/http runs a read loop and a write
// loop goroutine per connection besides the caller's, and builds an
// http.Request, an http.Response and their headers for every request. h1
// runs on the caller's goroutine alone: the request is written straight to
// the connection, the status line and headers are parsed from the
// connection's small read buffer, and the body (chunked or Content-Length)
// is decoded in place. Cancellation sets a past deadline on the connection
// (context.AfterFunc), so nothing waits on the context in another
// goroutine.
//
// Connections are kept per host, at most max of them (idle, busy and
// dialling together); a request that finds them all busy waits for one,
// which keeps the pool sized to the concurrency as MaxConnsPerHost does for
// net/http. A connection goes back to the pool only after its body was read
// to the end without error, before Do returns. Once closeIdle has run
// (Client.Close), a connection whose request ends is closed instead of kept
// idle.
type h1 struct {
	dialer      *net.Dialer
	max         int
	idleTimeout time.Duration
	// tls is the base TLS configuration for https:// targets (roots,
	// InsecureSkipVerify, client certificates); each host gets a clone
	// with its server name and ALPN set. handshakeTimeout bounds the
	// handshake, as TLSHandshakeTimeout does for net/http.
	tls              *tls.Config
	handshakeTimeout time.Duration
	// rx turns on kernel receive timestamps (Config.RxTimestamps).
	rx bool
	// closed is set by closeIdle; put reads it under a host's mu, after
	// closeIdle set it and before closeIdle takes that mu, so that no
	// connection is left idle once closeIdle returns.
	closed atomic.Bool

	mu    sync.Mutex
	hosts map[string]*h1Host
}

// h1Host is the pool of one host:port and scheme.
type h1Host struct {
	t    *h1
	addr string
	// tls is set for an https:// host: its configuration, with ServerName
	// (SNI and the name verified) and NextProtos ["http/1.1"].
	tls *tls.Config

	mu      sync.Mutex
	idle    []*h1Conn // oldest first; the newest is reused first
	n       int       // connections open or being dialled
	waiters []chan *h1Conn
}

// h1Conn is one persistent connection.
type h1Conn struct {
	nc     net.Conn        // the TLS connection for https, else sc
	sc     *stampConn      // the TCP connection, stamping its reads
	rc     syscall.RawConn // for the liveness check; nil if unavailable
	br     *bufio.Reader
	host   *h1Host
	idleAt time.Time
}

const (
	// h1ReadBuffer is a connection's read buffer: the status line, headers
	// and chunk framing are parsed in it, and body bytes pass through it.
	h1ReadBuffer = 2 << 10
	// h1MaxHeaderBytes bounds a response's status line and headers.
	h1MaxHeaderBytes = 1 << 20
	// h1MaxTrailerBytes bounds a chunked body's trailer section.
	h1MaxTrailerBytes = 64 << 10
	// h1UserAgent is what net/http sends, so servers see no difference.
	h1UserAgent = "Go-http-client/1.1"
)

var (
	aLongTimeAgo  = time.Unix(1, 0)
	h1WriteBuffer = sync.Pool{New: func() any { b := make([]byte, 0, 1<<10); return &b }}
)

// h1Error is a protocol error in a response.
type h1Error struct{ msg string }

func (e *h1Error) Error() string { return e.msg }

// newH1 returns an h1 transport; tlsConf (nil for the defaults: the
// system roots) is the base configuration of https:// connections.
func newH1(d *net.Dialer, maxConns int, idleTimeout time.Duration, tlsConf *tls.Config, handshakeTimeout time.Duration, rx bool) *h1 {
	if tlsConf == nil {
		tlsConf = &tls.Config{}
	}
	return &h1{dialer: d, max: maxConns, idleTimeout: idleTimeout, tls: tlsConf, handshakeTimeout: handshakeTimeout, rx: rx, hosts: map[string]*h1Host{}}
}

// host returns the pool of t's target, one per scheme and host:port.
func (t *h1) host(target h1Target) *h1Host {
	key := target.addr
	if target.tls {
		key = "tls " + key
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	h := t.hosts[key]
	if h == nil {
		h = &h1Host{t: t, addr: target.addr}
		if target.tls {
			h.tls = t.tls.Clone()
			if h.tls.ServerName == "" {
				h.tls.ServerName = target.serverName
			}
			// Only HTTP/1.1 is offered: a server that supports h2 picks
			// http/1.1, and one without ALPN is fine too.
			h.tls.NextProtos = []string{"http/1.1"}
		}
		t.hosts[key] = h
	}
	return h
}

// closeIdle closes every idle connection, and makes put close the
// connections of requests still running rather than keep them idle.
func (t *h1) closeIdle() {
	t.closed.Store(true)
	t.mu.Lock()
	hosts := make([]*h1Host, 0, len(t.hosts))
	for _, h := range t.hosts {
		hosts = append(hosts, h)
	}
	t.mu.Unlock()
	for _, h := range hosts {
		h.mu.Lock()
		idle := h.idle
		h.idle = nil
		h.mu.Unlock()
		for _, c := range idle {
			c.discard()
		}
	}
}

// get returns a connection to h: an idle one that is still open, or a new
// one when fewer than max are open, else the first one handed back (or the
// first slot freed) while ctx lasts.
func (h *h1Host) get(ctx context.Context) (c *h1Conn, reused bool, err error) {
	for {
		h.mu.Lock()
		if k := len(h.idle); k > 0 {
			c = h.idle[k-1]
			h.idle[k-1] = nil
			h.idle = h.idle[:k-1]
			h.mu.Unlock()
			if c.usable() {
				return c, true, nil
			}
			c.discard()
			continue
		}
		if h.n < h.t.max {
			h.n++
			h.mu.Unlock()
			return h.dial(ctx)
		}
		w := make(chan *h1Conn, 1)
		h.waiters = append(h.waiters, w)
		h.mu.Unlock()
		select {
		case c = <-w:
		case <-ctx.Done():
			h.mu.Lock()
			removed := false
			for i, x := range h.waiters {
				if x == w {
					h.waiters = append(h.waiters[:i], h.waiters[i+1:]...)
					removed = true
					break
				}
			}
			h.mu.Unlock()
			if !removed {
				// Granted meanwhile: pass the grant on.
				if c = <-w; c != nil {
					h.put(c)
				} else {
					h.grantSlot()
				}
			}
			return nil, false, context.Cause(ctx)
		}
		if c == nil {
			// A slot was freed for us: the count already includes it.
			return h.dial(ctx)
		}
		if c.usable() {
			return c, true, nil
		}
		c.discard()
	}
}

// dial opens a connection on a slot already counted in h.n, and for an
// https host completes the TLS handshake within the handshake timeout.
func (h *h1Host) dial(ctx context.Context) (*h1Conn, bool, error) {
	raw, err := h.t.dialer.DialContext(ctx, "tcp", h.addr)
	if err != nil {
		h.grantSlot()
		return nil, false, err
	}
	sc := newStampConn(raw, h.t.rx)
	c := &h1Conn{nc: sc, sc: sc, host: h}
	if h.tls != nil {
		tc := tls.Client(sc, h.tls)
		if err := h.handshake(ctx, tc); err != nil {
			raw.Close()
			h.grantSlot()
			return nil, false, err
		}
		c.nc = tc
	}
	c.br = bufio.NewReaderSize(c.nc, h1ReadBuffer)
	if s, ok := raw.(syscall.Conn); ok {
		c.rc, _ = s.SyscallConn()
	}
	return c, false, nil
}

// handshake runs tc's TLS handshake under ctx and the handshake timeout. A
// timeout is reported as a dial timeout (connect_timeout), and any other
// failure names the host and the fix.
func (h *h1Host) handshake(ctx context.Context, tc *tls.Conn) error {
	hctx, cancel := context.WithTimeout(ctx, h.t.handshakeTimeout)
	defer cancel()
	// The handshake (certificate parsing and verification) needs a deep
	// stack; run on the stream's goroutine it would grow that stack to
	// 16 KiB for the stream's whole life. A short-lived goroutine, waited
	// for here, runs it instead.
	errc := make(chan error, 1)
	go func() { errc <- tc.HandshakeContext(hctx) }()
	err := <-errc
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return err // the request's own cancellation or timeout
	case hctx.Err() != nil:
		return &net.OpError{Op: "dial", Net: "tcp", Addr: tc.RemoteAddr(),
			Err: &handshakeTimeoutError{fmt.Sprintf("TLS handshake with %s did not finish within the connect timeout %v", h.addr, h.t.handshakeTimeout)}}
	}
	var verr *tls.CertificateVerificationError
	if errors.As(err, &verr) {
		return fmt.Errorf("TLS handshake with %s (server name %q): %w: trust the server's CA (the client's TLS configuration, RootCAs) or, on a trusted test network only, skip verification", h.addr, h.tls.ServerName, err)
	}
	return fmt.Errorf("TLS handshake with %s (server name %q): %w", h.addr, h.tls.ServerName, err)
}

// handshakeTimeoutError is a TLS handshake that outlasted the connect
// timeout: a net.Error whose Timeout is true, so that it is classified as
// connect_timeout.
type handshakeTimeoutError struct{ msg string }

func (e *handshakeTimeoutError) Error() string   { return e.msg }
func (e *handshakeTimeoutError) Timeout() bool   { return true }
func (e *handshakeTimeoutError) Temporary() bool { return true }
func (e *handshakeTimeoutError) Unwrap() error   { return context.DeadlineExceeded }

// stampConn is a TCP connection that remembers when the bytes of its last
// read that returned bytes arrived: the arrival time of the bytes a
// response's body reads hand on (h1Body.arrived), taken before any TLS
// decryption, chunk framing or SSE parsing. With rx set (Linux, kernel
// receive timestamps on), that is the kernel's receive time of the newest
// byte read, converted to the monotonic clock (kernelArrival); else, or when
// the kernel returned no timestamp, the time the read returned. Only the
// request's goroutine reads it; Write runs on that goroutine too.
type stampConn struct {
	net.Conn
	rx *rxReader // nil: stamp in user space
	at time.Time
	// kernel says whether at is a kernel receive timestamp.
	kernel bool
	// floor is the earliest a read's bytes can have arrived: the start of
	// the last write (the request) or the last read's arrival, whichever
	// is later.
	floor time.Time
}

// newStampConn wraps raw, with kernel receive timestamps when rx is set
// and the platform and connection support them.
func newStampConn(raw net.Conn, rx bool) *stampConn {
	c := &stampConn{Conn: raw}
	if rx {
		c.rx = newRxReader(raw)
	}
	return c
}

// Read reads from the connection and stamps a read that returned bytes.
func (c *stampConn) Read(p []byte) (int, error) {
	if c.rx == nil {
		n, err := c.Conn.Read(p)
		if n > 0 {
			c.at, c.kernel = time.Now(), false
		}
		return n, err
	}
	n, sec, nsec, stamped, err := c.rx.read(p)
	if n > 0 {
		now := time.Now()
		if stamped {
			c.at, c.kernel = kernelArrival(now, time.Unix(sec, nsec), c.floor), true
		} else {
			c.at, c.kernel = now, false
		}
		c.floor = c.at
	}
	return n, err
}

// Write writes to the connection; its start is the floor of later reads'
// arrival.
func (c *stampConn) Write(p []byte) (int, error) {
	if c.rx != nil {
		c.floor = time.Now()
	}
	return c.Conn.Write(p)
}

// put hands c to the first waiter or keeps it idle, or closes it once the
// transport is closed; c's body has been read to its end.
func (h *h1Host) put(c *h1Conn) {
	now := time.Now()
	c.idleAt = now
	h.mu.Lock()
	if len(h.waiters) > 0 {
		w := h.waiters[0]
		h.waiters = h.waiters[1:]
		h.mu.Unlock()
		w <- c
		return
	}
	if h.t.closed.Load() {
		h.mu.Unlock()
		c.discard()
		return
	}
	h.idle = append(h.idle, c)
	// Close connections idle too long, oldest first.
	var stale []*h1Conn
	for len(h.idle) > 0 && now.Sub(h.idle[0].idleAt) > h.t.idleTimeout {
		stale = append(stale, h.idle[0])
		h.idle[0] = nil
		h.idle = h.idle[1:]
	}
	h.mu.Unlock()
	for _, s := range stale {
		s.discard()
	}
}

// grantSlot gives up one counted connection: the first waiter may dial
// instead.
func (h *h1Host) grantSlot() {
	h.mu.Lock()
	if len(h.waiters) > 0 {
		w := h.waiters[0]
		h.waiters = h.waiters[1:]
		h.mu.Unlock()
		w <- nil
		return
	}
	h.n--
	h.mu.Unlock()
}

// discard closes c and frees its slot.
func (c *h1Conn) discard() {
	c.nc.Close()
	c.host.grantSlot()
}

// usable reports whether an idle connection may be reused: not idle for too
// long, and with nothing to read: a server that closed it (keep-alive
// timeout) has left an EOF, which a peek sees without blocking.
func (c *h1Conn) usable() bool {
	if time.Since(c.idleAt) > c.host.t.idleTimeout || c.br.Buffered() > 0 {
		return false
	}
	if c.rc == nil {
		return true
	}
	alive := false
	var b [1]byte
	err := c.rc.Read(func(fd uintptr) bool {
		n, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = n < 0 && (err == syscall.EAGAIN || err == syscall.EWOULDBLOCK)
		return true // never wait
	})
	return err == nil && alive
}

// h1Target is a parsed http:// or https:// endpoint.
type h1Target struct {
	addr       string // host:port to dial
	host       string // Host header
	uri        string // request target
	tls        bool   // https://
	serverName string // SNI and the name the certificate must carry
}

// parseH1Target parses an http:// or https:// URL for h1; ok is false for
// a URL h1 does not serve (another scheme, user info), which then goes
// through net/http.
func parseH1Target(raw string) (h1Target, bool, error) {
	secure := strings.HasPrefix(raw, "https://")
	if !secure && !strings.HasPrefix(raw, "http://") {
		return h1Target{}, false, nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return h1Target{}, false, err
	}
	if u.User != nil || u.Host == "" {
		return h1Target{}, false, nil
	}
	port := u.Port()
	if port == "" {
		port = "80"
		if secure {
			port = "443"
		}
	}
	return h1Target{addr: net.JoinHostPort(u.Hostname(), port), host: u.Host, uri: u.RequestURI(), tls: secure, serverName: u.Hostname()}, true, nil
}

// h1Header is one request header; names are canonical.
type h1Header struct{ name, value string }

// setHeader sets name to value, replacing an earlier value (http.Header.Set
// semantics).
func setHeader(hs []h1Header, name, value string) []h1Header {
	for i := range hs {
		if hs[i].name == name {
			hs[i].value = value
			return hs
		}
	}
	return append(hs, h1Header{name, value})
}

// appendRequest renders a POST with a Content-Length body.
func appendRequest(b []byte, t h1Target, hs []h1Header, body []byte) ([]byte, error) {
	b = append(b, "POST "...)
	b = append(b, t.uri...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = append(b, t.host...)
	b = append(b, "\r\n"...)
	ua := h1UserAgent
	for _, h := range hs {
		if err := checkHeader(h.name, h.value); err != nil {
			return b, err
		}
		switch h.name {
		case "Host", "Content-Length", "Transfer-Encoding", "Trailer":
			// Set by the transport, as net/http does.
			continue
		case "User-Agent":
			ua = h.value
			continue
		}
		b = append(b, h.name...)
		b = append(b, ": "...)
		b = append(b, h.value...)
		b = append(b, "\r\n"...)
	}
	if ua != "" {
		b = append(b, "User-Agent: "...)
		b = append(b, ua...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "Content-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	b = append(b, "\r\n\r\n"...)
	return append(b, body...), nil
}

// h1Response is a parsed response head.
type h1Response struct {
	status      int
	contentType string
	close       bool // the connection cannot be reused after the body
}

// readHeadLine reads one line into the buffer, or, for a line longer than it,
// into *long (bounded by *budget). The result is valid until the next read.
func readHeadLine(br *bufio.Reader, long *[]byte, budget *int) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	*budget -= len(line)
	if err == bufio.ErrBufferFull {
		*long = append((*long)[:0], line...)
		for err == bufio.ErrBufferFull {
			if *budget < 0 {
				return nil, &h1Error{"response header too long"}
			}
			line, err = br.ReadSlice('\n')
			*budget -= len(line)
			*long = append(*long, line...)
		}
		line = *long
	}
	if *budget < 0 {
		return nil, &h1Error{"response header too long"}
	}
	if err != nil {
		if errors.Is(err, io.EOF) && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return trimEOL(line), nil
}

// readResponse reads a response head, skipping 1xx responses, and returns
// the body reader.
func readResponse(br *bufio.Reader, sc *stampConn, body *h1Body) (resp h1Response, err error) {
	var long []byte
	budget := h1MaxHeaderBytes
	for {
		line, err := readHeadLine(br, &long, &budget)
		if err != nil {
			return resp, err
		}
		minor, status, err := parseStatusLine(line)
		if err != nil {
			return resp, err
		}
		resp = h1Response{status: status, close: minor == 0}
		length, chunked, identity := int64(-1), false, false
		for {
			line, err := readHeadLine(br, &long, &budget)
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				return resp, err
			}
			if len(line) == 0 {
				break
			}
			if line[0] == ' ' || line[0] == '\t' {
				continue // obsolete line folding of a header we ignore
			}
			i := bytes.IndexByte(line, ':')
			if i <= 0 {
				return resp, &h1Error{fmt.Sprintf("malformed HTTP response header %q", clip(line, 64))}
			}
			name, value := line[:i], trimSpace(line[i+1:])
			switch {
			case equalFold(name, "Content-Type"):
				resp.contentType = string(value)
			case equalFold(name, "Content-Length"):
				n, err := strconv.ParseInt(string(value), 10, 64)
				if err != nil || n < 0 || (length >= 0 && n != length) {
					return resp, &h1Error{fmt.Sprintf("malformed Content-Length %q", clip(value, 64))}
				}
				length = n
			case equalFold(name, "Transfer-Encoding"):
				// The last coding decides; anything but chunked is read to
				// the end of the connection.
				last := value
				if j := bytes.LastIndexByte(value, ','); j >= 0 {
					last = trimSpace(value[j+1:])
				}
				chunked = equalFold(last, "chunked")
				identity = !chunked
			case equalFold(name, "Connection"):
				for _, tok := range strings.Split(string(value), ",") {
					switch strings.ToLower(strings.TrimSpace(tok)) {
					case "close":
						resp.close = true
					case "keep-alive":
						if minor == 0 {
							resp.close = false
						}
					}
				}
			}
		}
		if status >= 100 && status < 200 && status != 101 {
			continue // 100 Continue, 103 Early Hints: the real response follows
		}
		if status == 101 {
			return resp, &h1Error{"unexpected 101 Switching Protocols"}
		}
		*body = h1Body{br: br, sc: sc}
		switch {
		case status == 204 || status == 304:
			body.done = true
		case chunked:
			body.mode = bodyChunked
		case identity:
			body.mode = bodyUntilClose
			resp.close = true
		case length >= 0:
			body.mode, body.remain = bodyLength, length
			body.done = length == 0
		default:
			body.mode = bodyUntilClose
			resp.close = true
		}
		return resp, nil
	}
}

// parseStatusLine parses "HTTP/1.x NNN reason".
func parseStatusLine(line []byte) (minor, status int, err error) {
	bad := func() (int, int, error) {
		return 0, 0, &h1Error{fmt.Sprintf("malformed HTTP status line %q", clip(line, 64))}
	}
	if len(line) < 12 || string(line[:7]) != "HTTP/1." || line[8] != ' ' || (len(line) > 12 && line[12] != ' ') {
		return bad()
	}
	switch line[7] {
	case '0':
	case '1':
		minor = 1
	default:
		return bad()
	}
	for _, c := range line[9:12] {
		if c < '0' || c > '9' {
			return bad()
		}
		status = status*10 + int(c-'0')
	}
	if status < 100 {
		return bad()
	}
	return minor, status, nil
}

// Body framings.
const (
	bodyLength = iota
	bodyChunked
	bodyUntilClose
)

// h1Body reads a response body from the connection's buffer.
type h1Body struct {
	br     *bufio.Reader
	sc     *stampConn // the connection's arrival stamps
	mode   int
	remain int64 // bytes left in the current chunk or the body
	crlf   bool  // a chunk's data was read; its CRLF is next
	done   bool  // the body was read to its end
	err    error // sticky read error
}

// Read reads body bytes. A chunked body's chunks are joined while their
// framing is already buffered, so chunks that arrived together come back
// from one Read.
func (b *h1Body) Read(p []byte) (int, error) {
	if b.done {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	if len(p) == 0 {
		return 0, nil
	}
	switch b.mode {
	case bodyLength:
		if int64(len(p)) > b.remain {
			p = p[:b.remain]
		}
		n, err := b.br.Read(p)
		b.remain -= int64(n)
		if b.remain == 0 {
			b.done = true
			return n, nil
		}
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		b.err = err
		return n, err
	case bodyUntilClose:
		n, err := b.br.Read(p)
		if err == io.EOF {
			b.done = true
		} else {
			b.err = err
		}
		return n, err
	}
	n := 0
	for n < len(p) {
		if b.remain == 0 {
			// Between chunks: go on only with framing at hand, unless
			// nothing has been read yet.
			if n > 0 && !b.framingBuffered() {
				break
			}
			if err := b.nextChunk(); err != nil {
				b.err = err
				return n, err
			}
			if b.done {
				if n > 0 {
					return n, nil
				}
				return 0, io.EOF
			}
		}
		q := p[n:]
		if int64(len(q)) > b.remain {
			q = q[:b.remain]
		}
		if n > 0 && b.br.Buffered() == 0 {
			break
		}
		if n > 0 && len(q) > b.br.Buffered() {
			q = q[:b.br.Buffered()]
		}
		k, err := b.br.Read(q)
		n += k
		b.remain -= int64(k)
		if b.remain == 0 {
			b.crlf = true
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			b.err = err
			return n, err
		}
	}
	return n, nil
}

// arrivedKernel reports whether arrived is a kernel receive timestamp.
func (b *h1Body) arrivedKernel() bool { return b.sc != nil && b.sc.kernel }

// arrived returns when the connection's last read that returned bytes
// came back: for the bytes a Read just handed on, the arrival of the read
// that completed them (bytes already buffered arrived with an earlier
// read, whose stamp this still is). It is the zero Time before any read,
// or when the body has no stamping connection.
func (b *h1Body) arrived() time.Time {
	if b.sc == nil {
		return time.Time{}
	}
	return b.sc.at
}

// framingBuffered reports whether the next chunk's header (and the CRLF
// before it) is buffered in full, so that reading it cannot block. The last
// chunk (size 0, maybe with leading zeros) counts as not buffered: its
// trailers might not be, and the next Read handles it.
func (b *h1Body) framingBuffered() bool {
	buf, _ := b.br.Peek(b.br.Buffered())
	if b.crlf {
		if len(buf) < 2 {
			return false
		}
		buf = buf[2:]
	}
	return len(buf) > 0 && buf[0] != '0' && bytes.IndexByte(buf, '\n') >= 0
}

// nextChunk reads the CRLF ending the previous chunk and the next chunk's
// size line; at the last chunk it reads the trailers and sets done.
func (b *h1Body) nextChunk() error {
	if b.crlf {
		crlf, err := b.br.Peek(2)
		if err != nil {
			return unexpected(err)
		}
		if crlf[0] != '\r' || crlf[1] != '\n' {
			return &h1Error{"malformed chunked encoding: chunk data not followed by CRLF"}
		}
		_, _ = b.br.Discard(2)
		b.crlf = false
	}
	line, err := b.br.ReadSlice('\n')
	if err != nil {
		if err == bufio.ErrBufferFull {
			return &h1Error{"malformed chunked encoding: chunk header too long"}
		}
		return unexpected(err)
	}
	line = trimEOL(line)
	if i := bytes.IndexByte(line, ';'); i >= 0 {
		line = line[:i] // chunk extensions are ignored
	}
	line = trimSpace(line)
	if len(line) == 0 || len(line) > 15 {
		return &h1Error{fmt.Sprintf("malformed chunked encoding: chunk size %q", clip(line, 32))}
	}
	var size int64
	for _, c := range line {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c -= 'a' - 10
		case 'A' <= c && c <= 'F':
			c -= 'A' - 10
		default:
			return &h1Error{fmt.Sprintf("malformed chunked encoding: chunk size %q", clip(line, 32))}
		}
		size = size<<4 | int64(c)
	}
	if size > 0 {
		b.remain = size
		return nil
	}
	// Last chunk: trailers up to an empty line.
	var long []byte
	budget := h1MaxTrailerBytes
	for {
		line, err := readHeadLine(b.br, &long, &budget)
		if err != nil {
			return unexpected(err)
		}
		if len(line) == 0 {
			b.done = true
			return nil
		}
	}
}

func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func trimSpace(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold reports whether b equals the ASCII string s, ignoring case.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

// encodeH1 renders req for h1 into a pooled buffer; outgoing.release hands
// it back. An invalid header fails here, before anything is sent.
func (o *outgoing) encodeH1(req *Request, t h1Target, body []byte) error {
	var hbuf [8]h1Header
	hs := append(hbuf[:0], h1Header{"Content-Type", "application/json"})
	if req.Stream {
		hs = append(hs, h1Header{"Accept", "text/event-stream"})
	}
	if req.APIKey != "" {
		hs = append(hs, h1Header{"Authorization", "Bearer " + req.APIKey})
	}
	for k, v := range req.Headers {
		k = http.CanonicalHeaderKey(k)
		hs = setHeader(hs, k, v)
		if k == "Connection" && strings.EqualFold(strings.TrimSpace(v), "close") {
			o.reqClose = true
		}
	}
	o.wp = h1WriteBuffer.Get().(*[]byte)
	wbuf, err := appendRequest((*o.wp)[:0], t, hs, body)
	*o.wp = wbuf[:0]
	if err != nil {
		return err
	}
	o.target, o.wbuf = t, wbuf
	return nil
}

// roundTripH1 writes the request rendered by encodeH1 on a pooled
// connection, reads the response head and hands the body to readBody; the
// connection goes back to the pool only when its body was read to the end.
func (c *Client) roundTripH1(ctx context.Context, cancel context.CancelCauseFunc, req *Request, out *outgoing, s *stream) {
	r := s.r
	host := c.h1.host(out.target)
	var (
		conn *h1Conn
		resp h1Response
		hb   h1Body
		stop func() bool
		err  error
	)
	for attempt := 0; ; attempt++ {
		var reused bool
		conn, reused, err = host.get(ctx)
		if err != nil {
			r.Done = time.Now()
			r.Err = classify(ctx, err, false)
			return
		}
		r.Connected, r.Reused = time.Since(r.Send), reused
		nc := conn.nc
		stop = context.AfterFunc(ctx, func() { _ = nc.SetDeadline(aLongTimeAgo) })
		var werr error
		if _, werr = nc.Write(out.wbuf); werr == nil {
			r.Wrote = time.Since(r.Send)
			resp, err = readResponse(conn.br, conn.sc, &hb)
		} else {
			err = werr
		}
		if err == nil {
			break
		}
		stop()
		conn.discard()
		// A kept-alive connection the server closed just as it was
		// reused (after get's liveness check) can fail the write: the
		// request did not go out whole, so no server can have acted on
		// it, and it is tried once more on another connection, as
		// net/http does. Once the whole request was written it is never
		// resent, even if no response byte came back: the server may
		// have read it and acted on it (net/http does not resend a POST
		// either).
		if reused && werr != nil && attempt == 0 && ctx.Err() == nil {
			continue
		}
		r.Done = time.Now()
		r.Err = classify(ctx, err, false)
		return
	}
	// The head arrived with the connection's last read, which may also have
	// carried the first chunk: stamp both alike, so the head is never
	// "after" the first chunk (a stamp older than the send is a previous
	// response's, and cannot be this one's).
	r.Header = time.Now()
	if at := conn.sc.at; !at.IsZero() && !at.Before(r.Send) && at.Before(r.Header) {
		r.Header = at
	}
	r.Status = resp.status
	c.readBody(ctx, cancel, req, s, resp.status, resp.contentType, &hb)
	if stop() && hb.done && !resp.close && !out.reqClose {
		host.put(conn)
	} else {
		conn.discard()
	}
}
