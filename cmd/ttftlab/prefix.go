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
)

// prefix's defaults: a 3B model on the simulator's L4 makes prefill the
// bulk of a long prompt's TTFT, as on a real mid-range GPU; on the H200 the
// fixed per-request costs cap the hot/cold ratio at a 4,096-token prefix
// near 3.5× (docs/experiments.md says why).
const (
	prefixDefaultModel  = "meta-llama/Llama-3.2-3B-Instruct"
	prefixDefaultGPU    = "l4"
	prefixDefaultMML    = 8192
	prefixDefaultUtil   = 0.5
	prefixStartupScale  = 0.05
	prefixDefaultAgents = 2
)

// prefixConfig is everything `ttftlab prefix` needs.
type prefixConfig struct {
	gridCLI
	noopReset bool
	req       *pb.RunPrefixRequest
}

func parsePrefix(args []string, stderr io.Writer) (prefixConfig, error) {
	fs := newFlagSet("prefix", stderr)
	var c prefixConfig
	c.cf.register(fs)
	knobs := &pb.EngineKnobs{EnforceEager: pb.OptionalBool_OPTIONAL_BOOL_TRUE}
	fs.StringVar(&c.out, "out", "results", "results directory: DIR/<run>/ in-process; with --coordinator, a subdirectory of the coordinator's --out")
	fs.StringVar(&c.runID, "run-id", "", "run directory name (default: timestamp)")
	profile := fs.String("profile", "sim", "engine `profile`: sim (simulated vLLM) or vllm (a real vllm serve on the gpunode's host, which must serve /reset_prefix_cache: VLLM_SERVER_DEV_MODE=1)")
	fs.StringVar(&knobs.Model, "model", prefixDefaultModel, "model to serve")
	fs.StringVar(&knobs.Gpu, "gpu", prefixDefaultGPU, "simulated GPU (sim profile only): "+strings.Join(sim.GPUNames(), ", "))
	mml := fs.Int("max-model-len", prefixDefaultMML, "engine --max-model-len (0: the engine's own)")
	util := fs.Float64("gpu-memory-utilization", prefixDefaultUtil, "engine --gpu-memory-utilization (0: the engine's own)")
	fs.Var(boolKnob{&knobs.EnforceEager}, "enforce-eager", "engine --enforce-eager (true keeps each restart short)")
	lens := fs.String("prefix-lens", "0,256,1024,4096", "comma list of shared-prefix lengths in tokens (0: no shared prefix)")
	suffix := fs.Int("suffix-len", coordinator.DefaultPrefixSuffixLen, "tokens after the shared prefix in every prompt")
	ratios := fs.String("hit-ratios", "0,0.25,0.5,0.75,1", "comma list of the fractions of requests that share a warmed prefix, for the closed-loop sweep")
	hitPrefix := fs.Int("hit-prefix-len", 0, "shared prefix of the hit-ratio sweep in tokens (0: the largest --prefix-lens up to 1024)")
	conc := fs.Int("concurrency", coordinator.DefaultPrefixConcurrency, "closed-loop concurrency of the hit-ratio sweep")
	repeats := fs.Int("repeats", coordinator.DefaultPrefixRepeats, "requests of each cold, repeat and hot step (their median is reported)")
	outLen := fs.Int("output-len", coordinator.DefaultPrefixOutputLen, "output tokens per request (ignore_eos)")
	dur := fs.Duration("step-duration", coordinator.DefaultPrefixLevelDuration, "measured duration of each hit-ratio step")
	warm := fs.Duration("step-warmup", coordinator.DefaultPrefixWarmup, "warm-up of each hit-ratio step, left out of the statistics (it warms the shared prefix)")
	skipOff := fs.Bool("skip-off", false, "leave out the A/B point with prefix caching off")
	api := fs.String("api", "completions", "OpenAI API of the load: completions (exact prompt lengths) or chat")
	maxAgents := fs.Int("max-agents", 0, "agents that share each hit-ratio step (0: all alive)")
	var sel coordinator.Selection
	registerSelectionFlags(fs, &sel)
	fs.IntVar(&c.agents, "agents", prefixDefaultAgents, "in-process agents (without --coordinator)")
	fs.StringVar(&c.gpunodeConfig, "gpunode-config", "", "YAML `file` of engine profiles for the in-process gpunode (default: the built-in sim and vllm profiles)")
	fs.Float64Var(&c.startupScale, "sim-startup-scale", prefixStartupScale, "TEST HOOK (in-process sim only): scale the simulated startup durations so that the restarts are short; the report says so; 1 is realistic")
	fs.BoolVar(&c.noopReset, "sim-noop-reset", false, "TEST HOOK (in-process sim only): the simulator answers /reset_prefix_cache with 200 but resets nothing, so the run must fail its reset verification")
	fs.BoolVar(&c.quiet, "quiet", false, "do not print the report at the end")
	fs.Var(&c.progress, "progress", "compact progress on stderr (level i of n, elapsed, time left, errors): auto (when stderr is a terminal), on or off")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q: prefix takes only flags", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *profile != "sim" {
		// The short-run defaults are the simulator's; a real engine keeps its own.
		for name, clear := range map[string]func(){
			"gpu":                    func() { knobs.Gpu = "" },
			"enforce-eager":          func() { knobs.EnforceEager = pb.OptionalBool_OPTIONAL_BOOL_UNSPECIFIED },
			"model":                  func() { knobs.Model = "" },
			"gpu-memory-utilization": func() { *util = 0 },
		} {
			if !set[name] {
				clear()
			}
		}
	}
	if *mml < 0 || *mml > 1<<24 {
		return c, fmt.Errorf("--max-model-len %d is out of range: use 0 for the engine default, or a positive length", *mml)
	}
	if !(*util >= 0 && *util <= 1) {
		return c, fmt.Errorf("--gpu-memory-utilization %g is out of range: use a fraction in (0, 1], or 0 for the engine's own", *util)
	}
	knobs.MaxModelLen, knobs.GpuMemoryUtilization = int32(*mml), *util
	pl, err := parseNonNegList("prefix-lens", *lens)
	if err != nil {
		return c, err
	}
	hr, err := parseRatioList("hit-ratios", *ratios)
	if err != nil {
		return c, err
	}
	for name, v := range map[string]int{"--suffix-len": *suffix, "--hit-prefix-len": *hitPrefix, "--concurrency": *conc, "--repeats": *repeats, "--output-len": *outLen, "--max-agents": *maxAgents} {
		if v < 0 || v > 1<<24 {
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
	} else if set["agents"] || set["sim-startup-scale"] || set["gpunode-config"] || set["sim-noop-reset"] {
		return c, errors.New("--agents, --sim-startup-scale, --sim-noop-reset and --gpunode-config configure the in-process cluster: leave them out with --coordinator")
	}
	// The coordinator checks again and names the field; check here too, so
	// that a typo fails before a cluster starts.
	spec := coordinator.PrefixSpec{RunID: c.runID, Profile: *profile, Knobs: knobs, API: *api, PrefixLens: pl, SuffixLen: *suffix, HitRatios: hr,
		HitPrefixLen: *hitPrefix, Concurrency: *conc, Repeats: *repeats, OutputLen: *outLen, LevelDuration: *dur, Warmup: *warm, SkipOff: *skipOff,
		MaxAgents: *maxAgents, Selection: sel}
	c.req = spec.Request()
	if err := coordinator.ValidatePrefix(spec); err != nil {
		return c, prefixFlagNames().rename(err)
	}
	return c, nil
}

