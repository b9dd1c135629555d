package oai

import (
	"context"
	"errors"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"
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

// Do sends req and reads the whole response. It never panics; every failure
// is described by Result.Err. Result.Send is zero when Do fails before
// sending, with kind other: a bad base URL or API, an ExtraBody that does
// not encode, or an invalid header. Every other result, failed or not, has a
// non-zero Send.
//
// The request's life is the same on both transports and is written here
// once: the total timeout, the cancel cause, the pooled marks, Send and the
// TTFT timer; the transport only carries the bytes (roundTripH1 in h1.go,
// roundTripNetHTTP in nethttp.go) and hands the response to readBody.
func (c *Client) Do(ctx context.Context, req Request) (r Result) {
	r.CachedTokens = -1
	var out outgoing
	if err := c.prepare(&req, &out); err != nil {
		r.Err = &Error{Kind: KindOther, Class: KindOther, Detail: err.Error(), Err: err}
		return r
	}
	defer out.release()

	if c.cfg.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, c.cfg.Timeout, errTotalTimeout)
		defer cancel()
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	// One mark per token-bearing chunk; the pooled storage holds
	// marksHint of them, and a longer stream grows it by appending.
	r.marks = markPool.Get().(*[]Mark)
	r.Marks = (*r.marks)[:0]
	r.Send = time.Now()
	s := stream{r: &r, maxLine: c.cfg.MaxLineBytes, streamed: req.Streamed}
	if c.cfg.TTFTTimeout > 0 {
		s.ttft = time.AfterFunc(c.cfg.TTFTTimeout, func() { cancel(errTTFTTimeout) })
		defer s.ttft.Stop()
	}
	if out.hreq != nil {
		c.roundTripNetHTTP(ctx, cancel, &req, out.hreq, &s)
	} else {
		c.roundTripH1(ctx, cancel, &req, &out, &s)
	}
	return r
}

// outgoing is a request encoded for the transport that will carry it: a
// rendered HTTP/1.1 request for h1 (encodeH1), or an *http.Request for
// net/http (encodeNetHTTP).
type outgoing struct {
	// h1: the target, the rendered request in a pooled buffer, and whether
	// the caller's headers ask the server to close the connection.
	target   h1Target
	wp       *[]byte
	wbuf     []byte
	reqClose bool
	// hreq is the net/http request; nil on h1.
	hreq *http.Request
}

// prepare encodes req for its transport: h1 for http:// and https://
// unless the Client was configured otherwise, net/http for the rest. Its errors are
// the caller's input: nothing was sent.
func (c *Client) prepare(req *Request, out *outgoing) error {
	url, err := endpoint(req.BaseURL, req.API)
	if err != nil {
		return err
	}
	body, err := requestBody(*req)
	if err != nil {
		return err
	}
	if c.h1 != nil {
		t, ok, err := parseH1Target(url)
		if err != nil {
			return err
		}
		if ok {
			return out.encodeH1(req, t, body)
		}
	}
	return out.encodeNetHTTP(req, url, body)
}

// release hands pooled buffers back once the request is over.
func (o *outgoing) release() {
	if o.wp != nil && cap(*o.wp) <= 64<<10 {
		h1WriteBuffer.Put(o.wp)
	}
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

// drain reads what is left of a body, bounded in size and time, so that the
// connection returns to the keep-alive pool.
func drain(body io.Reader, cancel context.CancelCauseFunc) {
	t := time.AfterFunc(drainTimeout, func() { cancel(errDrain) })
	defer t.Stop()
	_, _ = io.Copy(io.Discard, io.LimitReader(body, drainLimit))
}
