package results

import (
	"fmt"
	"math"
	"strings"

	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/plot"
)

// SweepParetoSVG is a sweep's latency against throughput, the knee marked.
const SweepParetoSVG = "sweep_pareto.svg"

// Knee is the sweep level past which more load buys less throughput than
// it costs latency (KneeRule).
type Knee struct {
	// Level is the knee's index in Levels; -1 when no step crossed the rule.
	Level int
	// Reason says why, in a sentence, for the report.
	Reason string
}

// KneeRule states how FindKnee picks the knee, for the reports.
const KneeRule = "the knee is the last level before the first step up in load whose relative rise in TTFT p50 exceeds its relative rise in output throughput (an elasticity above 1: past it, each extra % of throughput costs more than 1 % of latency); levels without both figures are skipped"

// FindKnee applies KneeRule to the levels in order.
func FindKnee(res *SweepResults) Knee {
	type pt struct {
		i       int
		tps, ms float64
	}
	var pts []pt
	for i, l := range res.Levels {
		s, ok := l.Metrics[hdr.TTFT]
		if !ok || s.Count == 0 || l.TokensPerS == nil || *l.TokensPerS <= 0 || s.P50 <= 0 || l.Status == StatusFailed {
			continue
		}
		pts = append(pts, pt{i: i, tps: *l.TokensPerS, ms: s.P50})
	}
	if len(pts) < 2 {
		return Knee{Level: -1, Reason: "no knee: fewer than two levels have both a TTFT p50 and a throughput"}
	}
	for k := 1; k < len(pts); k++ {
		a, b := pts[k-1], pts[k]
		dLat := b.ms/a.ms - 1
		dTps := b.tps/a.tps - 1
		if dLat > dTps && dLat > 0 {
			an, bn := levelName(res, res.Levels[a.i].Value), levelName(res, res.Levels[b.i].Value)
			return Knee{Level: a.i, Reason: fmt.Sprintf("knee at %s: from %s to %s TTFT p50 rose %+.0f%% for %+.0f%% output throughput", an, an, bn, 100*dLat, 100*dTps)}
		}
	}
	return Knee{Level: -1, Reason: "no knee within the levels run: every step up in load gained more throughput than it cost TTFT p50 (try higher levels)"}
}

func levelMetric(l LevelResult, name string, f func(hdr.Summary) float64) float64 {
	s, ok := l.Metrics[name]
	if !ok || s.Count == 0 {
		return math.NaN()
	}
	return f(s)
}

// levelLabel names a level for hover text, with its marks.
func levelLabel(res *SweepResults, l LevelResult) string {
	s := levelName(res, l.Value)
	if l.Insufficient {
		s += " ⚠ insufficient"
	}
	if l.Status == StatusFailed {
		s += " failed"
	} else if l.Degraded {
		s += " degraded"
	}
	return s
}

// renderSweepPlots draws the percentile curves and throughput on a log
// axis of the load levels, and latency against throughput with the knee.
func renderSweepPlots(res *SweepResults) map[string]string {
	if len(res.Levels) == 0 {
		return nil
	}
	var xs, p50, p90, p99, sched99, tps []float64
	var labels []string
	for _, l := range res.Levels {
		xs = append(xs, l.Value)
		labels = append(labels, levelLabel(res, l))
		p50 = append(p50, levelMetric(l, hdr.TTFT, func(s hdr.Summary) float64 { return s.P50 }))
		p90 = append(p90, levelMetric(l, hdr.TTFT, func(s hdr.Summary) float64 { return s.P90 }))
		p99 = append(p99, levelMetric(l, hdr.TTFT, func(s hdr.Summary) float64 { return s.P99 }))
		sched99 = append(sched99, levelMetric(l, hdr.TTFTSched, func(s hdr.Summary) float64 { return s.P99 }))
		if l.TokensPerS != nil {
			tps = append(tps, *l.TokensPerS)
		} else {
			tps = append(tps, math.NaN())
		}
	}
	xAxis := plot.Axis{Title: "concurrency", Unit: "in-flight requests, log scale", Scale: plot.Log, Ticks: xs}
	if !strings.HasPrefix(levelName(res, 1), "c=") {
		xAxis.Title, xAxis.Unit = "request rate", "req/s, log scale"
	}
	allPositive := true
	for _, x := range xs {
		allPositive = allPositive && x > 0
	}
	if !allPositive {
		xAxis.Scale, xAxis.Unit = plot.Linear, strings.TrimSuffix(xAxis.Unit, ", log scale")
	}
	knee := FindKnee(res)
	latency := plot.Panel{
		Y: plot.Axis{Title: "TTFT", Unit: "ms", FromZero: true},
		// p99 last: drawn on top, never hidden under another curve.
		Curves: []plot.Curve{
			{Name: "TTFT p50", X: xs, Y: p50, Points: true, Labels: labels},
			{Name: "TTFT p90", X: xs, Y: p90, Points: true, Labels: labels},
			{Name: "TTFT_sched p99", X: xs, Y: sched99, Points: true, Labels: labels, Style: plot.Style{Color: "#777777", Dash: "2 3", Marker: plot.Diamond, Width: 1.5}},
			{Name: "TTFT p99", X: xs, Y: p99, Points: true, Labels: labels, Style: plot.Style{Color: "#882255", Dash: "7 3", Marker: plot.Triangle, Width: 2.5}},
		},
	}
	if knee.Level >= 0 {
		latency.Notes = []plot.Note{{X: xs[knee.Level], Y: p50[knee.Level], Label: "knee"}}
	}
	out := map[string]string{
		SweepLatencySVG: plot.Chart{ID: "sweep-ttft", Title: "TTFT percentiles by load level", X: xAxis, Panels: []plot.Panel{latency}}.SVG(),
		SweepThroughSVG: plot.Chart{ID: "sweep-throughput", Title: "Output throughput by load level", X: xAxis, Panels: []plot.Panel{{
			Y:       plot.Axis{Title: "output throughput", Unit: "tokens/s", FromZero: true},
			Curves:  []plot.Curve{{Name: "output tokens/s", X: xs, Y: tps, Points: true, Labels: labels}},
			Missing: "no level streamed a token",
		}}}.SVG(),
	}
	pareto := plot.Panel{
		Y: plot.Axis{Title: "TTFT", Unit: "ms", FromZero: true},
		Curves: []plot.Curve{
			{Name: "TTFT p50", X: tps, Y: p50, Points: true, Labels: labels},
			{Name: "TTFT p99", X: tps, Y: p99, Points: true, Labels: labels, Style: plot.Style{Color: "#882255", Dash: "7 3", Marker: plot.Triangle, Width: 2.5}},
		},
		Missing: "no level has both a throughput and a TTFT",
	}
	if knee.Level >= 0 {
		pareto.Notes = []plot.Note{{X: tps[knee.Level], Y: p50[knee.Level], Label: "knee " + levelName(res, xs[knee.Level])}}
	}
	out[SweepParetoSVG] = plot.Chart{ID: "sweep-pareto", Title: "Latency against throughput (each point a load level)",
		X:      plot.Axis{Title: "output throughput", Unit: "tokens/s", FromZero: true},
		Panels: []plot.Panel{pareto}}.SVG()
	return out
}

// upperFirst capitalises a sentence's first letter.
func upperFirst(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
