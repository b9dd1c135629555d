package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/membership"
	"google.golang.org/protobuf/proto"
)

// GridSpec configures a restart grid: for each point the gpunode's engine is
// restarted with the point's knobs, its startup figures are read, then a
// schedule of load levels (closed-loop concurrencies split across the
// agents, as in a sweep) runs against it.
type GridSpec struct {
	RunID   string
	OutDir  string
	Profile string
	API     string
	// Experiment names the experiment that owns the grid ("kvscale"); the
	// report is rendered by it.
	Experiment string
	// Params is the experiment's own description of the run, recorded in
	// grid_start.
	Params any
	Points []GridPoint
	// Plan is called when a point's engine is ready. It returns data to
	// record in grid_point_ready (the experiment's predictions) and the
	// schedule of levels to run.
	Plan      func(GridReady) (any, LevelSchedule)
	MaxAgents int
	// RunPoint, when set, drives each started point itself through
	// PointRun instead of running the schedule Plan returns (Plan still
	// gives the point's recorded plan). An error fails the point.
	RunPoint func(ctx context.Context, p *PointRun) error
	// Selection picks the gpunode and the agents.
	Selection Selection
}

// PointRun is a started grid point, as RunPoint drives it.
type PointRun struct {
	Index  int
	Point  GridPoint
	Engine *pb.EngineInfo
	g      *gridRun
	tap    *sampleTap
}

// Level runs one level as a schedule's would be run (its events and
// grid_level_end recorded) and returns its observation.
func (p *PointRun) Level(ctx context.Context, lv GridLevel) (results.LevelObservation, error) {
	s := &oneLevel{lv: lv}
	err := p.g.levels(ctx, p.Index, s, p.tap, p.Engine)
	if s.obs == nil {
		return results.LevelObservation{}, err
	}
	return *s.obs, err
}

// oneLevel is a schedule of one level that keeps its observation.
type oneLevel struct {
	lv   GridLevel
	done bool
	obs  *results.LevelObservation
}

func (s *oneLevel) Next(prev *results.LevelObservation) (GridLevel, bool) {
	if s.done {
		s.obs = prev
		return GridLevel{}, false
	}
	s.done = true
	return s.lv, true

}

// GridPoint is one point of the grid.
type GridPoint struct {
	Label string
	Knobs *pb.EngineKnobs
}

// GridReady is what Plan learns about a started point.
type GridReady struct {
	Index  int
	Point  GridPoint
	Engine *pb.EngineInfo
}

// LevelSchedule yields a point's levels one at a time.
type LevelSchedule interface {
	// Next returns the next level to run, given the observation of the
	// previous one (nil before the first), or false when the point is done.
	Next(prev *results.LevelObservation) (GridLevel, bool)
}

// GridLevel is one closed-loop level of a point.
type GridLevel struct {
	Concurrency int
	// Repeat marks the second run of an inconclusive step.
	Repeat    bool
	Load      *pb.LoadModel
	Workload  *pb.Workload
	Generator *pb.WorkloadGen
}

// ErrGridSpec wraps a GridSpec's own defects.
var ErrGridSpec = errors.New("invalid grid")

func (s GridSpec) validate() error {
	var errs []error
	if len(s.Points) == 0 {
		errs = append(errs, errors.New("the grid has no point: give at least one value per grid axis"))
	}
	if s.Plan == nil {
		errs = append(errs, errors.New("the grid has no level plan"))
	}
	if s.Experiment == "" {
		errs = append(errs, errors.New("the grid names no experiment"))
	}
	if s.API != "chat" && s.API != "completions" {
		errs = append(errs, fmt.Errorf("api %q is unknown: use chat or completions", s.API))
	}
	if s.RunID != "" && !runIDRe.MatchString(s.RunID) {
		errs = append(errs, fmt.Errorf("run_id %q is not a safe directory name: use letters, digits, '.', '_' and '-'", s.RunID))
	}
	if err := checkOutDir(s.OutDir); err != nil {
		errs = append(errs, err)
	}
	if s.MaxAgents < 0 {
		errs = append(errs, fmt.Errorf("max_agents %d is negative: use 0 for all agents", s.MaxAgents))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrGridSpec, err)
	}
	return nil
}

