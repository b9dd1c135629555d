package sim

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"
)

// Version is the vLLM version the simulator imitates, marked as simulated.
const Version = "0.11.0+sim"

// Config configures a simulated engine. Its fields mirror `vllm serve` flags
// (see cmd/ttftlab/sim.go for the flag names) plus the simulator's own
// timing-model knobs. Start from DefaultConfig.
type Config struct {
	// Model is --model, a built-in model name (see LookupModel). With
	// ModelConfig set it only names the model ("" takes the config's
	// _name_or_path).
	Model string
	// ModelConfig is --model-config, the path of a Hugging Face config.json
	// (or its directory) describing a model that is not built in.
	ModelConfig string
	// Calibration, when set, overrides the GPU's datasheet figures at
	// resolve time; Calibration.Apply has already copied its other fields
	// into Perf, Startup, Memory and FirstRequestDelay.
	Calibration *Calibration
	// ServedModelName is --served-model-name; empty means Model.
	ServedModelName string
	// Host and Port are where the API server listens. Port 0 picks a free port.
	Host string
	Port int
	// MaxModelLen is --max-model-len; 0 means the model's max_position_embeddings.
	MaxModelLen int
	// GPUMemoryUtilization is --gpu-memory-utilization, in (0, 1].
	GPUMemoryUtilization float64
	// MaxNumSeqs and MaxNumBatchedTokens are the scheduler limits; 0 means
	// vLLM's defaults for the GPU class.
	MaxNumSeqs          int
	MaxNumBatchedTokens int
	// EnforceEager disables torch.compile and CUDA graphs.
	EnforceEager bool
	// EnablePrefixCaching turns the prefix cache on (vLLM V1 default).
	EnablePrefixCaching bool
	// EnableChunkedPrefill is --[no-]enable-chunked-prefill (on by default,
	// as in vLLM V1). Off, a prompt is prefilled in one step, so
	// MaxNumBatchedTokens must be at least MaxModelLen (its default then).
	EnableChunkedPrefill bool
	// EnablePromptTokensDetails adds usage.prompt_tokens_details.cached_tokens.
	EnablePromptTokensDetails bool
	// DisableLogStats suppresses the periodic "Engine 000: Avg prompt
	// throughput" line.
	DisableLogStats bool
	// DisableAccessLog suppresses uvicorn's per-request access log lines.
	DisableAccessLog bool
	// KVCacheMemoryBytes is --kv-cache-memory-bytes: when > 0 it replaces the
	// profiled KV budget (vLLM 0.11+).
	KVCacheMemoryBytes int64
	// GPU is --gpu, a built-in GPU name or alias (see LookupGPU).
	GPU string
	// StateDir holds the simulated page-cache and compile-cache state.
	StateDir string
	// ColdState is --cold-state: the state the engine resets its simulated
	// caches to before it starts. ColdDisk forgets that the model's weights
	// are in the page cache, ColdCompile empties its compile cache, and
	// Warm or "" keeps both. A gpunode's cold modes set it (through
	// ColdStateEnv) when they start a sim profile.
	ColdState string
	// TestNoopPrefixReset makes POST /reset_prefix_cache answer 200 and log
	// success without dropping anything (test only): the reset that did not
	// happen, which an experiment must catch from the metrics.
	TestNoopPrefixReset bool
	// StartupScale multiplies every startup-phase duration (test only).
	StartupScale float64
	// Slowdown multiplies the serving time of every request: each engine
	// step's duration and the API server's t_api (1 is the calibrated
	// engine, 1.2 one 20% slower). It lets two local runs differ by a known
	// factor, as `ttftlab compare` is tested with; 0 is read as 1.
	Slowdown float64
	// Seed makes token ids and generated text reproducible.
	Seed int64

	// Perf holds the per-step latency model.
	Perf PerfParams
	// Startup holds the startup-phase model.
	Startup StartupParams
	// Memory holds the memory-profile model.
	Memory MemoryParams
	// FirstRequestDelay is the lazy initialisation the first engine step
	// after startup pays (it is what makes the cold TTFT exceed the warm one).
	FirstRequestDelay time.Duration
	// StatsInterval is how often the stats line is logged (VLLM_LOG_STATS_INTERVAL).
	StatsInterval time.Duration
	// ShutdownGrace bounds how long in-flight requests may run on shutdown.
	ShutdownGrace time.Duration
	// ReadTimeout bounds reading a request, headers and body, so that a
	// client that sends half a request cannot hold a connection for ever;
	// 0 means DefaultReadTimeout. A response may stream for longer.
	ReadTimeout time.Duration
}

// DefaultReadTimeout is Config.ReadTimeout's default.
const DefaultReadTimeout = 30 * time.Second

