// Package coordinator plans experiments, drives a gpunode and agents, merges
// the agents' histograms and writes the results. The domain logic here never
// imports gRPC: it talks to gpunodes and agents through the small interfaces
// below, which grpc.go implements over the generated clients.
package coordinator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/membership"
	"github.com/ttftlab/ttftlab/internal/specerr"
)

// GPUNode is what the coordinator needs from a gpunode.
type GPUNode interface {
	Info(ctx context.Context) (*pb.InfoResponse, error)
	StartEngine(ctx context.Context, req *pb.StartEngineRequest) (*pb.EngineInfo, error)
	StopEngine(ctx context.Context, req *pb.StopEngineRequest) (*pb.StopEngineResponse, error)
	// StreamSamples calls fn for each message — a sample, or the news of an
	// engine exit — until ctx ends or the stream fails. Each message holds
	// exactly one of the two (the implementation checks).
	StreamSamples(ctx context.Context, interval time.Duration, fn func(*pb.StreamSamplesResponse)) error
}

// Agent is what the coordinator needs from an agent.
type Agent interface {
	// RunProbe runs one segment and calls fn for each message, in order:
	// interval reports until the final one, and heartbeats between them.
	// Each message holds exactly one of the two (the implementation checks).
	// Cancelling ctx ends the agent's lease.
	RunProbe(ctx context.Context, req *pb.RunProbeRequest, fn func(*pb.RunProbeResponse) error) error
}

// Dialer connects to members by their announced gRPC address.
type Dialer interface {
	GPUNode(ctx context.Context, addr string) (GPUNode, io.Closer, error)
	Agent(ctx context.Context, addr string) (Agent, io.Closer, error)
}

// Members is the membership view.
type Members interface {
	Members() []membership.Member
	Changes() <-chan struct{}
}

// Config configures a Coordinator.
type Config struct {
	// OutDir is the default directory under which results/<run>/ is written.
	OutDir string
	// DiscoveryTimeout bounds the wait for a gpunode and an agent to appear.
	DiscoveryTimeout time.Duration
	// SampleInterval is how often the gpunode samples during a run.
	SampleInterval time.Duration
	// ReadyTimeout bounds the engine's start.
	ReadyTimeout time.Duration
	// RequestTimeout bounds each probe request.
	RequestTimeout time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Observer, when set, sees every run's events live (metrics).
	Observer Observer
	// AgentSilence is how long an agent's run stream may carry nothing
	// before the agent is lost; 0 means AgentSilenceLimit. An in-process
	// cluster (ttftlab up and the in-process experiments) sets it longer:
	// its agents share the process, so they cannot freeze on their own,
	// and on a starved host its own scheduling delays were taken for
	// frozen agents.
	AgentSilence time.Duration
}

// agentSilence returns the configured silence limit.
func (c *Coordinator) agentSilence() time.Duration {
	if c.cfg.AgentSilence > 0 {
		return c.cfg.AgentSilence
	}
	return AgentSilenceLimit
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		OutDir:           "results",
		DiscoveryTimeout: 30 * time.Second,
		SampleInterval:   100 * time.Millisecond,
		ReadyTimeout:     15 * time.Minute,
		RequestTimeout:   10 * time.Minute,
	}
}

// Coordinator runs experiments. It is safe for concurrent use: runs on
// different gpunodes with different agents go at the same time, and a run
// whose gpunode or agents are busy waits in its scheduler's queue, because
// each run owns the engine of its gpunode and the load of its agents.
type Coordinator struct {
	cfg     Config
	members Members
	dialer  Dialer
	logger  *slog.Logger
	sched   *scheduler
}

// New returns a Coordinator.
func New(cfg Config, members Members, dialer Dialer, logger *slog.Logger) *Coordinator {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	sched := newScheduler(cfg.Now)
	// Finished runs from an earlier life of this coordinator, so that
	// ListRuns still shows them after a restart.
	sched.done = loadDoneRuns(cfg.OutDir, maxDoneRuns, logger)
	return &Coordinator{cfg: cfg, members: members, dialer: dialer, logger: logger, sched: sched}
}

