package results

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"

	"github.com/ttftlab/ttftlab/internal/browsertest"
)

// renderFixtureDir copies testdata/<name>.events.jsonl into a fresh run
// directory and renders it as `ttftlab report DIR` does.
func renderFixtureDir(t *testing.T, name string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join("testdata", name+".events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, EventsFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := RenderDir(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestReportHTMLInChromium opens report.html of real `ttftlab up` runs on
// the simulator (the baseline and sweep fixtures, rendered fresh) in headless
// Chromium: no console error or exception, the cold-start timeline has real
// sample points, hovering shows a sample's values, zooming moves the x axis,
// and a screenshot of each page is saved. Run with `make test-browser`.
func TestReportHTMLInChromium(t *testing.T) {
	tests := []struct {
		name  string
		chart string // the chart that must carry sample points
		curve string // a curve of it that the hover read-out names
		min   int
	}{
		{name: "baseline", chart: "cold-start-timeline", curve: "engine process tree", min: 20},
		{name: "sweep", chart: "sweep-ttft", curve: "TTFT p99", min: 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := renderFixtureDir(t, tt.name)
			br := browsertest.New(t, 90*time.Second)
			if err := chromedp.Do(br.Ctx, chromedp.Navigate("file://"+filepath.Join(dir, HTMLReport)), chromedp.WaitVisible("#"+tt.chart)); err != nil {
				t.Fatalf("open report.html: %v", err)
			}
			charts, err := chromedp.Run(br.Ctx, chromedp.Evaluate[int](`window.ttftlabCharts.length`))
			if err != nil || charts < 2 {
				t.Fatalf("%d interactive charts (err %v): the script did not attach to the inline SVGs", charts, err)
			}
			// Real points: every sample of the curve, with its value.
			points, err := chromedp.Run(br.Ctx, chromedp.Evaluate[int](`Math.max(...Array.from(document.querySelectorAll("#`+tt.chart+` path.curve")).map(p => p.getAttribute("data-v").split(" ").filter(v => v !== "_" && isFinite(parseFloat(v))).length))`))
			if err != nil || points < tt.min {
				t.Fatalf("%s has %d points on its fullest curve (err %v), want ≥ %d", tt.chart, points, err, tt.min)
			}
			t.Logf("%s: %d points on its fullest curve", tt.chart, points)

			// Hover over the middle of the chart's plot area: the read-out
			// names the curve and its value.
			type box struct{ X, Y, W, H, P0, P1, Top, Bottom, VBW, VBH float64 }
			bx, err := chromedp.Run(br.Ctx, chromedp.Evaluate[box](`(() => { const s = document.getElementById("`+tt.chart+`"); s.scrollIntoView(); const r = s.getBoundingClientRect();
				return {X: r.left, Y: r.top, W: r.width, H: r.height, P0: +s.dataset.p0, P1: +s.dataset.p1, Top: +s.dataset.ytop, Bottom: +s.dataset.ybottom, VBW: s.viewBox.baseVal.width, VBH: s.viewBox.baseVal.height}; })()`))
			if err != nil {
				t.Fatal(err)
			}
			sx, sy := bx.W/bx.VBW, bx.H/bx.VBH
			mx := bx.X + (bx.P0+0.55*(bx.P1-bx.P0))*sx
			my := bx.Y + (bx.Top+0.8*(bx.Bottom-bx.Top))*sy
			if err := chromedp.Do(br.Ctx, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, mx, my)); err != nil {
				t.Fatal(err)
			}
			tip, err := chromedp.Run(br.Ctx, chromedp.Evaluate[string](`Array.from(document.querySelectorAll(".tip")).filter(d => d.style.display === "block").map(d => d.textContent).join("\n")`))
			if err != nil || !containsAll(tip, tt.curve, ":") {
				t.Errorf("hover read-out %q (err %v) does not name %q with a value", tip, err, tt.curve)
			}

			// Drag-zoom to the middle fifth: the x ticks change; reset restores them.
			ticks := func() string {
				s, err := chromedp.Run(br.Ctx, chromedp.Evaluate[string](`Array.from(document.querySelectorAll("#`+tt.chart+` .xtick")).map(t => t.textContent).join(",")`))
				if err != nil {
					t.Fatal(err)
				}
				return s
			}
			before := ticks()
			x0, x1 := bx.X+(bx.P0+0.4*(bx.P1-bx.P0))*sx, bx.X+(bx.P0+0.6*(bx.P1-bx.P0))*sx
			if err := chromedp.Do(br.Ctx,
				chromedp.MouseEvent(input.DispatchMouseEventTypeMousePressed, x0, my, chromedp.ButtonLeft),
				chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, x1, my, chromedp.ButtonLeft),
				chromedp.MouseEvent(input.DispatchMouseEventTypeMouseReleased, x1, my, chromedp.ButtonLeft)); err != nil {
				t.Fatal(err)
			}
			zoomed := ticks()
			if zoomed == before {
				t.Errorf("x ticks %q unchanged after a drag-zoom", before)
			}
			br.Screenshot(t, "report-"+tt.name+"-zoomed.png")
			if _, err := chromedp.Run(br.Ctx, chromedp.Evaluate[bool](`(window.ttftlabCharts.forEach(c => c.reset()), true)`)); err != nil {
				t.Fatal(err)
			}
			if after := ticks(); after == zoomed {
				t.Errorf("x ticks %q unchanged after reset", after)
			}
			if _, err := chromedp.Run(br.Ctx, chromedp.Evaluate[bool](`(window.scrollTo(0, 0), true)`)); err != nil {
				t.Fatal(err)
			}
			br.Screenshot(t, "report-"+tt.name+".png")
			br.CheckConsole(t)
		})
	}
}

func containsAll(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}