// prefixFlagNames maps PrefixSpec's fields (named as in RunPrefixRequest)
// to this command's flags.
func prefixFlagNames() flagNames {
	return withSelectionNames(flagNames{
		"prefix_lens": "--prefix-lens", "hit_ratios": "--hit-ratios", "hit_prefix_len": "--hit-prefix-len",
		"suffix_len": "--suffix-len", "output_len": "--output-len", "knobs.max_model_len": "--max-model-len",
		"repeats": "--repeats", "concurrency": "--concurrency", "level_duration_ms": "--step-duration",
		"warmup_ms": "--step-warmup", "api": "--api", "run_id": "--run-id", "max_agents": "--max-agents",
	})
}

// parseNonNegList reads "0,256,1024".
func parseNonNegList(flagName, s string) ([]int, error) {
	var out []int
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		n, err := strconv.ParseInt(part, 10, 32)
		if err != nil || n < 0 {
			return nil, fmt.Errorf("--%s: %q is not a whole number ≥ 0: write e.g. 0,256,1024,4096", flagName, part)
		}
		out = append(out, int(n))
	}
	if out == nil {
		out = []int{}
	}
	return out, nil
}

// parseRatioList reads "0,0.5,1".
func parseRatioList(flagName, s string) ([]float64, error) {
	var out []float64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		v, err := strconv.ParseFloat(part, 64)
		if err != nil || !(v >= 0 && v <= 1) {
			return nil, fmt.Errorf("--%s: %q is not a fraction in [0, 1]: write e.g. 0,0.25,0.5,0.75,1", flagName, part)
		}
		out = append(out, v)
	}
	return out, nil
}

