package oai

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

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
	// kernelAt says whether the current line's time is a kernel receive
	// timestamp (Result.FirstTokenClock).
	kernelAt bool
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
		s.kernelAt = lr.kernel
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
		r.FirstTokenClock = ClockReadReturn
		if s.kernelAt {
			r.FirstTokenClock = ClockKernelRx
		}
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
