package plot

import (
	"flag"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden SVGs in testdata")

func TestNiceTicks(t *testing.T) {
	tests := []struct {
		name   string
		lo, hi float64
		want   []float64
	}{
		{name: "latency up to 420 ms stops at 500, not 1000", lo: 0, hi: 420, want: []float64{0, 100, 200, 300, 400, 500}},
		{name: "exact multiple ends on the data", lo: 0, hi: 400, want: []float64{0, 100, 200, 300, 400}},
		{name: "offset range does not start at 0", lo: 13.2, hi: 17.9, want: []float64{13, 14, 15, 16, 17, 18}},
		{name: "small decimals snap", lo: 0, hi: 0.27, want: []float64{0, 0.1, 0.2, 0.3}},
		{name: "2.5 step", lo: 0, hi: 11, want: []float64{0, 2.5, 5, 7.5, 10, 12.5}},
		{name: "one value gets a range around it", lo: 5, hi: 5, want: []float64{4, 4.5, 5, 5.5, 6}},
		{name: "zero range", lo: 0, hi: 0, want: []float64{0, 0.2, 0.4, 0.6, 0.8, 1}},
		{name: "negative", lo: -3, hi: 2, want: []float64{-3, -2, -1, 0, 1, 2}},
		{name: "reversed", lo: 10, hi: 0, want: []float64{0, 2, 4, 6, 8, 10}},
		{name: "NaN", lo: math.NaN(), hi: 1, want: []float64{0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := NiceTicks(tt.lo, tt.hi, 5)
			if !slices.Equal(got, tt.want) {
				t.Errorf("NiceTicks(%v, %v) = %v, want %v", tt.lo, tt.hi, got, tt.want)
			}
		})
	}
}

func TestNiceTicksNeverPadMoreThanOneStep(t *testing.T) {
	for _, hi := range []float64{0.011, 1.1, 3, 7.3, 42, 101, 420, 999, 1001, 65536} {
		ticks := NiceTicks(0, hi, 5)
		step := ticks[1] - ticks[0]
		if last := ticks[len(ticks)-1]; last < hi || last-hi >= step*(1+1e-9) {
			t.Errorf("hi %v: last tick %v, step %v: the axis must end within one step past the data", hi, last, step)
		}
		if n := len(ticks); n < 4 || n > 11 {
			t.Errorf("hi %v: %d ticks %v, want 4..11", hi, n, ticks)
		}
	}
}

func TestLogTicks(t *testing.T) {
	tests := []struct {
		name   string
		lo, hi float64
		want   []float64
	}{
		{name: "concurrency 1 to 64", lo: 1, hi: 64, want: []float64{1, 2, 5, 10, 20, 50, 100}},
		{name: "inside one decade", lo: 3, hi: 7, want: []float64{2, 5, 10}},
		{name: "many decades keep only decades", lo: 0.5, hi: 20000, want: []float64{0.1, 1, 10, 100, 1000, 10000, 100000}},
		{name: "non-positive falls back", lo: 0, hi: 10, want: []float64{1, 10}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := LogTicks(tt.lo, tt.hi); !slices.Equal(got, tt.want) {
				t.Errorf("LogTicks(%v, %v) = %v, want %v", tt.lo, tt.hi, got, tt.want)
			}
		})
	}
}

func TestFormatTick(t *testing.T) {
	tests := []struct {
		name    string
		v, step float64
		want    string
	}{
		{name: "integer", v: 300, step: 100, want: "300"},
		{name: "decimals of the step", v: 0.3, step: 0.05, want: "0.3"},
		{name: "2.5 step", v: 7.5, step: 2.5, want: "7.5"},
		{name: "thousands", v: 20000, step: 5000, want: "20k"},
		{name: "below 10k stays plain", v: 5000, step: 1000, want: "5000"},
		{name: "negative zero", v: math.Copysign(0, -1), step: 1, want: "0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := FormatTick(tt.v, tt.step); got != tt.want {
				t.Errorf("FormatTick(%v, %v) = %q, want %q", tt.v, tt.step, got, tt.want)
			}
		})
	}
}

