package coordinator

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/membership"
)

// Run states, as ListRuns reports them.
const (
	RunQueued  = "queued"
	RunRunning = "running"
	RunDone    = "done"
)

// maxDoneRuns bounds how many finished runs the scheduler remembers for
// ListRuns; their results stay on disk either way.
const maxDoneRuns = 100

// RunInfo is one run as the scheduler sees it.
type RunInfo struct {
	RunID      string
	Experiment string
	// GPUNodes and Agents are what the run leased; empty while queued.
	GPUNodes []string
	Agents   []string
	State    string
	// Position is a queued run's place in its queue (1 is next), and
	// Behind the run it waits for; 0 and "" otherwise.
	Position int
	Behind   string
	Queued   time.Time
	Start    time.Time
	End      time.Time
	// Status and Error are set when the run is done.
	Status    string
	Error     string
	Selection Selection
}

// memberNeed is what a run asks of the cluster.
type memberNeed struct {
	// Experiment names the run's kind in ListRuns.
	Experiment string
	Selection  Selection
	// NeedGPU is whether the run leases a gpunode (it restarts its
	// engine). Without it a matching gpunode, when there is one, is only
	// sampled as a bystander and not leased.
	NeedGPU bool
	// MaxAgents caps the agents leased; 0 takes every free matching agent.
	MaxAgents int
}

// lease is what a run got: the gpunodes (one, every matching one for
// Selection.All, or a bystander) and the agents, which no other run uses
// until the run is done.
type lease struct {
	GPUs   []membership.Member
	Agents []membership.Member
}

// queuedAt is a queued run's place, as its queued events report it.
type queuedAt struct {
	Position int
	Behind   string
}

// scheduler leases gpunodes and agents to runs, so that runs on disjoint
// gpunodes with disjoint agents go at the same time and the others wait
// in arrival order. A gpunode serves one run at a time (the run owns its
// engine), and so does an agent. It is safe for concurrent use; it starts
// no goroutines: every waiting run's own goroutine does the assignment.
type scheduler struct {
	now func() time.Time

	mu     sync.Mutex
	active []*schedRun // not done, in arrival order
	done   []RunInfo   // oldest first, at most maxDoneRuns
	// busyGPU and busyAgent map a leased member's name to its run's id.
	busyGPU   map[string]string
	busyAgent map[string]string
	// wake is closed and replaced whenever leases change hands, so that
	// waiting runs look again.
	wake chan struct{}
}

// schedRun is one run's entry. Its fields are guarded by scheduler.mu.
type schedRun struct {
	info    RunInfo
	need    memberNeed
	waiting bool // asked for a lease and not yet granted or given up
	granted bool
	lease   lease
	at      queuedAt
}

func newScheduler(now func() time.Time) *scheduler {
	return &scheduler{now: now, busyGPU: map[string]string{}, busyAgent: map[string]string{}, wake: make(chan struct{})}
}

// register adds a run that is about to start; it holds nothing until it
// calls acquire.
func (s *scheduler) register(runID string) *schedRun {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := &schedRun{info: RunInfo{RunID: runID, State: RunQueued, Queued: s.now()}}
	s.active = append(s.active, r)
	return r
}

// broadcast wakes every waiting run. s.mu must be held.
func (s *scheduler) broadcast() {
	close(s.wake)
	s.wake = make(chan struct{})
}

