package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"
)

// API names accepted in Request.API and Target.API.
const (
	APICompletions = "completions"
	APIChat        = "chat"
)

// Usage sources: where a Result's token counts come from.
const (
	// UsageContinuous means every chunk carried cumulative usage
	// (stream_options.continuous_usage_stats), so each chunk's token count is
	// exact.
	UsageContinuous = "continuous"
	// UsageFinal means only the final usage chunk was sent: the output token
	// count is exact, but each content chunk counts as one token for ITL.
	UsageFinal = "final"
	// UsageCounted means no usage was sent: every token-bearing chunk counts
	// as one token, and the output token count is the number of such chunks.
	UsageCounted = "counted"
)

// Error kinds. HTTP errors use the kind "http_<code>" (for example http_400)
// and the class KindHTTP4xx or KindHTTP5xx; every other error's class equals
// its kind.
const (
	KindHTTP4xx         = "http_4xx"
	KindHTTP5xx         = "http_5xx"
	KindStreamError     = "stream_error"
	KindTimeoutTTFT     = "timeout_ttft"
	KindTimeoutTotal    = "timeout_total"
	KindTruncated       = "truncated"
	KindMalformedJSON   = "malformed_json"
	KindConnectRefused  = "connect_refused"
	KindConnectTimeout  = "connect_timeout"
	KindConnectionReset = "connection_reset"
	KindCanceled        = "canceled"
	// KindBadContentType is a 2xx answer to a streaming request that is
	// neither an SSE stream nor JSON: an HTML page from a proxy or a
	// misrouted URL, for example.
	KindBadContentType = "bad_content_type"
	KindOther          = "other"
)

const (
	// maxErrorBody bounds the error body kept in a Result.
	maxErrorBody = 1 << 10
	// previewBytes bounds Result.Preview.
	previewBytes = 200
	// defaultMaxLine bounds one SSE line; a longer line fails the request
	// rather than exhausting memory.
	defaultMaxLine = 64 << 20
	// maxJSONBody bounds a non-streaming response body.
	maxJSONBody = 64 << 20
	// drainLimit and drainTimeout bound the read after [DONE] or an HTTP
	// error that returns the connection to the pool.
	drainLimit   = 64 << 10
	drainTimeout = time.Second
	// readerSize is the SSE read buffer an open stream holds; a longer line
	// grows a temporary buffer (see lineReader).
	readerSize = 2 << 10
	// marksHint bounds the Marks capacity reserved up front; a longer
	// stream grows the slice by appending.
	marksHint = 64
	// maxPooledMarks bounds the Marks capacity Release keeps for reuse.
	maxPooledMarks = 8 << 10
	// maxChunkTokens caps the tokens one chunk may claim, so that a server
	// reporting absurd usage cannot make ITL recording loop for long. Real
	// chunks carry a handful of tokens.
	maxChunkTokens = 1 << 16
)

var (
	errTTFTTimeout  = errors.New("no token before the TTFT timeout")
	errTotalTimeout = errors.New("request did not finish before the total timeout")
	errDrain        = errors.New("drain after end of stream")
)

// ClientConfig configures a Client.
type ClientConfig struct {
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
	// Transport picks the HTTP client for plain-http targets: TransportH1
	// (the default when empty) or TransportNetHTTP. https:// targets always
	// use net/http. Any other value fails every request with kind other.
	Transport string
}

// Transports accepted in ClientConfig.Transport.
const (
	// TransportH1 is the package's own HTTP/1.1 transport (h1.go): one
	// goroutine per stream, the caller's, and a few KiB per connection.
	TransportH1 = "h1"
	// TransportNetHTTP is net/http's Transport.
	TransportNetHTTP = "net/http"
)

// Client sends streaming OpenAI-compatible requests and times them. It holds
// one pool of keep-alive connections per transport (h1 for plain http unless
// configured otherwise, net/http for https), shared by all requests. A
// Client is safe for concurrent use.
type Client struct {
	cfg    ClientConfig
	tr     *http.Transport
	hc     *http.Client
	h1     *h1   // nil when plain http goes through net/http
	cfgErr error // a bad ClientConfig, reported by every Do
}

