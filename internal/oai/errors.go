package oai

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"unicode/utf8"
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
