//go:build linux

package e2e

import (
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/e2e/e2eutil"
)

// simChild returns the pid of the `ttftlab sim` engine the gpunode runs.
func simChild(t *testing.T, gpu *daemon) int {
	t.Helper()
	for pid, argv := range childrenOf(gpu.Pid()) {
		if len(argv) > 1 && argv[1] == "sim" {
			return pid
		}
	}
	t.Fatalf("no `ttftlab sim` child of the gpunode (pid %d): %v", gpu.Pid(), childrenOf(gpu.Pid()))
	return 0
}

// runFinishedRE matches an agent's log line at the end of a segment.
var runFinishedRE = regexp.MustCompile(`(?m)^time=(\S+) level=INFO msg="run finished"`)

// lastRunFinished returns when the agent last logged "run finished".
func lastRunFinished(t *testing.T, a *daemon) (time.Time, bool) {
	t.Helper()
	ms := runFinishedRE.FindAllStringSubmatch(a.Log.String(), -1)
	if len(ms) == 0 {
		return time.Time{}, false
	}
	at, err := time.Parse(time.RFC3339Nano, ms[len(ms)-1][1])
	if err != nil {
		t.Fatalf("%s: run finished at %q: %v", a.Name, ms[len(ms)-1][1], err)
	}
	return at, true
}

// event is one line of events.jsonl.
type event struct {
	T    int64           `json:"t"`
	Kind string          `json:"kind"`
	Data json.RawMessage `json:"data"`
}

func readEvents(t *testing.T, path string) []event {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []event
	dec := json.NewDecoder(f)
	for {
		var ev event
		if err := dec.Decode(&ev); errors.Is(err, io.EOF) {
			return out
		} else if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, ev)
	}
}

func findEvent(evs []event, kind string) (event, bool) {
	for _, ev := range evs {
		if ev.Kind == kind {
			return ev, true
		}
	}
	return event{}, false
}

// checkAgentsStopped asserts that every agent ended its segment within 1 s
// of the run's failure (its run_end event): its request counts stop there.
func checkAgentsStopped(t *testing.T, evs []event, agents ...*daemon) {
	t.Helper()
	end, ok := findEvent(evs, "run_end")
	if !ok {
		t.Fatal("events.jsonl has no run_end")
	}
	failedAt := time.Unix(0, end.T)
	for _, a := range agents {
		var fin time.Time
		waitUntil(t, 5*time.Second, a.Name+" to log run finished", func() (bool, error) {
			var ok bool
			fin, ok = lastRunFinished(t, a)
			return ok, nil
		})
		if lag := fin.Sub(failedAt); lag > time.Second {
			t.Errorf("%s finished its segment %s after the run failed, want within 1 s", a.Name, lag.Round(time.Millisecond))
		}
		// And no later segment starts: the counts stay where they stopped.
		before := strings.Count(a.Log.String(), `msg="run started"`)
		time.Sleep(time.Second)
		if after := strings.Count(a.Log.String(), `msg="run started"`); after != before {
			t.Errorf("%s started %d more segments after the run failed", a.Name, after-before)
		}
	}
}

