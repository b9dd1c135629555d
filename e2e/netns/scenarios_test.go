//go:build linux

package netns

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/e2e/e2eutil"
)

// The hosts of a topology and their addresses in subnet.
var (
	coordHost  = hostSpec{name: "coord", tag: "c", octet: 10}
	gpuHost    = hostSpec{name: "gpu", tag: "g", octet: 20}
	agent1Host = hostSpec{name: "agent1", tag: "a1", octet: 31}
	agent2Host = hostSpec{name: "agent2", tag: "a2", octet: 32}
)

// fourHosts builds the usual topology — coordinator, gpunode, two agents —
// and starts a daemon in each namespace.
func fourHosts(t *testing.T, tag string) (*topology, *cluster) {
	t.Helper()
	requireNetns(t)
	ttftlabBin(t) // skip before building anything
	tp := newTopology(t, tag, coordHost, gpuHost, agent1Host, agent2Host)
	return tp, newCluster(t, tp)
}

// start4 starts the coordinator, the gpunode and both agents and waits
// until the coordinator lists all of them alive.
func (c *cluster) start4() {
	c.t.Helper()
	c.startCoordinator("coord")
	c.startGPUNode("gpu")
	c.startAgent("agent1")
	c.startAgent("agent2")
	c.waitAllAlive()
}

// runSweep runs a sweep to its end and returns its results.
func (c *cluster) runSweep(runID string, extra ...string) (sweepResults, []event) {
	c.t.Helper()
	began := time.Now()
	_, stderr, err := c.cli(120*time.Second, c.sweepArgs(runID, extra...)...)
	c.t.Logf("sweep %s took %s", runID, time.Since(began).Round(time.Millisecond))
	if err != nil {
		c.t.Fatalf("sweep %s: %v\n%s", runID, err, e2eutil.Tail(stderr, 4000))
	}
	var res sweepResults
	readJSON(c.t, filepath.Join(c.runDir("sweeps", runID), "results.json"), &res)
	return res, readEvents(c.t, filepath.Join(c.runDir("sweeps", runID), "events.jsonl"))
}

// checkSweepMerged asserts, level by level, that the merged figures are the
// sum of the agents' interval reports in events.jsonl.
func checkSweepMerged(t *testing.T, runID string, res sweepResults, evs []event) received {
	t.Helper()
	got := agentReports(t, evs)
	for _, l := range res.Levels {
		checkMerged(t, fmt.Sprintf("%s level %d (%g)", runID, l.Level, l.Value), l.summary, got.total(l.Level))
	}
	return got
}

// connectTime is how long a TCP connect from one host to addr takes.
func connectTime(t *testing.T, from *host, addr string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	began := time.Now()
	conn, err := from.dialer()(ctx, "tcp", addr)
	took := time.Since(began)
	if err != nil {
		t.Fatalf("connect from %s to %s: %v", from.name, addr, err)
	}
	conn.Close()
	return took
}

