package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/coordinator"
	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

// sweepFlags configure a load sweep; `sweep` and `up` share them.
type sweepFlags struct {
	levels     string
	load       string
	burstiness float64
	duration   time.Duration
	// durationSet is whether the user gave the duration flag: a given
	// duration is pinned, the default one is a minimum that the coordinator
	// lengthens from the level before, up to maxDuration.
	durationSet bool
	maxDuration time.Duration
	warmup      time.Duration
	requests    int64
	inputLen    int
	outputLen   int
	agentLoss   string
	maxAgents   int
	seed        uint64
	goodput     string
	// maxErrRate and errWindow are the error budget of each agent's share
	// of a level.
	maxErrRate string
	errWindow  time.Duration
	budgetFlag string // the budget flags' prefix, for errors
}

func (f *sweepFlags) register(fs *flag.FlagSet, prefix, defaultLevels string) {
	fs.StringVar(&f.levels, prefix, defaultLevels, "comma-separated load levels: concurrencies for --"+prefix+"-load closed, request rates for open loops (empty: no sweep)")
	fs.StringVar(&f.load, prefix+"-load", "closed", "load model of every level: closed, poisson, constant or gamma")
	fs.Float64Var(&f.burstiness, prefix+"-burstiness", 0, "gamma arrivals: shape of the gaps (1 is Poisson, below 1 burstier)")
	f.duration = 5 * time.Second
	fs.Var(setDuration{&f.duration, &f.durationSet}, prefix+"-duration",
		"measured duration of each level; when not given, each level after the first is lengthened to 3 × 1.5 × the E2E p50 of the level before and to about 20 successes, up to --"+prefix+"-max-duration (giving it pins every level)")
	fs.DurationVar(&f.maxDuration, prefix+"-max-duration", coordinator.DefaultMaxLevelDuration, "longest a level is lengthened to when --"+prefix+"-duration is not given")
	fs.DurationVar(&f.warmup, prefix+"-warmup", time.Second, "warm-up before each level, left out of the statistics")
	fs.Int64Var(&f.requests, prefix+"-requests", 0, "measured requests per level (0: bounded by duration only)")
	fs.IntVar(&f.inputLen, prefix+"-input-len", 512, "synthetic prompt length in tokens")
	fs.IntVar(&f.outputLen, prefix+"-output-len", 128, "output length in tokens (max_tokens with ignore_eos)")
	fs.StringVar(&f.agentLoss, prefix+"-agent-loss", "continue", "when an agent is lost mid-level: continue with the others, or abort")
	fs.IntVar(&f.maxAgents, prefix+"-max-agents", 0, "agents that share each level (0: all alive)")
	fs.Uint64Var(&f.seed, prefix+"-seed", 1, "seed of the generated prompts and arrivals")
	fs.StringVar(&f.goodput, prefix+"-goodput", "", "SLOs in ms for goodput per level, e.g. \"ttft:200 tpot:50 e2e:2000\"")
	// `sweep` names them --max-error-rate and --error-window, as `load`
	// does; `up` prefixes them like its other sweep flags.
	f.budgetFlag = prefix + "-"
	if prefix == "levels" {
		f.budgetFlag = ""
	}
	fs.StringVar(&f.maxErrRate, f.budgetFlag+"max-error-rate", "0.5", "end a level, and the sweep, as failed when more than this fraction of an agent's attempts in one window failed (1 or off: never)")
	fs.DurationVar(&f.errWindow, f.budgetFlag+"error-window", 5*time.Second, "sliding window of the error budget")
}

// setDuration is a duration flag that remembers whether it was given.
type setDuration struct {
	d   *time.Duration
	set *bool
}

func (s setDuration) String() string {
	if s.d == nil {
		return ""
	}
	return s.d.String()
}

func (s setDuration) Set(v string) error {
	d, err := time.ParseDuration(v)
	if err != nil {
		return fmt.Errorf("%q is not a duration: write it like 30s or 2m", v)
	}
	*s.d, *s.set = d, true
	return nil
}

// parseLevels reads "1,8,32".
func parseLevels(flagName, s string) ([]float64, error) {
	var out []float64
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		v, err := strconv.ParseFloat(part, 64)
		if err != nil || v <= 0 {
			return nil, fmt.Errorf("--%s: level %q is not a positive number: write levels like 1,8,32", flagName, part)
		}
		out = append(out, v)
	}
	return out, nil
}

