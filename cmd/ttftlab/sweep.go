package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

// sweepFlags configure a load sweep; `sweep` and `up` share them.
type sweepFlags struct {
	levels     string
	load       string
	burstiness float64
	duration   time.Duration
	warmup     time.Duration
	requests   int64
	inputLen   int
	outputLen  int
	agentLoss  string
	maxAgents  int
	seed       uint64
	goodput    string
}

func (f *sweepFlags) register(fs *flag.FlagSet, prefix, defaultLevels string) {
	fs.StringVar(&f.levels, prefix, defaultLevels, "comma-separated load levels: concurrencies for --"+prefix+"-load closed, request rates for open loops (empty: no sweep)")
	fs.StringVar(&f.load, prefix+"-load", "closed", "load model of every level: closed, poisson, constant or gamma")
	fs.Float64Var(&f.burstiness, prefix+"-burstiness", 0, "gamma arrivals: shape of the gaps (1 is Poisson, below 1 burstier)")
	fs.DurationVar(&f.duration, prefix+"-duration", 5*time.Second, "measured duration of each level")
	fs.DurationVar(&f.warmup, prefix+"-warmup", time.Second, "warm-up before each level, left out of the statistics")
	fs.Int64Var(&f.requests, prefix+"-requests", 0, "measured requests per level (0: bounded by duration only)")
	fs.IntVar(&f.inputLen, prefix+"-input-len", 512, "synthetic prompt length in tokens")
	fs.IntVar(&f.outputLen, prefix+"-output-len", 128, "output length in tokens (max_tokens with ignore_eos)")
	fs.StringVar(&f.agentLoss, prefix+"-agent-loss", "continue", "when an agent is lost mid-level: continue with the others, or abort")
	fs.IntVar(&f.maxAgents, prefix+"-max-agents", 0, "agents that share each level (0: all alive)")
	fs.Uint64Var(&f.seed, prefix+"-seed", 1, "seed of the generated prompts and arrivals")
	fs.StringVar(&f.goodput, prefix+"-goodput", "", "SLOs in ms for goodput per level, e.g. \"ttft:200 tpot:50 e2e:2000\"")
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
	if f.warmup < 0 {
		return nil, fmt.Errorf("--%s-warmup %s is negative: use 0 for no warm-up", prefix, f.warmup)
	}
	lm := &pb.LoadModel{Kind: f.load, DurationMs: f.duration.Milliseconds(), Requests: f.requests,
		WarmupMs: f.warmup.Milliseconds(), Burstiness: f.burstiness, Seed: f.seed}
	slo, err := parseSLO(prefix+"-goodput", f.goodput)
	if err != nil {
		return nil, err
	}
	lm.SloTtftMs, lm.SloTpotMs, lm.SloE2EMs = ms(slo.TTFT), ms(slo.TPOT), ms(slo.E2E)
	if f.load == "gamma" && f.burstiness <= 0 {
		return nil, fmt.Errorf("--%s-load gamma needs --%s-burstiness > 0 (1 is Poisson)", prefix, prefix)
	}
	return &pb.RunSweepRequest{
		Levels: levels, Load: lm, AgentLoss: f.agentLoss, MaxAgents: int32(f.maxAgents),
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
	dir, err := streamSweep(ctx, client, req, stderr)
	if err != nil {
		return err
	}
	return printReport(stdout, stderr, dir, "sweep.md", *quiet)
}

func streamSweep(ctx context.Context, client pb.CoordinatorServiceClient, req *pb.RunSweepRequest, stderr io.Writer) (string, error) {
	st, err := client.RunSweep(ctx, req)
	if err != nil {
		return "", fmt.Errorf("start sweep: %w", err)
	}
	dir, err := followEvents(func() (*pb.RunEvent, error) {
		resp, err := st.Recv()
		return resp.GetEvent(), err
	}, stderr)
	if err != nil {
		return dir, fmt.Errorf("sweep: %w", err)
	}
	return dir, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func streamBaseline(ctx context.Context, client pb.CoordinatorServiceClient, req *pb.RunBaselineRequest, stderr io.Writer) (string, error) {
	st, err := client.RunBaseline(ctx, req)
	if err != nil {
		return "", fmt.Errorf("start baseline: %w", err)
	}
	dir, err := followEvents(func() (*pb.RunEvent, error) {
		resp, err := st.Recv()
		return resp.GetEvent(), err
	}, stderr)
	if err != nil {
		return dir, fmt.Errorf("baseline: %w", err)
	}
	return dir, nil
}
