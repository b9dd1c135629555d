package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/agent"
	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/oai"
)

const loadUsage = `
It prints a summary: request and token throughput, and mean, p50, p90,
p95, p99 and max of TTFT, TTFT_sched, ITL, ICL, TPOT, E2E and dispatch lag
(see docs/metrics.md).

Load model (one of):
  --concurrency N             closed loop: N requests always in flight (default 1)
  --rate R                    open loop: R requests/s, Poisson arrivals by default;
                              --arrival constant for even spacing, --burstiness B
                              for gamma gaps (shape B; 1 is Poisson, <1 burstier),
                              --ramp-from R0 to ramp linearly from R0 to R over
                              --duration; --max-in-flight caps requests in flight
                              (the wait then shows as dispatch lag)
Bounds: --requests K and/or --duration D (the first reached ends the run;
  default --requests 100). Warm-up (--warmup W or --warmup-requests K) runs
  first and is left out of the statistics. --duration bounds the whole
  command's wall time, warm-up and drain included (the measured schedule is
  D minus W): requests still in flight at D are cancelled and counted as
  interrupted, and the run is marked cut_at_deadline (status stays ok).
Prompts (one of): --prompt P (default), --input-len N (synthetic prompts of
  N tokens; --input-len-dist uniform|normal with --input-len-min/-max or
  --input-len-stddev), --prefix-len N --num-prefixes K (shared prefixes),
  --dataset FILE [--dataset-format jsonl|sharegpt].
  --output-len N (same distribution flags) sets max_tokens per request and
  ignore_eos; otherwise --max-tokens.
"requests" counts the measured attempts sent: successes + errors +
interrupted (in flight when the run was stopped); warm-up is excluded.
Throughputs count successful requests over the measured span. A statistic
with no samples is n/a (null in --json).

Progress (done of total, rate, time left, errors) goes to stderr each
--interval when stderr is a terminal, with or without --json; --progress
forces it on (for a log file), --progress=off off.

Error budget: the run ends as failed when more than --max-error-rate of the
attempts finished in any --error-window failed (at least 10 attempts). The
command exits non-zero when the run failed, was interrupted, or no request
succeeded. A closed-loop worker whose request fails before any response
(refused, reset, connect timeout) backs off from 10 ms up to 1 s.

Flags:
`

// runLoad runs `ttftlab load`.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("load", stderr)
	c := registerLoadFlags(fs)
	fs.Usage = func() {
		helpHeader(stderr, "load")
		fmt.Fprint(stderr, loadUsage)
		printFlags(stderr, fs)
	}
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return fmt.Errorf("load: %w (see ttftlab load -h)", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("load: unexpected argument %q: pass options as flags, for example --url http://127.0.0.1:8000", fs.Arg(0))
	}
	spec, err := c.build(fs)
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	// --duration bounds the whole command from here: model lookup,
	// warm-up, the measured schedule and the drain.
	ctx, stopBound, bound := wallBound(ctx, c.wall)
	defer stopBound()
	if spec.Target.APIKey == "" {
		spec.Target.APIKey = os.Getenv("OPENAI_API_KEY")
	}

	if spec.Target.Model == "" {
		c, err := oai.NewClient(oai.Config{MaxConns: 1, ConnectTimeout: spec.ConnectTimeout, Timeout: min(spec.Timeout, 30*time.Second), TLS: c.tls})
		if err != nil {
			return fmt.Errorf("load: %w", err)
		}
		ids, err := c.Models(ctx, spec.Target.BaseURL, spec.Target.APIKey)
		c.Close()
		if err != nil {
			if cutAtBound(ctx) {
				return fmt.Errorf("load: --duration %v ran out while listing the models: pass --model or a longer --duration", bound)
			}
			return fmt.Errorf("load: --model not given and the model list is unavailable: %w", err)
		}
		if len(ids) != 1 {
			return fmt.Errorf("load: --model not given and the server lists %d models (%s): pass --model", len(ids), strings.Join(ids, ", "))
		}
		spec.Target.Model = ids[0]
	}

	var out *os.File
	if c.outPath != "" {
		out, err = os.OpenFile(c.outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("load: --out: %w", err)
		}
		defer out.Close()
	}

	exp, err := newLoadExport(c, time.Now())
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	defer exp.Close()
	if exp.wantsRecords() {
		spec.Records, spec.RecordMarks = true, true
	}

	cfg := agent.DefaultConfig()
	cfg.MaxConcurrency = max(cfg.MaxConcurrency, spec.Load.Concurrency, spec.Load.MaxInFlight)
	cfg.MaxErrorSamples = 5
	a := agent.New(cfg, nil)
	agg := newLoadAggregate()
	agg.sloSet = spec.Load.SLO.Set()
	progress := c.progress.enabled(stderr)
	start := time.Now()
	runErr := a.Run(ctx, spec, func(r agent.Report) error {
		if out != nil {
			if err := writeReportLine(out, r); err != nil {
				return fmt.Errorf("--out %s: %w", c.outPath, err)
			}
		}
		if err := exp.add(r); err != nil {
			return err
		}
		if err := agg.add(r); err != nil {
			fmt.Fprintf(stderr, "warning: %v\n", err)
		}
		if progress && !r.Warmup && !r.Final {
			fmt.Fprintf(stderr, "%s%s\n", progressLine(time.Since(start), agg.merge.OK+agg.merge.Failed, agg.merge.Failed, spec.Load.Requests, bound, r.InFlight),
				map[bool]string{true: "  CLIENT-BOUND"}[r.ClientBound])
		}
		return nil
	})
	cut := runErr != nil && cutAtBound(ctx)
	if cut {
		runErr = nil
	}
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return fmt.Errorf("load: %w", runErr)
	}
	var interrupted error
	if runErr != nil {
		interrupted = runErr
	}
	sum := results.SummarizeLoad(agg.merge, agg.sloSet, interrupted)
	sum.Transport, sum.FirstTokenClock = spec.Target.EffectiveClient()
	if cut {
		sum.CutAtDeadline = true
		if sum.Status == "ok" {
			sum.Note = fmt.Sprintf("cut at --duration %v: %d requests still in flight were interrupted (left out of the statistics)", bound, sum.Interrupted)
		}
	}
	var failure error
	switch {
	case runErr != nil:
		failure = fmt.Errorf("load: %s: %w", sum.Reason, runErr)
	case sum.Status != "ok":
		failure = fmt.Errorf("load: %s", sum.Reason)
	}
	if out != nil {
		if err := writeJSONLine(out, map[string]any{"type": "summary", "summary": sum}); err != nil {
			return fmt.Errorf("load: --out %s: %w", c.outPath, err)
		}
	}
	if c.saveResult != "" {
		var good *uint64
		if agg.sloSet {
			good = sum.GoodRequests
		}
		if err := exp.writeResult(c.saveResult, spec, sum, good, start); err != nil {
			return fmt.Errorf("load: %w", err)
		}
	}
	if exp.wantsRecords() {
		fmt.Fprintf(stderr, "prompt lengths: %s\n", exp.promptLenSource())
	}
	report := results.LoadJSON(sum)
	if !c.asJSON {
		report = results.LoadTable(sum, results.LoadRun{
			BaseURL: spec.Target.BaseURL, Model: spec.Target.Model, API: spec.Target.API,
			Load: spec.Load.Describe(), SLO: spec.Load.SLO.String(), ClientBoundP99: spec.Load.ClientBoundP99, ErrorSamples: agg.samples,
		})
	}
	if err := report(stdout); err != nil {
		return fmt.Errorf("load: write result: %w", err)
	}
	return failure
}

