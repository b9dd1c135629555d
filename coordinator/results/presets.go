package results

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/plot"
	"github.com/ttftlab/ttftlab/internal/vllmflag"
)

// ExperimentPresets names the presets grid in grid_start.
const ExperimentPresets = "presets"

// Files a presets run writes next to events.jsonl.
const (
	PresetsCSV           = "presets.csv"
	PresetsReport        = "presets.md"
	PresetsTTFTSVG       = "presets_ttft.svg"
	PresetsThroughputSVG = "presets_throughput.svg"
	PresetsParetoSVG     = "presets_pareto.svg"
)

// Preset names.
const (
	PresetInteractive = "interactive"
	PresetThroughput  = "throughput"
)

// PresetsColumns are presets.csv's columns, in order.
var PresetsColumns = []string{"max_num_batched_tokens", "max_num_seqs", "chunked_prefill", "max_model_len", "point_status",
	"concurrency", "requests", "successes", "ttft_p50_ms", "ttft_p95_ms", "tpot_p50_ms", "itl_p95_ms", "output_tokens_per_s",
	"request_throughput", "preemptions", "waiting_max", "samples", "meets_slo", "under_max_ttft"}

// PresetsParams is the presets part of grid_start: the grid, the workload
// and the two latency bounds the presets are chosen by.
type PresetsParams struct {
	Model               string  `json:"model,omitempty"`
	MaxNumBatchedTokens []int   `json:"max_num_batched_tokens"`
	MaxNumSeqs          []int   `json:"max_num_seqs"`
	ChunkedPrefill      []bool  `json:"chunked_prefill"`
	MaxModelLen         int     `json:"max_model_len"`
	Concurrencies       []int   `json:"concurrencies"`
	InputLen            int     `json:"input_len"`
	InputLenMin         int     `json:"input_len_min"`
	InputLenMax         int     `json:"input_len_max"`
	OutputLen           int     `json:"output_len"`
	SLOTTFTMs           float64 `json:"slo_ttft_ms"`
	MaxTTFTMs           float64 `json:"max_ttft_ms"`
	LevelDurationS      float64 `json:"level_duration_s"`
	WarmupS             float64 `json:"warmup_s"`
	// Points are the grid's points in run order, each with the refusal
	// vLLM's configuration check predicts for it ("" when it should start).
	Points []PresetsPointSpec `json:"points"`
}

// PresetsPointSpec is one point of the presets grid.
type PresetsPointSpec struct {
	MaxNumBatchedTokens int    `json:"max_num_batched_tokens"`
	MaxNumSeqs          int    `json:"max_num_seqs"`
	ChunkedPrefill      bool   `json:"chunked_prefill"`
	ExpectedRefusal     string `json:"expected_refusal,omitempty"`
}

// PresetsPlan is a started point's schedule, recorded in grid_point_ready.
type PresetsPlan struct {
	Concurrencies []int `json:"steps"`
}

// PresetsResults is results.json of a presets run, built from events.jsonl
// alone.
type PresetsResults struct {
	GridRun
	Params       PresetsParams `json:"params"`
	Node         NodeFacts     `json:"node"`
	Points       []PresetPoint `json:"points"`
	Interactive  Preset        `json:"interactive"`
	Throughput   Preset        `json:"throughput"`
	Observations []string      `json:"observations"`
	Warnings     []string      `json:"warnings,omitempty"`
}

// PresetPoint is one grid point of a presets run.
type PresetPoint struct {
	Point               int      `json:"point"`
	Label               string   `json:"label"`
	MaxNumBatchedTokens int      `json:"max_num_batched_tokens"`
	MaxNumSeqs          int      `json:"max_num_seqs"`
	ChunkedPrefill      bool     `json:"chunked_prefill"`
	MaxModelLen         int      `json:"max_model_len"`
	Status              string   `json:"status"`
	Error               string   `json:"error,omitempty"`
	ExpectedRefusal     string   `json:"expected_refusal,omitempty"`
	ReadyS              *float64 `json:"ready_s"`
	// Flags are the point's engine flags as `vllm serve` takes them.
	Flags  string        `json:"vllm_flags"`
	Levels []PresetLevel `json:"levels"`
}

// PresetLevel is one concurrency of a point.
type PresetLevel struct {
	Level        int                    `json:"level"`
	Concurrency  int                    `json:"concurrency"`
	Status       string                 `json:"status"`
	Error        string                 `json:"error,omitempty"`
	Requests     uint64                 `json:"requests"`
	Successes    uint64                 `json:"successes"`
	Errors       uint64                 `json:"errors"`
	TokensPerS   *float64               `json:"output_tokens_per_s"`
	RequestsPerS *float64               `json:"request_throughput"`
	Metrics      map[string]hdr.Summary `json:"metrics_ms"`
	Preemptions  *float64               `json:"preemptions"`
	WaitingMax   *float64               `json:"waiting_max"`
	// Insufficient marks a level with too few samples for its percentiles
	// (docs/metrics.md, "Enough samples"); such a level is never a preset.
	Insufficient        bool     `json:"insufficient"`
	InsufficientReasons []string `json:"insufficient_reasons,omitempty"`
	// MeetsSLO is TTFT p95 ≤ slo_ttft_ms and UnderMaxTTFT TTFT p95 ≤
	// max_ttft_ms; nil when no TTFT was measured.
	MeetsSLO     *bool `json:"meets_slo"`
	UnderMaxTTFT *bool `json:"under_max_ttft"`
	// Eligible says the level may be a preset: it completed (status ok),
	// measured TTFT and throughput, and has enough samples.
	Eligible bool   `json:"eligible"`
	Why      string `json:"ineligible_reason,omitempty"`
}

