package plot

import (
	"fmt"
	"html"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// Chart is an XY chart of one or more panels that share the x axis (small
// multiples), with bands and vertical lines drawn across every panel. Its
// SVG carries the data values of each curve and mark as data-* attributes,
// which the HTML report's script reads for hover and zoom; the SVG itself
// is complete without it (points have <title> tooltips).
type Chart struct {
	// ID names the chart in a page (element ids are derived from it); a
	// slug of Title when empty.
	ID    string
	Title string
	X     Axis
	// Panels share the x axis, top to bottom.
	Panels []Panel
	// Bands shade x ranges across every panel (for example cold-start
	// phases) and are labelled in a lane above the first panel.
	Bands []Band
	// VLines mark x positions across every panel (for example requests or
	// a reference value), labelled in a lane above the first panel.
	VLines []VLine
	// Width is the SVG's width in px; 760 when 0.
	Width int
}

// Panel is one plot area of a Chart.
type Panel struct {
	// Title heads the panel; the y axis's label when empty.
	Title  string
	Y      Axis
	Curves []Curve
	// HLines are horizontal reference lines (for example an SLO).
	HLines []HLine
	// Notes annotate single points (for example the knee of a curve).
	Notes []Note
	// Missing says why the panel has no data; it is drawn in place of the
	// curves ("not measured: …") when no curve has a point, never a 0 line.
	Missing string
	// Height of the plot area in px; 180 for a lone panel, 90 otherwise.
	Height int
}

// Curve is one series of points.
type Curve struct {
	Name string
	X, Y []float64
	// Labels name points for hover and titles (for example "c=8"); may be
	// shorter than X.
	Labels []string
	// Points draws a marker at every point; Step draws a step function
	// (for a CDF).
	Points bool
	Step   bool
	// Style overrides the colour, dash and marker the chart picks by the
	// curve's index in its panel.
	Style Style
	// Lo and Hi, when set, give each point a spread (for example a step's
	// min and max): drawn as a whisker at the point and a shaded band
	// between neighbours. A NaN or missing entry leaves that point without
	// one.
	Lo, Hi []float64
}

// spread returns point k's spread, if it has a finite one.
func (c Curve) spread(k int) (lo, hi float64, ok bool) {
	if k >= len(c.Lo) || k >= len(c.Hi) {
		return 0, 0, false
	}
	lo, hi = c.Lo[k], c.Hi[k]
	if math.IsNaN(lo) || math.IsNaN(hi) || math.IsInf(lo, 0) || math.IsInf(hi, 0) {
		return 0, 0, false
	}
	return math.Min(lo, hi), math.Max(lo, hi), true
}

// Style is how a curve is drawn. Empty fields take the defaults of the
// curve's index.
type Style struct {
	Color  string
	Dash   string
	Marker Marker
	Width  float64
}

// Marker is a point marker's shape.
type Marker string

// Marker shapes.
const (
	Circle   Marker = "circle"
	Square   Marker = "square"
	Triangle Marker = "triangle"
	Diamond  Marker = "diamond"
)

// Band is a shaded x range.
type Band struct {
	X0, X1 float64
	Label  string
	// Detail is the band's hover text.
	Detail string
	Color  string
}

// VLine is a vertical line across the panels.
type VLine struct {
	X     float64
	Label string
	Color string
	Dash  string
}

// HLine is a horizontal line in one panel.
type HLine struct {
	Y     float64
	Label string
	Color string
}

// Note labels one point of a panel.
type Note struct {
	X, Y  float64
	Label string
}

// Palette is the Okabe–Ito colour-blind-safe palette (yellow left out:
// unreadable on white); curves take colours, dashes and markers by index,
// so two curves differ in all three.
var (
	Palette = []string{"#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000"}
	dashes  = []string{"", "7 3", "2 3", "9 3 2 3"}
	markers = []Marker{Circle, Square, Triangle, Diamond}
	// BandColors shade bands by index.
	BandColors = []string{"#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#e15759", "#9c755f"}
)

func (c Curve) style(i int) Style {
	s := c.Style
	if s.Color == "" {
		s.Color = Palette[i%len(Palette)]
	}
	if s.Dash == "" && c.Style.Color == "" {
		s.Dash = dashes[i%len(dashes)]
	}
	if s.Marker == "" {
		s.Marker = markers[i%len(markers)]
	}
	if s.Width == 0 {
		s.Width = 2
	}
	return s
}

// MaxCurvePoints bounds the points drawn per curve; longer curves keep
// each bucket's minimum and maximum, so peaks survive.
const MaxCurvePoints = 2000

const (
	chartLeft  = 72.0
	chartRight = 24.0
	laneRowH   = 14.0
	headerH    = 18.0
	panelGap   = 8.0
	charW      = 6.2 // average glyph width at 11 px, for layout
)

var slugRE = regexp.MustCompile(`[^a-z0-9]+`)

func slug(s string) string {
	s = strings.Trim(slugRE.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if s == "" {
		return "chart"
	}
	return s
}

func esc(s string) string { return html.EscapeString(s) }

func f1(v float64) string { return strconv.FormatFloat(v, 'f', 1, 64) }

// fv formats a data value for a data-* attribute: shortest exact form.
func fv(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }

// SVG renders the chart.
func (c Chart) SVG() string {
	w := float64(c.Width)
	if w <= 0 {
		w = 760
	}
	id := c.ID
	if id == "" {
		id = slug(c.Title)
	}
	id = slug(id)
	// The x range fits every curve, band and line.
	var xs []float64
	for _, p := range c.Panels {
		for _, cu := range p.Curves {
			xs = append(xs, cu.X...)
		}
		for _, n := range p.Notes {
			xs = append(xs, n.X)
		}
	}
	for _, b := range c.Bands {
		xs = append(xs, b.X0, b.X1)
	}
	for _, v := range c.VLines {
		xs = append(xs, v.X)
	}
	xlo, xhi, xticks := fitAxis(c.X, xs)
	p0, p1 := chartLeft, w-chartRight
	xm := scaleMap{lo: xlo, hi: xhi, p0: p0, p1: p1, log: c.X.Scale == Log}

	// Lanes above the panels: band labels, then line labels, each row
	// holding labels that do not overlap.
	type laneItem struct {
		x0, x1 float64 // px
		text   string
		kind   string
		idx    int
	}
	var items []laneItem
	for i, b := range c.Bands {
		if !xm.valid(b.X0) || !xm.valid(b.X1) || b.Label == "" {
			continue
		}
		a := xm.at(b.X0)
		items = append(items, laneItem{x0: a, x1: math.Max(xm.at(b.X1), a+float64(len(b.Label))*charW+4), text: b.Label, kind: "band", idx: i})
	}
	bandRows := assignRows(len(items), func(i int) (float64, float64) { return items[i].x0, items[i].x1 })
	nBandRows := maxRow(bandRows)
	var vitems []laneItem
	for i, v := range c.VLines {
		if !xm.valid(v.X) || v.Label == "" {
			continue
		}
		a := xm.at(v.X)
		vitems = append(vitems, laneItem{x0: a - 2, x1: a + float64(len(v.Label))*charW + 2, text: v.Label, kind: "vline", idx: i})
	}
	vRows := assignRows(len(vitems), func(i int) (float64, float64) { return vitems[i].x0, vitems[i].x1 })
	nVRows := maxRow(vRows)

	top := 34.0
	laneTop := top
	top += float64(nBandRows+nVRows) * laneRowH
	if nBandRows+nVRows > 0 {
		top += 4
	}
	heights := make([]float64, len(c.Panels))
	y := top
	for i, p := range c.Panels {
		h := float64(p.Height)
		if h <= 0 {
			h = 180
			if len(c.Panels) > 1 {
				h = 90
			}
			if !p.hasData(xm) {
				h = 26 // a "not measured" line needs no plot area
			}
		}
		heights[i] = h
		y += p.headerHeight(xm) + h + panelGap
	}
	plotBottom := y - panelGap
	total := plotBottom + 44

	var b strings.Builder
	pf := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	xlog := "0"
	if xm.log {
		xlog = "1"
	}
	pf(`<svg xmlns="http://www.w3.org/2000/svg" class="ttftlab-chart" id="%s" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11" data-xlog="%s" data-lo="%s" data-hi="%s" data-p0="%s" data-p1="%s" data-xunit="%s" data-xtitle="%s" data-ytop="%s" data-ybottom="%s">`+"\n",
		id, w, total, w, total, xlog, fv(xlo), fv(xhi), f1(p0), f1(p1), esc(c.X.Unit), esc(c.X.Title), f1(laneTop), f1(plotBottom))
	pf(`<rect width="%.0f" height="%.0f" fill="white"/>`+"\n", w, total)
	pf(`<text x="10" y="22" font-size="15" font-weight="bold">%s</text>`+"\n", esc(c.Title))
	pf(`<defs><clipPath id="%s-clip"><rect x="%s" y="%s" width="%s" height="%s"/></clipPath></defs>`+"\n", id, f1(p0), f1(laneTop), f1(p1-p0), f1(plotBottom-laneTop))

	// Lanes.
	if len(items)+len(vitems) > 0 {
		pf(`<g class="lanes" clip-path="url(#%s-clip)">`+"\n", id)
		for k, it := range items {
			bd := c.Bands[it.idx]
			col := bandColor(bd, it.idx)
			ry := laneTop + float64(bandRows[k])*laneRowH
			a, z := xm.at(bd.X0), xm.at(bd.X1)
			pf(`<rect class="band" data-x0="%s" data-x1="%s" x="%s" y="%s" width="%s" height="%s" fill="%s" fill-opacity="0.55"><title>%s</title></rect>`+"\n",
				fv(bd.X0), fv(bd.X1), f1(a), f1(ry+1), f1(math.Max(z-a, 1)), f1(laneRowH-2), col, esc(bandTitle(bd)))
			pf(`<text data-x="%s" data-dx="2" x="%s" y="%s" font-size="10" fill="#222">%s</text>`+"\n", fv(bd.X0), f1(a+2), f1(ry+laneRowH-3), esc(bd.Label))
		}
		for k, it := range vitems {
			v := c.VLines[it.idx]
			ry := laneTop + float64(nBandRows+vRows[k])*laneRowH
			pf(`<text data-x="%s" data-dx="2" x="%s" y="%s" font-size="10" fill="%s">%s</text>`+"\n", fv(v.X), f1(xm.at(v.X)+2), f1(ry+laneRowH-3), vlineColor(v), esc(v.Label))
		}
		b.WriteString("</g>\n")
	}

	y = top
	for i, p := range c.Panels {
		h := heights[i]
		c.panel(&b, id, i, p, xm, y, h)
		y += p.headerHeight(xm) + h + panelGap
	}

	// The x axis, under the last panel.
	b.WriteString(`<g class="xaxis">` + "\n")
	for _, t := range xticks {
		if !xm.valid(t) {
			continue
		}
		px := xm.at(t)
		if px < p0-0.5 || px > p1+0.5 {
			continue
		}
		pf(`<text class="xtick" x="%s" y="%s" text-anchor="middle" fill="#444">%s</text>`+"\n", f1(px), f1(plotBottom+14), esc(FormatTick(t, tickStep(xticks, xm.log))))
	}
	b.WriteString("</g>\n")
	pf(`<text x="%s" y="%s" text-anchor="middle">%s</text>`+"\n", f1((p0+p1)/2), f1(plotBottom+32), esc(c.X.label()))
	b.WriteString("</svg>\n")
	return b.String()
}

// tickStep is the spacing FormatTick formats ticks at.
func tickStep(ticks []float64, log bool) float64 {
	if log || len(ticks) < 2 {
		step := math.Inf(1)
		for _, t := range ticks {
			if t != 0 {
				step = math.Min(step, math.Abs(t))
			}
		}
		if math.IsInf(step, 1) {
			return 1
		}
		return math.Pow(10, math.Floor(math.Log10(step)))
	}
	return ticks[1] - ticks[0]
}

func bandColor(b Band, i int) string {
	if b.Color != "" {
		return b.Color
	}
	return BandColors[i%len(BandColors)]
}

func vlineColor(v VLine) string {
	if v.Color != "" {
		return v.Color
	}
	return "#555"
}

func bandTitle(b Band) string {
	t := fmt.Sprintf("%s: %s → %s (%s)", b.Label, FormatValue(b.X0), FormatValue(b.X1), FormatValue(b.X1-b.X0))
	if b.Detail != "" {
		t += " — " + b.Detail
	}
	return t
}

// hasData reports whether any curve of the panel has a point to draw.
func (p Panel) hasData(xm scaleMap) bool {
	for _, cu := range p.Curves {
		for k := range cu.Y {
			if k < len(cu.X) && xm.valid(cu.X[k]) && !math.IsNaN(cu.Y[k]) && !math.IsInf(cu.Y[k], 0) {
				return true
			}
		}
	}
	return false
}

// title is the panel's heading: its Title, else its y axis's label.
func (p Panel) title() string {
	if p.Title == "" {
		return p.Y.label()
	}
	return p.Title
}

// legend places the legend entries of the curves with a name after the
// panel's title, wrapping onto further rows when they would run past x1;
// it returns each named curve's position (x and row) and the row count.
func (p Panel) legend(x0, x1 float64) (xs []float64, rows []int, n int) {
	start := x0 + float64(len([]rune(p.title())))*charW*1.1 + 16
	lx, row := start, 0
	xs, rows = make([]float64, len(p.Curves)), make([]int, len(p.Curves))
	for k, cu := range p.Curves {
		if cu.Name == "" {
			continue
		}
		w := 34 + float64(len([]rune(cu.Name)))*charW
		if lx+w-8 > x1 && lx > start {
			lx, row = x0, row+1
		}
		xs[k], rows[k] = lx, row
		lx += w
	}
	return xs, rows, row + 1
}

// headerHeight is the height of the panel's title and legend rows.
func (p Panel) headerHeight(xm scaleMap) float64 {
	if !p.hasData(xm) {
		return headerH
	}
	_, _, n := p.legend(xm.p0, xm.p1)
	return headerH + float64(n-1)*laneRowH
}

// panel renders one panel whose header starts at y.
func (c Chart) panel(b *strings.Builder, id string, i int, p Panel, xm scaleMap, y, h float64) {
	pf := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	hh := p.headerHeight(xm)
	y0, y1 := y+hh, y+hh+h
	var ys []float64
	hasData := false
	for _, cu := range p.Curves {
		for k := range cu.Y {
			if k < len(cu.X) && xm.valid(cu.X[k]) && !math.IsNaN(cu.Y[k]) && !math.IsInf(cu.Y[k], 0) {
				ys = append(ys, cu.Y[k])
				hasData = true
				if lo, hi, ok := cu.spread(k); ok {
					ys = append(ys, lo, hi)
				}
			}
		}
	}
	for _, hl := range p.HLines {
		ys = append(ys, hl.Y)
	}
	for _, n := range p.Notes {
		ys = append(ys, n.Y)
	}
	ylo, yhi, yticks := fitAxis(p.Y, ys)
	ym := scaleMap{lo: ylo, hi: yhi, p0: y1, p1: y0, log: p.Y.Scale == Log}
	title := p.title()
	pf(`<g class="panel" data-y0="%s" data-y1="%s" data-yunit="%s">`+"\n", f1(y0), f1(y1), esc(p.Y.Unit))
	pf(`<text x="%s" y="%s" font-weight="bold">%s</text>`+"\n", f1(xm.p0), f1(y+13), esc(title))
	// Legend, after the title, wrapping when it would run off the chart.
	if hasData {
		lxs, lrows, _ := p.legend(xm.p0, xm.p1)
		for k, cu := range p.Curves {
			if cu.Name == "" {
				continue
			}
			st := cu.style(k)
			lx, ly := lxs[k], y+float64(lrows[k])*laneRowH
			pf(`<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="%g"%s/>`, f1(lx), f1(ly+9), f1(lx+22), f1(ly+9), st.Color, st.Width, dashAttr(st.Dash))
			if cu.Points {
				b.WriteString(markerPath(st.Marker, lx+11, ly+9, st.Color, "", ""))
			}
			pf(`<text x="%s" y="%s" fill="#222">%s</text>`+"\n", f1(lx+26), f1(ly+13), esc(cu.Name))
		}
	}
	// Grid and y ticks.
	if hasData {
		step := tickStep(yticks, ym.log)
		for _, t := range yticks {
			if !ym.valid(t) {
				continue
			}
			py := ym.at(t)
			if py < y0-0.5 || py > y1+0.5 {
				continue
			}
			pf(`<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="#e3e3e3"/>`, f1(xm.p0), f1(py), f1(xm.p1), f1(py))
			pf(`<text x="%s" y="%s" text-anchor="end" fill="#444">%s</text>`+"\n", f1(xm.p0-5), f1(py+4), esc(FormatTick(t, step)))
		}
	}
	pf(`<g clip-path="url(#%s-clip)">`+"\n", id)
	for k, bd := range c.Bands {
		if !xm.valid(bd.X0) || !xm.valid(bd.X1) {
			continue
		}
		a, z := xm.at(bd.X0), xm.at(bd.X1)
		pf(`<rect class="band" data-x0="%s" data-x1="%s" x="%s" y="%s" width="%s" height="%s" fill="%s" fill-opacity="0.12"/>`+"\n",
			fv(bd.X0), fv(bd.X1), f1(a), f1(y0), f1(math.Max(z-a, 1)), f1(h), bandColor(bd, k))
	}
	for _, v := range c.VLines {
		if !xm.valid(v.X) {
			continue
		}
		px := xm.at(v.X)
		dash := v.Dash
		if dash == "" {
			dash = "3 3"
		}
		pf(`<line class="vline" data-x="%s" x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-width="1.2"%s><title>%s</title></line>`+"\n",
			fv(v.X), f1(px), f1(y0), f1(px), f1(y1), vlineColor(v), dashAttr(dash), esc(v.Label+" at "+FormatValue(v.X)+unitSuffix(c.X.Unit)))
	}
	if !hasData {
		msg := p.Missing
		if msg == "" {
			msg = "not measured"
		}
		if !strings.HasPrefix(msg, "not measured") {
			msg = "not measured: " + msg
		}
		pf(`<text class="missing" x="%s" y="%s" text-anchor="middle" fill="#888">%s</text>`+"\n", f1((xm.p0+xm.p1)/2), f1((y0+y1)/2+4), esc(truncate(msg, 110)))
	}
	for _, hl := range p.HLines {
		if !ym.valid(hl.Y) {
			continue
		}
		py := ym.at(hl.Y)
		col := hl.Color
		if col == "" {
			col = "#888"
		}
		pf(`<line x1="%s" y1="%s" x2="%s" y2="%s" stroke="%s" stroke-dasharray="5 4"/>`, f1(xm.p0), f1(py), f1(xm.p1), f1(py), col)
		pf(`<text x="%s" y="%s" text-anchor="end" fill="%s">%s</text>`+"\n", f1(xm.p1-4), f1(py-4), col, esc(hl.Label))
	}
	if hasData {
		for k, cu := range p.Curves {
			spreadBand(b, cu, cu.style(k), xm, ym)
		}
		for k, cu := range p.Curves {
			c.curve(b, cu, cu.style(k), xm, ym, p.Y.Unit)
		}
	}
	for _, n := range p.Notes {
		if !xm.valid(n.X) || !ym.valid(n.Y) {
			continue
		}
		px, py := xm.at(n.X), ym.at(n.Y)
		pf(`<circle data-x="%s" cx="%s" cy="%s" r="7" fill="none" stroke="#222" stroke-width="1.5"/>`, fv(n.X), f1(px), f1(py))
		// A label that would run past the right edge goes left of its point.
		dx, anchor := 10.0, ""
		if px+dx+float64(len([]rune(n.Label)))*charW*1.1 > xm.p1 {
			dx, anchor = -10, ` text-anchor="end"`
		}
		pf(`<text data-x="%s" data-dx="%g" x="%s" y="%s" fill="#222" font-weight="bold"%s>%s</text>`+"\n", fv(n.X), dx, f1(px+dx), f1(py-8), anchor, esc(n.Label))
	}
	b.WriteString("</g>\n")
	pf(`<rect x="%s" y="%s" width="%s" height="%s" fill="none" stroke="#999"/>`+"\n", f1(xm.p0), f1(y0), f1(xm.p1-xm.p0), f1(h))
	b.WriteString("</g>\n")
}

func unitSuffix(u string) string {
	if u == "" {
		return ""
	}
	return " " + u
}

func truncate(s string, n int) string {
	r := []rune(s)
	if len(r) <= n {
		return s
	}
	return string(r[:n-1]) + "…"
}

func dashAttr(d string) string {
	if d == "" {
		return ""
	}
	return ` stroke-dasharray="` + d + `"`
}

// spreadBand draws a curve's spreads: a whisker at each point that has
// one, and a shaded band across each run of neighbouring points that do.
func spreadBand(b *strings.Builder, cu Curve, st Style, xm, ym scaleMap) {
	type sp struct{ px, plo, phi float64 }
	var run []sp
	flush := func() {
		if len(run) >= 2 {
			var d strings.Builder
			for k, s := range run {
				cmd := "L"
				if k == 0 {
					cmd = "M"
				}
				fmt.Fprintf(&d, "%s%s %s", cmd, f1(s.px), f1(s.phi))
			}
			for k := len(run) - 1; k >= 0; k-- {
				fmt.Fprintf(&d, "L%s %s", f1(run[k].px), f1(run[k].plo))
			}
			fmt.Fprintf(b, `<path class="spread" d="%sZ" fill="%s" fill-opacity="0.13" stroke="none"/>`+"\n", d.String(), st.Color)
		}
		run = run[:0]
	}
	for k := range cu.X {
		lo, hi, ok := cu.spread(k)
		if !ok || k >= len(cu.Y) || !xm.valid(cu.X[k]) || !ym.valid(cu.Y[k]) || !ym.valid(lo) || !ym.valid(hi) {
			flush()
			continue
		}
		s := sp{px: xm.at(cu.X[k]), plo: ym.at(lo), phi: ym.at(hi)}
		run = append(run, s)
		fmt.Fprintf(b, `<path class="whisker" d="M%s %sV%sM%s %sh8M%s %sh8" stroke="%s" stroke-width="1.2" fill="none"><title>%s</title></path>`+"\n",
			f1(s.px), f1(s.plo), f1(s.phi), f1(s.px-4), f1(s.plo), f1(s.px-4), f1(s.phi), st.Color,
			esc(fmt.Sprintf("%s: %s – %s", cu.Name, FormatValue(lo), FormatValue(hi))))
	}
	flush()
}

// curve renders one curve as a path with its data values in data-x, data-v
// (the y values) and data-py (their pixel rows); "_" marks a gap.
func (c Chart) curve(b *strings.Builder, cu Curve, st Style, xm, ym scaleMap, unit string) {
	type pt struct {
		x, y  float64
		label string
		gap   bool
	}
	var pts []pt
	gap := false
	for k := range cu.X {
		if k >= len(cu.Y) {
			break
		}
		x, yv := cu.X[k], cu.Y[k]
		if !xm.valid(x) || !ym.valid(yv) {
			gap = true
			continue
		}
		l := ""
		if k < len(cu.Labels) {
			l = cu.Labels[k]
		}
		pts = append(pts, pt{x: x, y: yv, label: l, gap: gap && len(pts) > 0})
		gap = false
	}
	if len(pts) == 0 {
		return
	}
	if len(pts) > MaxCurvePoints {
		keep := decimate(len(pts), func(i int) float64 { return pts[i].y }, MaxCurvePoints)
		out := make([]pt, 0, len(keep))
		for _, i := range keep {
			out = append(out, pts[i])
		}
		pts = out
	}
	var d, dx, dv, dpy strings.Builder
	var prevY float64
	for k, p := range pts {
		px, py := xm.at(p.x), ym.at(p.y)
		switch {
		case k == 0 || p.gap:
			fmt.Fprintf(&d, "M%s %s", f1(px), f1(py))
		case cu.Step:
			fmt.Fprintf(&d, "H%sV%s", f1(px), f1(py))
		default:
			fmt.Fprintf(&d, "L%s %s", f1(px), f1(py))
		}
		prevY = py
		if k > 0 {
			dx.WriteByte(' ')
			dv.WriteByte(' ')
			dpy.WriteByte(' ')
		}
		if p.gap {
			dx.WriteString("_ ")
			dv.WriteString("_ ")
			dpy.WriteString("_ ")
		}
		dx.WriteString(fv(p.x))
		dv.WriteString(fv(p.y))
		dpy.WriteString(f1(py))
	}
	_ = prevY
	step := ""
	if cu.Step {
		step = ` data-step="1"`
	}
	var labels string
	if len(cu.Labels) > 0 {
		ls := make([]string, len(pts))
		for k, p := range pts {
			ls[k] = strings.ReplaceAll(p.label, "|", "/")
		}
		labels = ` data-l="` + esc(strings.Join(ls, "|")) + `"`
	}
	fmt.Fprintf(b, `<path class="curve" d="%s" fill="none" stroke="%s" stroke-width="%g"%s stroke-linejoin="round" data-name="%s" data-unit="%s" data-color="%s" data-x="%s" data-v="%s" data-py="%s"%s%s/>`+"\n",
		d.String(), st.Color, st.Width, dashAttr(st.Dash), esc(cu.Name), esc(unit), st.Color, dx.String(), dv.String(), dpy.String(), step, labels)
	if !cu.Points {
		return
	}
	for _, p := range pts {
		px, py := xm.at(p.x), ym.at(p.y)
		t := cu.Name
		if p.label != "" {
			t += ", " + p.label
		}
		t += ": " + FormatValue(p.y) + unitSuffix(unit)
		b.WriteString(markerPath(st.Marker, px, py, st.Color, fv(p.x), t))
		b.WriteByte('\n')
	}
}

// markerPath draws a marker centred at (px, py); with x set it carries
// data-x and data-py so that the report's script can move it.
func markerPath(m Marker, px, py float64, color, x, title string) string {
	var d string
	switch m {
	case Square:
		d = "M-3.5 -3.5h7v7h-7z"
	case Triangle:
		d = "M0 -4.5L4 3L-4 3z"
	case Diamond:
		d = "M0 -4.5L4.5 0L0 4.5L-4.5 0z"
	default:
		d = "M-3.8 0a3.8 3.8 0 1 0 7.6 0a3.8 3.8 0 1 0 -7.6 0"
	}
	attrs := ""
	if x != "" {
		attrs = fmt.Sprintf(` class="pt" data-x="%s" data-py="%s"`, x, f1(py))
	}
	tt := ""
	if title != "" {
		tt = "<title>" + esc(title) + "</title>"
	}
	return fmt.Sprintf(`<path%s transform="translate(%s,%s)" d="%s" fill="%s" stroke="white" stroke-width="0.8">%s</path>`, attrs, f1(px), f1(py), d, color, tt)
}

// decimate returns the indices to keep of n points so that at most max
// remain: the first and last, and each bucket's minimum and maximum y.
func decimate(n int, y func(int) float64, max int) []int {
	if n <= max || max < 4 {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	buckets := (max - 2) / 2
	keep := map[int]bool{0: true, n - 1: true}
	for k := 0; k < buckets; k++ {
		a := 1 + k*(n-2)/buckets
		z := 1 + (k+1)*(n-2)/buckets
		lo, hi := a, a
		for i := a; i < z; i++ {
			if y(i) < y(lo) {
				lo = i
			}
			if y(i) > y(hi) {
				hi = i
			}
		}
		keep[lo], keep[hi] = true, true
	}
	out := make([]int, 0, len(keep))
	for i := range keep {
		out = append(out, i)
	}
	sort.Ints(out)
	return out
}

// assignRows places n items, each an [a, z] px extent, on the fewest rows
// with no overlap in a row, greedily in order; at most 8 rows, the rest
// sharing the last.
func assignRows(n int, extent func(int) (float64, float64)) []int {
	rows := make([]int, n)
	var ends []float64
	for i := 0; i < n; i++ {
		a, z := extent(i)
		placed := false
		for r, e := range ends {
			if a >= e+3 {
				rows[i], ends[r], placed = r, z, true
				break
			}
		}
		if !placed {
			if len(ends) < 8 {
				ends = append(ends, z)
				rows[i] = len(ends) - 1
			} else {
				rows[i] = len(ends) - 1
				ends[len(ends)-1] = math.Max(ends[len(ends)-1], z)
			}
		}
	}
	return rows
}

func maxRow(rows []int) int {
	if len(rows) == 0 {
		return 0
	}
	m := 0
	for _, r := range rows {
		m = max(m, r)
	}
	return m + 1
}