// TestE2EEngineKilledMidSweep SIGKILLs the engine two intervals into a
// level: the sweep fails within about 2 s, naming the signal, the CLI exits
// non-zero, and the agents stop within 1 s of the failure.
func TestE2EEngineKilledMidSweep(t *testing.T) {
	c := newCluster(t)
	c.startCoordinator()
	gpu := c.startGPUNode("gpu")
	a1 := c.startAgent("agent1")
	a2 := c.startAgent("agent2")
	c.waitAllAlive()

	out := "sweeps"
	sweep := start(t, c.bin, c.dir, "sweep", c.sweepArgs(out, "enginekill", "--levels", "4", "--level-duration", "60s")...)
	sweep.WaitLog(intervalLine("agent1", 1), 30*time.Second)
	engine := simChild(t, gpu)
	if err := syscall.Kill(engine, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	err := sweep.Wait(15 * time.Second)
	took := time.Since(killed)
	t.Logf("sweep exited %s after the engine's SIGKILL: %v", took.Round(time.Millisecond), err)
	if err == nil {
		t.Fatalf("sweep exited 0 after its engine was killed")
	}
	if took > 4*time.Second {
		t.Errorf("sweep took %s to fail after the engine died, want about 2 s", took.Round(time.Millisecond))
	}
	if s := sweep.Log.String(); !strings.Contains(s, "SIGKILL") {
		t.Errorf("the CLI's output does not name the signal:\n%s", e2eutil.Tail(s, 2000))
	}

	dir := filepath.Join(c.dir, "coordinator-results", out, "enginekill")
	var res sweepResults
	readJSON(t, filepath.Join(dir, "results.json"), &res)
	if res.Status != "failed" || !strings.Contains(res.Error, "killed by SIGKILL") || !strings.Contains(res.Error, "exited unexpectedly") {
		t.Errorf("results.json status %q error %q: want failed, naming the SIGKILL", res.Status, res.Error)
	}
	evs := readEvents(t, filepath.Join(dir, "events.jsonl"))
	ev, ok := findEvent(evs, "engine_exit")
	if !ok {
		t.Fatal("events.jsonl has no engine_exit")
	}
	var ex struct {
		GPUNode string `json:"gpunode"`
		Exit    struct {
			Pid      int      `json:"pid"`
			Signal   string   `json:"signal"`
			UptimeMs string   `json:"uptime_ms"`
			LogTail  []string `json:"log_tail"`
		} `json:"exit"`
	}
	if err := json.Unmarshal(ev.Data, &ex); err != nil {
		t.Fatal(err)
	}
	if ex.GPUNode != "gpu" || ex.Exit.Pid != engine || ex.Exit.Signal != "SIGKILL" || ex.Exit.UptimeMs == "" || len(ex.Exit.LogTail) == 0 {
		t.Errorf("engine_exit %s: want gpunode gpu, pid %d, SIGKILL, an uptime and a log tail", ev.Data, engine)
	}
	checkAgentsStopped(t, evs, a1, a2)
}

// TestE2EEngineKilledDuringBaseline SIGKILLs the engine while a baseline's
// warm runs are in flight: the baseline fails, naming the signal.
func TestE2EEngineKilledDuringBaseline(t *testing.T) {
	c := newCluster(t)
	c.startCoordinator()
	gpu := c.startGPUNode("gpu")
	a1 := c.startAgent("agent1")
	c.waitAllAlive()

	base := start(t, c.bin, c.dir, "baseline", "baseline", "--coordinator", c.coord.grpc, "--warm-runs", "2000", "--max-tokens", "16",
		"--out", "baselines", "--run-id", "basekill")
	base.WaitLog(regexp.MustCompile(`warm_\d+ ttft`), 60*time.Second)
	if err := syscall.Kill(simChild(t, gpu), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	err := base.Wait(15 * time.Second)
	took := time.Since(killed)
	t.Logf("baseline exited %s after the engine's SIGKILL: %v", took.Round(time.Millisecond), err)
	if err == nil {
		t.Fatal("baseline exited 0 after its engine was killed during the warm runs")
	}
	if took > 4*time.Second {
		t.Errorf("baseline took %s to fail, want about 2 s", took.Round(time.Millisecond))
	}
	dir := filepath.Join(c.dir, "coordinator-results", "baselines", "basekill")
	var res struct {
		Status string `json:"status"`
		Error  string `json:"error"`
	}
	readJSON(t, filepath.Join(dir, "results.json"), &res)
	if res.Status != "failed" || !strings.Contains(res.Error, "killed by SIGKILL") {
		t.Errorf("results.json status %q error %q: want failed, naming the SIGKILL", res.Status, res.Error)
	}
	md, err := os.ReadFile(filepath.Join(dir, "first_token_latency.md"))
	if err != nil || !strings.Contains(string(md), "killed by SIGKILL") {
		t.Errorf("first_token_latency.md does not give the reason (%v)", err)
	}
	checkAgentsStopped(t, readEvents(t, filepath.Join(dir, "events.jsonl")), a1)
}

// TestE2EGPUNodeKilledMidSweep SIGKILLs the gpunode (and with it, by the
// parent-death signal, its engine) mid-level: the sweep fails naming the
// lost gpunode.
func TestE2EGPUNodeKilledMidSweep(t *testing.T) {
	c := newCluster(t)
	c.startCoordinator()
	gpu := c.startGPUNode("gpu")
	a1 := c.startAgent("agent1")
	c.waitAllAlive()

	out := "sweeps"
	sweep := start(t, c.bin, c.dir, "sweep", c.sweepArgs(out, "gpukill", "--levels", "2", "--level-duration", "60s")...)
	sweep.WaitLog(intervalLine("agent1", 1), 30*time.Second)
	if err := syscall.Kill(gpu.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	err := sweep.Wait(15 * time.Second)
	took := time.Since(killed)
	t.Logf("sweep exited %s after the gpunode's SIGKILL: %v", took.Round(time.Millisecond), err)
	if err == nil {
		t.Fatal("sweep exited 0 after its gpunode was killed")
	}
	if took > 4*time.Second {
		t.Errorf("sweep took %s to fail, want about 2 s", took.Round(time.Millisecond))
	}
	dir := filepath.Join(c.dir, "coordinator-results", out, "gpukill")
	var res sweepResults
	readJSON(t, filepath.Join(dir, "results.json"), &res)
	// The stream's break or the engine's exit, whichever the coordinator
	// heard of first, is the reason; the gpunode's own death must be named.
	if res.Status != "failed" || !strings.Contains(res.Error, "gpunode gpu lost") {
		t.Errorf("results.json status %q error %q: want failed, naming the lost gpunode", res.Status, res.Error)
	}
	checkAgentsStopped(t, readEvents(t, filepath.Join(dir, "events.jsonl")), a1)
}

// TestE2EAgentFrozenMidLevel SIGSTOPs one of two agents for 10 s mid-level:
// it is marked lost within 2 s, the level is degraded with its coverage,
// the merged counts are what was received, and after SIGCONT nothing more
// from it is counted.
func TestE2EAgentFrozenMidLevel(t *testing.T) {
	c := newCluster(t)
	c.startCoordinator("--agent-silence", "1.5s") // the default, whose bound this test checks
	c.startGPUNode("gpu")
	c.startAgent("agent1")
	victim := c.startAgent("agent2")
	c.waitAllAlive()

	out := "sweeps"
	sweep := start(t, c.bin, c.dir, "sweep", c.sweepArgs(out, "frozen", "--levels", "4", "--level-duration", "16s", "--agent-loss", "continue")...)
	sweep.WaitLog(intervalLine("agent2", 1), 30*time.Second)
	if err := syscall.Kill(victim.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	t.Cleanup(func() { _ = syscall.Kill(victim.Pid(), syscall.SIGCONT) })
	sweep.WaitLog(regexp.MustCompile(`AGENT LOST: agent2`), 10*time.Second)
	lostAfter := time.Since(stopped)
	t.Logf("agent2 marked lost %s after SIGSTOP", lostAfter.Round(time.Millisecond))
	if lostAfter > 2500*time.Millisecond {
		t.Errorf("agent2 marked lost %s after it froze, want within 2 s", lostAfter.Round(time.Millisecond))
	}
	time.Sleep(10*time.Second - time.Since(stopped))
	if err := syscall.Kill(victim.Pid(), syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	if err := sweep.Wait(60 * time.Second); err != nil {
		t.Fatalf("sweep with agent_loss continue: %v", err)
	}

	dir := filepath.Join(c.dir, "coordinator-results", out, "frozen")
	var res sweepResults
	readJSON(t, filepath.Join(dir, "results.json"), &res)
	if res.Status != "ok" || len(res.Levels) != 1 {
		t.Fatalf("results.json status %q (%s), %d levels; want ok, 1 level", res.Status, res.Error, len(res.Levels))
	}
	l := res.Levels[0]
	lost := l.Coverage["agent2"]
	if !l.Degraded || !lost.Lost || lost.Intervals < 2 || !strings.Contains(lost.Error, "no report or heartbeat") {
		t.Errorf("level degraded %v, agent2 coverage %+v: want degraded, agent2 lost after ≥2 intervals for its silence", l.Degraded, lost)
	}
	// Merged = the sum of what was received, and nothing from agent2 after
	// it was lost (it woke up and its stream was already cancelled).
	evs := readEvents(t, filepath.Join(dir, "events.jsonl"))
	perAgent := agentRequests(t, filepath.Join(dir, "events.jsonl"))[0]
	if perAgent["agent1"]+perAgent["agent2"] != l.Requests || l.Metrics["ttft"].Count != int64(l.Requests) {
		t.Errorf("agents reported %v, results.json says %d requests (merged ttft %d)", perAgent, l.Requests, l.Metrics["ttft"].Count)
	}
	lostSeen, reports := false, 0
	for _, ev := range evs {
		switch ev.Kind {
		case "agent_lost":
			lostSeen = true
		case "sweep_interval":
			if strings.Contains(string(ev.Data), `"agent_id":"agent2"`) {
				reports++
				if lostSeen {
					t.Errorf("an agent2 report was recorded after agent2 was lost: %.200s", ev.Data)
				}
			}
		}
	}
	if reports != lost.Intervals {
		t.Errorf("%d agent2 reports in events.jsonl, coverage says %d", reports, lost.Intervals)
	}
}
