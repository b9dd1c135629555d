// Package benchjson writes a run's results in the JSON layout of vLLM's
// `vllm bench serve --save-result` (vllm/benchmarks/serve.py), so that
// dashboards and scripts written for vLLM read ttftlab's runs unchanged.
//
// An Accumulator folds requests one at a time as they finish: latency
// statistics go into HdrHistograms (percentiles and medians, 3 significant
// digits) and exact running moments (mean and population standard
// deviation, as numpy's np.mean and np.std), so its memory does not grow
// with the run's tokens. It keeps 16 bytes per successful request for the
// peak-concurrency sweep and 16 bytes per request for the latencies and
// queue_times arrays vLLM always writes; with Options.Detailed it also keeps
// the per-request arrays (input_lens, output_lens, ttfts, itls, start_times,
// generated_texts, errors): about 100 bytes plus 8 bytes per chunk and the
// text preview (at most 200 bytes) per request.
//
// Where ttftlab's definitions differ from vLLM's, vLLM's keys carry vLLM's
// meaning and ttftlab's own values sit beside them under keys prefixed
// "ttftlab_" (docs/metrics.md, "vLLM-compatible export").
//
// The package is pure: no I/O but the io.Writer given to Write.
package benchjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/internal/hdr"
)

// VLLMVersion names the vLLM source the key names were taken from.
const VLLMVersion = "vllm main @ 009e6d4a (vllm/benchmarks/serve.py, 2026)"

// Metric names accepted by Options.Metrics, as vLLM's --percentile-metrics.
const (
	MetricTTFT       = "ttft"
	MetricTPOT       = "tpot"
	MetricITL        = "itl"
	MetricE2EL       = "e2el"
	MetricQueue      = "client_queue_time"
	MetricE2ELQueued = "e2el_including_client_queue"
)

// DefaultMetrics and DefaultPercentiles are vLLM's defaults for generative
// models.
var (
	DefaultMetrics     = []string{MetricTTFT, MetricTPOT, MetricITL}
	DefaultPercentiles = []float64{99}
)

// Options choose what the result holds.
type Options struct {
	// Percentiles are reported as pNN_<metric>_ms, for example 99 → p99.
	Percentiles []float64
	// Metrics are the metrics whose mean, median, std and percentiles are
	// reported.
	Metrics []string
	// Detailed adds the per-request arrays (vLLM's --save-detailed).
	Detailed bool
}

// ParsePercentiles parses a comma-separated list such as "50,90,99" (vLLM's
// --metric-percentiles). Each must be in (0, 100].
func ParsePercentiles(s string) ([]float64, error) {
	var out []float64
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		p, err := strconv.ParseFloat(f, 64)
		if err != nil || math.IsNaN(p) || p <= 0 || p > 100 {
			return nil, fmt.Errorf("percentile %q is invalid: give numbers in (0, 100] separated by commas, for example 50,90,99", f)
		}
		if !slices.Contains(out, p) {
			out = append(out, p)
		}
	}
	return out, nil
}

// ParseMetrics parses a comma-separated list of metric names (vLLM's
// --percentile-metrics).
func ParseMetrics(s string) ([]string, error) {
	var out []string
	for _, m := range strings.Split(s, ",") {
		m = strings.TrimSpace(m)
		switch m {
		case MetricTTFT, MetricTPOT, MetricITL, MetricE2EL, MetricQueue, MetricE2ELQueued:
		default:
			return nil, fmt.Errorf("metric %q is unknown: use a comma-separated list of ttft, tpot, itl, e2el, client_queue_time, e2el_including_client_queue", m)
		}
		if !slices.Contains(out, m) {
			out = append(out, m)
		}
	}
	return out, nil
}

// Chunk is one token-bearing chunk of a response: its gap since the chunk
// before it (for the first, since the first chunk of the response) and its
// token count.
type Chunk struct {
	Gap    time.Duration
	Tokens int
}

