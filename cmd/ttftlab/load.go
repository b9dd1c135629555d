package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ttftlab/ttftlab/agent"
	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
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
  default --requests 100). Warm-up (--warmup D or --warmup-requests K) runs
  first and is left out of the statistics.
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

Error budget: the run ends as failed when more than --max-error-rate of the
attempts finished in any --error-window failed (at least 10 attempts). The
command exits non-zero when the run failed, was interrupted, or no request
succeeded. A closed-loop worker whose request fails before any response
(refused, reset, connect timeout) backs off from 10 ms up to 1 s.

Flags:
`

// metricSummary is one metric's digest in milliseconds.
type metricSummary struct {
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P95  float64 `json:"p95"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

// loadSummary is what `ttftlab load --json` prints: one object. A
// statistic with no samples is null.
type loadSummary struct {
	// Status is "ok", or "failed" when the error budget ended the run, it
	// was interrupted, or no request succeeded; Reason then says why.
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// Requests is the measured attempts sent: Successes + Errors +
	// Interrupted (docs/metrics.md).
	Requests         uint64            `json:"requests"`
	Successes        uint64            `json:"successes"`
	Errors           uint64            `json:"errors"`
	Interrupted      uint64            `json:"interrupted"`
	ErrorsByKind     map[string]uint64 `json:"errors_by_kind"`
	TTFT             *metricSummary    `json:"ttft_ms"`
	TTFTSched        *metricSummary    `json:"ttft_sched_ms"`
	ITL              *metricSummary    `json:"itl_ms"`
	ICL              *metricSummary    `json:"icl_ms"`
	TPOT             *metricSummary    `json:"tpot_ms"`
	E2E              *metricSummary    `json:"e2e_ms"`
	DispatchLag      *metricSummary    `json:"dispatch_lag_ms"`
	OutputTokens     uint64            `json:"output_tokens"`
	OutputTokensPerS *float64          `json:"output_tokens_per_s"`
	RequestsPerS     *float64          `json:"requests_per_s"`
	ClientBound      bool              `json:"client_bound"`
	// GoodRequests and GoodputPerS are present when --goodput gives SLOs.
	GoodRequests   *uint64  `json:"good_requests,omitempty"`
	GoodputPerS    *float64 `json:"goodput_requests_per_s,omitempty"`
	UsageSource    *string  `json:"usage_source"`
	DurationS      *float64 `json:"duration_s"`
	WarmupExcluded uint64   `json:"warmup_excluded"`
}