func TestFitAxis(t *testing.T) {
	tests := []struct {
		name      string
		axis      Axis
		vs        []float64
		lo, hi    float64
		firstTick float64
	}{
		{name: "from zero", axis: Axis{FromZero: true}, vs: []float64{12, 47}, lo: 0, hi: 50, firstTick: 0},
		{name: "fits the data", axis: Axis{}, vs: []float64{12, 47}, lo: 10, hi: 50, firstTick: 10},
		{name: "log with the levels as ticks pads a little", axis: Axis{Scale: Log, Ticks: []float64{1, 8, 32}}, vs: []float64{1, 8, 32}, lo: 1 / math.Pow(10, 0.08*math.Log10(32)), hi: 32 * math.Pow(10, 0.08*math.Log10(32)), firstTick: 1},
		{name: "pinned", axis: Axis{Pin: true, Min: 0, Max: 100}, vs: []float64{3, 4}, lo: 0, hi: 100, firstTick: 0},
		{name: "no data", axis: Axis{}, vs: []float64{math.NaN()}, lo: 0, hi: 1, firstTick: 0},
		{name: "log ignores non-positive values", axis: Axis{Scale: Log}, vs: []float64{0, -1, 3, 40}, lo: 2, hi: 50, firstTick: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lo, hi, ticks := fitAxis(tt.axis, tt.vs)
			if math.Abs(lo-tt.lo) > 1e-9 || math.Abs(hi-tt.hi) > 1e-9 || ticks[0] != tt.firstTick {
				t.Errorf("fitAxis = [%v, %v] ticks %v, want [%v, %v] from %v", lo, hi, ticks, tt.lo, tt.hi, tt.firstTick)
			}
		})
	}
}

func TestDecimateKeepsPeaks(t *testing.T) {
	n := 10000
	y := func(i int) float64 {
		if i == 4321 {
			return 1e6 // a one-sample spike
		}
		return float64(i % 7)
	}
	keep := decimate(n, y, 200)
	if len(keep) > 200 {
		t.Errorf("kept %d points, want ≤ 200", len(keep))
	}
	if !slices.Contains(keep, 4321) || keep[0] != 0 || keep[len(keep)-1] != n-1 {
		t.Errorf("decimation lost the spike or an end point")
	}
}

// sweepChart is a percentile chart as a sweep draws it: log concurrency
// axis at the levels, p50 → p99 drawn in that order, a knee note and an SLO.
func sweepChart() Chart {
	levels := []float64{1, 4, 16, 64}
	return Chart{
		ID: "sweep-ttft", Title: "TTFT percentiles by concurrency",
		X: Axis{Title: "concurrency", Scale: Log, Ticks: levels},
		Panels: []Panel{{
			Y: Axis{Title: "TTFT", Unit: "ms", FromZero: true},
			Curves: []Curve{
				{Name: "p50", X: levels, Y: []float64{40, 42, 55, 180}, Points: true},
				{Name: "p90", X: levels, Y: []float64{44, 50, 80, 260}, Points: true},
				{Name: "p99", X: levels, Y: []float64{45, 51, 95, math.NaN()}, Points: true, Labels: []string{"c=1", "c=4", "c=16", "c=64"}},
			},
			HLines: []HLine{{Y: 200, Label: "SLO 200 ms"}},
			Notes:  []Note{{X: 16, Y: 55, Label: "knee"}},
		}},
	}
}

// timelineChart is a cold-start timeline: small multiples with phase bands,
// request lines and a panel that was not measured.
func timelineChart() Chart {
	var ts, cpu, cache []float64
	for i := 0; i <= 40; i++ {
		t := float64(i) * 0.25
		ts = append(ts, t)
		cpu = append(cpu, 100*math.Abs(math.Sin(t)))
		cache = append(cache, 1+t/5)
	}
	cpu[10] = math.NaN() // a gap: no engine at that sample
	return Chart{
		ID: "timeline", Title: "Cold start <timeline>",
		X:      Axis{Title: "time since spawn", Unit: "s"},
		Bands:  []Band{{X0: 0, X1: 4, Label: "bootstrap"}, {X0: 4, X1: 6.5, Label: "load_weights", Detail: "2.9 GiB"}, {X0: 4, X1: 5, Label: "page_cache_fill"}},
		VLines: []VLine{{X: 7, Label: "cold_1", Color: "#d9534f"}, {X: 8, Label: "warm_1"}},
		Panels: []Panel{
			{Y: Axis{Title: "GPU memory", Unit: "GiB", FromZero: true}, Missing: "no NVML (libnvidia-ml.so.1 not found)"},
			{Y: Axis{Title: "engine CPU", Unit: "% of a core", FromZero: true}, Curves: []Curve{{Name: "engine", X: ts, Y: cpu}}},
			{Y: Axis{Title: "page cache", Unit: "GiB", FromZero: true}, Curves: []Curve{{Name: "page cache", X: ts, Y: cache}}},
		},
	}
}

