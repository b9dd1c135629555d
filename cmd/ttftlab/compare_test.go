package main

import (
	"bytes"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// loadRun runs `ttftlab load` against url and returns its --out file. One
// request at a time: with several, each request's TTFT depends on where its
// arrival falls in the engine's step cycle, and the p50 can flip between
// those phases from run to run (measured: −2.5% and +48% for the same 20%
// slowdown at concurrency 8), which is the engine's batching, not its speed.
func loadRun(t *testing.T, url, name string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), name+".jsonl")
	err := run(t.Context(), []string{"load", "--url", url, "--concurrency", "1", "--requests", "60", "--warmup-requests", "4",
		"--input-len", "512", "--output-len", "8", "--out", out, "--json"}, io.Discard, io.Discard)
	if err != nil {
		t.Fatalf("load %s: %v", name, err)
	}
	return out
}

// TestCompareFlagsASlowerEngine is the acceptance test of `ttftlab
// compare`: two load runs of one configuration pass the CI rules, and a
// run against an engine made 20% slower (sim --slowdown 1.2) is flagged
// worse on TTFT and E2E and trips --fail-on, with a non-zero exit.
func TestCompareFlagsASlowerEngine(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three short loads against in-process sims")
	}
	// An L4 makes the engine's time, which --slowdown scales, dominate the
	// host's scheduling noise on a loaded CI machine: on the default H200 a
	// 512-token TTFT is a few ms and CPU contention alone can hide 20%.
	base, slow := startSim(t, "--gpu", "l4"), startSim(t, "--gpu", "l4", "--slowdown", "1.2")
	a := loadRun(t, base, "a")
	a2 := loadRun(t, base, "a2")
	b := loadRun(t, slow, "b")
	const rules = "ttft_p50>+10%,e2e_p50>+10%,throughput<-10%"

	t.Run("same configuration passes", func(t *testing.T) {
		var stdout bytes.Buffer
		if err := run(t.Context(), []string{"compare", a, a2, "--fail-on", rules}, &stdout, io.Discard); err != nil {
			t.Fatalf("compare of two equal configurations failed: %v\n%s", err, stdout.String())
		}
		if !strings.Contains(stdout.String(), "Result: passed.") {
			t.Errorf("report does not say passed:\n%s", stdout.String())
		}
	})
	t.Run("20% slower engine trips the rules", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "cmp.json")
		err := run(t.Context(), []string{"compare", "--json", "--out", out, "--fail-on", rules, a, b}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--fail-on tripped") {
			t.Fatalf("err = %v, want --fail-on tripped (a non-zero exit)", err)
		}
		raw, rerr := os.ReadFile(out)
		if rerr != nil {
			t.Fatal(rerr)
		}
		if st, _ := os.Stat(out); st.Mode().Perm() != 0o644 {
			t.Errorf("--out mode %v, want 0644", st.Mode().Perm())
		}
		var c struct {
			Failed bool `json:"failed"`
			Levels []struct {
				Metrics []struct {
					Metric  string   `json:"metric"`
					Change  *float64 `json:"change"`
					Verdict string   `json:"verdict"`
				} `json:"metrics"`
			} `json:"levels"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatalf("--json: %v\n%s", err, raw)
		}
		if !c.Failed || len(c.Levels) != 1 {
			t.Fatalf("failed %v, %d levels; want failed and one level:\n%s", c.Failed, len(c.Levels), raw)
		}
		for _, m := range c.Levels[0].Metrics {
			switch m.Metric {
			case "ttft_p50", "e2e_p50":
				if m.Verdict != "worse" {
					t.Errorf("%s: %s (change %v), want worse", m.Metric, m.Verdict, *m.Change)
				}
				t.Logf("%s change %+.1f%%", m.Metric, 100**m.Change)
			}
		}
	})
}

func TestCompareArgErrors(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.jsonl")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "one run", args: []string{"x"}, wantErr: "want two: ttftlab compare RUN_A RUN_B"},
		{name: "missing run", args: []string{filepath.Join(dir, "nope"), empty}, wantErr: "RUN_A: stat"},
		{name: "directory without events", args: []string{dir, empty}, wantErr: "a run directory holds events.jsonl"},
		{name: "empty file", args: []string{empty, empty}, wantErr: "empty: no run was recorded"},
		{name: "bad rule", args: []string{"--fail-on", "ttft>10%", empty, empty}, wantErr: `metric "ttft" is unknown`},
		{name: "bad bootstrap", args: []string{"--bootstrap", "10", empty, empty}, wantErr: "--bootstrap 10 is too few"},
		{name: "negative min effect", args: []string{"--min-effect", "-1", empty, empty}, wantErr: "--min-effect -1 is negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(t.Context(), append([]string{"compare"}, tt.args...), io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