// Runs lists the runs queued, running and (the most recent) done.
func (c *Coordinator) Runs() []RunInfo { return c.sched.list() }

// Members returns the current membership view.
func (c *Coordinator) Members() []membership.Member { return c.members.Members() }

// BaselineSpec configures the cold/warm baseline of DESIGN.md, steps 1–6.
type BaselineSpec struct {
	Profile   string          `json:"profile"`
	Knobs     *pb.EngineKnobs `json:"-"`
	Prompt    string          `json:"prompt"`
	MaxTokens int             `json:"max_tokens"`
	WarmRuns  int             `json:"warm_runs"`
	// Repeats is R of DESIGN step 7: how many times the restart, cold_1 and
	// warm runs are done, for a distribution of cold figures; 0 means 1.
	Repeats  int    `json:"repeats"`
	API      string `json:"api"`
	ColdMode string `json:"cold_mode"`
	OutDir   string `json:"-"`
	RunID    string `json:"run_id"`
	// Selection picks the gpunode and the agent; the baseline uses one
	// gpunode and one agent.
	Selection Selection `json:"selection"`
}

// DefaultPrompt is the baseline's prompt when none is given.
const DefaultPrompt = "Explain, in one short paragraph, what time-to-first-token measures for an LLM inference server."

var runIDRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// withDefaults fills unset fields.
func (s BaselineSpec) withDefaults() BaselineSpec {
	if s.Profile == "" {
		s.Profile = "sim"
	}
	if s.Prompt == "" {
		s.Prompt = DefaultPrompt
	}
	if s.MaxTokens == 0 {
		s.MaxTokens = 64
	}
	if s.WarmRuns == 0 {
		s.WarmRuns = 5
	}
	if s.Repeats == 0 {
		s.Repeats = 1
	}
	if s.API == "" {
		s.API = "chat"
	}
	if s.ColdMode == "" {
		s.ColdMode = "warm-restart"
	}
	if s.Knobs == nil {
		s.Knobs = &pb.EngineKnobs{}
	}
	return s
}

// Validate checks the spec and names the field and the fix on error: each
// error is a specerr.FieldError, so that a front end can name its own flag.
func (s BaselineSpec) Validate() error {
	var errs []error
	bad := func(field string, v any, format string, a ...any) {
		errs = append(errs, specerr.New(field, v, format, a...))
	}
	if s.MaxTokens < 1 || s.MaxTokens > 1_000_000 {
		bad("max_tokens", s.MaxTokens, "is out of range: use 1..1000000")
	}
	if s.WarmRuns < 1 || s.WarmRuns > 10_000 {
		bad("warm_runs", s.WarmRuns, "is out of range: use 1..10000")
	}
	if s.Repeats < 1 || s.Repeats > 100 {
		bad("repeats", s.Repeats, "is out of range: use 1..100 restarts")
	}
	if s.API != "chat" && s.API != "completions" {
		bad("api", fmt.Sprintf("%q", s.API), "is unknown: use chat or completions")
	}
	switch s.ColdMode {
	case "warm-restart", "cold-disk", "cold-compile":
	default:
		bad("cold_mode", fmt.Sprintf("%q", s.ColdMode), "is unknown: use warm-restart, cold-disk or cold-compile")
	}
	if s.RunID != "" && !runIDRe.MatchString(s.RunID) {
		bad("run_id", fmt.Sprintf("%q", s.RunID), "is not a safe directory name: use letters, digits, '.', '_' and '-'")
	}
	if err := checkOutDir(s.OutDir); err != nil {
		errs = append(errs, err)
	}
	// All gpunodes is a fleet baseline (fleet.go).
	if err := s.Selection.Validate(true); err != nil {
		errs = append(errs, err)
	}
	if k := s.Knobs; k != nil {
		for _, n := range []struct {
			field string
			v     int32
		}{{"knobs.max_model_len", k.GetMaxModelLen()}, {"knobs.max_num_seqs", k.GetMaxNumSeqs()}, {"knobs.max_num_batched_tokens", k.GetMaxNumBatchedTokens()}} {
			if n.v < 0 {
				bad(n.field, n.v, "is negative: use a positive value, or 0 for the engine default")
			}
		}
		if u := k.GetGpuMemoryUtilization(); u < 0 || u > 1 {
			bad("knobs.gpu_memory_utilization", u, "is out of range: use a fraction in (0, 1], or 0 for the engine default")
		}
	}
	return errors.Join(errs...)
}