// Request is one finished measured request.
type Request struct {
	// Start is when it was sent.
	Start time.Time
	OK    bool
	// PromptLen is its prompt's tokens (the server's usage when it sent
	// one); OutputLen its output tokens.
	PromptLen, OutputLen int
	// FirstChunk is the first response chunk (for chat the role chunk):
	// vLLM's TTFT. FirstToken is the first chunk with generated content:
	// ttftlab's TTFT. Both are offsets from Start; zero when absent.
	FirstChunk, FirstToken time.Duration
	// Latency is the last token's offset from Start.
	Latency time.Duration
	// QueueTime is the time it waited in the client before it was sent
	// (ttftlab's dispatch lag; vLLM's client_queue_time).
	QueueTime time.Duration
	// Chunks are its token-bearing chunks in order.
	Chunks []Chunk
	// Text is the start of the generated text.
	Text string
	// Error is empty on success.
	Error string
}

// stat is one metric's histogram and exact running moments (Welford), in
// milliseconds.
type stat struct {
	h        *hdr.Histogram
	n        int64
	mean, m2 float64
}

func newStat() *stat { return &stat{h: hdr.New()} }

func (s *stat) add(d time.Duration) {
	s.h.Record(d)
	x := float64(d) / 1e6
	s.n++
	delta := x - s.mean
	s.mean += delta / float64(s.n)
	s.m2 += delta * (x - s.mean)
}

// Accumulator folds requests into a vLLM result. It is not safe for
// concurrent use.
type Accumulator struct {
	opts   Options
	origin time.Time

	completed, failed  int
	totalIn, totalOut  int64
	stats              map[string]*stat
	spans              [][2]int64 // successful requests' [start, end) in ns since origin
	chunkBuckets       []uint32   // chunks per 100 ms since origin
	latencies, queues  []float64
	inputLens, outLens []int
	ttfts, starts      []float64
	itls               [][]float64
	texts, errs        []string
	minStart           int64
	haveStart          bool
}

// Stat names of the accumulator: vLLM's metrics and ttftlab's.
const (
	statTTFTlab = "ttftlab_ttft"
	statITLlab  = "ttftlab_itl"
)

// bucket is the width of the sub-buckets the peak output rate is summed
// from; the peak's one-second windows start within one bucket of vLLM's.
const bucket = 100 * time.Millisecond

// maxBuckets bounds the peak-rate buckets to 24 hours of run.
const maxBuckets = int(24 * time.Hour / bucket)

// New returns an Accumulator for a run that sends no request before
// origin.
func New(opts Options, origin time.Time) *Accumulator {
	opts = withDefaults(opts)
	a := &Accumulator{opts: opts, origin: origin, stats: map[string]*stat{}}
	for _, m := range []string{MetricTTFT, MetricTPOT, MetricITL, MetricE2EL, MetricQueue, MetricE2ELQueued, statTTFTlab, statITLlab} {
		a.stats[m] = newStat()
	}
	return a
}