// TestNetnsCoordinatorDelayLeavesTTFT puts 20 ms of netem delay on each
// direction of the coordinator's link and runs the same sweep as before
// it: the agents time each request themselves and talk to the engine over
// links without delay, so their TTFT must not move by anything like the
// injected delay.
func TestNetnsCoordinatorDelayLeavesTTFT(t *testing.T) {
	tp, c := fourHosts(t, "dl")
	if r := tp.netemReason("coord"); r != "" {
		t.Skip(r)
	}
	c.start4()
	sweep := []string{"--levels", "1,4", "--level-duration", "3s"}
	base, baseEvs := c.runSweep("nodelay", sweep...)

	const delay = 20 * time.Millisecond
	tp.delay("coord", delay)
	a1, coord, gpu := tp.host("agent1"), tp.host("coord"), tp.host("gpu")
	// The delay is real on the agent↔coordinator path (the SYN and its
	// answer each cross it once) and absent on the agent↔engine path.
	if d := connectTime(t, a1, coord.addr(grpcPort)); d < 2*delay {
		t.Fatalf("connect agent1 → coordinator took %s with %s of delay each way: netem is not in effect", d, delay)
	}
	if d := connectTime(t, a1, gpu.addr(grpcPort)); d >= delay {
		t.Errorf("connect agent1 → gpunode took %s: the delay leaked onto the agent↔engine path", d)
	}
	delayed, delayedEvs := c.runSweep("delayed", sweep...)

	checkSweepMerged(t, "nodelay", base, baseEvs)
	checkSweepMerged(t, "delayed", delayed, delayedEvs)
	for _, res := range []sweepResults{base, delayed} {
		if res.Status != "ok" || len(res.Levels) != 2 {
			t.Fatalf("results: status %q (%s), %d levels; want ok, 2", res.Status, res.Error, len(res.Levels))
		}
	}
	for i := range base.Levels {
		b, d := base.Levels[i], delayed.Levels[i]
		if d.Degraded {
			t.Errorf("level %g under delay is degraded (%s): heartbeats across 20 ms must not lose an agent", d.Value, d.Shortfall)
		}
		bm, dm := b.Metrics["ttft"], d.Metrics["ttft"]
		if bm == nil || dm == nil || bm.Count == 0 || dm.Count == 0 {
			t.Fatalf("level %g: no TTFT (without delay %+v, with %+v)", b.Value, bm, dm)
		}
		t.Logf("level %g: TTFT p50 %.2f ms without delay, %.2f ms with %s on the coordinator's link (%d and %d requests)",
			b.Value, bm.P50, dm.P50, delay, bm.Count, dm.Count)
		// Generous against noise on a shared machine, yet a delay that
		// leaked into the timed path would add all of it.
		if dm.P50 > bm.P50+float64(delay.Milliseconds())/2 {
			t.Errorf("level %g: TTFT p50 %.2f ms with delay vs %.2f ms without: the coordinator's link delay reached the agents' TTFT", b.Value, dm.P50, bm.P50)
		}
	}
}

// TestNetnsAgentLinkCutAndRestored cuts one agent's link two intervals into
// the first of two levels and restores it once gossip no longer lists the
// agent alive: the coordinator marks the agent lost and the level degraded
// with its coverage, keeps what it delivered, runs the second level with the
// other agent, and the agent is listed alive again once its link is back.
func TestNetnsAgentLinkCutAndRestored(t *testing.T) {
	tp, c := fourHosts(t, "ag")
	c.start4()

	sweep := c.startCLI("sweep", c.sweepArgs("agentcut", "--levels", "4,4", "--level-duration", "6s", "--agent-loss", "continue")...)
	sweep.WaitLog(intervalLine("agent2", 1), 60*time.Second)
	tp.cut("agent2")
	cut := time.Now()
	sweep.WaitLog(regexp.MustCompile(`AGENT LOST: agent2`), 10*time.Second)
	t.Logf("agent2 marked lost %s after its link went down", time.Since(cut).Round(time.Millisecond))
	// Gossip too must see it gone, so that being listed again is a rejoin.
	waitUntil(t, 30*time.Second, "agent2 to be listed as not alive", func() (bool, error) {
		ms, err := c.members()
		if err != nil {
			return false, err
		}
		return ms["agent2"] != "alive", fmt.Errorf("members %v", ms)
	})
	t.Logf("agent2 listed as not alive %s after its link went down", time.Since(cut).Round(time.Millisecond))
	tp.restore("agent2")
	restored := time.Now()

	if err := sweep.Wait(90 * time.Second); err != nil {
		t.Fatalf("sweep with agent_loss continue after agent2's link was cut: %v", err)
	}
	dir := c.runDir("sweeps", "agentcut")
	var res sweepResults
	readJSON(t, filepath.Join(dir, "results.json"), &res)
	evs := readEvents(t, filepath.Join(dir, "events.jsonl"))
	got := checkSweepMerged(t, "agentcut", res, evs)
	if res.Status != "ok" || len(res.Levels) != 2 {
		t.Fatalf("results.json: status %q (%s), %d levels; want ok, 2", res.Status, res.Error, len(res.Levels))
	}
	l0 := res.Levels[0]
	lost := l0.Coverage["agent2"]
	if !l0.Degraded || !lost.Lost || lost.Intervals < 2 || lost.Error == "" {
		t.Errorf("level 0: degraded %v, agent2 coverage %+v; want degraded, agent2 lost after ≥2 intervals, with a reason", l0.Degraded, lost)
	}
	if got[0]["agent2"] == nil || got[0]["agent2"].OK == 0 {
		t.Errorf("level 0: nothing kept of what agent2 delivered before the cut: %v", got[0])
	}
	if kept := l0.Coverage["agent1"]; kept.Lost || !kept.Final {
		t.Errorf("level 0: agent1 coverage %+v; want final, not lost", kept)
	}
	if l1 := res.Levels[1]; slices.Contains(l1.Agents, "agent2") || l1.Successes == 0 {
		t.Errorf("level 1: agents %v, %d successes; want agent1 alone (agent2 sits out after being lost) and some successes", l1.Agents, l1.Successes)
	}
	// Nothing agent2 sent after it was declared lost is recorded.
	lostSeen := false
	for _, ev := range evs {
		switch ev.Kind {
		case "agent_lost":
			lostSeen = true
		case "sweep_interval":
			if lostSeen && strings.Contains(string(ev.Data), `"agent_id":"agent2"`) {
				t.Errorf("an agent2 report was recorded after agent2 was lost: %.200s", ev.Data)
			}
		}
	}

	// Usually about 5 s. When the agent itself still held the coordinator
	// suspect at the restore (isolated, it gets no confirmations, so its
	// suspicion lasts up to 24 s) it never learns it was declared dead until
	// the next push-pull, up to memberlist's 30 s LAN interval later: seen
	// once at 45 s.
	c.waitAlive(60*time.Second, "agent2")
	t.Logf("agent2 listed alive again %s after its link came back", time.Since(restored).Round(time.Millisecond))
}