// NewClient returns a Client for cfg.
func NewClient(cfg ClientConfig) *Client {
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = 64
	}
	if cfg.ConnectTimeout <= 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.MaxLineBytes <= 0 {
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
		ForceAttemptHTTP2:  false,
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
	switch cfg.Transport {
	case "", TransportH1:
		c.h1 = newH1(d, cfg.MaxConns, tr.IdleConnTimeout)
	case TransportNetHTTP:
	default:
		c.cfgErr = fmt.Errorf("transport %q is unknown: use %q or %q", cfg.Transport, TransportH1, TransportNetHTTP)
	}
	return c
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

// Request is one completion request.
type Request struct {
	// BaseURL is the server's base URL, with or without a trailing /v1.
	BaseURL string
	// API is APICompletions or APIChat; empty means APIChat.
	API         string
	Model       string
	Prompt      string
	MaxTokens   int
	IgnoreEOS   bool
	Temperature float64
	// Stream asks for SSE streaming; measurements always stream. Without it
	// the whole body arrives at once and TTFT equals E2E.
	Stream bool
	APIKey string
	// Headers are added to the request (after Content-Type and Authorization,
	// so they can override them).
	Headers map[string]string
	// ExtraBody is merged into the JSON body; its keys win over the built
	// ones (for example "min_tokens" or a different "temperature").
	ExtraBody map[string]any
	// Streamed, when set, gets each token-bearing chunk's tokens added as
	// the chunk arrives, counted as the ITL marks count them, so that a
	// caller can count tokens of requests still in flight. One atomic add
	// per chunk; no allocation.
	Streamed *atomic.Uint64
}

// Transport buffer sizes; see NewClient.
const (
	transportReadBuffer  = 2 << 10
	transportWriteBuffer = 1 << 10
)

// Mark is one token-bearing chunk: its arrival time since Result.Send and
// the number of tokens it carried.
type Mark struct {
	At     time.Duration
	Tokens int32
	// Reasoning is set when the chunk carried only reasoning content.
	Reasoning bool
}

// Result is one request's timings and counts. Timestamps come from
// time.Now and carry the monotonic clock; a zero Time means the event did not
// happen.
type Result struct {
	// Send is taken just before the request is handed to the transport, so
	// it includes connecting when no idle connection is available.
	Send time.Time
	// Header is when the response headers arrived.
	Header time.Time
	// FirstChunk is the first SSE data line, including the chat role chunk.
	FirstChunk time.Time
	// FirstToken is the first chunk with non-empty text or delta.content.
	FirstToken time.Time
	// FirstReasoning is the first chunk with non-empty reasoning content.
	FirstReasoning time.Time
	// Last is the last token-bearing chunk (content or reasoning).
	Last time.Time
	// Done is [DONE], the end of the stream, or the failure.
	Done time.Time

	// Connected and Wrote are offsets from Send to the connection being
	// obtained and the request being written (httptrace); Reused says
	// whether the connection came from the keep-alive pool.
	Connected time.Duration
	Wrote     time.Duration
	Reused    bool

	Status       int
	PromptTokens int
	OutputTokens int
	// CachedTokens is prompt_tokens_details.cached_tokens; -1 when absent.
	CachedTokens int
	// UsageSource is UsageContinuous, UsageFinal or UsageCounted.
	UsageSource string
	// Chunks counts SSE data lines, [DONE] excluded.
	Chunks int
	// Marks lists the token-bearing chunks in arrival order. Release hands
	// its storage back for reuse.
	Marks        []Mark
	FinishReason string
	// Preview is the start of the generated content, at most 200 bytes.
	Preview string

	// Err is nil on success.
	Err *Error

	// marks is the pooled box Marks came from; see Release.
	marks *[]Mark
}

// markPool holds *[]Mark boxes of capacity marksHint or more.
var markPool = sync.Pool{New: func() any {
	m := make([]Mark, 0, marksHint)
	return &m
}}

// Release hands r.Marks back to a pool, so that a later request reuses its
// storage, and sets r.Marks to nil. Call it, at most once per Result, when
// the marks are no longer needed (for example once they are recorded into
// histograms); a copy of r must not use its Marks afterwards. Calling it is
// optional: an unreleased Result is simply garbage collected.
func (r *Result) Release() {
	if r.marks == nil {
		r.Marks = nil
		return
	}
	if cap(r.Marks) <= maxPooledMarks {
		*r.marks = r.Marks[:0]
		markPool.Put(r.marks)
	}
	r.Marks, r.marks = nil, nil
}

// OK reports whether the request succeeded.
func (r *Result) OK() bool { return r.Err == nil }

// TTFT returns FirstToken − Send, or 0 when no token arrived.
func (r *Result) TTFT() time.Duration {
	if r.FirstToken.IsZero() {
		return 0
	}
	return r.FirstToken.Sub(r.Send)
}

// E2E returns Last − Send, or Done − Send when no token arrived.
func (r *Result) E2E() time.Duration {
	switch {
	case !r.Last.IsZero():
		return r.Last.Sub(r.Send)
	case !r.Done.IsZero():
		return r.Done.Sub(r.Send)
	}
	return 0
}

// firstGenerated returns the first token-bearing chunk of either kind.
func (r *Result) firstGenerated() time.Time {
	switch {
	case r.FirstReasoning.IsZero():
		return r.FirstToken
	case r.FirstToken.IsZero() || r.FirstReasoning.Before(r.FirstToken):
		return r.FirstReasoning
	}
	return r.FirstToken
}

// TPOT returns (Last − first generated token) / (OutputTokens − 1) and true
// when OutputTokens ≥ 2. The first generated token is FirstToken unless
// reasoning came first, since OutputTokens counts reasoning tokens too.
func (r *Result) TPOT() (time.Duration, bool) {
	first := r.firstGenerated()
	if r.OutputTokens < 2 || first.IsZero() || r.Last.IsZero() {
		return 0, false
	}
	return r.Last.Sub(first) / time.Duration(r.OutputTokens-1), true
}

// Error is a failed request's cause.
type Error struct {
	// Kind is one of the Kind constants, or "http_<code>".
	Kind string
	// Class is KindHTTP4xx or KindHTTP5xx for HTTP errors, else Kind.
	Class string
	// Status is the HTTP status, when there was one.
	Status int
	// Detail says what happened in a few words.
	Detail string
	// Body is the start of the error body or error chunk, at most 1 KiB.
	Body string
	// Err is the underlying transport error, if any.
	Err error
}

// Error returns "kind: detail".
func (e *Error) Error() string {
	if e.Detail == "" {
		return e.Kind
	}
	return e.Kind + ": " + e.Detail
}

// Unwrap returns the underlying error.
func (e *Error) Unwrap() error { return e.Err }

// Do sends req and reads the whole response. It never panics; every failure
// is described by Result.Err. Result.Send is zero when Do fails before
// sending, with kind other: a bad ClientConfig, base URL or API, an
// ExtraBody that does not encode, or (on h1) an invalid header. Every other
// result, failed or not, has a non-zero Send.
func (c *Client) Do(ctx context.Context, req Request) (r Result) {
	r.CachedTokens = -1
	if c.cfgErr != nil {
		r.Err = &Error{Kind: KindOther, Class: KindOther, Detail: c.cfgErr.Error(), Err: c.cfgErr}
		return r
	}
	url, err := endpoint(req.BaseURL, req.API)
	if err != nil {
		r.Err = &Error{Kind: KindOther, Class: KindOther, Detail: err.Error(), Err: err}
		return r
	}
	body, err := requestBody(req)
	if err != nil {
		r.Err = &Error{Kind: KindOther, Class: KindOther, Detail: err.Error(), Err: err}
		return r
	}
	if c.h1 != nil {
		t, ok, err := parseH1Target(url)
		if err != nil {
			r.Err = &Error{Kind: KindOther, Class: KindOther, Detail: err.Error(), Err: err}
			return r
		}
		if ok {
			c.doH1(ctx, &req, t, body, &r)
			return r
		}
	}
	if c.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, c.cfg.Timeout, errTotalTimeout)
		defer cancel()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	var tr reqTrace
	hreq, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, tr.hooks()), http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		r.Err = &Error{Kind: KindOther, Class: KindOther, Detail: err.Error(), Err: err}
		return r
	}
	hreq.Header.Set("Content-Type", "application/json")
	if req.Stream {
		hreq.Header.Set("Accept", "text/event-stream")
	}
	if req.APIKey != "" {
		hreq.Header.Set("Authorization", "Bearer "+req.APIKey)
	}
	for k, v := range req.Headers {
		hreq.Header.Set(k, v)
	}

	// One mark per token-bearing chunk; the pooled storage holds
	// marksHint of them, and a longer stream grows it by appending.
	r.marks = markPool.Get().(*[]Mark)
	r.Marks = (*r.marks)[:0]
	r.Send = time.Now()
	tr.base = r.Send
	s := stream{r: &r, maxLine: c.cfg.MaxLineBytes, streamed: req.Streamed}
	if c.cfg.TTFTTimeout > 0 {
		s.ttft = time.AfterFunc(c.cfg.TTFTTimeout, func() { cancel(errTTFTTimeout) })
		defer s.ttft.Stop()
	}
	defer tr.fill(&r)

	resp, err := c.hc.Do(hreq)
	if err != nil {
		r.Done = time.Now()
		r.Err = classify(ctx, err, false)
		return r
	}
	r.Header = time.Now()
	r.Status = resp.StatusCode
	defer resp.Body.Close()
	c.readBody(ctx, cancel, &req, &s, resp.StatusCode, resp.Header.Get("Content-Type"), resp.Body)
	return r
}

