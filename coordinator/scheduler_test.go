package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/membership"
)

func gpuMember(name string, labels map[string]string) membership.Member {
	return membership.Member{Name: name, Meta: membership.Meta{Role: membership.RoleGPUNode, GRPCAddr: name + ":1", Labels: labels}, State: "alive"}
}

func agentMember(name string, labels map[string]string) membership.Member {
	return membership.Member{Name: name, Meta: membership.Meta{Role: membership.RoleAgent, GRPCAddr: name + ":1", Labels: labels}, State: "alive"}
}

// acquired is one acquire's outcome, in the order they happened.
type acquired struct {
	id    string
	lease lease
	err   error
}

// startAcquire asks for need as run id from its own goroutine; queued
// places go to onQueued, the outcome to out. The test's cleanup waits for
// the goroutine.
func startAcquire(t *testing.T, s *scheduler, ms Members, id string, need memberNeed, ctx context.Context, onQueued func(queuedAt), out chan<- acquired) *schedRun {
	t.Helper()
	r := s.register(id)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		l, err := s.acquire(ctx, r, need, ms, 10*time.Second, onQueued)
		out <- acquired{id, l, err}
	}()
	t.Cleanup(wg.Wait)
	return r
}

// waitState polls the scheduler's list until run id has the given state
// and queue position.
func waitState(t *testing.T, s *scheduler, id, state string, position int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range s.list() {
			if r.RunID == id && r.State == state && r.Position == position {
				return
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("run %s never reached %s at position %d: %+v", id, state, position, s.list())
}

func recv(t *testing.T, ch <-chan acquired) acquired {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(5 * time.Second):
		t.Fatal("no lease granted within 5 s")
		return acquired{}
	}
}

// TestSchedulerFIFOOnOneGPUNode queues three runs behind a fourth that
// holds the only gpunode: they start in the order they asked, each one's
// queue position counts down, and each waits behind the run ahead of it.
func TestSchedulerFIFOOnOneGPUNode(t *testing.T) {
	ms := staticMembers{gpuMember("g", nil), agentMember("a", nil)}
	s := newScheduler(time.Now)
	need := memberNeed{Experiment: "baseline", NeedGPU: true, MaxAgents: 1}
	out := make(chan acquired, 4)
	holder := startAcquire(t, s, ms, "r0", need, t.Context(), func(queuedAt) {}, out)
	if a := recv(t, out); a.id != "r0" || a.err != nil {
		t.Fatalf("first run: %+v", a)
	}
	var mu sync.Mutex
	places := map[string][]queuedAt{}
	runs := map[string]*schedRun{"r0": holder}
	for i, id := range []string{"r1", "r2", "r3"} {
		runs[id] = startAcquire(t, s, ms, id, need, t.Context(), func(at queuedAt) {
			mu.Lock()
			places[id] = append(places[id], at)
			mu.Unlock()
		}, out)
		// Ask one at a time, so that the arrival order is the test's.
		waitState(t, s, id, RunQueued, i+1)
	}
	// placed waits until run id has reported its place n times: a waiter
	// reports the place it finds when it wakes, so the test lets each
	// waiter see each step before taking the next.
	placed := func(id string, n int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			mu.Lock()
			k := len(places[id])
			mu.Unlock()
			if k >= n {
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
		t.Fatalf("run %s reported fewer than %d places", id, n)
	}
	placed("r1", 1)
	placed("r2", 1)
	placed("r3", 1)
	var order []string
	for step, id := range []string{"r0", "r1", "r2"} {
		s.finish(runs[id], results.StatusOK, "")
		a := recv(t, out)
		for _, later := range []string{"r2", "r3"}[min(step, 2):] {
			if later != a.id {
				placed(later, step+2)
			}
		}
		if a.err != nil {
			t.Fatalf("%s: %v", a.id, a.err)
		}
		if len(a.lease.GPUs) != 1 || a.lease.GPUs[0].Name != "g" {
			t.Errorf("%s leased %v, want gpunode g", a.id, names(a.lease.GPUs))
		}
		order = append(order, a.id)
	}
	s.finish(runs["r3"], results.StatusOK, "")
	if want := []string{"r1", "r2", "r3"}; !slices.Equal(order, want) {
		t.Errorf("start order %v, want %v", order, want)
	}
	mu.Lock()
	defer mu.Unlock()
	want := map[string][]queuedAt{
		"r1": {{1, "r0"}},
		"r2": {{2, "r1"}, {1, "r1"}},
		"r3": {{3, "r2"}, {2, "r2"}, {1, "r2"}},
	}
	for id, w := range want {
		if got := places[id]; !slices.Equal(got, w) {
			t.Errorf("%s queued at %v, want %v", id, got, w)
		}
	}
	for _, r := range s.list() {
		if r.State != RunDone || r.Status != results.StatusOK {
			t.Errorf("run %s is %s/%s after finish, want done/ok", r.RunID, r.State, r.Status)
		}
	}
}

// TestSchedulerCancelLeavesTheQueue cancels a queued run: acquire returns
// the cancellation, the run leaves the queue, and the run behind it moves
// up and starts next.
func TestSchedulerCancelLeavesTheQueue(t *testing.T) {
	ms := staticMembers{gpuMember("g", nil), agentMember("a", nil)}
	s := newScheduler(time.Now)
	need := memberNeed{Experiment: "sweep", NeedGPU: true}
	out := make(chan acquired, 3)
	holder := startAcquire(t, s, ms, "r0", need, t.Context(), func(queuedAt) {}, out)
	recv(t, out)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	startAcquire(t, s, ms, "r1", need, ctx, func(queuedAt) {}, out)
	waitState(t, s, "r1", RunQueued, 1)
	startAcquire(t, s, ms, "r2", need, t.Context(), func(queuedAt) {}, out)
	waitState(t, s, "r2", RunQueued, 2)

	cancel()
	a := recv(t, out)
	if a.id != "r1" || !errors.Is(a.err, context.Canceled) || !strings.Contains(a.err.Error(), "waiting in the queue") {
		t.Fatalf("cancelled run: %+v, want r1 with a context.Canceled error that says it was queued", a)
	}
	waitState(t, s, "r2", RunQueued, 1)
	s.finish(holder, results.StatusOK, "")
	if a := recv(t, out); a.id != "r2" || a.err != nil {
		t.Fatalf("after the holder finished: %+v, want r2 to start", a)
	}
}

// TestSchedulerSplitsAgents checks that runs on different gpunodes get
// disjoint agents (an agent serves one run at a time), that a run with no
// free agent waits, and that --all-gpunodes waits for every match.
func TestSchedulerSplitsAgents(t *testing.T) {
	ms := staticMembers{
		gpuMember("g1", map[string]string{"gpu": "h200"}), gpuMember("g2", map[string]string{"gpu": "h200"}), gpuMember("g3", map[string]string{"gpu": "l4"}),
		agentMember("a1", nil), agentMember("a2", nil), agentMember("a3", nil),
	}
	s := newScheduler(time.Now)
	out := make(chan acquired, 4)
	sel := Selection{Selector: map[string]string{"gpu": "h200"}}
	r1 := startAcquire(t, s, ms, "r1", memberNeed{NeedGPU: true, Selection: sel, MaxAgents: 2}, t.Context(), func(queuedAt) {}, out)
	a1 := recv(t, out)
	startAcquire(t, s, ms, "r2", memberNeed{NeedGPU: true, Selection: sel}, t.Context(), func(queuedAt) {}, out)
	a2 := recv(t, out)
	if got := names(a1.lease.Agents); !slices.Equal(got, []string{"a1", "a2"}) {
		t.Errorf("r1 agents %v, want [a1 a2] (capped at 2)", got)
	}
	if got := names(a2.lease.Agents); !slices.Equal(got, []string{"a3"}) {
		t.Errorf("r2 agents %v, want the one left, [a3]", got)
	}
	if g1, g2 := a1.lease.GPUs[0].Name, a2.lease.GPUs[0].Name; g1 == g2 || g1 == "g3" || g2 == "g3" {
		t.Errorf("gpunodes %s and %s: want g1 and g2, one each", g1, g2)
	}
	// g3 is free but every agent is leased: the run waits for one.
	startAcquire(t, s, ms, "r3", memberNeed{NeedGPU: true, Selection: Selection{GPUNode: "g3"}}, t.Context(), func(queuedAt) {}, out)
	waitState(t, s, "r3", RunQueued, 1)
	if info := s.list(); info[len(info)-1].Behind != "r1" {
		t.Errorf("r3 waits behind %q, want r1, which holds agents", info[len(info)-1].Behind)
	}
	s.finish(r1, results.StatusOK, "")
	a3 := recv(t, out)
	if a3.id != "r3" || !slices.Equal(names(a3.lease.Agents), []string{"a1", "a2"}) {
		t.Errorf("r3 got %+v, want agents a1 and a2 freed by r1", a3)
	}
}

// TestSchedulerAllGPUNodes leases every matching gpunode at once.
func TestSchedulerAllGPUNodes(t *testing.T) {
	ms := staticMembers{gpuMember("g1", nil), gpuMember("g2", nil), agentMember("a1", nil)}
	s := newScheduler(time.Now)
	out := make(chan acquired, 1)
	startAcquire(t, s, ms, "fleet", memberNeed{NeedGPU: true, Selection: Selection{All: true}}, t.Context(), func(queuedAt) {}, out)
	if a := recv(t, out); !slices.Equal(names(a.lease.GPUs), []string{"g1", "g2"}) {
		t.Errorf("fleet leased %v, want [g1 g2]", names(a.lease.GPUs))
	}
}

// probeGate makes agents block in RunProbe until n runs are probing at
// once, which proves that the runs overlap; it gives up after a deadline.
type probeGate struct {
	mu      sync.Mutex
	n       int
	arrived map[string]bool
	all     chan struct{}
}

func newProbeGate(n int) *probeGate {
	return &probeGate{n: n, arrived: map[string]bool{}, all: make(chan struct{})}
}

func (g *probeGate) wait(ctx context.Context, run string) error {
	g.mu.Lock()
	if !g.arrived[run] {
		g.arrived[run] = true
		if len(g.arrived) == g.n {
			close(g.all)
		}
	}
	g.mu.Unlock()
	select {
	case <-g.all:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(10 * time.Second):
		return fmt.Errorf("run %s probed alone for 10 s: the runs did not overlap", run)
	}
}

// gatedAgent is a fakeAgent whose probes wait at the gate first.
type gatedAgent struct {
	fakeAgent
	gate *probeGate
	name string
	mu   *sync.Mutex
	runs map[string][]string // agent name → run ids it served
}

func (a *gatedAgent) RunProbe(ctx context.Context, req *pb.RunProbeRequest, fn func(*pb.RunProbeResponse) error) error {
	a.mu.Lock()
	a.runs[a.name] = append(a.runs[a.name], req.GetRunId())
	a.mu.Unlock()
	if err := a.gate.wait(ctx, req.GetRunId()); err != nil {
		return err
	}
	return a.fakeAgent.RunProbe(ctx, req, fn)
}

// addrDialer dials a fake per address.
type addrDialer struct {
	gpus   map[string]GPUNode
	agents map[string]Agent
}

func (d addrDialer) GPUNode(_ context.Context, addr string) (GPUNode, io.Closer, error) {
	return d.gpus[addr], io.NopCloser(nil), nil
}

func (d addrDialer) Agent(_ context.Context, addr string) (Agent, io.Closer, error) {
	return d.agents[addr], io.NopCloser(nil), nil
}

// TestTwoBaselinesOnTwoGPUNodesAtOnce runs two baselines at the same time
// on two gpunodes, each with its own team of agents: both succeed, their
// probes overlap in time, no agent serves both, and each run's lease
// event names its agents.
func TestTwoBaselinesOnTwoGPUNodesAtOnce(t *testing.T) {
	ms := staticMembers{
		gpuMember("g1", nil), gpuMember("g2", nil),
		agentMember("a1", map[string]string{"team": "blue"}), agentMember("a2", map[string]string{"team": "red"}),
	}
	gate := newProbeGate(2)
	var mu sync.Mutex
	served := map[string][]string{}
	d := addrDialer{gpus: map[string]GPUNode{"g1:1": &fakeGPU{}, "g2:1": &fakeGPU{}}, agents: map[string]Agent{}}
	for _, a := range []string{"a1", "a2"} {
		d.agents[a+":1"] = &gatedAgent{fakeAgent: fakeAgent{ttft: coldWarm}, gate: gate, name: a, mu: &mu, runs: served}
	}
	cfg := DefaultConfig()
	cfg.OutDir = t.TempDir()
	cfg.DiscoveryTimeout = 5 * time.Second
	c := New(cfg, ms, d, nil)

	specs := []BaselineSpec{
		{RunID: "blue", WarmRuns: 2, Selection: Selection{GPUNode: "g1", AgentsSelector: map[string]string{"team": "blue"}}},
		{RunID: "red", WarmRuns: 2, Selection: Selection{GPUNode: "g2", AgentsSelector: map[string]string{"team": "red"}}},
	}
	leases := make([][]results.Lease, len(specs))
	errs := make([]error, len(specs))
	var wg sync.WaitGroup
	for i, spec := range specs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = c.RunBaseline(t.Context(), spec, func(ev results.Event) {
				if ev.Kind == results.EventLease {
					p, err := results.Decode(ev)
					if err == nil {
						leases[i] = append(leases[i], p.(results.Lease))
					}
				}
			})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("run %s: %v", specs[i].RunID, err)
		}
	}
	want := []results.Lease{{GPUNodes: []string{"g1"}, Agents: []string{"a1"}}, {GPUNodes: []string{"g2"}, Agents: []string{"a2"}}}
	for i := range specs {
		if len(leases[i]) != 1 || !slices.Equal(leases[i][0].GPUNodes, want[i].GPUNodes) || !slices.Equal(leases[i][0].Agents, want[i].Agents) {
			t.Errorf("run %s lease events %+v, want one %+v", specs[i].RunID, leases[i], want[i])
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for agent, runs := range served {
		if distinct := slices.Compact(slices.Sorted(slices.Values(runs))); len(distinct) != 1 {
			t.Errorf("agent %s served runs %v, want exactly one", agent, distinct)
		}
	}
	if len(served) != 2 {
		t.Errorf("agents that served: %v, want a1 and a2", served)
	}
	for _, r := range c.Runs() {
		if r.State != RunDone || r.Status != results.StatusOK {
			t.Errorf("run %s %s/%s, want done/ok", r.RunID, r.State, r.Status)
		}
	}
}
