package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
)

func TestPrefixFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"bad prefix length", []string{"--prefix-lens", "0,abc"}, `--prefix-lens: "abc" is not a whole number`},
		{"hit ratio above 1", []string{"--hit-ratios", "0,1.5"}, `--hit-ratios: "1.5" is not a fraction in [0, 1]`},
		{"prompt longer than the context", []string{"--prefix-lens", "16384"}, "--max-model-len 8192 is shorter than the longest request"},
		{"no repeats", []string{"--repeats", "-1"}, "--repeats -1 is out of range"},
		{"unknown api", []string{"--api", "embeddings"}, `--api "embeddings" is unknown`},
		{"cluster flags with --coordinator", []string{"--coordinator", "127.0.0.1:1", "--sim-noop-reset"}, "configure the in-process cluster"},
		{"stray argument", []string{"now"}, `unexpected argument "now"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parsePrefix(tt.args, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("parsePrefix(%q) = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

// prefixCSV reads a run's prefix_caching.csv as maps keyed by column.
func prefixCSV(t *testing.T, dir string) []map[string]string {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, results.PrefixCSV))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(rows[0], ","); got != strings.Join(results.PrefixColumns, ",") {
		t.Fatalf("CSV header %s", got)
	}
	var out []map[string]string
	for _, r := range rows[1:] {
		m := map[string]string{}
		for i, c := range rows[0] {
			m[c] = r[i]
		}
		out = append(out, m)
	}
	return out
}

func prefixRow(t *testing.T, rows []map[string]string, mode, sweep, phase, prefixLen string) map[string]string {
	t.Helper()
	for _, r := range rows {
		if r["mode"] == mode && r["sweep"] == sweep && r["phase"] == phase && r["prefix_len"] == prefixLen {
			return r
		}
	}
	t.Fatalf("no %s %s %s row at prefix %s", mode, sweep, phase, prefixLen)
	return nil
}

func cellFloat(t *testing.T, r map[string]string, col string) float64 {
	t.Helper()
	v, err := strconv.ParseFloat(r[col], 64)
	if err != nil {
		t.Fatalf("%s = %q: %v", col, r[col], err)
	}
	return v
}

// checkPrefixAcceptance asserts issue 11's acceptance on a finished run:
// on the simulator, hot TTFT at a 4,096-token prefix is at least 3× lower
// than cold and the verified hit rate is above 90 %.
func checkPrefixAcceptance(t *testing.T, dir string, withOff bool) {
	t.Helper()
	rows := prefixCSV(t, dir)
	cold, hot := prefixRow(t, rows, "on", "prefix_len", "cold", "4096"), prefixRow(t, rows, "on", "prefix_len", "hot", "4096")
	ratio := cellFloat(t, cold, "ttft_p50_ms") / cellFloat(t, hot, "ttft_p50_ms")
	hit := cellFloat(t, hot, "hit_rate_metric")
	t.Logf("prefix 4096: cold %s ms, hot %s ms (%.2f×), hit rate %.3f, uncached %s", cold["ttft_p50_ms"], hot["ttft_p50_ms"], ratio, hit, hot["uncached_fraction"])
	if ratio < 3 || hit <= 0.9 {
		t.Errorf("hot/cold %.2f× (want ≥ 3×), hit rate %.3f (want > 0.9)", ratio, hit)
	}
	if cold["ttft_p95_ms"] != "" || cold["cached_tokens_mean"] != "" {
		t.Errorf("a 5-request cold step has p95 %q and cached_tokens %q: both must be empty (too few requests; nothing cached)", cold["ttft_p95_ms"], cold["cached_tokens_mean"])
	}
	if withOff {
		off := prefixRow(t, rows, "off", "prefix_len", "hot", "4096")
		if s := cellFloat(t, off, "speedup_vs_cold"); s > 1.3 {
			t.Errorf("with caching off hot is %.2f× cold: want about 1×", s)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res results.PrefixResults
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != "ok" || len(res.Resets) == 0 || len(res.Observations) < 3 {
		t.Fatalf("status %q, %d resets, observations %q", res.Status, len(res.Resets), res.Observations)
	}
	for _, c := range res.Resets {
		if !c.Verified || c.AfterHits == nil || *c.AfterHits != 0 {
			t.Errorf("reset before %s: verified %v, hits after %v", c.Before, c.Verified, c.AfterHits)
		}
	}
	md, err := os.ReadFile(filepath.Join(dir, results.PrefixReport))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "Caching pays from a prefix of") || !strings.Contains(string(md), results.PrefixSVG) {
		t.Errorf("the report lacks the computed observation or the plot:\n%s", md)
	}
}

// TestPrefixOnSimulator runs a short `ttftlab prefix` in process (two
// prefix lengths, two hit ratios, on and off), checks the acceptance
// figures, then re-renders it with `ttftlab report`.
func TestPrefixOnSimulator(t *testing.T) {
	if testing.Short() {
		t.Skip("restarts the simulated engine twice (about a minute)")
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var stdout, stderr strings.Builder
	err := runPrefix(ctx, []string{"--out", out, "--run-id", "p", "--quiet", "--prefix-lens", "0,4096", "--hit-ratios", "0,1", "--hit-prefix-len", "1024",
		"--step-duration", "1s", "--step-warmup", "500ms"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("prefix: %v\n%s", err, tail(stderr.String(), 4000))
	}
	dir := filepath.Join(out, "p")
	checkPrefixAcceptance(t, dir, true)
	before, err := os.ReadFile(filepath.Join(dir, results.PrefixCSV))
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(filepath.Join(dir, results.PrefixCSV))
	if err := runReport(ctx, []string{dir}, io.Discard, io.Discard); err != nil {
		t.Fatalf("report: %v", err)
	}
	after, err := os.ReadFile(filepath.Join(dir, results.PrefixCSV))
	if err != nil || string(after) != string(before) {
		t.Errorf("ttftlab report did not re-render the same CSV (err %v)", err)
	}
}

// TestPrefixNoopResetFailsRun: a simulator whose reset answers 200 and does
// nothing fails the run, in its status, its report and its exit.
func TestPrefixNoopResetFailsRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts the simulated engine")
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var stderr strings.Builder
	err := runPrefix(ctx, []string{"--out", out, "--run-id", "n", "--quiet", "--sim-noop-reset", "--prefix-lens", "256", "--hit-ratios", "1", "--skip-off", "--repeats", "1"}, io.Discard, &stderr)
	if err == nil || !strings.Contains(err.Error(), "not verified") || !strings.Contains(err.Error(), "was not reset") {
		t.Fatalf("err = %v, want the failed reset verification\n%s", err, tail(stderr.String(), 3000))
	}
	dir := filepath.Join(out, "n")
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res results.PrefixResults
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != results.StatusFailed || len(res.Resets) != 1 || res.Resets[0].Verified {
		t.Fatalf("status %q, resets %+v: want failed with one unverified reset", res.Status, res.Resets)
	}
	md, err := os.ReadFile(filepath.Join(dir, results.PrefixReport))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"**The run failed:**", "| **no**: ", "**Reset not verified**"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}
}

// TestPrefixAcceptance is issue 11's acceptance run with the defaults:
// `ttftlab prefix --out DIR`, about 2.5 minutes on a 2-core host; make
// test-acceptance runs it.
func TestPrefixAcceptance(t *testing.T) {
	if testing.Short() || os.Getenv("TTFTLAB_ACCEPTANCE") == "" {
		t.Skip("the default run takes about 2.5 minutes: run it with make test-acceptance")
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var stderr strings.Builder
	if err := runPrefix(ctx, []string{"--out", out, "--run-id", "acc", "--quiet"}, io.Discard, &stderr); err != nil {
		t.Fatalf("prefix: %v\n%s", err, tail(stderr.String(), 4000))
	}
	checkPrefixAcceptance(t, filepath.Join(out, "acc"), true)
}