// runPrefix runs `ttftlab prefix`: in-process on the embedded defaults, or on a
// running cluster with --coordinator.
func runPrefix(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	c, err := parsePrefix(args, stderr)
	if err != nil {
		return err
	}
	return c.run(ctx, gridRun{name: "prefix", report: results.PrefixReport, knobs: c.req.GetKnobs(), profile: c.req.GetProfile(), simArgs: func() []string {
		// The simulator reports cached_tokens only when asked, as vLLM does.
		a := []string{"--enable-prompt-tokens-details"}
		if c.noopReset {
			a = append(a, "--test-noop-prefix-reset")
		}
		return a
	}(),
		setOutDir: func(d string) { c.req.OutDir = d },
		start: func(ctx context.Context, cl pb.CoordinatorServiceClient) (func() (*pb.RunEvent, error), error) {
			st, err := cl.RunPrefix(ctx, c.req)
			if err != nil {
				return nil, err
			}
			return func() (*pb.RunEvent, error) { resp, err := st.Recv(); return resp.GetEvent(), err }, nil
		},
	}, stdout, stderr)
}

// describePrefixEvent renders a prefix event's progress line, or "" for
// other kinds.
func describePrefixEvent(ev *pb.RunEvent) string {
	switch ev.GetKind() {
	case results.EventPrefixReset:
		var c results.PrefixResetCheck
		if err := json.Unmarshal([]byte(ev.GetJson()), &c); err != nil {
			return ev.GetKind() + " (unreadable: " + err.Error() + ")"
		}
		if !c.Verified {
			return fmt.Sprintf("prefix-cache reset before %s NOT verified: %s", c.Before, c.Error)
		}
		f := func(p *float64) string {
			if p == nil {
				return "n/a"
			}
			return strconv.FormatFloat(*p, 'g', -1, 64)
		}
		return fmt.Sprintf("prefix-cache reset before %s verified (%s): probe hits %s cold, %s cached, %s after the reset", c.Before, c.Source, f(c.ColdHits), f(c.HotHits), f(c.AfterHits))
	case results.EventPrefixStep:
		var s results.PrefixStep
		if err := json.Unmarshal([]byte(ev.GetJson()), &s); err != nil {
			return ev.GetKind() + " (unreadable: " + err.Error() + ")"
		}
		hr := "n/a"
		if s.Hits != nil && s.Queries != nil && *s.Queries > 0 {
			hr = fmt.Sprintf("%.1f%%", *s.Hits / *s.Queries * 100)
		}
		what := fmt.Sprintf("prefix %d", s.PrefixLen)
		if s.HitRatio != nil {
			what = fmt.Sprintf("hit ratio %g, c=%d", *s.HitRatio, s.Concurrency)
		}
		return fmt.Sprintf("  caching %s, %s %s: hit rate from the metrics %s", s.Mode, what, s.Phase, hr)
	}
	return ""
}
