package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/ttftlab/ttftlab/coordinator"
	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/sim"
	"google.golang.org/protobuf/encoding/protojson"
)

// kvscale's defaults keep the simulated run short on a small host: a 3B
// model on the simulator's smallest GPU (L4, 22 GiB) leaves a KV cache of
// tens of thousands of tokens, so C* for prompts of half max_model_len is
// tens of requests, not thousands (docs/experiments.md says why).
const (
	kvscaleDefaultModel  = "meta-llama/Llama-3.2-3B-Instruct"
	kvscaleDefaultGPU    = "l4"
	kvscaleDefaultLens   = "2048,8192"
	kvscaleDefaultUtils  = "0.5"
	kvscaleStartupScale  = 0.05
	kvscaleDefaultAgents = 2
)

// kvscaleConfig is everything `ttftlab kvscale` needs.
type kvscaleConfig struct {
	gridCLI
	req *pb.RunKVScaleRequest
}

func parseKVScale(args []string, stderr io.Writer) (kvscaleConfig, error) {
	fs := newFlagSet("kvscale", stderr)
	var c kvscaleConfig
	c.cf.register(fs)
	knobs := &pb.EngineKnobs{EnforceEager: pb.OptionalBool_OPTIONAL_BOOL_TRUE}
	fs.StringVar(&c.out, "out", "results", "results directory: DIR/<run>/ in-process; with --coordinator, a subdirectory of the coordinator's --out")
	fs.StringVar(&c.runID, "run-id", "", "run directory name (default: timestamp)")
	profile := fs.String("profile", "sim", "engine `profile`: sim (simulated vLLM) or vllm (a real vllm serve on the gpunode's host)")
	fs.StringVar(&knobs.Model, "model", kvscaleDefaultModel, "model to serve")
	fs.StringVar(&knobs.Gpu, "gpu", kvscaleDefaultGPU, "simulated GPU (sim profile only): "+strings.Join(sim.GPUNames(), ", "))
	fs.Var(boolKnob{&knobs.EnforceEager}, "enforce-eager", "engine --enforce-eager (true keeps each restart short)")
	fs.Var(boolKnob{&knobs.EnablePrefixCaching}, "enable-prefix-caching", "engine --enable-prefix-caching (default here: off, as C* assumes no shared blocks)")
	lens := fs.String("max-model-len", kvscaleDefaultLens, "comma list of engine --max-model-len values (grid axis)")
	utils := fs.String("gpu-memory-utilization", kvscaleDefaultUtils, "comma list of engine --gpu-memory-utilization values (grid axis)")
	seqs := fs.Int("max-num-seqs", 0, "engine --max-num-seqs at every point (0: engine default)")
	api := fs.String("api", "completions", "OpenAI API of the load: completions (exact prompt lengths) or chat")
	outLen := fs.Int("output-len", coordinator.DefaultKVScaleOutputLen, "output tokens per request (ignore_eos)")
	dur := fs.Duration("step-duration", coordinator.DefaultKVScaleLevelDuration, "measured duration of each concurrency step")
	warm := fs.Duration("step-warmup", coordinator.DefaultKVScaleWarmup, "least warm-up of each step, left out of the statistics (later steps size theirs from the step before)")
	maxConc := fs.Int("max-concurrency", coordinator.DefaultKVScaleMaxConcurrency, "cap on the concurrency steps; an onset above it is reported as above the tested range")
	maxAgents := fs.Int("max-agents", 0, "agents that share each step (0: all alive)")
	fs.IntVar(&c.agents, "agents", kvscaleDefaultAgents, "in-process agents (without --coordinator)")
	fs.StringVar(&c.gpunodeConfig, "gpunode-config", "", "YAML `file` of engine profiles for the in-process gpunode (default: the built-in sim and vllm profiles)")
	fs.Float64Var(&c.startupScale, "sim-startup-scale", kvscaleStartupScale, "TEST HOOK (in-process sim only): scale the simulated startup durations so that the restarts are short; the report says so; 1 is realistic")
	fs.BoolVar(&c.quiet, "quiet", false, "do not print the report at the end")
	fs.Var(&c.progress, "progress", "compact progress on stderr (level i of n, elapsed, time left, errors): auto (when stderr is a terminal), on or off")
	var sel coordinator.Selection
	registerSelectionFlags(fs, &sel)
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q: kvscale takes only flags", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *profile != "sim" {
		// The short-run defaults are the simulator's; a real engine keeps its own.
		if !set["gpu"] {
			knobs.Gpu = ""
		}
		if !set["enforce-eager"] {
			knobs.EnforceEager = pb.OptionalBool_OPTIONAL_BOOL_UNSPECIFIED
		}
	}
	ml, err := parseIntList("max-model-len", *lens)
	if err != nil {
		return c, err
	}
	us, err := parseFloatList("gpu-memory-utilization", *utils)
	if err != nil {
		return c, err
	}
	for name, v := range map[string]int{"--max-num-seqs": *seqs, "--output-len": *outLen, "--max-concurrency": *maxConc, "--max-agents": *maxAgents} {
		if v < 0 || v > 1<<20 {
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
	// The coordinator checks the rest (ranges that depend on each other)
	// and names the field; check here too, so that a typo fails before a
	// cluster starts.
	spec := coordinator.KVScaleSpec{RunID: c.runID, Profile: *profile, Knobs: knobs, API: *api, MaxModelLens: toInts(ml), Utilizations: us,
		MaxNumSeqs: *seqs, OutputLen: *outLen, LevelDuration: *dur, Warmup: *warm, MaxConcurrency: *maxConc, MaxAgents: *maxAgents, Selection: sel}
	c.req = spec.Request()
	if err := spec.Validate(); err != nil {
		return c, kvscaleFlagNames().rename(err)
	}
	return c, nil
}

// kvscaleFlagNames maps KVScaleSpec's fields (named as in
// RunKVScaleRequest) to this command's flags.
func kvscaleFlagNames() flagNames {
	return withSelectionNames(flagNames{
		"max_model_lens": "--max-model-len", "gpu_memory_utilizations": "--gpu-memory-utilization",
		"output_len": "--output-len", "max_concurrency": "--max-concurrency", "max_num_seqs": "--max-num-seqs",
		"level_duration_ms": "--step-duration", "warmup_ms": "--step-warmup", "api": "--api", "run_id": "--run-id",
		"max_agents": "--max-agents",
	})
}

func toInts(v []int32) []int {
	out := make([]int, len(v))
	for i, x := range v {
		out[i] = int(x)
	}
	return out
}

// parseIntList reads "2048,4096".
func parseIntList(flagName, s string) ([]int32, error) {
	var out []int32
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := strconv.ParseInt(part, 10, 32)
		if err != nil || n < 1 {
			return nil, fmt.Errorf("--%s: %q is not a positive whole number: write e.g. 2048,4096,8192", flagName, part)
		}
		out = append(out, int32(n))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--%s is empty: give at least one value, e.g. 2048,4096,8192", flagName)
	}
	return out, nil
}

