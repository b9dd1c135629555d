package results

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/ttftlab/ttftlab/internal/hdr"
)

// syntheticPrefix is a full prefix run as the simulator's model would give
// it: prefix lengths 0–4096 with caching on (cold, repeat, hot) and off
// (hot), and a hit-ratio sweep on and off. TTFT is 20 ms + 0.05 ms per
// uncached token.
func syntheticPrefix() *PrefixResults {
	const suffix = 128
	ttft := func(uncached float64) float64 { return 20 + 0.05*uncached }
	res := &PrefixResults{GridRun: GridRun{Kind: ExperimentPrefix, Status: "ok"}, Params: PrefixParams{
		PrefixLens: []int{4096, 0, 256, 1024}, SuffixLen: suffix, HitRatios: []float64{0, 0.25, 0.5, 0.75, 1},
		HitPrefixLen: 1024, Concurrency: 8, Repeats: 3, OutputLen: 16,
	}}
	row := func(mode, sweep, phase string, prefix int, hit *float64, p50, p95 *float64, uncached, speedup *float64, n uint64) PrefixRow {
		r := PrefixRow{Mode: mode, Sweep: sweep, Phase: phase, PrefixLen: prefix, SuffixLen: suffix, HitRatio: hit, Requests: n, Status: "ok",
			TTFTP50Ms: p50, TTFTP95Ms: p95, UncachedFraction: uncached, SpeedupVsCold: speedup}
		if p50 != nil {
			r.TTFT = hdr.Summary{Count: int64(n), Min: *p50 * 0.93, P50: *p50, Max: *p50 * 1.12}
		}
		return r
	}
	for _, l := range []int{0, 256, 1024, 4096} {
		prompt := float64(l + suffix)
		cold := ttft(prompt)
		hotOn := ttft(suffix)
		rep := ttft(16)
		res.Rows = append(res.Rows,
			row(ModeOn, PrefixSweepLen, PhaseCold, l, nil, ptr(cold), nil, ptr(1.0), ptr(1.0), 3),
			row(ModeOn, PrefixSweepLen, PhaseRepeat, l, nil, ptr(rep), nil, ptr(16/prompt), ptr(cold/rep), 3),
			row(ModeOn, PrefixSweepLen, PhaseHot, l, nil, ptr(hotOn), nil, ptr(suffix/prompt), ptr(cold/hotOn), 3),
			row(ModeOff, PrefixSweepLen, PhaseHot, l, nil, ptr(cold*1.01), nil, ptr(1.0), ptr(1/1.01), 3),
		)
	}
	for _, h := range []float64{0, 0.25, 0.5, 0.75, 1} {
		prompt := 1024.0 + suffix
		uncached := 1 - h*1024/prompt
		on, off := 2*ttft(uncached*prompt), 2*ttft(prompt)
		res.Rows = append(res.Rows,
			row(ModeOn, PrefixSweepRatio, PhaseMixed, 1024, ptr(h), ptr(on), ptr(on*1.6), ptr(uncached), ptr(2*ttft(prompt)/on), 40),
			row(ModeOff, PrefixSweepRatio, PhaseMixed, 1024, ptr(h), ptr(off), ptr(off*1.6), ptr(1.0), ptr(1.0), 40))
	}
	return res
}

