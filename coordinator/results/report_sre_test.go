package results

import (
	"strings"
	"testing"
)

func TestRenderMarkdownExplainsTTFTToAnSRE(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	measured := &Results{
		RunID: "r", Status: "ok",
		Warm: &WarmStats{N: 5, MedianS: 0.042},
		Decomposition: []DecompRow{
			{Component: "spawn → ready", Seconds: f(12.265)},
			{Component: "process start, imports, config", Seconds: f(4.474), Part: true, Depth: 1},
			{Component: "weights: disk/page cache → GPU", Seconds: f(3.311), Part: true, Depth: 1},
			{Component: "page-cache fill (weight files, +2.88 GiB)", Seconds: f(2.387), Part: true, Depth: 2},
			{Component: "CUDA graph capture", Seconds: f(4.430), Part: true, Depth: 1},
			{Component: "API server start", Seconds: f(0.002), Part: true, Depth: 1},
			{Component: "cold TTFT (cold_1)", Seconds: f(0.077)},
			{Component: "restart → first token", Seconds: f(12.342)},
		},
	}
	tests := []struct {
		name    string
		r       *Results
		want    []string
		notWant []string
	}{
		{
			name: "measured run",
			r:    measured,
			want: []string{
				"## How I'd explain TTFT to an SRE",
				"42 ms here",
				"spawn → ready (12.27 s) and then a cold first request (77 ms); restart → first token was 12.34 s",
				"294× a warm TTFT",
				"largest first: process start, imports, config 4.47 s; CUDA graph capture 4.43 s; weights: disk/page cache → GPU 3.31 s; reading the weights from disk into the page cache took 2.39 s",
			},
			notWant: []string{"API server start 0.00 s"},
		},
		{
			name:    "nothing measured",
			r:       &Results{RunID: "r", Status: "failed"},
			want:    []string{"## How I'd explain TTFT to an SRE", "n/a here", "spawn → ready (n/a) and then a cold first request (n/a); restart → first token was n/a."},
			notWant: []string{"Where a restart goes", "× a warm TTFT"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			md := RenderMarkdown(tc.r)
			if !strings.Contains(md, "## How I'd explain TTFT to an SRE") || !strings.Contains(md, "## Observations") {
				t.Fatalf("no SRE section or no Observations:\n%s", md)
			}
			for _, w := range tc.want {
				if !strings.Contains(md, w) {
					t.Errorf("report lacks %q:\n%s", w, md)
				}
			}
			for _, w := range tc.notWant {
				if strings.Contains(md, w) {
					t.Errorf("report has %q:\n%s", w, md)
				}
			}
			if strings.Index(md, "## How I'd explain TTFT to an SRE") > strings.Index(md, "## Observations") {
				t.Errorf("the SRE section comes after Observations")
			}
		})
	}
}