// readBody reads a response body once its headers have arrived: an HTTP
// error's body, a JSON body or an SSE stream, and drains what follows
// [DONE] (or an error body) so that the connection can be reused.
func (c *Client) readBody(ctx context.Context, cancel context.CancelCauseFunc, req *Request, s *stream, status int, contentType string, body io.Reader) {
	r := s.r
	if status < 200 || status > 299 {
		r.Err = httpError(status, body)
		r.Done = time.Now()
		drain(body, cancel)
		return
	}
	if !req.Stream || isJSON(contentType) {
		s.readJSON(ctx, body)
		return
	}
	if !isEventStream(contentType) {
		r.Err = badContentType(contentType, body)
		r.Done = time.Now()
		return
	}
	lr := getLineReader(body, c.cfg.MaxLineBytes)
	defer lr.put()
	if s.read(ctx, lr) {
		drain(body, cancel)
	}
}

// doH1 is Do over the h1 transport; see h1.go.
func (c *Client) doH1(ctx context.Context, req *Request, t h1Target, body []byte, r *Result) {
	var hbuf [8]h1Header
	hs := append(hbuf[:0], h1Header{"Content-Type", "application/json"})
	if req.Stream {
		hs = append(hs, h1Header{"Accept", "text/event-stream"})
	}
	if req.APIKey != "" {
		hs = append(hs, h1Header{"Authorization", "Bearer " + req.APIKey})
	}
	reqClose := false
	for k, v := range req.Headers {
		k = http.CanonicalHeaderKey(k)
		hs = setHeader(hs, k, v)
		if k == "Connection" && strings.EqualFold(strings.TrimSpace(v), "close") {
			reqClose = true
		}
	}
	wp := h1WriteBuffer.Get().(*[]byte)
	defer func() {
		if cap(*wp) <= 64<<10 {
			h1WriteBuffer.Put(wp)
		}
	}()
	wbuf, err := appendRequest((*wp)[:0], t, hs, body)
	*wp = wbuf[:0]
	if err != nil {
		r.Err = &Error{Kind: KindOther, Class: KindOther, Detail: err.Error(), Err: err}
		return
	}

	if c.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, c.cfg.Timeout, errTotalTimeout)
		defer cancel()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	r.marks = markPool.Get().(*[]Mark)
	r.Marks = (*r.marks)[:0]
	r.Send = time.Now()
	s := stream{r: r, maxLine: c.cfg.MaxLineBytes, streamed: req.Streamed}
	if c.cfg.TTFTTimeout > 0 {
		s.ttft = time.AfterFunc(c.cfg.TTFTTimeout, func() { cancel(errTTFTTimeout) })
		defer s.ttft.Stop()
	}

	host := c.h1.host(t.addr)
	var (
		conn *h1Conn
		resp h1Response
		hb   h1Body
		stop func() bool
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
		if _, werr = nc.Write(wbuf); werr == nil {
			r.Wrote = time.Since(r.Send)
			resp, err = readResponse(conn.br, &hb)
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
	r.Header = time.Now()
	r.Status = resp.status
	c.readBody(ctx, cancel, req, &s, resp.status, resp.contentType, &hb)
	if stop() && hb.done && !resp.close && !reqClose {
		host.put(conn)
	} else {
		conn.discard()
	}
}

// Models returns the model ids listed by the server's /v1/models.
func (c *Client) Models(ctx context.Context, baseURL, apiKey string) ([]string, error) {
	base, err := normalizeBase(baseURL)
	if err != nil {
		return nil, err
	}
	if c.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/v1/models", nil)
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("list models: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e := httpError(resp.StatusCode, resp.Body)
		return nil, fmt.Errorf("list models: %w", e)
	}
	var list struct {
		Data []struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBody)).Decode(&list); err != nil {
		return nil, fmt.Errorf("list models: decode %s/v1/models: %w", base, err)
	}
	ids := make([]string, 0, len(list.Data))
	for _, m := range list.Data {
		ids = append(ids, m.ID)
	}
	return ids, nil
}