// RunGrid runs a restart grid. Every point is recorded as it happens; a
// point whose engine refuses to start is recorded with the engine's error
// and the grid goes on. The run fails when no point started, or when a
// started point fails (an engine exit, a lost gpunode, a failed level);
// what was measured is rendered either way.
func (c *Coordinator) RunGrid(ctx context.Context, spec GridSpec, emit func(results.Event)) (RunResult, error) {
	if spec.Profile == "" {
		spec.Profile = "sim"
	}
	if spec.API == "" {
		spec.API = "chat"
	}
	if err := spec.validate(); err != nil {
		return RunResult{}, err
	}
	return c.runLogged(ctx, filepath.Join(c.cfg.OutDir, spec.OutDir), &spec.RunID, emit, func(ctx context.Context, r *recorder) error {
		return c.grid(ctx, r, spec)
	})
}

func (c *Coordinator) grid(ctx context.Context, r *recorder, spec GridSpec) error {
	params, err := json.Marshal(spec.Params)
	if err != nil {
		return fmt.Errorf("encode the grid's parameters: %w", err)
	}
	gs := results.GridStart{RunID: spec.RunID, Experiment: spec.Experiment, Profile: spec.Profile, API: spec.API, Params: params}
	for i, p := range spec.Points {
		gs.Points = append(gs.Points, results.GridPointInfo{Point: i, Label: p.Label, Knobs: results.ProtoJSON(p.Knobs)})
	}
	r.record(results.EventGridStart, gs)
	l, err := c.waitForMembers(ctx, r, memberNeed{Experiment: spec.Experiment, Selection: spec.Selection, NeedGPU: true, MaxAgents: spec.MaxAgents})
	if err != nil {
		return err
	}
	gpuM, agentMs := l.GPUs[0], l.Agents
	r.record(results.EventMembers, c.members.Members())
	gn, gclose, err := c.dialer.GPUNode(ctx, gpuM.GRPCAddr)
	if err != nil {
		return fmt.Errorf("connect to gpunode %s at %s: %w", gpuM.Name, gpuM.GRPCAddr, err)
	}
	defer gclose.Close()
	info, err := gn.Info(ctx)
	if err != nil {
		return fmt.Errorf("gpunode %s info: %w", gpuM.Name, err)
	}
	r.record(results.EventNodeInfo, info)
	stopWatch := r.watchMember(ctx, c.members, gpuM.Name)
	defer stopWatch()

	g := &gridRun{c: c, r: r, spec: spec, gn: gn, gpuName: gpuM.Name, agents: agentMs}
	started := 0
	var refusals []string
	for i, p := range spec.Points {
		if err := ctx.Err(); err != nil {
			return err
		}
		ok, err := g.point(ctx, i, p)
		if err != nil {
			return fmt.Errorf("grid point %d (%s): %w", i+1, p.Label, err)
		}
		if ok {
			started++
		} else {
			refusals = append(refusals, p.Label)
		}
	}
	if started == 0 {
		return fmt.Errorf("no grid point started: the engine refused every one (%v); see each point's error in the report", refusals)
	}
	return nil
}

// gridRun is one grid run in progress.
type gridRun struct {
	c       *Coordinator
	r       *recorder
	spec    GridSpec
	gn      GPUNode
	gpuName string
	agents  []membership.Member
	level   int // the next grid-wide level number
}

