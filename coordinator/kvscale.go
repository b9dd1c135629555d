package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/kvcalc"
	"github.com/ttftlab/ttftlab/internal/sim"
	"github.com/ttftlab/ttftlab/internal/specerr"
	"google.golang.org/protobuf/proto"
)

// KVScale defaults.
const (
	DefaultKVScaleOutputLen      = 64
	DefaultKVScaleLevelDuration  = 4 * time.Second
	DefaultKVScaleWarmup         = 3 * time.Second
	DefaultKVScaleMaxConcurrency = 64
	// maxKVScaleWarmup bounds a step's warm-up sized from the previous
	// step's E2E.
	maxKVScaleWarmup = 60 * time.Second
	// maxKVScaleGridPoints bounds the grid: each point restarts the engine.
	maxKVScaleGridPoints = 64
)

// KVScaleSpec configures the kvscale experiment: a restart grid over
// max_model_len × gpu_memory_utilization that compares each point's KV
// figures with internal/kvcalc and finds the concurrency at which
// preemption or a standing queue begins.
type KVScaleSpec struct {
	RunID   string
	OutDir  string
	Profile string
	// Knobs are the base knobs of every point.
	Knobs        *pb.EngineKnobs
	API          string
	MaxModelLens []int
	Utilizations []float64
	// MaxNumSeqs is --max-num-seqs at every point (0: engine default).
	MaxNumSeqs     int
	OutputLen      int
	LevelDuration  time.Duration
	Warmup         time.Duration
	MaxConcurrency int
	MaxAgents      int
	// Selection picks the gpunode and the agents.
	Selection Selection
}

func (s KVScaleSpec) withDefaults() KVScaleSpec {
	if s.Profile == "" {
		s.Profile = "sim"
	}
	if s.API == "" {
		// Completions: the prompt is exactly the generated tokens, with no
		// chat template around it, so P in C* is the input length.
		s.API = "completions"
	}
	if s.Knobs == nil {
		s.Knobs = &pb.EngineKnobs{}
	}
	if s.OutputLen == 0 {
		s.OutputLen = DefaultKVScaleOutputLen
	}
	if s.LevelDuration == 0 {
		s.LevelDuration = DefaultKVScaleLevelDuration
	}
	if s.Warmup == 0 {
		s.Warmup = DefaultKVScaleWarmup
	}
	if s.MaxConcurrency == 0 {
		s.MaxConcurrency = DefaultKVScaleMaxConcurrency
	}
	return s
}

