package results

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/plot"
)

// The prefix experiment is a restart grid (grid_start names it "prefix")
// whose points are driven step by step. Besides the grid's events it
// records, before each cold step of the prefix-caching-on point, a
// prefix_reset (the reset and its verification from the metrics), and after
// each step a prefix_step naming the step and the engine's prefix-cache
// counter deltas over it.
const (
	ExperimentPrefix = "prefix"
	EventPrefixReset = "prefix_reset" // PrefixResetCheck
	EventPrefixStep  = "prefix_step"  // PrefixStep
)

// Files a prefix run writes next to events.jsonl.
const (
	PrefixCSV    = "prefix_caching.csv"
	PrefixReport = "prefix_caching.md"
	PrefixSVG    = "prefix_caching.svg"
	// PrefixSpeedupSVG plots speedup against the uncached fraction,
	// PrefixHitRatioSVG TTFT against the hit ratio.
	PrefixSpeedupSVG  = "prefix_speedup.svg"
	PrefixHitRatioSVG = "prefix_hit_ratio.svg"
)

// Prefix step names.
const (
	PrefixSweepLen   = "prefix_len" // cold, repeat and hot at each prefix length
	PrefixSweepRatio = "hit_ratio"  // a closed-loop mix at each hit ratio
	PhaseCold        = "cold"       // after a verified reset: nothing cached
	PhaseRepeat      = "repeat"     // the cold step's prompts again, word for word
	PhaseHot         = "hot"        // the cold step's prefixes with new suffixes
	PhaseMixed       = "mixed"      // hit_ratio of the requests share a warmed prefix
	ModeOn           = "on"
	ModeOff          = "off"
)

// PrefixColumns are prefix_caching.csv's columns, in order.
var PrefixColumns = []string{"mode", "sweep", "prefix_len", "suffix_len", "hit_ratio", "phase", "concurrency", "requests",
	"ttft_p50_ms", "ttft_p95_ms", "uncached_fraction", "cached_tokens_mean", "hit_rate_metric", "speedup_vs_cold", "status"}

// minP95Requests is the fewest requests a step needs for a p95 (1/(1−0.95)).
const minP95Requests = 20

// PrefixParams is the prefix part of grid_start.
type PrefixParams struct {
	PrefixLens     []int     `json:"prefix_lens"`
	SuffixLen      int       `json:"suffix_len"`
	HitRatios      []float64 `json:"hit_ratios"`
	HitPrefixLen   int       `json:"hit_prefix_len"`
	Concurrency    int       `json:"concurrency"`
	Repeats        int       `json:"repeats"`
	OutputLen      int       `json:"output_len"`
	LevelDurationS float64   `json:"level_duration_s"`
	WarmupS        float64   `json:"warmup_s"`
}

// PrefixResetCheck is the payload of prefix_reset: one reset and its
// verification. A probe prompt is sent once (cold), again (hot: it must
// hit), then the cache is reset and the probe sent a third time: a real
// reset makes it miss as the cold one did. With V1 counters the check
// compares the rises of the hits counter; with only V0's hit-rate gauge it
// checks that the hot probe raised the gauge and the one after the reset
// did not.
type PrefixResetCheck struct {
	Point int    `json:"point"`
	Mode  string `json:"mode"`
	// Before names the step the reset prepares.
	Before     string `json:"before"`
	HTTPStatus int    `json:"http_status"`
	Body       string `json:"body,omitempty"`
	// Source is "counters" (V1) or "gauge" (V0), or "" when neither.
	Source      string   `json:"source"`
	ProbeTokens *float64 `json:"probe_tokens"`
	ColdHits    *float64 `json:"cold_hits"`
	HotHits     *float64 `json:"hot_hits"`
	AfterHits   *float64 `json:"after_hits"`
	GaugeCold   *float64 `json:"gauge_cold"`
	GaugeHot    *float64 `json:"gauge_hot"`
	GaugeReset  *float64 `json:"gauge_reset"`
	GaugeAfter  *float64 `json:"gauge_after"`
	Verified    bool     `json:"verified"`
	Error       string   `json:"error,omitempty"`
}

// PrefixStep is the payload of prefix_step: what a step was and the rise
// of the engine's prefix-cache counters over it (nil when the engine has
// no such counters).
type PrefixStep struct {
	Point       int      `json:"point"`
	Mode        string   `json:"mode"`
	Sweep       string   `json:"sweep"`
	Phase       string   `json:"phase"`
	PrefixLen   int      `json:"prefix_len"`
	SuffixLen   int      `json:"suffix_len"`
	HitRatio    *float64 `json:"hit_ratio"`
	Concurrency int      `json:"concurrency"`
	Level       int      `json:"level"`
	Hits        *float64 `json:"hits"`
	Queries     *float64 `json:"queries"`
}