// normalizeBase trims a trailing slash and /v1 from a base URL and checks
// that it is an absolute http(s) URL.
func normalizeBase(base string) (string, error) {
	b := strings.TrimRight(strings.TrimSpace(base), "/")
	b = strings.TrimSuffix(b, "/v1")
	if !strings.HasPrefix(b, "http://") && !strings.HasPrefix(b, "https://") {
		return "", fmt.Errorf("base URL %q is not an http(s) URL: use a URL such as http://127.0.0.1:8000", base)
	}
	return b, nil
}

func endpoint(base, api string) (string, error) {
	b, err := normalizeBase(base)
	if err != nil {
		return "", err
	}
	switch api {
	case APIChat, "":
		return b + "/v1/chat/completions", nil
	case APICompletions:
		return b + "/v1/completions", nil
	}
	return "", fmt.Errorf("api %q is unknown: use %q or %q", api, APIChat, APICompletions)
}

type chatMessage struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

type streamOptions struct {
	IncludeUsage         bool `json:"include_usage"`
	ContinuousUsageStats bool `json:"continuous_usage_stats"`
}

type requestJSON struct {
	Model         string         `json:"model"`
	Prompt        *string        `json:"prompt,omitempty"`
	Messages      []chatMessage  `json:"messages,omitempty"`
	MaxTokens     int            `json:"max_tokens,omitempty"`
	Temperature   float64        `json:"temperature"`
	IgnoreEOS     bool           `json:"ignore_eos,omitempty"`
	Stream        bool           `json:"stream"`
	StreamOptions *streamOptions `json:"stream_options,omitempty"`
}