// TestNetnsCoordinatorLinkCutStopsLoad cuts the coordinator's link while
// two agents load the gpunode's engine: the agents hold the run as a lease
// on the coordinator's stream, so with no RST to tell them, their load must
// still stop within about 2 s, as the engine's own gauge shows.
func TestNetnsCoordinatorLinkCutStopsLoad(t *testing.T) {
	tp, c := fourHosts(t, "co")
	c.start4()
	gpu := tp.host("gpu")
	url := engineURL(gpu)

	sweep := c.startCLI("sweep", c.sweepArgs("coordcut", "--levels", "8", "--level-duration", "60s")...)
	for _, a := range []string{"agent1", "agent2"} {
		sweep.WaitLog(intervalLine(a, 0), 60*time.Second)
	}
	waitUntil(t, 10*time.Second, "vllm:num_requests_running > 0", func() (bool, error) {
		n, err := engineGauge(gpu, url, "vllm:num_requests_running")
		return n > 0, err
	})

	tp.cut("coord")
	cut := time.Now()
	idle := func() (bool, error) {
		r, err := engineGauge(gpu, url, "vllm:num_requests_running")
		if err != nil {
			return false, err
		}
		w, err := engineGauge(gpu, url, "vllm:num_requests_waiting")
		if err != nil {
			return false, err
		}
		if r+w > 0 {
			return false, fmt.Errorf("%g running, %g waiting", r, w)
		}
		return true, nil
	}
	// The design bound is 2 s (a server ping after 1 s idle, 1 s for its
	// answer); the margin is for a loaded 2-core machine.
	waitUntil(t, 3500*time.Millisecond, "the engine to go idle after the coordinator's link was cut", idle)
	t.Logf("engine idle %s after the coordinator's link went down", time.Since(cut).Round(time.Millisecond))
	for end := time.Now().Add(2 * time.Second); time.Now().Before(end); time.Sleep(100 * time.Millisecond) {
		if ok, err := idle(); !ok {
			t.Fatalf("orphan load %s after the coordinator's link went down: %v", time.Since(cut).Round(time.Millisecond), err)
		}
	}

	// The coordinator lost every peer: the sweep fails, says so and keeps
	// what it received.
	err := sweep.Wait(60 * time.Second)
	t.Logf("sweep ended %s after the cut: %v", time.Since(cut).Round(time.Millisecond), err)
	if err == nil {
		t.Errorf("sweep exited 0 although its coordinator was cut off from every node")
	}
	tp.restore("coord")
	dir := c.runDir("sweeps", "coordcut")
	var res sweepResults
	readJSON(t, filepath.Join(dir, "results.json"), &res)
	if res.Status != "failed" || res.Error == "" {
		t.Errorf("results.json status %q error %q: want failed, with the reason", res.Status, res.Error)
	}
	got := checkSweepMerged(t, "coordcut", res, readEvents(t, filepath.Join(dir, "events.jsonl")))
	if len(res.Levels) != 1 || got.total(0).OK == 0 {
		t.Errorf("results.json has %d levels, %d successes received before the cut; want the one level with what was received", len(res.Levels), got.total(0).OK)
	}
}

