package results

import (
	"fmt"
	"strings"
	"testing"

	"github.com/ttftlab/ttftlab/internal/hdr"
)

// syntheticPresets is the default presets grid (budgets 2048 and 8192,
// max_num_seqs 32 and 128, chunked prefill on and off) at concurrencies 8,
// 32 and 64, one point refused, with both presets chosen.
func syntheticPresets() *PresetsResults {
	res := &PresetsResults{GridRun: GridRun{Kind: ExperimentPresets, Status: "ok"}, Params: PresetsParams{
		MaxNumBatchedTokens: []int{2048, 8192}, MaxNumSeqs: []int{32, 128}, ChunkedPrefill: []bool{true, false},
		Concurrencies: []int{8, 32, 64}, SLOTTFTMs: 500, MaxTTFTMs: 2000,
	}}
	i := 0
	for _, budget := range []int{2048, 8192} {
		for _, seqs := range []int{32, 128} {
			for _, chunked := range []bool{true, false} {
				p := PresetPoint{Point: i, MaxNumBatchedTokens: budget, MaxNumSeqs: seqs, ChunkedPrefill: chunked, Status: "ok"}
				if i == 3 {
					p.Status, p.Error = "refused", "max_num_batched_tokens (2048) is smaller than max_model_len (4096)"
				} else {
					for lv, c := range []int{64, 8, 32} { // out of order: the chart sorts them
						ttft := 40 + float64(c*c)/float64(seqs)*float64(2+i%3)
						tps := float64(c) * 60 * float64(budget) / (float64(budget) + 1000) * (1 + float64(i)/10)
						p.Levels = append(p.Levels, PresetLevel{Level: lv, Concurrency: c, Status: "ok", Eligible: true,
							Metrics: map[string]hdr.Summary{hdr.TTFT: {Count: 200, P50: ttft / 2, P95: ttft}}, TokensPerS: ptr(tps)})
					}
				}
				res.Points = append(res.Points, p)
				i++
			}
		}
	}
	pick := func(name string, point, level int) Preset {
		l := res.Points[point].Levels[level]
		pt := point
		return Preset{Name: name, Found: true, Point: &pt, Concurrency: l.Concurrency, TTFTP95Ms: ptr(l.Metrics[hdr.TTFT].P95), TokensPerS: l.TokensPerS}
	}
	res.Interactive, res.Throughput = pick(PresetInteractive, 6, 2), pick(PresetThroughput, 7, 0)
	return res
}

// TestPresetsPlots renders the presets charts of the synthetic grid and of
// grids with parts missing, checks what each must show and compares the
// full grid's SVGs with testdata/golden/presets_*.svg (-update rewrites
// them).
func TestPresetsPlots(t *testing.T) {
	full := syntheticPresets()
	same := syntheticPresets()
	same.Throughput = same.Interactive
	same.Throughput.Name = PresetThroughput
	none := syntheticPresets()
	none.Interactive, none.Throughput = Preset{Name: PresetInteractive, Reason: "no level met the SLO"}, Preset{Name: PresetThroughput}
	refused := syntheticPresets()
	for i := range refused.Points {
		refused.Points[i].Levels, refused.Points[i].Status = nil, "refused"
	}
	refused.Interactive, refused.Throughput = Preset{}, Preset{}
	tests := []struct {
		name   string
		res    *PresetsResults
		golden bool
		must   map[string][]string
		mustNo map[string][]string
	}{
		{name: "default grid", res: full, golden: true, must: map[string][]string{
			PresetsTTFTSVG: {`id="presets-ttft"`, `data-xlog="1"`, ">8<", ">32<", ">64<", "SLO 500 ms (interactive)", "max 2000 ms (throughput)",
				"interactive, c=32", "throughput, c=64", "budget 8192, seqs 128, chunked off", "TTFT p95 (ms)"},
			PresetsThroughputSVG: {`id="presets-throughput"`, "output throughput (tokens/s)", "interactive, c=32", "throughput, c=64"},
			PresetsParetoSVG:     {`id="presets-pareto"`, "output throughput (tokens/s)", "SLO 500 ms", "interactive, c=32", "throughput, c=64"},
		}, mustNo: map[string][]string{PresetsTTFTSVG: {"budget 2048, seqs 128, chunked off"}}}, // the refused point
		{name: "one level is both presets: one note", res: same, must: map[string][]string{
			PresetsTTFTSVG: {"interactive + throughput, c=32"},
		}},
		{name: "no preset: no note", res: none, mustNo: map[string][]string{
			PresetsTTFTSVG: {"interactive, c=", "throughput, c="}, PresetsParetoSVG: {"interactive, c="},
		}},
		{name: "every point refused", res: refused, must: map[string][]string{
			PresetsTTFTSVG:       {"not measured: no point measured a TTFT"},
			PresetsThroughputSVG: {"not measured: no point streamed a token"},
			PresetsParetoSVG:     {"not measured: no level has both a throughput and a TTFT"},
		}, mustNo: map[string][]string{PresetsTTFTSVG: {`class="curve"`}, PresetsParetoSVG: {`class="curve"`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ttft, tput, pareto := renderPresetsPlots(tt.res)
			for file, svg := range map[string]string{PresetsTTFTSVG: ttft, PresetsThroughputSVG: tput, PresetsParetoSVG: pareto} {
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

// TestPresetsPlotsSortLevels checks that a point's levels are drawn in
// order of concurrency, whatever order they ran in.
func TestPresetsPlotsSortLevels(t *testing.T) {
	ttft, _, _ := renderPresetsPlots(syntheticPresets())
	want := fmt.Sprintf(`data-x="%s"`, "8 32 64")
	if n := strings.Count(ttft, want); n != 7 {
		t.Errorf("%d curves with %s, want the 7 started points", n, want)
	}
}
