package agent

import (
	"fmt"
	"slices"
	"time"

	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/oai"
)

// metrics lists the histograms every report carries, in order.
var metrics = [...]string{hdr.TTFT, hdr.TTFTSched, hdr.E2E, hdr.ITL, hdr.ICL, hdr.TPOT, hdr.DispatchLag}

// Metrics returns the names of the histograms every report carries.
func Metrics() []string { return metrics[:] }

// Histogram is one metric's encoded delta histogram.
type Histogram struct {
	Metric string
	// V2 is the HdrHistogram V2 encoding, in the configuration of
	// internal/hdr.
	V2 []byte
}

// Record is one request's measurements.
type Record struct {
	// Index is the request's global index in the run, from 0.
	Index int
	Label string
	// Sched is the intended send time; Send the actual one.
	Sched time.Time
	Send  time.Time
	// TTFT, E2E, FirstByte and FirstChunk are offsets from Send; zero when
	// the event did not happen.
	TTFT       time.Duration
	E2E        time.Duration
	FirstByte  time.Duration
	FirstChunk time.Duration
	// TTFTSched is the first token's offset from Sched; DispatchLag is
	// Send − Sched.
	TTFTSched    time.Duration
	DispatchLag  time.Duration
	Warmup       bool
	OutputTokens int
	PromptTokens int
	// CachedTokens is -1 when the server did not report it.
	CachedTokens int
	UsageSource  string
	Chunks       int
	Preview      string
	// PromptLen is the prompt's length as the generator built it: the drawn
	// length of a synthetic prompt (exact when Report.PromptLenSource is
	// PromptLenTokenize), else the word-count estimate. PromptTokens is
	// the server's count, when it sent usage.
	PromptLen int
	// Marks are the token-bearing chunks (offsets from Send, tokens), when
	// the spec asks for them (Spec.RecordMarks).
	Marks []oai.Mark
	// Err is empty on success, else "kind: detail".
	Err string
	// ErrKind is the error kind alone.
	ErrKind string
}

// Report is one interval of one run.
type Report struct {
	RunID   string
	AgentID string
	Seq     uint64
	Start   time.Time
	End     time.Time
	// Histograms are this interval's deltas, one per metric, always all of
	// Metrics().
	Histograms []Histogram
	OK         uint64
	Failed     uint64
	// Good counts the successful requests that met the load model's SLO.
	Good         uint64
	OutputTokens uint64
	// OutputTokensStreamed counts the output tokens that arrived in this
	// interval, per token-bearing chunk as ITL counts them, of the report's
	// requests (warm-up or measured) whether they finished or are still
	// streaming.
	OutputTokensStreamed uint64
	// CachedTokens sums usage.prompt_tokens_details.cached_tokens over the
	// successful requests whose server sent it and CachedRequests counts
	// them; CachedPromptTokens sums the prompt tokens of every successful
	// request.
	CachedTokens, CachedRequests, CachedPromptTokens uint64
	ErrorsByKind                                     map[string]uint64
	ErrorSamples                                     []string
	// Records are the requests finished in this interval, in finishing
	// order, when the spec has labels or asks for records.
	Records []Record
	// InFlight is the number of requests open at the end of the interval.
	InFlight int
	// Scheduled is the number of requests this agent has reached the
	// intended send time of so far (cumulative).
	Scheduled uint64
	// Warmup marks a report of warm-up requests only. Each interval has one
	// measured report and, while warm-up requests finish or are open, a
	// warm-up report for the same interval just before it.
	Warmup bool
	// ClientBound is set once the measured dispatch-lag p99 passed the
	// threshold; it stays set.
	ClientBound bool
	// UsageSource is the weakest usage source among this report's
	// successful requests (counted < final < continuous); empty when none.
	UsageSource string
	// MeasuredStart is the earliest intended send time and MeasuredEnd the
	// latest finish of a measured request so far (cumulative; zero when
	// none), for throughput over the measured span.
	MeasuredStart time.Time
	MeasuredEnd   time.Time
	// Interrupted counts the requests of this interval that were still in
	// flight when the run was cancelled or aborted: neither successes nor
	// failures.
	Interrupted uint64
	// AbortReason, on the final report only, says why the run ended early
	// as failed (the error budget was spent); empty for a run that ran its
	// plan or was cancelled by its caller.
	AbortReason string
	Final       bool
	// PromptLenSource is PromptLenTokenize when the run's prompts were
	// sized with the server's tokenizer; empty otherwise (the lengths are
	// then the server's usage, or estimates).
	PromptLenSource string
	// Moments are the exact count, sum and sum of squares (milliseconds)
	// of the histograms named in MomentMetrics, one per metric, in that
	// order; each count equals its histogram's.
	Moments []Moments
	// PromptTokens sums the input lengths of the successful requests
	// (vLLM's total_input_tokens), and PromptLens counts those requests by
	// the source of their length.
	PromptTokens uint64
	PromptLens   PromptLenCounts
}

