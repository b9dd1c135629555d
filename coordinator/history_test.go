package coordinator

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLoadDoneRunsAfterRestart: a coordinator started over an --out that
// holds earlier runs lists them as done, newest last, from their
// results.json alone; malformed files are skipped, not fatal, and runs
// deeper than the limit or past the cap are left out.
func TestLoadDoneRunsAfterRestart(t *testing.T) {
	dir := t.TempDir()
	write := func(rel, body string) {
		t.Helper()
		p := filepath.Join(dir, rel, "results.json")
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("base", `{"run_id":"base","status":"ok","started_at":"2026-12-01T10:00:00Z","finished_at":"2026-12-01T10:01:00Z","runs":[]}`)
	write("sweeps/sw", `{"kind":"sweep","run_id":"sw","status":"failed","error":"engine exited","started_at":"2026-12-01T11:00:00Z","finished_at":"2026-12-01T11:05:00Z"}`)
	write("cut", `{"kind":"kvscale","run_id":"cut","status":"incomplete","started_at":"2026-12-01T10:30:00Z","finished_at":"0001-01-01T00:00:00Z"}`)
	write("garbage", `{"run_id":`)
	write("no-status", `{"run_id":"x","started_at":"2026-12-01T10:00:00Z"}`)
	write("backwards", `{"run_id":"y","status":"ok","started_at":"2026-12-01T10:00:00Z","finished_at":"2026-12-01T09:00:00Z"}`)
	write("a/b/c/d/deep", `{"run_id":"deep","status":"ok","started_at":"2026-12-01T10:00:00Z","finished_at":"2026-12-01T10:01:00Z"}`)

	c := New(Config{OutDir: dir}, nil, nil, nil)
	var got []string
	for _, r := range c.Runs() {
		if r.State != RunDone {
			t.Errorf("run %s is %s, want done", r.RunID, r.State)
		}
		got = append(got, r.RunID+"/"+r.Experiment+"/"+r.Status)
	}
	if want := "base/baseline/ok cut/kvscale/incomplete sw/sweep/failed"; strings.Join(got, " ") != want {
		t.Errorf("runs after restart: %v, want %s", got, want)
	}
	for _, r := range c.Runs() {
		if r.RunID == "sw" && (r.Error != "engine exited" || r.End.Sub(r.Start) != 5*time.Minute) {
			t.Errorf("sweep run %+v: want its error and a 5 min span", r)
		}
	}

	if runs := loadDoneRuns(dir, 2, nil); len(runs) != 2 || runs[0].RunID != "cut" || runs[1].RunID != "sw" {
		t.Errorf("capped at 2: %+v, want the two newest (cut, sw)", runs)
	}
	if runs := loadDoneRuns(filepath.Join(dir, "missing"), 10, nil); len(runs) != 0 {
		t.Errorf("a missing --out gives %v, want none", runs)
	}
}

// FuzzParseRunHeader: no results.json, however mangled, panics the
// coordinator at start, and what it accepts is valid.
func FuzzParseRunHeader(f *testing.F) {
	f.Add([]byte(`{"kind":"sweep","run_id":"sw","status":"failed","error":"e","started_at":"2026-12-01T11:00:00Z","finished_at":"2026-12-01T11:05:00Z"}`))
	f.Add([]byte(`{"run_id":"base","status":"ok","started_at":"2026-12-01T10:00:00Z"}`))
	f.Add([]byte(`{"run_id":"\u0000","status":"ok"}`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := parseRunHeader(b)
		if err != nil {
			return
		}
		if r.RunID == "" || r.Status == "" || r.Start.IsZero() || (!r.End.IsZero() && r.End.Before(r.Start)) || r.State != RunDone || len(r.Error) > 4100 {
			t.Fatalf("accepted an invalid header: %+v", r)
		}
	})
}