// TestNetnsGPUNodeLinkCutFailsBaseline cuts the gpunode's link while a
// baseline's warm runs are in flight: the baseline fails with the lost
// gpunode named, in its status, its report and its exit code.
func TestNetnsGPUNodeLinkCutFailsBaseline(t *testing.T) {
	tp, c := fourHosts(t, "gp")
	c.start4()

	args := append([]string{"baseline"}, c.clientArgs()...)
	args = append(args, "--warm-runs", "2000", "--max-tokens", "16", "--out", "baselines", "--run-id", "gpucut")
	base := c.startCLI("baseline", args...)
	base.WaitLog(regexp.MustCompile(`warm_\d+ ttft`), 60*time.Second)
	tp.cut("gpu")
	cut := time.Now()
	err := base.Wait(30 * time.Second)
	t.Logf("baseline exited %s after the gpunode's link went down: %v", time.Since(cut).Round(time.Millisecond), err)
	if err == nil {
		t.Fatal("baseline exited 0 after its gpunode was cut off")
	}
	if s := base.Log.String(); !strings.Contains(s, "gpunode gpu lost") {
		t.Errorf("the CLI's output does not name the lost gpunode:\n%s", e2eutil.Tail(s, 2000))
	}

	dir := c.runDir("baselines", "gpucut")
	var res struct {
		Status     string `json:"status"`
		Error      string `json:"error"`
		Histograms map[string]*struct {
			Count int64 `json:"count"`
		} `json:"histograms_ms"`
		Agents map[string]struct {
			RequestsOK     u64 `json:"requests_ok"`
			RequestsFailed u64 `json:"requests_failed"`
		} `json:"agents"`
	}
	readJSON(t, filepath.Join(dir, "results.json"), &res)
	if res.Status != "failed" || !strings.Contains(res.Error, "gpunode gpu lost") {
		t.Errorf("results.json status %q error %q: want failed, naming the lost gpunode", res.Status, res.Error)
	}
	if md, err := os.ReadFile(filepath.Join(dir, "first_token_latency.md")); err != nil || !strings.Contains(string(md), "gpunode gpu lost") {
		t.Errorf("first_token_latency.md does not give the reason (%v)", err)
	}
	got := agentReports(t, readEvents(t, filepath.Join(dir, "events.jsonl")))[0]
	var sum u64
	for name, r := range got {
		sum += r.OK
		if a := res.Agents[name]; a.RequestsOK != r.OK || a.RequestsFailed != r.Failed {
			t.Errorf("agent %s: results.json has %d ok, %d failed; its reports in events.jsonl carry %d, %d", name, a.RequestsOK, a.RequestsFailed, r.OK, r.Failed)
		}
	}
	var merged int64
	if h := res.Histograms["ttft"]; h != nil {
		merged = h.Count
	}
	if sum == 0 || merged != int64(sum) {
		t.Errorf("merged TTFT histogram holds %d requests, the agents reported %d successes; want equal and > 0", merged, sum)
	}
}