// point runs one grid point; started is false when the engine refused to
// start. An error ends the grid.
func (g *gridRun) point(ctx context.Context, i int, p GridPoint) (started bool, err error) {
	r, c := g.r, g.c
	r.record(results.EventGridPointStart, results.GridPointInfo{Point: i, Label: p.Label, Knobs: results.ProtoJSON(p.Knobs)})
	// The sample stream runs only while the point's engine is up: an
	// engine that exits while refusing to start is this point's outcome,
	// not the run's failure.
	eng, err := g.gn.StartEngine(ctx, &pb.StartEngineRequest{Profile: g.spec.Profile, Knobs: p.Knobs, ReadyTimeoutMs: c.cfg.ReadyTimeout.Milliseconds()})
	if err != nil {
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if r.failed() != nil {
			return false, r.failed()
		}
		r.record(results.EventGridPointEnd, results.GridPointEnd{Point: i, Status: results.PointRefused, Error: err.Error()})
		return false, nil
	}
	r.record(results.EventEngineReady, eng)
	plan, sched := g.spec.Plan(GridReady{Index: i, Point: p, Engine: eng})
	planJSON, err := json.Marshal(plan)
	if err != nil {
		return true, fmt.Errorf("encode the point's plan: %w", err)
	}
	r.record(results.EventGridPointReady, results.GridPointReady{Point: i, Figures: results.ProtoJSON(eng.GetFigures()), Plan: planJSON})

	tap := &sampleTap{}
	stop := r.startSampling(ctx, tappedNode{GPUNode: g.gn, tap: tap.add}, g.gpuName, true, c.cfg.SampleInterval)
	if g.spec.RunPoint != nil {
		err = g.spec.RunPoint(ctx, &PointRun{Index: i, Point: p, Engine: eng, g: g, tap: tap})
	} else {
		err = g.levels(ctx, i, sched, tap, eng)
	}
	stop()
	end := results.GridPointEnd{Point: i, Status: results.PointOK}
	if err != nil {
		end.Status, end.Error = results.PointFailed, err.Error()
	}
	r.record(results.EventGridPointEnd, end)
	return true, err
}

// levels runs a started point's schedule.
func (g *gridRun) levels(ctx context.Context, point int, sched LevelSchedule, tap *sampleTap, eng *pb.EngineInfo) error {
	var prev *results.LevelObservation
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		lv, ok := sched.Next(prev)
		if !ok {
			return nil
		}
		li := g.level
		g.level++
		spec := SweepSpec{RunID: g.spec.RunID, API: g.spec.API, Load: lv.Load, Workload: lv.Workload, Generator: lv.Generator, AgentLoss: "continue"}
		load := proto.Clone(lv.Load).(*pb.LoadModel)
		load.Kind = "closed"
		spec.Load = load
		from := g.c.cfg.Now()
		dur := time.Duration(load.GetDurationMs()) * time.Millisecond
		lost, e2e, err := g.c.runLevel(ctx, g.r, spec, li, float64(lv.Concurrency), dur, fmt.Sprintf("pinned at %v by the grid's schedule", dur),
			g.agents, eng.GetBaseUrl(), eng.GetServedModelName())
		to := g.c.cfg.Now()
		warmEnd := from.Add(barrierDelay).Add(time.Duration(load.GetWarmupMs()) * time.Millisecond)
		measEnd := warmEnd.Add(dur)
		obs, burstEnd := tap.observe(from.UnixNano(), warmEnd.UnixNano(), measEnd.UnixNano(), to.UnixNano())
		obs.Point, obs.Level, obs.Concurrency, obs.Repeat = point, li, lv.Concurrency, lv.Repeat
		agentsStart := from.Add(barrierDelay)
		obs.WarmupMs, obs.WallMs = load.GetWarmupMs(), to.Sub(agentsStart).Milliseconds()
		if burstEnd > 0 {
			b := max(0, time.Duration(burstEnd-agentsStart.UnixNano()).Milliseconds())
			obs.BurstMs = &b
		}
		preempted := obs.Preemptions != nil && *obs.Preemptions > 0
		if e2e > 0 {
			obs.E2EP50Ms = ptr(float64(e2e) / float64(time.Millisecond))
		}
		// A queue in the measured window is a standing queue when the
		// opening burst was seen to empty before the window; otherwise the
		// step runs again with a warm-up sized from it, and that run counts.
		queued := results.KVQueued(&obs)
		// A step that measured no request (its warm-up did not outlast its
		// opening burst) is inconclusive whatever its queue.
		obs.Inconclusive = !preempted && !lv.Repeat && (e2e <= 0 || (queued && (burstEnd == 0 || burstEnd > warmEnd.UnixNano())))
		if err != nil {
			obs.Error = err.Error()
		}
		g.r.record(results.EventGridLevelEnd, obs)
		if err != nil {
			return err
		}
		g.agents = remove(g.agents, lost)
		if len(g.agents) == 0 {
			return fmt.Errorf("level %d: every agent was lost", li+1)
		}
		prev = &obs
	}
}

