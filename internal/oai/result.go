package oai

import (
	"sync"
	"time"
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
	// FirstToken is the first chunk with non-empty text or delta.content:
	// when the bytes carrying it arrived (see FirstTokenClock).
	FirstToken time.Time
	// FirstTokenClock says where FirstToken's time came from:
	// ClockKernelRx (the kernel's receive timestamp of the socket read that
	// brought it) or ClockReadReturn (the time that read returned, or the
	// transport handed the bytes on); empty without a first token.
	FirstTokenClock string
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
