package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/ttftlab/ttftlab/coordinator"
	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/sim"
)

// presets' simulator defaults keep the run to about three minutes on a
// 2-core host: a 3B model on a simulated H100 decodes a few thousand
// tokens/s at concurrency 64 (cheap for two cores to stream), and its
// requests of ~1,500 prompt + 64 output tokens end within about a second,
// so a 5 s step holds enough of them (docs/experiments.md, "presets").
const (
	presetsDefaultModel  = "meta-llama/Llama-3.2-3B-Instruct"
	presetsDefaultGPU    = "h100"
	presetsStartupScale  = 0.05
	presetsDefaultAgents = 2
)

// presetsConfig is everything `ttftlab presets` needs.
type presetsConfig struct {
	gridCLI
	req *pb.RunPresetsRequest
}

// joinInts renders a default list for a flag.
func joinInts(v []int) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = strconv.Itoa(x)
	}
	return strings.Join(s, ",")
}

// parseOnOff reads --chunked-prefill "on,off".
func parseOnOff(flagName, s string) ([]bool, error) {
	var out []bool
	for _, part := range strings.Split(s, ",") {
		switch strings.ToLower(strings.TrimSpace(part)) {
		case "":
			continue
		case "on", "true":
			out = append(out, true)
		case "off", "false":
			out = append(out, false)
		default:
			return nil, fmt.Errorf("--%s: %q is neither on nor off: write on, off or on,off", flagName, part)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--%s is empty: write on, off or on,off", flagName)
	}
	return out, nil
}

func parsePresets(args []string, stderr io.Writer) (presetsConfig, error) {
	fs := newFlagSet("presets", stderr)
	var c presetsConfig
	c.cf.register(fs)
	knobs := &pb.EngineKnobs{}
	fs.StringVar(&c.out, "out", "results", "results directory: DIR/<run>/ in-process; with --coordinator, a subdirectory of the coordinator's --out")
	fs.StringVar(&c.runID, "run-id", "", "run directory name (default: timestamp)")
	profile := fs.String("profile", "sim", "engine `profile`: sim (simulated vLLM) or vllm (a real vllm serve on the gpunode's host)")
	fs.StringVar(&knobs.Model, "model", presetsDefaultModel, "model to serve")
	fs.StringVar(&knobs.Gpu, "gpu", presetsDefaultGPU, "simulated GPU (sim profile only): "+strings.Join(sim.GPUNames(), ", "))
	fs.Float64Var(&knobs.GpuMemoryUtilization, "gpu-memory-utilization", 0, "engine --gpu-memory-utilization at every point (0: engine default)")
	fs.Var(boolKnob{&knobs.EnforceEager}, "enforce-eager", "engine --enforce-eager at every point (default: the engine's)")
	fs.Var(boolKnob{&knobs.EnablePrefixCaching}, "enable-prefix-caching", "engine --enable-prefix-caching at every point (default: the engine's)")
	budgets := fs.String("max-num-batched-tokens", joinInts(coordinator.DefaultPresetsBatchedTokens()), "comma list of engine --max-num-batched-tokens values (grid axis)")
	seqs := fs.String("max-num-seqs", joinInts(coordinator.DefaultPresetsMaxNumSeqs()), "comma list of engine --max-num-seqs values (grid axis)")
	chunked := fs.String("chunked-prefill", "on,off", "chunked prefill settings to try (grid axis): on, off or on,off")
	mml := fs.Int("max-model-len", coordinator.DefaultPresetsMaxModelLen, "engine --max-model-len at every point")
	concs := fs.String("concurrency", joinInts(coordinator.DefaultPresetsConcurrencies()), "comma list of closed-loop concurrencies run at each point")
	inLen := fs.Int("input-len", coordinator.DefaultPresetsInputLen, "mean prompt tokens; prompts are uniform in [input-len/2, 1.5 × input-len]")
	outLen := fs.Int("output-len", coordinator.DefaultPresetsOutputLen, "output tokens per request (ignore_eos)")
	slo := fs.Float64("slo-ttft-ms", coordinator.DefaultPresetsSLOTTFTMs, "the interactive preset's bound on TTFT p95, in ms")
	maxTTFT := fs.Float64("max-ttft-ms", coordinator.DefaultPresetsMaxTTFTMs, "the throughput preset's bound on TTFT p95, in ms")
	api := fs.String("api", "completions", "OpenAI API of the load: completions (exact prompt lengths) or chat")
	dur := fs.Duration("step-duration", coordinator.DefaultPresetsLevelDuration, "measured duration of each concurrency step")
	warm := fs.Duration("step-warmup", coordinator.DefaultPresetsWarmup, "warm-up of each step, left out of the statistics")
	maxAgents := fs.Int("max-agents", 0, "agents that share each step (0: all alive)")
	fs.IntVar(&c.agents, "agents", presetsDefaultAgents, "in-process agents (without --coordinator)")
	fs.StringVar(&c.gpunodeConfig, "gpunode-config", "", "YAML `file` of engine profiles for the in-process gpunode (default: the built-in sim and vllm profiles)")
	fs.Float64Var(&c.startupScale, "sim-startup-scale", presetsStartupScale, "TEST HOOK (in-process sim only): scale the simulated startup durations so that the restarts are short; the report says so; 1 is realistic")
	fs.BoolVar(&c.quiet, "quiet", false, "do not print the report at the end")
	fs.Var(&c.progress, "progress", "compact progress on stderr (level i of n, elapsed, time left, errors): auto (when stderr is a terminal), on or off")
	var sel coordinator.Selection
	registerSelectionFlags(fs, &sel)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q: presets takes only flags", fs.Arg(0))
	}
	set := setFlags(fs)
	if *profile != "sim" && !set["gpu"] {
		knobs.Gpu = "" // the simulator's GPU; a real engine has its own
	}
	if !(knobs.GpuMemoryUtilization >= 0 && knobs.GpuMemoryUtilization <= 1) {
		return c, fmt.Errorf("--gpu-memory-utilization %g is out of range: use a fraction in (0, 1], or 0 for the engine default", knobs.GpuMemoryUtilization)
	}
	bs, err := parseIntList("max-num-batched-tokens", *budgets)
	if err != nil {
		return c, err
	}
	ss, err := parseIntList("max-num-seqs", *seqs)
	if err != nil {
		return c, err
	}
	cs, err := parseIntList("concurrency", *concs)
	if err != nil {
		return c, err
	}
	ch, err := parseOnOff("chunked-prefill", *chunked)
	if err != nil {
		return c, err
	}
	for name, v := range map[string]int{"--max-model-len": *mml, "--input-len": *inLen, "--output-len": *outLen, "--max-agents": *maxAgents} {
		if v < 0 || v > 1<<22 {
			return c, fmt.Errorf("%s %d is out of range: use a positive value", name, v)
		}
	}
	if *dur <= 0 || *warm < 0 {
		return c, fmt.Errorf("--step-duration %s / --step-warmup %s: the duration must be positive and the warm-up not negative", *dur, *warm)
	}
	if c.cf.addr == "" {
		if c.agents < 1 || c.agents > 64 {
			return c, fmt.Errorf("--agents %d is out of range: use 1..64", c.agents)
		}
		if !(c.startupScale > 0 && c.startupScale <= 10) {
			return c, fmt.Errorf("--sim-startup-scale %g is out of range: use a value in (0, 10], 1 for realistic startup", c.startupScale)
		}
	} else if set["agents"] || set["sim-startup-scale"] || set["gpunode-config"] {
		return c, errors.New("--agents, --sim-startup-scale and --gpunode-config configure the in-process cluster: leave them out with --coordinator")
	}
	// The coordinator checks again and names the field; check here too, so
	// that a typo fails before a cluster starts.
	spec := coordinator.PresetsSpec{RunID: c.runID, Profile: *profile, Knobs: knobs, API: *api, MaxNumBatchedTokens: toInts(bs), MaxNumSeqs: toInts(ss),
		ChunkedPrefill: ch, MaxModelLen: *mml, Concurrencies: toInts(cs), InputLen: *inLen, OutputLen: *outLen, SLOTTFTMs: *slo,
		MaxTTFTMs: *maxTTFT, LevelDuration: *dur, Warmup: *warm, MaxAgents: *maxAgents, Selection: sel}
	c.req = spec.Request()
	if err := spec.Validate(); err != nil {
		return c, presetsFlagNames().rename(err)
	}
	return c, nil
}

