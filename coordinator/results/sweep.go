package results

import (
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/plot"
)

// SweepResults is results.json of a sweep, built from events.jsonl alone.
type SweepResults struct {
	Kind          string          `json:"kind"`
	RunID         string          `json:"run_id"`
	Status        string          `json:"status"`
	Error         string          `json:"error,omitempty"`
	Simulated     bool            `json:"simulated"`
	StartedAt     time.Time       `json:"started_at"`
	FinishedAt    time.Time       `json:"finished_at"`
	BaseURL       string          `json:"base_url"`
	Model         string          `json:"model"`
	API           string          `json:"api"`
	Load          json.RawMessage `json:"load"`
	Workload      json.RawMessage `json:"workload"`
	Generator     json.RawMessage `json:"generator,omitempty"`
	Node          NodeFacts       `json:"node"`
	Engine        *EngineFacts    `json:"engine,omitempty"`
	TargetVersion string          `json:"target_version,omitempty"`
	Levels        []LevelResult   `json:"levels"`
	Observations  []string        `json:"observations"`
	Warnings      []string        `json:"warnings,omitempty"`
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
	OutputTokens uint64            `json:"output_tokens"`
	// DurationS is the measured span; it and the rates are nil when the
	// level measured no request.
	DurationS    *float64 `json:"duration_s"`
	RequestsPerS *float64 `json:"requests_per_s"`
	TokensPerS   *float64 `json:"output_tokens_per_s"`
	// Good and GoodputPerS count requests that met the load's SLOs; nil
	// when the load set none.
	Good        *uint64                `json:"good_requests"`
	GoodputPerS *float64               `json:"goodput_requests_per_s"`
	Metrics     map[string]hdr.Summary `json:"metrics_ms"`
	ClientBound bool                   `json:"client_bound"`
	UsageSource string                 `json:"usage_source,omitempty"`
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
	good             uint64
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
	payloads, err := decodeAll(events)
	if err != nil {
		return nil, err
	}
	res := &SweepResults{Kind: "sweep", Status: "incomplete", Levels: []LevelResult{}}
	var samples []timedSample
	mergers := map[int]*Merger{}
	var warns warnings
	byLevel := map[int]*LevelResult{}
	level := func(i int) *LevelResult {
		l, ok := byLevel[i]
		if !ok {
			l = &LevelResult{Level: i, ErrorsByKind: map[string]uint64{}, Metrics: map[string]hdr.Summary{}, Coverage: map[string]*LevelCoverage{}}
			byLevel[i] = l
			mergers[i] = NewMerger()
		}
		return l
	}
	coverage := func(l *LevelResult, agent string) *LevelCoverage {
		cov, ok := l.Coverage[agent]
		if !ok {
			cov = &LevelCoverage{}
			l.Coverage[agent] = cov
		}
		return cov
	}
	for i, ev := range events {
		switch p := payloads[i].(type) {
		case SweepStart:
			res.RunID, res.BaseURL, res.Model, res.API = p.RunID, p.BaseURL, p.Model, p.API
			res.Load, res.Workload = p.Load, p.Workload
			if !isNull(p.Generator) {
				res.Generator = p.Generator
			}
			res.StartedAt = time.Unix(0, ev.T).UTC()
		case *pb.InfoResponse:
			res.Node = nodeFacts(p)
		case *pb.EngineInfo:
			e := engineFacts(p)
			res.Engine, res.Simulated = &e, p.GetSimulated()
		case Warning:
			warns.addRecorded(p.Message)
		case RunEnd:
			res.Status, res.Error, res.FinishedAt = p.Status, p.Error, time.Unix(0, ev.T).UTC()
		case TargetVersion:
			res.TargetVersion = p.Version
			res.Simulated = res.Simulated || strings.Contains(p.Version, "+sim")
		case *pb.HostSample:
			samples = append(samples, timed(ev, p))
		case LevelStart:
			l := level(p.Level)
			l.Value, l.Agents, l.barrierNs = p.Value, p.Agents, p.StartNs
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
				warns.addDerived(fmt.Sprintf("level %d: agent %s report %d recorded twice; counted once", p.Level+1, rep.GetAgentId(), rep.GetSeq()))
				continue
			case Warmup:
				l.WarmupIntervals++
			case Refused:
				// A bad report's histograms are left out; the sweep goes on.
				warns.addDerived(LevelPrefix(p.Level) + BadHistogramsWarning(err))
			}
			cov := coverage(l, rep.GetAgentId())
			cov.Intervals++
			cov.Final = cov.Final || rep.GetFinal()
			cov.lastEndNs = max(cov.lastEndNs, rep.GetEndUnixNano())
		case AgentLost:
			cov := coverage(level(p.Level), p.Agent)
			cov.Lost, cov.Error, cov.InFlight = true, p.Error, p.InFlight
		}
	}
	res.Warnings = warns.list
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
		l.Requests = m.OK + m.Failed + m.Interrupted
		l.Successes, l.Errors, l.Interrupted, l.good = m.OK, m.Failed, m.Interrupted, m.Good
		l.OutputTokens = m.OutputTokens
		l.ErrorsByKind = m.ErrorsByKind
		l.ClientBound = m.ClientBound
		l.UsageSource = UsageName(m.Usage)
		l.Error = m.AbortError()
		// Throughput divides by the measured span (earliest intended send
		// to latest finish of a measured request), not the intervals,
		// whose first ones may hold only warm-up. Older agents send no
		// span; their interval bounds are the fallback.
		l.startNs, l.endNs = m.Span()
		if l.endNs > l.startNs {
			d := float64(l.endNs-l.startNs) / 1e9
			l.DurationS = ptr(d)
			l.RequestsPerS = ptr(float64(l.Successes) / d)
			l.TokensPerS = ptr(float64(l.OutputTokens) / d)
		}
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
		judgeShortfall(res.Load, l, l.barrierNs) // liveness: planned vs delivered
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
		out = append(out, fmt.Sprintf("Peak output throughput %.0f tokens/s at %s (TTFT p99 %s ms).", *l.TokensPerS, levelName(res, l.Value), metricCell(l, hdr.TTFT, func(s hdr.Summary) float64 { return s.P99 })))
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

