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
	"math"
	"net/url"
	"os"
	"slices"
	"strconv"
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

// maxLoadConcurrency caps --concurrency and --max-in-flight: each is a
// goroutine and a connection (a file descriptor) of this process.
const maxLoadConcurrency = 100_000

// headerFlags collects repeated --header KEY:VALUE flags.
type headerFlags map[string]string

func (h headerFlags) String() string { return fmt.Sprint(map[string]string(h)) }

func (h headerFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, ":")
	k = strings.TrimSpace(k)
	if !ok || k == "" {
		return fmt.Errorf("%q is not KEY:VALUE: write for example --header 'X-Tenant: a'", s)
	}
	h[k] = strings.TrimSpace(v)
	return nil
}

// distFlags are one length's distribution flags.
type distFlags struct {
	name               string
	n                  int
	kind               string
	lo, hi, stddev     float64
	nSet, anyOtherFlag bool
}

func (d *distFlags) register(fs *flag.FlagSet, name, what string) {
	d.name = name
	fs.IntVar(&d.n, name, 0, what+" in tokens (the mean for --"+name+"-dist normal)")
	fs.StringVar(&d.kind, name+"-dist", agent.DistFixed, "distribution of --"+name+": fixed, uniform or normal")
	fs.Float64Var(&d.lo, name+"-min", 0, "smallest --"+name+" for --"+name+"-dist uniform")
	fs.Float64Var(&d.hi, name+"-max", 0, "largest --"+name+" for --"+name+"-dist uniform")
	fs.Float64Var(&d.stddev, name+"-stddev", 0, "standard deviation for --"+name+"-dist normal")
}

// dist returns the distribution, or a zero one when no flag of it was set.
func (d *distFlags) dist(set map[string]bool) (agent.LengthDist, error) {
	n := d.name
	d.nSet = set[n]
	d.anyOtherFlag = set[n+"-dist"] || set[n+"-min"] || set[n+"-max"] || set[n+"-stddev"]
	if !d.nSet && !d.anyOtherFlag {
		return agent.LengthDist{}, nil
	}
	switch d.kind {
	case agent.DistFixed:
		if !d.nSet || d.n < 1 {
			return agent.LengthDist{}, fmt.Errorf("--%s %d is invalid: set --%s N with N ≥ 1", n, d.n, n)
		}
		if set[n+"-min"] || set[n+"-max"] || set[n+"-stddev"] {
			return agent.LengthDist{}, fmt.Errorf("--%s-min, -max and -stddev need --%s-dist uniform or normal", n, n)
		}
		return agent.Fixed(d.n), nil
	case agent.DistUniform:
		if !set[n+"-min"] || !set[n+"-max"] || d.lo < 1 || d.hi < d.lo {
			return agent.LengthDist{}, fmt.Errorf("--%s-dist uniform needs --%s-min and --%s-max with 1 ≤ min ≤ max", n, n, n)
		}
		return agent.LengthDist{Kind: agent.DistUniform, Min: d.lo, Max: d.hi, Mean: (d.lo + d.hi) / 2}, nil
	case agent.DistNormal:
		if !d.nSet || d.n < 1 || d.stddev < 0 {
			return agent.LengthDist{}, fmt.Errorf("--%s-dist normal needs --%s N (the mean, ≥ 1) and --%s-stddev S (≥ 0)", n, n, n)
		}
		return agent.LengthDist{Kind: agent.DistNormal, Mean: float64(d.n), Stddev: d.stddev}, nil
	}
	return agent.LengthDist{}, fmt.Errorf("--%s-dist %q is unknown: use fixed, uniform or normal", n, d.kind)
}

