package results

import (
	"fmt"
	"math"
	"sort"
	"strings"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/plot"
)

// The timeline plots.
const (
	// TimelineSVG is a baseline's cold-start timeline: GPU memory, GPU
	// utilisation and power, engine CPU, page cache and disk reads on one
	// time axis from the engine's spawn, with the phases as bands and the
	// requests (cold_1, warm_n) as lines.
	TimelineSVG = "cold_start_timeline.svg"
	// WarmCDFSVG is the distribution of a baseline's warm TTFTs, with the
	// cold request as a line.
	WarmCDFSVG = "warm_ttft_cdf.svg"
	// SweepTimelineSVG is the host and GPU over a sweep, its levels as bands.
	SweepTimelineSVG = "sweep_timeline.svg"
)

// hostSeries is the samples of a run as curves, on a time axis in seconds
// from t0 (Unix ns).
type hostSeries struct {
	t                  []float64
	gpuMem, gpuUtil    [][]float64 // per GPU
	gpuPower           [][]float64
	gpuIdx             []int32
	engineCPU, cache   []float64
	diskMBs, engineMBs []float64
	nvmlError          string
}

// sampleEvents returns the run's host samples in time order (the gpunode's
// clock, or the event's when the sample has none).
func sampleEvents(events []Event) []timedSample {
	var out []timedSample
	for _, ev := range events {
		if ev.Kind != EventSample {
			continue
		}
		s, err := Decode(ev)
		if err != nil {
			continue // Build reports bad events; the plot leaves them out
		}
		out = append(out, timed(ev, s.(*pb.HostSample)))
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].t < out[j].t })
	return out
}

// maxPlottedGPUs is how many GPUs get their own curve; more are summed
// (memory, power) or averaged (utilisation).
const maxPlottedGPUs = 8

func buildHostSeries(samples []timedSample, t0 int64) hostSeries {
	var h hostSeries
	gpuPos := map[int32]int{}
	for _, ts := range samples {
		for _, g := range ts.s.GetGpus() {
			if _, ok := gpuPos[g.GetIndex()]; !ok && len(gpuPos) < maxPlottedGPUs {
				gpuPos[g.GetIndex()] = len(gpuPos)
				h.gpuIdx = append(h.gpuIdx, g.GetIndex())
			}
		}
		if e := ts.s.GetNvmlError(); e != "" && h.nvmlError == "" {
			h.nvmlError = e
		}
	}
	n := len(samples)
	mk := func() [][]float64 {
		out := make([][]float64, len(h.gpuIdx))
		for i := range out {
			out[i] = nanSlice(n)
		}
		return out
	}
	h.gpuMem, h.gpuUtil, h.gpuPower = mk(), mk(), mk()
	h.engineCPU, h.cache, h.diskMBs, h.engineMBs = nanSlice(n), nanSlice(n), nanSlice(n), nanSlice(n)
	h.t = make([]float64, n)
	for i, ts := range samples {
		s := ts.s
		h.t[i] = float64(ts.t-t0) / 1e9
		for _, g := range s.GetGpus() {
			k, ok := gpuPos[g.GetIndex()]
			if !ok {
				continue
			}
			h.gpuMem[k][i] = float64(g.GetMemoryUsedBytes()) / (1 << 30)
			h.gpuUtil[k][i] = float64(g.GetGpuUtilPercent())
			if g.GetPowerMw() > 0 {
				h.gpuPower[k][i] = float64(g.GetPowerMw()) / 1000
			}
		}
		if c := s.GetEngineCpuPercent(); c >= 0 {
			h.engineCPU[i] = c
		}
		if s.GetPageCacheBytes() > 0 {
			h.cache[i] = float64(s.GetPageCacheBytes()) / (1 << 30)
		}
		if i > 0 {
			prev := samples[i-1]
			dt := float64(ts.t-prev.t) / 1e9
			if dt > 0 {
				// Counters that went backwards (a new engine, a new boot)
				// leave a gap rather than a negative rate.
				if a, b := prev.s.GetDiskReadBytes(), s.GetDiskReadBytes(); b >= a && b > 0 {
					h.diskMBs[i] = float64(b-a) / 1e6 / dt
				}
				if a, b := prev.s.GetEngineReadBytes(), s.GetEngineReadBytes(); b >= a && b > 0 && a > 0 {
					h.engineMBs[i] = float64(b-a) / 1e6 / dt
				}
			}
		}
	}
	return h
}