func (s PrefixStep) check() error {
	var errs []error
	if s.Mode != ModeOn && s.Mode != ModeOff {
		errs = append(errs, fmt.Errorf("mode %q is neither on nor off", s.Mode))
	}
	if s.Sweep != PrefixSweepLen && s.Sweep != PrefixSweepRatio {
		errs = append(errs, fmt.Errorf("sweep %q is unknown", s.Sweep))
	}
	switch s.Phase {
	case PhaseCold, PhaseRepeat, PhaseHot, PhaseMixed:
	default:
		errs = append(errs, fmt.Errorf("phase %q is unknown", s.Phase))
	}
	if s.Point < 0 || s.Point >= maxGridPoints || s.PrefixLen < 0 || s.SuffixLen < 0 || s.Concurrency < 0 || s.PrefixLen > 1<<24 || s.SuffixLen > 1<<24 {
		errs = append(errs, fmt.Errorf("point %d, prefix_len %d, suffix_len %d or concurrency %d is out of range", s.Point, s.PrefixLen, s.SuffixLen, s.Concurrency))
	}
	if s.HitRatio != nil && !(*s.HitRatio >= 0 && *s.HitRatio <= 1) {
		errs = append(errs, fmt.Errorf("hit_ratio %v is not in [0, 1]", *s.HitRatio))
	}
	for _, v := range []*float64{s.Hits, s.Queries} {
		if v != nil && (math.IsNaN(*v) || math.IsInf(*v, 0) || *v < 0) {
			errs = append(errs, fmt.Errorf("counter delta %v is not a count", *v))
		}
	}
	return errors.Join(append(errs, checkLevel(s.Level))...)
}

// PrefixResults is results.json of a prefix run, built from events.jsonl
// alone.
type PrefixResults struct {
	GridRun
	Model        string             `json:"model,omitempty"`
	GPU          string             `json:"gpu,omitempty"`
	Params       PrefixParams       `json:"params"`
	Node         NodeFacts          `json:"node"`
	Points       []PrefixPoint      `json:"points"`
	Resets       []PrefixResetCheck `json:"resets"`
	Rows         []PrefixRow        `json:"rows"`
	Observations []string           `json:"observations"`
	Warnings     []string           `json:"warnings,omitempty"`
}

// PrefixPoint is one engine start (prefix caching on or off).
type PrefixPoint struct {
	Point  int      `json:"point"`
	Label  string   `json:"label"`
	Mode   string   `json:"mode"`
	Status string   `json:"status"`
	Error  string   `json:"error,omitempty"`
	ReadyS *float64 `json:"ready_s"`
}

// PrefixRow is one step: one row of prefix_caching.csv.
type PrefixRow struct {
	Mode        string      `json:"mode"`
	Sweep       string      `json:"sweep"`
	PrefixLen   int         `json:"prefix_len"`
	SuffixLen   int         `json:"suffix_len"`
	HitRatio    *float64    `json:"hit_ratio"`
	Phase       string      `json:"phase"`
	Concurrency int         `json:"concurrency"`
	Level       int         `json:"level"`
	Status      string      `json:"status"`
	Error       string      `json:"error,omitempty"`
	Requests    uint64      `json:"requests"`
	Errors      uint64      `json:"errors"`
	TTFT        hdr.Summary `json:"ttft_ms"`
	TTFTP50Ms   *float64    `json:"ttft_p50_ms"`
	TTFTP95Ms   *float64    `json:"ttft_p95_ms"`
	// UncachedFraction is 1 − cached/prompt tokens: from the server's
	// cached_tokens where it sent them (UncachedSource "cached_tokens"),
	// else from the counters' rise over the step ("metrics").
	UncachedFraction *float64 `json:"uncached_fraction"`
	UncachedSource   string   `json:"uncached_source,omitempty"`
	CachedTokensMean *float64 `json:"cached_tokens_mean"`
	// HitRateMetric is hits/queries of the prefix-cache counters over the
	// step (warm-up included).
	HitRateMetric *float64 `json:"hit_rate_metric"`
	// SpeedupVsCold is the TTFT p50 of the step's cold reference (the cold
	// step of its mode and prefix length; for the hit-ratio sweep, its
	// mode's hit ratio 0) over its own.
	SpeedupVsCold *float64 `json:"speedup_vs_cold"`
	// NoisePct is the cold reference's spread 2·(p50 − min) / p50, in %
	// (at least prefixNoiseFloorPct is used): a speedup within it is noise.
	NoisePct *float64 `json:"noise_pct"`
}

// isPrefix reports whether a run's grid_start names the prefix experiment.
func isPrefix(events []Event) bool {
	for _, ev := range events {
		if ev.Kind == EventGridStart {
			var s struct {
				Experiment string `json:"experiment"`
			}
			return json.Unmarshal(ev.Data, &s) == nil && s.Experiment == ExperimentPrefix
		}
	}
	return false
}

