package sim

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/internal/kvcalc"
)

// GiB is 2^30 bytes.
const GiB = kvcalc.GiB

// KVInputs are the inputs of vLLM V1's KV-capacity computation; see
// kvcalc.Inputs.
type KVInputs = kvcalc.Inputs

// KVPlan is the KV-cache layout vLLM logs at startup; see kvcalc.Plan.
type KVPlan = kvcalc.Plan

// KVError is a KV-capacity startup failure; Error returns vLLM's exact
// ValueError text.
type KVError = kvcalc.Error

// PlanKV applies vLLM V1's KV-capacity formula (kvcalc.PlanKV).
func PlanKV(in KVInputs) (KVPlan, error) { return kvcalc.PlanKV(in) }

// kvInputs returns the inputs of the KV plan of r.
func (r resolved) kvInputs() KVInputs {
	act := r.Memory.PeakActivationGiB
	if act <= 0 {
		act = peakActivationBytes(r.model, r.MaxNumBatchedTokens, r.MaxNumSeqs) / GiB
	}
	return KVInputs{
		TotalGiB:            r.gpu.TotalGiB,
		Utilization:         r.GPUMemoryUtilization,
		WeightsGiB:          float64(r.model.WeightBytes()) / GiB,
		ActivationGiB:       act,
		NonTorchGiB:         r.Memory.NonTorchGiB,
		Layout:              r.model.KVLayout(),
		MaxModelLen:         r.MaxModelLen,
		MaxNumBatchedTokens: r.MaxNumBatchedTokens,
		KVCacheMemoryBytes:  r.KVCacheMemoryBytes,
	}
}

// PlanKV computes the KV-cache plan the engine would log at startup for c,
// without starting it.
func (c Config) PlanKV() (KVPlan, error) {
	r, err := c.resolve()
	if err != nil {
		return KVPlan{}, err
	}
	return PlanKV(r.kvInputs())
}

// peakActivationBytes estimates the torch peak of vLLM's profile run
// (kvcalc.EstimateActivationBytes).
func peakActivationBytes(m Model, maxBatchedTokens, maxSeqs int) float64 {
	return kvcalc.EstimateActivationBytes(m.KVConfig(), maxBatchedTokens, maxSeqs)
}

// commaInt formats n with thousands separators, as Python's f"{n:,}".
func commaInt(n int) string { return kvcalc.CommaInt(n) }

// State files. The simulator cannot touch a real page cache or Inductor
// cache, so it records their state under the state directory:
//
//	<state-dir>/pagecache/<model>          weights are in the page cache
//	<state-dir>/compile/<model>-<hash>     the compiled graph is cached

// stateKey turns a model name into a file name.
func stateKey(model string) string {
	if m, err := LookupModel(model); err == nil {
		model = m.Name
	}
	return strings.NewReplacer("/", "--", "\\", "--", ":", "_").Replace(model)
}

func pageCacheFile(stateDir, model string) string {
	return filepath.Join(stateDir, "pagecache", stateKey(model))
}

// EvictPageCache forgets that model's weights are in the simulated page
// cache, so the next start reads them at disk speed (the cold-disk mode).
func EvictPageCache(stateDir, model string) error {
	if err := os.Remove(pageCacheFile(stateDir, model)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("evict page cache of %s: %w", model, err)
	}
	return nil
}

// ResetCompileCache empties the simulated torch.compile cache of model, or
// of every model when model is "", so the next start compiles cold (the
// cold-compile mode).
func ResetCompileCache(stateDir, model string) error {
	dir := filepath.Join(stateDir, "compile")
	if model == "" {
		if err := os.RemoveAll(dir); err != nil {
			return fmt.Errorf("reset compile cache: %w", err)
		}
		return nil
	}
	matches, err := filepath.Glob(filepath.Join(dir, stateKey(model)+"-*"))
	if err != nil {
		return fmt.Errorf("reset compile cache of %s: %w", model, err)
	}
	for _, f := range matches {
		if err := os.Remove(f); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("reset compile cache of %s: %w", model, err)
		}
	}
	return nil
}

// resetColdState puts the simulated caches in the state --cold-state asks
// for, before anything reads them, and logs what it did.
func (e *Engine) resetColdState() error {
	r := e.cfg
	switch r.ColdState {
	case ColdDisk:
		if err := EvictPageCache(r.StateDir, r.model.Name); err != nil {
			return fmt.Errorf("--cold-state %s: %w", r.ColdState, err)
		}
		e.log.info(procAPI, "sim.py", 2, "ttftlab sim: --cold-state %s: evicted the simulated page cache of %s in %s", r.ColdState, r.model.Name, r.StateDir)
	case ColdCompile:
		if err := ResetCompileCache(r.StateDir, r.model.Name); err != nil {
			return fmt.Errorf("--cold-state %s: %w", r.ColdState, err)
		}
		e.log.info(procAPI, "sim.py", 3, "ttftlab sim: --cold-state %s: emptied the simulated compile cache of %s in %s", r.ColdState, r.model.Name, r.StateDir)
	}
	return nil
}

