package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
)

// TestUpFleetFlagsTheSlowDisk is the fleet baseline's acceptance test:
// `ttftlab up --gpunodes 2 --sweep ""` starts two simulated gpunodes, the
// second with a slow disk, runs the baseline on each, and writes fleet.md
// with one row per node that flags the second node's weights load; `ttftlab
// report DIR` renders the same fleet.md again from events.jsonl.
func TestUpFleetFlagsTheSlowDisk(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns two engines")
	}
	out := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	err := run(ctx, []string{"up", "--gpunodes", "2", "--levels", "", "--out", out, "--run-id", "f1", "--warm-runs", "3",
		"--sim-startup-scale", "0.1", "--agents", "1"}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("up: %v\nstderr:\n%s", err, stderr.String())
	}
	dir := filepath.Join(out, "f1")
	md, err := os.ReadFile(filepath.Join(dir, results.FleetReport))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stdout.String(), "# Fleet cold-start baseline") {
		t.Error("up did not print fleet.md")
	}
	b, err := os.ReadFile(filepath.Join(dir, results.FleetJSON))
	if err != nil {
		t.Fatal(err)
	}
	var f results.FleetResults
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if f.Status != results.StatusOK || len(f.Rows) != 2 || f.Rows[0].Node != "gpunode-1" || f.Rows[1].Node != "gpunode-2" {
		t.Fatalf("fleet.json: status %q, %d rows; want ok and gpunode-1, gpunode-2:\n%s", f.Status, len(f.Rows), md)
	}
	for _, r := range f.Rows {
		if r.Cells["spawn_to_ready"].S == nil || r.Cells["load_weights"].S == nil || r.Cells["cold_ttft"].S == nil || r.Cells["warm_ttft"].S == nil {
			t.Errorf("%s: a figure is missing: %+v", r.Node, r.Cells)
		}
		if _, err := os.Stat(filepath.Join(dir, r.Dir, results.BaselineReport)); err != nil {
			t.Errorf("%s has no baseline report of its own: %v", r.Node, err)
		}
	}
	if f.Rows[0].Cells["load_weights"].Outlier || !f.Rows[1].Cells["load_weights"].Outlier {
		t.Errorf("weights load outliers: gpunode-1 %v, gpunode-2 %v; want only the slow-disk gpunode-2:\n%s",
			f.Rows[0].Cells["load_weights"].Outlier, f.Rows[1].Cells["load_weights"].Outlier, md)
	}
	if !strings.Contains(string(md), "- gpunode-2: weights load ") || !strings.Contains(string(md), ": disk or page cache.") {
		t.Errorf("fleet.md does not name gpunode-2's weights load and its cause:\n%s", md)
	}

	// The report is rebuilt from the events alone.
	if err := os.Remove(filepath.Join(dir, results.FleetReport)); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, []string{"report", dir}, &bytes.Buffer{}, &bytes.Buffer{}); err != nil {
		t.Fatalf("report: %v", err)
	}
	again, err := os.ReadFile(filepath.Join(dir, results.FleetReport))
	if err != nil || !bytes.Equal(again, md) {
		t.Errorf("report re-rendered fleet.md differently (%v):\n%s", err, again)
	}
}