func renderPrefix(events []Event) (*Rendered, error) {
	res, err := BuildPrefix(events)
	if err != nil {
		return nil, fmt.Errorf("build prefix results: %w", err)
	}
	csvb, err := RenderPrefixCSV(res)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		PrefixCSV:    csvb,
		PrefixReport: []byte(RenderPrefixMarkdown(res)),
	}
	for name, svg := range renderPrefixPlots(res) {
		files[name] = []byte(svg)
	}
	return &Rendered{Prefix: res, Report: PrefixReport, Files: files}, nil
}

// BuildPrefix turns a prefix run's events into PrefixResults. The steps'
// latencies are the sweep's lossless merge of the agents' histograms
// (BuildSweep).
func BuildPrefix(events []Event) (*PrefixResults, error) {
	res := &PrefixResults{Points: []PrefixPoint{}, Resets: []PrefixResetCheck{}, Rows: []PrefixRow{}}
	type cachedSum struct{ tokens, reqs, ok, prompt uint64 }
	cached := map[int]*cachedSum{}
	r, err := newGridRun(events)
	if err != nil {
		return nil, err
	}
	err = r.walk(events, gridHandlers{
		Start: func(i int) error {
			d := r.Start
			if d.Experiment != ExperimentPrefix {
				return fmt.Errorf("event %d: grid experiment %q is not %q", i+1, d.Experiment, ExperimentPrefix)
			}
			if err := json.Unmarshal(d.Params, &res.Params); err != nil {
				return fmt.Errorf("event %d: prefix params: %w", i+1, err)
			}
			for j, p := range d.Points {
				k := r.Knobs[j]
				mode := ModeOn
				if k.GetEnablePrefixCaching() == pb.OptionalBool_OPTIONAL_BOOL_FALSE {
					mode = ModeOff
				}
				res.GPU = k.GetGpu()
				res.Points = append(res.Points, PrefixPoint{Point: j, Label: p.Label, Mode: mode})
			}
			return nil
		},
		Other: func(i int, ev Event) error {
			switch ev.Kind {
			case EventSweepInterval:
				v, err := Decode(ev)
				if err != nil {
					return nil // BuildSweep has warned about it
				}
				s := v.(SweepInterval)
				if s.Report.GetWarmup() {
					return nil
				}
				c := cached[s.Level]
				if c == nil {
					c = &cachedSum{}
					cached[s.Level] = c
				}
				c.tokens += s.Report.GetCachedTokens()
				c.reqs += s.Report.GetCachedRequests()
				c.prompt += s.Report.GetCachedPromptTokens()
				c.ok += s.Report.GetRequestsOk()
			case EventPrefixReset:
				c, err := decodeJSON[PrefixResetCheck](ev.Data)
				if err != nil {
					return fmt.Errorf("event %d (%s): %w", i+1, ev.Kind, err)
				}
				c.Body, c.Error = sanitizeOneLine(c.Body), sanitizeOneLine(c.Error)
				res.Resets = append(res.Resets, c)
			case EventPrefixStep:
				s, err := decodeJSON[PrefixStep](ev.Data)
				if err == nil {
					err = s.check()
				}
				if err != nil {
					return fmt.Errorf("event %d (%s): %w", i+1, ev.Kind, err)
				}
				row := PrefixRow{Mode: s.Mode, Sweep: s.Sweep, PrefixLen: s.PrefixLen, SuffixLen: s.SuffixLen, HitRatio: s.HitRatio,
					Phase: s.Phase, Concurrency: s.Concurrency, Level: s.Level, Status: "not measured"}
				if l, ok := r.Levels[s.Level]; ok {
					row.Status, row.Error, row.Requests, row.Errors = l.Status, l.Error, l.Requests, l.Errors
					if t, ok := l.Metrics[hdr.TTFT]; ok && t.Count > 0 {
						row.TTFT = t
						row.TTFTP50Ms = ptr(t.P50)
						if t.Count >= minP95Requests {
							row.TTFTP95Ms = ptr(t.P95)
						}
					}
				}
				if s.Hits != nil && s.Queries != nil && *s.Queries > 0 {
					row.HitRateMetric = ptr(min(1, *s.Hits / *s.Queries))
				}
				// vLLM leaves cached_tokens out when nothing was cached: once a
				// request of the step carried it, the others count as 0.
				if c := cached[s.Level]; c != nil && c.reqs > 0 && c.ok > 0 {
					row.CachedTokensMean = ptr(float64(c.tokens) / float64(max(c.ok, c.reqs)))
					if c.prompt > 0 {
						row.UncachedFraction, row.UncachedSource = ptr(max(0, 1-float64(c.tokens)/float64(c.prompt))), "cached_tokens"
					}
				}
				if row.UncachedFraction == nil && row.HitRateMetric != nil {
					row.UncachedFraction, row.UncachedSource = ptr(1-*row.HitRateMetric), "metrics"
				}
				res.Rows = append(res.Rows, row)
			}
			return nil
		},
	})
	if err != nil {
		return nil, err
	}
	res.GridRun, res.Node, res.Warnings, res.Model = r.head(ExperimentPrefix), r.Sweep.Node, r.Sweep.Warnings, r.Model
	copyPoints(r, res.Points, func(p *PrefixPoint) (*string, *string, **float64) { return &p.Status, &p.Error, &p.ReadyS })
	// Speedups against each row's cold reference.
	for i := range res.Rows {
		r := &res.Rows[i]
		ref := prefixColdRef(res.Rows, r)
		if ref == nil || ref.TTFTP50Ms == nil || r.TTFTP50Ms == nil || *r.TTFTP50Ms <= 0 {
			continue
		}
		r.SpeedupVsCold = ptr(*ref.TTFTP50Ms / *r.TTFTP50Ms)
		if *ref.TTFTP50Ms > 0 && ref.TTFT.Count > 1 {
			// Twice the lower half's spread: one slow outlier (a stall
			// of the host) does not widen it.
			r.NoisePct = ptr(2 * (*ref.TTFTP50Ms - ref.TTFT.Min) / *ref.TTFTP50Ms * 100)
		}
	}
	if res.Status == StatusOK {
		for _, c := range res.Resets {
			if !c.Verified {
				res.Status, res.Error = StatusFailed, "prefix-cache reset not verified: "+c.Error
				break
			}
		}
	}
	if res.Status == StatusOK {
		for _, r := range res.Rows {
			if r.Status == "failed" {
				res.Status, res.Error = StatusFailed, fmt.Sprintf("mode %s, %s %s step failed: %s", r.Mode, r.Sweep, r.Phase, r.Error)
				break
			}
		}
	}
	res.Observations = prefixObservations(res)
	return res, nil
}

