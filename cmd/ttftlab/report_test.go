package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ttftlab/ttftlab/coordinator/results"
)

// copyRun copies a fixture's events.jsonl into a fresh run directory.
func copyRun(t *testing.T, fixture string) string {
	t.Helper()
	b, err := os.ReadFile(fixture)
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "run")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, results.EventsFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestReportRebuildsSaveResult checks that `ttftlab report` on a sweep
// rebuilds save_result/ (vLLM's default options, one file per level), and
// with --save-result DIR writes copies with the options given; a baseline
// gets none, and asking for one is an error naming why.
func TestReportRebuildsSaveResult(t *testing.T) {
	dir := copyRun(t, "../../coordinator/results/testdata/sweep.events.jsonl")
	custom := filepath.Join(t.TempDir(), "mine")
	var out bytes.Buffer
	if err := run(t.Context(), []string{"report", "--save-result", custom, "--metric-percentiles", "50,90", dir}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "rebuilt 3 vLLM --save-result files") {
		t.Errorf("output does not say what it rebuilt:\n%s", out.String())
	}
	for _, d := range []string{filepath.Join(dir, results.SaveResultDir), custom} {
		entries, err := os.ReadDir(d)
		if err != nil {
			t.Fatal(err)
		}
		if len(entries) != 3 || entries[0].Name() != "level-01-c1.json" {
			t.Fatalf("%s holds %v, want 3 level files from level-01-c1.json", d, entries)
		}
		var v map[string]any
		b, err := os.ReadFile(filepath.Join(d, entries[1].Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &v); err != nil {
			t.Fatal(err)
		}
		if v["max_concurrency"] != float64(8) || v["completed"] == nil {
			t.Errorf("%s level 2: max_concurrency %v, completed %v", d, v["max_concurrency"], v["completed"])
		}
		_, p90 := v["p90_ttft_ms"]
		if p90 != (d == custom) {
			t.Errorf("%s: p90_ttft_ms present %v, want only with --metric-percentiles 50,90", d, p90)
		}
	}

	base := copyRun(t, "../../coordinator/results/testdata/baseline.events.jsonl")
	out.Reset()
	if err := run(t.Context(), []string{"report", base}, &out, &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(base, results.SaveResultDir)); !os.IsNotExist(err) || strings.Contains(out.String(), "save-result") {
		t.Errorf("a baseline got save_result/ (%v) or says so:\n%s", err, out.String())
	}
	err := run(t.Context(), []string{"report", "--save-result", custom, base}, &out, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "not a sweep") {
		t.Errorf("--save-result on a baseline: %v, want an error saying it is not a sweep", err)
	}
	err = run(t.Context(), []string{"report", "--metric-percentiles", "50", dir}, &out, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "add --save-result DIR") {
		t.Errorf("--metric-percentiles alone: %v", err)
	}
}