// Add folds one finished request.
func (a *Accumulator) Add(r Request) {
	sec := func(d time.Duration) float64 { return d.Seconds() }
	start := r.Start.Sub(a.origin)
	outLen := 0
	var itl []float64
	if r.OK {
		a.completed++
		outLen = r.OutputLen
		a.totalIn += int64(r.PromptLen)
		a.totalOut += int64(outLen)
		// vLLM's chunk gaps: every chunk with choices after the first, so
		// for chat the role chunk to the first content chunk too.
		if r.FirstToken > r.FirstChunk && r.FirstChunk > 0 {
			itl = append(itl, sec(r.FirstToken-r.FirstChunk))
		}
		for i, c := range r.Chunks {
			if i > 0 {
				itl = append(itl, sec(c.Gap))
			}
		}
		ttft := r.FirstChunk
		if ttft <= 0 {
			ttft = r.FirstToken
		}
		a.stats[MetricTTFT].add(ttft)
		a.stats[MetricE2EL].add(r.Latency)
		a.stats[MetricE2ELQueued].add(r.Latency + r.QueueTime)
		a.stats[MetricQueue].add(r.QueueTime)
		if outLen > 1 {
			a.stats[MetricTPOT].add((r.Latency - ttft) / time.Duration(outLen-1))
		}
		for _, v := range itl {
			a.stats[MetricITL].add(time.Duration(v * 1e9))
		}
		if r.FirstToken > 0 {
			a.stats[statTTFTlab].add(r.FirstToken)
		}
		for i, c := range r.Chunks {
			if i == 0 || c.Gap <= 0 {
				continue
			}
			k := max(c.Tokens, 1)
			per := c.Gap / time.Duration(k)
			for range k {
				a.stats[statITLlab].add(per)
			}
		}
		end := start + r.Latency
		a.spans = append(a.spans, [2]int64{int64(start), int64(end)})
		if !a.haveStart || int64(start) < a.minStart {
			a.minStart, a.haveStart = int64(start), true
		}
		// One output event per chunk, as vLLM counts them: the first at
		// the first chunk, the rest at each gap.
		t := start + ttft
		a.count(t)
		for _, v := range itl {
			t += time.Duration(v * 1e9)
			a.count(t)
		}
	} else {
		a.failed++
	}
	a.latencies = append(a.latencies, sec(map[bool]time.Duration{true: r.Latency}[r.OK]))
	a.queues = append(a.queues, sec(r.QueueTime))
	if a.opts.Detailed {
		ttft := 0.0
		if r.OK {
			ttft = sec(r.FirstChunk)
			if r.FirstChunk <= 0 {
				ttft = sec(r.FirstToken)
			}
		}
		if itl == nil {
			itl = []float64{}
		}
		a.inputLens = append(a.inputLens, r.PromptLen)
		a.outLens = append(a.outLens, outLen)
		a.ttfts = append(a.ttfts, ttft)
		a.itls = append(a.itls, itl)
		a.starts = append(a.starts, float64(r.Start.UnixNano())/1e9)
		a.texts = append(a.texts, r.Text)
		a.errs = append(a.errs, r.Error)
	}
}

func (a *Accumulator) count(t time.Duration) {
	i := int(t / bucket)
	if i < 0 || i >= maxBuckets {
		return
	}
	if i >= len(a.chunkBuckets) {
		a.chunkBuckets = append(a.chunkBuckets, make([]uint32, i+1-len(a.chunkBuckets))...)
	}
	a.chunkBuckets[i]++
}

// Settings describe the run, vLLM's setup and traffic keys.
type Settings struct {
	Date time.Time
	// Backend is vLLM's backend name: "openai-chat" or "openai".
	Backend string
	// Label is empty for none (null).
	Label   string
	ModelID string
	// TokenizerID is empty (null) when no tokenizer counted the prompts.
	TokenizerID string
	NumPrompts  int64
	// RequestRate is 0 for a closed loop ("inf", as vLLM writes it).
	RequestRate float64
	// Burstiness is the gamma shape; +Inf for even spacing ("inf").
	Burstiness float64
	// MaxConcurrency is 0 for none (null).
	MaxConcurrency int
}

// Run is what the accumulator cannot see: the run's measured span, goodput
// and outcome.
type Run struct {
	// Duration is the measured span.
	Duration time.Duration
	// Good counts the requests that met the goodput SLOs; nil when none
	// were given (request_goodput null).
	Good *uint64
	// Status is "ok" or "failed"; Reason says why it failed.
	Status, Reason string
	Interrupted    uint64
	// PromptLenSource is "tokenize", "usage" or "estimate".
	PromptLenSource string
	UsageSource     string
	ErrorsByKind    map[string]uint64
	// Extra are further ttftlab keys, written last in order; each key
	// should start with "ttftlab_".
	Extra []KV
}

// KV is one extra key of a result.
type KV struct {
	Key   string
	Value any
}

// Stat is one metric's statistics merged elsewhere: its histogram, for the
// median and percentiles (nearest rank), and its exact mean and
// population standard deviation in milliseconds (NaN when unknown: null).
type Stat struct {
	Hist      *hdr.Histogram
	Mean, Std float64
}

// Stat names of a Summary besides vLLM's metrics: ttftlab's own TTFT and
// ITL, written as ttftlab_*_ttft_ms and ttftlab_*_itl_ms.
const (
	StatTTFTlab = statTTFTlab
	StatITLlab  = statITLlab
)