// StartupParams models the duration of each startup phase (SIM-NOTES §5).
// Every duration is multiplied by Config.StartupScale.
type StartupParams struct {
	// Bootstrap is process start, imports and API server set-up before the
	// engine starts loading the model.
	Bootstrap time.Duration
	// DiskReadBps is the weight read speed when the files are not in the page cache.
	DiskReadBps float64
	// PageCacheReadBps is the weight read speed from the page cache.
	PageCacheReadBps float64
	// WeightsFixed is the fixed cost of opening the checkpoint.
	WeightsFixed time.Duration
	// HostToDeviceBps is the host-to-device copy speed of the weights.
	HostToDeviceBps float64
	// ModelInit is the model construction time outside the weight read.
	ModelInit time.Duration
	// Dynamo is the Dynamo bytecode transform.
	Dynamo time.Duration
	// CompileCold and CompileWarm are Inductor's compile time without and
	// with a compile-cache hit.
	CompileCold time.Duration
	CompileWarm time.Duration
	// MemoryProfile is the profile run plus the KV cache allocation.
	MemoryProfile time.Duration
	// GraphCapture is CUDA graph capture (67 sizes).
	GraphCapture time.Duration
	// APIStartup is the API server's start after the engine is ready.
	APIStartup time.Duration
}

// MemoryParams models vLLM's memory profile (SIM-NOTES §6).
type MemoryParams struct {
	// NonTorchGiB is the non-torch memory (CUDA context, NCCL, cuBLAS).
	NonTorchGiB float64
	// PeakActivationGiB overrides the profiled activation peak when > 0;
	// otherwise it is computed from max_num_batched_tokens (see peakActivationBytes).
	PeakActivationGiB float64
}

// DefaultConfig returns vLLM's defaults for Qwen/Qwen2.5-1.5B-Instruct on
// one H200 and the calibrated timing model.
func DefaultConfig() Config {
	return Config{
		Model:                "Qwen/Qwen2.5-1.5B-Instruct",
		Host:                 "127.0.0.1",
		Port:                 8000,
		GPUMemoryUtilization: 0.9,
		EnablePrefixCaching:  true,
		EnableChunkedPrefill: true,
		GPU:                  "h200",
		StateDir:             DefaultStateDir(),
		StartupScale:         1,
		Slowdown:             1,
		Perf:                 DefaultPerfParams(),
		Startup: StartupParams{
			Bootstrap:        9 * time.Second,
			DiskReadBps:      1.5e9,
			PageCacheReadBps: 5e9,
			WeightsFixed:     200 * time.Millisecond,
			HostToDeviceBps:  20e9,
			ModelInit:        300 * time.Millisecond,
			Dynamo:           5 * time.Second,
			CompileCold:      30 * time.Second,
			CompileWarm:      4 * time.Second,
			MemoryProfile:    2 * time.Second,
			GraphCapture:     8 * time.Second,
			APIStartup:       500 * time.Millisecond,
		},
		Memory:            MemoryParams{NonTorchGiB: 0.15},
		FirstRequestDelay: 500 * time.Millisecond,
		StatsInterval:     10 * time.Second,
		ShutdownGrace:     5 * time.Second,
	}
}

// The states --cold-state resets the simulated caches to; they are the
// names of the gpunode's cold modes.
const (
	ColdWarm    = "warm"
	ColdDisk    = "cold-disk"
	ColdCompile = "cold-compile"
)

// ColdStateEnv is the environment variable `ttftlab sim` takes
// --cold-state's default from; a gpunode sets it when it starts a sim
// profile in a cold mode, so that it need not import this package.
const ColdStateEnv = "TTFTLAB_SIM_COLD"

// DefaultStateDir returns $XDG_CACHE_HOME/ttftlab/sim, or ~/.cache/ttftlab/sim.
func DefaultStateDir() string {
	base := os.Getenv("XDG_CACHE_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			home = os.TempDir()
		}
		base = filepath.Join(home, ".cache")
	}
	return filepath.Join(base, "ttftlab", "sim")
}

// resolved is a validated Config with every default filled in.
type resolved struct {
	Config
	user  Config // as given, before defaults were filled in
	model Model
	gpu   GPU
}

// Validate reports the first invalid field, naming the flag, the bad value
// and what is accepted.
func (c Config) Validate() error {
	_, err := c.resolve()
	return err
}