func TestChartGolden(t *testing.T) {
	tests := []struct {
		name  string
		chart Chart
		must  []string
	}{
		{name: "sweep", chart: sweepChart(), must: []string{`data-xlog="1"`, ">64<", "SLO 200 ms", "knee", "p99, c=16: 95 ms"}},
		{name: "timeline", chart: timelineChart(), must: []string{"not measured: no NVML", "Cold start &lt;timeline&gt;", "bootstrap", "cold_1", "time since spawn (s)", ">10<"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svg := tt.chart.SVG()
			wellFormed(t, svg)
			for _, w := range tt.must {
				if !strings.Contains(svg, w) {
					t.Errorf("SVG lacks %q", w)
				}
			}
			path := filepath.Join("testdata", tt.name+".svg")
			if *update {
				if err := os.WriteFile(path, []byte(svg), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("read golden (run `go test ./internal/plot -run TestChartGolden -update`): %v", err)
			}
			if diff := cmp.Diff(string(want), svg); diff != "" {
				t.Errorf("%s changed (-want +got); rerun with -update and review:\n%s", path, diff)
			}
		})
	}
}

func TestChartSeriesAreDistinguishable(t *testing.T) {
	svg := sweepChart().SVG()
	re := regexp.MustCompile(`<path class="curve"[^>]*stroke="([^"]+)"[^>]*?(?: stroke-dasharray="([^"]+)")?[^>]*data-name="([^"]+)"`)
	ms := re.FindAllStringSubmatch(svg, -1)
	if len(ms) != 3 {
		t.Fatalf("%d curves, want 3", len(ms))
	}
	seen := map[string]string{}
	var order []string
	for _, m := range ms {
		style := m[1] + "|" + m[2]
		if prev, ok := seen[style]; ok {
			t.Errorf("%s and %s share colour and dash %s", prev, m[3], style)
		}
		seen[style] = m[3]
		order = append(order, m[3])
	}
	// p99 is drawn last, on top, so no other series hides it.
	if order[len(order)-1] != "p99" {
		t.Errorf("draw order %v: p99 must be last", order)
	}
	// The NaN p99 at c=64 is a gap, not a point at 0.
	if n := strings.Count(svg, `<path class="pt"`); n != 11 {
		t.Errorf("%d markers, want 11 (4+4+3)", n)
	}
}

func TestChartNeverDrawsAZeroForMissingData(t *testing.T) {
	c := Chart{Title: "x", X: Axis{Title: "t", Unit: "s"}, Panels: []Panel{{Y: Axis{Title: "GPU util", Unit: "%"}, Curves: []Curve{{Name: "util", X: []float64{1, 2}, Y: []float64{math.NaN(), math.NaN()}}}}}}
	svg := c.SVG()
	wellFormed(t, svg)
	if !strings.Contains(svg, ">not measured<") || strings.Contains(svg, `class="curve"`) {
		t.Errorf("a panel with no value must say not measured and draw no curve:\n%s", svg)
	}
}

func TestChartSpread(t *testing.T) {
	xs := []float64{0, 256, 1024, 4096}
	tests := []struct {
		name          string
		lo, hi        []float64
		whiskers      int
		bands         int
		wantTitle     string
		wantMaxYTickA string // a y tick that only the spread's top reaches
	}{
		{name: "every point has a spread: one band, four whiskers", lo: []float64{8, 20, 60, 200}, hi: []float64{12, 30, 90, 420}, whiskers: 4, bands: 1, wantTitle: "cold: 200 – 420", wantMaxYTickA: ">400<"},
		{name: "a NaN splits the band", lo: []float64{8, 20, math.NaN(), 200}, hi: []float64{12, 30, 90, 420}, whiskers: 3, bands: 1, wantTitle: "cold: 8 – 12", wantMaxYTickA: ">400<"},
		{name: "short slices leave the rest without", lo: []float64{8}, hi: []float64{12}, whiskers: 1, bands: 0, wantTitle: "cold: 8 – 12"},
		{name: "no spread draws none", whiskers: 0, bands: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Chart{Title: "spread", X: Axis{Title: "prefix", Unit: "tokens", Ticks: xs}, Panels: []Panel{{
				Y:      Axis{Title: "TTFT p50", Unit: "ms", FromZero: true},
				Curves: []Curve{{Name: "cold", X: xs, Y: []float64{10, 25, 75, 300}, Lo: tt.lo, Hi: tt.hi, Points: true}},
			}}}
			svg := c.SVG()
			wellFormed(t, svg)
			if n := strings.Count(svg, `class="whisker"`); n != tt.whiskers {
				t.Errorf("%d whiskers, want %d", n, tt.whiskers)
			}
			if n := strings.Count(svg, `class="spread"`); n != tt.bands {
				t.Errorf("%d bands, want %d", n, tt.bands)
			}
			if tt.wantTitle != "" && !strings.Contains(svg, tt.wantTitle) {
				t.Errorf("SVG lacks the spread's title %q", tt.wantTitle)
			}
			if tt.wantMaxYTickA != "" && !strings.Contains(svg, tt.wantMaxYTickA) {
				t.Errorf("the y axis does not reach the spread's top (no tick %q)", tt.wantMaxYTickA)
			}
		})
	}
}

