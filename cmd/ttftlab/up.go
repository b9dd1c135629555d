package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/coordinator"
	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

// upConfig is everything `ttftlab up` needs.
type upConfig struct {
	// out is up's results directory, or baseline's subdirectory of the
	// coordinator's.
	out    string
	agents int
	// baseline is the baseline run; the baseline flags bind into it.
	baseline coordinator.BaselineSpec
	simArgs  []string
	quiet    bool
	progress progressMode
	// gpunodeConfig is the in-process gpunode's profile file.
	gpunodeConfig string
	sweep         sweepFlags
	// sweepExport writes the sweep's --save-result files; nil without.
	sweepExport *sweepExport
	// gpunodes is how many in-process gpunodes to start; more than one runs
	// the fleet baseline.
	gpunodes int
	// httpAddr serves the live dashboard (--http).
	httpAddr string
}

// baselineFlagNames maps BaselineSpec's fields to the baseline flags.
func baselineFlagNames() flagNames {
	return flagNames{
		"profile": "--profile", "max_tokens": "--max-tokens", "warm_runs": "--warm-runs", "repeats": "--repeats",
		"api": "--api", "cold_mode": "--cold-mode", "run_id": "--run-id", "out_dir": "--out",
		"knobs.max_model_len": "--max-model-len", "knobs.max_num_seqs": "--max-num-seqs",
		"knobs.max_num_batched_tokens": "--max-num-batched-tokens", "knobs.gpu_memory_utilization": "--gpu-memory-utilization",
	}
}

// boolKnob is a flag that maps to an OptionalBool.
type boolKnob struct{ v *pb.OptionalBool }

func (b boolKnob) String() string {
	if b.v == nil {
		return ""
	}
	switch *b.v {
	case pb.OptionalBool_OPTIONAL_BOOL_TRUE:
		return "true"
	case pb.OptionalBool_OPTIONAL_BOOL_FALSE:
		return "false"
	}
	return ""
}

func (b boolKnob) Set(s string) error {
	switch strings.ToLower(s) {
	case "true", "1", "yes", "on":
		*b.v = pb.OptionalBool_OPTIONAL_BOOL_TRUE
	case "false", "0", "no", "off":
		*b.v = pb.OptionalBool_OPTIONAL_BOOL_FALSE
	default:
		return fmt.Errorf("%q is not a boolean: use true or false", s)
	}
	return nil
}

func (b boolKnob) IsBoolFlag() bool { return true }

