package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/specerr"
	"google.golang.org/protobuf/proto"
)

// Prefix defaults.
const (
	DefaultPrefixSuffixLen     = 128
	DefaultPrefixConcurrency   = 4
	DefaultPrefixRepeats       = 5
	DefaultPrefixOutputLen     = 16
	DefaultPrefixLevelDuration = 3 * time.Second
	DefaultPrefixWarmup        = time.Second
	// prefixProbeWords is the length of a reset-verification probe: a few
	// blocks of 16 tokens whatever the tokeniser.
	prefixProbeWords = 96
	// prefixIdleWait bounds the wait for the engine to finish its running
	// requests before a reset (vLLM refuses to reset while blocks are held).
	prefixIdleWait = 10 * time.Second
)

// DefaultPrefixLens and DefaultHitRatios are the sweeps' defaults.
var (
	DefaultPrefixLens = []int{0, 256, 1024, 4096}
	DefaultHitRatios  = []float64{0, 0.25, 0.5, 0.75, 1}
)

// PrefixCacheNode is what the prefix experiment needs from a gpunode
// besides GPUNode: the prefix-cache reset and a scrape of /metrics on
// demand. GPUNodeClient implements it.
type PrefixCacheNode interface {
	ResetPrefixCache(ctx context.Context) (*pb.ResetPrefixCacheResponse, error)
	EngineMetrics(ctx context.Context) (map[string]float64, error)
}

// PrefixSpec configures the prefix experiment (docs/experiments.md).
type PrefixSpec struct {
	RunID   string
	OutDir  string
	Profile string
	// Knobs are the base knobs of both points; each sets
	// enable_prefix_caching.
	Knobs         *pb.EngineKnobs
	API           string
	PrefixLens    []int
	SuffixLen     int
	HitRatios     []float64
	HitPrefixLen  int
	Concurrency   int
	Repeats       int
	OutputLen     int
	LevelDuration time.Duration
	Warmup        time.Duration
	// SkipOff leaves out the point with prefix caching off.
	SkipOff   bool
	MaxAgents int
	// Selection picks the gpunode and the agents.
	Selection Selection
}

func (s PrefixSpec) withDefaults() PrefixSpec {
	if s.Profile == "" {
		s.Profile = "sim"
	}
	if s.API == "" {
		s.API = "completions" // exact prompt lengths: no chat template
	}
	if s.Knobs == nil {
		s.Knobs = &pb.EngineKnobs{}
	}
	if s.PrefixLens == nil {
		s.PrefixLens = DefaultPrefixLens
	}
	if s.HitRatios == nil {
		s.HitRatios = DefaultHitRatios
	}
	if s.SuffixLen == 0 {
		s.SuffixLen = DefaultPrefixSuffixLen
	}
	if s.HitPrefixLen == 0 && len(s.PrefixLens) > 0 {
		// The largest prefix up to 1,024 tokens: long enough for caching
		// to pay, short enough for a few seconds to hold tens of requests.
		s.HitPrefixLen = slices.Max(s.PrefixLens)
		for _, l := range s.PrefixLens {
			if l >= 16 && l <= 1024 && (s.HitPrefixLen > 1024 || l > s.HitPrefixLen) {
				s.HitPrefixLen = l
			}
		}
	}
	if s.Concurrency == 0 {
		s.Concurrency = DefaultPrefixConcurrency
	}
	if s.Repeats == 0 {
		s.Repeats = DefaultPrefixRepeats
	}
	if s.OutputLen == 0 {
		s.OutputLen = DefaultPrefixOutputLen
	}
	if s.LevelDuration == 0 {
		s.LevelDuration = DefaultPrefixLevelDuration
	}
	if s.Warmup == 0 {
		s.Warmup = DefaultPrefixWarmup
	}
	return s
}