func nanSlice(n int) []float64 {
	s := make([]float64, n)
	for i := range s {
		s[i] = math.NaN()
	}
	return s
}

// hostPanels are the small multiples of a host timeline.
func (h hostSeries) panels() []plot.Panel {
	noGPU := "no GPU samples"
	if h.nvmlError != "" {
		noGPU = h.nvmlError
	}
	gpuCurves := func(vals [][]float64) []plot.Curve {
		var cs []plot.Curve
		for k, idx := range h.gpuIdx {
			cs = append(cs, plot.Curve{Name: fmt.Sprintf("GPU %d", idx), X: h.t, Y: vals[k]})
		}
		return cs
	}
	return []plot.Panel{
		{Y: plot.Axis{Title: "GPU memory used", Unit: "GiB", FromZero: true}, Curves: gpuCurves(h.gpuMem), Missing: noGPU},
		{Y: plot.Axis{Title: "GPU utilisation", Unit: "%", Pin: true, Min: 0, Max: 100}, Curves: gpuCurves(h.gpuUtil), Missing: noGPU},
		{Y: plot.Axis{Title: "GPU power", Unit: "W", FromZero: true}, Curves: gpuCurves(h.gpuPower), Missing: noGPU},
		{Y: plot.Axis{Title: "engine CPU", Unit: "% of one core", FromZero: true}, Curves: []plot.Curve{{Name: "engine process tree", X: h.t, Y: h.engineCPU}}, Missing: "no engine process sampled"},
		{Y: plot.Axis{Title: "page cache", Unit: "GiB", FromZero: true}, Curves: []plot.Curve{{Name: "host page cache", X: h.t, Y: h.cache}}, Missing: "no page-cache samples"},
		{Y: plot.Axis{Title: "disk reads", Unit: "MB/s", FromZero: true}, Curves: []plot.Curve{{Name: "host block devices", X: h.t, Y: h.diskMBs}, {Name: "engine (read_bytes)", X: h.t, Y: h.engineMBs}}, Missing: "no disk counters sampled"},
	}
}

// notObserved reports whether a phase is a placeholder for something not
// observed (the gpunode says so in its detail), rather than a 0 s phase.
func notObserved(p Phase) bool {
	d := strings.ToLower(p.Detail)
	return strings.HasPrefix(d, "not observed") || strings.HasPrefix(d, "not measured")
}

// baselineTimeline is the cold-start timeline of a baseline: t = 0 is the
// coordinator's first engine_spawn mark (the first sample without one).
func baselineTimeline(events []Event, r *Results) (plot.Chart, bool) {
	samples := sampleEvents(events)
	if len(samples) == 0 {
		return plot.Chart{}, false
	}
	t0 := samples[0].t
	for _, ev := range events {
		if ev.Kind != EventMark {
			continue
		}
		if m, err := Decode(ev); err == nil && m.(Mark).Name == MarkEngineSpawn {
			t0 = ev.T
			break
		}
	}
	c := plot.Chart{
		ID:     "cold-start-timeline",
		Title:  "Cold start: GPU, CPU and page cache from spawn to the last request",
		X:      plot.Axis{Title: "time since engine spawn", Unit: "s"},
		Panels: buildHostSeries(samples, t0).panels(),
	}
	src := r.Engine.Timeline
	if len(src) == 0 {
		src = r.Engine.Phases
	}
	for _, ph := range src {
		if notObserved(ph) || ph.EndS <= ph.StartS {
			continue
		}
		c.Bands = append(c.Bands, plot.Band{X0: ph.StartS, X1: ph.EndS, Label: ph.Name, Detail: strings.TrimSpace(ph.Source + " " + ph.Detail)})
	}
	if r.Engine.ReadyS > 0 {
		c.VLines = append(c.VLines, plot.VLine{X: r.Engine.ReadyS, Label: "ready", Color: "#009E73", Dash: "6 2"})
	}
	// Requests: cold ones and the first and last warm run are labelled;
	// the others are drawn unlabelled, so many warm runs stay readable.
	lastWarm := ""
	for _, run := range r.Runs {
		if strings.Contains(run.Label, "warm_") {
			lastWarm = run.Label
		}
	}
	for _, run := range r.Runs {
		if run.SendUnixNano == 0 {
			continue
		}
		x := float64(run.SendUnixNano-t0) / 1e9
		v := plot.VLine{X: x}
		switch {
		case strings.Contains(run.Label, "cold_"):
			v.Color, v.Label = "#D55E00", run.Label
		case strings.HasSuffix(run.Label, "warm_1") || run.Label == lastWarm:
			v.Label = run.Label
		}
		c.VLines = append(c.VLines, v)
	}
	return c, true
}