// registerBaselineFlags registers the flags shared by `up` and `baseline`;
// finish validates them after parsing.
func registerBaselineFlags(fs *flag.FlagSet, c *upConfig, defaultOut, outHelp string) (finish func() error) {
	b := &c.baseline
	b.Knobs = &pb.EngineKnobs{EnforceEager: pb.OptionalBool_OPTIONAL_BOOL_TRUE}
	k := b.Knobs
	fs.StringVar(&c.out, "out", defaultOut, outHelp)
	fs.StringVar(&b.RunID, "run-id", "", "run directory name (default: timestamp)")
	fs.IntVar(&b.WarmRuns, "warm-runs", 5, "number of warm runs N (warm_1..warm_N)")
	fs.IntVar(&b.Repeats, "repeats", 1, "restarts R: the restart, cold_1 and warm runs are repeated R times for a distribution of cold figures")
	fs.StringVar(&b.Profile, "profile", "sim", "engine profile: sim (simulated vLLM) or vllm (a real `vllm serve` on the gpunode's host)")
	fs.StringVar(&b.API, "api", "chat", "OpenAI API to probe: chat or completions")
	fs.StringVar(&b.Prompt, "prompt", coordinator.DefaultPrompt, "probe prompt")
	fs.IntVar(&b.MaxTokens, "max-tokens", 64, "max_tokens of each probe")
	fs.BoolVar(&c.quiet, "quiet", false, "do not print the report at the end")
	fs.Var(&c.progress, "progress", "compact progress on stderr (level i of n, elapsed, time left, errors): auto (when stderr is a terminal), on or off")
	// Engine flags, typed and named as in vLLM.
	fs.StringVar(&k.Model, "model", "Qwen/Qwen2.5-1.5B-Instruct", "model to serve")
	fs.StringVar(&k.ServedModelName, "served-model-name", "", "name the engine serves the model as (default: --model)")
	fs.StringVar(&k.Gpu, "gpu", "h200", "simulated GPU (sim profile only): h200, h100-sxm, a100-80g, l40s, l4")
	fs.Var(int32Flag{&k.MaxModelLen}, "max-model-len", "engine --max-model-len (0: engine default)")
	fs.Float64Var(&k.GpuMemoryUtilization, "gpu-memory-utilization", 0, "engine --gpu-memory-utilization (0: engine default 0.9)")
	fs.Var(int32Flag{&k.MaxNumSeqs}, "max-num-seqs", "engine --max-num-seqs (0: engine default)")
	fs.Var(int32Flag{&k.MaxNumBatchedTokens}, "max-num-batched-tokens", "engine --max-num-batched-tokens (0: engine default)")
	fs.Var(boolKnob{&k.EnforceEager}, "enforce-eager", "engine --enforce-eager: true keeps a demo start short; false runs compile and CUDA-graph capture")
	fs.Var(boolKnob{&k.EnablePrefixCaching}, "enable-prefix-caching", "engine --enable-prefix-caching / --no-enable-prefix-caching")
	fs.StringVar(&b.ColdMode, "cold-mode", "warm-restart", "restart mode: warm-restart, cold-disk (evict the weights from the page cache) or cold-compile (fresh compile cache)")
	return func() error {
		if fs.NArg() > 0 {
			return fmt.Errorf("unexpected argument %q: %s takes only flags", fs.Arg(0), fs.Name())
		}
		if b.Profile != "sim" {
			// The short-demo defaults are the sim's; other profiles keep their own.
			set := setFlags(fs)
			if !set["gpu"] {
				k.Gpu = ""
			}
			if !set["enforce-eager"] {
				k.EnforceEager = pb.OptionalBool_OPTIONAL_BOOL_UNSPECIFIED
			}
		}
		// The out-dir rule is up's and the coordinator's own: check the rest.
		spec := *b
		spec.OutDir = ""
		return withSelectionNames(baselineFlagNames()).rename(spec.Validate())
	}
}

// baselineRequest is the RunBaseline request; out, for `baseline`, is the
// subdirectory asked of the coordinator.
func (c upConfig) baselineRequest() *pb.RunBaselineRequest {
	return c.baseline.Request()
}