func requestBody(req Request) ([]byte, error) {
	j := requestJSON{
		Model:       req.Model,
		MaxTokens:   req.MaxTokens,
		Temperature: req.Temperature,
		IgnoreEOS:   req.IgnoreEOS,
		Stream:      req.Stream,
	}
	if req.API == APICompletions {
		p := req.Prompt
		j.Prompt = &p
	} else {
		j.Messages = []chatMessage{{Role: "user", Content: req.Prompt}}
	}
	if req.Stream {
		j.StreamOptions = &streamOptions{IncludeUsage: true, ContinuousUsageStats: true}
	}
	b, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	if len(req.ExtraBody) == 0 {
		return b, nil
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("encode request: %w", err)
	}
	for k, v := range req.ExtraBody {
		m[k] = v
	}
	if b, err = json.Marshal(m); err != nil {
		return nil, fmt.Errorf("encode request with extra body: %w", err)
	}
	return b, nil
}

func isJSON(contentType string) bool {
	// Most responses are SSE: rule them out without parsing.
	mt, _, _ := strings.Cut(contentType, ";")
	if !strings.EqualFold(strings.TrimSpace(mt), "application/json") {
		return false
	}
	mt, _, err := mime.ParseMediaType(contentType)
	return err == nil && mt == "application/json"
}

func isEventStream(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/event-stream")
}