// TestPrefixPlots renders the prefix charts of a full synthetic run and of
// runs with parts missing, checks what each must show and compares the
// full run's SVGs with testdata/golden/prefix_*.svg (-update rewrites them).
func TestPrefixPlots(t *testing.T) {
	full := syntheticPrefix()
	noRatio := syntheticPrefix()
	var rows []PrefixRow
	for _, r := range noRatio.Rows {
		if r.Sweep != PrefixSweepRatio {
			rows = append(rows, r)
		}
	}
	noRatio.Rows = rows
	empty := syntheticPrefix()
	empty.Rows = nil
	tests := []struct {
		name   string
		res    *PrefixResults
		golden bool
		must   map[string][]string
		mustNo map[string][]string
	}{
		{name: "full run", res: full, golden: true, must: map[string][]string{
			PrefixSVG: {`id="prefix-ttft"`, "shared-prefix length (tokens)", ">0<", ">256<", ">1024<", ">4096<", "cold, caching on (whisker: min–max)", "hot, caching off",
				`class="whisker"`, "prefix 4096, 3 requests", "TTFT p50 (ms)"},
			PrefixSpeedupSVG:  {`id="prefix-speedup"`, "uncached fraction (1 − cached/prompt tokens)", "ceiling 1/uncached", "no speedup", "hit ratio vs 0, on", "speedup vs cold (×)"},
			PrefixHitRatioSVG: {`id="prefix-hit-ratio"`, "hit ratio (share of requests with the warmed prefix)", ">0.25<", "p95, off", "concurrency 8, shared prefix 1024 tokens"},
		}},
		{name: "no hit-ratio sweep", res: noRatio, must: map[string][]string{
			PrefixHitRatioSVG: {"not measured: no hit-ratio step measured a TTFT"},
			PrefixSVG:         {`class="curve"`},
		}, mustNo: map[string][]string{PrefixHitRatioSVG: {`class="curve"`}}},
		{name: "nothing measured", res: empty, must: map[string][]string{
			PrefixSVG:         {"not measured: no prefix-length step measured a TTFT"},
			PrefixSpeedupSVG:  {"not measured: no step has both an uncached fraction and a speedup"},
			PrefixHitRatioSVG: {"not measured"},
		}, mustNo: map[string][]string{PrefixSVG: {`class="curve"`}, PrefixSpeedupSVG: {`class="curve"`, "ceiling"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svgs := renderPrefixPlots(tt.res)
			if len(svgs) != 3 {
				t.Fatalf("%d charts, want 3", len(svgs))
			}
			for file, svg := range svgs {
				if strings.Contains(svg, "NaN") || strings.Contains(svg, "Inf") {
					t.Errorf("%s has a NaN or Inf", file)
				}
				for _, w := range tt.must[file] {
					if !strings.Contains(svg, w) {
						t.Errorf("%s lacks %q", file, w)
					}
				}
				for _, w := range tt.mustNo[file] {
					if strings.Contains(svg, w) {
						t.Errorf("%s has %q", file, w)
					}
				}
				if tt.golden {
					checkGolden(t, file, []byte(svg))
				}
			}
		})
	}
}

// TestPrefixSpeedupPointsAreSortedByFraction checks that the speedup curve
// joins its points in order of the uncached fraction, not of the rows.
func TestPrefixSpeedupPointsAreSortedByFraction(t *testing.T) {
	svg := renderPrefixPlots(syntheticPrefix())[PrefixSpeedupSVG]
	i := strings.Index(svg, `data-name="hot vs cold, on"`)
	if i < 0 {
		t.Fatal("no hot-vs-cold curve")
	}
	j := strings.Index(svg[i:], `data-x="`)
	xs := strings.Fields(svg[i+j+len(`data-x="`) : i+j+strings.Index(svg[i+j+8:], `"`)+8])
	prev := math.Inf(-1)
	for _, x := range xs {
		var v float64
		if _, err := fmt.Sscan(x, &v); err != nil {
			t.Fatalf("data-x %q: %v", x, err)
		}
		if v < prev {
			t.Fatalf("data-x %v is not sorted", xs)
		}
		prev = v
	}
	if len(xs) != 4 {
		t.Errorf("%d points, want one per prefix length (4)", len(xs))
	}
}

func TestPrefixTicks(t *testing.T) {
	tests := []struct {
		name string
		in   []float64
		want string
	}{
		{name: "default lengths all fit", in: []float64{0, 256, 1024, 4096}, want: "[0 256 1024 4096]"},
		{name: "crowded short lengths are thinned, the largest kept", in: []float64{0, 16, 64, 256, 1024, 4096}, want: "[0 256 1024 4096]"},
		{name: "the largest replaces a neighbour too close", in: []float64{0, 1000, 990 + 1000, 2000}, want: "[0 1000 2000]"},
		{name: "ratios", in: []float64{0, 0.25, 0.5, 0.75, 1}, want: "[0 0.25 0.5 0.75 1]"},
		{name: "one value", in: []float64{512}, want: "[512]"},
		{name: "none", in: nil, want: "[]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmt.Sprint(prefixTicks(tt.in)); got != tt.want {
				t.Errorf("prefixTicks(%v) = %s, want %s", tt.in, got, tt.want)
			}
		})
	}
}
