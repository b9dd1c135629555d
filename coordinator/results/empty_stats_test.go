package results

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/ttftlab/ttftlab/internal/hdr"
)

func TestEmptyStatisticsAreNullAndNA(t *testing.T) {
	empty := hdr.New().Summarize()
	res := &Results{
		Status: "failed",
		Runs: []Run{
			{Label: "cold_1", Error: "http_5xx: 500 boom"},
			{Label: "warm_1", TTFTS: 0.02, E2ES: 0.1, OutputTokens: 8},
		},
		Histograms: map[string]hdr.Summary{hdr.TTFT: empty},
	}
	res.Warm = warmStats(res.Runs)
	sweep := &SweepResults{Levels: []LevelResult{{Value: 4, Metrics: map[string]hdr.Summary{hdr.TTFT: empty}}}}

	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := json.Marshal(sweep)
	if err != nil {
		t.Fatal(err)
	}
	md := RenderMarkdown(res)
	smd := RenderSweepMarkdown(sweep)
	tests := []struct {
		name, in, want string
	}{
		{"one warm run has no stddev", string(b), `"stddev_ttft_s":null`},
		{"one warm run has no drift", string(b), `"drift_s_per_run":null`},
		{"empty histogram", string(b), `"ttft":{"count":0,"mean":null,"min":null,"p50":null`},
		{"no warm run is null", mustJSON(t, &Results{}), `"warm":null`},
		{"level without requests has no rate", string(sb), `"requests_per_s":null,"output_tokens_per_s":null`},
		{"failed run cells", md, "| cold_1 | n/a | n/a | n/a | error: http_5xx: 500 boom |"},
		{"stddev cell", md, "| mean ± stddev | 0.0200 ± n/a |"},
		{"empty histogram row", md, "| ttft | 0 | n/a | n/a | n/a | n/a | n/a |"},
		{"engine never ready", md, "| spawn → ready | n/a (the engine never became ready) |"},
		{"sweep row", smd, "| c=4 | 0 | 0 | 0 | n/a | n/a | n/a | n/a |"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !strings.Contains(tt.in, tt.want) {
				t.Errorf("output lacks %q:\n%s", tt.want, tt.in)
			}
		})
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