// Validate names the bad field and the fix: each error about one field is a
// specerr.FieldError under the field's name in RunPrefixRequest, so that a
// front end can name its own flag.
func (s PrefixSpec) Validate() error {
	var errs []error
	bad := func(field string, v any, format string, a ...any) {
		errs = append(errs, specerr.New(field, v, format, a...))
	}
	const maxLen = 1 << 20
	if len(s.PrefixLens) == 0 && len(s.HitRatios) == 0 {
		errs = append(errs, errors.New("prefix_lens and hit_ratios are both empty: give at least one prefix length, e.g. 0,256,1024,4096"))
	}
	if len(s.PrefixLens) > 32 || len(s.HitRatios) > 32 {
		errs = append(errs, fmt.Errorf("%d prefix_lens and %d hit_ratios: give at most 32 of each", len(s.PrefixLens), len(s.HitRatios)))
	}
	for _, l := range s.PrefixLens {
		if l < 0 || l > maxLen {
			bad("prefix_lens", l, "is out of range: use 0..%d tokens", maxLen)
		}
	}
	for _, h := range s.HitRatios {
		if !(h >= 0 && h <= 1) {
			bad("hit_ratios", h, "is out of range: use a fraction in [0, 1], e.g. 0,0.5,1")
		}
	}
	if s.SuffixLen < 1 || s.SuffixLen > maxLen {
		bad("suffix_len", s.SuffixLen, "is out of range: use 1..%d tokens", maxLen)
	}
	if len(s.HitRatios) > 0 && (s.HitPrefixLen < 16 || s.HitPrefixLen > maxLen) {
		bad("hit_prefix_len", s.HitPrefixLen, "is out of range: the hit-ratio sweep shares a prefix of at least one 16-token block; use 16..%d", maxLen)
	}
	if s.Concurrency < 1 || s.Concurrency > 4096 {
		bad("concurrency", s.Concurrency, "is out of range: use 1..4096")
	}
	if s.Repeats < 1 || s.Repeats > 1000 {
		bad("repeats", s.Repeats, "is out of range: use 1..1000 requests per cold and hot step")
	}
	if s.OutputLen < 1 || s.OutputLen > 4096 {
		bad("output_len", s.OutputLen, "is out of range: use 1..4096 tokens")
	}
	if mml := int(s.Knobs.GetMaxModelLen()); mml > 0 {
		longest := s.HitPrefixLen
		if len(s.PrefixLens) > 0 {
			longest = max(longest, slices.Max(s.PrefixLens))
		}
		if need := longest + s.SuffixLen + s.OutputLen; need > mml {
			errs = append(errs, specerr.New("knobs.max_model_len", mml, "is shorter than the longest request (prefix %d + suffix %d + output %d = %d tokens): raise {knobs.max_model_len} or shorten the prefixes", longest, s.SuffixLen, s.OutputLen, need).Refer("knobs.max_model_len"))
		}
	}
	errs = append(errs, checkStepTimes(s.LevelDuration, s.Warmup)...)
	if s.API != "chat" && s.API != "completions" {
		bad("api", fmt.Sprintf("%q", s.API), "is unknown: use completions (exact prompt lengths) or chat")
	}
	if s.RunID != "" && !runIDRe.MatchString(s.RunID) {
		bad("run_id", fmt.Sprintf("%q", s.RunID), "is not a safe directory name: use letters, digits, '.', '_' and '-'")
	}
	if err := checkOutDir(s.OutDir); err != nil {
		errs = append(errs, err)
	}
	if s.MaxAgents < 0 {
		bad("max_agents", s.MaxAgents, "is negative: use 0 for all agents")
	}
	if err := s.Selection.Validate(false); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ValidatePrefix checks s as RunPrefix will, its defaults filled in.
func ValidatePrefix(s PrefixSpec) error { return s.withDefaults().Validate() }

// ErrResetNotVerified marks a prefix-cache reset the metrics did not
// confirm: the run fails with it.
var ErrResetNotVerified = errors.New("prefix-cache reset not verified")

// RunPrefix runs the prefix experiment (docs/experiments.md).
func (c *Coordinator) RunPrefix(ctx context.Context, spec PrefixSpec, emit func(results.Event)) (RunResult, error) {
	spec = spec.withDefaults()
	if err := spec.Validate(); err != nil {
		return RunResult{}, err
	}
	params := results.PrefixParams{PrefixLens: spec.PrefixLens, SuffixLen: spec.SuffixLen, HitRatios: spec.HitRatios, HitPrefixLen: spec.HitPrefixLen,
		Concurrency: spec.Concurrency, Repeats: spec.Repeats, OutputLen: spec.OutputLen, LevelDurationS: spec.LevelDuration.Seconds(), WarmupS: spec.Warmup.Seconds()}
	var points []GridPoint
	for _, on := range []bool{true, false} {
		if !on && spec.SkipOff {
			continue
		}
		k := proto.Clone(spec.Knobs).(*pb.EngineKnobs)
		label := "prefix caching on"
		k.EnablePrefixCaching = pb.OptionalBool_OPTIONAL_BOOL_TRUE
		if !on {
			k.EnablePrefixCaching, label = pb.OptionalBool_OPTIONAL_BOOL_FALSE, "prefix caching off"
		}
		points = append(points, GridPoint{Label: label, Knobs: k})
	}
	gs := GridSpec{RunID: spec.RunID, OutDir: spec.OutDir, Profile: spec.Profile, API: spec.API, Experiment: results.ExperimentPrefix,
		Params: params, Points: points, MaxAgents: spec.MaxAgents, Selection: spec.Selection,
		Plan: func(GridReady) (any, LevelSchedule) { return nil, nil },
		RunPoint: func(ctx context.Context, p *PointRun) error {
			return (&prefixPoint{spec: spec, p: p, rnd: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), uint64(p.Index)))}).run(ctx)
		}}
	return c.RunGrid(ctx, gs, emit)
}

