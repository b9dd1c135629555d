package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ttftlab/ttftlab/agent"
	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/membership"
	"github.com/ttftlab/ttftlab/internal/specerr"
	"google.golang.org/protobuf/proto"
)

// SweepSpec configures a load sweep: one level after another, each split
// across the agents by execution segment.
type SweepSpec struct {
	RunID     string
	OutDir    string
	Profile   string
	Knobs     *pb.EngineKnobs
	BaseURL   string
	Model     string
	API       string
	Load      *pb.LoadModel
	Levels    []float64
	Workload  *pb.Workload
	Generator *pb.WorkloadGen
	// AgentLoss is "continue" or "abort".
	AgentLoss string
	MaxAgents int
	// AutoDuration makes Load.DurationMs a minimum: each level after the
	// first is sized from the level before (sizeLevel), up to MaxDuration
	// (0: DefaultMaxLevelDuration). Off, the duration is pinned.
	AutoDuration bool
	MaxDuration  time.Duration
	// Selection picks the gpunode and the agents that share the levels.
	Selection Selection
	// TargetCAPEM and TargetInsecureSkipVerify are the TLS settings of an
	// https:// BaseURL, passed to every agent (agent.Target).
	TargetCAPEM              []byte
	TargetInsecureSkipVerify bool
	// TargetTransport and TargetFirstTokenClock are the agents' HTTP
	// client and first-token clock (agent.Target); empty: the defaults.
	TargetTransport       string
	TargetFirstTokenClock string
}

func (s SweepSpec) withDefaults() SweepSpec {
	if s.API == "" {
		s.API = "chat"
	}
	if s.AgentLoss == "" {
		s.AgentLoss = "continue"
	}
	if s.Profile == "" && s.BaseURL == "" {
		s.Profile = "sim"
	}
	if s.Knobs == nil {
		s.Knobs = &pb.EngineKnobs{}
	}
	if s.Load == nil {
		s.Load = &pb.LoadModel{Kind: "closed", DurationMs: 10_000}
	}
	if s.Load.GetKind() == "" {
		s.Load.Kind = "closed"
	}
	if s.Workload == nil {
		s.Workload = &pb.Workload{Prompt: DefaultPrompt, MaxTokens: 64}
	}
	if s.AutoDuration && s.MaxDuration == 0 {
		s.MaxDuration = DefaultMaxLevelDuration
	}
	return s
}

// maxLevelConcurrency caps a closed-loop level: it is the agents' cap on
// concurrency (agent.MaxConcurrency), each request in flight being a
// goroutine and a connection of an agent process.
const maxLevelConcurrency = 100_000

// Bounds of the error budget's window, as the agents take it.
// msSaturated converts milliseconds from a request to a Duration, holding
// values beyond Duration's range at its ends instead of wrapping around, so
// that a huge value cannot pass a range check as a small one.
func msSaturated(ms int64) time.Duration {
	const limit = math.MaxInt64 / int64(time.Millisecond)
	switch {
	case ms > limit:
		return math.MaxInt64
	case ms < -limit:
		return math.MinInt64
	}
	return time.Duration(ms) * time.Millisecond
}