// Validate names the bad field and the fix: each error about one field is a
// specerr.FieldError under the field's name in RunKVScaleRequest, so that a
// front end can name its own flag. Call it on the spec withDefaults fills
// in, so that a zero field means its default and a negative one is named.
func (s KVScaleSpec) Validate() error {
	var errs []error
	bad := func(field string, v any, format string, a ...any) {
		errs = append(errs, specerr.New(field, v, format, a...))
	}
	if len(s.MaxModelLens) == 0 {
		bad("max_model_lens", nil, "is empty: give at least one, e.g. 2048,4096,8192")
	}
	if len(s.Utilizations) == 0 {
		bad("gpu_memory_utilizations", nil, "is empty: give at least one, e.g. 0.5,0.9")
	}
	if n := len(s.MaxModelLens) * len(s.Utilizations); n > maxKVScaleGridPoints {
		errs = append(errs, fmt.Errorf("the grid has %d points (%d lengths × %d utilizations); each restarts the engine: give at most %d", n, len(s.MaxModelLens), len(s.Utilizations), maxKVScaleGridPoints))
	}
	if s.OutputLen < 1 || s.OutputLen > 4096 {
		bad("output_len", s.OutputLen, "is out of range: use 1..4096 tokens (short keeps the run fast)")
	}
	for _, m := range s.MaxModelLens {
		if m < 2*(s.OutputLen+1) || m > 1<<20 {
			bad("max_model_lens", m, "is out of range: the prompts are max_model_len/2 tokens plus %d output tokens, so use %d..%d", s.OutputLen, 2*(s.OutputLen+1), 1<<20)
		}
	}
	for _, u := range s.Utilizations {
		if !(u > 0 && u <= 1) {
			bad("gpu_memory_utilizations", u, "is out of range: use a fraction in (0, 1], e.g. 0.9")
		}
	}
	if s.MaxNumSeqs < 0 {
		bad("max_num_seqs", s.MaxNumSeqs, "is negative: use 0 for the engine default")
	}
	if s.MaxConcurrency < 1 || s.MaxConcurrency > 4096 {
		bad("max_concurrency", s.MaxConcurrency, "is out of range: use 1..4096")
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

// RunKVScale runs the kvscale experiment (docs/experiments.md).
func (c *Coordinator) RunKVScale(ctx context.Context, spec KVScaleSpec, emit func(results.Event)) (RunResult, error) {
	spec = spec.withDefaults()
	if err := spec.Validate(); err != nil {
		return RunResult{}, err
	}
	params := results.KVScaleParams{MaxModelLens: spec.MaxModelLens, Utilizations: spec.Utilizations, MaxNumSeqs: spec.MaxNumSeqs,
		OutputLen: spec.OutputLen, LevelDurationS: spec.LevelDuration.Seconds(), WarmupS: spec.Warmup.Seconds(),
		MaxConcurrency: spec.MaxConcurrency, Factors: results.KVScaleFactors[:]}
	var points []GridPoint
	for _, u := range spec.Utilizations {
		for _, m := range spec.MaxModelLens {
			k := proto.Clone(spec.Knobs).(*pb.EngineKnobs)
			k.MaxModelLen, k.GpuMemoryUtilization = int32(m), u
			if spec.MaxNumSeqs > 0 {
				k.MaxNumSeqs = int32(spec.MaxNumSeqs)
			}
			if k.EnablePrefixCaching == pb.OptionalBool_OPTIONAL_BOOL_UNSPECIFIED {
				// C* assumes no block is shared between requests.
				k.EnablePrefixCaching = pb.OptionalBool_OPTIONAL_BOOL_FALSE
			}
			points = append(points, GridPoint{Label: fmt.Sprintf("max_model_len=%d gpu_memory_utilization=%g", m, u), Knobs: k})
			params.Predictions = append(params.Predictions, PredictKV(spec.Profile, k, nil))
		}
	}
	gs := GridSpec{RunID: spec.RunID, OutDir: spec.OutDir, Profile: spec.Profile, API: spec.API, Experiment: results.ExperimentKVScale,
		Params: params, Points: points, MaxAgents: spec.MaxAgents, Selection: spec.Selection,
		Plan: func(ready GridReady) (any, LevelSchedule) {
			plan := planKVScale(spec, params.Predictions[ready.Index], ready)
			return plan, &kvSchedule{spec: spec, plan: plan, seed: uint64(ready.Index+1) * 1000}
		}}
	return c.RunGrid(ctx, gs, emit)
}

// PredictKV computes a point's KV figures with internal/kvcalc. Without a
// reported KV budget it needs the model's config (the simulator's built-in
// models) and the GPU (the simulator's catalogue; a sim profile's default
// when the knobs name none); with one (availableGiB, from the engine's log)
// it needs only the model's layout.
func PredictKV(profile string, k *pb.EngineKnobs, availableGiB *float64) results.KVPrediction {
	def := sim.DefaultConfig()
	name := k.GetModel()
	if name == "" && profile == "sim" {
		name = def.Model
	}
	p := results.KVPrediction{Model: name}
	m, err := sim.LookupModel(name)
	if err != nil {
		p.Note = fmt.Sprintf("model %q is not in the built-in catalogue, so its KV layout is unknown: no prediction", name)
		return p
	}
	c := m.KVConfig()
	l, err := kvcalc.LayoutOf(c, "auto", 1, kvcalc.DefaultBlockSize)
	if err != nil {
		p.Note = "KV layout: " + err.Error()
		return p
	}
	mml := int(k.GetMaxModelLen())
	if mml == 0 {
		mml = m.MaxPositionEmbeddings
	}
	in := kvcalc.Inputs{Utilization: k.GetGpuMemoryUtilization(), Layout: l, MaxModelLen: mml}
	if in.Utilization == 0 {
		in.Utilization = def.GPUMemoryUtilization
	}
	gpuName := k.GetGpu()
	if gpuName == "" && profile == "sim" {
		gpuName = def.GPU
	}
	batched, seqs := 8192, 1024
	var g sim.GPU
	haveGPU := false
	if gpuName != "" {
		if g, err = sim.LookupGPU(gpuName); err == nil {
			haveGPU = true
			batched, seqs = g.BatchDefaults()
			p.GPU = g.Name
		}
	}
	if v := int(k.GetMaxNumBatchedTokens()); v > 0 {
		batched = v
	}
	seqs = min(seqs, batched)
	if v := int(k.GetMaxNumSeqs()); v > 0 {
		seqs = v
	}
	in.MaxNumBatchedTokens = batched
	switch {
	case availableGiB != nil:
		p.Source = "reported_available_kv"
		in.KVCacheMemoryBytes = int64(*availableGiB * kvcalc.GiB)
	case haveGPU:
		p.Source = "config+gpu"
		in.TotalGiB = g.TotalGiB
		in.WeightsGiB = kvcalc.EstimateWeightBytes(c, kvcalc.RuntimeDTypeBytes(c.DType), 1) / kvcalc.GiB
		in.ActivationGiB = kvcalc.EstimateActivationBytes(c, batched, seqs) / kvcalc.GiB
		in.NonTorchGiB = def.Memory.NonTorchGiB
	default:
		p.Note = fmt.Sprintf("GPU %q is not in the simulator's catalogue and the engine reported no \"Available KV cache memory\": no prediction", gpuName)
		return p
	}
	if mml > m.MaxPositionEmbeddings {
		p.Refusal = fmt.Sprintf("max_model_len %d is larger than the model's max_position_embeddings %d", mml, m.MaxPositionEmbeddings)
		return p
	}
	plan, err := kvcalc.PlanKV(in)
	if plan.AvailableBytes != 0 {
		p.AvailableGiB = ptr(plan.AvailableBytes / kvcalc.GiB)
	}
	if err != nil {
		p.Refusal = err.Error()
		return p
	}
	p.NumBlocks, p.KVTokens, p.MaxConcurrency = &plan.NumBlocks, &plan.Tokens, &plan.MaxConcurrency
	return p
}

// planKVScale fixes a started point's workload, C* and steps.
func planKVScale(spec KVScaleSpec, pred results.KVPrediction, ready GridReady) results.KVPlan {
	f := ready.Engine.GetFigures()
	if pred.Source == "" && f.AvailableKvGib != nil {
		// No config+GPU prediction (a real engine on an unknown GPU): use
		// the budget the engine logged.
		pred = PredictKV(spec.Profile, ready.Point.Knobs, f.AvailableKvGib)
	}
	mml := int(ready.Point.Knobs.GetMaxModelLen())
	p := results.KVPlan{Prediction: pred, PromptLen: mml / 2, OutputLen: spec.OutputLen}
	p.BlocksPerRequest = (p.PromptLen + p.OutputLen - 1 + kvcalc.DefaultBlockSize - 1) / kvcalc.DefaultBlockSize
	switch {
	case f.KvCacheTokens != nil:
		// The engine's own figure: one KV group of block_size tokens per
		// block (models with sliding-window groups report fewer tokens
		// than blocks × block_size; the prediction's blocks are used then).
		n := int(f.GetKvCacheTokens()) / kvcalc.DefaultBlockSize
		if pred.NumBlocks != nil && pred.KVTokens != nil && *pred.KVTokens != *pred.NumBlocks*kvcalc.DefaultBlockSize {
			n = *pred.NumBlocks
			p.NumBlocksSource = "predicted"
		} else {
			p.NumBlocksSource = "reported"
		}
		p.NumBlocks = &n
	case pred.NumBlocks != nil:
		p.NumBlocks, p.NumBlocksSource = pred.NumBlocks, "predicted"
	}
	if p.NumBlocks == nil {
		p.Note = "neither the engine's log nor a prediction gave the KV blocks: no C*, so the concurrency steps are 1, 2, 4, … up to max_concurrency"
		for c := 1; c <= spec.MaxConcurrency; c *= 2 {
			p.Steps = append(p.Steps, c)
		}
		return p
	}
	cs := (*p.NumBlocks - 1) / p.BlocksPerRequest
	p.CStar = &cs
	p.Steps, p.Capped = kvScaleSteps(cs, spec.MaxConcurrency)
	return p
}

// kvScaleSteps returns C* × kvScaleFactors rounded, at least 1,
// deduplicated and capped at maxConc; capped says some step was cut.
func kvScaleSteps(cstar, maxConc int) (steps []int, capped bool) {
	for _, f := range results.KVScaleFactors {
		v := max(1, int(math.Round(f*float64(cstar))))
		if v > maxConc {
			capped = true
			v = maxConc
		}
		if len(steps) == 0 || steps[len(steps)-1] != v {
			steps = append(steps, v)
		}
	}
	return steps, capped
}

// kvSchedule steps up the point's concurrencies until the onset.
type kvSchedule struct {
	spec     KVScaleSpec
	plan     results.KVPlan
	seed     uint64
	next     int
	level    int
	repeated map[int]bool
}

func (s *kvSchedule) Next(prev *results.LevelObservation) (GridLevel, bool) {
	if results.KVOnset(prev) {
		return GridLevel{}, false
	}
	// A level that could not tell a standing queue from its opening burst
	// is run once more at the same concurrency, its warm-up sized from it.
	repeat := prev != nil && prev.Inconclusive && !s.repeated[prev.Concurrency]
	if !repeat && s.next >= len(s.plan.Steps) {
		return GridLevel{}, false
	}
	var c int
	if repeat {
		c = prev.Concurrency
		if s.repeated == nil {
			s.repeated = map[int]bool{}
		}
		s.repeated[c] = true
	} else {
		c = s.plan.Steps[s.next]
		s.next++
	}
	// The level opens with all c requests at once: its warm-up must cover
	// that burst. The previous level's burst and E2E p50, scaled by the
	// concurrency (a loaded engine is compute-bound), size it.
	warm := s.spec.Warmup
	if prev != nil && prev.Concurrency > 0 {
		// The burst lasts about as long as the longer of the requests and
		// the admission of the opening burst; a step whose queue never
		// emptied, or that measured neither, is bounded by its wall time.
		var burst float64
		if prev.E2EP50Ms != nil {
			burst = *prev.E2EP50Ms
		}
		if prev.BurstMs != nil {
			burst = max(burst, float64(*prev.BurstMs))
		} else if prev.Inconclusive || burst == 0 {
			burst = max(burst, float64(prev.WallMs))
		}
		need := time.Duration(1.5 * burst * float64(c) / float64(prev.Concurrency) * float64(time.Millisecond))
		warm = min(max(warm, need.Round(100*time.Millisecond)), maxKVScaleWarmup)
	}
	s.level++
	// A fresh seed per level: no prompt repeats an earlier one.
	seed := s.seed + uint64(s.level)
	return GridLevel{
		Concurrency: c,
		Repeat:      repeat,
		Load: &pb.LoadModel{Kind: "closed", Concurrency: int32(c), DurationMs: s.spec.LevelDuration.Milliseconds(),
			WarmupMs: warm.Milliseconds(), Seed: seed},
		Workload: &pb.Workload{MaxTokens: int32(s.plan.OutputLen), IgnoreEos: true},
		Generator: &pb.WorkloadGen{Kind: "synthetic", Seed: seed,
			InputLen:  &pb.LengthDist{Kind: "fixed", Mean: float64(s.plan.PromptLen)},
			OutputLen: &pb.LengthDist{Kind: "fixed", Mean: float64(s.plan.OutputLen)}},
	}, true
}
