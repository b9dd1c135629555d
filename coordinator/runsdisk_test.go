package coordinator

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
)

// TestRunsSurviveARestart runs two baselines, one ok and one failed, then
// starts a new coordinator over the same results directory: it lists both,
// done, with their status, error, lease and times, newest first.
func TestRunsSurviveARestart(t *testing.T) {
	c := newTestCoordinator(t, &fakeGPU{}, &fakeAgent{ttft: coldWarm})
	out := c.cfg.OutDir
	if _, err := c.RunBaseline(context.Background(), BaselineSpec{WarmRuns: 2, RunID: "first"}, nil); err != nil {
		t.Fatal(err)
	}
	// The second run, by another coordinator over the same directory, fails.
	failing := New(c.cfg, members, fakeDialer{gpu: &fakeGPU{startErr: errors.New("engine exited with code 1")}, agent: &fakeAgent{ttft: coldWarm}}, nil)
	if _, err := failing.RunBaseline(context.Background(), BaselineSpec{WarmRuns: 2, RunID: "second"}, nil); err == nil {
		t.Fatal("the second run did not fail")
	}
	// The failed run's events are newer on disk.
	later := time.Now().Add(time.Minute)
	if err := os.Chtimes(filepath.Join(out, "second", results.EventsFile), later, later); err != nil {
		t.Fatal(err)
	}
	// c finished the first run and reads the second back from disk: one each.
	before := c.Runs()
	if len(before) != 2 {
		t.Fatalf("the first coordinator lists %d runs, want 2: %+v", len(before), before)
	}

	cfg := DefaultConfig()
	cfg.OutDir = out
	restarted := New(cfg, members, fakeDialer{gpu: &fakeGPU{}, agent: &fakeAgent{ttft: coldWarm}}, nil)
	runs := restarted.Runs()
	if len(runs) != 2 {
		t.Fatalf("restarted coordinator lists %d runs, want 2: %+v", len(runs), runs)
	}
	// Kept oldest first, as the scheduler keeps its done runs.
	byID := map[string]RunInfo{}
	for _, r := range runs {
		byID[r.RunID] = r
	}
	for _, was := range before {
		got, ok := byID[was.RunID]
		if !ok {
			t.Errorf("run %s is not listed after the restart", was.RunID)
			continue
		}
		if got.State != RunDone || got.Status != was.Status || got.Error != was.Error {
			t.Errorf("run %s after restart: %s/%s %q, before: %s/%s %q", was.RunID, got.State, got.Status, got.Error, was.State, was.Status, was.Error)
		}
		if got.Experiment != "baseline" || got.Start.IsZero() || got.End.Before(got.Start) {
			t.Errorf("run %s after restart: experiment %q, start %v, end %v", was.RunID, got.Experiment, got.Start, got.End)
		}
		if strings.Join(got.GPUNodes, ",") != strings.Join(was.GPUNodes, ",") || strings.Join(got.Agents, ",") != strings.Join(was.Agents, ",") {
			t.Errorf("run %s lease after restart %v %v, before %v %v", was.RunID, got.GPUNodes, got.Agents, was.GPUNodes, was.Agents)
		}
	}
	if byID["first"].Status != results.StatusOK || byID["second"].Status != results.StatusFailed {
		t.Errorf("statuses %q and %q, want ok and failed", byID["first"].Status, byID["second"].Status)
	}
	if runs[len(runs)-1].RunID != "second" {
		t.Errorf("the newest run on disk is not last in the scheduler's oldest-first list: %s", runs[len(runs)-1].RunID)
	}

	// A run finished by the restarted coordinator is listed once, after them.
	if _, err := restarted.RunBaseline(context.Background(), BaselineSpec{WarmRuns: 2, RunID: "third"}, nil); err != nil {
		t.Fatal(err)
	}
	if runs := restarted.Runs(); len(runs) != 3 || runs[2].RunID != "third" {
		t.Errorf("after a third run: %+v", runs)
	}
}