// presetsFlagNames maps PresetsSpec's fields (named as in
// RunPresetsRequest) to this command's flags.
func presetsFlagNames() flagNames {
	return withSelectionNames(flagNames{
		"max_num_batched_tokens": "--max-num-batched-tokens", "max_num_seqs": "--max-num-seqs",
		"chunked_prefill": "--chunked-prefill", "max_model_len": "--max-model-len", "concurrencies": "--concurrency",
		"input_len": "--input-len", "output_len": "--output-len", "slo_ttft_ms": "--slo-ttft-ms", "max_ttft_ms": "--max-ttft-ms",
		"level_duration_ms": "--step-duration", "warmup_ms": "--step-warmup", "api": "--api", "run_id": "--run-id",
		"max_agents": "--max-agents",
	})
}

// runPresets runs `ttftlab presets`: in-process on the embedded defaults, or on a
// running cluster with --coordinator.
func runPresets(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parsePresets(args, stderr)
	if err != nil {
		return err
	}
	return c.run(ctx, gridRun{name: "presets", report: results.PresetsReport, knobs: c.req.GetKnobs(), profile: c.req.GetProfile(),
		setOutDir: func(d string) { c.req.OutDir = d },
		start: func(ctx context.Context, cl pb.CoordinatorServiceClient) (func() (*pb.RunEvent, error), error) {
			st, err := cl.RunPresets(ctx, c.req)
			if err != nil {
				return nil, err
			}
			return func() (*pb.RunEvent, error) { resp, err := st.Recv(); return resp.GetEvent(), err }, nil
		},
	}, stdout, stderr)
}