func parseUp(args []string, stderr io.Writer) (upConfig, error) {
	fs := newFlagSet("up", stderr)
	var c upConfig
	finish := registerBaselineFlags(fs, &c, "results", "directory for results/<run>/")
	fs.IntVar(&c.agents, "agents", 2, "number of in-process agents that join the cluster")
	fs.StringVar(&c.gpunodeConfig, "gpunode-config", "", "YAML `file` of engine profiles for the in-process gpunode (default: the built-in sim and vllm profiles)")
	c.sweep.register(fs, "sweep", "1,8,32", stderr)
	fs.StringVar(&c.httpAddr, "http", "", "serve the live dashboard and past reports on this `host:port` while up runs, such as 127.0.0.1:8080 (empty: off); the URL it prints carries the cluster's token")
	fs.IntVar(&c.gpunodes, "gpunodes", 1, "number of in-process simulated gpunodes; `N` > 1 runs the baseline on each in turn (node 2 has a slow disk, node 3 an L40S) and writes fleet.md, with no sweep")
	var startupScale float64
	fs.Float64Var(&startupScale, "sim-startup-scale", 1, "TEST ONLY: scale the simulated engine's startup durations; the report says so")
	var slowdown float64
	fs.Float64Var(&slowdown, "sim-slowdown", 1, "make the simulated engine this factor slower (its --slowdown: 1.2 is 20% slower per step), to try `ttftlab compare` on two local runs")
	if err := parseFlags(fs, args); err != nil {
		return c, err
	}
	if err := finish(); err != nil {
		return c, err
	}
	if c.gpunodes < 1 || c.gpunodes > 16 {
		return c, fmt.Errorf("--gpunodes %d is out of range: use 1..16", c.gpunodes)
	}
	if c.gpunodes > 1 {
		set := setFlags(fs)
		if set["save-result"] {
			return c, fmt.Errorf("--save-result with --gpunodes %d: a fleet runs no sweep, so there is no level to save; leave it out, or use --gpunodes 1", c.gpunodes)
		}
		if set["levels"] && len(c.sweep.spec.Levels) > 0 {
			return c, fmt.Errorf("--levels %s with --gpunodes %d: a fleet compares the nodes' cold starts and runs no sweep; pass --levels \"\", or --gpunodes 1 for a sweep", levelsFlag{&c.sweep.spec.Levels}, c.gpunodes)
		}
		c.sweep.spec.Levels = nil
		c.baseline.Selection.All = true
		if !set["gpu"] {
			// Each simulated node keeps its own GPU (fleetSimNode).
			c.baseline.Knobs.Gpu = ""
		}
	}
	if len(c.sweep.spec.Levels) > 0 {
		c.sweep.spec.API = c.baseline.API
		if _, err := c.sweep.request(); err != nil {
			return c, err
		}
		// The sweep's directory is <run-id>-sweep: check it now, not after
		// the baseline.
		if n := len(c.baseline.RunID); n > 94 {
			return c, fmt.Errorf("--run-id is %d characters: with a sweep it may have at most 94 (the sweep adds \"-sweep\"), or pass --levels \"\"", n)
		}
	}
	if c.agents < 1 || c.agents > 64 {
		return c, fmt.Errorf("--agents %d is out of range: use 1..64", c.agents)
	}
	if startupScale <= 0 || startupScale > 10 {
		return c, fmt.Errorf("--sim-startup-scale %g is out of range: use a value in (0, 10]", startupScale)
	}
	if startupScale != 1 {
		c.simArgs = []string{"--startup-scale", fmt.Sprint(startupScale)}
	}
	if !(slowdown >= 0.1 && slowdown <= 100) {
		return c, fmt.Errorf("--sim-slowdown %g is out of range: give a factor from 0.1 to 100 (1 is the calibrated engine)", slowdown)
	}
	if slowdown != 1 {
		if c.baseline.Profile != "sim" {
			return c, fmt.Errorf("--sim-slowdown applies to the sim profile, not --profile %s: drop it", c.baseline.Profile)
		}
		c.simArgs = append(c.simArgs, "--slowdown", fmt.Sprint(slowdown))
	}
	if set := setFlags(fs); set["save-result"] && len(c.sweep.spec.Levels) == 0 && c.gpunodes == 1 {
		return c, fmt.Errorf("--save-result with --levels \"\": no sweep runs, so there is no level to save; give --levels or leave it out")
	}
	var err error
	if c.sweepExport, err = c.sweep.export.exporter(setFlags(fs)); err != nil {
		return c, err
	}
	return c, nil
}

func runUp(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cfg, err := parseUp(args, stderr)
	if err != nil {
		return err
	}
	logger := newLogger(io.Discard, false)
	if os.Getenv("TTFTLAB_DEBUG") != "" {
		logger = newLogger(stderr, true)
	}
	lc, err := startLocalCluster(ctx, localClusterConfig{out: cfg.out, agents: cfg.agents, gpunodeConfig: cfg.gpunodeConfig, simArgs: cfg.simArgs, gpunodes: cfg.gpunodes, logger: logger, httpAddr: cfg.httpAddr, stderr: stderr})
	if err != nil {
		return err
	}
	defer lc.Close()
	client := lc.client
	if cfg.gpunodes > 1 {
		fmt.Fprintf(stderr, "ttftlab up: coordinator %s, %d gpunodes, %d agent(s); profile %s, model %s; a fleet baseline, one node after another:\n",
			lc.addr, cfg.gpunodes, cfg.agents, cfg.baseline.Profile, cfg.baseline.Knobs.GetModel())
		for i := 1; i <= cfg.gpunodes; i++ {
			_, _, desc := fleetSimNode(i)
			fmt.Fprintf(stderr, "  gpunode-%d: %s\n", i, desc)
		}
		if err := waitForGPUNodes(ctx, client, cfg.gpunodes, 20*time.Second); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(stderr, "ttftlab up: coordinator %s, gpunode, %d agent(s); profile %s, model %s\n",
			lc.addr, cfg.agents, cfg.baseline.Profile, cfg.baseline.Knobs.GetModel())
	}
	dir, failure, err := streamBaseline(ctx, client, cfg.baselineRequest(), withRunProgress(stderr, cfg.progress))
	if err != nil {
		return err
	}
	report, wrote := results.BaselineReport, "events.jsonl,results.json,"+results.BaselineReport
	if cfg.gpunodes > 1 {
		report, wrote = results.FleetReport, "events.jsonl,"+results.FleetReport+","+results.FleetJSON+","+results.FleetNodesDir+"/*/"
	}
	md, err := os.ReadFile(filepath.Join(dir, report))
	if err != nil {
		return err
	}
	if !cfg.quiet {
		fmt.Fprintf(stdout, "%s\n", md)
	}
	fmt.Fprintf(stderr, "wrote %s/{%s}\n", dir, wrote)
	if failure != nil {
		return failure // a sweep of an engine that answered nothing would measure nothing
	}
	if len(cfg.sweep.spec.Levels) == 0 {
		return nil
	}

	// Then a load sweep across all agents, against the engine the baseline
	// left running.
	var baseline results.Results
	b, err := os.ReadFile(filepath.Join(dir, results.ResultsFile))
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &baseline); err != nil {
		return fmt.Errorf("read the baseline's engine from results.json: %w", err)
	}
	req, err := cfg.sweep.request()
	if err != nil {
		return err
	}
	// The engine still running is the last round's.
	req.BaseUrl, req.Model = baseline.Engine.BaseURL, baseline.Engine.ServedModelName
	if n := len(baseline.Rounds); n > 0 && baseline.Rounds[n-1].BaseURL != "" {
		req.BaseUrl, req.Model = baseline.Rounds[n-1].BaseURL, baseline.Rounds[n-1].ServedModelName
	}
	if cfg.baseline.RunID != "" {
		req.RunId = cfg.baseline.RunID + "-sweep"
	}
	sdir, failure, err := streamSweep(ctx, client, req, withRunProgress(stderr, cfg.progress), cfg.sweepExport)
	if err != nil {
		return err
	}
	smd, err := os.ReadFile(filepath.Join(sdir, "sweep.md"))
	if err != nil {
		return err
	}
	if !cfg.quiet {
		fmt.Fprintf(stdout, "%s\n", smd)
	}
	fmt.Fprintf(stderr, "wrote %s/{events.jsonl,results.json,sweep.md,report.html}\n", sdir)
	return failure
}