// acquire waits until the run can lease what need asks for and returns
// the lease. While the members it needs exist but are leased to other
// runs it waits in the queue for as long as ctx lasts, calling onQueued
// whenever its place changes. While no member matches at all it waits up
// to timeout for one to appear, then fails naming the selection and what
// does exist. Cancelling ctx takes the run out of the queue.
func (s *scheduler) acquire(ctx context.Context, r *schedRun, need memberNeed, members Members, timeout time.Duration, onQueued func(queuedAt)) (lease, error) {
	s.mu.Lock()
	r.need, r.waiting = need, true
	r.info.Experiment, r.info.Selection = need.Experiment, need.Selection
	s.mu.Unlock()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	poll := time.NewTicker(200 * time.Millisecond)
	defer poll.Stop()
	expired := false
	var last queuedAt
	for {
		ms := members.Members()
		s.mu.Lock()
		s.assign(ms)
		if r.granted {
			l := r.lease
			s.mu.Unlock()
			return l, nil
		}
		exists := s.exists(r, ms)
		at, wake := r.at, s.wake
		s.mu.Unlock()
		if !exists && expired {
			s.drop(r)
			return lease{}, need.Selection.noMatchError(ms, need.NeedGPU, timeout.String())
		}
		if exists && at != last && at.Position > 0 {
			last = at
			onQueued(at)
		}
		select {
		case <-ctx.Done():
			s.drop(r)
			return lease{}, fmt.Errorf("waiting in the queue for %s: %w", need.Selection.describeGPUs(), context.Cause(ctx))
		case <-wake:
		case <-members.Changes():
		case <-poll.C:
		case <-deadline.C:
			expired = true
		}
	}
}

// exists reports whether every member kind r needs is in view, leased or
// not. s.mu must be held.
func (s *scheduler) exists(r *schedRun, ms []membership.Member) bool {
	sel := r.need.Selection
	if r.need.NeedGPU && len(matching(ms, membership.RoleGPUNode, sel.gpuMatches)) == 0 {
		return false
	}
	return len(matching(ms, membership.RoleAgent, sel.agentMatches)) > 0
}

// assign grants leases to the waiting runs in arrival order. A run that
// cannot start reserves the gpunodes it could use, so that no later run
// overtakes it on them (a FIFO queue per gpunode); it reserves no agents,
// so that runs on other gpunodes with other agents still start. s.mu must
// be held.
func (s *scheduler) assign(ms []membership.Member) {
	reserved := map[string]string{} // gpunode → the last waiting run so far that wants it
	changed := false
	queues := map[string]int{} // gpunode or agent → waiting runs ahead
	for _, r := range s.active {
		if !r.waiting || r.granted {
			continue
		}
		sel := r.need.Selection
		gpus := matching(ms, membership.RoleGPUNode, sel.gpuMatches)
		agents := matching(ms, membership.RoleAgent, sel.agentMatches)
		var freeGPUs, freeAgents []membership.Member
		for _, g := range gpus {
			if s.busyGPU[g.Name] == "" && reserved[g.Name] == "" {
				freeGPUs = append(freeGPUs, g)
			}
		}
		for _, a := range agents {
			if s.busyAgent[a.Name] == "" {
				freeAgents = append(freeAgents, a)
			}
		}
		gpuOK := !r.need.NeedGPU || len(freeGPUs) > 0 && (!sel.All || len(freeGPUs) == len(gpus))
		if gpuOK && len(freeAgents) > 0 {
			s.grant(r, ms, freeGPUs, freeAgents)
			changed = true
			continue
		}
		// Queued: its place is one behind the waiting runs ahead of it on
		// the same gpunodes (or, without a gpunode, agents).
		keys := names(agents)
		if r.need.NeedGPU {
			keys = names(gpus)
		}
		ahead, behind := 0, ""
		for _, k := range keys {
			if queues[k] > ahead {
				ahead = queues[k]
			}
		}
		for _, k := range keys {
			queues[k] = ahead + 1
		}
		if r.need.NeedGPU {
			for _, g := range gpus {
				if w := reserved[g.Name]; w != "" && behind == "" {
					behind = w
				}
			}
		}
		for _, k := range keys {
			if behind == "" {
				behind = s.busyGPU[k] + s.busyAgent[k]
			}
		}
		if behind == "" {
			for _, a := range agents {
				if id := s.busyAgent[a.Name]; id != "" {
					behind = id
					break
				}
			}
		}
		if r.need.NeedGPU {
			// The next run that wants these waits behind this one.
			for _, g := range gpus {
				reserved[g.Name] = r.info.RunID
			}
		}
		r.at = queuedAt{Position: ahead + 1, Behind: behind}
		r.info.Position, r.info.Behind = r.at.Position, r.at.Behind
	}
	if changed {
		s.broadcast()
	}
}