// compileHash is the 10-hex-digit key of the compile cache: the compiled
// graph depends on the model, the GPU and the token budget.
func (r resolved) compileHash() string {
	h := fnv.New64a()
	fmt.Fprintf(h, "%s|%s|%d", r.model.Name, r.gpu.Name, r.MaxNumBatchedTokens)
	return fmt.Sprintf("%016x", h.Sum64())[:10]
}

func (r resolved) compileFile() string {
	return filepath.Join(r.StateDir, "compile", stateKey(r.model.Name)+"-"+r.compileHash())
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// touchFile creates p and its directory, recording when.
func touchFile(p string, now time.Time) error {
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	return os.WriteFile(p, []byte(now.UTC().Format(time.RFC3339)+"\n"), 0o644)
}

// sleepCtx sleeps d or until ctx is done.
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// StartupError is a failed engine start. Its text is the last line vLLM
// prints; the full vLLM output is in the log.
type StartupError struct {
	// Err is the root cause (a *KVError, or a bind error).
	Err error
}

func (e *StartupError) Error() string {
	return "Engine core initialization failed. See root cause above. Failed core proc(s): {}: " + e.Err.Error()
}

func (e *StartupError) Unwrap() error { return e.Err }

// startup plays vLLM 0.11's startup phases with their log lines and
// durations and returns the KV plan. Every printed duration is the time the
// phase really took, so the log agrees with the wall clock (with
// --startup-scale ≠ 1 both are scaled).
func (e *Engine) startup(ctx context.Context) (KVPlan, error) {
	r, l, sp := e.cfg, e.log, e.cfg.Startup
	scale := func(d time.Duration) time.Duration { return time.Duration(float64(d) * r.StartupScale) }
	secs := func(b, bps float64) time.Duration { return time.Duration(b / bps * float64(time.Second)) }
	m := r.model

	l.info(procAPI, "api_server.py", 1839, "vLLM API server version %s", Version)
	l.info(procAPI, "utils.py", 233, "non-default args: %s", e.nonDefaultArgs())
	if r.StartupScale != 1 {
		l.line(procAPI, "WARNING", "sim.py", 1, "ttftlab sim: startup durations are scaled by %g (--startup-scale); phase timings are not realistic.", r.StartupScale)
	}
	if r.Slowdown != 1 {
		l.line(procAPI, "WARNING", "sim.py", 1, "ttftlab sim: every engine step and t_api is scaled by %g (--slowdown); serving is %+.0f%% of the calibrated engine.", r.Slowdown, (r.Slowdown-1)*100)
	}
	if err := e.resetColdState(); err != nil {
		l.raw(procAPI, "OSError: "+err.Error())
		return KVPlan{}, &StartupError{Err: err}
	}
	l.info(procAPI, "model.py", 547, "Resolved architecture: %s", m.Architecture)
	l.info(procAPI, "model.py", 1510, "Using max model len %d", r.MaxModelLen)
	if r.EnableChunkedPrefill {
		l.info(procAPI, "scheduler.py", 205, "Chunked prefill is enabled with max_num_batched_tokens=%d.", r.MaxNumBatchedTokens)
	}
	if err := sleepCtx(ctx, scale(sp.Bootstrap*6/10)); err != nil {
		return KVPlan{}, err
	}
	l.info(procEngine, "core.py", 644, "Waiting for init message from front-end.")
	l.info(procEngine, "core.py", 77, "Initializing a V1 LLM engine (v%s) with config: model='%s', speculative_config=None, tokenizer='%s', skip_tokenizer_init=False, tokenizer_mode=auto, revision=None, trust_remote_code=False, dtype=torch.bfloat16, max_seq_len=%d, download_dir=None, load_format=auto, tensor_parallel_size=1, pipeline_parallel_size=1, data_parallel_size=1, disable_custom_all_reduce=False, quantization=None, enforce_eager=%s, kv_cache_dtype=auto, device_config=cuda, seed=%d, served_model_name=%s, enable_prefix_caching=%s, chunked_prefill_enabled=%s",
		Version, r.Model, r.Model, r.MaxModelLen, pyBool(r.EnforceEager), r.Seed, r.ServedModelName, pyBool(r.EnablePrefixCaching), pyBool(r.EnableChunkedPrefill))
	l.info(procEngine, "parallel_state.py", 1208, "rank 0 in world size 1 is assigned as DP rank 0, PP rank 0, TP rank 0, EP rank 0")
	if err := sleepCtx(ctx, scale(sp.Bootstrap-sp.Bootstrap*6/10)); err != nil {
		return KVPlan{}, err
	}

	// Weights: disk or page cache, then host-to-device.
	loadStart := time.Now()
	l.info(procEngine, "gpu_model_runner.py", 2602, "Starting to load model %s...", r.Model)
	l.info(procEngine, "gpu_model_runner.py", 2634, "Loading model from scratch...")
	l.info(procEngine, "cuda.py", 366, "Using Flash Attention backend on V1 engine.")
	l.info(procEngine, "weight_utils.py", 392, "Using model weights format ['*.safetensors']")
	wb := float64(m.WeightBytes())
	pcFile := pageCacheFile(r.StateDir, m.Name)
	readBps := sp.DiskReadBps
	if fileExists(pcFile) {
		readBps = sp.PageCacheReadBps
	}
	wStart := time.Now()
	if err := sleepCtx(ctx, scale(sp.WeightsFixed+secs(wb, readBps))); err != nil {
		return KVPlan{}, err
	}
	l.info(procEngine, "default_loader.py", 267, "Loading weights took %.2f seconds", time.Since(wStart).Seconds())
	if err := touchFile(pcFile, time.Now()); err != nil {
		e.logger.Warn("record page-cache state", "file", pcFile, "err", err)
	}
	if err := sleepCtx(ctx, scale(secs(wb, sp.HostToDeviceBps)+sp.ModelInit)); err != nil {
		return KVPlan{}, err
	}
	weightsGiB := wb / GiB
	l.info(procEngine, "gpu_model_runner.py", 2653, "Model loading took %.4f GiB and %.6f seconds", weightsGiB, time.Since(loadStart).Seconds())

	// Profile run: torch.compile happens inside it.
	initStart := time.Now()
	if !r.EnforceEager {
		cf := r.compileFile()
		l.info(procEngine, "backends.py", 548, "Using cache directory: %s for vLLM's torch.compile",
			filepath.Join(r.StateDir, "torch_compile_cache", r.compileHash(), "rank_0_0", "backbone"))
		cStart := time.Now()
		if err := sleepCtx(ctx, scale(sp.Dynamo)); err != nil {
			return KVPlan{}, err
		}
		l.info(procEngine, "backends.py", 559, "Dynamo bytecode transform time: %.2f s", time.Since(cStart).Seconds())
		iStart := time.Now()
		if fileExists(cf) {
			if err := sleepCtx(ctx, scale(sp.CompileWarm)); err != nil {
				return KVPlan{}, err
			}
			l.info(procEngine, "backends.py", 164, "Directly load the compiled graph(s) for dynamic shape from the cache, took %.3f s", time.Since(iStart).Seconds())
		} else {
			l.info(procEngine, "backends.py", 197, "Cache the graph for dynamic shape for later use")
			if err := sleepCtx(ctx, scale(sp.CompileCold)); err != nil {
				return KVPlan{}, err
			}
			l.info(procEngine, "backends.py", 218, "Compiling a graph for dynamic shape takes %.2f s", time.Since(iStart).Seconds())
			if err := touchFile(cf, time.Now()); err != nil {
				e.logger.Warn("record compile-cache state", "file", cf, "err", err)
			}
		}
		l.info(procEngine, "monitor.py", 34, "torch.compile takes %.2f s in total", time.Since(cStart).Seconds())
	}
	if err := sleepCtx(ctx, scale(sp.MemoryProfile)); err != nil {
		return KVPlan{}, err
	}
	plan, err := PlanKV(r.kvInputs())
	l.info(procEngine, "gpu_worker.py", 298, "Available KV cache memory: %.2f GiB", plan.AvailableGiB())
	if err != nil {
		e.logEngineFailure("ValueError", err.Error())
		return plan, &StartupError{Err: err}
	}
	l.info(procEngine, "kv_cache_utils.py", 1087, "GPU KV cache size: %s tokens", commaInt(plan.Tokens))
	l.info(procEngine, "kv_cache_utils.py", 1091, "Maximum concurrency for %s tokens per request: %.2fx", commaInt(r.MaxModelLen), plan.MaxConcurrency)
	if !r.EnforceEager {
		gStart := time.Now()
		if err := sleepCtx(ctx, scale(sp.GraphCapture)); err != nil {
			return KVPlan{}, err
		}
		l.info(procEngine, "gpu_model_runner.py", 3480, "Graph capturing finished in %.0f secs, took %.2f GiB", time.Since(gStart).Seconds(), 0.12+0.04*weightsGiB)
	}
	l.info(procEngine, "core.py", 210, "init engine (profile, create kv cache, warmup model) took %.2f seconds", time.Since(initStart).Seconds())
	l.info(procAPI, "loggers.py", 142, "Engine 000: vllm cache_config_info with initialization after num_gpu_blocks is: %d", plan.NumBlocks)
	l.info(procAPI, "api_server.py", 1634, "Supported_tasks: ['generate']")
	if err := sleepCtx(ctx, scale(sp.APIStartup)); err != nil {
		return KVPlan{}, err
	}
	return plan, nil
}

// nonDefaultArgs renders vLLM's "non-default args" dict from the flags given.
func (e *Engine) nonDefaultArgs() string {
	u, d := e.cfg.user, DefaultConfig()
	parts := []string{fmt.Sprintf("'model_tag': '%s'", e.cfg.Model)}
	add := func(cond bool, k, v string) {
		if cond {
			parts = append(parts, fmt.Sprintf("'%s': %s", k, v))
		}
	}
	add(true, "host", "'"+u.Host+"'")
	add(u.Port != 8000, "port", strconv.Itoa(u.Port))
	add(true, "model", "'"+e.cfg.Model+"'")
	add(u.ServedModelName != "" && u.ServedModelName != e.cfg.Model, "served_model_name", "['"+u.ServedModelName+"']")
	add(u.MaxModelLen != 0, "max_model_len", strconv.Itoa(u.MaxModelLen))
	add(u.GPUMemoryUtilization != d.GPUMemoryUtilization, "gpu_memory_utilization", strconv.FormatFloat(u.GPUMemoryUtilization, 'f', -1, 64))
	add(u.EnforceEager, "enforce_eager", "True")
	add(!u.EnablePrefixCaching, "enable_prefix_caching", "False")
	add(!u.EnableChunkedPrefill, "enable_chunked_prefill", "False")
	add(u.MaxNumSeqs != 0, "max_num_seqs", strconv.Itoa(u.MaxNumSeqs))
	add(u.MaxNumBatchedTokens != 0, "max_num_batched_tokens", strconv.Itoa(u.MaxNumBatchedTokens))
	add(u.KVCacheMemoryBytes != 0, "kv_cache_memory_bytes", strconv.FormatInt(u.KVCacheMemoryBytes, 10))
	add(u.EnablePromptTokensDetails, "enable_prompt_tokens_details", "True")
	add(u.Perf.AsyncScheduling, "async_scheduling", "True")
	add(u.Seed != 0, "seed", strconv.FormatInt(u.Seed, 10))
	return "{" + strings.Join(parts, ", ") + "}"
}

// logEngineFailure prints vLLM V1's output for an engine core that raised
// excType(msg) during initialisation, ending with the API server's
// RuntimeError.
func (e *Engine) logEngineFailure(excType, msg string) {
	l := e.log
	tb := []string{
		"EngineCore failed to start.",
		"Traceback (most recent call last):",
		`  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/core.py", line 699, in run_engine_core`,
		"    engine_core = EngineCoreProc(*args, **kwargs)",
		`  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/core.py", line 498, in __init__`,
		"    super().__init__(vllm_config, executor_class, log_stats,",
		`  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/core.py", line 92, in __init__`,
		"    self._initialize_kv_caches(vllm_config)",
		`  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/core.py", line 199, in _initialize_kv_caches`,
		"    kv_cache_configs = get_kv_cache_configs(vllm_config, kv_cache_specs,",
		`  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/core/kv_cache_utils.py", line 1243, in get_kv_cache_configs`,
		"    check_enough_kv_cache_memory(vllm_config, kv_cache_spec_one_worker,",
		`  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/core/kv_cache_utils.py", line 716, in check_enough_kv_cache_memory`,
		"    raise ValueError(",
		excType + ": " + msg,
	}
	l.line(procEngine, "ERROR", "core.py", 708, "%s", strings.Join(tb, "\n"))
	l.raw(procEngine, "Process EngineCore_DP0:\n"+strings.Join(tb[1:], "\n"))
	l.raw(procAPI, strings.Join([]string{
		"Traceback (most recent call last):",
		`  File "/usr/local/bin/vllm", line 10, in <module>`,
		"    sys.exit(main())",
		`  File "/usr/local/lib/python3.12/dist-packages/vllm/v1/engine/utils.py", line 843, in wait_for_engine_startup`,
		`    raise RuntimeError("Engine core initialization failed. "`,
		"RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}",
	}, "\n"))
}