// waitForGPUNodes waits until the coordinator sees n gpunodes alive, so
// that a fleet baseline selects every node `up` started.
func waitForGPUNodes(ctx context.Context, client pb.CoordinatorServiceClient, n int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.ListMembers(ctx, &pb.ListMembersRequest{})
		if err != nil {
			return fmt.Errorf("list members: %w", err)
		}
		alive := 0
		for _, m := range resp.GetMembers() {
			if m.GetRole() == "gpunode" && m.GetState() == "alive" {
				alive++
			}
		}
		if alive >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("after %s the coordinator sees %d of the %d gpunodes started: the local cluster did not form; run with TTFTLAB_DEBUG=1 for its logs", timeout, alive, n)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// followEvents prints a run's progress until its stream ends, counts its
// measured requests into t, and returns the results directory named by the
// final "done" event.
func followEvents(recv func() (*pb.RunEvent, error), stderr io.Writer, t *runTally) (string, error) {
	start := time.Now()
	var dir string
	for {
		ev, err := recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return dir, err
		}
		if ev.GetKind() == "done" {
			dir = ev.GetMessage()
			continue
		}
		t.observe(ev)
		fmt.Fprintf(stderr, "[%6.2fs] %s\n", time.Since(start).Seconds(), describeEvent(ev))
		if p := runProgressOf(stderr); p != nil {
			p.observe(decodeAny(ev), time.Now(), t.failed)
		}
	}
	if dir == "" {
		return "", errors.New("the run ended without naming its results directory")
	}
	return dir, nil
}

