package main

import (
	"bytes"
	"context"
	"encoding/json"
	"github.com/ttftlab/ttftlab/coordinator/results"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for the ttftlab binary: the
// gpunode's sim profile re-executes os.Executable() with "sim", which here
// is this test binary.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "sim" {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestUpRunsTheWholeBaseline runs `ttftlab up` in process: coordinator,
// gpunode and two agents join one gossip cluster on loopback, the gpunode
// spawns the simulated engine as a child process, and the report comes out.
func TestUpRunsTheWholeBaseline(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns an engine")
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"up", "--out", out, "--run-id", "t1", "--warm-runs", "4", "--sim-startup-scale", "0.05", "--agents", "2", "--repeats", "2",
		"--levels", "1,4", "--level-duration", "1500ms", "--warmup", "0", "--input-len", "64", "--output-len", "16",
		"--save-result", filepath.Join(out, "vllm"), "--result-label", "lab", "--metric-percentiles", "50,99.9", "--percentile-metrics", "ttft,e2el", "--progress"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("up: %v\nstderr:\n%s", err, stderr.String())
	}
	// --progress shows the sweep's progress on a pipe too.
	if !strings.Contains(stderr.String(), "progress: level 2 of 2, ") {
		t.Errorf("stderr lacks the sweep's progress line:\n%s", stderr.String())
	}
	dir := filepath.Join(out, "t1")
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res results.Results
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != "ok" || !res.Simulated {
		t.Fatalf("status %q simulated %v", res.Status, res.Simulated)
	}
	var labels []string
	for _, r := range res.Runs {
		if strings.HasPrefix(r.Label, "r2/") {
			continue // the second restart's runs
		}
		labels = append(labels, r.Label)
		if r.Error != "" || r.OutputTokens != 64 || r.TTFTS <= 0 || r.E2ES < r.TTFTS {
			t.Errorf("run %+v: want no error, 64 tokens, 0 < ttft <= e2e", r)
		}
	}
	if got := strings.Join(labels, ","); got != "cold_1,warm_1,warm_2,warm_3,warm_4" {
		t.Errorf("runs %s", got)
	}
	if len(res.Runs) == 5 && res.Runs[0].TTFTS <= res.Runs[1].TTFTS {
		t.Errorf("cold TTFT %.4f s is not above warm %.4f s", res.Runs[0].TTFTS, res.Runs[1].TTFTS)
	}
	if res.Engine.ReadyS <= 0 {
		t.Errorf("engine.ready_s = %v", res.Engine.ReadyS)
	}
	phases := map[string]bool{}
	for _, p := range res.Engine.Phases {
		phases[p.Name] = true
	}
	for _, want := range []string{"load_weights", "memory_profile_kv_alloc", "ready"} {
		if !phases[want] {
			t.Errorf("engine.phases lacks %s: %v", want, res.Engine.Phases)
		}
	}
	if !strings.Contains(strings.Join(res.Engine.Argv, " "), "--enforce-eager") {
		t.Errorf("argv %v lacks --enforce-eager, the up default", res.Engine.Argv)
	}
	md := stdout.String()
	for _, want := range []string{"## Server Config", "## Single-Run Measurements (Cold vs Warm)", "## Warm-Run Variance (steady state)",
		"## Sanity Metrics", "## Observations", "Simulated engine", "startup durations scaled"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "events.jsonl")); err != nil {
		t.Error(err)
	}

	// The sweep ran on both agents at c=4 against the same engine, and the
	// merge lost nothing.
	b, err = os.ReadFile(filepath.Join(out, "t1-sweep", "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var sw results.SweepResults
	if err := json.Unmarshal(b, &sw); err != nil {
		t.Fatal(err)
	}
	if len(sw.Levels) != 2 || !sw.Simulated {
		t.Fatalf("sweep levels %d simulated %v, want 2 and true", len(sw.Levels), sw.Simulated)
	}
	for _, l := range sw.Levels {
		if l.Requests == 0 || l.Errors != 0 || l.Metrics["ttft"].Count != int64(l.Requests) {
			t.Errorf("level %g: %d ok, %d errors, ttft count %d: want every success in the merged histogram", l.Value, l.Requests, l.Errors, l.Metrics["ttft"].Count)
		}
		for a, c := range l.Coverage {
			if !c.Final {
				t.Errorf("level %g: agent %s sent no final report", l.Value, a)
			}
		}
	}
	if c4 := sw.Levels[1]; len(c4.Coverage) != 2 {
		t.Errorf("c=4 ran on %d agents, want 2", len(c4.Coverage))
	}
	if !strings.Contains(stdout.String(), "# Load sweep") {
		t.Error("up did not print the sweep report")
	}
	// --save-result DIR: one vLLM-format file per level, with the options
	// asked for; the run directory's save_result/ has vLLM's defaults.
	for i, name := range []string{"level-01-c1.json", "level-02-c4.json"} {
		b, err := os.ReadFile(filepath.Join(out, "vllm", name))
		if err != nil {
			t.Fatal(err)
		}
		var got map[string]any
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatal(err)
		}
		l := sw.Levels[i]
		if got["label"] != "lab" || got["completed"] != float64(l.Successes) || got["total_input_tokens"] != float64(64*l.Successes) {
			t.Errorf("%s: label %v completed %v total_input_tokens %v; want lab, %d, %d", name, got["label"], got["completed"], got["total_input_tokens"], l.Successes, 64*l.Successes)
		}
		for _, k := range []string{"p50_ttft_ms", "p99.9_ttft_ms", "mean_e2el_ms", "p99.9_e2el_ms"} {
			if _, ok := got[k].(float64); !ok {
				t.Errorf("%s: %s = %v, want a number", name, k, got[k])
			}
		}
		if _, ok := got["mean_tpot_ms"]; ok {
			t.Errorf("%s has tpot keys; --percentile-metrics asked for ttft,e2el", name)
		}
		if _, err := os.Stat(filepath.Join(out, "t1-sweep", results.SaveResultDir, name)); err != nil {
			t.Errorf("the run directory lacks its own copy: %v", err)
		}
	}
	if sw.PromptLenSource != "tokenize" || !strings.Contains(stdout.String(), "Prompt lengths: tokenize") {
		t.Errorf("results.json prompt_len_source %q; sweep.md must say where the prompt lengths came from", sw.PromptLenSource)
	}
}

func TestUpRejectsBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--agents", "0"}, "--agents 0"},
		{[]string{"--max-model-len", "-1"}, "--max-model-len -1"},
		{[]string{"--enforce-eager=maybe"}, `"maybe" is not a boolean`},
		{[]string{"--sim-startup-scale", "0"}, "--sim-startup-scale 0"},
		{[]string{"stray"}, `unexpected argument "stray"`},
		{[]string{"--run-id", strings.Repeat("r", 95)}, "--run-id is 95 characters"},
		{[]string{"--sweep", "1,x"}, `level "x"`},
		{[]string{"--max-error-rate", "2"}, `-max-error-rate: "2" is not a fraction`},
		{[]string{"--error-window", "1ms"}, "--error-window 1ms is invalid"},
		{[]string{"--levels", "1,200000"}, "--levels 200000 is over the concurrency limit"},
		{[]string{"--sweep-load", "gamma"}, "--burstiness 0 is invalid for gamma arrivals"},
		{[]string{"--warm-runs", "0"}, "--warm-runs 0 is out of range"},
		{[]string{"--repeats", "101"}, "--repeats 101 is out of range"},
		{[]string{"--max-tokens", "0"}, "--max-tokens 0 is out of range"},
		{[]string{"--cold-mode", "frozen"}, `--cold-mode "frozen" is unknown`},
		{[]string{"--api", "responses"}, `--api "responses" is unknown`},
		{[]string{"--run-id", "a/b"}, `--run-id "a/b" is not a safe directory name`},
		{[]string{"--gpu-memory-utilization", "1.5"}, "--gpu-memory-utilization 1.5 is out of range"},
		{[]string{"--max-num-seqs", "99999999999"}, "99999999999 is out of range"},
		{[]string{"--gpunodes", "0"}, "--gpunodes 0 is out of range: use 1..16"},
		{[]string{"--gpunodes", "17"}, "--gpunodes 17 is out of range: use 1..16"},
		{[]string{"--gpunodes", "2", "--levels", "1,8"}, `--levels 1,8 with --gpunodes 2: a fleet compares the nodes' cold starts and runs no sweep; pass --levels ""`},
		{[]string{"--gpunodes", "2", "--levels", "", "--save-result", "unused"}, "--save-result with --gpunodes 2: a fleet runs no sweep"},
		{[]string{"--levels", "", "--save-result", "unused"}, "--save-result with --levels \"\": no sweep runs"},
		{[]string{"--save-detailed"}, "--save-detailed is not available on a sweep: the per-request arrays"},
		{[]string{"--result-label", "x"}, "--result-label shapes the --save-result files: add --save-result DIR"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			var stderr bytes.Buffer
			_, err := parseUp(tt.args, &stderr)
			if err == nil || !strings.Contains(err.Error()+stderr.String(), tt.want) {
				t.Errorf("err = %v (stderr %q), want it to mention %s", err, stderr.String(), tt.want)
			}
		})
	}
}

// TestBaselineRejectsBadFlags checks `baseline`'s flags, --out (the
// subdirectory asked of the coordinator) among them, before it dials.
func TestBaselineRejectsBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"out escapes", []string{"--out", "../up"}, `--out "../up" must be a relative path`},
		{"zero warm runs", []string{"--warm-runs", "0"}, "--warm-runs 0 is out of range"},
		{"unknown cold mode", []string{"--cold-mode", "frozen"}, `--cold-mode "frozen" is unknown`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runBaseline(context.Background(), tt.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("runBaseline = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestUnknownCommand(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"launch"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), `unknown command "launch"`) {
		t.Errorf("err = %v", err)
	}
}
