//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestE2EClusterSweep runs a coordinator, a gpunode and two agents as
// processes, lists them, and runs a two-level sweep in which the gpunode
// starts the simulated engine.
func TestE2EClusterSweep(t *testing.T) {
	c := newCluster(t)
	c.startCoordinator()
	c.startGPUNode("gpu")
	c.startAgent("agent1")
	c.startAgent("agent2")

	ms := c.waitAllAlive()
	roles := map[string]int{}
	for _, m := range ms {
		roles[m.role]++
	}
	if len(ms) != 4 || roles["coordinator"] != 1 || roles["gpunode"] != 1 || roles["agent"] != 2 {
		t.Fatalf("members %+v: want 1 coordinator, 1 gpunode and 2 agents", ms)
	}

	out := "sweeps" // a subdirectory of the coordinator's --out
	began := time.Now()
	_, stderr, err := c.cli(90*time.Second, c.sweepArgs(out, "e2e", "--levels", "1,4", "--level-duration", "2s")...)
	t.Logf("sweep took %s", time.Since(began).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("sweep: %v\n%s", err, stderr)
	}
	m := resultsRE.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("sweep printed no results directory:\n%s", stderr)
	}
	// A request's out_dir is a subdirectory of the coordinator's --out; one
	// that points elsewhere on the coordinator's disk is refused.
	dir := filepath.Join(c.dir, "coordinator-results", out, "e2e")
	if m[1] != dir {
		t.Errorf("results in %s, want %s (under the coordinator's --out)", m[1], dir)
	}
	if _, stderr, err := c.cli(30*time.Second, c.sweepArgs(filepath.Join(c.dir, "elsewhere"), "abs", "--levels", "1")...); err == nil ||
		!strings.Contains(stderr, "must be a relative path") {
		t.Errorf("a sweep with an absolute --out was not refused: %v\n%s", err, stderr)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "elsewhere")); err == nil {
		t.Errorf("the refused sweep wrote to its absolute --out")
	}

	var res sweepResults
	readJSON(t, filepath.Join(dir, "results.json"), &res)
	if res.Kind != "sweep" || res.Status != "ok" || res.RunID != "e2e" {
		t.Fatalf("results.json: kind %q status %q (%s) run_id %q; want sweep, ok, e2e", res.Kind, res.Status, res.Error, res.RunID)
	}
	if res.Engine == nil || !slices.Contains(res.Engine.Argv, "--startup-scale") {
		t.Errorf("engine argv %v: want the test profile's sim with --startup-scale", res.Engine)
	}
	if len(res.Levels) != 2 {
		t.Fatalf("results.json has %d levels, want 2", len(res.Levels))
	}
	perAgent := agentRequests(t, filepath.Join(dir, "events.jsonl"))
	for i, l := range res.Levels {
		want := []float64{1, 4}[i]
		if l.Value != want {
			t.Errorf("level %d: value %g, want %g", i, l.Value, want)
		}
		if l.Requests == 0 || l.Errors != 0 {
			t.Errorf("level %g: %d requests, %d errors; want some requests and no errors", l.Value, l.Requests, l.Errors)
		}
		if got := l.Metrics["ttft"].Count; got != int64(l.Requests) {
			t.Errorf("level %g: merged ttft count %d, requests %d", l.Value, got, l.Requests)
		}
		var sum uint64
		for _, n := range perAgent[i] {
			sum += n
		}
		if sum != l.Requests {
			t.Errorf("level %g: agents reported %v requests (sum %d), results.json says %d", l.Value, perAgent[i], sum, l.Requests)
		}
		if l.Degraded {
			t.Errorf("level %g is degraded: coverage %+v", l.Value, l.Coverage)
		}
	}
	c4 := res.Levels[1]
	slices.Sort(c4.Agents)
	if !slices.Equal(c4.Agents, []string{"agent1", "agent2"}) {
		t.Errorf("c=4 agents %v, want agent1 and agent2", c4.Agents)
	}
	for _, a := range []string{"agent1", "agent2"} {
		cov, ok := c4.Coverage[a]
		if !ok || cov.Intervals < 1 || !cov.Final || cov.Lost {
			t.Errorf("c=4 coverage of %s: %+v (present %v); want ≥1 interval, final, not lost", a, cov, ok)
		}
		if perAgent[1][a] == 0 {
			t.Errorf("c=4: %s completed no requests (%v)", a, perAgent[1])
		}
	}
}

// intervalLine matches the sweep's progress line for an agent's interval:
// "[  1.94s]   agent1 #0: 7 ok, 0 failed, 1 in flight".
func intervalLine(agent string, seq int) *regexp.Regexp {
	return regexp.MustCompile(fmt.Sprintf(`(?m)\]\s+%s #%d: (\d+) ok, (\d+) failed, (\d+) in flight`, regexp.QuoteMeta(agent), seq))
}