// prefixSettings lists a prefix run's settings for its report.
func prefixSettings(pr PrefixParams) []Setting {
	ratios := make([]string, len(pr.HitRatios))
	for i, r := range pr.HitRatios {
		ratios[i] = strconv.FormatFloat(r, 'g', -1, 64)
	}
	lens := "none"
	if len(pr.PrefixLens) > 0 {
		lens = joinInts(pr.PrefixLens) + " tokens"
	}
	if len(ratios) == 0 {
		ratios = []string{"none"}
	}
	return []Setting{
		{"prefix lengths", lens},
		{"suffix", fmt.Sprintf("%d tokens", pr.SuffixLen)},
		{"output", fmt.Sprintf("%d tokens", pr.OutputLen)},
		{"requests per cold, repeat and hot step", strconv.Itoa(pr.Repeats)},
		{"hit ratios", strings.Join(ratios, ", ")},
		{"shared prefix of the hit-ratio sweep", fmt.Sprintf("%d tokens", pr.HitPrefixLen)},
		{"hit-ratio concurrency", strconv.Itoa(pr.Concurrency)},
		{"hit-ratio step", fmt.Sprintf("%s measured after %s of warm-up", HumanMs(pr.LevelDurationS*1000), HumanMs(pr.WarmupS*1000))},
	}
}

// prefixColdRef returns the row r's speedup is measured against.
func prefixColdRef(rows []PrefixRow, r *PrefixRow) *PrefixRow {
	for i := range rows {
		c := &rows[i]
		if c.Mode != r.Mode || c.Sweep != r.Sweep {
			continue
		}
		switch r.Sweep {
		case PrefixSweepLen:
			if c.Phase == PhaseCold && c.PrefixLen == r.PrefixLen {
				return c
			}
		case PrefixSweepRatio:
			if c.HitRatio != nil && *c.HitRatio == 0 {
				return c
			}
		}
	}
	return nil
}

// RenderPrefixCSV renders prefix_caching.csv: one row per step; a figure
// not measured is an empty cell, never 0.
func RenderPrefixCSV(res *PrefixResults) ([]byte, error) {
	var b bytes.Buffer
	w := csv.NewWriter(&b)
	if err := w.Write(PrefixColumns); err != nil {
		return nil, err
	}
	f := func(v *float64, prec int) string {
		if v == nil {
			return ""
		}
		return strconv.FormatFloat(*v, 'f', prec, 64)
	}
	for _, r := range res.Rows {
		hr := ""
		if r.HitRatio != nil {
			hr = strconv.FormatFloat(*r.HitRatio, 'g', -1, 64)
		}
		rec := []string{r.Mode, r.Sweep, strconv.Itoa(r.PrefixLen), strconv.Itoa(r.SuffixLen), hr, r.Phase, strconv.Itoa(r.Concurrency),
			strconv.FormatUint(r.Requests, 10), f(r.TTFTP50Ms, 2), f(r.TTFTP95Ms, 2), f(r.UncachedFraction, 4), f(r.CachedTokensMean, 1),
			f(r.HitRateMetric, 4), f(r.SpeedupVsCold, 2), r.Status}
		if err := w.Write(rec); err != nil {
			return nil, err
		}
	}
	w.Flush()
	return b.Bytes(), w.Error()
}

