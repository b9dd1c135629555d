package results

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// SweepResults is results.json of a sweep, built from events.jsonl alone.
type SweepResults struct {
	Kind       string    `json:"kind"`
	RunID      string    `json:"run_id"`
	Status     string    `json:"status"`
	Error      string    `json:"error,omitempty"`
	Simulated  bool      `json:"simulated"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	BaseURL    string    `json:"base_url"`
	Model      string    `json:"model"`
	API        string    `json:"api"`
	// Transport and FirstTokenClock are the agents' HTTP client and the
	// clock TTFT was taken with (docs/metrics.md); absent in runs recorded
	// before they were.
	Transport       string          `json:"transport,omitempty"`
	FirstTokenClock string          `json:"first_token_clock,omitempty"`
	Load            json.RawMessage `json:"load"`
	Workload        json.RawMessage `json:"workload"`
	Generator       json.RawMessage `json:"generator,omitempty"`
	Node            NodeFacts       `json:"node"`
	Engine          *EngineFacts    `json:"engine,omitempty"`
	TargetVersion   string          `json:"target_version,omitempty"`
	Levels          []LevelResult   `json:"levels"`
	// PromptLenSource is the levels' prompt-length source merged (mixed
	// when they differ), PromptLenCounts their counts; absent when no
	// agent said.
	PromptLenSource string           `json:"prompt_len_source,omitempty"`
	PromptLenCounts *PromptLenCounts `json:"prompt_len_counts,omitempty"`
	Observations    []string         `json:"observations"`
	Warnings        []string         `json:"warnings,omitempty"`
}

// LevelResult is one level of a sweep, merged over its agents.
type LevelResult struct {
	Level  int      `json:"level"`
	Value  float64  `json:"value"`
	Agents []string `json:"agents"`
	// Status is "ok", "degraded" (an agent lost or silent) or "failed" (an
	// agent's error budget was spent, or no request succeeded); Error says
	// why a level failed.
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	// Requests is the measured attempts sent: Successes + Errors +
	// Interrupted (docs/metrics.md).
	Requests     uint64            `json:"requests"`
	Successes    uint64            `json:"successes"`
	Errors       uint64            `json:"errors"`
	Interrupted  uint64            `json:"interrupted"`
	ErrorsByKind map[string]uint64 `json:"errors_by_kind"`
	// OutputTokens is the output tokens of the successful requests, for
	// the per-request statistics.
	OutputTokens uint64 `json:"output_tokens"`
	// DurationS is the measured span (earliest intended send to latest
	// finish of a measured request); it and the rates are nil when the
	// level measured no request. RequestsPerS is Successes / DurationS.
	DurationS    *float64 `json:"duration_s"`
	RequestsPerS *float64 `json:"requests_per_s"`
	// TokensPerS is OutputTokensStreamed / WindowS: every output token that
	// arrived inside the level's measured window, from requests finished or
	// still in flight (docs/metrics.md). ThroughputBasis is "streamed", or
	// "completed" for agents that do not count streamed tokens: then it is
	// OutputTokens / DurationS.
	TokensPerS           *float64 `json:"output_tokens_per_s"`
	OutputTokensStreamed *float64 `json:"output_tokens_streamed"`
	WindowS              *float64 `json:"window_s"`
	ThroughputBasis      string   `json:"throughput_basis,omitempty"`
	// DurationMs and DurationReason are the level's planned duration and
	// how it was chosen (pinned, or sized from the level before).
	DurationMs     int64  `json:"duration_ms,omitempty"`
	DurationReason string `json:"duration_reason,omitempty"`
	// Insufficient marks a level with too few successes or too short a
	// window for its percentiles (docs/metrics.md, "Enough samples");
	// InsufficientFor names the percentiles shown with ⚠.
	Insufficient        bool     `json:"insufficient"`
	InsufficientReasons []string `json:"insufficient_reasons,omitempty"`
	InsufficientFor     []string `json:"insufficient_percentiles,omitempty"`
	NeedWindowS         *float64 `json:"needed_window_s,omitempty"`
	// TTFT percentiles' 95% order-statistic confidence intervals in ms,
	// [lo, hi], a null side unbounded; null when n ≥ CIMaxN or n = 0.
	TTFTP50CI *CIBounds `json:"ttft_p50_ci"`
	TTFTP90CI *CIBounds `json:"ttft_p90_ci"`
	TTFTP99CI *CIBounds `json:"ttft_p99_ci"`
	// Good and GoodputPerS count requests that met the load's SLOs; nil
	// when the load set none.
	Good        *uint64                `json:"good_requests"`
	GoodputPerS *float64               `json:"goodput_requests_per_s"`
	Metrics     map[string]hdr.Summary `json:"metrics_ms"`
	ClientBound bool                   `json:"client_bound"`
	UsageSource string                 `json:"usage_source,omitempty"`
	// InputTokens sums the successful requests' input lengths (vLLM's
	// total_input_tokens), from agents that count them. PromptLenSource says where they came from
	// (tokenize, usage, estimate, or mixed), PromptLenCounts how many
	// requests each source counted; both absent for agents that do not say.
	InputTokens     *uint64          `json:"input_tokens,omitempty"`
	PromptLenSource string           `json:"prompt_len_source,omitempty"`
	PromptLenCounts *PromptLenCounts `json:"prompt_len_counts,omitempty"`
	merger          *Merger
	// Coverage is, per agent, the intervals received and whether its final
	// report arrived; a lost agent keeps every interval it delivered.
	Coverage map[string]*LevelCoverage `json:"coverage"`
	Degraded bool                      `json:"degraded"`
	// PlannedRequests and Shortfall: see shortfall.go (issue 8, liveness).
	PlannedRequests *float64 `json:"planned_requests"`
	Shortfall       string   `json:"shortfall,omitempty"`
	barrierNs       int64
	// GPUUtilPct is the mean GPU utilisation over the level, when NVML is there.
	GPUUtilPct *float64 `json:"gpu_util_pct"`
	// EngineWaitingMax is the largest vllm:num_requests_waiting scraped.
	EngineWaitingMax *float64 `json:"engine_waiting_max"`
	WarmupIntervals  int      `json:"warmup_intervals"`
	startNs, endNs   int64    // the measured span, from the agents
	ivEndNs          int64    // the end of the measured intervals, for agents that send no measured span
	good             uint64
	warmupMs         int64
	streamed         []tokenSpan
}

// tokenSpan is one report's streamed tokens and the interval they arrived in.
type tokenSpan struct {
	startNs, endNs int64
	tokens         uint64
}

// inWindow returns the tokens of spans inside [w0, w1], sharing a span that
// straddles an edge in proportion to the overlap.
func inWindow(spans []tokenSpan, w0, w1 int64) float64 {
	var sum float64
	for _, sp := range spans {
		if sp.endNs <= sp.startNs {
			if sp.startNs >= w0 && sp.startNs <= w1 {
				sum += float64(sp.tokens)
			}
			continue
		}
		lo, hi := max(sp.startNs, w0), min(sp.endNs, w1)
		if hi > lo {
			sum += float64(sp.tokens) * float64(hi-lo) / float64(sp.endNs-sp.startNs)
		}
	}
	return sum
}

// LevelCoverage is what one agent delivered for one level.
type LevelCoverage struct {
	Intervals int    `json:"intervals"`
	Final     bool   `json:"final"`
	Lost      bool   `json:"lost"`
	Error     string `json:"error,omitempty"`
	InFlight  uint32 `json:"in_flight_at_loss,omitempty"`
	// CoveredS is the time the agent's intervals covered, when the level
	// is judged by coverage (a closed loop by duration); see shortfall.go.
	CoveredS  float64 `json:"covered_s,omitempty"`
	lastEndNs int64
}

// LevelPrefix starts a warning about level li (0-based).
func LevelPrefix(li int) string { return fmt.Sprintf("level %d: ", li+1) }

// isSweep reports whether a run's events are a sweep's.
func isSweep(events []Event) bool {
	for _, ev := range events {
		if ev.Kind == EventSweepStart || ev.Kind == EventLevelStart {
			return true
		}
	}
	return false
}

// BuildSweep turns a sweep's events into SweepResults. It asserts, per level,
// that the merged TTFT count equals the sum of the agents' counts.
func BuildSweep(events []Event) (*SweepResults, error) {
	b := newSweepBuilder()
	for _, ev := range events {
		b.add(ev)
	}
	return b.finish()
}

// sweepBuilder builds SweepResults one event at a time, so that RenderDir
// can stream a sweep's events.jsonl: it keeps each level's merged
// histograms, the host samples and the small per-interval token spans, not
// the interval reports themselves. Each payload is decoded once.
type sweepBuilder struct {
	res     *SweepResults
	samples []timedSample
	mergers map[int]*Merger
	warns   warnings
	byLevel map[int]*LevelResult
	// n counts the events added; err is the first bad event's error, after
	// which events are ignored.
	n   int
	err error
}

func newSweepBuilder() *sweepBuilder {
	return &sweepBuilder{res: &SweepResults{Kind: "sweep", Status: "incomplete", Levels: []LevelResult{}},
		mergers: map[int]*Merger{}, byLevel: map[int]*LevelResult{}}
}

func (b *sweepBuilder) level(i int) *LevelResult {
	l, ok := b.byLevel[i]
	if !ok {
		l = &LevelResult{Level: i, ErrorsByKind: map[string]uint64{}, Metrics: map[string]hdr.Summary{}, Coverage: map[string]*LevelCoverage{}}
		b.byLevel[i] = l
		b.mergers[i] = NewMerger()
	}
	return l
}

func levelCoverage(l *LevelResult, agent string) *LevelCoverage {
	cov, ok := l.Coverage[agent]
	if !ok {
		cov = &LevelCoverage{}
		l.Coverage[agent] = cov
	}
	return cov
}

// add decodes one event and adds it; an event of a kind this version does
// not know is skipped, a bad one stops the build (finish returns its error).
func (b *sweepBuilder) add(ev Event) {
	if b.err != nil {
		return
	}
	b.n++
	v, err := Decode(ev)
	if errors.Is(err, ErrUnknownKind) {
		return
	}
	if err != nil {
		b.err = fmt.Errorf("event %d: %w", b.n, err)
		return
	}
	res, mergers, level, coverage := b.res, b.mergers, b.level, levelCoverage
	switch p := v.(type) {
	case SweepStart:
		res.RunID, res.BaseURL, res.Model, res.API = p.RunID, p.BaseURL, p.Model, p.API
		res.Transport, res.FirstTokenClock = p.Transport, p.FirstTokenClock
		// Settings as numbers, not protojson's int64 strings.
		res.Load, res.Workload = NumericJSON[pb.LoadModel](p.Load), NumericJSON[pb.Workload](p.Workload)
		if !isNull(p.Generator) {
			res.Generator = NumericJSON[pb.WorkloadGen](p.Generator)
		}
		res.StartedAt = time.Unix(0, ev.T).UTC()
	case *pb.InfoResponse:
		res.Node = nodeFacts(p)
	case *pb.EngineInfo:
		e := engineFacts(p)
		res.Engine, res.Simulated = &e, p.GetSimulated()
	case Warning:
		b.warns.addRecorded(p.Message)
	case RunEnd:
		res.Status, res.Error, res.FinishedAt = p.Status, p.Error, time.Unix(0, ev.T).UTC()
	case TargetVersion:
		res.TargetVersion = p.Version
		res.Simulated = res.Simulated || strings.Contains(p.Version, "+sim")
	case *pb.HostSample:
		b.samples = append(b.samples, timed(ev, p))
	case LevelStart:
		l := level(p.Level)
		l.Value, l.Agents, l.barrierNs = p.Value, p.Agents, p.StartNs
		l.DurationMs, l.warmupMs, l.DurationReason = p.DurationMs, p.WarmupMs, p.DurationReason
		for _, a := range p.Agents {
			l.Coverage[a] = &LevelCoverage{}
		}
	case SweepInterval:
		rep := p.Report
		l := level(p.Level)
		added, err := mergers[p.Level].Add(rep)
		switch added {
		case Duplicate:
			// A report recorded twice (a retried write, a replayed log) counts once.
			b.warns.addDerived(fmt.Sprintf("level %d: agent %s report %d recorded twice; counted once", p.Level+1, rep.GetAgentId(), rep.GetSeq()))
			return
		case Warmup:
			l.WarmupIntervals++
		case Refused:
			// A bad report's histograms are left out; the sweep goes on.
			b.warns.addDerived(LevelPrefix(p.Level) + BadHistogramsWarning(err))
		}
		cov := coverage(l, rep.GetAgentId())
		cov.Intervals++
		cov.Final = cov.Final || rep.GetFinal()
		cov.lastEndNs = max(cov.lastEndNs, rep.GetEndUnixNano())
		if n := rep.GetOutputTokensStreamed(); n > 0 {
			// Warm-up requests' tokens count too when they arrive inside
			// the window: they are load the server carried in it.
			l.streamed = append(l.streamed, tokenSpan{rep.GetStartUnixNano(), rep.GetEndUnixNano(), n})
		}
	case AgentLost:
		cov := coverage(level(p.Level), p.Agent)
		cov.Lost, cov.Error, cov.InFlight = true, p.Error, p.InFlight
	}
}

// finish asserts each level's merge and returns the results.
func (b *sweepBuilder) finish() (*SweepResults, error) {
	if b.err != nil {
		return nil, b.err
	}
	res, samples, mergers, byLevel := b.res, b.samples, b.mergers, b.byLevel
	res.Warnings = b.warns.list
	keys := make([]int, 0, len(byLevel))
	for k := range byLevel {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	for _, k := range keys {
		l := byLevel[k]
		m := mergers[k]
		if err := m.Check(); err != nil {
			return nil, fmt.Errorf("level %d: %w", k+1, err)
		}
		l.Metrics = m.Summaries()
		if h, ok := m.Histograms()[hdr.TTFT]; ok {
			l.TTFTP50CI, l.TTFTP90CI, l.TTFTP99CI = quantileCI(h, 0.5), quantileCI(h, 0.9), quantileCI(h, 0.99)
		}
		l.Requests = m.OK + m.Failed + m.Interrupted
		l.Successes, l.Errors, l.Interrupted, l.good = m.OK, m.Failed, m.Interrupted, m.Good
		l.OutputTokens = m.OutputTokens
		l.ErrorsByKind = m.ErrorsByKind
		l.ClientBound = m.ClientBound
		l.UsageSource = UsageName(m.Usage)
		l.Error = m.AbortError()
		l.merger = m
		levelPromptLens(l, m)
		if l.PromptLenCounts != nil {
			if res.PromptLenCounts == nil {
				res.PromptLenCounts = &PromptLenCounts{}
			}
			res.PromptLenCounts.add(*l.PromptLenCounts)
			res.PromptLenSource = res.PromptLenCounts.Source()
		}
		// Throughput divides by the measured span (earliest intended send
		// to latest finish of a measured request), not the intervals,
		// whose first ones may hold only warm-up. Older agents send no
		// span; their interval bounds are the fallback.
		l.startNs, l.endNs = m.Span()
		l.ivEndNs = m.IntervalEndNs
		if l.endNs > l.startNs {
			d := float64(l.endNs-l.startNs) / 1e9
			l.DurationS = ptr(d)
			l.RequestsPerS = ptr(float64(l.Successes) / d)
		}
		levelThroughput(res, l)
		if sloSet(res.Load) {
			l.Good = ptrU(l.good)
			if l.DurationS != nil {
				l.GoodputPerS = ptr(float64(l.good) / *l.DurationS)
			}
		}
		for _, c := range l.Coverage {
			if c.Lost || !c.Final {
				l.Degraded = true
			}
		}
		judgeShortfall(withDuration(res.Load, l.DurationMs), l, l.barrierNs) // liveness: planned vs delivered
		switch {
		case l.Error != "":
			l.Status = "failed"
		case l.Successes == 0:
			l.Status, l.Error = "failed", fmt.Sprintf("no request succeeded (%d attempts, %d errors)", l.Requests, l.Errors)
		case l.Degraded:
			l.Status = "degraded"
		default:
			l.Status = "ok"
		}
		if l.Successes > 0 {
			var e2e *float64
			if s, ok := l.Metrics[hdr.E2E]; ok && s.Count > 0 {
				e2e = ptr(s.P50 / 1000)
			}
			v := judgeSamples(l.Successes, l.WindowS, e2e)
			l.Insufficient, l.InsufficientReasons, l.InsufficientFor = v.insufficient(), v.Reasons, v.Marked
			if v.NeedWindowS > 0 {
				l.NeedWindowS = ptr(v.NeedWindowS)
			}
		}
		if l.Status == "failed" && res.Status == "ok" {
			// The run ended without an error, but a level measured nothing.
			res.Status, res.Error = "failed", fmt.Sprintf("level %d (%g) failed: %s", k+1, l.Value, l.Error)
		}
		ws := window(samples, l.startNs, l.endNs)
		var util, n float64
		for _, s := range ws {
			for _, g := range s.GetGpus() {
				util += float64(g.GetGpuUtilPercent())
				n++
			}
			if w, ok := s.GetEngineMetrics()["vllm:num_requests_waiting"]; ok {
				if l.EngineWaitingMax == nil || w > *l.EngineWaitingMax {
					l.EngineWaitingMax = ptr(w)
				}
			}
		}
		if n > 0 {
			l.GPUUtilPct = ptr(util / n)
		}
		res.Levels = append(res.Levels, *l)
	}
	res.Observations = sweepObservations(res)
	return res, nil
}

// levelThroughput sets a level's window and output throughput: the tokens
// streamed inside the window over its length. The window is the level's
// planned measurement, from the barrier plus warm-up for the level's
// duration, cut at the end of the last report received; a level bounded by
// requests alone uses its measured span. Agents that count no streamed
// tokens leave the completed requests' tokens over the measured span.
func levelThroughput(res *SweepResults, l *LevelResult) {
	w0, w1 := l.startNs, l.endNs
	dur, warm := l.DurationMs, l.warmupMs
	if dur == 0 {
		// Events from before level_start recorded the duration.
		if m, ok := loadOf(res.Load); ok {
			dur, warm = m.GetDurationMs(), m.GetWarmupMs()
		}
	}
	if dur > 0 && l.barrierNs > 0 {
		w0 = l.barrierNs + warm*int64(time.Millisecond)
		w1 = w0 + dur*int64(time.Millisecond)
		if l.ivEndNs > 0 {
			w1 = min(w1, l.ivEndNs)
		}
	}
	if len(l.streamed) > 0 && w1 > w0 {
		d := float64(w1-w0) / 1e9
		n := inWindow(l.streamed, w0, w1)
		l.WindowS, l.OutputTokensStreamed, l.TokensPerS, l.ThroughputBasis = ptr(d), ptr(n), ptr(n/d), "streamed"
		return
	}
	if l.DurationS != nil {
		l.WindowS, l.TokensPerS, l.ThroughputBasis = l.DurationS, ptr(float64(l.OutputTokens) / *l.DurationS), "completed"
	}
}

// loadOf decodes a sweep's load template.
func loadOf(load json.RawMessage) (*pb.LoadModel, bool) {
	if len(load) == 0 {
		return nil, false
	}
	var m pb.LoadModel
	if err := pjsonIn.Unmarshal(load, &m); err != nil {
		return nil, false
	}
	return &m, true
}

// withDuration returns the load template with a level's own duration, for
// judging its plan; the template itself when the level recorded none.
func withDuration(load json.RawMessage, durMs int64) json.RawMessage {
	m, ok := loadOf(load)
	if !ok || durMs <= 0 || m.GetDurationMs() == durMs {
		return load
	}
	m.DurationMs = durMs
	b, err := pjson.Marshal(m)
	if err != nil {
		return load
	}
	return b
}

func levelName(res *SweepResults, v float64) string {
	if strings.Contains(string(res.Load), `"kind":"closed"`) || len(res.Load) == 0 {
		return fmt.Sprintf("c=%g", v)
	}
	return fmt.Sprintf("%g req/s", v)
}

func sweepObservations(res *SweepResults) []string {
	var out []string
	best := -1
	for i, l := range res.Levels {
		if l.TokensPerS != nil && (best < 0 || *l.TokensPerS > *res.Levels[best].TokensPerS) {
			best = i
		}
	}
	if best >= 0 && *res.Levels[best].TokensPerS > 0 {
		l := res.Levels[best]
		mark := ""
		if l.Insufficient {
			mark = ", a level marked insufficient"
		}
		out = append(out, fmt.Sprintf("Peak output throughput %.0f tokens/s at %s (TTFT p99 %s ms%s).", *l.TokensPerS, levelName(res, l.Value), metricCell(l, hdr.TTFT, func(s hdr.Summary) float64 { return s.P99 }), mark))
	}
	for i := 1; i < len(res.Levels); i++ {
		a, b := res.Levels[i-1], res.Levels[i]
		if a.TokensPerS != nil && b.TokensPerS != nil && *b.TokensPerS < 0.95**a.TokensPerS && b.Errors == 0 && !b.Insufficient && !a.Insufficient {
			out = append(out, fmt.Sprintf("Output throughput falls from %.0f tokens/s at %s to %.0f at %s with no error and enough samples: the server is past saturation.",
				*a.TokensPerS, levelName(res, a.Value), *b.TokensPerS, levelName(res, b.Value)))
		}
	}
	for _, l := range res.Levels {
		if l.ThroughputBasis == "completed" {
			out = append(out, "Output throughput counts completed requests only: the agents did not report streamed tokens (an older agent), so long requests still in flight at the end are not counted.")
			break
		}
	}
	// The knee: the first level whose TTFT p50 is over twice the first level's.
	if len(res.Levels) > 1 {
		base := res.Levels[0].Metrics[hdr.TTFT].P50
		for _, l := range res.Levels[1:] {
			if p := l.Metrics[hdr.TTFT].P50; base > 0 && p > 2*base {
				out = append(out, fmt.Sprintf("TTFT p50 more than doubles by %s (%.1f ms vs %.1f ms at %s): the server queues past this point.",
					levelName(res, l.Value), p, base, levelName(res, res.Levels[0].Value)))
				break
			}
		}
	}
	for _, l := range res.Levels {
		if l.ClientBound {
			out = append(out, fmt.Sprintf("%s is client-bound: the agents fell behind the schedule (dispatch lag p99 %s ms); its latencies include client queueing, see TTFT_sched.",
				levelName(res, l.Value), metricCell(l, hdr.DispatchLag, func(s hdr.Summary) float64 { return s.P99 })))
		}
		if l.Degraded {
			var who []string
			for a, c := range l.Coverage {
				if c.Lost {
					who = append(who, fmt.Sprintf("%s lost after %d intervals (%s)", a, c.Intervals, c.Error))
				} else if !c.Final {
					who = append(who, a+" sent no final report")
				}
			}
			sort.Strings(who)
			if l.Shortfall != "" {
				who = append(who, l.Shortfall)
			}
			out = append(out, fmt.Sprintf("%s is degraded: %s; every interval received is kept.", levelName(res, l.Value), strings.Join(who, "; ")))
		}
		if l.Errors > 0 {
			out = append(out, fmt.Sprintf("%s had %d failed requests: %v.", levelName(res, l.Value), l.Errors, l.ErrorsByKind))
		}
		if l.Status == "failed" {
			out = append(out, fmt.Sprintf("%s failed: %s.", levelName(res, l.Value), l.Error))
		}
		if l.Insufficient {
			out = append(out, insufficientObservation(levelName(res, l.Value), l))
		}
	}
	if res.Simulated {
		out = append(out, "These figures come from ttftlab's simulated vLLM engine (a performance model), not from a real GPU.")
	}
	return out
}

// Files written next to a sweep report.
const (
	SweepReport     = "sweep.md"
	SweepLatencySVG = "sweep_ttft.svg"
	SweepThroughSVG = "sweep_throughput.svg"
)

// RenderSweepMarkdown renders sweep.md.
func RenderSweepMarkdown(res *SweepResults) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# Load sweep\n\n")
	if res.Simulated {
		p("> **Simulated engine.** These numbers come from `ttftlab sim`, a performance model of vLLM, not from a real GPU.\n\n")
	}
	client := ""
	if res.Transport != "" {
		client = fmt.Sprintf("; client `%s`, first-token clock `%s`", res.Transport, res.FirstTokenClock)
	}
	p("Run `%s`, status **%s**; target `%s`, model `%s`, %s API%s.\n\n", res.RunID, res.Status, res.BaseURL, res.Model, res.API, client)
	if res.Error != "" {
		p("**The run failed:** %s\n\n", sanitizeOneLine(res.Error))
	}
	if t := SettingsTable(res.Load, res.Workload, res.Generator); t != "" {
		p("Settings (the load template; each level sets its own %s):\n\n%s\n", levelSetting(res), t)
	}
	if res.PromptLenCounts != nil {
		p("Prompt lengths: %s (docs/metrics.md, \"Exact prompt lengths\").\n\n", res.PromptLenCounts)
	}
	if res.TargetVersion != "" {
		p("Target version: `%s`.\n\n", sanitizeOneLine(res.TargetVersion))
	}
	if res.Engine != nil {
		p("Engine: %s %s, `%s`, ready in %.2f s.\n\n", res.Engine.Kind, res.Engine.Version, sanitizeOneLine(strings.Join(res.Engine.Argv, " ")), res.Engine.ReadyS)
	}
	p("| level | agents | requests | errors | req/s | goodput req/s | output tok/s | TTFT p50 | TTFT p90 | TTFT p99 | TTFT_sched p99 | TPOT p50 | ITL p99 | E2E p50 | lag p99 | GPU util | notes |\n")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n")
	ms := metricCell
	p50 := func(s hdr.Summary) float64 { return s.P50 }
	p90 := func(s hdr.Summary) float64 { return s.P90 }
	p99 := func(s hdr.Summary) float64 { return s.P99 }
	anyMark, anyCI, anyOpen := false, false, false
	// pct renders a TTFT percentile with its interval and the ⚠ mark.
	pct := func(l LevelResult, name string, f func(hdr.Summary) float64, ci *CIBounds) string {
		cell := ms(l, hdr.TTFT, f)
		if cell == "n/a" {
			return cell
		}
		if ci != nil {
			cell += fmtCI(ci)
			anyCI = true
			anyOpen = anyOpen || ci[1] == nil
		}
		for _, m := range l.InsufficientFor {
			if m == name {
				cell += " ⚠"
				anyMark = true
			}
		}
		return cell
	}
	for _, l := range res.Levels {
		var notes []string
		if l.Insufficient {
			notes = append(notes, "insufficient ⚠")
		}
		if l.ClientBound {
			notes = append(notes, "client-bound")
		}
		if l.Degraded {
			notes = append(notes, "degraded")
		}
		if l.Status == "failed" {
			notes = append(notes, "**failed**: "+sanitizeOneLine(l.Error))
		}
		if l.UsageSource != "" && l.UsageSource != "continuous" {
			notes = append(notes, "tokens "+l.UsageSource)
		}
		p("| %s | %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
			levelName(res, l.Value), len(l.Agents), l.Requests, l.Errors, fmtPtr(l.RequestsPerS, "%.2f"), fmtPtr(l.GoodputPerS, "%.2f"), fmtPtr(l.TokensPerS, "%.0f"),
			pct(l, "p50", p50, l.TTFTP50CI), pct(l, "p90", p90, l.TTFTP90CI), pct(l, "p99", p99, l.TTFTP99CI), ms(l, hdr.TTFTSched, p99),
			ms(l, hdr.TPOT, p50), ms(l, hdr.ITL, p99), ms(l, hdr.E2E, p50), ms(l, hdr.DispatchLag, p99),
			fmtPtr(l.GPUUtilPct, "%.0f%%"), strings.Join(notes, ", "))
	}
	p("\nLatencies in ms, merged losslessly over the agents' HdrHistograms; warm-up intervals are excluded. ")
	p("Output tok/s counts every token streamed inside the level's window, from finished and in-flight requests; req/s counts successes over the measured span.\n\n")
	if anyCI {
		p("[lo, hi]: the 95%% order-statistic confidence interval of the percentile, shown when a level has fewer than %d values", CIMaxN)
		if anyOpen {
			p("; ∞: too few values to bound it from above")
		}
		p(".\n\n")
	}
	if anyMark {
		p("⚠ insufficient: fewer than %d successes (p90), %d (p99), or a window shorter than %g × E2E p50 (every percentile); see Observations.\n\n", MinSuccessesP90, MinSuccessesP99, MinWindowE2E)
	}
	p("![TTFT by level](%s)\n\n![Throughput by level](%s)\n\n![Latency against throughput](%s)\n\n", SweepLatencySVG, SweepThroughSVG, SweepParetoSVG)
	p("%s. Knee rule: %s.\n\n", upperFirst(FindKnee(res).Reason), KneeRule)
	p("## Observations\n\n")
	for _, o := range res.Observations {
		p("- %s\n", o)
	}
	for _, w := range res.Warnings {
		p("- Warning: %s\n", w)
	}
	return b.String()
}

// metricCell formats one statistic of a level's metric in ms, or n/a when
// the metric holds no value.
func metricCell(l LevelResult, m string, f func(hdr.Summary) float64) string {
	s, ok := l.Metrics[m]
	if !ok || s.Count == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", f(s))
}

// sloSet reports whether a load model's JSON sets any SLO.
func sloSet(load json.RawMessage) bool {
	var m struct {
		TTFT float64 `json:"slo_ttft_ms"`
		TPOT float64 `json:"slo_tpot_ms"`
		E2E  float64 `json:"slo_e2e_ms"`
	}
	return json.Unmarshal(load, &m) == nil && (m.TTFT > 0 || m.TPOT > 0 || m.E2E > 0)
}

func ptrU(v uint64) *uint64 { return &v }