// warmCDF is the empirical distribution of the warm runs' TTFT with the
// cold runs as lines; a log axis when cold and warm differ by more than 20×.
func warmCDF(r *Results) (plot.Chart, bool) {
	var warm []float64
	var cold []plot.VLine
	for _, run := range r.Runs {
		if run.Error != "" {
			continue
		}
		ms := run.TTFTS * 1000
		switch {
		case strings.Contains(run.Label, "warm_"):
			warm = append(warm, ms)
		case strings.Contains(run.Label, "cold_"):
			cold = append(cold, plot.VLine{X: ms, Label: fmt.Sprintf("%s %s ms", run.Label, plot.FormatValue(ms)), Color: "#D55E00", Dash: "6 3"})
		}
	}
	if len(warm) == 0 {
		return plot.Chart{}, false
	}
	sort.Float64s(warm)
	ys := make([]float64, len(warm))
	labels := make([]string, len(warm))
	for i := range warm {
		ys[i] = 100 * float64(i+1) / float64(len(warm))
		labels[i] = fmt.Sprintf("%d of %d runs ≤ %s ms", i+1, len(warm), plot.FormatValue(warm[i]))
	}
	// Start the steps at 0 % just left of the fastest run.
	xs := append([]float64{warm[0]}, warm...)
	ys = append([]float64{0}, ys...)
	labels = append([]string{"0 runs faster"}, labels...)
	x := plot.Axis{Title: "TTFT", Unit: "ms", FromZero: true}
	lo, hi := warm[0], warm[len(warm)-1]
	for _, c := range cold {
		lo, hi = math.Min(lo, c.X), math.Max(hi, c.X)
	}
	if lo > 0 && hi/lo > 20 {
		x = plot.Axis{Title: "TTFT", Unit: "ms, log scale", Scale: plot.Log}
	}
	return plot.Chart{
		ID:     "warm-ttft-cdf",
		Title:  fmt.Sprintf("Warm TTFT distribution (%d runs) and the cold request", len(warm)),
		X:      x,
		VLines: cold,
		Panels: []plot.Panel{{
			Y:      plot.Axis{Title: "runs at or below", Unit: "%", Pin: true, Min: 0, Max: 100},
			Curves: []plot.Curve{{Name: "warm runs (empirical CDF)", X: xs, Y: ys, Step: true, Points: true, Labels: labels}},
		}},
	}, true
}

// sweepTimeline is the host and GPU over a sweep, t = 0 at the first
// sample, the levels as bands.
func sweepTimeline(events []Event, res *SweepResults) (plot.Chart, bool) {
	samples := sampleEvents(events)
	if len(samples) == 0 {
		return plot.Chart{}, false
	}
	t0 := samples[0].t
	c := plot.Chart{
		ID:     "sweep-timeline",
		Title:  "GPU, CPU and page cache during the sweep",
		X:      plot.Axis{Title: "time since the first sample", Unit: "s"},
		Panels: buildHostSeries(samples, t0).panels(),
	}
	for _, l := range res.Levels {
		if l.startNs == 0 || l.endNs <= l.startNs {
			continue
		}
		c.Bands = append(c.Bands, plot.Band{X0: float64(l.startNs-t0) / 1e9, X1: float64(l.endNs-t0) / 1e9, Label: levelName(res, l.Value), Detail: l.Status})
	}
	return c, true
}
