package plot

import (
	"math"
	"strconv"
	"strings"
)

// Scale is how an axis maps values to positions.
type Scale int

const (
	// Linear spaces equal differences equally.
	Linear Scale = iota
	// Log spaces equal ratios equally (base 10); values ≤ 0 are left out.
	Log
)

// Axis describes one axis of a Chart.
type Axis struct {
	// Title names the quantity, Unit its unit ("ms", "GiB"); the axis is
	// labelled "Title (Unit)".
	Title string
	Unit  string
	Scale Scale
	// Ticks, when set, are the tick positions (for example the concurrency
	// levels a sweep ran); otherwise NiceTicks or LogTicks choose them.
	Ticks []float64
	// Pin fixes the range to [Min, Max]; otherwise the axis fits the data.
	// FromZero makes a linear axis start at 0 when every value is ≥ 0.
	Pin      bool
	Min, Max float64
	FromZero bool
}

// label returns "Title (Unit)".
func (a Axis) label() string {
	if a.Unit == "" {
		return a.Title
	}
	return a.Title + " (" + a.Unit + ")"
}

// niceStep returns the 1, 2 or 5 × 10^k step nearest above span/n.
func niceStep(span float64, n int) float64 {
	if span <= 0 || n < 1 || math.IsNaN(span) || math.IsInf(span, 0) {
		return 1
	}
	raw := span / float64(n)
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if m*p >= raw*(1-1e-9) {
			return m * p
		}
	}
	return 10 * p
}

// NiceTicks returns about n (at most 2n) evenly spaced ticks at a 1, 2,
// 2.5 or 5 × 10^k step that cover [lo, hi] tightly: the first tick is the
// largest multiple of the step ≤ lo and the last the smallest ≥ hi, so the
// axis runs at most one step past the data, never to twice it. A zero or
// non-finite span gets a unit range around lo.
func NiceTicks(lo, hi float64, n int) []float64 {
	if math.IsNaN(lo) || math.IsNaN(hi) || math.IsInf(lo, 0) || math.IsInf(hi, 0) {
		return []float64{0, 1}
	}
	if hi < lo {
		lo, hi = hi, lo
	}
	if hi == lo {
		d := math.Max(math.Abs(lo)*0.1, 1)
		if lo == 0 {
			return NiceTicks(0, 1, n)
		}
		lo, hi = lo-d, hi+d
	}
	step := niceStep(hi-lo, n)
	first := math.Floor(lo/step+1e-9) * step
	last := math.Ceil(hi/step-1e-9) * step
	var out []float64
	for i := 0; ; i++ {
		v := first + float64(i)*step
		if v > last+step*1e-9 || i > 4*n+2 {
			break
		}
		// Snap to the step's decimals so labels read 0.3, not 0.30000000000000004.
		out = append(out, roundTo(v, step))
	}
	return out
}

// LogTicks returns ticks for a log axis covering [lo, hi] (both > 0): the
// decades when the range spans more than two, otherwise 1, 2 and 5 times
// each decade. The first tick is ≤ lo and the last ≥ hi.
func LogTicks(lo, hi float64) []float64 {
	if !(lo > 0) || !(hi > 0) || math.IsInf(hi, 0) {
		return []float64{1, 10}
	}
	if hi < lo {
		lo, hi = hi, lo
	}
	d0 := math.Floor(math.Log10(lo))
	d1 := math.Ceil(math.Log10(hi))
	if d1 == d0 {
		d1++
	}
	mults := []float64{1, 2, 5}
	if d1-d0 > 2 {
		mults = []float64{1}
	}
	var all []float64
	for d := d0; d <= d1; d++ {
		for _, m := range mults {
			all = append(all, roundSig(m*math.Pow(10, d)))
		}
	}
	// Keep one tick at or below lo and one at or above hi.
	start, end := 0, len(all)-1
	for start+1 < len(all) && all[start+1] <= lo*(1+1e-9) {
		start++
	}
	for end-1 >= 0 && all[end-1] >= hi*(1-1e-9) {
		end--
	}
	return all[start : end+1]
}

// roundTo rounds v to the decimals step needs.
func roundTo(v, step float64) float64 {
	d := decimals(step)
	p := math.Pow(10, float64(d))
	r := math.Round(v*p) / p
	if r == 0 {
		return 0 // no "-0"
	}
	return r
}

func roundSig(v float64) float64 {
	f, _ := strconv.ParseFloat(strconv.FormatFloat(v, 'g', 6, 64), 64)
	return f
}

