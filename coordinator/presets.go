package coordinator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/sim"
	"github.com/ttftlab/ttftlab/internal/specerr"
	"google.golang.org/protobuf/proto"
)

// Presets defaults: a short grid that finishes in about three minutes on
// the simulator (docs/experiments.md, "presets").
const (
	DefaultPresetsInputLen      = 1536
	DefaultPresetsOutputLen     = 64
	DefaultPresetsMaxModelLen   = 4096
	DefaultPresetsSLOTTFTMs     = 200
	DefaultPresetsMaxTTFTMs     = 1000
	DefaultPresetsLevelDuration = 5 * time.Second
	DefaultPresetsWarmup        = 1500 * time.Millisecond
	// maxPresetsGridPoints bounds the grid: each point restarts the engine.
	maxPresetsGridPoints = 64
	// maxPresetsConcurrencies bounds the levels of one point.
	maxPresetsConcurrencies = 16
)

// DefaultPresetsBatchedTokens, DefaultPresetsMaxNumSeqs,
// DefaultPresetsChunked and DefaultPresetsConcurrencies are the default
// grid and sweep; they return fresh slices.
func DefaultPresetsBatchedTokens() []int { return []int{2048, 8192} }
func DefaultPresetsMaxNumSeqs() []int    { return []int{32, 128} }
func DefaultPresetsChunked() []bool      { return []bool{true, false} }
func DefaultPresetsConcurrencies() []int { return []int{8, 32, 64} }

// PresetsSpec configures the presets experiment: a restart grid over
// max_num_batched_tokens × max_num_seqs × chunked prefill, each point with a
// short closed-loop concurrency sweep of a mixed workload, from which the
// "interactive" and "throughput" presets are chosen.
type PresetsSpec struct {
	RunID   string
	OutDir  string
	Profile string
	// Knobs are the base knobs of every point (model, GPU, utilisation…);
	// each point sets max_num_batched_tokens, max_num_seqs,
	// enable_chunked_prefill and max_model_len.
	Knobs               *pb.EngineKnobs
	API                 string
	MaxNumBatchedTokens []int
	MaxNumSeqs          []int
	ChunkedPrefill      []bool
	MaxModelLen         int
	Concurrencies       []int
	// InputLen is the mean prompt length; prompts are uniform in
	// [InputLen/2, 3·InputLen/2].
	InputLen      int
	OutputLen     int
	SLOTTFTMs     float64
	MaxTTFTMs     float64
	LevelDuration time.Duration
	Warmup        time.Duration
	MaxAgents     int
	// Selection picks the gpunode and the agents.
	Selection Selection
}

func (s PresetsSpec) withDefaults() PresetsSpec {
	if s.Profile == "" {
		s.Profile = "sim"
	}
	if s.API == "" {
		s.API = "completions"
	}
	if s.Knobs == nil {
		s.Knobs = &pb.EngineKnobs{}
	}
	if s.MaxNumBatchedTokens == nil {
		s.MaxNumBatchedTokens = DefaultPresetsBatchedTokens()
	}
	if s.MaxNumSeqs == nil {
		s.MaxNumSeqs = DefaultPresetsMaxNumSeqs()
	}
	if s.ChunkedPrefill == nil {
		s.ChunkedPrefill = DefaultPresetsChunked()
	}
	if s.Concurrencies == nil {
		s.Concurrencies = DefaultPresetsConcurrencies()
	}
	if s.MaxModelLen == 0 {
		s.MaxModelLen = DefaultPresetsMaxModelLen
	}
	if s.InputLen == 0 {
		s.InputLen = DefaultPresetsInputLen
	}
	if s.OutputLen == 0 {
		s.OutputLen = DefaultPresetsOutputLen
	}
	if s.SLOTTFTMs == 0 {
		s.SLOTTFTMs = DefaultPresetsSLOTTFTMs
	}
	if s.MaxTTFTMs == 0 {
		s.MaxTTFTMs = DefaultPresetsMaxTTFTMs
	}
	if s.LevelDuration == 0 {
		s.LevelDuration = DefaultPresetsLevelDuration
	}
	if s.Warmup == 0 {
		s.Warmup = DefaultPresetsWarmup
	}
	return s
}

// inputRange is the uniform prompt-length range around InputLen.
func (s PresetsSpec) inputRange() (lo, hi int) {
	return max(1, s.InputLen/2), s.InputLen + s.InputLen/2
}