// parseFloatList reads "0.5,0.9".
func parseFloatList(flagName, s string) ([]float64, error) {
	var out []float64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		v, err := strconv.ParseFloat(part, 64)
		if err != nil || !(v > 0 && v <= 1) {
			return nil, fmt.Errorf("--%s: %q is not a fraction in (0, 1]: write e.g. 0.5,0.9", flagName, part)
		}
		out = append(out, v)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("--%s is empty: give at least one value, e.g. 0.5,0.9", flagName)
	}
	return out, nil
}

// runKVScale runs `ttftlab kvscale`: in-process on the embedded defaults, or on a
// running cluster with --coordinator.
func runKVScale(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parseKVScale(args, stderr)
	if err != nil {
		return err
	}
	return c.run(ctx, gridRun{name: "kvscale", report: results.KVScaleReport, knobs: c.req.GetKnobs(), profile: c.req.GetProfile(),
		setOutDir: func(d string) { c.req.OutDir = d },
		start: func(ctx context.Context, cl pb.CoordinatorServiceClient) (func() (*pb.RunEvent, error), error) {
			st, err := cl.RunKVScale(ctx, c.req)
			if err != nil {
				return nil, err
			}
			return func() (*pb.RunEvent, error) { resp, err := st.Recv(); return resp.GetEvent(), err }, nil
		},
	}, stdout, stderr)
}

// describeGridEvent renders a grid event's progress line, or "" for other
// kinds.
func describeGridEvent(ev *pb.RunEvent) string {
	if !results.IsGridKind(ev.GetKind()) {
		return ""
	}
	v, err := results.DecodeGrid(results.Event{T: ev.GetUnixNano(), Kind: ev.GetKind(), Data: []byte(ev.GetJson())})
	if err != nil {
		return ev.GetKind() + " (unreadable: " + err.Error() + ")"
	}
	opt := func(p *float64, format string) string {
		if p == nil {
			return "n/a"
		}
		return fmt.Sprintf(format, *p)
	}
	switch d := v.(type) {
	case results.GridStart:
		return fmt.Sprintf("%s grid of %d points", d.Experiment, len(d.Points))
	case results.GridPointInfo:
		return fmt.Sprintf("point %d: %s: restarting the engine", d.Point+1, d.Label)
	case results.GridPointReady:
		var f pb.EngineFigures
		_ = protojson.Unmarshal(d.Figures, &f)
		if !strings.Contains(string(d.Plan), `"c_star"`) { // not a kvscale plan
			var plan struct {
				Steps []int `json:"steps"`
			}
			_ = json.Unmarshal(d.Plan, &plan)
			return fmt.Sprintf("point %d ready: KV tokens %d; concurrencies %v", d.Point+1, f.GetKvCacheTokens(), plan.Steps)
		}
		var plan results.KVPlan
		_ = json.Unmarshal(d.Plan, &plan)
		cs := "n/a"
		if plan.CStar != nil {
			cs = strconv.Itoa(*plan.CStar)
		}
		pt := "n/a"
		if plan.Prediction.KVTokens != nil {
			pt = strconv.Itoa(*plan.Prediction.KVTokens)
		}
		return fmt.Sprintf("point %d ready: KV tokens %d (predicted %s), max concurrency %.2f (predicted %s); C* %s, steps %v",
			d.Point+1, f.GetKvCacheTokens(), pt, f.GetMaxConcurrency(), opt(plan.Prediction.MaxConcurrency, "%.2f"), cs, plan.Steps)
	case results.LevelObservation:
		return fmt.Sprintf("  concurrency %d: preemptions %s, waiting max %s, waiting > 0 in %s of the measured samples",
			d.Concurrency, opt(d.Preemptions, "%g"), opt(d.WaitingMax, "%g"), opt(d.WaitingFrac, "%.2f"))
	case results.GridPointEnd:
		if d.Error != "" {
			return fmt.Sprintf("point %d %s: %s", d.Point+1, d.Status, firstLine(d.Error))
		}
		return fmt.Sprintf("point %d %s", d.Point+1, d.Status)
	}
	return ""
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i] + " …"
	}
	return s
}
