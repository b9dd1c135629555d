package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
)

func TestKVScaleFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad length", []string{"--max-model-len", "2048,abc"}, `--max-model-len: "abc" is not a positive whole number`},
		{"empty lengths", []string{"--max-model-len", ","}, "--max-model-len is empty"},
		{"utilisation above 1", []string{"--gpu-memory-utilization", "0.5,1.2"}, `--gpu-memory-utilization: "1.2" is not a fraction in (0, 1]`},
		{"length too short for the prompts", []string{"--max-model-len", "100"}, "--max-model-len 100 is out of range"},
		{"too many points", []string{"--max-model-len", "1024,2048,3072,4096,5120,6144,7168,8192,9216", "--gpu-memory-utilization", "0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8"}, "the grid has 72 points"},
		{"unknown api", []string{"--api", "embeddings"}, `--api "embeddings" is unknown`},
		// The names come from a rename table, not a text replacer: "api" in
		// a value stays as written.
		{"run id containing api", []string{"--run-id", "x/api"}, `--run-id "x/api" is not a safe directory name`},
		{"output length out of range", []string{"--output-len", "5000"}, "--output-len 5000 is out of range"},
		{"cluster flags with --coordinator", []string{"--coordinator", "127.0.0.1:1", "--agents", "3"}, "configure the in-process cluster"},
		{"startup scale out of range", []string{"--sim-startup-scale", "0"}, "--sim-startup-scale 0 is out of range"},
		{"stray argument", []string{"now"}, `unexpected argument "now"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseKVScale(tt.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("parseKVScale(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

func TestKVScaleDefaults(t *testing.T) {
	c, err := parseKVScale(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r := c.req
	if r.GetProfile() != "sim" || r.GetKnobs().GetGpu() != kvscaleDefaultGPU || r.GetKnobs().GetModel() != kvscaleDefaultModel || r.GetApi() != "completions" || c.startupScale != kvscaleStartupScale {
		t.Fatalf("defaults %v, startup scale %g", r, c.startupScale)
	}
	// A real engine keeps its own GPU and eager mode.
	c, err = parseKVScale([]string{"--profile", "vllm"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.req.GetKnobs().GetGpu() != "" || c.req.GetKnobs().GetEnforceEager() != 0 {
		t.Fatalf("vllm profile knobs %v: want no simulated GPU and the engine's own eager mode", c.req.GetKnobs())
	}
}

// TestKVScaleAcceptance is issue 11's acceptance run: `ttftlab kvscale
// --max-model-len 2048,4096,8192 --gpu-memory-utilization 0.5,0.9` on the
// simulator, in process. Every point's reported KV tokens agree with
// kvcalc's within 2 %, and where C* is within the tested range the onset of
// preemption or a standing queue lies within 25 % of it. It takes several
// minutes on a 2-core host: go test -run TestKVScaleAcceptance -timeout 20m ./cmd/ttftlab/
func TestKVScaleAcceptance(t *testing.T) {
	if testing.Short() || os.Getenv("TTFTLAB_ACCEPTANCE") == "" {
		t.Skip("runs six engine restarts and about 25 load steps (about 10 minutes): run it with make test-acceptance")
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 18*time.Minute)
	defer cancel()
	var stdout, stderr strings.Builder
	err := runKVScale(ctx, []string{"--out", out, "--run-id", "acc", "--quiet", "--max-model-len", "2048,4096,8192", "--gpu-memory-utilization", "0.5,0.9"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("kvscale: %v\n%s", err, tail(stderr.String(), 4000))
	}
	dir := filepath.Join(out, "acc")
	f, err := os.Open(filepath.Join(dir, results.KVScaleCSV))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rows[0], ","); got != strings.Join(results.KVScaleColumns, ",") {
		t.Fatalf("CSV header %s", got)
	}
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res results.KVScaleResults
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != "ok" || len(res.Points) != 6 {
		t.Fatalf("status %q with %d points", res.Status, len(res.Points))
	}
	for _, p := range res.Points {
		if p.Status != results.PointOK || p.KVTokensDiffPct == nil || math.Abs(*p.KVTokensDiffPct) > 2 {
			t.Errorf("%s: status %q, KV tokens reported %v vs predicted %v: want ok within 2%%", p.Label, p.Status, p.KVTokensReported, p.Prediction.KVTokens)
			continue
		}
		cs := *p.Plan.CStar
		switch {
		case p.Onset != nil:
			t.Logf("%s: C* %d, onset %d (%s, %+.0f%%)", p.Label, cs, *p.Onset, p.OnsetKind, *p.OnsetVsCStarPct)
			if math.Abs(*p.OnsetVsCStarPct) > 25 {
				t.Errorf("%s: onset %d is %+.0f%% from C* %d, want within 25%%", p.Label, *p.Onset, *p.OnsetVsCStarPct, cs)
			}
		case p.Plan.Capped && float64(cs)*1.25 > float64(res.Params.MaxConcurrency):
			t.Logf("%s: C* %d, onset above the tested range (cap %d)", p.Label, cs, res.Params.MaxConcurrency)
		default:
			t.Errorf("%s: no onset up to concurrency %d with C* %d in range", p.Label, p.Levels[len(p.Levels)-1].Concurrency, cs)
		}
	}
	for _, name := range []string{results.KVScaleReport, results.KVScaleSVG, "events.jsonl"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Error(err)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}