// request builds the sweep request; prefix names the flags in errors.
func (f *sweepFlags) request(prefix string) (*pb.RunSweepRequest, error) {
	levels, err := parseLevels(prefix, f.levels)
	if err != nil {
		return nil, err
	}
	if f.duration <= 0 && f.requests <= 0 {
		return nil, fmt.Errorf("--%s-duration %s and --%s-requests %d leave each level unbounded: set one of them", prefix, f.duration, prefix, f.requests)
	}
	if f.inputLen < 1 || f.outputLen < 1 {
		return nil, fmt.Errorf("--%s-input-len %d / --%s-output-len %d: both must be ≥ 1", prefix, f.inputLen, prefix, f.outputLen)
	}
	auto := !f.durationSet && f.duration > 0
	if auto && f.maxDuration < f.duration {
		return nil, fmt.Errorf("--%s-max-duration %v is shorter than --%s-duration %v: raise the cap, or give --%s-duration to pin every level", prefix, f.maxDuration, prefix, f.duration, prefix)
	}
	if f.warmup < 0 {
		return nil, fmt.Errorf("--%s-warmup %s is negative: use 0 for no warm-up", prefix, f.warmup)
	}
	lm := &pb.LoadModel{Kind: f.load, DurationMs: f.duration.Milliseconds(), Requests: f.requests,
		WarmupMs: f.warmup.Milliseconds(), Burstiness: f.burstiness, Seed: f.seed}
	slo, err := parseSLO(f.goodput)
	if err != nil {
		return nil, fmt.Errorf("--%s-goodput: %w", prefix, err)
	}
	lm.SloTtftMs, lm.SloTpotMs, lm.SloE2EMs = ms(slo.TTFT), ms(slo.TPOT), ms(slo.E2E)
	if f.load == "gamma" && f.burstiness <= 0 {
		return nil, fmt.Errorf("--%s-load gamma needs --%s-burstiness > 0 (1 is Poisson)", prefix, prefix)
	}
	rate, err := parseMaxErrorRate(f.maxErrRate)
	if err != nil {
		return nil, fmt.Errorf("--%smax-error-rate: %w", f.budgetFlag, err)
	}
	if f.errWindow < 100*time.Millisecond || f.errWindow > time.Hour {
		return nil, fmt.Errorf("--%serror-window %v is invalid: give a window from 100ms to 1h, such as 5s", f.budgetFlag, f.errWindow)
	}
	lm.MaxErrorRate, lm.ErrorWindowMs = rate, f.errWindow.Milliseconds()
	return &pb.RunSweepRequest{
		Levels: levels, Load: lm, AgentLoss: f.agentLoss, MaxAgents: int32(f.maxAgents),
		AutoDuration: auto, MaxDurationMs: f.maxDuration.Milliseconds(),
		Workload: &pb.Workload{MaxTokens: int32(f.outputLen), IgnoreEos: true},
		Generator: &pb.WorkloadGen{Kind: "synthetic", Seed: f.seed,
			InputLen:  &pb.LengthDist{Kind: "fixed", Mean: float64(f.inputLen)},
			OutputLen: &pb.LengthDist{Kind: "fixed", Mean: float64(f.outputLen)}},
	}, nil
}

// runSweep runs a load sweep on a running cluster.
func runSweep(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("sweep", stderr)
	var cf coordinatorFlags
	cf.register(fs)
	var sf sweepFlags
	sf.register(fs, "levels", "1,8,32")
	baseURL := fs.String("base-url", "", "load this OpenAI-compatible server as it is (default: restart the gpunode's engine)")
	model := fs.String("model", "", "served model name (required with --base-url)")
	api := fs.String("api", "chat", "chat or completions")
	profile := fs.String("profile", "sim", "gpunode engine profile when --base-url is not given")
	out := fs.String("out", "", "subdirectory of the coordinator's --out for results/<run>/ (default: the coordinator's --out itself)")
	runID := fs.String("run-id", "", "run directory name (default: timestamp)")
	quiet := fs.Bool("quiet", false, "do not print the report at the end")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected argument %q: sweep takes only flags", fs.Arg(0))
	}
	req, err := sf.request("levels")
	if err != nil {
		return err
	}
	req.BaseUrl, req.Model, req.Api, req.Profile, req.OutDir, req.RunId = *baseURL, *model, *api, *profile, *out, *runID
	client, closer, err := cf.dial(ctx)
	if err != nil {
		return err
	}
	defer closer.Close()
	dir, failure, err := streamSweep(ctx, client, req, stderr)
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
// it finished but measured no success in some level.
func streamSweep(ctx context.Context, client pb.CoordinatorServiceClient, req *pb.RunSweepRequest, stderr io.Writer) (dir string, failure, err error) {
	st, err := client.RunSweep(ctx, req)
	if err != nil {
		return "", nil, fmt.Errorf("start sweep: %w", err)
	}
	var t runTally
	dir, err = followEvents(func() (*pb.RunEvent, error) {
		resp, err := st.Recv()
		return resp.GetEvent(), err
	}, stderr, &t)
	if err != nil {
		return dir, nil, fmt.Errorf("sweep: %w", err)
	}
	if f := t.sweepFailure(); f != "" {
		failure = fmt.Errorf("sweep failed: %s (results in %s)", f, dir)
	}
	return dir, failure, nil
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