// prefixPoint drives one engine start of the prefix experiment.
type prefixPoint struct {
	spec PrefixSpec
	p    *PointRun
	rnd  *rand.Rand
	seed uint64
}

func (pp *prefixPoint) mode() string {
	if pp.p.Point.Knobs.GetEnablePrefixCaching() == pb.OptionalBool_OPTIONAL_BOOL_FALSE {
		return results.ModeOff
	}
	return results.ModeOn
}

func (pp *prefixPoint) run(ctx context.Context) error {
	node, ok := pp.p.g.gn.(PrefixCacheNode)
	if !ok {
		return errors.New("this gpunode client cannot reset the prefix cache or scrape /metrics on demand")
	}
	spec := pp.spec
	pp.seed = uint64(pp.p.Index+1) << 32
	// The engine's first request pays its lazy initialisation: send it
	// before any step, at both points, so that no cold step carries it.
	if err := pp.probe(ctx, pp.probePrompt(), "first_request"); err != nil {
		return err
	}
	for _, l := range spec.PrefixLens {
		gen := func(suffixSeed uint64) *pb.WorkloadGen {
			g := &pb.WorkloadGen{Kind: "synthetic", Seed: pp.seed + uint64(l), SuffixSeed: suffixSeed,
				InputLen:  &pb.LengthDist{Kind: "fixed", Mean: float64(l + spec.SuffixLen)},
				OutputLen: &pb.LengthDist{Kind: "fixed", Mean: float64(spec.OutputLen)}}
			if l > 0 {
				// One prefix per request: the cold step's requests share nothing.
				g.Kind, g.PrefixLen, g.NumPrefixes = "shared_prefix", int32(l), int32(spec.Repeats)
			}
			return g
		}
		a, b := pp.seed+1<<20+uint64(l), pp.seed+2<<20+uint64(l)
		steps := []struct {
			phase string
			gen   *pb.WorkloadGen
		}{{results.PhaseCold, gen(a)}, {results.PhaseRepeat, gen(a)}, {results.PhaseHot, gen(b)}}
		for _, st := range steps {
			if st.phase == results.PhaseCold {
				if err := pp.reset(ctx, node, fmt.Sprintf("prefix %d cold", l)); err != nil {
					return err
				}
			}
			lv := GridLevel{Concurrency: 1,
				Load:      &pb.LoadModel{Kind: "closed", Concurrency: 1, Requests: int64(spec.Repeats), Seed: pp.seed},
				Workload:  &pb.Workload{MaxTokens: int32(spec.OutputLen), IgnoreEos: true},
				Generator: st.gen}
			if err := pp.step(ctx, node, lv, results.PrefixStep{Sweep: results.PrefixSweepLen, Phase: st.phase, PrefixLen: l, SuffixLen: spec.SuffixLen, Concurrency: 1}); err != nil {
				return err
			}
		}
	}
	for i, h := range spec.HitRatios {
		if err := pp.reset(ctx, node, fmt.Sprintf("hit ratio %g", h)); err != nil {
			return err
		}
		seed := pp.seed + 3<<20 + uint64(i)
		lv := GridLevel{Concurrency: spec.Concurrency,
			Load: &pb.LoadModel{Kind: "closed", Concurrency: int32(spec.Concurrency), DurationMs: spec.LevelDuration.Milliseconds(),
				WarmupMs: spec.Warmup.Milliseconds(), Seed: seed},
			Workload: &pb.Workload{MaxTokens: int32(spec.OutputLen), IgnoreEos: true},
			Generator: &pb.WorkloadGen{Kind: "shared_prefix", Seed: seed, PrefixLen: int32(spec.HitPrefixLen), NumPrefixes: 1, UniqueFraction: 1 - h,
				InputLen:  &pb.LengthDist{Kind: "fixed", Mean: float64(spec.HitPrefixLen + spec.SuffixLen)},
				OutputLen: &pb.LengthDist{Kind: "fixed", Mean: float64(spec.OutputLen)}}}
		hr := h
		if err := pp.step(ctx, node, lv, results.PrefixStep{Sweep: results.PrefixSweepRatio, Phase: results.PhaseMixed, PrefixLen: spec.HitPrefixLen,
			SuffixLen: spec.SuffixLen, HitRatio: &hr, Concurrency: spec.Concurrency}); err != nil {
			return err
		}
	}
	return nil
}