// TestDoneRunsOnDiskIsBoundedAndChecked checks the limit, newest first, a
// run without run_end, and that bad files are skipped with an error, not
// listed or fatal.
func TestDoneRunsOnDiskIsBoundedAndChecked(t *testing.T) {
	out := t.TempDir()
	write := func(rel, body string, age time.Duration) {
		t.Helper()
		dir := filepath.Join(out, rel)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, results.EventsFile)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		at := time.Now().Add(-age)
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
	}
	ok := `{"t":1000,"kind":"sweep_start","data":{"run_id":"x","api":"chat","levels":[1],"agent_loss":"continue"}}
{"t":1500,"kind":"lease","data":{"gpunodes":["g1"],"agents":["a1","a2"]}}
{"t":2000,"kind":"run_end","data":{"status":"ok"}}
`
	write("old", ok, 3*time.Hour)
	write("team/mid", ok, 2*time.Hour)
	write("new", `{"t":1000,"kind":"run_start","data":{"run_id":"new"}}`+"\n", time.Hour)
	write("badend", `{"t":1000,"kind":"run_start","data":{}}`+"\n"+`{"t":2000,"kind":"run_end","data":{"status":"maybe"}}`+"\n", 30*time.Minute)
	write("badhead", "not json\n{}\n", 20*time.Minute)
	write("mid/nodes/g1", ok, 0)      // inside no run: listed as its own run
	write("team/mid/nodes/g1", ok, 0) // a fleet node's run: part of team/mid

	runs, skipped := DoneRunsOnDisk(out, 3)
	var ids []string
	for _, r := range runs {
		ids = append(ids, r.RunID)
	}
	if strings.Join(ids, ",") != "g1,new,mid" {
		t.Errorf("listed %v, want the 3 newest readable runs g1,new,mid", ids)
	}
	if len(skipped) != 2 {
		t.Errorf("skipped %v, want the bad run_end and the bad head", skipped)
	}
	for _, err := range skipped {
		if !strings.Contains(err.Error(), "badend") && !strings.Contains(err.Error(), "badhead") {
			t.Errorf("skip error does not name the run: %v", err)
		}
	}
	if r := runs[1]; r.Status != results.StatusFailed || !strings.Contains(r.Error, "no run_end") || r.Experiment != "baseline" {
		t.Errorf("unfinished run listed as %+v", r)
	}
	if r := runs[2]; r.Status != results.StatusOK || r.Experiment != "sweep" || strings.Join(r.Agents, ",") != "a1,a2" || r.End.UnixNano() != 2000 {
		t.Errorf("sweep run listed as %+v", r)
	}
	if runs, _ := DoneRunsOnDisk(filepath.Join(out, "absent"), 10); len(runs) != 0 {
		t.Errorf("a missing directory lists %v", runs)
	}
}

// FuzzReadDoneRun checks that any events.jsonl content is read back or
// refused, never a panic.
func FuzzReadDoneRun(f *testing.F) {
	f.Add([]byte(`{"t":1,"kind":"run_start","data":{}}` + "\n" + `{"t":2,"kind":"run_end","data":{"status":"ok"}}`))
	f.Add([]byte(`{"t":1,"kind":"grid_start","data":{"experiment":"kv\nscale"}}` + "\n" + `{"t":2,"kind":"lease","data":{"gpunodes":null}}`))
	f.Add([]byte("{\"t\":1,\"kind\":\"run_end\",\"data\":null}\n{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := filepath.Join(t.TempDir(), "run")
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, results.EventsFile), b, 0o644); err != nil {
			t.Fatal(err)
		}
		info, err := readDoneRun(dir, time.Now())
		if err != nil {
			return
		}
		if info.RunID != "run" || info.State != RunDone || (info.Status != results.StatusOK && info.Status != results.StatusFailed) {
			t.Fatalf("read back %+v", info)
		}
		if strings.ContainsAny(info.Experiment, "\n\r") {
			t.Fatalf("experiment %q spans lines", info.Experiment)
		}
	})
}