// Preset is one recommendation, or the reason there is none.
type Preset struct {
	Name string `json:"name"`
	// Rule is how it was chosen, e.g. "highest output tokens/s with TTFT
	// p95 ≤ 500 ms".
	Rule  string `json:"rule"`
	Found bool   `json:"found"`
	// Reason says why there is no preset.
	Reason              string   `json:"reason,omitempty"`
	Point               *int     `json:"point"`
	Label               string   `json:"label,omitempty"`
	MaxNumBatchedTokens int      `json:"max_num_batched_tokens,omitempty"`
	MaxNumSeqs          int      `json:"max_num_seqs,omitempty"`
	ChunkedPrefill      bool     `json:"chunked_prefill"`
	MaxModelLen         int      `json:"max_model_len,omitempty"`
	Flags               string   `json:"vllm_flags,omitempty"`
	Command             string   `json:"vllm_command,omitempty"`
	Concurrency         int      `json:"concurrency,omitempty"`
	TTFTP50Ms           *float64 `json:"ttft_p50_ms"`
	TTFTP95Ms           *float64 `json:"ttft_p95_ms"`
	TPOTP50Ms           *float64 `json:"tpot_p50_ms"`
	ITLP95Ms            *float64 `json:"itl_p95_ms"`
	TokensPerS          *float64 `json:"output_tokens_per_s"`
	RequestsPerS        *float64 `json:"request_throughput"`
	Requests            uint64   `json:"requests,omitempty"`
	// Candidates is how many (point, concurrency) pairs met the bound.
	Candidates int `json:"candidates"`
}

// VLLMFlags renders knobs as `vllm serve` flags, in a fixed order: every
// knob that was set, so that the flags are exactly what ran. The model is
// the command's positional argument and the simulator's GPU is not a vLLM
// flag, so neither is included.
func VLLMFlags(k *pb.EngineKnobs) string {
	tri := func(v pb.OptionalBool) *bool {
		switch v {
		case pb.OptionalBool_OPTIONAL_BOOL_TRUE:
			return boolPtr(true)
		case pb.OptionalBool_OPTIONAL_BOOL_FALSE:
			return boolPtr(false)
		}
		return nil
	}
	args := vllmflag.Knobs{MaxModelLen: int(k.GetMaxModelLen()), MaxNumBatchedTokens: int(k.GetMaxNumBatchedTokens()),
		MaxNumSeqs: int(k.GetMaxNumSeqs()), EnableChunkedPrefill: tri(k.GetEnableChunkedPrefill()),
		GPUMemoryUtilization: k.GetGpuMemoryUtilization(), EnablePrefixCaching: tri(k.GetEnablePrefixCaching()),
		EnforceEager: k.GetEnforceEager() == pb.OptionalBool_OPTIONAL_BOOL_TRUE, ServedModelName: k.GetServedModelName()}.Args()
	return strings.Join(args, " ")
}

// presetsSettings lists a presets run's settings for its report.
func presetsSettings(pr PresetsParams) []Setting {
	onOffs := make([]string, len(pr.ChunkedPrefill))
	for i, c := range pr.ChunkedPrefill {
		onOffs[i] = onOff(c)
	}
	return []Setting{
		{"max_num_batched_tokens", joinInts(pr.MaxNumBatchedTokens)},
		{"max_num_seqs", joinInts(pr.MaxNumSeqs)},
		{"chunked prefill", strings.Join(onOffs, ", ")},
		{"max_model_len", strconv.Itoa(pr.MaxModelLen)},
		{"concurrency", joinInts(pr.Concurrencies)},
		{"prompt tokens", fmt.Sprintf("%d–%d (uniform, mean %d)", pr.InputLenMin, pr.InputLenMax, pr.InputLen)},
		{"output tokens", strconv.Itoa(pr.OutputLen)},
		{"step", fmt.Sprintf("%s measured after %s of warm-up", HumanMs(pr.LevelDurationS*1000), HumanMs(pr.WarmupS*1000))},
		{"TTFT p95 SLO (interactive)", fmt.Sprintf("%g ms", pr.SLOTTFTMs)},
		{"TTFT p95 bound (throughput)", fmt.Sprintf("%g ms", pr.MaxTTFTMs)},
	}
}

// joinInts writes a list of numbers as "8, 32, 64".
func joinInts(vs []int) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = strconv.Itoa(v)
	}
	return strings.Join(s, ", ")
}