// Request returns the spec as the coordinator's RunBaseline request, the
// form in which a client sends it.
func (s BaselineSpec) Request() *pb.RunBaselineRequest {
	return &pb.RunBaselineRequest{
		Profile: s.Profile, Knobs: s.Knobs, Prompt: s.Prompt, MaxTokens: int32(s.MaxTokens), WarmRuns: int32(s.WarmRuns),
		Api: s.API, OutDir: s.OutDir, RunId: s.RunID, ColdMode: s.ColdMode, Repeats: int32(s.Repeats),
		Selection: s.Selection.Proto(),
	}
}

// checkOutDir allows a client to pick a subdirectory of the coordinator's
// results directory, never a place elsewhere on the coordinator's disk.
func checkOutDir(dir string) error {
	if dir == "" || filepath.IsLocal(dir) {
		return nil
	}
	return specerr.New("out_dir", fmt.Sprintf("%q", dir), "must be a relative path inside the coordinator's results directory (no leading / and no '..'): leave it empty, or start the coordinator with --out DIR")
}

// RunResult names what a run wrote.
type RunResult struct {
	RunID   string
	Dir     string
	Results *results.Results
}

func (c *Coordinator) newRunID() string {
	var b [3]byte
	_, _ = rand.Read(b[:])
	return c.cfg.Now().UTC().Format("20060102-150405") + "-" + hex.EncodeToString(b[:])
}

// waitForMembers leases what the run needs through the scheduler: a
// gpunode matching the selection (or every matching one, for
// Selection.All) and the free agents matching its agents selector, up to
// need.MaxAgents. While they are busy the run waits in the queue, and
// records a queued event each time its place changes; while none match it
// waits up to the discovery timeout and then fails naming the selection
// and the members that do exist. The lease, recorded as a lease event,
// lasts until the run ends.
func (c *Coordinator) waitForMembers(ctx context.Context, r *recorder, need memberNeed) (lease, error) {
	sr := r.sched
	if sr == nil { // a recorder made outside runLogged, as in tests
		sr = c.sched.register(c.newRunID())
		r.sched = sr
	}
	l, err := c.sched.acquire(ctx, sr, need, c.members, c.cfg.DiscoveryTimeout, func(at queuedAt) {
		r.record(results.EventQueued, results.Queued{Position: at.Position, Behind: at.Behind})
	})
	if err != nil {
		return lease{}, err
	}
	ev := results.Lease{GPUNodes: []string{}, Agents: names(l.Agents)}
	if need.NeedGPU {
		ev.GPUNodes = names(l.GPUs)
	}
	r.record(results.EventLease, ev)
	return l, nil
}

// RunBaseline runs the cold/warm baseline: stop the engine and take the
// "before" sample, restart the engine, send cold_1 the moment it is ready,
// then warm_1..warm_N back to back. Each event is appended to
// <out>/<run>/events.jsonl and passed to emit as it happens; results.json and
// first_token_latency.md are rendered from that file at the end, also when
// the run fails part-way.
//
// A spec that selects all gpunodes runs as a fleet baseline
// (RunFleetBaseline).
func (c *Coordinator) RunBaseline(ctx context.Context, spec BaselineSpec, emit func(results.Event)) (RunResult, error) {
	if spec.Selection.All {
		return c.RunFleetBaseline(ctx, FleetSpec{Baseline: spec}, emit)
	}
	spec = spec.withDefaults()
	if err := spec.Validate(); err != nil {
		return RunResult{}, err
	}
	return c.runLogged(ctx, filepath.Join(c.cfg.OutDir, spec.OutDir), &spec.RunID, emit, func(ctx context.Context, r *recorder) error {
		return (&baselineRun{recorder: r, c: c, spec: spec}).run(ctx)
	})
}

