package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"

	"github.com/ttftlab/ttftlab/internal/sim"
)

// boolSetter is a bool flag that stores a fixed value into a shared
// variable, so --enable-X and --no-enable-X (argparse's
// BooleanOptionalAction) both work and the last one given wins.
type boolSetter struct {
	p   *bool
	val bool
}

func (b boolSetter) String() string {
	if b.p == nil {
		return "false"
	}
	return strconv.FormatBool(*b.p == b.val)
}

func (b boolSetter) Set(s string) error {
	v, err := strconv.ParseBool(s)
	if err != nil {
		return err
	}
	if v {
		*b.p = b.val
	} else {
		*b.p = !b.val
	}
	return nil
}

func (b boolSetter) IsBoolFlag() bool { return true }

// runSim runs `ttftlab sim [MODEL] [flags]`: a simulated vLLM engine that
// takes vLLM's `vllm serve` flag names, logs vLLM's lines to stdout and
// serves vLLM's OpenAI API until ctx is done. A startup failure prints
// vLLM's error text to stdout and returns an error (exit status 1).
func runSim(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg := sim.DefaultConfig()
	fs := newFlagSet("sim", stderr)
	fs.Usage = func() {
		helpHeader(stderr, "sim")
		fmt.Fprintf(stderr, "\nIt speaks vLLM %s's API, logs and /metrics.\nModels: %s\nGPUs: %s\n",
			sim.Version, strings.Join(sim.ModelNames(), ", "), strings.Join(sim.GPUNames(), ", "))
		printFlags(stderr, fs)
	}

	fs.StringVar(&cfg.Model, "model", cfg.Model, "model `name` (a built-in Hugging Face id, matched case-insensitively or by its last path element; with --model-config only a name)")
	fs.StringVar(&cfg.ModelConfig, "model-config", "", "simulate the model of a Hugging Face config.json at `path` (file or directory) instead of a built-in one")
	calibPath := fs.String("calibration", "", "JSON `file` overriding the timing, startup, memory and GPU parameters (see docs/sim.md); unknown keys are errors")
	fs.StringVar(&cfg.ServedModelName, "served-model-name", "", "`name` the API serves the model under (default: --model)")
	fs.StringVar(&cfg.Host, "host", cfg.Host, "`address` to listen on")
	fs.IntVar(&cfg.Port, "port", cfg.Port, "`port` to listen on (0 picks a free port, printed in the log)")
	fs.IntVar(&cfg.MaxModelLen, "max-model-len", 0, "context length in `tokens` (default: the model's max_position_embeddings)")
	fs.Float64Var(&cfg.GPUMemoryUtilization, "gpu-memory-utilization", cfg.GPUMemoryUtilization, "`fraction` of GPU memory vLLM may use, in (0, 1]")
	fs.IntVar(&cfg.MaxNumSeqs, "max-num-seqs", 0, "maximum running `sequences` (0: 1024 on ≥70 GiB non-A100 GPUs, else 256)")
	fs.IntVar(&cfg.MaxNumBatchedTokens, "max-num-batched-tokens", 0, "token budget per step (0: 8192 on ≥70 GiB non-A100 GPUs, else 2048)")
	fs.BoolVar(&cfg.EnforceEager, "enforce-eager", false, "disable torch.compile and CUDA graphs")
	fs.Var(boolSetter{&cfg.EnablePrefixCaching, true}, "enable-prefix-caching", "enable prefix caching")
	fs.Var(boolSetter{&cfg.EnablePrefixCaching, false}, "no-enable-prefix-caching", "disable prefix caching")
	fs.Var(boolSetter{&cfg.EnableChunkedPrefill, true}, "enable-chunked-prefill", "split long prefills into chunks of --max-num-batched-tokens")
	fs.Var(boolSetter{&cfg.EnableChunkedPrefill, false}, "no-enable-chunked-prefill", "prefill each prompt in one step; --max-num-batched-tokens must then be >= --max-model-len (its default)")
	fs.BoolVar(&cfg.EnablePromptTokensDetails, "enable-prompt-tokens-details", false, "report usage.prompt_tokens_details.cached_tokens")
	fs.BoolVar(&cfg.DisableLogStats, "disable-log-stats", false, "do not log the periodic stats line")
	fs.BoolVar(&cfg.DisableAccessLog, "disable-uvicorn-access-log", false, "do not log each HTTP request")
	fs.Int64Var(&cfg.KVCacheMemoryBytes, "kv-cache-memory-bytes", 0, "KV cache size in `bytes`, skipping the memory profile (0: profile)")
	fs.StringVar(&cfg.GPU, "gpu", cfg.GPU, "simulated `GPU`: "+strings.Join(sim.GPUNames(), ", "))
	asyncSched := fs.Bool("async-scheduling", false, "overlap the scheduler's CPU work with the GPU step, as vLLM's --async-scheduling does: a step takes max(GPU, CPU) time instead of their sum (wins over --calibration)")
	fs.StringVar(&cfg.StateDir, "state-dir", cfg.StateDir, "`directory` of the simulated page-cache and compile-cache state")
	fs.StringVar(&cfg.ColdState, "cold-state", os.Getenv(sim.ColdStateEnv), "reset the simulated caches in --state-dir before starting: "+sim.ColdDisk+" (weights read at disk speed), "+sim.ColdCompile+" (torch.compile from scratch) or "+sim.ColdWarm+"; empty takes $"+sim.ColdStateEnv+", which a gpunode's cold modes set")
	fs.Float64Var(&cfg.StartupScale, "startup-scale", cfg.StartupScale, "multiply every startup-phase duration by `factor` (test only; ≠1 is logged as a WARNING)")
	fs.Float64Var(&cfg.Slowdown, "slowdown", cfg.Slowdown, "multiply every engine step and the API's t_api by `factor`: 1.2 is an engine 20% slower (for `ttftlab compare` experiments; ≠1 is logged as a WARNING and in /version)")
	fs.BoolVar(&cfg.TestNoopPrefixReset, "test-noop-prefix-reset", false, "TEST HOOK: /reset_prefix_cache answers 200 and logs success but drops nothing (a reset that did not happen)")
	fs.Int64Var(&cfg.Seed, "seed", 0, "random `seed` for token ids and generated text")
	fs.DurationVar(&cfg.Startup.Bootstrap, "sim-bootstrap", cfg.Startup.Bootstrap, "simulated process and API bootstrap `duration`, before --startup-scale")
	diskGBps := fs.Float64("disk-read-gbps", cfg.Startup.DiskReadBps/1e9, "weight read speed from disk in `GB/s` (10^9 bytes/s) when the weights are not in the simulated page cache; a slow disk reads at a fraction of it")
	fs.DurationVar(&cfg.FirstRequestDelay, "sim-first-request-delay", cfg.FirstRequestDelay, "lazy-initialisation `duration` the first engine step pays")

	// `vllm serve MODEL [flags]`: accept the model as a leading positional.
	modelPositional := false
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cfg.Model = args[0]
		args = args[1:]
		modelPositional = true
	}
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("sim: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("sim: unexpected argument %q; flags are --name value or --name=value", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if cfg.ModelConfig != "" && !set["model"] && !modelPositional {
		cfg.Model = "" // name the model after the config
	}
	if set["disk-read-gbps"] && !(*diskGBps > 0 && *diskGBps <= 1000) {
		return fmt.Errorf("sim: --disk-read-gbps %g is out of range: use a read speed in GB/s in (0, 1000], e.g. 0.3 for a slow network disk", *diskGBps)
	}
	if *calibPath != "" {
		cal, err := sim.LoadCalibration(*calibPath)
		if err != nil {
			return fmt.Errorf("sim: %w", err)
		}
		// Explicit flags win over the file.
		if set["sim-bootstrap"] && cal.Startup != nil {
			cal.Startup.Bootstrap = nil
		}
		if set["sim-first-request-delay"] {
			cal.FirstRequestDelay = nil
		}
		if set["disk-read-gbps"] && cal.Startup != nil {
			cal.Startup.DiskReadBps = nil
		}
		cal.Apply(&cfg)
	}
	if set["disk-read-gbps"] {
		cfg.Startup.DiskReadBps = *diskGBps * 1e9
	}
	if set["async-scheduling"] {
		cfg.Perf.AsyncScheduling = *asyncSched
	}
	e, err := sim.New(cfg, stdout, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		return fmt.Errorf("sim: %w", err)
	}
	if err := e.Run(ctx); err != nil {
		if errors.Is(err, context.Canceled) && ctx.Err() != nil {
			return nil // interrupted during startup
		}
		return fmt.Errorf("sim: %w", err)
	}
	return nil
}