// runLoad runs `ttftlab load`.
func runLoad(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("load", stderr)
	var (
		base        = fs.String("url", "", "server base URL, for example http://127.0.0.1:8000 (a trailing /v1 is fine)")
		model       = fs.String("model", "", "model name; may be left out when /v1/models lists exactly one")
		api         = fs.String("api", oai.APIChat, "API: chat or completions")
		concurrency = fs.Int("concurrency", 0, "closed loop: requests kept in flight (default 1 when --rate is not given)")
		rate        = fs.Float64("rate", 0, "open loop: requests per second")
		arrival     = fs.String("arrival", agent.LoadPoisson, "open-loop arrivals: poisson, constant or gamma (gamma needs --burstiness)")
		burstiness  = fs.Float64("burstiness", 0, "gamma shape of the gaps between arrivals: 1 is Poisson, below 1 burstier")
		rampFrom    = fs.Float64("ramp-from", 0, "ramp the rate linearly from this rate to --rate over --duration")
		maxInFlight = fs.Int("max-in-flight", 0, "open loop: cap on requests in flight (0: none)")
		requests    = fs.Int64("requests", 0, "measured requests to send (default 100 when --duration is not given)")
		duration    = fs.Duration("duration", 0, "measured duration of the schedule")
		warmup      = fs.Duration("warmup", 0, "warm-up duration before the measured part, left out of the statistics")
		warmupReqs  = fs.Int64("warmup-requests", 0, "warm-up requests before the measured part, left out of the statistics")
		prefixLen   = fs.Int("prefix-len", 0, "shared-prefix prompts: tokens of shared prefix (needs --input-len)")
		numPrefixes = fs.Int("num-prefixes", 1, "shared-prefix prompts: distinct prefixes")
		dataset     = fs.String("dataset", "", "prompt file: JSON lines ({\"prompt\": ..., \"max_tokens\": N}) or ShareGPT JSON")
		dsFormat    = fs.String("dataset-format", "", "jsonl or sharegpt (default from the file's extension: .jsonl or .json)")
		prompt      = fs.String("prompt", "", "fixed prompt text (default a short question)")
		maxTokens   = fs.Int("max-tokens", 128, "max_tokens per request, when --output-len is not given")
		ignoreEOS   = fs.Bool("ignore-eos", false, "send ignore_eos, so the server generates max_tokens tokens")
		temperature = fs.Float64("temperature", 0, "sampling temperature")
		extraBody   = fs.String("extra-body", "", "JSON object merged into every request body, for example '{\"min_tokens\": 16}'")
		apiKey      = fs.String("api-key", "", "bearer token for the server (default $OPENAI_API_KEY)")
		seed        = fs.Uint64("seed", 0, "seed for arrivals and prompts; equal seeds give equal runs")
		connectTO   = fs.Duration("connect-timeout", 10*time.Second, "limit for each connect")
		ttftTO      = fs.Duration("ttft-timeout", 0, "limit for each request's first token (0: none)")
		timeout     = fs.Duration("timeout", 10*time.Minute, "limit for each request")
		interval    = fs.Duration("interval", time.Second, "report interval")
		clientBound = fs.Duration("client-bound-p99", agent.DefaultClientBoundP99, "dispatch-lag p99 above which the run is flagged client-bound")
		goodput     = fs.String("goodput", "", "SLOs in ms for goodput, like vLLM bench serve: \"ttft:200 tpot:50 e2e:2000\" (TTFT and E2E from the intended send time)")
		maxErrRate  = fs.String("max-error-rate", "0.5", "end the run as failed when more than this fraction of the attempts in one --error-window failed (1 or off: never)")
		errWindow   = fs.Duration("error-window", agent.DefaultErrorWindow, "sliding window of the error budget")
		asJSON      = fs.Bool("json", false, "print one JSON object instead of the table")
		outPath     = fs.String("out", "", "append every interval report to this JSON-lines file as it arrives")
	)
	headers := headerFlags{}
	fs.Var(headers, "header", "extra request header KEY:VALUE (repeatable)")
	var inLen, outLen distFlags
	inLen.register(fs, "input-len", "synthetic prompt length")
	outLen.register(fs, "output-len", "output length (sets max_tokens and ignore_eos)")
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
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *apiKey == "" {
		*apiKey = os.Getenv("OPENAI_API_KEY")
	}

	spec, err := loadSpecFromFlags(set, loadFlags{
		base: *base, model: *model, api: *api, concurrency: *concurrency, rate: *rate, arrival: *arrival,
		burstiness: *burstiness, rampFrom: *rampFrom, maxInFlight: *maxInFlight, requests: *requests,
		duration: *duration, warmup: *warmup, warmupReqs: *warmupReqs, prefixLen: *prefixLen,
		numPrefixes: *numPrefixes, dataset: *dataset, dsFormat: *dsFormat, prompt: *prompt,
		maxTokens: *maxTokens, ignoreEOS: *ignoreEOS, temperature: *temperature, extraBody: *extraBody,
		apiKey: *apiKey, seed: *seed, connectTO: *connectTO, ttftTO: *ttftTO, timeout: *timeout,
		interval: *interval, clientBound: *clientBound, headers: headers, inLen: &inLen, outLen: &outLen,
		goodput: *goodput, maxErrRate: *maxErrRate, errWindow: *errWindow,
	})
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}

	if spec.Target.Model == "" {
		c, err := oai.NewClient(oai.Config{MaxConns: 1, ConnectTimeout: *connectTO, Timeout: min(*timeout, 30*time.Second)})
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
	if *outPath != "" {
		out, err = os.OpenFile(*outPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
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
	progress := !*asJSON
	start := time.Now()
	runErr := a.Run(ctx, spec, func(r agent.Report) error {
		if out != nil {
			if err := writeReportLine(out, r); err != nil {
				return fmt.Errorf("--out %s: %w", *outPath, err)
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
			return fmt.Errorf("load: --out %s: %w", *outPath, err)
		}
	}
	if *asJSON {
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

// loadFlags are the parsed flag values.
type loadFlags struct {
	base, model, api           string
	concurrency                int
	rate, burstiness, rampFrom float64
	arrival                    string
	maxInFlight                int
	requests, warmupReqs       int64
	duration, warmup           time.Duration
	prefixLen, numPrefixes     int
	dataset, dsFormat, prompt  string
	maxTokens                  int
	ignoreEOS                  bool
	temperature                float64
	extraBody, apiKey          string
	seed                       uint64
	connectTO, ttftTO, timeout time.Duration
	interval, clientBound      time.Duration
	headers                    headerFlags
	inLen, outLen              *distFlags
	goodput                    string
	maxErrRate                 string
	errWindow                  time.Duration
}

// parseMaxErrorRate reads --max-error-rate: a fraction in [0, 1], where 1
// never trips, or "off".
func parseMaxErrorRate(s string) (float64, error) {
	if strings.EqualFold(strings.TrimSpace(s), "off") {
		return -1, nil
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || !(v >= 0 && v <= 1) {
		return 0, fmt.Errorf("--max-error-rate %q is invalid: give a fraction of failed attempts from 0 to 1, such as 0.5, or off (1 is off too)", s)
	}
	if v == 0 {
		// 0 means the default on the wire; the user asked for no errors.
		v = math.SmallestNonzeroFloat64
	}
	if v >= 1 {
		v = -1
	}
	return v, nil
}

// loadSpecFromFlags validates the flags and builds the run's spec; errors
// name the flag and the fix.
func loadSpecFromFlags(set map[string]bool, f loadFlags) (agent.Spec, error) {
	var spec agent.Spec
	if f.base == "" {
		return spec, errors.New("--url is required: pass the server's base URL, for example --url http://127.0.0.1:8000")
	}
	if u, err := url.Parse(f.base); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return spec, fmt.Errorf("--url %q is not an absolute http(s) URL: use for example --url http://127.0.0.1:8000", f.base)
	}
	if f.api != oai.APIChat && f.api != oai.APICompletions {
		return spec, fmt.Errorf("--api %q is unknown: use --api chat or --api completions", f.api)
	}

	// Load model.
	m := agent.LoadModel{Seed: f.seed, ClientBoundP99: f.clientBound}
	slo, err := parseSLO("goodput", f.goodput)
	if err != nil {
		return spec, err
	}
	m.SLO = slo
	switch {
	case set["concurrency"] && set["rate"]:
		return spec, errors.New("--concurrency and --rate are both set: use --concurrency for a closed loop or --rate for an open loop, not both")
	case set["rate"]:
		if f.maxInFlight > maxLoadConcurrency {
			return spec, fmt.Errorf("--max-in-flight %d is over the limit of %d: lower it, or spread the load over several agents with ttftlab sweep", f.maxInFlight, maxLoadConcurrency)
		}
		if !(f.rate > 0) || f.rate > 1e6 {
			return spec, fmt.Errorf("--rate %v is invalid: set a positive rate in requests per second, up to 1e6", f.rate)
		}
		m.Rate = f.rate
		m.MaxInFlight = f.maxInFlight
		switch {
		case set["ramp-from"]:
			if set["burstiness"] || set["arrival"] {
				return spec, errors.New("--ramp-from ramps evenly spaced arrivals: drop --burstiness and --arrival")
			}
			if f.rampFrom < 0 {
				return spec, fmt.Errorf("--ramp-from %v is invalid: set a rate ≥ 0", f.rampFrom)
			}
			if f.duration <= 0 {
				return spec, errors.New("--ramp-from needs --duration: the rate ramps over it")
			}
			m.Kind, m.StartRate = agent.LoadRamp, f.rampFrom
		case set["burstiness"]:
			if !(f.burstiness > 0) {
				return spec, fmt.Errorf("--burstiness %v is invalid: set a gamma shape > 0 (1 is Poisson, below 1 burstier)", f.burstiness)
			}
			if set["arrival"] && f.arrival != agent.LoadGamma {
				return spec, fmt.Errorf("--burstiness needs gamma arrivals, but --arrival is %q: drop one", f.arrival)
			}
			m.Kind, m.Burstiness = agent.LoadGamma, f.burstiness
		default:
			switch f.arrival {
			case agent.LoadPoisson, agent.LoadConstant:
				m.Kind = f.arrival
			case agent.LoadGamma:
				return spec, errors.New("--arrival gamma needs --burstiness B")
			default:
				return spec, fmt.Errorf("--arrival %q is unknown: use poisson, constant or gamma", f.arrival)
			}
		}
	default:
		for _, name := range []string{"burstiness", "ramp-from", "max-in-flight", "arrival"} {
			if set[name] {
				return spec, fmt.Errorf("--%s applies to an open loop: add --rate R", name)
			}
		}
		m.Kind, m.Concurrency = agent.LoadClosed, 1
		if set["concurrency"] {
			if f.concurrency < 1 {
				return spec, fmt.Errorf("--concurrency %d is invalid: set --concurrency ≥ 1", f.concurrency)
			}
			if f.concurrency > maxLoadConcurrency {
				return spec, fmt.Errorf("--concurrency %d is over the limit of %d: lower it, or spread the load over several agents with ttftlab sweep", f.concurrency, maxLoadConcurrency)
			}
			m.Concurrency = f.concurrency
		}
	}
	if f.maxInFlight < 0 {
		return spec, fmt.Errorf("--max-in-flight %d is invalid: set it ≥ 0 (0 means no cap)", f.maxInFlight)
	}
	if f.requests < 0 || (set["requests"] && f.requests == 0) {
		return spec, fmt.Errorf("--requests %d is invalid: set --requests ≥ 1", f.requests)
	}
	if f.duration < 0 || (set["duration"] && f.duration == 0) {
		return spec, fmt.Errorf("--duration %v is invalid: set a positive duration such as --duration 30s", f.duration)
	}
	m.Requests, m.Duration = f.requests, f.duration
	if !set["requests"] && !set["duration"] {
		m.Requests = 100
	}
	if f.warmup < 0 || f.warmupReqs < 0 {
		return spec, errors.New("--warmup and --warmup-requests must be ≥ 0")
	}
	if f.warmup > 0 && f.warmupReqs > 0 {
		return spec, errors.New("--warmup and --warmup-requests are both set: pick one")
	}
	m.Warmup, m.WarmupRequests = f.warmup, f.warmupReqs
	if m.MaxErrorRate, err = parseMaxErrorRate(f.maxErrRate); err != nil {
		return spec, err
	}
	if f.errWindow < 100*time.Millisecond || f.errWindow > time.Hour {
		return spec, fmt.Errorf("--error-window %v is invalid: give a window from 100ms to 1h, such as --error-window 5s", f.errWindow)
	}
	m.ErrorWindow = f.errWindow

	// Workload.
	inDist, err := f.inLen.dist(set)
	if err != nil {
		return spec, err
	}
	outDist, err := f.outLen.dist(set)
	if err != nil {
		return spec, err
	}
	gen := agent.WorkloadGen{OutputLen: outDist, Seed: f.seed}
	switch {
	case f.dataset != "":
		if !inDist.IsZero() || set["prefix-len"] || set["prompt"] {
			return spec, errors.New("--dataset supplies the prompts: drop --input-len, --prefix-len and --prompt")
		}
		format := f.dsFormat
		if format == "" {
			switch {
			case strings.HasSuffix(f.dataset, ".jsonl"):
				format = agent.GenJSONL
			case strings.HasSuffix(f.dataset, ".json"):
				format = agent.GenShareGPT
			default:
				return spec, fmt.Errorf("--dataset %s: cannot tell its format from the extension: add --dataset-format jsonl or sharegpt", f.dataset)
			}
		}
		if format != agent.GenJSONL && format != agent.GenShareGPT {
			return spec, fmt.Errorf("--dataset-format %q is unknown: use jsonl or sharegpt", format)
		}
		gen.Kind, gen.Path = format, f.dataset
	case set["prefix-len"]:
		if inDist.IsZero() || set["prompt"] {
			return spec, errors.New("--prefix-len needs --input-len (the whole prompt's length) and no --prompt")
		}
		if f.prefixLen < 1 || f.numPrefixes < 1 {
			return spec, fmt.Errorf("--prefix-len %d and --num-prefixes %d are invalid: set both ≥ 1", f.prefixLen, f.numPrefixes)
		}
		gen.Kind, gen.InputLen, gen.PrefixLen, gen.NumPrefixes = agent.GenSharedPrefix, inDist, f.prefixLen, f.numPrefixes
	case !inDist.IsZero():
		if set["prompt"] {
			return spec, errors.New("--input-len generates the prompts: drop --prompt")
		}
		gen.Kind, gen.InputLen = agent.GenSynthetic, inDist
	default:
		if set["dataset-format"] || set["num-prefixes"] {
			return spec, errors.New("--dataset-format and --num-prefixes need --dataset and --prefix-len")
		}
		gen.Kind = agent.GenFixed
	}
	if set["max-tokens"] && !outDist.IsZero() {
		return spec, errors.New("--max-tokens and --output-len are both set: --output-len sets max_tokens; drop one")
	}
	if f.maxTokens < 1 {
		return spec, fmt.Errorf("--max-tokens %d is invalid: set --max-tokens ≥ 1", f.maxTokens)
	}
	prompt := f.prompt
	if prompt == "" {
		prompt = defaultProbePrompt
	}
	eb, err := agent.ParseExtraBody(f.extraBody)
	if err != nil {
		return spec, fmt.Errorf("--extra-body: %w", err)
	}
	if f.timeout <= 0 || f.connectTO <= 0 || f.ttftTO < 0 || f.interval <= 0 {
		return spec, errors.New("--timeout, --connect-timeout and --interval must be positive, --ttft-timeout ≥ 0: use durations such as 30s")
	}
	if f.clientBound <= 0 {
		return spec, fmt.Errorf("--client-bound-p99 %v is invalid: set a positive duration such as 10ms", f.clientBound)
	}
	hdrs := map[string]string(f.headers)
	if len(hdrs) == 0 {
		hdrs = nil
	}
	spec = agent.Spec{
		RunID:          "load-" + time.Now().UTC().Format("20060102T150405Z"),
		AgentID:        "local",
		Target:         agent.Target{BaseURL: f.base, Model: f.model, API: f.api, APIKey: f.apiKey, Headers: hdrs},
		Workload:       agent.Workload{Prompt: prompt, MaxTokens: f.maxTokens, IgnoreEOS: f.ignoreEOS, Temperature: f.temperature, ExtraBody: eb},
		Load:           m,
		Generator:      gen,
		Interval:       f.interval,
		Timeout:        f.timeout,
		TTFTTimeout:    f.ttftTO,
		ConnectTimeout: f.connectTO,
	}
	probe := spec
	if probe.Target.Model == "" {
		probe.Target.Model = "-" // looked up later
	}
	if err := probe.Validate(); err != nil {
		return agent.Spec{}, err
	}
	return spec, nil
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

// parseSLO reads SLOs in milliseconds as vLLM bench serve's --goodput takes
// them: "ttft:200 tpot:50 e2el:2000" (spaces or commas; e2e or e2el).
func parseSLO(flagName, s string) (agent.SLO, error) {
	var slo agent.SLO
	for _, part := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		k, v, ok := strings.Cut(part, ":")
		ms, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil || !(ms >= 0.001) || ms > 3.6e6 {
			return slo, fmt.Errorf("--%s %q: %q is not METRIC:MILLISECONDS with a number from 0.001 to 3600000; write for example --%s \"ttft:200 tpot:50 e2e:2000\"", flagName, s, part, flagName)
		}
		d := time.Duration(ms * float64(time.Millisecond))
		switch strings.ToLower(k) {
		case "ttft":
			slo.TTFT = d
		case "tpot":
			slo.TPOT = d
		case "e2e", "e2el":
			slo.E2E = d
		default:
			return slo, fmt.Errorf("--%s: metric %q is unknown: use ttft, tpot or e2e", flagName, k)
		}
	}
	return slo, nil
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
