// Package plot renders the small, dependency-free SVG charts that go next to
// the reports: XY charts of one or more panels sharing an x axis, on linear
// or log axes with nice ticks, titles and units, distinct colours, dashes
// and markers per curve, bands, reference lines, annotated points and
// legends (Chart); horizontal bars (Bars) and a Gantt chart of spans
// (Gantt). Values that were not measured are said to be, never drawn as 0.
// Output is deterministic for the same input, so reports diff cleanly.
package plot

import (
	"fmt"
	"html"
	"math"
	"strings"
)

// Bar is one labelled value.
type Bar struct {
	Label string
	Value float64
	// Highlight draws the bar in the accent colour (for example cold_1).
	Highlight bool
	// Note replaces a NaN value's bar (default "not measured").
	Note string
}

// Span is one labelled interval.
type Span struct {
	Label      string
	Start, End float64
	// Group picks the colour; spans of one group share it.
	Group string
	// NotMeasured says the span was not observed: it is labelled with
	// Detail (or "not measured"), never drawn as a 0 s bar.
	NotMeasured bool
	Detail      string
}

const (
	width     = 760
	rowH      = 22
	labelW    = 190
	valueW    = 90
	top       = 40
	bottom    = 36
	accent    = "#d9534f"
	normal    = "#4a7ebb"
	gridColor = "#dddddd"
)

var palette = []string{"#4a7ebb", "#5cb85c", "#f0ad4e", "#9b59b6", "#d9534f", "#17a2b8", "#6c757d"}

func header(b *strings.Builder, h int, title string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`+"\n", width, h, width, h)
	fmt.Fprintf(b, `<rect width="%d" height="%d" fill="white"/>`+"\n", width, h)
	fmt.Fprintf(b, `<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", 10, html.EscapeString(title))
}

// axisMax returns the end of a 0-based axis that holds max, at most one
// nice step beyond it, and its ticks.
func axisMax(max float64) (float64, []float64) {
	if !(max > 0) || math.IsInf(max, 0) {
		max = 1
	}
	t := NiceTicks(0, max, 5)
	return t[len(t)-1], t
}

func axis(b *strings.Builder, x0, x1 float64, y0, y1 int, max float64, ticks []float64, unit string) {
	step := tickStep(ticks, false)
	for _, v := range ticks {
		x := x0 + (x1-x0)*v/max
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s"/>`+"\n", x, y0, x, y1, gridColor)
		fmt.Fprintf(b, `<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s%s</text>`+"\n", x, y1+16, FormatTick(v, step), unit)
	}
}

// trim formats v with 3 significant digits, never in exponent form.
func trim(v float64) string {
	if math.Abs(v) >= 1000 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

// Bars renders a horizontal bar chart. unit is appended to values (e.g. " ms").
func Bars(title, unit string, bars []Bar) string {
	var b strings.Builder
	h := top + len(bars)*rowH + bottom
	header(&b, h, title)
	var max float64
	for _, br := range bars {
		if !math.IsNaN(br.Value) {
			max = math.Max(max, br.Value)
		}
	}
	max, ticks := axisMax(max)
	x0, x1 := float64(labelW), float64(width-valueW)
	axis(&b, x0, x1, top-4, top+len(bars)*rowH, max, ticks, unit)
	for i, br := range bars {
		y := top + i*rowH
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelW-8, y+15, html.EscapeString(br.Label))
		if math.IsNaN(br.Value) {
			note := br.Note
			if note == "" {
				note = "not measured"
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#888">%s</text>`+"\n", x0+4, y+15, html.EscapeString(note))
			continue
		}
		w := (x1 - x0) * br.Value / max
		c := normal
		if br.Highlight {
			c = accent
		}
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", x0, y+3, math.Max(w, 1), rowH-6, c)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d">%s%s</text>`+"\n", x0+w+4, y+15, trim(br.Value), unit)
	}
	b.WriteString("</svg>\n")
	return b.String()
}

// Gantt renders spans on a shared time axis (seconds).
func Gantt(title string, spans []Span) string {
	var b strings.Builder
	h := top + len(spans)*rowH + bottom
	header(&b, h, title)
	var max float64
	for _, s := range spans {
		if !s.NotMeasured {
			max = math.Max(max, s.End)
		}
	}
	max, ticks := axisMax(max)
	x0, x1 := float64(labelW), float64(width-valueW)
	axis(&b, x0, x1, top-4, top+len(spans)*rowH, max, ticks, " s")
	colors := map[string]string{}
	for i, s := range spans {
		c, ok := colors[s.Group]
		if !ok {
			c = palette[len(colors)%len(palette)]
			colors[s.Group] = c
		}
		y := top + i*rowH
		xs := x0 + (x1-x0)*s.Start/max
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="end">%s</text>`+"\n", labelW-8, y+15, html.EscapeString(s.Label))
		if s.NotMeasured {
			note := s.Detail
			if note == "" {
				note = "not measured"
			}
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#888">%s</text>`+"\n", x0+4, y+15, html.EscapeString(truncate(note, 80)))
			continue
		}
		if s.End <= s.Start {
			// An instant: a diamond at its time, not a 0 s bar.
			fmt.Fprintf(&b, `<path transform="translate(%.1f,%d)" d="M0 -6L5 0L0 6L-5 0z" fill="%s"/>`+"\n", xs, y+rowH/2, c)
			fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#333">at %.2f s</text>`+"\n", xs+8, y+15, s.Start)
			continue
		}
		w := math.Max((x1-x0)*(s.End-s.Start)/max, 1.5)
		fmt.Fprintf(&b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s"/>`+"\n", xs, y+3, w, rowH-6, c)
		fmt.Fprintf(&b, `<text x="%.1f" y="%d" fill="#333">%.2f s</text>`+"\n", xs+w+4, y+15, s.End-s.Start)
	}
	b.WriteString("</svg>\n")
	return b.String()
}
