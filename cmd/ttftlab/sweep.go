package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"time"

	"github.com/ttftlab/ttftlab/agent"
	"github.com/ttftlab/ttftlab/coordinator"
	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"google.golang.org/protobuf/proto"
)

// sweepFlags configure a load sweep; `sweep` and `up` share them, under
// the same names as `load`'s flags for the same spec fields (--input-len,
// --seed, --goodput, ...). The flags bind straight into spec; request
// completes and validates it.
type sweepFlags struct {
	spec coordinator.SweepSpec
	// durationSet is whether the user gave the duration flag: a given
	// duration is pinned, the default one is a minimum that the coordinator
	// lengthens from the level before, up to the max duration.
	durationSet bool
	// outputLen is the output length of every request: max_tokens with
	// ignore_eos, and the generator's output length.
	outputLen int
	names     flagNames
	export    sweepExportFlags
}

// sweepFlagNames maps SweepSpec's fields to the sweep flags of `sweep` and
// `up`.
func sweepFlagNames() flagNames {
	return flagNames{
		"levels":               "--levels",
		"load":                 "--level-duration",
		"load.kind":            "--arrival",
		"load.burstiness":      "--burstiness",
		"load.duration_ms":     "--level-duration",
		"load.warmup_ms":       "--warmup",
		"load.requests":        "--requests",
		"load.seed":            "--seed",
		"load.slo_ttft_ms":     "--goodput",
		"load.slo_tpot_ms":     "--goodput",
		"load.slo_e2e_ms":      "--goodput",
		"load.max_error_rate":  "--max-error-rate",
		"load.error_window_ms": "--error-window",
		"generator.input_len":  "--input-len",
		"generator.output_len": "--output-len",
		"workload.max_tokens":  "--output-len",
		"agent_loss":           "--agent-loss",
		"max_agents":           "--max-agents",
		"max_duration":         "--level-max-duration",
	}
}

// register registers the sweep flags on fs. oldPrefix is the prefix the
// command's flags had before they took load's names ("levels" for
// `sweep`, "sweep" for `up`): the old names stay as deprecated aliases
// that print a notice to stderr.
func (f *sweepFlags) register(fs *flag.FlagSet, oldPrefix, defaultLevels string, stderr io.Writer) {
	lm := &pb.LoadModel{Kind: "closed", DurationMs: 5000, WarmupMs: 1000, Seed: 1, MaxErrorRate: 0.5, ErrorWindowMs: 5000}
	in := &pb.LengthDist{Kind: "fixed", Mean: 512}
	f.spec = coordinator.SweepSpec{API: "chat", AgentLoss: "continue", Load: lm, MaxDuration: coordinator.DefaultMaxLevelDuration,
		Workload:  &pb.Workload{IgnoreEos: true},
		Generator: &pb.WorkloadGen{Kind: "synthetic", InputLen: in}}
	f.outputLen = 128
	_ = levelsFlag{&f.spec.Levels}.Set(defaultLevels)
	fs.Var(levelsFlag{&f.spec.Levels}, "levels", "comma-separated load levels: concurrencies for --arrival closed, request rates for open loops (empty: no sweep)")
	fs.StringVar(&lm.Kind, "arrival", lm.Kind, "load model of every level: closed, poisson, constant or gamma")
	fs.Float64Var(&lm.Burstiness, "burstiness", 0, "gamma arrivals: shape of the gaps (1 is Poisson, below 1 burstier)")
	fs.Var(setFlag{msFlag{&lm.DurationMs}, &f.durationSet}, "level-duration",
		"measured duration of each level; when not given, each level after the first is lengthened to 3 × 1.5 × the E2E p50 of the level before and to about 20 successes, up to --level-max-duration (giving it pins every level)")
	fs.DurationVar(&f.spec.MaxDuration, "level-max-duration", f.spec.MaxDuration, "longest a level is lengthened to when --level-duration is not given")
	fs.Var(msFlag{&lm.WarmupMs}, "warmup", "warm-up before each level, left out of the statistics")
	fs.Int64Var(&lm.Requests, "requests", 0, "measured requests per level (0: bounded by duration only)")
	fs.Float64Var(&in.Mean, "input-len", in.Mean, "synthetic prompt length in tokens")
	fs.IntVar(&f.outputLen, "output-len", f.outputLen, "output length in tokens (max_tokens with ignore_eos)")
	fs.StringVar(&f.spec.AgentLoss, "agent-loss", f.spec.AgentLoss, "when an agent is lost mid-level: continue with the others, or abort")
	fs.IntVar(&f.spec.MaxAgents, "max-agents", 0, "agents that share each level (0: all alive)")
	fs.Uint64Var(&lm.Seed, "seed", lm.Seed, "seed of the generated prompts and arrivals")
	fs.Var(sloMsFlag{lm}, "goodput", "SLOs in ms for goodput per level, e.g. \"ttft:200 tpot:50 e2e:2000\"")
	fs.Var(errorRateFlag{&lm.MaxErrorRate}, "max-error-rate", "end a level, and the sweep, as failed when more than this fraction of an agent's attempts in one window failed (1 or off: never)")
	fs.Var(msFlag{&lm.ErrorWindowMs}, "error-window", "sliding window of the error budget")
	f.names = sweepFlagNames()
	f.export.register(fs)

	// The old names.
	p := oldPrefix + "-"
	if oldPrefix != "levels" {
		alias(fs, oldPrefix, "levels", true, stderr, "")
		alias(fs, p+"max-error-rate", "max-error-rate", true, stderr, "")
		alias(fs, p+"error-window", "error-window", true, stderr, "")
	}
	for old, canon := range map[string]string{"load": "arrival", "duration": "level-duration", "max-duration": "level-max-duration"} {
		alias(fs, p+old, canon, true, stderr, "")
	}
	for _, same := range []string{"burstiness", "warmup", "requests", "input-len", "output-len", "agent-loss", "max-agents", "seed", "goodput"} {
		alias(fs, p+same, same, true, stderr, "")
	}
	// vLLM bench serve's names.
	alias(fs, "num-prompts", "requests", false, stderr, "per level")
	alias(fs, "random-input-len", "input-len", false, stderr, "")
	alias(fs, "random-output-len", "output-len", false, stderr, "")
}