// Moments are one metric's exact count, sum and sum of squares of its
// values, in milliseconds.
type Moments struct {
	Metric     string
	Count      uint64
	Sum, SumSq float64
}

// PromptLenCounts counts successful requests by the source of their input
// length: PromptLenTokenize, PromptLenUsage or PromptLenEstimate.
type PromptLenCounts struct {
	Tokenize, Usage, Estimate uint64
}

// emit swaps the interval state out, encodes it, and calls emit: first a
// warm-up report when warm-up requests finished or are open, then the
// measured one. It runs on Run's goroutine only.
func (r *run) emit(emit func(Report) error, final bool) error {
	now := time.Now()
	r.mu.Lock()
	warmPending := !r.warm.empty() || r.warmInFlight > 0
	warm, meas := r.warm, r.meas
	r.warm, r.meas = r.spareWarm, r.spareMeas
	warmStreamed, measStreamed := r.streamedWarm.Swap(0), r.streamedMeas.Swap(0)
	warmPending = warmPending || warmStreamed > 0
	if !r.clientBound && r.lag.Count() > 0 && time.Duration(r.lag.Summarize().P99*float64(time.Millisecond)) > r.plan.threshold {
		r.clientBound = true
	}
	base := Report{
		RunID:           r.spec.RunID,
		AgentID:         r.spec.AgentID,
		Start:           r.intervalStart,
		End:             now,
		InFlight:        r.inFlight,
		Scheduled:       r.scheduled,
		ClientBound:     r.clientBound,
		MeasuredStart:   r.measStart,
		MeasuredEnd:     r.measEnd,
		PromptLenSource: r.promptLenSource,
	}
	abortReason := r.abortReason
	r.mu.Unlock()
	r.intervalStart = now

	defer func() { r.spareWarm, r.spareMeas = recycle(warm), recycle(meas) }()
	if warmPending {
		rep := base
		rep.Warmup = true
		rep.OutputTokensStreamed = warmStreamed
		if err := r.report(emit, rep, &warm); err != nil {
			return err
		}
	}
	rep := base
	rep.Final = final
	rep.OutputTokensStreamed = measStreamed
	if final {
		rep.AbortReason = abortReason
	}
	return r.report(emit, rep, &meas)
}

// recycle empties an accumulator whose report went out, keeping its
// histograms' allocations.
func recycle(c acc) acc {
	for _, h := range c.set {
		h.Reset()
	}
	return acc{set: c.set, errs: map[string]uint64{}, mom: newMoments()}
}

func (r *run) report(emit func(Report) error, rep Report, c *acc) error {
	rep.Seq = r.seq
	r.seq++
	rep.OK, rep.Failed, rep.Good, rep.OutputTokens = c.ok, c.failed, c.good, c.outTokens
	rep.Interrupted = c.interrupted
	rep.CachedTokens, rep.CachedRequests, rep.CachedPromptTokens = c.cached, c.cachedReqs, c.cachedPrompt
	rep.ErrorsByKind, rep.ErrorSamples, rep.Records = c.errs, c.samples, c.recs
	rep.UsageSource = c.usage
	rep.Moments = slices.Clone(c.mom[:])
	rep.PromptTokens, rep.PromptLens = c.promptTokens, c.promptLens
	rep.Histograms = make([]Histogram, 0, len(metrics))
	for _, m := range metrics {
		b, err := c.set.Get(m).Encode()
		if err != nil {
			return fmt.Errorf("report %d: %w", rep.Seq, err)
		}
		rep.Histograms = append(rep.Histograms, Histogram{Metric: m, V2: b})
	}
	return emit(rep)
}