func renderSweepPlots(res *SweepResults) map[string]string {
	if len(res.Levels) == 0 {
		return nil
	}
	var xs []string
	var p50, p99, sched99, tps []float64
	for _, l := range res.Levels {
		xs = append(xs, fmt.Sprintf("%g", l.Value))
		m := func(name string, f func(hdr.Summary) float64) float64 {
			s, ok := l.Metrics[name]
			if !ok || s.Count == 0 {
				return math.NaN()
			}
			return f(s)
		}
		p50 = append(p50, m(hdr.TTFT, func(s hdr.Summary) float64 { return s.P50 }))
		p99 = append(p99, m(hdr.TTFT, func(s hdr.Summary) float64 { return s.P99 }))
		sched99 = append(sched99, m(hdr.TTFTSched, func(s hdr.Summary) float64 { return s.P99 }))
		if l.TokensPerS != nil {
			tps = append(tps, *l.TokensPerS)
		} else {
			tps = append(tps, math.NaN())
		}
	}
	xl := "concurrency"
	if len(res.Levels) > 0 && !strings.HasPrefix(levelName(res, 1), "c=") {
		xl = "request rate (req/s)"
	}
	return map[string]string{
		SweepLatencySVG: plot.Lines("TTFT by load level", xl, " ms", xs, []plot.Series{{Name: "TTFT p50", Y: p50}, {Name: "TTFT p99", Y: p99}, {Name: "TTFT_sched p99", Y: sched99}}),
		SweepThroughSVG: plot.Lines("Output throughput by load level", xl, "", xs, []plot.Series{{Name: "output tokens/s", Y: tps}}),
	}
}

// RenderSweepMarkdown renders sweep.md.
func RenderSweepMarkdown(res *SweepResults) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# Load sweep\n\n")
	if res.Simulated {
		p("> **Simulated engine.** These numbers come from `ttftlab sim`, a performance model of vLLM, not from a real GPU.\n\n")
	}
	p("Run `%s`, status **%s**; target `%s`, model `%s`, %s API.\n\n", res.RunID, res.Status, res.BaseURL, res.Model, res.API)
	if res.Error != "" {
		p("**The run failed:** %s\n\n", sanitizeOneLine(res.Error))
	}
	p("Load template: `%s`. Workload: `%s`", sanitizeOneLine(string(res.Load)), sanitizeOneLine(string(res.Workload)))
	if len(res.Generator) > 0 {
		p(", generated by `%s`", sanitizeOneLine(string(res.Generator)))
	}
	p(".\n\n")
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
	for _, l := range res.Levels {
		var notes []string
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
			ms(l, hdr.TTFT, p50), ms(l, hdr.TTFT, p90), ms(l, hdr.TTFT, p99), ms(l, hdr.TTFTSched, p99),
			ms(l, hdr.TPOT, p50), ms(l, hdr.ITL, p99), ms(l, hdr.E2E, p50), ms(l, hdr.DispatchLag, p99),
			fmtPtr(l.GPUUtilPct, "%.0f%%"), strings.Join(notes, ", "))
	}
	p("\nLatencies in ms, merged losslessly over the agents' HdrHistograms; warm-up intervals are excluded.\n\n")
	p("![TTFT by level](%s)\n\n![Throughput by level](%s)\n\n", SweepLatencySVG, SweepThroughSVG)
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