// setFlag wraps a flag.Value and remembers whether the flag was given.
type setFlag struct {
	flag.Value
	set *bool
}

// String guards the zero value that flag.PrintDefaults makes to find a
// flag's default: its embedded Value is nil.
func (s setFlag) String() string {
	if s.Value == nil {
		return ""
	}
	return s.Value.String()
}

func (s setFlag) Set(v string) error {
	if err := s.Value.Set(v); err != nil {
		return err
	}
	*s.set = true
	return nil
}

// sloMsFlag reads SLOs like --goodput into a load model's slo_*_ms fields.
type sloMsFlag struct{ lm *pb.LoadModel }

func (f sloMsFlag) String() string { return "" }

func (f sloMsFlag) Set(s string) error {
	slo, err := parseSLO(s)
	if err != nil {
		return err
	}
	f.lm.SloTtftMs, f.lm.SloTpotMs, f.lm.SloE2EMs = ms(slo.TTFT), ms(slo.TPOT), ms(slo.E2E)
	return nil
}

// request completes the spec, validates it (the coordinator's rules, its
// field names rewritten to flags) and returns it as the RunSweep request.
func (f *sweepFlags) request() (*pb.RunSweepRequest, error) {
	s := f.spec
	s.Load = proto.CloneOf(f.spec.Load)
	s.Workload = proto.CloneOf(f.spec.Workload)
	s.Generator = proto.CloneOf(f.spec.Generator)
	s.AutoDuration = !f.durationSet && s.Load.GetDurationMs() > 0
	s.Workload.MaxTokens = int32(min(max(f.outputLen, math.MinInt32), math.MaxInt32))
	s.Generator.Seed = s.Load.GetSeed()
	s.Generator.OutputLen = &pb.LengthDist{Kind: "fixed", Mean: float64(f.outputLen)}
	if err := s.Validate(); err != nil {
		return nil, f.names.rename(err)
	}
	return s.Request(), nil
}

// runSweep runs a load sweep on a running cluster.
func runSweep(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sweep", stderr)
	var cf coordinatorFlags
	cf.register(fs)
	var sf sweepFlags
	sf.register(fs, "levels", "1,8,32", stderr)
	sp := &sf.spec
	sp.Profile = "sim"
	fs.StringVar(&sp.BaseURL, "base-url", "", "load this OpenAI-compatible server as it is (default: restart the gpunode's engine)")
	fs.StringVar(&sp.Model, "model", "", "served model name (required with --base-url)")
	fs.StringVar(&sp.API, "api", sp.API, "chat or completions")
	fs.StringVar(&sp.Profile, "profile", sp.Profile, "gpunode engine profile when --base-url is not given")
	fs.StringVar(&sp.OutDir, "out", "", "subdirectory of the coordinator's --out for results/<run>/ (default: the coordinator's --out itself)")
	fs.StringVar(&sp.RunID, "run-id", "", "run directory name (default: timestamp)")
	registerSelectionFlags(fs, &sp.Selection)
	tf := registerClientFlags(fs)
	maps.Copy(sf.names, selectionFlagNames())
	maps.Copy(sf.names, flagNames{"target_ca_pem": "--ca-file", "target_insecure_skip_verify": "--insecure-skip-verify",
		"target_transport": "--http-transport", "target_first_token_clock": "--first-token-clock", "base_url": "--base-url", "model": "--model", "api": "--api", "profile": "--profile", "out_dir": "--out", "run_id": "--run-id"})
	quiet := fs.Bool("quiet", false, "do not print the report at the end")
	var progress progressMode
	fs.Var(&progress, "progress", "compact progress on stderr (level i of n, elapsed, time left, errors): auto (when stderr is a terminal), on or off")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: sweep takes only flags", fs.Arg(0))
	}
	var tt agent.Target
	if err := tf.apply(&tt); err != nil {
		return err
	}
	sp.TargetCAPEM, sp.TargetInsecureSkipVerify = tt.CAPEM, tt.InsecureSkipVerify
	sp.TargetTransport, sp.TargetFirstTokenClock = tt.Transport, tt.FirstTokenClock
	req, err := sf.request()
	if err != nil {
		return err
	}
	exp, err := sf.export.exporter(setFlags(fs))
	if err != nil {
		return err
	}
	client, closer, err := cf.dial(ctx)
	if err != nil {
		return err
	}
	defer closer.Close()
	dir, failure, err := streamSweep(ctx, client, req, withRunProgress(stderr, progress), exp)
	if err != nil {
		return err
	}
	if err := printReport(stdout, stderr, dir, "sweep.md", *quiet); err != nil {
		return err
	}
	return failure
}