// step runs one level between two scrapes and records its prefix_step.
func (pp *prefixPoint) step(ctx context.Context, node PrefixCacheNode, lv GridLevel, st results.PrefixStep) error {
	before, berr := node.EngineMetrics(ctx)
	obs, err := pp.p.Level(ctx, lv)
	st.Point, st.Mode, st.Level = pp.p.Index, pp.mode(), obs.Level
	if err != nil {
		pp.p.g.r.record(results.EventPrefixStep, st)
		return err
	}
	after, aerr := node.EngineMetrics(ctx)
	if berr == nil && aerr == nil {
		st.Hits, st.Queries = prefixDelta(before, after)
	}
	pp.p.g.r.record(results.EventPrefixStep, st)
	return nil
}

// prefixCounters returns the prefix-cache hits and queries counters, in
// vLLM's current names or those of 0.7–0.9.
func prefixCounters(m map[string]float64) (hits, queries float64, ok bool) {
	for _, pre := range []string{"vllm:prefix_cache_", "vllm:gpu_prefix_cache_"} {
		h, hok := m[pre+"hits_total"]
		q, qok := m[pre+"queries_total"]
		if hok && qok {
			return h, q, true
		}
	}
	return 0, 0, false
}

// prefixDelta returns the counters' rise from before to after, nil when
// either scrape lacks them.
func prefixDelta(before, after map[string]float64) (hits, queries *float64) {
	h0, q0, ok0 := prefixCounters(before)
	h1, q1, ok1 := prefixCounters(after)
	if !ok0 || !ok1 {
		return nil, nil
	}
	return ptr(max(0, h1-h0)), ptr(max(0, q1-q0))
}

// v0HitRate is vLLM V0's prefix-cache hit-rate gauge.
const v0HitRate = "vllm:gpu_prefix_cache_hit_rate"