// TestE2EAgentKilledMidSweep SIGKILLs one of two agents two intervals into
// a level: the sweep goes on with the other (agent_loss continue) and the
// results keep what the lost agent delivered.
func TestE2EAgentKilledMidSweep(t *testing.T) {
	c := newCluster(t)
	c.startCoordinator()
	c.startGPUNode("gpu")
	c.startAgent("agent1")
	victim := c.startAgent("agent2")
	c.waitAllAlive()

	out := "sweeps" // a subdirectory of the coordinator's --out
	began := time.Now()
	sweep := start(t, c.bin, c.dir, "sweep", c.sweepArgs(out, "lost", "--levels", "4", "--level-duration", "6s", "--agent-loss", "continue")...)
	// Two intervals (≈2 s of load) in, while its requests are in flight.
	sweep.WaitLog(intervalLine("agent2", 1), 30*time.Second)
	victim.Kill()
	killedAt := time.Since(began)

	if err := sweep.Wait(30 * time.Second); err != nil {
		t.Fatalf("sweep after losing agent2 (killed at %s): %v", killedAt.Round(time.Millisecond), err)
	}
	t.Logf("agent2 killed at %s, sweep done after %s", killedAt.Round(time.Millisecond), time.Since(began).Round(time.Millisecond))
	if !strings.Contains(sweep.Log.String(), "run ok") {
		t.Errorf("sweep did not report `run ok`")
	}

	dir := filepath.Join(c.dir, "coordinator-results", out, "lost")
	var res sweepResults
	readJSON(t, filepath.Join(dir, "results.json"), &res)
	if res.Status != "ok" || len(res.Levels) != 1 {
		t.Fatalf("results.json: status %q (%s), %d levels; want ok and 1 level", res.Status, res.Error, len(res.Levels))
	}
	l := res.Levels[0]
	if !l.Degraded {
		t.Errorf("level not marked degraded: coverage %+v", l.Coverage)
	}
	lost := l.Coverage["agent2"]
	if !lost.Lost || lost.Intervals < 2 || lost.Error == "" {
		t.Errorf("agent2 coverage %+v: want lost, ≥2 intervals (seen on the progress stream before the kill), an error", lost)
	}
	kept := l.Coverage["agent1"]
	if kept.Lost || !kept.Final || kept.Intervals < 6 {
		t.Errorf("agent1 coverage %+v: want not lost, final, ≥6 intervals over 6 s", kept)
	}
	if l.Requests == 0 || l.Metrics["ttft"].Count != int64(l.Requests) {
		t.Errorf("level: %d requests, merged ttft count %d; want > 0 and equal", l.Requests, l.Metrics["ttft"].Count)
	}
	perAgent := agentRequests(t, filepath.Join(dir, "events.jsonl"))[0]
	if perAgent["agent2"] == 0 {
		t.Errorf("nothing kept from agent2 before it died: %v", perAgent)
	}
	if perAgent["agent1"]+perAgent["agent2"] != l.Requests {
		t.Errorf("agents reported %v, results.json says %d requests", perAgent, l.Requests)
	}
}

// TestE2ECoordinatorKilledStopsLoad SIGKILLs the coordinator while two agents
// load an engine the test watches: the agents hold the run as a lease tied to
// the coordinator's stream, so the engine must go idle within 3 s and stay
// idle — no orphan load.
func TestE2ECoordinatorKilledStopsLoad(t *testing.T) {
	c := newCluster(t)
	_, url := startSim(t, c.bin, c.dir, "--max-num-seqs", "64")
	coord := c.startCoordinator()
	a1 := c.startAgent("agent1")
	a2 := c.startAgent("agent2")
	c.waitAllAlive()

	out := "sweeps" // a subdirectory of the coordinator's --out
	sweep := start(t, c.bin, c.dir, "sweep", c.sweepArgs(out, "orphan", "--levels", "8", "--level-duration", "60s",
		"--base-url", url, "--model", simModel)...)
	// Both agents are sending, and the engine sees it.
	for _, a := range []string{"agent1", "agent2"} {
		m := sweep.WaitLog(intervalLine(a, 0), 30*time.Second)
		if m[1] == "0" && m[3] == "0" {
			t.Fatalf("%s's first interval shows no load: %q", a, m[0])
		}
	}
	waitUntil(t, 10*time.Second, "vllm:num_requests_running > 0", func() (bool, error) {
		n, err := engineGauge(url, "vllm:num_requests_running")
		return n > 0, err
	})

	coord.Kill()
	killed := time.Now()
	waitUntil(t, 3*time.Second, "engine running+waiting to drop to 0 after the coordinator's SIGKILL", func() (bool, error) {
		n, err := engineLoad(url)
		if err == nil && n > 0 {
			err = fmt.Errorf("%g requests running or waiting", n)
		}
		return err == nil && n == 0, err
	})
	t.Logf("engine idle %s after the coordinator's SIGKILL", time.Since(killed).Round(time.Millisecond))
	noOrphanLoad(t, url, killed, "the coordinator's SIGKILL", a1, a2)
	// The agents outlive their coordinator, and the CLI notices it is gone.
	for _, a := range []*daemon{a1, a2} {
		if a.Exited() {
			t.Errorf("%s exited when the coordinator died: %v", a.Name, a.Err())
		}
	}
	if err := sweep.Wait(10 * time.Second); err == nil {
		t.Errorf("sweep exited 0 although its coordinator was killed")
	}
}