// streamSweep runs a sweep and follows it. err is set when the sweep did
// not finish (the coordinator's error, results so far kept); failure when
// it finished but measured no success in some level, or a --save-result
// file (exp, nil without one) could not be written.
func streamSweep(ctx context.Context, client pb.CoordinatorServiceClient, req *pb.RunSweepRequest, stderr io.Writer, exp *sweepExport) (dir string, failure, err error) {
	st, err := client.RunSweep(ctx, req)
	if err != nil {
		return "", nil, fmt.Errorf("start sweep: %w", err)
	}
	var t runTally
	dir, err = followEvents(func() (*pb.RunEvent, error) {
		resp, err := st.Recv()
		exp.add(resp.GetEvent(), stderr)
		return resp.GetEvent(), err
	}, stderr, &t)
	if err != nil {
		return dir, nil, errors.Join(fmt.Errorf("sweep: %w", err), exp.err())
	}
	if f := t.sweepFailure(); f != "" {
		failure = fmt.Errorf("sweep failed: %s (results in %s)", f, dir)
	}
	return dir, errors.Join(failure, exp.err()), nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// streamBaseline runs a baseline and follows it; err and failure as in
// streamSweep.
func streamBaseline(ctx context.Context, client pb.CoordinatorServiceClient, req *pb.RunBaselineRequest, stderr io.Writer) (dir string, failure, err error) {
	st, err := client.RunBaseline(ctx, req)
	if err != nil {
		return "", nil, fmt.Errorf("start baseline: %w", err)
	}
	var t runTally
	dir, err = followEvents(func() (*pb.RunEvent, error) {
		resp, err := st.Recv()
		return resp.GetEvent(), err
	}, stderr, &t)
	if err != nil {
		return dir, nil, fmt.Errorf("baseline: %w", err)
	}
	if t.ok == 0 {
		failure = fmt.Errorf("baseline failed: no request succeeded (%d failed; results in %s)", t.failed, dir)
	}
	return dir, failure, nil
}

// runTally counts a run's measured requests from its progress events.
type runTally struct {
	ok, failed uint64
	// levels are a sweep's levels, by index, as level_start names them.
	levels map[int]*levelTally
}

type levelTally struct {
	value      float64
	ok, failed uint64
}

func (t *runTally) level(i int) *levelTally {
	if t.levels == nil {
		t.levels = map[int]*levelTally{}
	}
	l, ok := t.levels[i]
	if !ok {
		l = &levelTally{}
		t.levels[i] = l
	}
	return l
}

// add counts one measured interval report.
func (t *runTally) add(rep *pb.IntervalReport) {
	if rep.GetWarmup() {
		return
	}
	t.ok += rep.GetRequestsOk()
	t.failed += rep.GetRequestsFailed()
}

// sweepFailure names the first level that measured no success, or says
// that no level ran; "" when every level had one.
func (t *runTally) sweepFailure() string {
	if len(t.levels) == 0 {
		return "no level ran"
	}
	for _, i := range slices.Sorted(maps.Keys(t.levels)) {
		if l := t.levels[i]; l.ok == 0 {
			return fmt.Sprintf("level %d (%g) had no successful request (%d failed)", i+1, l.value, l.failed)
		}
	}
	return ""
}

// observe counts the requests an interval or sweep_interval event carries.
// An event that does not decode counts nothing.
func (t *runTally) observe(ev *pb.RunEvent) {
	p, err := results.Decode(results.Event{T: ev.GetUnixNano(), Kind: ev.GetKind(), Data: []byte(ev.GetJson())})
	if err != nil {
		return
	}
	switch p := p.(type) {
	case *pb.IntervalReport:
		t.add(p)
	case results.LevelStart:
		t.level(p.Level).value = p.Value
	case results.SweepInterval:
		l := t.level(p.Level)
		if p.Report.GetWarmup() {
			return
		}
		t.add(p.Report)
		l.ok += p.Report.GetRequestsOk()
		l.failed += p.Report.GetRequestsFailed()
	}
}