// decimals is how many decimals a tick at this step needs.
func decimals(step float64) int {
	if step <= 0 || math.IsNaN(step) || math.IsInf(step, 0) {
		return 0
	}
	d := 0
	for s := step; d < 9 && math.Abs(s-math.Round(s)) > 1e-9*math.Max(1, math.Abs(s)); s *= 10 {
		d++
	}
	return d
}

// FormatTick formats a tick value for an axis whose ticks are step apart:
// no exponent, no trailing zeros, thousands as "k" from 10,000.
func FormatTick(v, step float64) string {
	if math.Abs(v) >= 10000 && math.Mod(v, 1000) == 0 {
		return strconv.FormatFloat(v/1000, 'f', -1, 64) + "k"
	}
	s := strconv.FormatFloat(v, 'f', decimals(step), 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	if s == "-0" {
		s = "0"
	}
	return s
}

// FormatValue formats a measured value with 4 significant digits and no
// exponent, for tooltips and labels.
func FormatValue(v float64) string {
	switch {
	case math.IsNaN(v):
		return "not measured"
	case math.Abs(v) >= 1000:
		return strconv.FormatFloat(math.Round(v), 'f', 0, 64)
	case v == 0:
		return "0"
	}
	d := 3 - int(math.Floor(math.Log10(math.Abs(v))))
	if d < 0 {
		d = 0
	}
	s := strconv.FormatFloat(v, 'f', d, 64)
	if strings.Contains(s, ".") {
		s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	}
	return s
}

// scaleMap maps values in [lo, hi] to pixels in [p0, p1] on a scale.
type scaleMap struct {
	lo, hi, p0, p1 float64
	log            bool
}

func (m scaleMap) at(v float64) float64 {
	lo, hi := m.lo, m.hi
	if m.log {
		v, lo, hi = math.Log10(v), math.Log10(lo), math.Log10(hi)
	}
	if hi == lo {
		return (m.p0 + m.p1) / 2
	}
	return m.p0 + (m.p1-m.p0)*(v-lo)/(hi-lo)
}

// valid reports whether v can be placed on the scale.
func (m scaleMap) valid(v float64) bool {
	return !math.IsNaN(v) && !math.IsInf(v, 0) && (!m.log || v > 0)
}

// fitAxis returns an axis's range and ticks for the values vs.
func fitAxis(a Axis, vs []float64) (lo, hi float64, ticks []float64) {
	lo, hi = math.Inf(1), math.Inf(-1)
	for _, v := range vs {
		if math.IsNaN(v) || math.IsInf(v, 0) || (a.Scale == Log && v <= 0) {
			continue
		}
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	for _, t := range a.Ticks {
		if a.Scale == Log && t <= 0 {
			continue
		}
		lo, hi = math.Min(lo, t), math.Max(hi, t)
	}
	if a.Pin && a.Max > a.Min && (a.Scale == Linear || a.Min > 0) {
		return a.Min, a.Max, pinnedTicks(a)
	}
	if math.IsInf(lo, 1) { // no data at all
		if a.Scale == Log {
			lo, hi = 1, 10
		} else {
			lo, hi = 0, 1
		}
	}
	if a.Scale == Log {
		if len(a.Ticks) > 0 {
			// Explicit ticks on a log axis: pad by a fifth of a decade's
			// ratio each side, so end points are not on the frame.
			ticks = append([]float64(nil), a.Ticks...)
			pad := math.Pow(10, 0.08*math.Max(math.Log10(hi/lo), 0.5))
			return lo / pad, hi * pad, ticks
		}
		ticks = LogTicks(lo, hi)
		return ticks[0], ticks[len(ticks)-1], ticks
	}
	if a.FromZero && lo >= 0 {
		lo = 0
	}
	if len(a.Ticks) > 0 {
		return lo, hi, append([]float64(nil), a.Ticks...)
	}
	ticks = NiceTicks(lo, hi, 5)
	return ticks[0], ticks[len(ticks)-1], ticks
}

// pinnedTicks are the ticks of a pinned range.
func pinnedTicks(a Axis) []float64 {
	if len(a.Ticks) > 0 {
		return append([]float64(nil), a.Ticks...)
	}
	var ts []float64
	if a.Scale == Log {
		ts = LogTicks(a.Min, a.Max)
	} else {
		ts = NiceTicks(a.Min, a.Max, 5)
	}
	var in []float64
	for _, t := range ts {
		if t >= a.Min-1e-9*math.Abs(a.Min) && t <= a.Max+1e-9*math.Abs(a.Max) {
			in = append(in, t)
		}
	}
	return in
}