// Validate names the bad field and the fix: each error about one field is a
// specerr.FieldError under the field's name in RunPresetsRequest, so that a
// front end can name its own flag.
func (s PresetsSpec) Validate() error {
	var errs []error
	bad := func(field string, v any, format string, a ...any) {
		errs = append(errs, specerr.New(field, v, format, a...))
	}
	if len(s.MaxNumBatchedTokens) == 0 {
		bad("max_num_batched_tokens", nil, "is empty: give at least one, e.g. 2048,8192")
	}
	if len(s.MaxNumSeqs) == 0 {
		bad("max_num_seqs", nil, "is empty: give at least one, e.g. 32,128")
	}
	if len(s.ChunkedPrefill) == 0 || len(s.ChunkedPrefill) > 2 || (len(s.ChunkedPrefill) == 2 && s.ChunkedPrefill[0] == s.ChunkedPrefill[1]) {
		bad("chunked_prefill", s.ChunkedPrefill, "names no setting or one twice: give on, off or on,off (each once)")
	}
	if n := len(s.MaxNumBatchedTokens) * len(s.MaxNumSeqs) * len(s.ChunkedPrefill); n > maxPresetsGridPoints {
		errs = append(errs, fmt.Errorf("the grid has %d points (%d max_num_batched_tokens × %d max_num_seqs × %d chunked_prefill); each restarts the engine: give at most %d",
			n, len(s.MaxNumBatchedTokens), len(s.MaxNumSeqs), len(s.ChunkedPrefill), maxPresetsGridPoints))
	}
	checkList := func(name string, vs []int, lo, hi int) {
		seen := map[int]bool{}
		for _, v := range vs {
			if v < lo || v > hi {
				bad(name, v, "is out of range: use %d..%d", lo, hi)
			}
			if seen[v] {
				bad(name, v, "is given twice: list each value once")
			}
			seen[v] = true
		}
	}
	checkList("max_num_batched_tokens", s.MaxNumBatchedTokens, 1, 1<<22)
	checkList("max_num_seqs", s.MaxNumSeqs, 1, 1<<16)
	checkList("concurrencies", s.Concurrencies, 1, 4096)
	if len(s.Concurrencies) == 0 || len(s.Concurrencies) > maxPresetsConcurrencies {
		bad("concurrencies", s.Concurrencies, "is not 1..%d closed-loop concurrencies: give for example 8,32,64", maxPresetsConcurrencies)
	}
	if s.OutputLen < 1 || s.OutputLen > 4096 {
		bad("output_len", s.OutputLen, "is out of range: use 1..4096 tokens")
	}
	if s.InputLen < 2 || s.InputLen > 1<<20 {
		bad("input_len", s.InputLen, "is out of range: use 2..%d tokens (prompts are uniform in [input_len/2, 1.5·input_len])", 1<<20)
	}
	if _, hi := s.inputRange(); s.MaxModelLen < hi+s.OutputLen || s.MaxModelLen > 1<<22 {
		errs = append(errs, specerr.New("max_model_len", s.MaxModelLen, "is out of range: the longest prompt (%d tokens, 1.5 × {input_len}) plus %d output tokens must fit, so use %d..%d, or shorten {input_len}",
			hi, s.OutputLen, hi+s.OutputLen, 1<<22).Refer("input_len"))
	}
	for _, v := range []struct {
		name string
		ms   float64
	}{{"slo_ttft_ms", s.SLOTTFTMs}, {"max_ttft_ms", s.MaxTTFTMs}} {
		if !(v.ms > 0 && v.ms <= 3.6e6) || math.IsNaN(v.ms) {
			bad(v.name, v.ms, "is out of range: use a TTFT p95 bound in ms, 0 < bound ≤ 3600000")
		}
	}
	if s.SLOTTFTMs > s.MaxTTFTMs {
		errs = append(errs, specerr.New("slo_ttft_ms", s.SLOTTFTMs, "is above {max_ttft_ms} %g: the interactive SLO must be the tighter bound", s.MaxTTFTMs).Refer("max_ttft_ms"))
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

// PresetsExpectedRefusal is vLLM's SchedulerConfig check (vllm/config,
// SchedulerConfig.verify_max_model_len) for one point: without chunked
// prefill one step must hold a whole max_model_len sequence, and the
// budget must hold one token of every sequence. "" when the point should
// start.
func PresetsExpectedRefusal(budget, seqs, maxModelLen int, chunked bool) string {
	switch {
	case !chunked && budget < maxModelLen:
		return fmt.Sprintf("max_num_batched_tokens (%d) is smaller than max_model_len (%d) with chunked prefill off", budget, maxModelLen)
	case budget < seqs:
		return fmt.Sprintf("max_num_batched_tokens (%d) must be greater than or equal to max_num_seqs (%d)", budget, seqs)
	}
	return ""
}

// RunPresets runs the presets experiment (docs/experiments.md).
func (c *Coordinator) RunPresets(ctx context.Context, spec PresetsSpec, emit func(results.Event)) (RunResult, error) {
	spec = spec.withDefaults()
	if err := spec.Validate(); err != nil {
		return RunResult{}, err
	}
	lo, hi := spec.inputRange()
	params := results.PresetsParams{Model: spec.Knobs.GetModel(), MaxNumBatchedTokens: spec.MaxNumBatchedTokens, MaxNumSeqs: spec.MaxNumSeqs,
		ChunkedPrefill: spec.ChunkedPrefill, MaxModelLen: spec.MaxModelLen, Concurrencies: spec.Concurrencies,
		InputLen: spec.InputLen, InputLenMin: lo, InputLenMax: hi, OutputLen: spec.OutputLen,
		SLOTTFTMs: spec.SLOTTFTMs, MaxTTFTMs: spec.MaxTTFTMs, LevelDurationS: spec.LevelDuration.Seconds(), WarmupS: spec.Warmup.Seconds()}
	if params.Model == "" && spec.Profile == "sim" {
		params.Model = sim.DefaultConfig().Model
	}
	var points []GridPoint
	for _, b := range spec.MaxNumBatchedTokens {
		for _, s := range spec.MaxNumSeqs {
			for _, ch := range spec.ChunkedPrefill {
				k := proto.Clone(spec.Knobs).(*pb.EngineKnobs)
				k.MaxNumBatchedTokens, k.MaxNumSeqs, k.MaxModelLen = int32(b), int32(s), int32(spec.MaxModelLen)
				k.EnableChunkedPrefill = pb.OptionalBool_OPTIONAL_BOOL_FALSE
				if ch {
					k.EnableChunkedPrefill = pb.OptionalBool_OPTIONAL_BOOL_TRUE
				}
				points = append(points, GridPoint{Label: fmt.Sprintf("max_num_batched_tokens=%d max_num_seqs=%d chunked_prefill=%s", b, s, onOff(ch)), Knobs: k})
				params.Points = append(params.Points, results.PresetsPointSpec{MaxNumBatchedTokens: b, MaxNumSeqs: s, ChunkedPrefill: ch,
					ExpectedRefusal: PresetsExpectedRefusal(b, s, spec.MaxModelLen, ch)})
			}
		}
	}
	gs := GridSpec{RunID: spec.RunID, OutDir: spec.OutDir, Profile: spec.Profile, API: spec.API, Experiment: results.ExperimentPresets,
		Params: params, Points: points, MaxAgents: spec.MaxAgents, Selection: spec.Selection,
		Plan: func(GridReady) (any, LevelSchedule) {
			return results.PresetsPlan{Concurrencies: spec.Concurrencies}, &presetsSchedule{spec: spec}
		}}
	return c.RunGrid(ctx, gs, emit)
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// presetsSchedule runs every concurrency of the sweep once, in order.
type presetsSchedule struct {
	spec PresetsSpec
	next int
}

func (s *presetsSchedule) Next(*results.LevelObservation) (GridLevel, bool) {
	if s.next >= len(s.spec.Concurrencies) {
		return GridLevel{}, false
	}
	c := s.spec.Concurrencies[s.next]
	s.next++
	// The same seeds at every point: each point sees the same prompts at
	// the same concurrency, so the points differ only by their knobs (each
	// point restarts the engine, so no prompt is cached from another).
	seed := uint64(s.next)
	lo, hi := s.spec.inputRange()
	return GridLevel{
		Concurrency: c,
		Load: &pb.LoadModel{Kind: "closed", Concurrency: int32(c), DurationMs: s.spec.LevelDuration.Milliseconds(),
			WarmupMs: s.spec.Warmup.Milliseconds(), Seed: seed},
		Workload: &pb.Workload{MaxTokens: int32(s.spec.OutputLen), IgnoreEos: true},
		Generator: &pb.WorkloadGen{Kind: "synthetic", Seed: seed,
			InputLen:  &pb.LengthDist{Kind: "uniform", Mean: float64(s.spec.InputLen), Min: float64(lo), Max: float64(hi)},
			OutputLen: &pb.LengthDist{Kind: "fixed", Mean: float64(s.spec.OutputLen)}},
	}, true
}