// grant leases gpunodes and agents to r. s.mu must be held.
func (s *scheduler) grant(r *schedRun, ms []membership.Member, freeGPUs, freeAgents []membership.Member) {
	need := r.need
	var l lease
	switch {
	case need.NeedGPU && need.Selection.All:
		l.GPUs = freeGPUs
	case need.NeedGPU:
		l.GPUs = freeGPUs[:1]
	default:
		// A bystander to sample, leased by no one: the first in view.
		if gs := matching(ms, membership.RoleGPUNode, need.Selection.gpuMatches); len(gs) > 0 {
			l.GPUs = gs[:1]
		}
	}
	l.Agents = freeAgents
	if need.MaxAgents > 0 && len(l.Agents) > need.MaxAgents {
		l.Agents = l.Agents[:need.MaxAgents]
	}
	l.GPUs, l.Agents = slices.Clone(l.GPUs), slices.Clone(l.Agents)
	if need.NeedGPU {
		for _, g := range l.GPUs {
			s.busyGPU[g.Name] = r.info.RunID
		}
	}
	for _, a := range l.Agents {
		s.busyAgent[a.Name] = r.info.RunID
	}
	r.granted, r.waiting, r.lease = true, false, l
	r.at = queuedAt{}
	r.info.State, r.info.Start, r.info.Position, r.info.Behind = RunRunning, s.now(), 0, ""
	if need.NeedGPU {
		r.info.GPUNodes = names(l.GPUs)
	}
	r.info.Agents = names(l.Agents)
}

// release gives back what r leased. s.mu must be held.
func (s *scheduler) release(r *schedRun) {
	if !r.granted {
		return
	}
	for name, id := range s.busyGPU {
		if id == r.info.RunID {
			delete(s.busyGPU, name)
		}
	}
	for name, id := range s.busyAgent {
		if id == r.info.RunID {
			delete(s.busyAgent, name)
		}
	}
	r.granted = false
	s.broadcast()
}

// drop takes a run that gave up waiting out of the queue, giving back a
// lease granted in the meantime.
func (s *scheduler) drop(r *schedRun) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.waiting = false
	r.at = queuedAt{}
	r.info.Position, r.info.Behind = 0, ""
	s.release(r)
	s.broadcast()
}

// finish marks the run done with its status and gives back its lease.
func (s *scheduler) finish(r *schedRun, status, errMsg string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r.waiting = false
	s.release(r)
	r.info.State, r.info.End, r.info.Status, r.info.Error = RunDone, s.now(), status, errMsg
	r.info.Position, r.info.Behind = 0, ""
	if i := slices.Index(s.active, r); i >= 0 {
		s.active = slices.Delete(s.active, i, i+1)
	}
	s.done = append(s.done, r.info)
	if len(s.done) > maxDoneRuns {
		s.done = slices.Delete(s.done, 0, len(s.done)-maxDoneRuns)
	}
	s.broadcast()
}

// list returns the runs: the remembered finished ones, then the running
// and queued ones, each group in arrival order.
func (s *scheduler) list() []RunInfo {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := slices.Clone(s.done)
	for _, r := range s.active {
		info := r.info
		info.GPUNodes, info.Agents = slices.Clone(info.GPUNodes), slices.Clone(info.Agents)
		out = append(out, info)
	}
	return out
}

// RunInfoProto returns a run as ListRuns sends it.
func RunInfoProto(r RunInfo) *pb.RunInfo {
	unix := func(t time.Time) int64 {
		if t.IsZero() {
			return 0
		}
		return t.UnixNano()
	}
	return &pb.RunInfo{RunId: r.RunID, Experiment: r.Experiment, Gpunodes: r.GPUNodes, Agents: r.Agents, State: r.State,
		Position: int32(r.Position), QueuedUnixNano: unix(r.Queued), StartUnixNano: unix(r.Start), EndUnixNano: unix(r.End),
		Status: r.Status, Error: r.Error, Selection: r.Selection.Proto()}
}