// findRow returns the first row matching mode, sweep, phase and prefix
// length, or nil.
func findRow(rows []PrefixRow, mode, sweep, phase string, prefixLen int) *PrefixRow {
	for i := range rows {
		r := &rows[i]
		if r.Mode == mode && r.Sweep == sweep && r.Phase == phase && r.PrefixLen == prefixLen {
			return r
		}
	}
	return nil
}

// prefixNoiseFloorPct is the least spread a speedup must pass to count:
// below it two medians of a handful of requests are not told apart.
const prefixNoiseFloorPct = 10

// prefixObservations computes the report's observations from the numbers.
func prefixObservations(res *PrefixResults) []string {
	var obs []string
	verified, failed := 0, 0
	var hotHits, afterHits []float64
	for _, c := range res.Resets {
		if c.Verified {
			verified++
			if c.HotHits != nil && c.AfterHits != nil {
				hotHits, afterHits = append(hotHits, *c.HotHits), append(afterHits, *c.AfterHits)
			}
		} else {
			failed++
			obs = append(obs, fmt.Sprintf("**Reset not verified** before %s: %s", c.Before, c.Error))
		}
	}
	if verified > 0 {
		s := fmt.Sprintf("%d of %d prefix-cache resets verified from the metrics", verified, verified+failed)
		if len(hotHits) > 0 {
			s += fmt.Sprintf(": a cached probe hit %g–%g tokens before each reset and %g–%g after it", slices.Min(hotHits), slices.Max(hotHits), slices.Min(afterHits), slices.Max(afterHits))
		}
		obs = append(obs, s+".")
	}
	lens := append([]int(nil), res.Params.PrefixLens...)
	slices.Sort(lens)
	var pays []int
	var noise []string
	for _, l := range lens {
		cold, hot := findRow(res.Rows, ModeOn, PrefixSweepLen, PhaseCold, l), findRow(res.Rows, ModeOn, PrefixSweepLen, PhaseHot, l)
		if cold == nil || hot == nil || hot.SpeedupVsCold == nil {
			continue
		}
		thr := float64(prefixNoiseFloorPct)
		if hot.NoisePct != nil {
			thr = max(thr, *hot.NoisePct)
		}
		gain := (*hot.SpeedupVsCold - 1) * 100
		s := fmt.Sprintf("Prefix %d + suffix %d tokens, caching on: hot TTFT p50 %.1f ms vs cold %.1f ms, %.2f× faster", l, hot.SuffixLen, *hot.TTFTP50Ms, *cold.TTFTP50Ms, *hot.SpeedupVsCold)
		if hot.UncachedFraction != nil && *hot.UncachedFraction > 0 {
			s += fmt.Sprintf(", with %.1f%% of the prompt uncached (%s; if prefill were all of TTFT the ceiling would be %.1f×)", *hot.UncachedFraction*100, hot.UncachedSource, 1 / *hot.UncachedFraction)
		}
		if hot.HitRateMetric != nil {
			s += fmt.Sprintf("; hit rate from the metrics %.1f%%", *hot.HitRateMetric*100)
		}
		obs = append(obs, s+".")
		if gain > thr {
			pays = append(pays, l)
		} else {
			noise = append(noise, fmt.Sprintf("%d (%+.0f%%, noise ±%.0f%%)", l, gain, thr))
		}
	}
	if len(pays) > 0 {
		s := fmt.Sprintf("Caching pays from a prefix of %d tokens on", pays[0])
		if len(noise) > 0 {
			s += "; hot is within noise of cold at prefix " + strings.Join(noise, ", ")
		}
		obs = append(obs, s+".")
	} else if len(noise) > 0 {
		obs = append(obs, "Caching did not pay at any tested prefix length: hot is within noise of cold at "+strings.Join(noise, ", ")+".")
	}
	if n := len(lens); n > 0 {
		l := lens[n-1]
		on, off := findRow(res.Rows, ModeOn, PrefixSweepLen, PhaseHot, l), findRow(res.Rows, ModeOff, PrefixSweepLen, PhaseHot, l)
		if on != nil && off != nil && on.TTFTP50Ms != nil && off.TTFTP50Ms != nil {
			s := fmt.Sprintf("A/B at prefix %d: hot TTFT p50 %.1f ms with caching on, %.1f ms with it off (%.2f×)", l, *on.TTFTP50Ms, *off.TTFTP50Ms, *off.TTFTP50Ms / *on.TTFTP50Ms)
			if off.SpeedupVsCold != nil {
				s += fmt.Sprintf("; off, hot is %.2f× cold", *off.SpeedupVsCold)
			}
			obs = append(obs, s+".")
		}
		rep := findRow(res.Rows, ModeOn, PrefixSweepLen, PhaseRepeat, l)
		if rep != nil && rep.SpeedupVsCold != nil {
			obs = append(obs, fmt.Sprintf("The same %d-token prompt sent again: TTFT p50 %.1f ms, %.2f× faster than cold.", l+rep.SuffixLen, *rep.TTFTP50Ms, *rep.SpeedupVsCold))
		}
	}
	var ratio []string
	for _, r := range res.Rows {
		if r.Mode == ModeOn && r.Sweep == PrefixSweepRatio && r.TTFTP50Ms != nil && r.HitRatio != nil {
			s := fmt.Sprintf("%g → %.1f ms", *r.HitRatio, *r.TTFTP50Ms)
			if r.UncachedFraction != nil {
				s += fmt.Sprintf(" (%.0f%% uncached)", *r.UncachedFraction*100)
			}
			ratio = append(ratio, s)
		}
	}
	if len(ratio) > 0 {
		obs = append(obs, fmt.Sprintf("Hit-ratio sweep at concurrency %d, prefix %d: TTFT p50 %s.", res.Params.Concurrency, res.Params.HitPrefixLen, strings.Join(ratio, ", ")))
	}
	if len(obs) == 0 {
		obs = append(obs, "No step measured both cold and hot: nothing to compare.")
	}
	return obs
}