// tappedNode passes every sample of its GPUNode's stream to tap as well.
type tappedNode struct {
	GPUNode
	tap func(*pb.HostSample)
}

func (t tappedNode) StreamSamples(ctx context.Context, interval time.Duration, fn func(*pb.StreamSamplesResponse)) error {
	return t.GPUNode.StreamSamples(ctx, interval, func(m *pb.StreamSamplesResponse) {
		if s := m.GetSample(); s != nil {
			t.tap(s)
		}
		fn(m)
	})
}

// sampleTap keeps the engine metrics a point's samples carried. It is safe
// for concurrent use.
type sampleTap struct {
	mu sync.Mutex
	ms []engineMetricSample
}

// engineMetricSample is one sample's vllm:num_preemptions_total and
// vllm:num_requests_waiting, when it carried them.
type engineMetricSample struct {
	t                             int64
	preempt, waiting, usage       float64
	hasPreempt, hasWaiting, hasKV bool
}

func (s *sampleTap) add(h *pb.HostSample) {
	m := h.GetEngineMetrics()
	if m == nil {
		return
	}
	e := engineMetricSample{t: h.GetUnixNano()}
	if e.t == 0 {
		e.t = time.Now().UnixNano()
	}
	e.preempt, e.hasPreempt = m["vllm:num_preemptions_total"]
	e.waiting, e.hasWaiting = m["vllm:num_requests_waiting"]
	e.usage, e.hasKV = m["vllm:kv_cache_usage_perc"]
	if !e.hasKV {
		e.usage, e.hasKV = m["vllm:gpu_cache_usage_perc"] // vLLM before 0.10
	}
	s.mu.Lock()
	s.ms = append(s.ms, e)
	s.mu.Unlock()
}

func (s *sampleTap) observe(from, warmEnd, measEnd, to int64) (results.LevelObservation, int64) {
	s.mu.Lock()
	ms := append([]engineMetricSample(nil), s.ms...)
	s.mu.Unlock()
	return observeLevel(ms, from, warmEnd, measEnd, to)
}

// observeLevel summarises the engine metrics of one level: the rise of the
// preemption counter from the last value before from to the last value by
// to, the largest waiting queue in [from, to], and the fraction of the
// samples in the measured window [warmEnd, measEnd] whose waiting queue was
// above zero. (A closed loop starts all its requests at once, so every level
// opens with a queue; the warm-up must cover that burst, which the caller
// judges from burstEnd: the first sample, after the queue formed, whose
// queue was empty again; 0 when there was none.)
func observeLevel(ms []engineMetricSample, from, warmEnd, measEnd, to int64) (o results.LevelObservation, burstEnd int64) {
	sort.SliceStable(ms, func(i, j int) bool { return ms[i].t < ms[j].t })
	var base, first, last *float64
	var above, measured int
	formed := false
	for i := range ms {
		m := ms[i]
		if m.t > to {
			break
		}
		if m.hasPreempt {
			v := m.preempt
			if m.t < from {
				base = &v
			} else {
				if first == nil {
					first = &v
				}
				last = &v
			}
		}
		if m.t < from {
			continue
		}
		o.Samples++
		if !m.hasWaiting {
			continue
		}
		if o.WaitingMax == nil || m.waiting > *o.WaitingMax {
			o.WaitingMax = ptr(m.waiting)
		}
		switch {
		case m.waiting > 0:
			formed = true
		case formed && burstEnd == 0 && m.t <= measEnd:
			burstEnd = m.t
		}
		if m.t >= warmEnd && m.t <= measEnd {
			measured++
			if m.waiting > 0 {
				above++
			}
			if m.hasKV && (o.KVUsageMax == nil || m.usage > *o.KVUsageMax) {
				o.KVUsageMax = ptr(m.usage)
			}
		}
	}
	if last != nil {
		b := *first // no sample before the level: its first one is the base
		if base != nil {
			b = *base
		}
		o.Preemptions = ptr(max(0, *last-b))
	}
	if measured > 0 {
		o.WaitingFrac = ptr(float64(above) / float64(measured))
	}
	o.QueuedSamples = above
	return o, burstEnd
}

func ptr(v float64) *float64 { return &v }