// loadAggregate merges the reports of a run through the one merger
// (results.Merger), which leaves warm-up out and validates every report's
// histograms before merging them.
type loadAggregate struct {
	merge   *results.Merger
	sloSet  bool
	samples []string
}

func newLoadAggregate() *loadAggregate {
	return &loadAggregate{merge: results.NewMerger()}
}

// mergeInput is the part of a local report the merger reads.
func mergeInput(r agent.Report) *pb.IntervalReport {
	ns := func(t time.Time) int64 {
		if t.IsZero() {
			return 0
		}
		return t.UnixNano()
	}
	rep := &pb.IntervalReport{
		RunId: r.RunID, AgentId: r.AgentID, Seq: r.Seq, StartUnixNano: ns(r.Start), EndUnixNano: ns(r.End),
		RequestsOk: r.OK, RequestsFailed: r.Failed, RequestsInterrupted: r.Interrupted, RequestsGood: r.Good,
		OutputTokens: r.OutputTokens, ErrorsByKind: r.ErrorsByKind, Final: r.Final, ClientBound: r.ClientBound,
		Warmup: r.Warmup, AbortReason: r.AbortReason, Usage: results.ParseUsage(r.UsageSource),
		MeasuredStartUnixNano: ns(r.MeasuredStart), MeasuredEndUnixNano: ns(r.MeasuredEnd),
	}
	for _, h := range r.Histograms {
		rep.Histograms = append(rep.Histograms, &pb.EncodedHistogram{Metric: h.Metric, V2: h.V2})
	}
	return rep
}

// add merges one report; the error, for a report whose histograms were
// refused, is a warning: the run goes on.
func (g *loadAggregate) add(r agent.Report) error {
	if !r.Warmup {
		g.samples = append(g.samples, r.ErrorSamples...)
	}
	if added, err := g.merge.Add(mergeInput(r)); added == results.Refused {
		return errors.New(results.BadHistogramsWarning(err))
	}
	return nil
}

// writeReportLine appends one interval report as a JSON line (snake_case,
// histograms decoded; see intervalJSON) and syncs it, so that nothing
// measured is lost if the process dies.
func writeReportLine(f *os.File, r agent.Report) error {
	line, err := intervalLine(r)
	if err != nil {
		return err
	}
	return writeJSONLine(f, map[string]any{"type": "interval", "report": line})
}

func writeJSONLine(f *os.File, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		return err
	}
	return f.Sync()
}

// errWallBound is the cause of a context ended by --duration.
var errWallBound = errors.New("--duration reached")

// wallBound bounds ctx to d from now when d > 0 (--duration is a
// wall-clock bound on the whole command); it returns the context, its
// cancel function and d.
func wallBound(ctx context.Context, d time.Duration) (context.Context, context.CancelFunc, time.Duration) {
	if d <= 0 {
		ctx, cancel := context.WithCancel(ctx)
		return ctx, cancel, 0
	}
	ctx, cancel := context.WithDeadlineCause(ctx, time.Now().Add(d), errWallBound)
	return ctx, cancel, d
}

// cutAtBound says whether ctx ended because its --duration ran out, not
// because of Ctrl-C or its parent.
func cutAtBound(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errWallBound)
}