// TestE2EGPUNodeKilledLeavesNoEngine runs a baseline, so that the gpunode
// starts the simulated engine, then SIGKILLs the gpunode: the engine, in its
// own process group, must die with it (parent-death signal).
func TestE2EGPUNodeKilledLeavesNoEngine(t *testing.T) {
	c := newCluster(t)
	c.startCoordinator()
	gpu := c.startGPUNode("gpu")
	c.startAgent("agent1")
	c.waitAllAlive()

	out := "baselines"
	_, stderr, err := c.cli(90*time.Second, "baseline", "--coordinator", c.coord.grpc, "--warm-runs", "1", "--max-tokens", "16",
		"--out", out, "--run-id", "base", "--quiet")
	if err != nil {
		t.Fatalf("baseline: %v\n%s", err, stderr)
	}
	var res struct {
		Status string `json:"status"`
		Engine struct {
			Argv []string `json:"argv"`
		} `json:"engine"`
	}
	readJSON(t, filepath.Join(c.dir, "coordinator-results", out, "base", "results.json"), &res)
	if res.Status != "ok" || len(res.Engine.Argv) == 0 {
		t.Fatalf("baseline results: status %q, engine argv %v", res.Status, res.Engine.Argv)
	}

	// The engine is the gpunode's child running `ttftlab sim` with the
	// argv results.json recorded.
	var engine int
	for pid, argv := range childrenOf(gpu.Pid()) {
		if len(argv) > 1 && argv[1] == "sim" {
			if engine != 0 {
				t.Fatalf("two sim engines under the gpunode: %d and %d", engine, pid)
			}
			engine = pid
			if !slices.Equal(argv, res.Engine.Argv) {
				t.Errorf("engine pid %d runs %q; results.json says %q", pid, argv, res.Engine.Argv)
			}
		}
	}
	if engine == 0 {
		t.Fatalf("no `ttftlab sim` child of the gpunode (pid %d): %v", gpu.Pid(), childrenOf(gpu.Pid()))
	}
	t.Cleanup(func() {
		if procAlive(engine) {
			_ = syscall.Kill(engine, syscall.SIGKILL)
		}
	})
	pgid, err := syscall.Getpgid(engine)
	if err != nil || pgid == gpu.Pid() {
		t.Errorf("engine pgid %d (%v): want its own group, not the gpunode's", pgid, err)
	}

	if !procAlive(engine) {
		t.Fatalf("engine pid %d is not running before the gpunode is killed", engine)
	}
	// Only the gpunode itself: its engine must not need the group kill.
	if err := syscall.Kill(gpu.Pid(), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitUntil(t, 2*time.Second, fmt.Sprintf("engine pid %d to exit after the gpunode's SIGKILL", engine), func() (bool, error) {
		return !procAlive(engine), nil
	})
	t.Logf("engine gone %s after the gpunode's SIGKILL", time.Since(killed).Round(10*time.Microsecond))
}

// TestE2ECoordinatorFrozenStopsLoad freezes the coordinator with SIGSTOP
// instead: its sockets stay open, so no RST tells the agents, as behind a
// network partition. The agents' gRPC keepalive (ping after 1 s idle, drop
// after 1 s more) must end the lease and the load within about 3 s.
func TestE2ECoordinatorFrozenStopsLoad(t *testing.T) {
	c := newCluster(t)
	_, url := startSim(t, c.bin, c.dir, "--max-num-seqs", "64")
	coord := c.startCoordinator()
	agents := []*daemon{c.startAgent("agent1"), c.startAgent("agent2")}
	c.waitAllAlive()

	out := "sweeps" // a subdirectory of the coordinator's --out
	sweep := start(t, c.bin, c.dir, "sweep", c.sweepArgs(out, "frozen", "--levels", "8", "--level-duration", "60s",
		"--base-url", url, "--model", simModel)...)
	for _, a := range []string{"agent1", "agent2"} {
		sweep.WaitLog(intervalLine(a, 0), 30*time.Second)
	}
	waitUntil(t, 10*time.Second, "vllm:num_requests_running > 0", func() (bool, error) {
		n, err := engineGauge(url, "vllm:num_requests_running")
		return n > 0, err
	})

	if err := syscall.Kill(coord.Pid(), syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	frozen := time.Now()
	waitUntil(t, 4*time.Second, "engine running+waiting to drop to 0 after the coordinator's SIGSTOP", func() (bool, error) {
		n, err := engineLoad(url)
		if err == nil && n > 0 {
			err = fmt.Errorf("%g requests running or waiting", n)
		}
		return err == nil && n == 0, err
	})
	t.Logf("engine idle %s after the coordinator froze", time.Since(frozen).Round(time.Millisecond))
	noOrphanLoad(t, url, frozen, "the coordinator froze", agents...)
}