// Summary is a result merged elsewhere, for example a sweep level merged
// over its agents' interval reports: what an Accumulator otherwise folds
// from requests. It has no per-request values, so Write writes latencies
// and queue_times as empty arrays and refuses Options.Detailed, and the
// queue-time metrics (MetricQueue, MetricE2ELQueued).
type Summary struct {
	Completed, Failed int
	TotalIn, TotalOut int64
	// Stats are by metric name: MetricTTFT, MetricTPOT, MetricITL,
	// MetricE2EL, StatTTFTlab, StatITLlab. A missing one is written null.
	Stats               map[string]Stat
	MaxOutputTokensPerS float64
	MaxConcurrent       int
}

// CheckSummaryOptions says why opts cannot be written from a Summary, or
// returns nil.
func CheckSummaryOptions(opts Options) error {
	if opts.Detailed {
		return fmt.Errorf("--save-detailed needs every request's values, which a merged result does not keep: leave it out, or use ttftlab load")
	}
	for _, m := range opts.Metrics {
		if m == MetricQueue || m == MetricE2ELQueued {
			return fmt.Errorf("percentile metric %q needs every request's queue time, which a merged result does not keep: use ttft, tpot, itl and e2el, or ttftlab load", m)
		}
	}
	return nil
}

// WriteSummary writes a merged result as one JSON object, as Write does.
func WriteSummary(w io.Writer, opts Options, s Settings, run Run, sum Summary) error {
	opts = withDefaults(opts)
	if err := CheckSummaryOptions(opts); err != nil {
		return err
	}
	b, err := json.Marshal(build(opts, s, run, sum.body()))
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// body is what a result is written from, folded or merged.
type body struct {
	completed, failed int
	totalIn, totalOut int64
	stats             map[string]Stat
	// arrays are the per-request arrays in vLLM's order (latencies and
	// queue_times always, the rest with Detailed).
	latencies, queues []pyFloat
	detailed          object
	starts            []pyFloat
	texts, errs       []string
	peakRate          float64
	peakConc          int
}

func (s Summary) body() body {
	return body{completed: s.Completed, failed: s.Failed, totalIn: s.TotalIn, totalOut: s.TotalOut, stats: s.Stats,
		latencies: []pyFloat{}, queues: []pyFloat{}, peakRate: s.MaxOutputTokensPerS, peakConc: s.MaxConcurrent}
}

func withDefaults(opts Options) Options {
	if len(opts.Percentiles) == 0 {
		opts.Percentiles = DefaultPercentiles
	}
	if len(opts.Metrics) == 0 {
		opts.Metrics = DefaultMetrics
	}
	return opts
}

// kv is one key of an ordered JSON object.
type kv struct {
	k string
	v any
}

type object []kv

func (o object) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('{')
	for i, e := range o {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(e.k)
		b.Write(k)
		b.WriteByte(':')
		v, err := json.Marshal(e.v)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", e.k, err)
		}
		b.Write(v)
	}
	b.WriteByte('}')
	return b.Bytes(), nil
}

// Write writes the result as one JSON object, vLLM's keys in vLLM's order
// and ttftlab's after them.
func (a *Accumulator) Write(w io.Writer, s Settings, run Run) error {
	b, err := json.Marshal(a.result(s, run))
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// Keys returns the keys Write writes, in order.
func (a *Accumulator) Keys(s Settings, run Run) []string {
	o := a.result(s, run)
	keys := make([]string, len(o))
	for i, e := range o {
		keys[i] = e.k
	}
	return keys
}

func nullIf[T comparable](v, zero T) any {
	if v == zero {
		return nil
	}
	return v
}

// num is a finite float, or null.
func num(v float64) any {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return pyFloat(v)
}

// pyFloat is a float written as Python's json writes one, always with a
// decimal point (1.0, not 1), so json.load gives a float where vLLM's file
// has one.
type pyFloat float64

func (f pyFloat) MarshalJSON() ([]byte, error) {
	v := float64(f)
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return []byte("null"), nil
	}
	b := strconv.AppendFloat(nil, v, 'g', -1, 64)
	if !bytes.ContainsAny(b, ".eEn") {
		b = append(b, '.', '0')
	}
	return b, nil
}