// reset resets the prefix cache and verifies it from the metrics (see
// results.PrefixResetCheck); it records the check and returns an error
// wrapping ErrResetNotVerified when the reset did not happen. With
// prefix caching off there is nothing to reset.
func (pp *prefixPoint) reset(ctx context.Context, node PrefixCacheNode, before string) error {
	if pp.mode() == results.ModeOff {
		return nil
	}
	chk := results.PrefixResetCheck{Point: pp.p.Index, Mode: pp.mode(), Before: before}
	err := pp.verifyReset(ctx, node, &chk)
	if err != nil {
		chk.Error = err.Error()
	}
	chk.Verified = err == nil
	pp.p.g.r.record(results.EventPrefixReset, chk)
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("%w before %s: %w", ErrResetNotVerified, before, err)
	}
	return err
}

func (pp *prefixPoint) verifyReset(ctx context.Context, node PrefixCacheNode, chk *results.PrefixResetCheck) error {
	prompt := pp.probePrompt()
	var ms [5]map[string]float64
	scrape := func(i int) error {
		m, err := node.EngineMetrics(ctx)
		if err != nil {
			return fmt.Errorf("scrape the engine's /metrics: %w", err)
		}
		ms[i] = m
		return nil
	}
	if err := pp.waitIdle(ctx, node); err != nil {
		return err
	}
	if err := scrape(0); err != nil {
		return err
	}
	for i, label := range []string{"reset_probe_cold", "reset_probe_hot"} {
		if err := pp.probe(ctx, prompt, label); err != nil {
			return err
		}
		if err := scrape(i + 1); err != nil {
			return err
		}
	}
	resp, err := node.ResetPrefixCache(ctx)
	if err != nil {
		return fmt.Errorf("POST /reset_prefix_cache: %w", err)
	}
	chk.HTTPStatus, chk.Body = int(resp.GetHttpStatus()), resp.GetBody()
	if chk.HTTPStatus != 200 {
		return fmt.Errorf("POST /reset_prefix_cache answered %d %q: the engine refused the reset (vLLM serves the endpoint only with VLLM_SERVER_DEV_MODE=1: set it in the profile's env)", chk.HTTPStatus, chk.Body)
	}
	if err := scrape(3); err != nil {
		return err
	}
	if err := pp.probe(ctx, prompt, "reset_probe_after"); err != nil {
		return err
	}
	if err := scrape(4); err != nil {
		return err
	}
	return judgeReset(ms, chk)
}

// judgeReset decides from the five scrapes around the probes (before the
// cold probe, after it, after the hot one, after the reset, after the probe
// that followed it) whether the reset happened, and fills chk's figures.
func judgeReset(ms [5]map[string]float64, chk *results.PrefixResetCheck) error {
	if _, _, ok := prefixCounters(ms[0]); ok {
		chk.Source = "counters"
		d := func(a, b int) (*float64, *float64) { return prefixDelta(ms[a], ms[b]) }
		cold, q := d(0, 1)
		hot, _ := d(1, 2)
		after, _ := d(3, 4)
		if cold == nil || hot == nil || after == nil {
			return errors.New("the prefix-cache counters disappeared from /metrics between scrapes")
		}
		chk.ProbeTokens, chk.ColdHits, chk.HotHits, chk.AfterHits = q, cold, hot, after
		if *hot <= *cold {
			return fmt.Errorf("the probe prompt sent twice hit %g tokens the second time, no more than the first time's %g: prefix caching is not caching, so a reset cannot be told from none (is --enable-prefix-caching on?)", *hot, *cold)
		}
		if *after > *cold {
			return fmt.Errorf("POST /reset_prefix_cache answered %d but the cache was not reset: the probe cached before it still hit %g tokens after it (%g when cold, %g when cached); vLLM answers 200 even when it did not reset, e.g. while requests hold blocks", chk.HTTPStatus, *after, *cold, *hot)
		}
		return nil
	}
	g := func(i int) *float64 {
		if v, ok := ms[i][v0HitRate]; ok {
			return ptr(v)
		}
		return nil
	}
	if g(0) == nil || g(1) == nil || g(2) == nil || g(3) == nil || g(4) == nil {
		return fmt.Errorf("the engine's /metrics has neither vllm:prefix_cache_hits_total and _queries_total (V1) nor %s (V0): the reset cannot be verified", v0HitRate)
	}
	chk.Source = "gauge"
	chk.GaugeCold, chk.GaugeHot, chk.GaugeReset, chk.GaugeAfter = g(1), g(2), g(3), g(4)
	if *g(2) <= *g(1) {
		return fmt.Errorf("the probe prompt sent twice did not raise %s (%g then %g): prefix caching is not caching, so a reset cannot be verified", v0HitRate, *g(1), *g(2))
	}
	if *g(4) > *g(3) {
		return fmt.Errorf("POST /reset_prefix_cache answered %d but the cache was not reset: the probe cached before it raised %s from %g to %g after it, as a hit does", chk.HTTPStatus, v0HitRate, *g(3), *g(4))
	}
	return nil
}