// runLogged runs body as one run of this coordinator, in <outDir>/<runID>/
// with its own events.jsonl, registered with the scheduler (body leases its
// gpunode and agents with waitForMembers; the lease ends with the run), ending with a run_end event
// and the reports rendered from the log, also when body fails. An empty
// *runID is filled with a fresh one.
//
// body runs under a context that the recorder cancels when the run fails
// from outside the body's own calls (an engine exit, a lost gpunode); that
// failure, not the cancellation it caused, is then the run's error.
func (c *Coordinator) runLogged(ctx context.Context, outDir string, runID *string, emit func(results.Event), body func(context.Context, *recorder) error) (RunResult, error) {
	if *runID == "" {
		*runID = c.newRunID()
	}
	sr := c.sched.register(*runID)
	var runErr error
	defer func() {
		if runErr == nil {
			c.sched.finish(sr, results.StatusOK, "")
		} else {
			c.sched.finish(sr, results.StatusFailed, runErr.Error())
		}
	}()
	dir := filepath.Join(outDir, *runID)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		runErr = fmt.Errorf("create run directory: %w", err)
		return RunResult{}, runErr
	}
	evlog, err := openEventLog(filepath.Join(dir, "events.jsonl"), c.cfg.Now)
	if err != nil {
		runErr = fmt.Errorf("run %s already has an event log: choose another run id: %w", *runID, err)
		return RunResult{}, runErr
	}
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	r := &recorder{log: evlog, emit: emit, logger: c.logger, cancel: cancel, sched: sr, observer: c.cfg.Observer, runID: *runID}
	runErr = body(rctx, r)
	if f := r.failed(); f != nil {
		runErr = f
	}
	end := results.RunEnd{Status: results.StatusOK}
	if runErr != nil {
		end = results.RunEnd{Status: results.StatusFailed, Error: runErr.Error()}
	}
	r.record(results.EventRunEnd, end)
	if err := evlog.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("close event log: %w", err)
	}
	rendered, renderErr := results.RenderDir(dir)
	runErr = errors.Join(runErr, renderErr)
	return RunResult{RunID: *runID, Dir: dir, Results: rendered}, runErr
}

type baselineRun struct {
	*recorder
	c    *Coordinator
	spec BaselineSpec
}

func (r *baselineRun) run(ctx context.Context) error {
	c := r.c
	// The knobs are recorded as encoding/json writes them, as before.
	knobs, err := json.Marshal(r.spec.Knobs)
	if err != nil {
		return fmt.Errorf("encode engine knobs: %w", err)
	}
	r.record(results.EventRunStart, results.RunStart{RunID: r.spec.RunID, Profile: r.spec.Profile, Prompt: r.spec.Prompt,
		MaxTokens: r.spec.MaxTokens, WarmRuns: r.spec.WarmRuns, Repeats: r.spec.Repeats, API: r.spec.API, ColdMode: r.spec.ColdMode, Knobs: knobs})

	l, err := c.waitForMembers(ctx, r.recorder, memberNeed{Experiment: "baseline", Selection: r.spec.Selection, NeedGPU: true, MaxAgents: 1})
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

	// The sampler streams for the whole run; samples are recorded as they
	// arrive. The run depends on this gpunode: its engine exiting, its
	// stream breaking or memberlist marking it dead fails the run at once.
	stopSampling := r.startSampling(ctx, gn, gpuM.Name, true, c.cfg.SampleInterval)
	defer stopSampling()
	stopWatch := r.watchMember(ctx, c.members, gpuM.Name)
	defer stopWatch()

	// Step 1: the "before" sample, with no engine running.
	if _, err := gn.StopEngine(ctx, &pb.StopEngineRequest{}); err != nil {
		return fmt.Errorf("stop engine before the run: %w", err)
	}
	r.mark(results.MarkBeforeEngine)
	r.nextSample(ctx, 2*time.Second)

	// The agent's connection is made now, so that cold_1 leaves the moment
	// the engine is ready rather than after a gRPC handshake.
	agentM := agentMs[0]
	ag, aclose, err := c.dialer.Agent(ctx, agentM.GRPCAddr)
	if err != nil {
		return fmt.Errorf("connect to agent %s at %s: %w", agentM.Name, agentM.GRPCAddr, err)
	}
	defer aclose.Close()

	// Steps 2–6, then step 7: the same again Repeats−1 times, for a
	// distribution of cold figures. Round 1 keeps the plain labels and the
	// marks the sanity metrics are cut at; later rounds prefix their labels
	// with "rK/".
	for round := 1; round <= r.spec.Repeats; round++ {
		if err := r.round(ctx, round, gn, ag, agentM.Name); err != nil {
			return err
		}
	}
	return nil
}