// excerptBytes bounds the body excerpt of a bad_content_type error.
const excerptBytes = 200

// badContentType builds the error for a 2xx streaming answer that is not
// SSE, with a short excerpt of its body, sanitized to one printable line.
// The rest of the body is left unread: the connection is not reused.
func badContentType(contentType string, body io.Reader) *Error {
	b, _ := io.ReadAll(io.LimitReader(body, 4*excerptBytes))
	excerpt := sanitizeExcerpt(b, excerptBytes)
	ct := contentType
	if ct == "" {
		ct = "none"
	}
	detail := fmt.Sprintf("Content-Type %s is not text/event-stream: the server did not stream SSE (check the URL and any proxy in between)", strings.ToValidUTF8(clip([]byte(ct), 100), "\uFFFD"))
	if excerpt != "" {
		detail += fmt.Sprintf("; body starts %q", excerpt)
	}
	return &Error{Kind: KindBadContentType, Class: KindBadContentType, Detail: detail, Body: excerpt}
}

// sanitizeExcerpt returns at most n bytes of b as one line of valid UTF-8:
// control characters and runs of white space become one space.
func sanitizeExcerpt(b []byte, n int) string {
	var out strings.Builder
	space := false
	for _, r := range strings.ToValidUTF8(string(b), "\uFFFD") {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) || r == ' ' || r == '\u2028' || r == '\u2029' {
			space = out.Len() > 0
			continue
		}
		if space {
			if out.Len()+1 > n {
				break
			}
			out.WriteByte(' ')
			space = false
		}
		if out.Len()+utf8.RuneLen(r) > n {
			break
		}
		out.WriteRune(r)
	}
	return out.String()
}

// reqTrace records connection events as offsets from base. The hooks run on
// transport goroutines, hence the atomics.
type reqTrace struct {
	base      time.Time
	connected atomic.Int64
	wrote     atomic.Int64
	reused    atomic.Bool
}

func (t *reqTrace) hooks() *httptrace.ClientTrace {
	return &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) {
			t.connected.Store(int64(time.Since(t.base)))
			t.reused.Store(info.Reused)
		},
		WroteRequest: func(httptrace.WroteRequestInfo) {
			t.wrote.Store(int64(time.Since(t.base)))
		},
	}
}

func (t *reqTrace) fill(r *Result) {
	r.Connected = time.Duration(t.connected.Load())
	r.Wrote = time.Duration(t.wrote.Load())
	r.Reused = t.reused.Load()
}

// drain reads what is left of a body, bounded in size and time, so that the
// connection returns to the keep-alive pool.
func drain(body io.Reader, cancel context.CancelCauseFunc) {
	t := time.AfterFunc(drainTimeout, func() { cancel(errDrain) })
	defer t.Stop()
	_, _ = io.Copy(io.Discard, io.LimitReader(body, drainLimit))
}

// httpError builds the Error for a non-2xx response, keeping the start of
// the body.
func httpError(code int, body io.Reader) *Error {
	b, _ := io.ReadAll(io.LimitReader(body, maxErrorBody))
	e := &Error{
		Kind:   fmt.Sprintf("http_%d", code),
		Status: code,
		Body:   clip(b, maxErrorBody),
	}
	switch {
	case code >= 500:
		e.Class = KindHTTP5xx
	case code >= 400:
		e.Class = KindHTTP4xx
	default:
		e.Class = KindOther
	}
	e.Detail = http.StatusText(code)
	if msg := errorMessage(b); msg != "" {
		e.Detail = msg
	}
	return e
}

// errorMessage extracts the message from the OpenAI error shapes:
// {"error":{"message":...}}, {"error":"..."} and {"object":"error","message":...}.
func errorMessage(b []byte) string {
	var v struct {
		Object  string          `json:"object"`
		Message string          `json:"message"`
		Error   json.RawMessage `json:"error"`
	}
	if json.Unmarshal(b, &v) != nil {
		return ""
	}
	if len(v.Error) > 0 {
		var o struct {
			Message string `json:"message"`
			Type    string `json:"type"`
		}
		if json.Unmarshal(v.Error, &o) == nil && o.Message != "" {
			return o.Message
		}
		var s string
		if json.Unmarshal(v.Error, &s) == nil && s != "" {
			return s
		}
	}
	return v.Message
}