// describeEvent renders one progress line.
func describeEvent(ev *pb.RunEvent) string {
	rev := results.Event{T: ev.GetUnixNano(), Kind: ev.GetKind(), Data: []byte(ev.GetJson())}
	p, err := results.Decode(rev)
	if errors.Is(err, results.ErrUnknownKind) {
		if fp, ferr := results.DecodeFleet(rev); !errors.Is(ferr, results.ErrUnknownKind) {
			p, err = fp, ferr
		}
	}
	if errors.Is(err, results.ErrUnknownKind) {
		if s := describePrefixEvent(ev); s != "" {
			return s
		}
		if s := describeGridEvent(ev); s != "" {
			return s
		}
		return ev.GetKind() + " " + ev.GetJson()
	}
	if err != nil {
		return ev.GetKind() + " (unreadable: " + err.Error() + ")"
	}
	switch p := p.(type) {
	case results.RunStart:
		return fmt.Sprintf("run %s: profile %s, %d warm runs, %s API", p.RunID, p.Profile, p.WarmRuns, p.API)
	case results.Members:
		return fmt.Sprintf("cluster: %d members", len(p))
	case *pb.InfoResponse:
		if !p.GetNvmlAvailable() {
			return fmt.Sprintf("gpunode %s: %s", p.GetHostname(), p.GetNvmlError())
		}
		return fmt.Sprintf("gpunode %s: NVML driver %s", p.GetHostname(), p.GetDriverVersion())
	case results.Round:
		return fmt.Sprintf("restart round %d", p.Round)
	case results.FleetStart:
		return fmt.Sprintf("fleet baseline %s: gpunodes %s, %s", p.RunID, strings.Join(p.GPUNodes, ", "), p.Order)
	case results.FleetNode:
		if p.Status == "" {
			return "=== gpunode " + p.Node + " ==="
		}
		if p.Error != "" {
			return fmt.Sprintf("gpunode %s: %s: %s", p.Node, p.Status, p.Error)
		}
		return fmt.Sprintf("gpunode %s: %s", p.Node, p.Status)
	case results.Queued:
		if p.Behind == "" {
			return fmt.Sprintf("queued: position %d", p.Position)
		}
		return fmt.Sprintf("queued: position %d behind run %s", p.Position, p.Behind)
	case results.Lease:
		gpus := "none leased"
		if len(p.GPUNodes) > 0 {
			gpus = strings.Join(p.GPUNodes, ", ")
		}
		return fmt.Sprintf("lease: gpunode %s; agents %s", gpus, strings.Join(p.Agents, ", "))
	case results.Warning:
		return "WARNING: " + p.Message
	case results.Mark:
		return "— " + p.Name
	case *pb.EngineInfo:
		return fmt.Sprintf("engine %s ready in %.2f s at %s", p.GetKind(), p.GetReadyS(), p.GetBaseUrl())
	case *pb.IntervalReport:
		var parts []string
		for _, r := range p.GetRequests() {
			if r.GetError() != "" {
				parts = append(parts, fmt.Sprintf("%s failed: %s", r.GetLabel(), r.GetError()))
				continue
			}
			parts = append(parts, fmt.Sprintf("%s ttft %.1f ms", r.GetLabel(), r.GetTtftS()*1000))
		}
		return fmt.Sprintf("%s: %d ok, %d failed %s", p.GetAgentId(), p.GetRequestsOk(), p.GetRequestsFailed(), strings.Join(parts, ", "))
	case results.SweepStart:
		return fmt.Sprintf("sweep of %s at %s: levels %v", p.Model, p.BaseURL, p.Levels)
	case results.LevelStart:
		return fmt.Sprintf("level %d (%g) on %d agent(s)", p.Level+1, p.Value, len(p.Agents))
	case results.SweepInterval:
		rep := p.Report
		tag := ""
		if rep.GetWarmup() {
			tag = " (warm-up)"
		}
		if rep.GetClientBound() {
			tag += " CLIENT-BOUND"
		}
		return fmt.Sprintf("  %s #%d: %d ok, %d failed, %d in flight%s", rep.GetAgentId(), rep.GetSeq(), rep.GetRequestsOk(), rep.GetRequestsFailed(), rep.GetInFlight(), tag)
	case results.AgentLost:
		return fmt.Sprintf("AGENT LOST: %s after %d intervals: %s", p.Agent, p.Intervals, p.Error)
	case results.LevelEnd:
		return fmt.Sprintf("level %d done", p.Level+1)
	case results.EngineExit:
		return fmt.Sprintf("ENGINE EXITED on gpunode %s: exit code %d%s after %.1f s up", p.GPUNode, p.Exit.GetExitCode(),
			map[bool]string{true: ", " + p.Exit.GetSignal()}[p.Exit.GetSignal() != ""], float64(p.Exit.GetUptimeMs())/1000)
	case results.GPUNodeLost:
		return fmt.Sprintf("GPUNODE LOST: %s: %s", p.GPUNode, p.Error)
	case results.TargetVersion:
		return "target version " + orUnknown(p.Version)
	case results.RunEnd:
		if p.Error != "" {
			return "run failed: " + p.Error
		}
		return "run " + p.Status
	}
	return ev.GetKind() + " " + ev.GetJson()
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}