// round restarts the engine and sends cold_1 then warm_1..N.
func (r *baselineRun) round(ctx context.Context, round int, gn GPUNode, ag Agent, agentName string) error {
	c := r.c
	prefix := ""
	mark := r.mark
	if round > 1 {
		prefix = fmt.Sprintf("r%d/", round)
		mark = func(string) {}
	}
	r.record(results.EventRound, results.Round{Round: round})
	// Steps 2–3: start the engine and wait until it is ready.
	mark(results.MarkEngineSpawn)
	eng, err := gn.StartEngine(ctx, &pb.StartEngineRequest{
		Profile:        r.spec.Profile,
		Knobs:          r.spec.Knobs,
		ReadyTimeoutMs: c.cfg.ReadyTimeout.Milliseconds(),
		ColdMode:       r.spec.ColdMode,
	})
	if err != nil {
		return fmt.Errorf("round %d: start engine (profile %q): %w", round, r.spec.Profile, err)
	}
	r.record(results.EventEngineReady, eng)
	probe := func(labels []string) error {
		req := &pb.RunProbeRequest{
			RunId:       r.spec.RunID,
			AgentId:     agentName,
			Target:      &pb.Target{BaseUrl: eng.GetBaseUrl(), Model: eng.GetServedModelName(), Api: r.spec.API},
			Workload:    &pb.Workload{Prompt: r.spec.Prompt, MaxTokens: int32(r.spec.MaxTokens)},
			Concurrency: 1,
			Requests:    int32(len(labels)),
			Labels:      labels,
			IntervalMs:  1000,
			TimeoutMs:   c.cfg.RequestTimeout.Milliseconds(),
		}
		// The baseline has one agent: a frozen one fails the run.
		_, err := runWatched(ctx, ag, agentName, req, c.agentSilence(), func(rep *pb.IntervalReport) error {
			r.checkInterval("", rep)
			r.record(results.EventInterval, rep)
			return nil
		})
		return err
	}

	// Step 4: cold_1, the moment the engine is ready.
	mark(results.MarkColdStart)
	if err := probe([]string{prefix + "cold_1"}); err != nil {
		return fmt.Errorf("%scold_1 probe on agent %s: %w", prefix, agentName, err)
	}
	mark(results.MarkColdEnd)
	// Steps 5–6: warm_1 immediately after, then warm_2..N.
	labels := make([]string, r.spec.WarmRuns)
	for i := range labels {
		labels[i] = fmt.Sprintf("%swarm_%d", prefix, i+1)
	}
	mark(results.MarkWarmStart)
	if err := probe(labels); err != nil {
		return fmt.Errorf("%swarm probes on agent %s: %w", prefix, agentName, err)
	}
	mark(results.MarkWarmEnd)
	if round == 1 {
		r.nextSample(ctx, 2*time.Second)
	}
	return nil
}