// runLoad runs `ttftlab load`.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("load", stderr)
	c := registerLoadFlags(fs)
	fs.Usage = func() {
		helpHeader(stderr, "load")
		fmt.Fprint(stderr, loadUsage)
		printFlags(stderr, fs)
	}
	if err := fs.Parse(args); err != nil {
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
	if spec.Target.APIKey == "" {
		spec.Target.APIKey = os.Getenv("OPENAI_API_KEY")
	}

	if spec.Target.Model == "" {
		c, err := oai.NewClient(oai.Config{MaxConns: 1, ConnectTimeout: spec.ConnectTimeout, Timeout: min(spec.Timeout, 30*time.Second)})
		if err != nil {
			return fmt.Errorf("load: %w", err)
		}
		ids, err := c.Models(ctx, spec.Target.BaseURL, spec.Target.APIKey)
		c.Close()
		if err != nil {
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

	cfg := agent.DefaultConfig()
	cfg.MaxConcurrency = max(cfg.MaxConcurrency, spec.Load.Concurrency, spec.Load.MaxInFlight)
	cfg.MaxErrorSamples = 5
	a := agent.New(cfg, nil)
	agg := newLoadAggregate()
	agg.sloSet = spec.Load.SLO.Set()
	progress := !c.asJSON
	start := time.Now()
	runErr := a.Run(ctx, spec, func(r agent.Report) error {
		if out != nil {
			if err := writeReportLine(out, r); err != nil {
				return fmt.Errorf("--out %s: %w", c.outPath, err)
			}
		}
		if err := agg.add(r); err != nil {
			fmt.Fprintf(stderr, "warning: %v\n", err)
		}
		if progress && !r.Warmup && !r.Final {
			fmt.Fprintf(stderr, "%6.1fs  ok %d  failed %d  in flight %d  scheduled %d%s\n", time.Since(start).Seconds(),
				agg.merge.OK, agg.merge.Failed, r.InFlight, r.Scheduled, map[bool]string{true: "  CLIENT-BOUND"}[r.ClientBound])
		}
		return nil
	})
	if runErr != nil && !errors.Is(runErr, context.Canceled) {
		return fmt.Errorf("load: %w", runErr)
	}
	sum := agg.summary()
	var failure error
	switch {
	case runErr != nil:
		failure = fmt.Errorf("load: interrupted; the summary covers what was measured: %w", runErr)
	case agg.abortReason() != "":
		failure = fmt.Errorf("load: run failed: %s", agg.abortReason())
	case agg.merge.OK == 0:
		failure = fmt.Errorf("load: no request succeeded: %d attempts, %d failed (%s)", sum.Requests, agg.merge.Failed, kindCounts(agg.merge.ErrorsByKind))
	}
	if failure != nil {
		sum.Status, sum.Reason = "failed", strings.TrimPrefix(failure.Error(), "load: ")
	}
	if out != nil {
		if err := writeJSONLine(out, map[string]any{"type": "summary", "summary": sum}); err != nil {
			return fmt.Errorf("load: --out %s: %w", c.outPath, err)
		}
	}
	if c.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(sum); err != nil {
			return fmt.Errorf("load: write result: %w", err)
		}
	} else {
		printLoadTable(stdout, sum, agg, spec)
	}
	return failure
}

// kindCounts renders error counts as "kind=n kind=n", most frequent first.
func kindCounts(errs map[string]uint64) string {
	if len(errs) == 0 {
		return "no errors recorded"
	}
	kinds := slices.SortedFunc(maps.Keys(errs), func(a, b string) int {
		if errs[a] != errs[b] {
			return cmp.Compare(errs[b], errs[a])
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%s=%d", k, errs[k])
	}
	return strings.Join(parts, " ")
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

// abortReason is why the error budget ended the run, or "".
func (g *loadAggregate) abortReason() string {
	if n := len(g.merge.Aborts); n > 0 {
		return g.merge.Aborts[n-1].Reason
	}
	return ""
}

func (g *loadAggregate) summary() loadSummary {
	m := g.merge
	set := m.Histograms()
	ms := func(name string) *metricSummary {
		h, ok := set[name]
		if !ok || h.Count() == 0 {
			return nil
		}
		s := h.Summarize()
		return &metricSummary{Mean: round3(s.Mean), P50: s.P50, P90: s.P90, P95: s.P95, P99: s.P99, Max: s.Max}
	}
	s := loadSummary{
		Status:   "ok",
		Requests: m.OK + m.Failed + m.Interrupted, Successes: m.OK, Errors: m.Failed, Interrupted: m.Interrupted, ErrorsByKind: m.ErrorsByKind,
		TTFT: ms(hdr.TTFT), TTFTSched: ms(hdr.TTFTSched), ITL: ms(hdr.ITL), ICL: ms(hdr.ICL),
		TPOT: ms(hdr.TPOT), E2E: ms(hdr.E2E), DispatchLag: ms(hdr.DispatchLag),
		OutputTokens: m.OutputTokens, ClientBound: m.ClientBound, WarmupExcluded: m.WarmupRequests,
	}
	if u := results.UsageName(m.Usage); u != "" {
		s.UsageSource = new(u)
	}
	// The agent's measured span; a run that finished no measured request
	// has none, and its rates are null.
	if start, end := m.MeasuredStartNs, m.MeasuredEndNs; start > 0 && end > start {
		d := float64(end-start) / 1e9
		s.DurationS = new(round3(d))
		s.RequestsPerS = new(round3(float64(m.OK) / d))
		s.OutputTokensPerS = new(round3(float64(m.OutputTokens) / d))
		if g.sloSet {
			s.GoodputPerS = new(round3(float64(m.Good) / d))
		}
	}
	if g.sloSet {
		s.GoodRequests = new(m.Good)
	}
	return s
}

// orNA formats *v, or "n/a" when v is nil.
func orNA[T any](v *T, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}

func round3(v float64) float64 {
	return float64(int64(v*1000+0.5)) / 1000
}

func printLoadTable(w io.Writer, s loadSummary, g *loadAggregate, spec agent.Spec) {
	m := spec.Load
	load := fmt.Sprintf("closed loop, concurrency %d", m.Concurrency)
	switch m.Kind {
	case agent.LoadRamp:
		load = fmt.Sprintf("ramp %g → %g req/s", m.StartRate, m.Rate)
	case agent.LoadGamma:
		load = fmt.Sprintf("gamma arrivals at %g req/s, burstiness %g", m.Rate, m.Burstiness)
	case agent.LoadPoisson, agent.LoadConstant:
		load = fmt.Sprintf("%s arrivals at %g req/s", m.Kind, m.Rate)
	}
	if m.MaxInFlight > 0 {
		load += fmt.Sprintf(", max %d in flight", m.MaxInFlight)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "============ ttftlab load ============")
	fmt.Fprintf(tw, "Target:\t%s (%s, %s)\n", spec.Target.BaseURL, spec.Target.Model, spec.Target.API)
	fmt.Fprintf(tw, "Load:\t%s\n", load)
	fmt.Fprintf(tw, "Status:\t%s\n", s.Status)
	if s.Reason != "" {
		fmt.Fprintf(tw, "Reason:\t%s\n", s.Reason)
	}
	fmt.Fprintf(tw, "Requests (measured):\t%d\n", s.Requests)
	fmt.Fprintf(tw, "Successes:\t%d\n", s.Successes)
	fmt.Fprintf(tw, "Errors:\t%d\n", s.Errors)
	fmt.Fprintf(tw, "Interrupted:\t%d\n", s.Interrupted)
	for _, k := range slices.Sorted(maps.Keys(s.ErrorsByKind)) {
		fmt.Fprintf(tw, "  %s:\t%d\n", k, s.ErrorsByKind[k])
	}
	fmt.Fprintf(tw, "Warm-up requests excluded:\t%d\n", s.WarmupExcluded)
	fmt.Fprintf(tw, "Duration (s):\t%s\n", orNA(s.DurationS, "%.3f"))
	fmt.Fprintf(tw, "Request throughput (req/s):\t%s\n", orNA(s.RequestsPerS, "%.3f"))
	if s.GoodRequests != nil {
		fmt.Fprintf(tw, "Goodput (req/s meeting %s):\t%s (%d good)\n", describeSLO(spec.Load.SLO), orNA(s.GoodputPerS, "%.3f"), *s.GoodRequests)
	}
	fmt.Fprintf(tw, "Output tokens:\t%d\n", s.OutputTokens)
	fmt.Fprintf(tw, "Output throughput (tok/s):\t%s\n", orNA(s.OutputTokensPerS, "%.3f"))
	fmt.Fprintf(tw, "Usage source:\t%s\n", orNA(s.UsageSource, "%s"))
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "metric (ms)\tcount\tmean\tp50\tp90\tp95\tp99\tmax\t")
	for _, row := range []struct {
		name string
		s    *metricSummary
		m    string
	}{{"ttft", s.TTFT, hdr.TTFT}, {"ttft_sched", s.TTFTSched, hdr.TTFTSched}, {"itl", s.ITL, hdr.ITL}, {"icl", s.ICL, hdr.ICL},
		{"tpot", s.TPOT, hdr.TPOT}, {"e2e", s.E2E, hdr.E2E}, {"dispatch_lag", s.DispatchLag, hdr.DispatchLag}} {
		if row.s == nil {
			fmt.Fprintf(tw, "%s\t0\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\t\n", row.name)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", row.name, g.merge.Histograms()[row.m].Count(),
			row.s.Mean, row.s.P50, row.s.P90, row.s.P95, row.s.P99, row.s.Max)
	}
	tw.Flush()
	if s.ClientBound {
		fmt.Fprintf(w, "\nWARNING: client-bound: the dispatch-lag p99 (%.2f ms) passed %v, so this client, not the server, delayed requests;\n"+
			"TTFT_sched includes that delay. Lower the load, raise --max-in-flight, or spread it over more agents.\n", s.DispatchLag.P99, m.ClientBoundP99)
	}
	for _, e := range g.samples {
		fmt.Fprintf(w, "error sample: %s\n", e)
	}
}

// writeReportLine appends one interval report as a JSON line and syncs it,
// so that nothing measured is lost if the process dies.
func writeReportLine(f *os.File, r agent.Report) error {
	return writeJSONLine(f, map[string]any{"type": "interval", "report": r})
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

func describeSLO(s agent.SLO) string {
	var parts []string
	for _, p := range []struct {
		name string
		d    time.Duration
	}{{"TTFT", s.TTFT}, {"TPOT", s.TPOT}, {"E2E", s.E2E}} {
		if p.d > 0 {
			parts = append(parts, fmt.Sprintf("%s ≤ %v", p.name, p.d))
		}
	}
	return strings.Join(parts, ", ")
}