// floats converts seconds for the per-request arrays.
func floats(v []float64) []pyFloat {
	out := make([]pyFloat, len(v))
	for i, x := range v {
		out[i] = pyFloat(x)
	}
	return out
}

func (a *Accumulator) result(s Settings, run Run) object {
	return build(a.opts, s, run, a.body())
}

// body converts the folded requests.
func (a *Accumulator) body() body {
	b := body{completed: a.completed, failed: a.failed, totalIn: a.totalIn, totalOut: a.totalOut,
		stats: map[string]Stat{}, latencies: floats(a.latencies), queues: floats(a.queues)}
	for name, st := range a.stats {
		mean, std := math.NaN(), math.NaN()
		if st.n > 0 {
			mean, std = st.mean, math.Sqrt(st.m2/float64(st.n))
		}
		b.stats[name] = Stat{Hist: st.h, Mean: mean, Std: std}
	}
	if a.opts.Detailed {
		b.detailed = object{
			{"input_lens", nonNil(a.inputLens)},
			{"output_lens", nonNil(a.outLens)},
			{"ttfts", floats(a.ttfts)},
			{"itls", a.itlArrays()},
		}
		b.starts, b.texts, b.errs = floats(a.starts), nonNil(a.texts), nonNil(a.errs)
	}
	b.peakRate, b.peakConc = a.peaks()
	return b
}

func build(opts Options, s Settings, run Run, b body) object {
	o := object{
		{"date", s.Date.Format("20060102-150405")},
		{"endpoint_type", s.Backend},
		{"backend", s.Backend},
		{"label", nullIf(s.Label, "")},
		{"model_id", s.ModelID},
		{"tokenizer_id", nullIf(s.TokenizerID, "")},
		{"num_prompts", s.NumPrompts},
	}
	var rate any = "inf"
	if s.RequestRate > 0 {
		rate = pyFloat(s.RequestRate)
	}
	var burst any = "inf"
	if !math.IsInf(s.Burstiness, 1) {
		burst = pyFloat(s.Burstiness)
	}
	o = append(o, kv{"request_rate", rate}, kv{"burstiness", burst}, kv{"max_concurrency", nullIf(s.MaxConcurrency, 0)})

	dur := run.Duration.Seconds()
	per := func(v float64) any {
		if dur <= 0 {
			return nil
		}
		return pyFloat(v / dur)
	}
	var goodput any
	if run.Good != nil {
		goodput = per(float64(*run.Good))
	}
	o = append(o,
		kv{"duration", num(dur)},
		kv{"completed", b.completed},
		kv{"failed", b.failed},
		kv{"total_input_tokens", b.totalIn},
		kv{"total_output_tokens", b.totalOut},
		kv{"request_throughput", per(float64(b.completed))},
		kv{"request_goodput", goodput},
		kv{"output_throughput", per(float64(b.totalOut))},
		kv{"total_token_throughput", per(float64(b.totalIn + b.totalOut))},
	)
	if opts.Detailed {
		o = append(o, b.detailed...)
	}
	o = append(o, kv{"latencies", b.latencies})
	if opts.Detailed {
		o = append(o, kv{"start_times", b.starts})
	}
	o = append(o, kv{"queue_times", b.queues})
	if opts.Detailed {
		o = append(o, kv{"generated_texts", b.texts}, kv{"errors", b.errs})
	}
	o = append(o,
		kv{"max_output_tokens_per_s", pyFloat(b.peakRate)},
		kv{"max_concurrent_requests", b.peakConc},
		kv{"rtfx", pyFloat(0)},
	)
	for _, m := range []string{MetricTTFT, MetricTPOT, MetricITL, MetricE2EL, MetricQueue, MetricE2ELQueued} {
		if slices.Contains(opts.Metrics, m) {
			o = appendStats(o, opts, "", m, b.stats[m])
		}
	}
	// ttftlab's own definitions, where they differ from vLLM's.
	o = appendStats(o, opts, "ttftlab_", "ttft", b.stats[statTTFTlab])
	o = appendStats(o, opts, "ttftlab_", "itl", b.stats[statITLlab])
	var usage any
	if run.UsageSource != "" {
		usage = run.UsageSource
	}
	errs := run.ErrorsByKind
	if errs == nil {
		errs = map[string]uint64{}
	}
	o = append(o,
		kv{"ttftlab_status", run.Status},
		kv{"ttftlab_reason", nullIf(run.Reason, "")},
		kv{"ttftlab_interrupted", run.Interrupted},
		kv{"ttftlab_errors_by_kind", errs},
		kv{"ttftlab_prompt_len_source", nullIf(run.PromptLenSource, "")},
		kv{"ttftlab_usage_source", usage},
		kv{"ttftlab_percentile_method", "hdrhistogram nearest rank, 3 significant digits; mean and std exact"},
		kv{"ttftlab_vllm_keys_from", VLLMVersion},
	)
	for _, e := range run.Extra {
		o = append(o, kv{e.Key, e.Value})
	}
	return o
}