func TestChartLegendWraps(t *testing.T) {
	legendYs := func(svg string) map[string]bool {
		ys := map[string]bool{}
		for _, m := range regexp.MustCompile(`<text x="[0-9.]+" y="([0-9.]+)" fill="#222">config `).FindAllStringSubmatch(svg, -1) {
			ys[m[1]] = true
		}
		return ys
	}
	tests := []struct {
		name   string
		curves int
		rows   int
	}{
		{name: "two curves fit on the title's row", curves: 2, rows: 1},
		{name: "eight long names wrap two a row and stay inside the chart", curves: 8, rows: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cs []Curve
			for i := 0; i < tt.curves; i++ {
				cs = append(cs, Curve{Name: "config budget 8192, seqs 128, chunked " + strconv.Itoa(i), X: []float64{1, 2}, Y: []float64{1, float64(i + 2)}})
			}
			svg := Chart{Title: "legend", X: Axis{Title: "c"}, Panels: []Panel{{Y: Axis{Title: "TTFT p95", Unit: "ms"}, Curves: cs}}}.SVG()
			wellFormed(t, svg)
			if got := len(legendYs(svg)); got != tt.rows {
				t.Errorf("legend on %d rows, want %d", got, tt.rows)
			}
			for _, m := range regexp.MustCompile(`<text x="([0-9.]+)" y="[0-9.]+" fill="#222">(config [^<]*)<`).FindAllStringSubmatch(svg, -1) {
				x, _ := strconv.ParseFloat(m[1], 64)
				if end := x + float64(len(m[2]))*charW; end > 760 {
					t.Errorf("legend entry %q ends at %.0f px, past the 760 px chart", m[2], end)
				}
			}
		})
	}
}

func TestChartNoteStaysInside(t *testing.T) {
	tests := []struct {
		name string
		x    float64
		want string
	}{
		{name: "a note mid-chart goes right of its point", x: 5, want: `data-dx="10" x="`},
		{name: "a note at the right edge goes left of it", x: 10, want: `data-dx="-10" x="726.0" y="`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svg := Chart{Title: "n", X: Axis{Title: "x", Pin: true, Min: 0, Max: 10}, Panels: []Panel{{
				Y:      Axis{Title: "y"},
				Curves: []Curve{{Name: "c", X: []float64{0, 10}, Y: []float64{1, 2}}},
				Notes:  []Note{{X: tt.x, Y: 1.5, Label: "throughput, c=64"}},
			}}}.SVG()
			wellFormed(t, svg)
			if !strings.Contains(svg, tt.want) {
				t.Errorf("the note's label lacks %q", tt.want)
			}
		})
	}
}