// waitIdle waits until the engine runs no request: vLLM refuses a reset
// while blocks are in use.
func (pp *prefixPoint) waitIdle(ctx context.Context, node PrefixCacheNode) error {
	deadline := time.Now().Add(prefixIdleWait)
	for {
		m, err := node.EngineMetrics(ctx)
		if err != nil {
			return fmt.Errorf("scrape the engine's /metrics: %w", err)
		}
		if m["vllm:num_requests_running"] == 0 && m["vllm:num_requests_waiting"] == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the engine still runs %g requests (%g waiting) %s after the last step: a reset now would fail", m["vllm:num_requests_running"], m["vllm:num_requests_waiting"], prefixIdleWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// probePrompt returns a prompt no earlier request sent: random base-36
// words of at most 4 characters.
func (pp *prefixPoint) probePrompt() string {
	var b strings.Builder
	for i := range prefixProbeWords {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(strconv.FormatUint(pp.rnd.Uint64N(36*36*36*36), 36))
	}
	return b.String()
}

// probe sends one request of prompt through the first agent and fails
// unless it succeeded.
func (pp *prefixPoint) probe(ctx context.Context, prompt, label string) error {
	g := pp.p.g
	if len(g.agents) == 0 {
		return errors.New("no agent is left to send the reset probes")
	}
	am := g.agents[0]
	ag, closer, err := g.c.dialer.Agent(ctx, am.GRPCAddr)
	if err != nil {
		return fmt.Errorf("connect to agent %s: %w", am.Name, err)
	}
	defer closer.Close()
	req := &pb.RunProbeRequest{
		RunId:       g.spec.RunID,
		AgentId:     am.Name,
		Target:      &pb.Target{BaseUrl: pp.p.Engine.GetBaseUrl(), Model: pp.p.Engine.GetServedModelName(), Api: g.spec.API},
		Workload:    &pb.Workload{Prompt: prompt, MaxTokens: 1},
		Concurrency: 1,
		Requests:    1,
		Labels:      []string{label},
		IntervalMs:  1000,
		TimeoutMs:   g.c.cfg.RequestTimeout.Milliseconds(),
	}
	var failure string
	var ok bool
	_, err = runWatched(ctx, ag, am.Name, req, g.c.agentSilence(), func(rep *pb.IntervalReport) error {
		for _, rec := range rep.GetRequests() {
			if rec.GetError() != "" {
				failure = rec.GetError()
			} else {
				ok = true
			}
		}
		return nil
	})
	switch {
	case err != nil:
		return fmt.Errorf("%s probe on agent %s: %w", label, am.Name, err)
	case failure != "":
		return fmt.Errorf("%s probe failed: %s", label, clipLine(failure, 300))
	case !ok:
		return fmt.Errorf("%s probe: agent %s reported no result", label, am.Name)
	}
	return nil
}