func (a *Accumulator) itlArrays() [][]pyFloat {
	out := make([][]pyFloat, len(a.itls))
	for i, v := range a.itls {
		out[i] = floats(v)
	}
	return out
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

// appendStats adds mean, median, std and the percentiles of one metric; all
// null when it has no samples, and the mean and std null when unknown.
func appendStats(o object, opts Options, prefix, name string, st Stat) object {
	key := func(stat string) string { return prefix + stat + "_" + name + "_ms" }
	var n int64
	if st.Hist != nil {
		n = st.Hist.Count()
	}
	if n == 0 {
		o = append(o, kv{key("mean"), nil}, kv{key("median"), nil}, kv{key("std"), nil})
		for _, p := range opts.Percentiles {
			o = append(o, kv{key("p" + PercentileWord(p)), nil})
		}
		return o
	}
	q := func(p float64) float64 {
		return st.Hist.ValueAtRankMs(int64(math.Ceil(p / 100 * float64(n))))
	}
	o = append(o,
		kv{key("mean"), num(st.Mean)},
		kv{key("median"), pyFloat(q(50))},
		kv{key("std"), num(st.Std)},
	)
	for _, p := range opts.Percentiles {
		o = append(o, kv{key("p" + PercentileWord(p)), pyFloat(q(p))})
	}
	return o
}

// PercentileWord formats p as vLLM names its key: 99 → "99", 99.9 →
// "99.9".
func PercentileWord(p float64) string {
	if p == math.Trunc(p) {
		return strconv.Itoa(int(p))
	}
	return strconv.FormatFloat(p, 'f', -1, 64)
}

// peaks returns the most chunks received in one second (windows starting at
// the first successful request's send, to within one bucket) and the peak
// number of successful requests in flight at once.
func (a *Accumulator) peaks() (float64, int) {
	if len(a.spans) == 0 {
		return 0, 0
	}
	first := int(a.minStart / int64(bucket))
	per := int(time.Second / bucket)
	best := uint32(0)
	for w := first; w < len(a.chunkBuckets); w += per {
		var sum uint32
		for i := w; i < min(w+per, len(a.chunkBuckets)); i++ {
			sum += a.chunkBuckets[i]
		}
		best = max(best, sum)
	}
	type ev struct {
		t int64
		d int
	}
	evs := make([]ev, 0, 2*len(a.spans))
	for _, s := range a.spans {
		evs = append(evs, ev{s[0], 1}, ev{s[1], -1})
	}
	// Half-open intervals: a departure precedes an arrival at the same time.
	sort.Slice(evs, func(i, j int) bool {
		if evs[i].t != evs[j].t {
			return evs[i].t < evs[j].t
		}
		return evs[i].d < evs[j].d
	})
	cur, peak := 0, 0
	for _, e := range evs {
		cur += e.d
		peak = max(peak, cur)
	}
	return float64(best), peak
}