// classify maps a transport error to an Error. Cancellations are told apart
// by the context's cause.
func classify(ctx context.Context, err error, afterHeaders bool) *Error {
	e := &Error{Err: err, Detail: err.Error()}
	if ctx.Err() != nil {
		cause := context.Cause(ctx)
		switch {
		case errors.Is(cause, errTTFTTimeout):
			e.Kind, e.Detail = KindTimeoutTTFT, cause.Error()
		case errors.Is(cause, errTotalTimeout):
			e.Kind, e.Detail = KindTimeoutTotal, cause.Error()
		default:
			e.Kind, e.Detail = KindCanceled, cause.Error()
		}
		e.Class = e.Kind
		return e
	}
	var ne net.Error
	var oe *net.OpError
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		e.Kind = KindConnectRefused
	case errors.As(err, &oe) && oe.Op == "dial" && errors.As(err, &ne) && ne.Timeout():
		e.Kind = KindConnectTimeout
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		e.Kind = KindConnectionReset
	case afterHeaders && errors.Is(err, io.ErrUnexpectedEOF):
		e.Kind = KindTruncated
	case !afterHeaders && (errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)):
		// The server closed the connection before answering.
		e.Kind = KindConnectionReset
	default:
		e.Kind = KindOther
	}
	e.Class = e.Kind
	return e
}

// stream is the state of one response being read.
type stream struct {
	r       *Result
	ttft    *time.Timer // stopped at the first generated token
	maxLine int
	c       chunkScan
	event   string // the current SSE event name
	// streamed, when set, counts the tokens of each token-bearing chunk.
	streamed *atomic.Uint64

	gotToken   bool
	continuous bool
	usage      bool
	cumAtMark  int // cumulative completion tokens at the last mark
	counted    int
	preview    []byte
	doneSeen   bool
}

// read reads an SSE stream to [DONE], EOF or failure. It returns true when
// [DONE] was seen and the rest of the body should be drained.
func (s *stream) read(ctx context.Context, lr *lineReader) bool {
	s.preview = lr.preview[:0]
	s.c.preview = &s.preview
	for {
		b, at, err := lr.next()
		if err != nil {
			now := time.Now()
			var tooLong errLineTooLong
			switch {
			case errors.As(err, &tooLong):
				s.fail(now, &Error{Kind: KindOther, Class: KindOther, Detail: err.Error()})
			case errors.Is(err, io.EOF):
				s.fail(now, &Error{Kind: KindTruncated, Class: KindTruncated, Detail: "stream ended without [DONE]"})
			default:
				s.fail(now, classify(ctx, err, true))
			}
			return false
		}
		if stop := s.line(at, trimEOL(b)); stop {
			return s.doneSeen
		}
	}
}

func trimEOL(b []byte) []byte {
	if n := len(b); n > 0 && b[n-1] == '\n' {
		b = b[:n-1]
	}
	if n := len(b); n > 0 && b[n-1] == '\r' {
		b = b[:n-1]
	}
	return b
}

var (
	fieldData  = []byte("data")
	fieldEvent = []byte("event")
	doneMarker = []byte("[DONE]")
)