// TestNetnsConcurrentExperiments runs two sweeps at once, each on its own
// gpunode with its own agent (chosen by --gpunode and --agents-selector):
// both must finish ok at the same time, each level loaded only by its own
// agent against its own engine across the bridge, and each run's merged
// figures the sum of its own agent's reports.
func TestNetnsConcurrentExperiments(t *testing.T) {
	requireNetns(t)
	ttftlabBin(t)
	gpu2Host := hostSpec{name: "gpu2", tag: "g2", octet: 21}
	tp := newTopology(t, "cc", coordHost, gpuHost, gpu2Host, agent1Host, agent2Host)
	c := newCluster(t, tp)
	c.startCoordinator("coord")
	c.startGPUNode("gpu")
	c.startGPUNode("gpu2")
	c.startDaemon("agent", "agent1", "--label", "pool=a")
	c.startDaemon("agent", "agent2", "--label", "pool=b")
	c.waitAllAlive()

	runs := []struct{ id, gpunode, pool, agent string }{
		{"left", "gpu", "pool=a", "agent1"},
		{"right", "gpu2", "pool=b", "agent2"},
	}
	var procs []*proc
	for _, r := range runs {
		procs = append(procs, c.startCLI("sweep-"+r.id, c.sweepArgs(r.id, "--levels", "2,4", "--level-duration", "3s",
			"--gpunode", r.gpunode, "--agents-selector", r.pool)...))
	}
	for i, p := range procs {
		if err := p.Wait(120 * time.Second); err != nil {
			t.Fatalf("sweep %s: %v", runs[i].id, err)
		}
	}

	var spans [][2]int64
	for _, r := range runs {
		dir := c.runDir("sweeps", r.id)
		var res sweepResults
		readJSON(t, filepath.Join(dir, "results.json"), &res)
		evs := readEvents(t, filepath.Join(dir, "events.jsonl"))
		if res.Status != "ok" || len(res.Levels) != 2 {
			t.Fatalf("%s: status %q (%s), %d levels; want ok, 2", r.id, res.Status, res.Error, len(res.Levels))
		}
		got := checkSweepMerged(t, r.id, res, evs)
		for _, l := range res.Levels {
			if !slices.Equal(l.Agents, []string{r.agent}) || l.Degraded || l.Successes == 0 {
				t.Errorf("%s level %g: agents %v, degraded %v, %d successes; want %s alone, not degraded, some successes",
					r.id, l.Value, l.Agents, l.Degraded, l.Successes, r.agent)
			}
			for a := range got[l.Level] {
				if a != r.agent {
					t.Errorf("%s level %g: a report from %s, which belongs to the other run", r.id, l.Value, a)
				}
			}
		}
		var engine struct {
			BaseURL string `json:"base_url"`
		}
		if ev, ok := findEvent(evs, "engine_ready"); !ok {
			t.Errorf("%s: no engine_ready event", r.id)
		} else if err := json.Unmarshal(ev.Data, &engine); err != nil || engine.BaseURL != engineURL(tp.host(r.gpunode)) {
			t.Errorf("%s: engine at %q (%v), want %s's, %s", r.id, engine.BaseURL, err, r.gpunode, engineURL(tp.host(r.gpunode)))
		}
		first, _ := findEvent(evs, "level_start")
		last := evs[len(evs)-1]
		spans = append(spans, [2]int64{first.T, last.T})
	}
	// Concurrent, not one after the other: each run's load began before the
	// other's ended.
	overlap := time.Duration(min(spans[0][1], spans[1][1]) - max(spans[0][0], spans[1][0]))
	t.Logf("the two runs' load overlapped for %s", overlap.Round(time.Millisecond))
	if overlap <= 0 {
		t.Errorf("the runs did not overlap: left %v, right %v (unix ns, first level_start to last event)", spans[0], spans[1])
	}
}

// findEvent returns the first event of kind.
func findEvent(evs []event, kind string) (event, bool) {
	for _, ev := range evs {
		if ev.Kind == kind {
			return ev, true
		}
	}
	return event{}, false
}