// renderPrefixPlots draws the prefix experiment's three charts:
//
//   - PrefixSVG: TTFT p50 against the shared-prefix length, cold (with the
//     cold step's min–max spread), repeat and hot with caching on, and hot
//     with caching off. The x axis is linear with a tick at each measured
//     length: the default lengths start at 0, which no log axis can place,
//     and a linear axis keeps the report's hover and zoom exact (zooming
//     resolves the short prefixes).
//   - PrefixSpeedupSVG: each step's speedup over its cold reference against
//     its uncached fraction, with the ceiling 1/uncached that prefill alone
//     would allow and "no speedup" at 1×.
//   - PrefixHitRatioSVG: TTFT p50 and p95 against the hit ratio of the
//     closed-loop sweep, caching on and off.
//
// A chart with nothing measured says "not measured", never a 0 line.
func renderPrefixPlots(res *PrefixResults) map[string]string {
	lens := append([]int(nil), res.Params.PrefixLens...)
	slices.Sort(lens)
	lens = slices.Compact(lens)
	xs := make([]float64, len(lens))
	for i, l := range lens {
		xs[i] = float64(l)
	}
	lenCurve := func(name, mode, phase string, spread bool) plot.Curve {
		c := plot.Curve{Name: name, X: xs, Y: make([]float64, len(lens)), Points: true}
		if spread {
			c.Lo, c.Hi = make([]float64, len(lens)), make([]float64, len(lens))
		}
		for i, l := range lens {
			c.Y[i] = math.NaN()
			if spread {
				c.Lo[i], c.Hi[i] = math.NaN(), math.NaN()
			}
			label := fmt.Sprintf("prefix %d", l)
			if r := findRow(res.Rows, mode, PrefixSweepLen, phase, l); r != nil && r.TTFTP50Ms != nil {
				c.Y[i] = *r.TTFTP50Ms
				label += fmt.Sprintf(", %d requests", r.Requests)
				if spread && r.TTFT.Count > 0 {
					c.Lo[i], c.Hi[i] = r.TTFT.Min, r.TTFT.Max
				}
			}
			c.Labels = append(c.Labels, label)
		}
		return c
	}
	ttft := plot.Chart{
		ID:    "prefix-ttft",
		Title: fmt.Sprintf("TTFT p50 vs shared-prefix length (suffix %d tokens)", res.Params.SuffixLen),
		X:     plot.Axis{Title: "shared-prefix length", Unit: "tokens", Ticks: prefixTicks(xs), FromZero: true},
		Panels: []plot.Panel{{
			Y: plot.Axis{Title: "TTFT p50", Unit: "ms", FromZero: true},
			Curves: []plot.Curve{
				lenCurve("cold, caching on (whisker: min–max)", ModeOn, PhaseCold, true),
				lenCurve("repeat, on", ModeOn, PhaseRepeat, false),
				lenCurve("hot, on", ModeOn, PhaseHot, false),
				lenCurve("hot, caching off", ModeOff, PhaseHot, false),
			},
			Missing: "no prefix-length step measured a TTFT",
		}},
	}

	// Speedup against the uncached fraction: one curve per kind of step,
	// its points in order of the fraction.
	speedCurve := func(name, mode, sweep, phase string) plot.Curve {
		type pt struct {
			x, y  float64
			label string
		}
		var pts []pt
		for _, r := range res.Rows {
			if r.Mode != mode || r.Sweep != sweep || r.Phase != phase || r.UncachedFraction == nil || r.SpeedupVsCold == nil {
				continue
			}
			l := fmt.Sprintf("prefix %d", r.PrefixLen)
			if r.HitRatio != nil {
				l = fmt.Sprintf("hit ratio %g", *r.HitRatio)
			}
			pts = append(pts, pt{x: *r.UncachedFraction, y: *r.SpeedupVsCold, label: l})
		}
		slices.SortStableFunc(pts, func(a, b pt) int { return cmpFloat(a.x, b.x) })
		c := plot.Curve{Name: name, Points: true}
		for _, p := range pts {
			c.X, c.Y, c.Labels = append(c.X, p.x), append(c.Y, p.y), append(c.Labels, p.label)
		}
		return c
	}
	speedCurves := []plot.Curve{
		speedCurve("hot vs cold, on", ModeOn, PrefixSweepLen, PhaseHot),
		speedCurve("repeat vs cold, on", ModeOn, PrefixSweepLen, PhaseRepeat),
		speedCurve("hot vs cold, off", ModeOff, PrefixSweepLen, PhaseHot),
		speedCurve("hit ratio vs 0, on", ModeOn, PrefixSweepRatio, PhaseMixed),
	}
	speed := plot.Panel{
		Y:       plot.Axis{Title: "speedup vs cold", Unit: "×", FromZero: true},
		Curves:  speedCurves,
		Missing: "no step has both an uncached fraction and a speedup",
	}
	if ceiling, ok := prefixCeiling(speedCurves); ok {
		speed.Curves = append(speed.Curves, ceiling)
		speed.HLines = []plot.HLine{{Y: 1, Label: "no speedup"}}
	}
	speedup := plot.Chart{
		ID:     "prefix-speedup",
		Title:  "Speedup over cold vs the uncached fraction of the prompt",
		X:      plot.Axis{Title: "uncached fraction", Unit: "1 − cached/prompt tokens", Pin: true, Min: 0, Max: 1},
		Panels: []plot.Panel{speed},
	}

	ratios := append([]float64(nil), res.Params.HitRatios...)
	slices.Sort(ratios)
	ratios = slices.Compact(ratios)
	ratioCurve := func(name, mode string, p95 bool, style plot.Style) plot.Curve {
		c := plot.Curve{Name: name, X: ratios, Y: make([]float64, len(ratios)), Points: true, Style: style}
		for i, h := range ratios {
			c.Y[i] = math.NaN()
			for _, r := range res.Rows {
				if r.Mode != mode || r.Sweep != PrefixSweepRatio || r.HitRatio == nil || *r.HitRatio != h {
					continue
				}
				if v := r.TTFTP50Ms; !p95 && v != nil {
					c.Y[i] = *v
				}
				if v := r.TTFTP95Ms; p95 && v != nil {
					c.Y[i] = *v
				}
			}
			c.Labels = append(c.Labels, fmt.Sprintf("hit ratio %g", h))
		}
		return c
	}
	p95Style := func(color string) plot.Style {
		return plot.Style{Color: color, Dash: "2 3", Marker: plot.Diamond, Width: 1.5}
	}
	hit := plot.Chart{
		ID:    "prefix-hit-ratio",
		Title: fmt.Sprintf("TTFT vs hit ratio (concurrency %d, shared prefix %d tokens)", res.Params.Concurrency, res.Params.HitPrefixLen),
		X:     plot.Axis{Title: "hit ratio", Unit: "share of requests with the warmed prefix", Pin: true, Min: 0, Max: 1, Ticks: prefixTicks(ratios)},
		Panels: []plot.Panel{{
			Y: plot.Axis{Title: "TTFT", Unit: "ms", FromZero: true},
			Curves: []plot.Curve{
				ratioCurve("p50, caching on", ModeOn, false, plot.Style{Color: plot.Palette[0]}),
				ratioCurve("p50, caching off", ModeOff, false, plot.Style{Color: plot.Palette[1], Dash: "7 3", Marker: plot.Square}),
				ratioCurve("p95, on", ModeOn, true, p95Style(plot.Palette[0])),
				ratioCurve("p95, off", ModeOff, true, p95Style(plot.Palette[1])),
			},
			Missing: "no hit-ratio step measured a TTFT",
		}},
	}
	return map[string]string{PrefixSVG: ttft.SVG(), PrefixSpeedupSVG: speedup.SVG(), PrefixHitRatioSVG: hit.SVG()}
}