// Validate names the bad field and the fix: each error is a
// specerr.FieldError, so that a front end can name its own flag.
func (s SweepSpec) Validate() error {
	var errs []error
	bad := func(field string, v any, format string, a ...any) {
		errs = append(errs, specerr.New(field, v, format, a...))
	}
	msD := func(ms int64) time.Duration { return time.Duration(ms) * time.Millisecond }
	lm := s.Load
	if len(s.Levels) == 0 {
		bad("levels", nil, "is empty: give at least one concurrency or rate, e.g. 1,4,16")
	}
	if len(s.TargetCAPEM) > 0 {
		if s.TargetInsecureSkipVerify {
			bad("target_ca_pem", "(set)", "is set with target_insecure_skip_verify: skipping verification ignores the CA; drop one")
		} else if _, err := agent.ParseCAPEM(s.TargetCAPEM); err != nil {
			bad("target_ca_pem", fmt.Sprintf("(%d bytes)", len(s.TargetCAPEM)), "%v", err)
		}
	}
	if err := agent.CheckTransport(s.TargetTransport); err != nil {
		bad("target_transport", fmt.Sprintf("%q", s.TargetTransport), "%v", err)
	}
	if err := agent.CheckFirstTokenClock(s.TargetFirstTokenClock); err != nil {
		bad("target_first_token_clock", fmt.Sprintf("%q", s.TargetFirstTokenClock), "%v", err)
	}
	closed := lm.GetKind() == "closed"
	for _, l := range s.Levels {
		switch {
		case math.IsNaN(l) || l <= 0 || math.IsInf(l, 0) || (closed && l != math.Trunc(l)):
			bad("levels", fmt.Sprintf("%g", l), "is invalid: closed-loop levels are concurrencies (whole numbers ≥ 1), open-loop levels are rates > 0")
		case closed && l > maxLevelConcurrency:
			bad("levels", fmt.Sprintf("%g", l), "is over the concurrency limit of %d: lower it", maxLevelConcurrency)
		case !closed && l > 1e6:
			bad("levels", fmt.Sprintf("%g", l), "is over the rate limit of 1e6 requests/s: lower it")
		}
	}
	switch lm.GetKind() {
	case "closed", "constant", "poisson", "ramp":
		if lm.GetBurstiness() != 0 {
			bad("load.burstiness", lm.GetBurstiness(), "is set for load kind %q: use kind gamma for bursty arrivals", lm.GetKind())
		}
	case "gamma":
		if b := lm.GetBurstiness(); !(b >= 1e-3 && b <= 1e3) {
			bad("load.burstiness", b, "is invalid for gamma arrivals: set a shape in [0.001, 1000] (1 is Poisson, below 1 burstier)")
		}
	default:
		bad("load.kind", fmt.Sprintf("%q", lm.GetKind()), "is unknown: use closed, constant, poisson, gamma or ramp")
	}
	if lm.GetDurationMs() < 0 {
		bad("load.duration_ms", msD(lm.GetDurationMs()), "is negative: give a positive duration")
	}
	if lm.GetRequests() < 0 {
		bad("load.requests", lm.GetRequests(), "is negative: give a positive count, or 0 to bound each level by duration only")
	}
	if lm.GetDurationMs() <= 0 && lm.GetRequests() <= 0 {
		bad("load", nil, "has no bound for each level: set load duration_ms or requests")
	}
	if lm.GetWarmupMs() < 0 {
		bad("load.warmup_ms", msD(lm.GetWarmupMs()), "is negative: use 0 for no warm-up")
	}
	for _, o := range []struct {
		field string
		v     float64
	}{{"load.slo_ttft_ms", lm.GetSloTtftMs()}, {"load.slo_tpot_ms", lm.GetSloTpotMs()}, {"load.slo_e2e_ms", lm.GetSloE2EMs()}} {
		if math.IsNaN(o.v) || o.v < 0 || o.v > 3.6e6 {
			bad(o.field, o.v, "is invalid: set milliseconds in [0, 3600000] (0 leaves it unconstrained)")
		}
	}
	if r := lm.GetMaxErrorRate(); math.IsNaN(r) || r > 1 {
		bad("load.max_error_rate", r, "is invalid: set a fraction of failed attempts in [0, 1] (0 means the default; 1 or a negative value turns the error budget off)")
	}
	if err := agent.CheckErrorWindow("load.error_window_ms", msSaturated(lm.GetErrorWindowMs())); err != nil {
		errs = append(errs, err)
	}
	if mt := s.Workload.GetMaxTokens(); mt < 1 && s.Workload != nil {
		bad("workload.max_tokens", mt, "is invalid: set max_tokens ≥ 1")
	}
	if in := s.Generator.GetInputLen(); in != nil && in.GetKind() == "fixed" && (in.GetMean() < 1 || in.GetMean() != math.Trunc(in.GetMean())) {
		bad("generator.input_len", in.GetMean(), "is invalid: set a whole number of tokens ≥ 1")
	}
	if out := s.Generator.GetOutputLen(); out != nil && out.GetKind() == "fixed" && (out.GetMean() < 1 || out.GetMean() != math.Trunc(out.GetMean())) {
		bad("generator.output_len", out.GetMean(), "is invalid: set a whole number of tokens ≥ 1")
	}
	if s.API != "chat" && s.API != "completions" {
		bad("api", fmt.Sprintf("%q", s.API), "is unknown: use chat or completions")
	}
	if s.AgentLoss != "continue" && s.AgentLoss != "abort" {
		bad("agent_loss", fmt.Sprintf("%q", s.AgentLoss), "is unknown: use continue or abort")
	}
	if s.RunID != "" && !runIDRe.MatchString(s.RunID) {
		bad("run_id", fmt.Sprintf("%q", s.RunID), "is not a safe directory name: use letters, digits, '.', '_' and '-'")
	}
	if err := checkOutDir(s.OutDir); err != nil {
		errs = append(errs, err)
	}
	if s.MaxDuration < 0 {
		bad("max_duration", s.MaxDuration, "is negative: give a cap such as 3m, or 0 for the default %v", DefaultMaxLevelDuration)
	} else if s.AutoDuration && s.MaxDuration > 0 && s.MaxDuration < msD(lm.GetDurationMs()) {
		bad("max_duration", s.MaxDuration, "is shorter than the level duration %v (load.duration_ms): raise the cap, or pin the duration", msD(lm.GetDurationMs()))
	}
	if s.MaxAgents < 0 {
		bad("max_agents", s.MaxAgents, "is negative: use 0 for all agents")
	}
	if err := s.Selection.Validate(false); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// Request returns the spec as the coordinator's RunSweep request, the form
// in which a client sends it.
func (s SweepSpec) Request() *pb.RunSweepRequest {
	return &pb.RunSweepRequest{
		RunId: s.RunID, OutDir: s.OutDir, Profile: s.Profile, Knobs: s.Knobs, BaseUrl: s.BaseURL, Model: s.Model, Api: s.API,
		Load: s.Load, Levels: s.Levels, Workload: s.Workload, Generator: s.Generator, AgentLoss: s.AgentLoss,
		MaxAgents: int32(s.MaxAgents), AutoDuration: s.AutoDuration, MaxDurationMs: s.MaxDuration.Milliseconds(),
		Selection: s.Selection.Proto(), TargetCaPem: s.TargetCAPEM, TargetInsecureSkipVerify: s.TargetInsecureSkipVerify,
		TargetTransport: s.TargetTransport, TargetFirstTokenClock: s.TargetFirstTokenClock,
	}
}

// RunSweep runs the levels one after another. For each level every agent
// gets the same global plan and its own segment i/n..(i+1)/n, and all start
// at one barrier time. Intervals are recorded as they arrive. A lost agent
// is recorded with what it delivered; the level goes on without it.
func (c *Coordinator) RunSweep(ctx context.Context, spec SweepSpec, emit func(results.Event)) (RunResult, error) {
	spec = spec.withDefaults()
	if err := spec.Validate(); err != nil {
		return RunResult{}, err
	}
	outDir := filepath.Join(c.cfg.OutDir, spec.OutDir)
	lf := newLevelFiles()
	return c.runLogged(ctx, outDir, &spec.RunID, lf.tap(emit), func(ctx context.Context, r *recorder) error {
		lf.dir = filepath.Join(outDir, spec.RunID, results.SaveResultDir)
		return c.sweep(ctx, r, spec, lf)
	})
}

// levelFiles writes each level's vLLM-format result into the run
// directory's save_result/ as the level ends: it sees the run's events as
// the client does (tap), so its files are those `--save-result` writes.
// Its errors become warnings of the run (warn).
type levelFiles struct {
	dir  string
	exp  *results.SweepExporter
	mu   sync.Mutex
	errs []error
}

func newLevelFiles() *levelFiles {
	// vLLM's default options cannot fail validation.
	exp, _ := results.NewSweepExporter(results.ExportOptions{})
	return &levelFiles{exp: exp}
}

// tap passes every event on to emit and writes a level's file at its
// level_end. The recorder calls it under its emit lock, in record order.
func (lf *levelFiles) tap(emit func(results.Event)) func(results.Event) {
	return func(ev results.Event) {
		f, err := lf.exp.Add(ev)
		if err == nil && f != nil {
			err = results.SaveLevelFile(lf.dir, f)
		}
		if err != nil {
			lf.mu.Lock()
			lf.errs = append(lf.errs, err)
			lf.mu.Unlock()
		}
		if emit != nil {
			emit(ev)
		}
	}
}

// warn records the errors of the files written so far as warnings.
func (lf *levelFiles) warn(r *recorder) {
	lf.mu.Lock()
	errs := lf.errs
	lf.errs = nil
	lf.mu.Unlock()
	for _, err := range errs {
		r.record(results.EventWarning, results.Warning{Message: "save_result: " + err.Error()})
	}
}

func (c *Coordinator) sweep(ctx context.Context, r *recorder, spec SweepSpec, lf *levelFiles) error {
	l, err := c.waitForMembers(ctx, r, memberNeed{Experiment: "sweep", Selection: spec.Selection, NeedGPU: spec.BaseURL == "", MaxAgents: spec.MaxAgents})
	if err != nil {
		return err
	}
	var gpuM membership.Member
	if len(l.GPUs) > 0 {
		gpuM = l.GPUs[0]
	}
	agentMs := l.Agents
	r.record(results.EventMembers, c.members.Members())
	baseURL, model := spec.BaseURL, spec.Model
	if gpuM.GRPCAddr != "" {
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
		// A sweep of the engine this gpunode starts depends on it: a broken
		// stream or a dead member fails the sweep. Against an explicit
		// base_url the gpunode only samples, and losing it is a warning. An
		// engine exit it reports fails the sweep either way.
		critical := baseURL == ""
		stop := r.startSampling(ctx, gn, gpuM.Name, critical, c.cfg.SampleInterval)
		defer stop()
		if critical {
			stopWatch := r.watchMember(ctx, c.members, gpuM.Name)
			defer stopWatch()
		}
		if baseURL == "" {
			eng, err := gn.StartEngine(ctx, &pb.StartEngineRequest{Profile: spec.Profile, Knobs: spec.Knobs, ReadyTimeoutMs: c.cfg.ReadyTimeout.Milliseconds()})
			if err != nil {
				return fmt.Errorf("start engine (profile %q): %w", spec.Profile, err)
			}
			r.record(results.EventEngineReady, eng)
			baseURL, model = eng.GetBaseUrl(), eng.GetServedModelName()
		}
	}
	if model == "" {
		return errors.New("model is empty: name the served model when sweeping an external base_url")
	}
	if spec.BaseURL != "" {
		// Best effort: an external target says what it is (a simulated
		// engine answers "…+sim"); an unreachable /version is not an error.
		r.record(results.EventTargetVersion, results.TargetVersion{Version: targetVersion(ctx, spec.BaseURL)})
	}
	transport, clock := agent.Target{Transport: spec.TargetTransport, FirstTokenClock: spec.TargetFirstTokenClock}.EffectiveClient()
	r.record(results.EventSweepStart, results.SweepStart{RunID: spec.RunID, BaseURL: baseURL, Model: model, API: spec.API, Levels: spec.Levels,
		Transport: transport, FirstTokenClock: clock,
		Load: results.ProtoJSON(spec.Load), Workload: results.ProtoJSON(spec.Workload), Generator: results.ProtoJSON(spec.Generator), AgentLoss: spec.AgentLoss})

	var prevE2E time.Duration
	for li, level := range spec.Levels {
		if err := ctx.Err(); err != nil {
			return err
		}
		dur, why := levelDuration(spec, li, level, prevE2E)
		lost, e2e, err := c.runLevel(ctx, r, spec, li, level, dur, why, agentMs, baseURL, model)
		lf.warn(r)
		if err != nil {
			return err
		}
		prevE2E = e2e
		if len(lost) > 0 && spec.AgentLoss == "abort" {
			return fmt.Errorf("level %d: lost agent(s) %v and agent_loss is abort", li+1, lost)
		}
		// Lost agents sit out the following levels.
		agentMs = remove(agentMs, lost)
		if len(agentMs) == 0 {
			return fmt.Errorf("level %d: every agent was lost", li+1)
		}
	}
	return nil
}

// levelDuration is level li's measured duration and why: the load's
// duration when it is pinned or the level is bounded by requests alone,
// else sizeLevel from the previous level's E2E p50.
func levelDuration(spec SweepSpec, li int, level float64, prevE2E time.Duration) (time.Duration, string) {
	base := time.Duration(spec.Load.GetDurationMs()) * time.Millisecond
	switch {
	case base <= 0:
		return 0, "bounded by requests"
	case !spec.AutoDuration:
		return base, fmt.Sprintf("pinned at %v", base)
	}
	prev := ""
	if li > 0 {
		prev = "level " + strconv.Itoa(li)
	}
	return sizeLevel(base, spec.MaxDuration, spec.Load.GetKind() == "closed", level, prevE2E, prev)
}

func remove(ms []membership.Member, names []string) []membership.Member {
	var out []membership.Member
outer:
	for _, m := range ms {
		for _, n := range names {
			if m.Name == n {
				continue outer
			}
		}
		out = append(out, m)
	}
	return out
}

// barrierDelay is how far in the future a level's agents are told to
// start, counted after every agent's client exists, so that each has its
// plan before the first intended send time; an agent that got its plan late
// would otherwise send the arrivals already due in one burst.
const barrierDelay = 500 * time.Millisecond

// ErrAgentRejected wraps an agent's refusal of a plan (an invalid spec, a
// target it may not load): the sweep fails, rather than losing the agent.
var ErrAgentRejected = errors.New("agent rejected the plan")

func (c *Coordinator) runLevel(ctx context.Context, r *recorder, spec SweepSpec, li int, level float64, dur time.Duration, why string,
	agents []membership.Member, baseURL, model string) (lost []string, e2eP50 time.Duration, err error) {
	load := proto.Clone(spec.Load).(*pb.LoadModel)
	if dur > 0 {
		load.DurationMs = dur.Milliseconds()
	}
	// The level's measured E2E, merged as it arrives, sizes the next level.
	e2e := hdr.New()
	defer func() {
		if e2e.Count() > 0 {
			e2eP50 = time.Duration(e2e.Summarize().P50 * float64(time.Millisecond))
		}
	}()
	if load.GetKind() == "closed" {
		load.Concurrency = int32(level)
		// Each agent needs at least one worker: an agent whose segment holds
		// no worker would own request indices nobody sends.
		if n := int(level); len(agents) > n {
			agents = agents[:n]
		}
	} else {
		load.Rate = level
	}
	type client struct {
		m     membership.Member
		ag    Agent
		close func() error
	}
	var clients []client
	defer func() {
		for _, cl := range clients {
			cl.close()
		}
	}()
	lostMember := func(m membership.Member, err error, got watchedRun) {
		r.record(results.EventAgentLost, results.AgentLost{Level: li, Agent: m.Name, Error: err.Error(), Intervals: got.Intervals, Requests: got.Requests, InFlight: got.InFlight})
		lost = append(lost, m.Name)
	}
	for _, am := range agents {
		ag, aclose, err := c.dialer.Agent(ctx, am.GRPCAddr)
		if err != nil {
			lostMember(am, fmt.Errorf("connect: %w", err), watchedRun{})
			continue
		}
		clients = append(clients, client{m: am, ag: ag, close: aclose.Close})
	}
	if len(clients) == 0 {
		return lost, 0, fmt.Errorf("level %d: no agent could be reached", li+1)
	}
	start := c.cfg.Now().Add(barrierDelay)
	names := make([]string, len(clients))
	for i, cl := range clients {
		names[i] = cl.m.Name
	}
	r.record(results.EventLevelStart, results.LevelStart{Level: li, Value: level, Agents: names, StartNs: start.UnixNano(),
		DurationMs: load.GetDurationMs(), WarmupMs: load.GetWarmupMs(), DurationReason: why})
	n := len(clients)
	var mu sync.Mutex
	var rejected []error
	var aborted []string // agents whose error budget ended their share
	var wg sync.WaitGroup
	for i, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := &pb.RunProbeRequest{
				RunId:   spec.RunID,
				AgentId: cl.m.Name,
				Target: &pb.Target{BaseUrl: baseURL, Model: model, Api: spec.API, CaPem: spec.TargetCAPEM, InsecureSkipVerify: spec.TargetInsecureSkipVerify,
					Transport: spec.TargetTransport, FirstTokenClock: spec.TargetFirstTokenClock},
				Workload:      spec.Workload,
				Generator:     spec.Generator,
				Load:          load,
				Segment:       &pb.Segment{Start: fmt.Sprintf("%d/%d", i, n), End: fmt.Sprintf("%d/%d", i+1, n)},
				IntervalMs:    1000,
				StartUnixNano: start.UnixNano(),
				TimeoutMs:     c.cfg.RequestTimeout.Milliseconds(),
			}
			// A stream silent for the silence limit is cancelled: the agent
			// is lost with what it delivered, and nothing it sends later counts.
			got, err := runWatched(ctx, cl.ag, cl.m.Name, req, c.agentSilence(), func(rep *pb.IntervalReport) error {
				checked := r.checkInterval(results.LevelPrefix(li), rep)
				r.record(results.EventSweepInterval, results.SweepInterval{Level: li, Report: rep, Checked: checked})
				if checked.Set != nil && !rep.GetWarmup() {
					if h, ok := checked.Set[hdr.E2E]; ok {
						mu.Lock()
						e2e.Merge(h)
						mu.Unlock()
					}
				}
				if reason := rep.GetAbortReason(); reason != "" {
					mu.Lock()
					aborted = append(aborted, fmt.Sprintf("agent %s: %s", cl.m.Name, reason))
					mu.Unlock()
				}
				return nil
			})
			if err == nil || ctx.Err() != nil {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, ErrAgentRejected) {
				rejected = append(rejected, fmt.Errorf("agent %s: %w", cl.m.Name, err))
				return
			}
			lostMember(cl.m, err, got)
		}()
	}
	wg.Wait()
	r.record(results.EventLevelEnd, results.LevelEnd{Level: li})
	if len(rejected) > 0 {
		return lost, 0, errors.Join(rejected...)
	}
	if len(aborted) > 0 {
		// The level failed: the sweep stops here, results kept.
		return lost, 0, fmt.Errorf("level %d failed: %s", li+1, strings.Join(aborted, "; "))
	}
	return lost, 0, ctx.Err()
}

// targetVersion asks an OpenAI-compatible server for GET /version, as vLLM
// serves it; it returns "" when the server does not say.
func targetVersion(ctx context.Context, baseURL string) string {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	u := strings.TrimSuffix(strings.TrimSuffix(baseURL, "/"), "/v1") + "/version"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return ""
	}
	// No redirects and no proxy: the coordinator asks the target itself and
	// nothing else.
	client := &http.Client{
		Transport:     &http.Transport{Proxy: nil},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	defer client.CloseIdleConnections()
	resp, err := client.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var v struct {
		Version string `json:"version"`
	}
	if resp.StatusCode != http.StatusOK || json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&v) != nil {
		return ""
	}
	return v.Version
}
