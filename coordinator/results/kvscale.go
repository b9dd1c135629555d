package results

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/plot"
)

// Files a kvscale run writes next to events.jsonl.
const (
	KVScaleCSV    = "kv_cache_scaling.csv"
	KVScaleReport = "kv_cache_scaling.md"
	KVScaleSVG    = "kv_cache_scaling.svg"
)

// KVScaleColumns are kv_cache_scaling.csv's columns, in order.
var KVScaleColumns = []string{"max_model_len", "gpu_memory_utilization", "max_num_seqs", "kv_cache_tokens_reported",
	"kv_cache_tokens_predicted", "max_concurrency_reported", "max_concurrency_predicted", "concurrency", "ttft_p50_ms",
	"ttft_p95_ms", "tpot_p50_ms", "output_tokens_per_s", "preemptions", "waiting_max"}

// KVScaleResults is results.json of a kvscale run, built from events.jsonl
// alone.
type KVScaleResults struct {
	GridRun
	Params       KVScaleParams   `json:"params"`
	Node         NodeFacts       `json:"node"`
	Points       []KVPointResult `json:"points"`
	Observations []string        `json:"observations"`
	Warnings     []string        `json:"warnings,omitempty"`
}

// KVPointResult is one grid point.
type KVPointResult struct {
	Point                int      `json:"point"`
	Label                string   `json:"label"`
	MaxModelLen          int      `json:"max_model_len"`
	GPUMemoryUtilization float64  `json:"gpu_memory_utilization"`
	MaxNumSeqs           *int     `json:"max_num_seqs"`
	Status               string   `json:"status"`
	Error                string   `json:"error,omitempty"`
	ReadyS               *float64 `json:"ready_s"`
	// Reported figures, from the engine's startup log.
	KVTokensReported       *int64       `json:"kv_cache_tokens_reported"`
	MaxConcurrencyReported *float64     `json:"max_concurrency_reported"`
	AvailableKVGiBReported *float64     `json:"available_kv_gib_reported"`
	Prediction             KVPrediction `json:"prediction"`
	// KVTokensDiffPct is (reported − predicted) / predicted × 100.
	KVTokensDiffPct *float64  `json:"kv_cache_tokens_diff_pct"`
	Plan            *KVPlan   `json:"plan,omitempty"`
	Levels          []KVLevel `json:"levels"`
	// Onset is the first concurrency that preempted or kept a queue, and
	// OnsetKind says which ("preemption", "queue"); nil when no step did.
	Onset     *int   `json:"onset"`
	OnsetKind string `json:"onset_kind,omitempty"`
	// OnsetVsCStarPct is (onset − C*) / C* × 100.
	OnsetVsCStarPct *float64 `json:"onset_vs_c_star_pct"`
}

// KVLevel is one concurrency step of a point.
type KVLevel struct {
	Level       int                    `json:"level"`
	Concurrency int                    `json:"concurrency"`
	Status      string                 `json:"status"`
	Error       string                 `json:"error,omitempty"`
	Requests    uint64                 `json:"requests"`
	Errors      uint64                 `json:"errors"`
	TokensPerS  *float64               `json:"output_tokens_per_s"`
	Metrics     map[string]hdr.Summary `json:"metrics_ms"`
	Preemptions *float64               `json:"preemptions"`
	WaitingMax  *float64               `json:"waiting_max"`
	WaitingFrac *float64               `json:"waiting_frac"`
	WarmupMs    int64                  `json:"warmup_ms"`
	// QueuedSamples and KVUsageMax: see LevelObservation.
	QueuedSamples int      `json:"queued_samples"`
	KVUsageMax    *float64 `json:"kv_usage_max"`
	// Inconclusive: see LevelObservation.
	Inconclusive bool `json:"inconclusive,omitempty"`
	Onset        bool `json:"onset"`
}

// renderGrid renders a restart grid's events by its experiment: kvscale's
// results, CSV, plot and report, or another experiment's (presets.go).
func renderGrid(events []Event) (*Rendered, error) {
	if gridExperiment(events) == ExperimentPresets {
		return renderPresets(events)
	}
	res, err := BuildKVScale(events)
	if err != nil {
		return nil, fmt.Errorf("build kvscale results: %w", err)
	}
	csvb, err := RenderKVScaleCSV(res)
	if err != nil {
		return nil, err
	}
	return &Rendered{KVScale: res, Report: KVScaleReport, Files: map[string][]byte{
		KVScaleCSV:    csvb,
		KVScaleSVG:    []byte(renderKVScalePlot(res)),
		KVScaleReport: []byte(RenderKVScaleMarkdown(res)),
	}}, nil
}