// prefixCeiling is the curve 1/uncached — the speedup that prefill alone
// would allow, were TTFT all prefill — over the measured fractions, cut
// where it would rise past 1.5 times the largest measured speedup so that
// it does not flatten the data; ok is false when nothing was measured.
func prefixCeiling(cs []plot.Curve) (plot.Curve, bool) {
	lo, top := math.Inf(1), 0.0
	for _, c := range cs {
		for k, x := range c.X {
			if x > 0 && x <= 1 {
				lo = math.Min(lo, x)
			}
			if y := c.Y[k]; !math.IsNaN(y) && !math.IsInf(y, 0) {
				top = math.Max(top, y)
			}
		}
	}
	if math.IsInf(lo, 1) {
		return plot.Curve{}, false
	}
	lo = math.Max(lo, 1/math.Max(1.5*top, 1))
	c := plot.Curve{Name: "ceiling 1/uncached", Style: plot.Style{Color: "#777777", Dash: "4 4", Marker: plot.Circle, Width: 1.2}}
	const n = 40
	for i := 0; i <= n; i++ {
		x := lo * math.Pow(1/lo, float64(i)/n)
		c.X, c.Y = append(c.X, x), append(c.Y, 1/x)
	}
	return c, true
}

// prefixTicks are x ticks at the measured values, thinned so that no two
// labels collide: a value closer than 1/20 of the range to the last kept
// one is left out, except the largest, which replaces it.
func prefixTicks(vs []float64) []float64 {
	if len(vs) == 0 {
		return nil
	}
	gap := (vs[len(vs)-1] - vs[0]) / 20
	var out []float64
	for i, v := range vs {
		if len(out) > 0 && v-out[len(out)-1] < gap {
			if i != len(vs)-1 || len(out) == 1 {
				continue
			}
			out = out[:len(out)-1]
		}
		out = append(out, v)
	}
	return out
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// RenderPrefixMarkdown renders prefix_caching.md.
func RenderPrefixMarkdown(res *PrefixResults) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# Prefix caching\n\n")
	if res.Simulated {
		p("> **Simulated engine.** These numbers come from `ttftlab sim`, a performance model of vLLM, not from a real GPU.\n\n")
	}
	if res.StartupScale != 0 && res.StartupScale != 1 {
		p("> **Test hook:** the simulated startup was scaled by %g (`--startup-scale`) to keep the restarts short; it does not touch the requests.\n\n", res.StartupScale)
	}
	p("Run `%s`, status **%s**; profile `%s`, model `%s`", res.RunID, res.Status, res.Profile, res.Model)
	if res.GPU != "" {
		p(", simulated GPU `%s`", res.GPU)
	}
	p(", %s API.\n\n", res.API)
	if res.Error != "" {
		p("**The run failed:** %s\n\n", sanitizeOneLine(res.Error))
	}
	pr := res.Params
	p("The engine is started with prefix caching on, then off. At each prefix length three steps run one request at a time: **cold** (each request its own prefix, right after a prefix-cache reset verified from the metrics), **repeat** (the cold prompts again, word for word) and **hot** (the cold prefixes with new suffixes). Then, at each hit ratio, a closed loop in which that fraction of the requests shares one prefix and the rest have their own. TTFT in ms (p50 is the median; p95 needs %d requests).\n\n", minP95Requests)
	p("Settings:\n\n%s\n", renderSettings(prefixSettings(pr)))
	p("## Engine starts\n\n| point | mode | status | ready (s) |\n|---|---|---|---:|\n")
	for _, pt := range res.Points {
		p("| %s | %s | %s | %s |\n", pt.Label, pt.Mode, pt.Status, fmtPtr(pt.ReadyS, "%.2f"))
	}
	for _, pt := range res.Points {
		if pt.Error != "" {
			p("\n**%s:** %s\n", pt.Label, firstLines(pt.Error, 3))
		}
	}
	p("\n## Reset verification\n\n")
	if len(res.Resets) == 0 {
		p("No reset was made.\n\n")
	} else {
		p("| before | HTTP | source | cold probe hits | cached probe hits | hits after reset | verified |\n|---|---:|---|---:|---:|---:|---|\n")
		for _, c := range res.Resets {
			v := "yes"
			if !c.Verified {
				v = "**no**: " + sanitizeOneLine(c.Error)
			}
			p("| %s | %d | %s | %s | %s | %s | %s |\n", c.Before, c.HTTPStatus, na(c.Source), fmtPtr(c.ColdHits, "%g"), fmtPtr(c.HotHits, "%g"), fmtPtr(c.AfterHits, "%g"), v)
		}
		p("\n")
	}
	p("## Steps\n\n")
	p("| %s |\n|%s\n", strings.Join(PrefixColumns, " | "), strings.Repeat("---|", len(PrefixColumns)))
	if rows, err := RenderPrefixCSV(res); err == nil {
		recs, _ := csv.NewReader(bytes.NewReader(rows)).ReadAll()
		for _, r := range recs[1:] {
			cells := make([]string, len(r))
			for i, c := range r {
				cells[i] = na(c)
			}
			p("| %s |\n", strings.Join(cells, " | "))
		}
	}
	p("\n`uncached_fraction` is 1 − cached_tokens/prompt_tokens where the server sent `usage.prompt_tokens_details.cached_tokens`, else 1 − `hit_rate_metric`; `hit_rate_metric` is the rise of `vllm:prefix_cache_hits_total` over that of `vllm:prefix_cache_queries_total` across the step (warm-up included); `speedup_vs_cold` is the cold step's TTFT p50 (for the hit-ratio sweep, hit ratio 0's) over the step's. n/a: not measured.\n\n")
	p("![TTFT vs prefix length](%s)\n\n![Speedup vs uncached fraction](%s)\n\n![TTFT vs hit ratio](%s)\n\n", PrefixSVG, PrefixSpeedupSVG, PrefixHitRatioSVG)
	p("## Observations\n\n")
	for _, o := range res.Observations {
		p("- %s\n", o)
	}
	for _, w := range res.Warnings {
		p("- Warning: %s\n", w)
	}
	return b.String()
}