// line handles one SSE line and reports whether the stream is over.
func (s *stream) line(now time.Time, b []byte) bool {
	if len(b) == 0 {
		s.event = "" // end of an event
		return false
	}
	if b[0] == ':' {
		return false // comment or keep-alive
	}
	field, value := b, []byte(nil)
	if i := bytes.IndexByte(b, ':'); i >= 0 {
		field, value = b[:i], b[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch {
	case bytes.Equal(field, fieldEvent):
		s.event = string(value)
		return false
	case !bytes.Equal(field, fieldData):
		return false // id:, retry: and unknown fields
	}
	if s.r.FirstChunk.IsZero() {
		s.r.FirstChunk = now
	}
	if bytes.Equal(bytes.TrimSpace(value), doneMarker) {
		s.doneSeen = true
		s.finish(now)
		return true
	}
	s.r.Chunks++
	if err := s.chunk(now, value); err != nil {
		s.fail(now, err)
		return true
	}
	return false
}

// chunk handles one data payload.
func (s *stream) chunk(now time.Time, data []byte) *Error {
	if err := s.c.scan(data); err != nil {
		return &Error{Kind: KindMalformedJSON, Class: KindMalformedJSON, Detail: err.Error(), Body: clip(data, maxErrorBody), Err: err}
	}
	if s.c.isErr() || s.event == "error" {
		msg := errorMessage(data)
		if msg == "" {
			msg = "error chunk in stream"
		}
		return &Error{Kind: KindStreamError, Class: KindStreamError, Detail: msg, Body: clip(data, maxErrorBody)}
	}
	s.observe(now, &s.c)
	return nil
}

// observe folds one scanned chunk (or a whole non-streaming body) into the
// result.
func (s *stream) observe(now time.Time, c *chunkScan) {
	r := s.r
	if c.usage {
		s.usage = true
		if c.nChoices > 0 {
			s.continuous = true
		}
		r.PromptTokens = c.prompt
		r.OutputTokens = c.completion
		if c.hasCached {
			r.CachedTokens = c.cached
		}
	}
	if len(c.finish) > 0 && string(c.finish) != r.FinishReason {
		var buf [64]byte
		r.FinishReason = string(appendUnescaped(buf[:0], c.finish, true, len(buf)))
	}
	content, reasoning := c.content, c.reasoning
	if !content && !reasoning {
		return
	}
	if !s.gotToken {
		s.gotToken = true
		if s.ttft != nil {
			s.ttft.Stop()
		}
	}
	if content && r.FirstToken.IsZero() {
		r.FirstToken = now
	}
	if reasoning && r.FirstReasoning.IsZero() {
		r.FirstReasoning = now
	}
	r.Last = now
	k := 1
	if c.usage && c.nChoices > 0 {
		// Continuous usage: the tokens since the previous mark, including
		// any carried by chunks without text.
		k = max(c.completion-s.cumAtMark, 1)
		s.cumAtMark = c.completion
	}
	s.counted += k
	if s.streamed != nil {
		s.streamed.Add(uint64(min(k, maxChunkTokens)))
	}
	r.Marks = append(r.Marks, Mark{At: now.Sub(r.Send), Tokens: int32(min(k, maxChunkTokens)), Reasoning: !content})
}

// finish sets Done and the derived fields.
func (s *stream) finish(now time.Time) {
	r := s.r
	if r.Done.IsZero() {
		r.Done = now
	}
	switch {
	case s.continuous:
		r.UsageSource = UsageContinuous
	case s.usage:
		r.UsageSource = UsageFinal
	default:
		r.UsageSource = UsageCounted
		r.OutputTokens = s.counted
	}
	r.Preview = validPrefix(s.preview)
}

func (s *stream) fail(now time.Time, e *Error) {
	s.finish(now)
	s.r.Err = e
}

// readJSON reads a non-streaming response body.
func (s *stream) readJSON(ctx context.Context, body io.Reader) {
	var pv [previewBytes + utf8.UTFMax]byte
	s.preview = pv[:0]
	s.c.preview = &s.preview
	b, err := io.ReadAll(io.LimitReader(body, maxJSONBody))
	now := time.Now()
	if err != nil {
		s.finish(now)
		s.r.Err = classify(ctx, err, true)
		return
	}
	s.r.FirstChunk = now
	s.r.Chunks = 1
	if e := s.chunk(now, b); e != nil {
		s.fail(now, e)
		return
	}
	if s.usage {
		// A non-streamed body's usage is final by construction.
		s.continuous = false
	}
	s.finish(now)
}

func clip(b []byte, n int) string {
	if len(b) > n {
		b = b[:n]
	}
	return validPrefix(b)
}

// validPrefix returns b as valid UTF-8 without a trailing partial rune;
// invalid bytes elsewhere become U+FFFD.
func validPrefix(b []byte) string {
	for i := 1; i <= utf8.UTFMax && i <= len(b); i++ {
		if utf8.RuneStart(b[len(b)-i]) {
			if !utf8.FullRune(b[len(b)-i:]) {
				b = b[:len(b)-i]
			}
			break
		}
	}
	return strings.ToValidUTF8(string(b), "\uFFFD")
}