// BuildKVScale turns a kvscale grid's events into KVScaleResults. The
// levels' latencies are the sweep's lossless merge of the agents'
// histograms (BuildSweep).
func BuildKVScale(events []Event) (*KVScaleResults, error) {
	res := &KVScaleResults{Points: []KVPointResult{}}
	r, err := newGridRun(events)
	if err != nil {
		return nil, err
	}
	err = r.walk(events, gridHandlers{
		Start: func(i int) error {
			d := r.Start
			if d.Experiment != ExperimentKVScale {
				return fmt.Errorf("event %d: grid experiment %q has no report here: this ttftlab renders %q grids", i+1, d.Experiment, ExperimentKVScale)
			}
			var params KVScaleParams
			if err := json.Unmarshal(d.Params, &params); err != nil {
				return fmt.Errorf("event %d: kvscale params: %w", i+1, err)
			}
			if len(params.Predictions) != len(d.Points) {
				return fmt.Errorf("event %d: grid_start has %d points and %d predictions", i+1, len(d.Points), len(params.Predictions))
			}
			res.Params = params
			for j, p := range d.Points {
				k := r.Knobs[j]
				pr := KVPointResult{Point: j, Label: p.Label, MaxModelLen: int(k.GetMaxModelLen()), GPUMemoryUtilization: k.GetGpuMemoryUtilization(),
					Prediction: params.Predictions[j], Levels: []KVLevel{}}
				if v := int(k.GetMaxNumSeqs()); v > 0 {
					pr.MaxNumSeqs = &v
				}
				res.Points = append(res.Points, pr)
			}
			return nil
		},
		PointReady: func(i int, d GridPointReady) error {
			p := &res.Points[d.Point]
			var f pb.EngineFigures
			if !isNull(d.Figures) {
				if err := pjsonIn.Unmarshal(d.Figures, &f); err != nil {
					return fmt.Errorf("event %d: figures: %w", i+1, err)
				}
			}
			if f.KvCacheTokens != nil {
				p.KVTokensReported = ptrI64(f.GetKvCacheTokens())
			}
			if f.MaxConcurrency != nil {
				p.MaxConcurrencyReported = ptr(f.GetMaxConcurrency())
			}
			if f.AvailableKvGib != nil {
				p.AvailableKVGiBReported = ptr(f.GetAvailableKvGib())
			}
			if !isNull(d.Plan) {
				var plan KVPlan
				if err := json.Unmarshal(d.Plan, &plan); err != nil {
					return fmt.Errorf("event %d: kvscale plan: %w", i+1, err)
				}
				p.Plan, p.Prediction = &plan, plan.Prediction
			}
			return nil
		},
		Level: func(_ int, o LevelObservation) error {
			p := &res.Points[o.Point]
			l := KVLevel{Level: o.Level, Concurrency: o.Concurrency, Status: "not measured", Error: o.Error, Metrics: map[string]hdr.Summary{},
				Preemptions: o.Preemptions, WaitingMax: o.WaitingMax, WaitingFrac: o.WaitingFrac, WarmupMs: o.WarmupMs, QueuedSamples: o.QueuedSamples, KVUsageMax: o.KVUsageMax, Inconclusive: o.Inconclusive, Onset: KVOnset(&o)}
			if lr, ok := r.Levels[o.Level]; ok {
				l.Status, l.Requests, l.Errors, l.TokensPerS, l.Metrics = lr.Status, lr.Requests, lr.Errors, lr.TokensPerS, lr.Metrics
				if l.Error == "" {
					l.Error = lr.Error
				}
			}
			p.Levels = append(p.Levels, l)
			if l.Onset && p.Onset == nil {
				c := o.Concurrency
				p.Onset, p.OnsetKind = &c, "queue"
				if o.Preemptions != nil && *o.Preemptions > 0 {
					p.OnsetKind = "preemption"
				}
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	// The run's own end, not the sweep's verdict: a step that measured no
	// request because it was inconclusive (and so run again) does not fail
	// the run; a failed step that counted does, below.
	res.GridRun, res.Node, res.Warnings = r.head(ExperimentKVScale), r.Sweep.Node, r.Sweep.Warnings
	copyPoints(r, res.Points, func(p *KVPointResult) (*string, *string, **float64) { return &p.Status, &p.Error, &p.ReadyS })
	for i := range res.Points {
		p := &res.Points[i]
		for _, l := range p.Levels {
			if l.Status == "failed" && !l.Inconclusive && res.Status == StatusOK {
				res.Status, res.Error = StatusFailed, fmt.Sprintf("%s, concurrency %d failed: %s", p.Label, l.Concurrency, l.Error)
			}
		}
		if p.KVTokensReported != nil && p.Prediction.KVTokens != nil && *p.Prediction.KVTokens > 0 {
			pred := float64(*p.Prediction.KVTokens)
			p.KVTokensDiffPct = ptr((float64(*p.KVTokensReported) - pred) / pred * 100)
		}
		if p.Onset != nil && p.Plan != nil && p.Plan.CStar != nil && *p.Plan.CStar > 0 {
			cs := float64(*p.Plan.CStar)
			p.OnsetVsCStarPct = ptr((float64(*p.Onset) - cs) / cs * 100)
		}
	}
	res.Observations = kvScaleObservations(res)
	return res, nil
}

func ptrI64(v int64) *int64 { return &v }

// RenderKVScaleCSV renders kv_cache_scaling.csv: one row per grid point and
// concurrency step (one row with an empty concurrency for a point that ran
// no step); a figure not measured is an empty cell, never 0.
func RenderKVScaleCSV(res *KVScaleResults) ([]byte, error) {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	if err := w.Write(KVScaleColumns); err != nil {
		return nil, err
	}
	f := func(v *float64, prec int) string {
		if v == nil || math.IsNaN(*v) || math.IsInf(*v, 0) {
			return ""
		}
		return strconv.FormatFloat(*v, 'f', prec, 64)
	}
	for _, p := range res.Points {
		seqs := ""
		if p.MaxNumSeqs != nil {
			seqs = strconv.Itoa(*p.MaxNumSeqs)
		}
		head := []string{strconv.Itoa(p.MaxModelLen), strconv.FormatFloat(p.GPUMemoryUtilization, 'f', -1, 64), seqs,
			int64Cell(p.KVTokensReported), intCell(p.Prediction.KVTokens), f(p.MaxConcurrencyReported, 2), f(p.Prediction.MaxConcurrency, 2)}
		if len(p.Levels) == 0 {
			if err := w.Write(append(head, "", "", "", "", "", "", "")); err != nil {
				return nil, err
			}
			continue
		}
		for _, l := range p.Levels {
			row := append(append([]string(nil), head...), strconv.Itoa(l.Concurrency),
				summaryCell(l.Metrics, hdr.TTFT, func(s hdr.Summary) float64 { return s.P50 }),
				summaryCell(l.Metrics, hdr.TTFT, func(s hdr.Summary) float64 { return s.P95 }),
				summaryCell(l.Metrics, hdr.TPOT, func(s hdr.Summary) float64 { return s.P50 }),
				f(l.TokensPerS, 1), f(l.Preemptions, 0), f(l.WaitingMax, 0))
			if err := w.Write(row); err != nil {
				return nil, err
			}
		}
	}
	w.Flush()
	return b.Bytes(), w.Error()
}

func int64Cell(v *int64) string {
	if v == nil {
		return ""
	}
	return strconv.FormatInt(*v, 10)
}

func intCell(v *int) string {
	if v == nil {
		return ""
	}
	return strconv.Itoa(*v)
}

// summaryCell formats one statistic in ms with 3 decimals, or "" when the
// metric holds no value.
func summaryCell(m map[string]hdr.Summary, name string, f func(hdr.Summary) float64) string {
	s, ok := m[name]
	if !ok || s.Count == 0 {
		return ""
	}
	return strconv.FormatFloat(f(s), 'f', 3, 64)
}

// na turns an empty cell into n/a for tables.
func na(s string) string {
	if s == "" {
		return "n/a"
	}
	return s
}

// kvScaleObservations derives the report's observations from the numbers.
func kvScaleObservations(res *KVScaleResults) []string {
	var out []string
	var worstDiff float64
	var compared int
	for _, p := range res.Points {
		if p.KVTokensDiffPct != nil {
			compared++
			worstDiff = max(worstDiff, math.Abs(*p.KVTokensDiffPct))
		}
	}
	if compared > 0 {
		out = append(out, fmt.Sprintf("Reported and predicted KV cache tokens agree within %.2f%% at the %d point(s) where both exist.", worstDiff, compared))
	}
	for _, p := range res.Points {
		name := fmt.Sprintf("max_model_len %d, gpu_memory_utilization %g", p.MaxModelLen, p.GPUMemoryUtilization)
		switch p.Status {
		case PointRefused:
			pred := "kvcalc predicted it would start"
			if p.Prediction.Refusal != "" {
				pred = "kvcalc predicted the refusal too"
			} else if p.Prediction.Source == "" {
				pred = "kvcalc made no prediction"
			}
			out = append(out, fmt.Sprintf("%s: the engine refused to start (%s).", name, pred))
			continue
		case PointFailed, "interrupted":
			out = append(out, fmt.Sprintf("%s: %s: %s", name, p.Status, sanitizeOneLine(p.Error)))
		}
		if p.Plan == nil || p.Plan.CStar == nil {
			continue
		}
		cs := *p.Plan.CStar
		logC := "n/a"
		if p.MaxConcurrencyReported != nil {
			logC = fmt.Sprintf("%.2f×", *p.MaxConcurrencyReported)
		}
		switch {
		case p.Onset != nil:
			below := 0
			for _, l := range p.Levels {
				if !l.Onset && !l.Inconclusive && l.Concurrency < *p.Onset && l.Concurrency > below {
					below = l.Concurrency
				}
			}
			out = append(out, fmt.Sprintf("%s: %s begins at concurrency %d (%s vs C* = %d for %d+%d-token requests; the log's maximum concurrency for full %d-token requests is %s); concurrency %d showed none.",
				name, p.OnsetKind, *p.Onset, fmtPtr(p.OnsetVsCStarPct, "%+.0f%%"), cs, p.Plan.PromptLen, p.Plan.OutputLen, p.MaxModelLen, logC, below))
			if *p.Onset < cs {
				out = append(out, fmt.Sprintf("%s: the onset came below C* (at %.0f%% of it).", name, float64(*p.Onset)/float64(cs)*100))
			}
		case len(p.Levels) > 0 && p.Plan.Capped:
			out = append(out, fmt.Sprintf("%s: no preemption or standing queue up to concurrency %d, the cap (--max-concurrency); C* = %d, so the onset is above the tested range.",
				name, p.Levels[len(p.Levels)-1].Concurrency, cs))
		case len(p.Levels) > 0:
			out = append(out, fmt.Sprintf("%s: no preemption or standing queue up to concurrency %d (%.2f × C* = %d): the engine held more than predicted, or the load never filled the cache (see TTFT and errors).",
				name, p.Levels[len(p.Levels)-1].Concurrency, float64(p.Levels[len(p.Levels)-1].Concurrency)/float64(max(cs, 1)), cs))
		}
		for _, l := range p.Levels {
			if !l.Onset && !l.Inconclusive && l.WaitingFrac != nil && *l.WaitingFrac >= KVQueueFraction && l.QueuedSamples >= KVQueueSamples && l.KVUsageMax != nil && *l.KVUsageMax < KVFullUsage {
				out = append(out, fmt.Sprintf("%s: at concurrency %d requests queued while the KV cache was at most %.0f%% full: another limit (the prefill token budget per step for %d-token prompts), not KV capacity, so it is not the onset.",
					name, l.Concurrency, *l.KVUsageMax*100, p.Plan.PromptLen))
			}
			if l.Inconclusive {
				out = append(out, fmt.Sprintf("%s: the step at concurrency %d could not tell a standing queue from its opening burst (its warm-up was shorter than its requests, or no measured request finished), so it was run again with a warm-up sized from it.", name, l.Concurrency))
			}
		}
		// TTFT growth from the first step to the onset step.
		if n := len(p.Levels); n > 1 {
			a, b := p.Levels[0], p.Levels[n-1]
			pa, oka := b2s(a.Metrics, hdr.TTFT)
			pb2, okb := b2s(b.Metrics, hdr.TTFT)
			if oka && okb && pa > 0 {
				out = append(out, fmt.Sprintf("%s: TTFT p95 goes from %.1f ms at concurrency %d to %.1f ms at %d (%.1f×).", name, pa, a.Concurrency, pb2, b.Concurrency, pb2/pa))
			}
		}
		if p.MaxNumSeqs != nil && len(p.Levels) > 0 && p.Levels[len(p.Levels)-1].Concurrency > *p.MaxNumSeqs {
			out = append(out, fmt.Sprintf("%s: concurrency above max_num_seqs %d queues for sequence slots, not KV blocks.", name, *p.MaxNumSeqs))
		}
	}
	if res.Simulated {
		out = append(out, "These figures come from ttftlab's simulated vLLM engine (a performance model), not from a real GPU.")
	}
	if res.StartupScale != 0 && res.StartupScale != 1 {
		out = append(out, fmt.Sprintf("The simulated engine's startup durations were scaled by %g (--startup-scale, a test hook) to keep the restarts short; startup times here are not realistic.", res.StartupScale))
	}
	return out
}

// b2s returns a metric's p95, when it holds values.
func b2s(m map[string]hdr.Summary, name string) (float64, bool) {
	s, ok := m[name]
	if !ok || s.Count == 0 {
		return 0, false
	}
	return s.P95, true
}

// renderKVScalePlot plots TTFT p95 against concurrency as a multiple of
// each point's C* on a log axis, one curve per started point, with 1 × C*
// (the predicted capacity) as a reference line.
func renderKVScalePlot(res *KVScaleResults) string {
	ticks := append([]float64(nil), KVScaleFactors[:]...)
	var curves []plot.Curve
	for _, p := range res.Points {
		if p.Plan == nil || p.Plan.CStar == nil || *p.Plan.CStar <= 0 || len(p.Levels) == 0 {
			continue
		}
		var xs, ys []float64
		var labels []string
		for _, l := range p.Levels {
			v, ok := b2s(l.Metrics, hdr.TTFT)
			if !ok {
				v = math.NaN()
			}
			xs = append(xs, float64(l.Concurrency)/float64(*p.Plan.CStar))
			ys = append(ys, v)
			labels = append(labels, fmt.Sprintf("c=%d", l.Concurrency))
		}
		curves = append(curves, plot.Curve{Name: fmt.Sprintf("len %d, util %g (C*=%d)", p.MaxModelLen, p.GPUMemoryUtilization, *p.Plan.CStar), X: xs, Y: ys, Points: true, Labels: labels})
	}
	return plot.Chart{
		ID:     "kv-cache-scaling",
		Title:  "TTFT p95 vs concurrency relative to the predicted capacity C*",
		X:      plot.Axis{Title: "concurrency / C*", Unit: "log scale", Scale: plot.Log, Ticks: ticks},
		VLines: []plot.VLine{{X: 1, Label: "C* (predicted KV capacity)", Color: "#D55E00", Dash: "6 3"}},
		Panels: []plot.Panel{{Y: plot.Axis{Title: "TTFT p95", Unit: "ms", FromZero: true}, Curves: curves, Missing: "no point measured a level"}},
	}.SVG()
}

// RenderKVScaleMarkdown renders kv_cache_scaling.md.
func RenderKVScaleMarkdown(res *KVScaleResults) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# KV cache scaling\n\n")
	if res.Simulated {
		p("> **Simulated engine.** These numbers come from `ttftlab sim`, a performance model of vLLM, not from a real GPU.\n\n")
	}
	if res.StartupScale != 0 && res.StartupScale != 1 {
		p("> **Test hook:** the simulated startup was scaled by %g (`--startup-scale`) to keep the restarts short.\n\n", res.StartupScale)
	}
	p("Run `%s`, status **%s**; profile `%s`, %s API.\n\n", res.RunID, res.Status, res.Profile, res.API)
	if res.Error != "" {
		p("**The run failed:** %s\n\n", sanitizeOneLine(res.Error))
	}
	p("Each point restarts the engine with its `--max-model-len` and `--gpu-memory-utilization`, compares the KV figures of its startup log with `internal/kvcalc`, then raises the closed-loop concurrency of prompts of max_model_len/2 tokens and %d output tokens (each step %.1f s measured after at least %.1f s of warm-up, longer when sized from the step before) through C* × %v until `vllm:num_preemptions_total` rises or `vllm:num_requests_waiting` is above 0 in at least a quarter (and two) of the step's measured samples with the KV cache at least 90%% full. C* = ⌊(num_gpu_blocks − 1) / ⌈(P + O − 1)/16⌉⌋ is the concurrency of these requests that fits in the KV cache; the log's maximum concurrency is for full max_model_len requests.\n\n",
		res.Params.OutputLen, res.Params.LevelDurationS, res.Params.WarmupS, res.Params.Factors)

	p("## Capacity: reported against predicted\n\n")
	p("| max_model_len | gpu_mem_util | status | KV tokens reported | KV tokens predicted | diff | max conc. reported | max conc. predicted | prediction from | C* | onset | onset vs C* |\n")
	p("|---:|---:|---|---:|---:|---:|---:|---:|---|---:|---:|---:|\n")
	for _, pt := range res.Points {
		cstar, onset := "n/a", "n/a"
		if pt.Plan != nil && pt.Plan.CStar != nil {
			cstar = strconv.Itoa(*pt.Plan.CStar)
			if pt.Plan.Capped && pt.Onset == nil && len(pt.Levels) > 0 {
				onset = "above tested range"
			} else if pt.Onset == nil && len(pt.Levels) > 0 {
				onset = "none seen"
			}
		}
		if pt.Onset != nil {
			onset = fmt.Sprintf("%d (%s)", *pt.Onset, pt.OnsetKind)
		}
		src := pt.Prediction.Source
		if src == "" {
			src = "none"
		}
		p("| %d | %g | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", pt.MaxModelLen, pt.GPUMemoryUtilization, pt.Status,
			na(int64Cell(pt.KVTokensReported)), na(intCell(pt.Prediction.KVTokens)), fmtPtr(pt.KVTokensDiffPct, "%+.2f%%"),
			fmtPtr(pt.MaxConcurrencyReported, "%.2f×"), fmtPtr(pt.Prediction.MaxConcurrency, "%.2f×"), src, cstar, onset, fmtPtr(pt.OnsetVsCStarPct, "%+.0f%%"))
	}
	for _, pt := range res.Points {
		if pt.Status == PointRefused {
			p("\n**max_model_len %d, gpu_memory_utilization %g: the engine refused to start.** %s\n", pt.MaxModelLen, pt.GPUMemoryUtilization, firstLines(pt.Error, 3))
			if pt.Prediction.Refusal != "" {
				p("kvcalc predicted it: %s\n", sanitizeOneLine(pt.Prediction.Refusal))
			}
		}
	}

	p("\n## Concurrency steps\n\n")
	p("| %s |\n|%s\n", strings.Join(KVScaleColumns, " | "), strings.Repeat("---:|", len(KVScaleColumns)))
	rows, err := RenderKVScaleCSV(res)
	if err == nil {
		recs, _ := csv.NewReader(bytes.NewReader(rows)).ReadAll()
		for _, r := range recs[1:] {
			cells := make([]string, len(r))
			for i, c := range r {
				cells[i] = na(c)
			}
			p("| %s |\n", strings.Join(cells, " | "))
		}
	}
	p("\nLatencies in ms, merged losslessly over the agents' HdrHistograms; warm-up excluded. `preemptions` is the rise of `vllm:num_preemptions_total` over the step, `waiting_max` the largest `vllm:num_requests_waiting` scraped; n/a is not measured.\n\n")
	p("![TTFT p95 vs concurrency / C*](%s)\n\n", KVScaleSVG)
	p("## Observations\n\n")
	for _, o := range res.Observations {
		p("- %s\n", o)
	}
	for _, w := range res.Warnings {
		p("- Warning: %s\n", w)
	}
	return b.String()
}

// firstLines keeps the first n lines of s, one-lined for a table or list.
func firstLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = append(lines[:n], "…")
	}
	return "`" + strings.ReplaceAll(sanitizeOneLine(strings.Join(lines, " ")), "`", "'") + "`"
}