// onOff names a chunked-prefill setting.
func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// BuildPresets turns a presets grid's events into PresetsResults. The
// levels' latencies are the sweep's lossless merge of the agents'
// histograms (BuildSweep), and the presets are chosen from them.
func BuildPresets(events []Event) (*PresetsResults, error) {
	res := &PresetsResults{Points: []PresetPoint{}}
	r, err := newGridRun(events)
	if err != nil {
		return nil, err
	}
	err = r.walk(events, gridHandlers{
		Start: func(i int) error {
			d := r.Start
			if d.Experiment != ExperimentPresets {
				return fmt.Errorf("event %d: grid experiment %q is not %q", i+1, d.Experiment, ExperimentPresets)
			}
			var params PresetsParams
			if err := json.Unmarshal(d.Params, &params); err != nil {
				return fmt.Errorf("event %d: presets params: %w", i+1, err)
			}
			if len(params.Points) != len(d.Points) {
				return fmt.Errorf("event %d: grid_start has %d points and %d point specs", i+1, len(d.Points), len(params.Points))
			}
			if !(params.SLOTTFTMs > 0) || !(params.MaxTTFTMs > 0) || math.IsInf(params.SLOTTFTMs, 0) || math.IsInf(params.MaxTTFTMs, 0) {
				return fmt.Errorf("event %d: slo_ttft_ms %g / max_ttft_ms %g: both must be positive", i+1, params.SLOTTFTMs, params.MaxTTFTMs)
			}
			res.Params = params
			for j, p := range d.Points {
				k, ps := r.Knobs[j], params.Points[j]
				res.Points = append(res.Points, PresetPoint{Point: j, Label: p.Label, MaxNumBatchedTokens: ps.MaxNumBatchedTokens,
					MaxNumSeqs: ps.MaxNumSeqs, ChunkedPrefill: ps.ChunkedPrefill, MaxModelLen: int(k.GetMaxModelLen()),
					ExpectedRefusal: ps.ExpectedRefusal, Flags: VLLMFlags(k), Levels: []PresetLevel{}})
			}
			return nil
		},
		Level: func(_ int, d LevelObservation) error {
			l := PresetLevel{Level: d.Level, Concurrency: d.Concurrency, Status: "not measured", Error: d.Error,
				Metrics: map[string]hdr.Summary{}, Preemptions: d.Preemptions, WaitingMax: d.WaitingMax}
			if lr, ok := r.Levels[d.Level]; ok {
				l.Status, l.Requests, l.Successes, l.Errors = lr.Status, lr.Requests, lr.Successes, lr.Errors
				l.TokensPerS, l.RequestsPerS, l.Metrics = lr.TokensPerS, lr.RequestsPerS, lr.Metrics
				l.Insufficient, l.InsufficientReasons = lr.Insufficient, lr.InsufficientReasons
				if l.Error == "" {
					l.Error = lr.Error
				}
			}
			judgePresetLevel(&l, res.Params)
			res.Points[d.Point].Levels = append(res.Points[d.Point].Levels, l)
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	res.GridRun, res.Node, res.Warnings = r.head(ExperimentPresets), r.Sweep.Node, r.Sweep.Warnings
	copyPoints(r, res.Points, func(p *PresetPoint) (*string, *string, **float64) { return &p.Status, &p.Error, &p.ReadyS })
	for i := range res.Points {
		p := &res.Points[i]
		for _, l := range p.Levels {
			if l.Status == "failed" && res.Status == StatusOK {
				res.Status, res.Error = StatusFailed, fmt.Sprintf("%s, concurrency %d failed: %s", p.Label, l.Concurrency, l.Error)
			}
		}
	}
	res.Interactive = choosePreset(res, PresetInteractive, res.Params.SLOTTFTMs, "--slo-ttft-ms")
	res.Throughput = choosePreset(res, PresetThroughput, res.Params.MaxTTFTMs, "--max-ttft-ms")
	res.Observations = presetsObservations(res)
	return res, nil
}

// metric returns one statistic of a level's metric, when it holds values.
func metric(m map[string]hdr.Summary, name string, f func(hdr.Summary) float64) *float64 {
	s, ok := m[name]
	if !ok || s.Count == 0 {
		return nil
	}
	return ptr(f(s))
}

func p50(s hdr.Summary) float64 { return s.P50 }
func p95(s hdr.Summary) float64 { return s.P95 }

// judgePresetLevel sets a level's SLO verdicts and eligibility.
func judgePresetLevel(l *PresetLevel, params PresetsParams) {
	t := metric(l.Metrics, hdr.TTFT, p95)
	if t != nil {
		l.MeetsSLO = boolPtr(*t <= params.SLOTTFTMs)
		l.UnderMaxTTFT = boolPtr(*t <= params.MaxTTFTMs)
	}
	switch {
	case l.Status != StatusOK:
		l.Why = fmt.Sprintf("status %s", l.Status)
		if l.Error != "" {
			l.Why += ": " + l.Error
		}
	case t == nil:
		l.Why = "no TTFT measured"
	case l.TokensPerS == nil:
		l.Why = "no throughput measured"
	case l.Insufficient:
		l.Why = "too few samples: " + strings.Join(l.InsufficientReasons, "; ")
	default:
		l.Eligible = true
	}
}

func boolPtr(b bool) *bool { return &b }

// choosePreset picks the eligible (point, concurrency) with the highest
// output tokens/s whose TTFT p95 is at most bound (ties: the lower TTFT
// p95, then the earlier point and lower concurrency); none when no level
// meets it, with the reason.
func choosePreset(res *PresetsResults, name string, bound float64, flag string) Preset {
	pr := Preset{Name: name, Rule: fmt.Sprintf("highest output tokens/s with TTFT p95 ≤ %g ms (%s), among measurements with enough samples", bound, flag)}
	type cand struct {
		p *PresetPoint
		l *PresetLevel
	}
	var best *cand
	var eligible, thinMeeting, closest int
	var closestTTFT *float64
	for i := range res.Points {
		p := &res.Points[i]
		for j := range p.Levels {
			l := &p.Levels[j]
			t := metric(l.Metrics, hdr.TTFT, p95)
			if t == nil {
				continue
			}
			if !l.Eligible {
				if *t <= bound {
					thinMeeting++
				}
				continue
			}
			eligible++
			if closestTTFT == nil || *t < *closestTTFT {
				closestTTFT, closest = t, l.Concurrency
			}
			if *t > bound {
				continue
			}
			pr.Candidates++
			c := &cand{p, l}
			if best == nil {
				best = c
				continue
			}
			bt, ct := *best.l.TokensPerS, *l.TokensPerS
			if ct > bt || (ct == bt && *t < *metric(best.l.Metrics, hdr.TTFT, p95)) {
				best = c
			}
		}
	}
	if best == nil {
		switch {
		case eligible == 0 && thinMeeting > 0:
			pr.Reason = fmt.Sprintf("no measurement has enough samples to judge; %d thin one(s) had TTFT p95 ≤ %g ms but are not eligible: lengthen --step-duration", thinMeeting, bound)
		case eligible == 0:
			pr.Reason = "no measurement has enough samples to judge (every point was refused, failed or measured too few requests)"
		default:
			pr.Reason = fmt.Sprintf("no point meets TTFT p95 ≤ %g ms: the lowest TTFT p95 measured with enough samples was %.1f ms (at concurrency %d); lower the concurrency, shorten the prompts or raise %s", bound, *closestTTFT, closest, flag)
			if thinMeeting > 0 {
				pr.Reason += fmt.Sprintf("; %d thin measurement(s) met it but are not eligible", thinMeeting)
			}
		}
		return pr
	}
	p, l := best.p, best.l
	pr.Found = true
	pr.Point = &p.Point
	pr.Label, pr.MaxNumBatchedTokens, pr.MaxNumSeqs, pr.ChunkedPrefill, pr.MaxModelLen = p.Label, p.MaxNumBatchedTokens, p.MaxNumSeqs, p.ChunkedPrefill, p.MaxModelLen
	pr.Flags = p.Flags
	model := res.Params.Model
	if model == "" {
		model = "MODEL"
	}
	pr.Command = strings.TrimSpace("vllm serve " + model + " " + p.Flags)
	pr.Concurrency, pr.Requests = l.Concurrency, l.Requests
	pr.TTFTP50Ms, pr.TTFTP95Ms = metric(l.Metrics, hdr.TTFT, p50), metric(l.Metrics, hdr.TTFT, p95)
	pr.TPOTP50Ms, pr.ITLP95Ms = metric(l.Metrics, hdr.TPOT, p50), metric(l.Metrics, hdr.ITL, p95)
	pr.TokensPerS, pr.RequestsPerS = l.TokensPerS, l.RequestsPerS
	return pr
}

// RenderPresetsCSV renders presets.csv: one row per point and concurrency
// (one row with an empty concurrency for a point that ran none); a figure
// not measured is an empty cell, never 0.
func RenderPresetsCSV(res *PresetsResults) ([]byte, error) {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	if err := w.Write(PresetsColumns); err != nil {
		return nil, err
	}
	f := func(v *float64, prec int) string {
		if v == nil || math.IsNaN(*v) || math.IsInf(*v, 0) {
			return ""
		}
		return strconv.FormatFloat(*v, 'f', prec, 64)
	}
	yes := func(v *bool) string {
		if v == nil {
			return ""
		}
		if *v {
			return "yes"
		}
		return "no"
	}
	for _, p := range res.Points {
		mml := ""
		if p.MaxModelLen > 0 {
			mml = strconv.Itoa(p.MaxModelLen)
		}
		head := []string{strconv.Itoa(p.MaxNumBatchedTokens), strconv.Itoa(p.MaxNumSeqs), onOff(p.ChunkedPrefill), mml, p.Status}
		if len(p.Levels) == 0 {
			if err := w.Write(append(head, make([]string, len(PresetsColumns)-len(head))...)); err != nil {
				return nil, err
			}
			continue
		}
		for _, l := range p.Levels {
			samples := "ok"
			if l.Insufficient {
				samples = "insufficient"
			}
			if l.Successes == 0 {
				samples = ""
			}
			row := append(append([]string(nil), head...), strconv.Itoa(l.Concurrency), strconv.FormatUint(l.Requests, 10),
				strconv.FormatUint(l.Successes, 10),
				f(metric(l.Metrics, hdr.TTFT, p50), 3), f(metric(l.Metrics, hdr.TTFT, p95), 3),
				f(metric(l.Metrics, hdr.TPOT, p50), 3), f(metric(l.Metrics, hdr.ITL, p95), 3),
				f(l.TokensPerS, 1), f(l.RequestsPerS, 3), f(l.Preemptions, 0), f(l.WaitingMax, 0), samples,
				yes(l.MeetsSLO), yes(l.UnderMaxTTFT))
			if err := w.Write(row); err != nil {
				return nil, err
			}
		}
	}
	w.Flush()
	return b.Bytes(), w.Error()
}

// renderPresets renders a presets grid's results, CSV, plots and report.
func renderPresets(events []Event) (*Rendered, error) {
	res, err := BuildPresets(events)
	if err != nil {
		return nil, fmt.Errorf("build presets results: %w", err)
	}
	csvb, err := RenderPresetsCSV(res)
	if err != nil {
		return nil, err
	}
	ttft, tput, pareto := renderPresetsPlots(res)
	return &Rendered{Presets: res, Report: PresetsReport, Files: map[string][]byte{
		PresetsCSV:           csvb,
		PresetsTTFTSVG:       []byte(ttft),
		PresetsThroughputSVG: []byte(tput),
		PresetsParetoSVG:     []byte(pareto),
		PresetsReport:        []byte(RenderPresetsMarkdown(res)),
	}}, nil
}

// shortLabel names a point compactly for plots and observations.
func (p PresetPoint) shortLabel() string {
	return fmt.Sprintf("budget %d, seqs %d, chunked %s", p.MaxNumBatchedTokens, p.MaxNumSeqs, onOff(p.ChunkedPrefill))
}

// renderPresetsPlots draws the presets charts, one curve per started
// point, the chosen presets ringed and named: TTFT p95 against the
// concurrency (log axis, a tick at each concurrency run) with the
// --slo-ttft-ms and --max-ttft-ms bounds as reference lines; output
// tokens/s against the concurrency; and TTFT p95 against output tokens/s
// (the latency–throughput trade-off of every point and concurrency). A
// chart with nothing measured says "not measured", never a 0 line.
func renderPresetsPlots(res *PresetsResults) (ttft, tput, pareto string) {
	concs := append([]int(nil), res.Params.Concurrencies...)
	for _, p := range res.Points {
		for _, l := range p.Levels {
			if !containsInt(concs, l.Concurrency) {
				concs = append(concs, l.Concurrency)
			}
		}
	}
	sort.Ints(concs)
	xAxis := plot.Axis{Title: "closed-loop concurrency", Unit: "in-flight requests, log scale", Scale: plot.Log}
	for _, c := range concs {
		xAxis.Ticks = append(xAxis.Ticks, float64(c))
		if c <= 0 {
			xAxis.Scale, xAxis.Unit = plot.Linear, "in-flight requests"
		}
	}
	var tc, pc, parc []plot.Curve
	for _, p := range res.Points {
		if len(p.Levels) == 0 {
			continue
		}
		levels := append([]PresetLevel(nil), p.Levels...)
		sort.SliceStable(levels, func(i, j int) bool { return levels[i].Concurrency < levels[j].Concurrency })
		t := plot.Curve{Name: p.shortLabel(), Points: true}
		for _, l := range levels {
			ty := math.NaN()
			if v := metric(l.Metrics, hdr.TTFT, p95); v != nil {
				ty = *v
			}
			label := fmt.Sprintf("c=%d", l.Concurrency)
			if l.Insufficient {
				label += " (too few samples)"
			}
			t.X, t.Y, t.Labels = append(t.X, float64(l.Concurrency)), append(t.Y, ty), append(t.Labels, label)
		}
		tp := t
		tp.Y = nil
		par := plot.Curve{Name: t.Name, Points: true, Labels: t.Labels}
		for i, l := range levels {
			v := math.NaN()
			if l.TokensPerS != nil {
				v = *l.TokensPerS
			}
			tp.Y = append(tp.Y, v)
			par.X, par.Y = append(par.X, v), append(par.Y, t.Y[i])
		}
		tc, pc, parc = append(tc, t), append(pc, tp), append(parc, par)
	}
	var bounds []plot.HLine
	if v := res.Params.SLOTTFTMs; v > 0 {
		bounds = append(bounds, plot.HLine{Y: v, Label: fmt.Sprintf("SLO %g ms (interactive)", v), Color: "#009E73"})
	}
	if v := res.Params.MaxTTFTMs; v > 0 {
		bounds = append(bounds, plot.HLine{Y: v, Label: fmt.Sprintf("max %g ms (throughput)", v), Color: "#D55E00"})
	}
	ttftNotes, tputNotes, paretoNotes := presetNotes(res)
	ttft = plot.Chart{
		ID: "presets-ttft", Title: "TTFT p95 vs concurrency, per engine configuration", X: xAxis,
		Panels: []plot.Panel{{Y: plot.Axis{Title: "TTFT p95", Unit: "ms", FromZero: true}, Curves: tc, HLines: bounds, Notes: ttftNotes, Missing: "no point measured a TTFT"}},
	}.SVG()
	tput = plot.Chart{
		ID: "presets-throughput", Title: "Output tokens/s vs concurrency, per engine configuration", X: xAxis,
		Panels: []plot.Panel{{Y: plot.Axis{Title: "output throughput", Unit: "tokens/s", FromZero: true}, Curves: pc, Notes: tputNotes, Missing: "no point streamed a token"}},
	}.SVG()
	pareto = plot.Chart{
		ID: "presets-pareto", Title: "TTFT p95 vs output throughput (each point a configuration at one concurrency)",
		X:      plot.Axis{Title: "output throughput", Unit: "tokens/s", FromZero: true},
		Panels: []plot.Panel{{Y: plot.Axis{Title: "TTFT p95", Unit: "ms", FromZero: true}, Curves: parc, HLines: bounds, Notes: paretoNotes, Missing: "no level has both a throughput and a TTFT"}},
	}.SVG()
	return ttft, tput, pareto
}

// presetNotes ring the chosen presets on the TTFT, throughput and Pareto
// charts; presets chosen at the same point and concurrency share one note.
func presetNotes(res *PresetsResults) (ttft, tput, pareto []plot.Note) {
	type key struct{ point, conc int }
	var order []key
	names := map[key][]string{}
	vals := map[key]Preset{}
	for _, pr := range []Preset{res.Interactive, res.Throughput} {
		if !pr.Found || pr.Point == nil {
			continue
		}
		k := key{*pr.Point, pr.Concurrency}
		if _, ok := names[k]; !ok {
			order = append(order, k)
			vals[k] = pr
		}
		names[k] = append(names[k], pr.Name)
	}
	for _, k := range order {
		pr := vals[k]
		label := fmt.Sprintf("%s, c=%d", strings.Join(names[k], " + "), k.conc)
		if pr.TTFTP95Ms != nil {
			ttft = append(ttft, plot.Note{X: float64(k.conc), Y: *pr.TTFTP95Ms, Label: label})
		}
		if pr.TokensPerS != nil {
			tput = append(tput, plot.Note{X: float64(k.conc), Y: *pr.TokensPerS, Label: label})
		}
		if pr.TTFTP95Ms != nil && pr.TokensPerS != nil {
			pareto = append(pareto, plot.Note{X: *pr.TokensPerS, Y: *pr.TTFTP95Ms, Label: label})
		}
	}
	return ttft, tput, pareto
}

func containsInt(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

// presetsObservations derives the report's observations from the numbers.
func presetsObservations(res *PresetsResults) []string {
	var out []string
	find := func(budget, seqs int, chunked bool) *PresetPoint {
		for i := range res.Points {
			p := &res.Points[i]
			if p.MaxNumBatchedTokens == budget && p.MaxNumSeqs == seqs && p.ChunkedPrefill == chunked {
				return p
			}
		}
		return nil
	}
	levelAt := func(p *PresetPoint, c int) *PresetLevel {
		for i := len(p.Levels) - 1; i >= 0; i-- { // the last run at c
			if p.Levels[i].Concurrency == c && p.Levels[i].Successes > 0 {
				return &p.Levels[i]
			}
		}
		return nil
	}
	// highestCommon is the highest concurrency both points measured with
	// enough samples, or else the highest both measured at all.
	highestCommon := func(a, b *PresetPoint) (int, *PresetLevel, *PresetLevel) {
		best, bestThin := 0, 0
		var la, lb, ta, tb *PresetLevel
		for _, l := range a.Levels {
			x, y := levelAt(a, l.Concurrency), levelAt(b, l.Concurrency)
			if x == nil || y == nil {
				continue
			}
			if !x.Insufficient && !y.Insufficient && l.Concurrency > best {
				best, la, lb = l.Concurrency, x, y
			}
			if l.Concurrency > bestThin {
				bestThin, ta, tb = l.Concurrency, x, y
			}
		}
		if best == 0 {
			return bestThin, ta, tb
		}
		return best, la, lb
	}
	thin := func(ls ...*PresetLevel) string {
		for _, l := range ls {
			if l.Insufficient {
				return " (a thin measurement: too few samples)"
			}
		}
		return ""
	}
	change := func(name string, a, b *float64, unit string) string {
		if a == nil || b == nil {
			return fmt.Sprintf("%s n/a", name)
		}
		s := fmt.Sprintf("%s %.1f → %.1f%s", name, *a, *b, unit)
		if *a > 0 {
			s += fmt.Sprintf(" (%+.0f%%)", (*b-*a) / *a * 100)
		}
		return s
	}
	// The presets themselves.
	for _, pr := range []Preset{res.Interactive, res.Throughput} {
		if pr.Found {
			out = append(out, fmt.Sprintf("%s preset: %s at concurrency %d gives %.1f output tokens/s with TTFT p95 %.1f ms (%d candidate measurement(s) met the bound).",
				pr.Name, res.Points[*pr.Point].shortLabel(), pr.Concurrency, *pr.TokensPerS, *pr.TTFTP95Ms, pr.Candidates))
		} else {
			out = append(out, fmt.Sprintf("No %s preset: %s.", pr.Name, pr.Reason))
		}
	}
	if a, b := res.Interactive, res.Throughput; a.Found && b.Found && *a.Point == *b.Point {
		if a.Concurrency == b.Concurrency {
			out = append(out, "Both presets are the same measurement: the highest throughput measured already meets the interactive SLO.")
		} else {
			out = append(out, fmt.Sprintf("Both presets use the same engine configuration; they differ only in the client concurrency (%d against %d).", a.Concurrency, b.Concurrency))
		}
	}
	// Chunked prefill on against off at the same budget and seqs.
	for _, p := range res.Points {
		if !p.ChunkedPrefill {
			continue
		}
		q := find(p.MaxNumBatchedTokens, p.MaxNumSeqs, false)
		if q == nil || len(p.Levels) == 0 || len(q.Levels) == 0 {
			continue
		}
		c, on, off := highestCommon(&p, q)
		if c == 0 {
			continue
		}
		out = append(out, fmt.Sprintf("Chunked prefill at budget %d, seqs %d, concurrency %d (off → on): %s, %s, %s, %s%s.",
			p.MaxNumBatchedTokens, p.MaxNumSeqs, c,
			change("TTFT p95", metric(off.Metrics, hdr.TTFT, p95), metric(on.Metrics, hdr.TTFT, p95), " ms"),
			change("ITL p95", metric(off.Metrics, hdr.ITL, p95), metric(on.Metrics, hdr.ITL, p95), " ms"),
			change("TPOT p50", metric(off.Metrics, hdr.TPOT, p50), metric(on.Metrics, hdr.TPOT, p50), " ms"),
			change("output tokens/s", off.TokensPerS, on.TokensPerS, ""), thin(on, off)))
	}
	// The budget: smallest against largest at the same seqs and chunking.
	budgets := append([]int(nil), res.Params.MaxNumBatchedTokens...)
	sort.Ints(budgets)
	if len(budgets) > 1 {
		lo, hi := budgets[0], budgets[len(budgets)-1]
		for _, seqs := range res.Params.MaxNumSeqs {
			for _, ch := range res.Params.ChunkedPrefill {
				a, b := find(lo, seqs, ch), find(hi, seqs, ch)
				if a == nil || b == nil || len(a.Levels) == 0 || len(b.Levels) == 0 {
					continue
				}
				c, la, lb := highestCommon(a, b)
				if c == 0 {
					continue
				}
				out = append(out, fmt.Sprintf("Budget %d → %d (seqs %d, chunked %s, concurrency %d): %s, %s, %s%s.",
					lo, hi, seqs, onOff(ch), c,
					change("TTFT p95", metric(la.Metrics, hdr.TTFT, p95), metric(lb.Metrics, hdr.TTFT, p95), " ms"),
					change("ITL p95", metric(la.Metrics, hdr.ITL, p95), metric(lb.Metrics, hdr.ITL, p95), " ms"),
					change("output tokens/s", la.TokensPerS, lb.TokensPerS, ""), thin(la, lb)))
			}
		}
	}
	// max_num_seqs below the concurrency queues requests for a slot.
	for _, p := range res.Points {
		for _, l := range p.Levels {
			if l.Concurrency > p.MaxNumSeqs && l.Successes > 0 {
				out = append(out, fmt.Sprintf("%s: at concurrency %d, above max_num_seqs %d, at most %[3]d requests run at once and the rest wait for a slot (waiting max %[4]s; TTFT p95 %[5]s ms).",
					p.shortLabel(), l.Concurrency, p.MaxNumSeqs, fmtPtr(l.WaitingMax, "%.0f"), fmtPtr(metric(l.Metrics, hdr.TTFT, p95), "%.1f")))
				break
			}
		}
	}
	// Refusals.
	for _, p := range res.Points {
		switch p.Status {
		case PointRefused:
			exp := "not predicted by vLLM's configuration rules as ttftlab knows them"
			if p.ExpectedRefusal != "" {
				exp = "as expected: " + p.ExpectedRefusal
			}
			out = append(out, fmt.Sprintf("%s: the engine refused to start (%s).", p.shortLabel(), exp))
		case PointOK:
			if p.ExpectedRefusal != "" {
				out = append(out, fmt.Sprintf("%s: the engine started although vLLM's rule predicts a refusal (%s): this engine version does not enforce it.", p.shortLabel(), p.ExpectedRefusal))
			}
		case PointFailed, "interrupted":
			out = append(out, fmt.Sprintf("%s: %s: %s", p.shortLabel(), p.Status, sanitizeOneLine(p.Error)))
		}
	}
	var thinN, total int
	for _, p := range res.Points {
		for _, l := range p.Levels {
			total++
			if l.Insufficient {
				thinN++
			}
		}
	}
	if thinN > 0 {
		out = append(out, fmt.Sprintf("%d of %d measurements had too few samples for their percentiles (marked insufficient) and were not eligible as presets; a longer --step-duration gives them more.", thinN, total))
	}
	if res.Simulated {
		out = append(out, "These figures come from ttftlab's simulated vLLM engine (a performance model), not from a real GPU.")
	}
	if res.StartupScale != 0 && res.StartupScale != 1 {
		out = append(out, fmt.Sprintf("The simulated engine's startup durations were scaled by %g (--startup-scale, a test hook) to keep the restarts short; startup times here are not realistic.", res.StartupScale))
	}
	return out
}

// RenderPresetsMarkdown renders presets.md.
func RenderPresetsMarkdown(res *PresetsResults) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	pr := res.Params
	p("# Engine presets\n\n")
	if res.Simulated {
		p("> **Simulated engine.** These numbers come from `ttftlab sim`, a performance model of vLLM, not from a real GPU.\n\n")
	}
	if res.StartupScale != 0 && res.StartupScale != 1 {
		p("> **Test hook:** the simulated startup was scaled by %g (`--startup-scale`) to keep the restarts short.\n\n", res.StartupScale)
	}
	p("Run `%s`, status **%s**; profile `%s`, %s API", res.RunID, res.Status, res.Profile, res.API)
	if pr.Model != "" {
		p(", model `%s`", pr.Model)
	}
	p(".\n\n")
	if res.Error != "" {
		p("**The run failed:** %s\n\n", sanitizeOneLine(res.Error))
	}
	p("Each point restarts the engine with its `--max-num-batched-tokens` × `--max-num-seqs` × chunked prefill, then runs a closed loop at each concurrency, each step measured after its warm-up. ")
	p("The **interactive** preset is the highest output throughput whose TTFT p95 is at most %g ms; the **throughput** preset the highest whose TTFT p95 is at most %g ms. A measurement with too few samples (docs/metrics.md, \"Enough samples\") is never chosen.\n\n", pr.SLOTTFTMs, pr.MaxTTFTMs)
	p("Settings:\n\n%s\n", renderSettings(presetsSettings(pr)))

	p("## Presets\n\n")
	for _, x := range []Preset{res.Interactive, res.Throughput} {
		p("### %s\n\n", x.Name)
		if !x.Found {
			p("**None.** %s.\n\n", x.Reason)
			continue
		}
		p("```\n%s\n```\n\n", x.Command)
		p("Measured at client concurrency **%d**: %s output tokens/s, %s requests/s; TTFT p50 %s ms, p95 %s ms; TPOT p50 %s ms; ITL p95 %s ms; %d requests. Rule: %s; %d measurement(s) met it.\n\n",
			x.Concurrency, fmtPtr(x.TokensPerS, "%.1f"), fmtPtr(x.RequestsPerS, "%.2f"), fmtPtr(x.TTFTP50Ms, "%.1f"), fmtPtr(x.TTFTP95Ms, "%.1f"),
			fmtPtr(x.TPOTP50Ms, "%.1f"), fmtPtr(x.ITLP95Ms, "%.1f"), x.Requests, x.Rule, x.Candidates)
	}

	p("## Grid points\n\n")
	p("| max_num_batched_tokens | max_num_seqs | chunked prefill | status | ready (s) | vLLM flags |\n|---:|---:|---|---|---:|---|\n")
	for _, pt := range res.Points {
		p("| %d | %d | %s | %s | %s | `%s` |\n", pt.MaxNumBatchedTokens, pt.MaxNumSeqs, onOff(pt.ChunkedPrefill), pt.Status, fmtPtr(pt.ReadyS, "%.1f"), pt.Flags)
	}
	for _, pt := range res.Points {
		if pt.Status == PointRefused {
			p("\n**%s: the engine refused to start.** %s\n", pt.shortLabel(), firstLines(pt.Error, 3))
			if pt.ExpectedRefusal != "" {
				p("Expected: %s\n", sanitizeOneLine(pt.ExpectedRefusal))
			}
		}
	}

	p("\n## Measurements\n\n")
	p("| %s |\n|%s\n", strings.Join(PresetsColumns, " | "), strings.Repeat("---:|", len(PresetsColumns)))
	if rows, err := RenderPresetsCSV(res); err == nil {
		recs, _ := csv.NewReader(bytes.NewReader(rows)).ReadAll()
		for _, r := range recs[1:] {
			cells := make([]string, len(r))
			for i, c := range r {
				cells[i] = na(c)
			}
			p("| %s |\n", strings.Join(cells, " | "))
		}
	}
	p("\nLatencies in ms, merged losslessly over the agents' HdrHistograms; warm-up excluded. `samples` is `insufficient` when a measurement has too few successes or too short a window for its percentiles; `meets_slo` is TTFT p95 ≤ %g ms, `under_max_ttft` TTFT p95 ≤ %g ms; n/a is not measured.\n\n", pr.SLOTTFTMs, pr.MaxTTFTMs)
	p("![TTFT p95 vs concurrency](%s)\n\n![Output tokens/s vs concurrency](%s)\n\n![TTFT p95 vs output tokens/s](%s)\n\n", PresetsTTFTSVG, PresetsThroughputSVG, PresetsParetoSVG)
	p("## Observations\n\n")
	for _, o := range res.Observations {
		p("- %s\n", o)
	}
	for _, w := range res.Warnings {
		p("- Warning: %s\n", w)
	}
	return b.String()
}