// resolve validates c and fills in the model- and GPU-dependent defaults.
func (c Config) resolve() (resolved, error) {
	var m Model
	var err error
	switch {
	case c.ModelConfig != "":
		if m, err = LoadHFConfig(c.ModelConfig); err != nil {
			return resolved{}, err
		}
		if c.Model != "" {
			m.Name = c.Model
		}
	case c.Model == "":
		return resolved{}, errNoModel
	default:
		if m, err = LookupModel(c.Model); err != nil {
			return resolved{}, err
		}
	}
	g, err := LookupGPU(c.GPU)
	if err != nil {
		return resolved{}, err
	}
	g = c.Calibration.applyGPU(g)
	r := resolved{Config: c, user: c, model: m, gpu: g}
	if r.Model == "" {
		r.Model = m.Name
	}
	if r.ServedModelName == "" {
		r.ServedModelName = r.Model
	}
	if r.Host == "" {
		return resolved{}, errors.New("--host: must not be empty; use 127.0.0.1 or 0.0.0.0")
	}
	if r.Port < 0 || r.Port > 65535 {
		return resolved{}, fmt.Errorf("--port %d: out of range; accepted: 0 (any free port) to 65535", r.Port)
	}
	if math.IsNaN(r.GPUMemoryUtilization) || r.GPUMemoryUtilization <= 0 || r.GPUMemoryUtilization > 1 {
		return resolved{}, fmt.Errorf("--gpu-memory-utilization %v: must be in (0, 1], e.g. 0.9", r.GPUMemoryUtilization)
	}
	switch {
	case r.MaxModelLen < 0:
		return resolved{}, fmt.Errorf("--max-model-len %d: must be positive, or 0 for the model's %d", r.MaxModelLen, m.MaxPositionEmbeddings)
	case r.MaxModelLen == 0:
		r.MaxModelLen = m.MaxPositionEmbeddings
	case r.MaxModelLen > m.MaxPositionEmbeddings:
		return resolved{}, fmt.Errorf("--max-model-len %d: User-specified max_model_len (%d) is greater than the derived max_model_len (max_position_embeddings=%d or model_max_length=None in model's config.json); use at most %d",
			r.MaxModelLen, r.MaxModelLen, m.MaxPositionEmbeddings, m.MaxPositionEmbeddings)
	}
	defTokens, defSeqs := g.batchDefaults()
	if r.MaxNumBatchedTokens < 0 {
		return resolved{}, fmt.Errorf("--max-num-batched-tokens %d: must be positive, or 0 for vLLM's default (%d on %s)", r.MaxNumBatchedTokens, defTokens, g.Name)
	}
	if r.MaxNumSeqs < 0 {
		return resolved{}, fmt.Errorf("--max-num-seqs %d: must be positive, or 0 for vLLM's default (%d on %s)", r.MaxNumSeqs, defSeqs, g.Name)
	}
	switch {
	case r.MaxNumBatchedTokens == 0 && !r.EnableChunkedPrefill:
		// vLLM's EngineArgs: without chunking one step must hold a whole prompt.
		r.MaxNumBatchedTokens = r.MaxModelLen
	case r.MaxNumBatchedTokens == 0:
		r.MaxNumBatchedTokens = defTokens
	case !r.EnableChunkedPrefill && r.MaxNumBatchedTokens < r.MaxModelLen:
		// vLLM's SchedulerConfig validation error, word for word.
		//lint:ignore ST1005 vLLM's own text, punctuation included
		return resolved{}, fmt.Errorf("--max-num-batched-tokens %d with --no-enable-chunked-prefill: max_num_batched_tokens (%d) is smaller than max_model_len (%d). This effectively limits the maximum sequence length to max_num_batched_tokens and makes vLLM reject longer sequences. Please increase max_num_batched_tokens or decrease max_model_len.",
			r.MaxNumBatchedTokens, r.MaxNumBatchedTokens, r.MaxModelLen)
	}
	if r.MaxNumSeqs == 0 {
		r.MaxNumSeqs = min(defSeqs, r.MaxNumBatchedTokens)
	}
	if r.MaxNumBatchedTokens < r.MaxNumSeqs {
		return resolved{}, fmt.Errorf("--max-num-batched-tokens %d: max_num_batched_tokens (%d) must be greater than or equal to max_num_seqs (%d)",
			r.MaxNumBatchedTokens, r.MaxNumBatchedTokens, r.MaxNumSeqs)
	}
	if r.KVCacheMemoryBytes < 0 {
		return resolved{}, fmt.Errorf("--kv-cache-memory-bytes %d: must be positive, or 0 to profile", r.KVCacheMemoryBytes)
	}
	if math.IsNaN(r.StartupScale) || r.StartupScale < 0 {
		return resolved{}, fmt.Errorf("--startup-scale %v: must be >= 0 (1 is realistic)", r.StartupScale)
	}
	switch {
	case r.Slowdown == 0:
		r.Slowdown = 1
	case math.IsNaN(r.Slowdown) || r.Slowdown < 0.1 || r.Slowdown > 100:
		return resolved{}, fmt.Errorf("--slowdown %v is out of range: give a factor from 0.1 to 100 (1 is the calibrated engine, 1.2 makes every step 20%% slower)", r.Slowdown)
	}
	r.Perf.TAPI = time.Duration(float64(r.Perf.TAPI) * r.Slowdown)
	if r.StateDir == "" {
		return resolved{}, errors.New("--state-dir: must not be empty")
	}
	switch r.ColdState {
	case "", ColdWarm, ColdDisk, ColdCompile:
	default:
		return resolved{}, fmt.Errorf("--cold-state %q: use %s, %s or %s (or leave it empty, which is %s)", r.ColdState, ColdWarm, ColdDisk, ColdCompile, ColdWarm)
	}
	if r.FirstRequestDelay < 0 || r.StatsInterval < 0 || r.ShutdownGrace < 0 {
		return resolved{}, errors.New("sim: durations must not be negative")
	}
	if err := r.Perf.validate(); err != nil {
		return resolved{}, err
	}
	return r, nil
}
