package main

import (
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/agent"
	"github.com/ttftlab/ttftlab/internal/benchjson"
	"github.com/ttftlab/ttftlab/internal/oai"
)

// loadFlagNames maps agent.Spec's fields to `ttftlab load`'s flags.
func loadFlagNames() flagNames {
	return flagNames{
		"target.base_url":           "--url",
		"target.model":              "--model",
		"target.api":                "--api",
		"target.headers":            "--header",
		"target.transport":          "--http-transport",
		"target.first_token_clock":  "--first-token-clock",
		"workload.prompt":           "--prompt",
		"workload.max_tokens":       "--max-tokens",
		"workload.temperature":      "--temperature",
		"workload.extra_body":       "--extra-body",
		"load":                      "--requests",
		"load.concurrency":          "--concurrency",
		"load.rate":                 "--rate",
		"load.start_rate":           "--ramp-from",
		"load.burstiness":           "--burstiness",
		"load.kind":                 "--arrival",
		"load.max_in_flight":        "--max-in-flight",
		"load.duration":             "--duration",
		"load.requests":             "--requests",
		"load.warmup":               "--warmup",
		"load.warmup_requests":      "--warmup-requests",
		"load.client_bound_p99":     "--client-bound-p99",
		"load.slo":                  "--goodput",
		"load.max_error_rate":       "--max-error-rate",
		"load.error_window":         "--error-window",
		"generator.kind":            "--dataset-format",
		"generator.path":            "--dataset",
		"generator.input_len":       "--input-len",
		"generator.input_len.kind":  "--input-len-dist",
		"generator.output_len":      "--output-len",
		"generator.output_len.kind": "--output-len-dist",
		"generator.prefix_len":      "--prefix-len",
		"generator.num_prefixes":    "--num-prefixes",
		"interval":                  "--interval",
		"timeout":                   "--timeout",
		"ttft_timeout":              "--ttft-timeout",
		"connect_timeout":           "--connect-timeout",
	}
}

// loadCLI holds `ttftlab load`'s flags. Most bind straight into spec; the
// others choose the spec's load and generator kinds, or are the CLI's own.
type loadCLI struct {
	spec     agent.Spec
	arrival  string
	dsFormat string
	asJSON   bool
	outPath  string
	progress progressMode
	// wall is --duration as given: the bound on the command's wall time,
	// warm-up included (spec.Load.Duration is then the measured part).
	wall time.Duration
	// tls is the TLS configuration from --ca-file and
	// --insecure-skip-verify; nil for the system roots.
	tls         *tls.Config
	clientFlags *clientFlags
	// vLLM bench serve's settings that map onto several of ours.
	rateInf     bool
	maxConc     int
	datasetName string

	// Exports (loadexport.go).
	saveResult        string
	saveDetailed      bool
	saveRequests      string
	percentilesFlag   string
	metricsFlag       string
	percentiles       []float64
	percentileMetrics []string
}

// registerLoadFlags registers load's flags on fs, bound into the returned
// loadCLI's spec.
func registerLoadFlags(fs *flag.FlagSet) *loadCLI {
	c := &loadCLI{}
	s := &c.spec
	fs.StringVar(&s.Target.BaseURL, "url", "", "server base URL, for example http://127.0.0.1:8000 (a trailing /v1 is fine)")
	fs.StringVar(&s.Target.Model, "model", "", "model name; may be left out when /v1/models lists exactly one")
	fs.StringVar(&s.Target.API, "api", oai.APIChat, "API: chat or completions")
	fs.IntVar(&s.Load.Concurrency, "concurrency", 0, "closed loop: requests kept in flight (default 1 when --rate is not given)")
	fs.Float64Var(&s.Load.Rate, "rate", 0, "open loop: requests per second")
	fs.StringVar(&c.arrival, "arrival", agent.LoadPoisson, "open-loop arrivals: poisson, constant or gamma (gamma needs --burstiness)")
	fs.Float64Var(&s.Load.Burstiness, "burstiness", 0, "gamma shape of the gaps between arrivals: 1 is Poisson, below 1 burstier")
	fs.Float64Var(&s.Load.StartRate, "ramp-from", 0, "ramp the rate linearly from this rate to --rate over --duration")
	fs.IntVar(&s.Load.MaxInFlight, "max-in-flight", 0, "open loop: cap on requests in flight (0: none)")
	fs.Int64Var(&s.Load.Requests, "requests", 0, "measured requests to send (default 100 when --duration is not given)")
	fs.DurationVar(&s.Load.Duration, "duration", 0, "wall-clock bound on the whole run, warm-up included; requests in flight at the end are interrupted")
	fs.DurationVar(&s.Load.Warmup, "warmup", 0, "warm-up duration before the measured part, left out of the statistics")
	fs.Int64Var(&s.Load.WarmupRequests, "warmup-requests", 0, "warm-up requests before the measured part, left out of the statistics")
	fs.IntVar(&s.Generator.PrefixLen, "prefix-len", 0, "shared-prefix prompts: tokens of shared prefix (needs --input-len)")
	fs.IntVar(&s.Generator.NumPrefixes, "num-prefixes", 1, "shared-prefix prompts: distinct prefixes")
	fs.StringVar(&s.Generator.Path, "dataset", "", "prompt file: JSON lines ({\"prompt\": ..., \"max_tokens\": N}) or ShareGPT JSON")
	fs.StringVar(&c.dsFormat, "dataset-format", "", "jsonl or sharegpt (default from the file's extension: .jsonl or .json)")
	fs.StringVar(&s.Workload.Prompt, "prompt", "", "fixed prompt text (default a short question)")
	fs.IntVar(&s.Workload.MaxTokens, "max-tokens", 128, "max_tokens per request, when --output-len is not given")
	fs.BoolVar(&s.Workload.IgnoreEOS, "ignore-eos", false, "send ignore_eos, so the server generates max_tokens tokens")
	fs.Float64Var(&s.Workload.Temperature, "temperature", 0, "sampling temperature")
	fs.Var(extraBodyFlag{&s.Workload.ExtraBody}, "extra-body", "JSON object merged into every request body, for example '{\"min_tokens\": 16}'")
	fs.StringVar(&s.Target.APIKey, "api-key", "", "bearer token for the server (default $OPENAI_API_KEY)")
	fs.Uint64Var(&s.Load.Seed, "seed", 0, "seed for arrivals and prompts; equal seeds give equal runs")
	fs.DurationVar(&s.ConnectTimeout, "connect-timeout", 10*time.Second, "limit for each connect")
	fs.DurationVar(&s.TTFTTimeout, "ttft-timeout", 0, "limit for each request's first token (0: none)")
	fs.DurationVar(&s.Timeout, "timeout", 10*time.Minute, "limit for each request")
	fs.DurationVar(&s.Interval, "interval", time.Second, "report interval")
	fs.DurationVar(&s.Load.ClientBoundP99, "client-bound-p99", agent.DefaultClientBoundP99, "dispatch-lag p99 above which the run is flagged client-bound")
	fs.Var(sloFlag{&s.Load.SLO}, "goodput", "SLOs in ms for goodput, like vLLM bench serve: \"ttft:200 tpot:50 e2e:2000\" (TTFT and E2E from the intended send time)")
	s.Load.MaxErrorRate = 0.5
	fs.Var(errorRateFlag{&s.Load.MaxErrorRate}, "max-error-rate", "end the run as failed when more than this fraction of the attempts in one --error-window failed (1 or off: never)")
	fs.DurationVar(&s.Load.ErrorWindow, "error-window", agent.DefaultErrorWindow, "sliding window of the error budget")
	fs.BoolVar(&c.asJSON, "json", false, "print one JSON object instead of the table")
	fs.Var(&c.progress, "progress", "progress on stderr each interval (done of total, rate, time left, errors): auto (when stderr is a terminal, also with --json), on or off")
	fs.StringVar(&c.outPath, "out", "", "append every interval report to this JSON-lines file as it arrives")
	fs.StringVar(&c.saveResult, "save-result", "", "write the result as vLLM bench serve's --save-result JSON to this file (docs/metrics.md)")
	fs.BoolVar(&c.saveDetailed, "save-detailed", false, "add the per-request arrays to --save-result, as vLLM's --save-detailed (memory grows with requests and chunks)")
	fs.StringVar(&c.saveRequests, "save-requests", "", "append one JSON line per finished request to this file as it finishes (synced each interval)")
	fs.StringVar(&c.percentilesFlag, "metric-percentiles", "99", "percentiles in --save-result, comma-separated, as vLLM: for example 50,90,99")
	fs.StringVar(&c.metricsFlag, "percentile-metrics", "ttft,tpot,itl", "metrics in --save-result, comma-separated, as vLLM: ttft, tpot, itl, e2el, client_queue_time, e2el_including_client_queue")
	fs.Var(headerFlags{&s.Target.Headers}, "header", "extra request header KEY:VALUE (repeatable)")
	registerDist(fs, &s.Generator.InputLen, "input-len", "synthetic prompt length")
	registerDist(fs, &s.Generator.OutputLen, "output-len", "output length (sets max_tokens and ignore_eos)")
	c.clientFlags = registerClientFlags(fs)
	registerVLLMLoadAliases(fs, c)
	return c
}

// registerVLLMLoadAliases registers vLLM bench serve's names for load's
// settings (vllm/benchmarks/serve.py): --num-prompts, --request-rate
// (inf: every request at once), --max-concurrency, --random-input-len,
// --random-output-len, --dataset-name, --dataset-path; --burstiness and
// --seed have the same names already.
func registerVLLMLoadAliases(fs *flag.FlagSet, c *loadCLI) {
	alias(fs, "num-prompts", "requests", false, io.Discard, "")
	rr := alias(fs, "request-rate", "rate", false, io.Discard, "inf: all requests at once, a closed loop of --max-concurrency or all of them")
	rr.set = func(v string) error {
		if strings.EqualFold(strings.TrimSpace(v), "inf") {
			c.rateInf = true
			return nil
		}
		c.rateInf = false
		return fs.Set("rate", v)
	}
	mc := alias(fs, "max-concurrency", "concurrency", false, io.Discard, "--max-in-flight with a finite --request-rate")
	mc.set = func(v string) error {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 {
			return fmt.Errorf("%q is not a positive whole number of requests", v)
		}
		c.maxConc = n
		return nil
	}
	alias(fs, "random-input-len", "input-len", false, io.Discard, "")
	alias(fs, "random-output-len", "output-len", false, io.Discard, "")
	alias(fs, "dataset-path", "dataset", false, io.Discard, "")
	dn := alias(fs, "dataset-name", "dataset-format", false, io.Discard, "random or sharegpt")
	dn.set = func(v string) error {
		switch v {
		case "random", "sharegpt":
			c.datasetName = v
			return nil
		}
		return fmt.Errorf("%q is not supported: use random (synthetic prompts) or sharegpt (with --dataset-path); for a JSON-lines file use --dataset FILE", v)
	}
}

// applyVLLMAliases turns vLLM's settings into ours, after parsing and
// before build reads which flags were given.
func (c *loadCLI) applyVLLMAliases(fs *flag.FlagSet) error {
	set := setFlags(fs)
	switch {
	case c.rateInf:
		if set["rate"] || set["concurrency"] {
			return errors.New("--request-rate inf sends every request at once: drop --rate and --concurrency (give --max-concurrency to cap it)")
		}
		n := int64(c.maxConc)
		if n == 0 {
			n = c.spec.Load.Requests
			if !set["requests"] {
				n = 100
			}
			if set["duration"] && !set["requests"] {
				return errors.New("--request-rate inf without --max-concurrency needs --num-prompts (or --requests): it sends them all at once")
			}
		}
		if err := fs.Set("concurrency", strconv.FormatInt(n, 10)); err != nil {
			return err
		}
	case c.maxConc > 0 && set["rate"]:
		if set["max-in-flight"] {
			return errors.New("--max-concurrency with --request-rate is --max-in-flight: give one of them")
		}
		if err := fs.Set("max-in-flight", strconv.Itoa(c.maxConc)); err != nil {
			return err
		}
	case c.maxConc > 0:
		if set["concurrency"] {
			return errors.New("--max-concurrency without --request-rate is --concurrency: give one of them")
		}
		if err := fs.Set("concurrency", strconv.Itoa(c.maxConc)); err != nil {
			return err
		}
	}
	switch c.datasetName {
	case "random":
		// vLLM's defaults for the random dataset.
		if !set["input-len"] {
			_ = fs.Set("input-len", "1024")
		}
		if !set["output-len"] && !set["max-tokens"] {
			_ = fs.Set("output-len", "128")
		}
	case "sharegpt":
		if !set["dataset"] {
			return errors.New("--dataset-name sharegpt needs --dataset-path FILE (ShareGPT JSON)")
		}
		_ = fs.Set("dataset-format", agent.GenShareGPT)
	}
	return nil
}

// registerDist binds one length's distribution flags into d.
func registerDist(fs *flag.FlagSet, d *agent.LengthDist, name, what string) {
	fs.Float64Var(&d.Mean, name, 0, what+" in tokens (the mean for --"+name+"-dist normal)")
	fs.StringVar(&d.Kind, name+"-dist", "", "distribution of --"+name+": fixed, uniform or normal (default fixed)")
	fs.Float64Var(&d.Min, name+"-min", 0, "smallest --"+name+" for --"+name+"-dist uniform")
	fs.Float64Var(&d.Max, name+"-max", 0, "largest --"+name+" for --"+name+"-dist uniform")
	fs.Float64Var(&d.Stddev, name+"-stddev", 0, "standard deviation for --"+name+"-dist normal")
}

// finishDist completes a length distribution from the flags given: none
// leaves it zero (not generated).
func finishDist(d *agent.LengthDist, name string, set map[string]bool) error {
	if !set[name] && !set[name+"-dist"] && !set[name+"-min"] && !set[name+"-max"] && !set[name+"-stddev"] {
		*d = agent.LengthDist{}
		return nil
	}
	switch d.Kind {
	case "", agent.DistFixed:
		d.Kind = agent.DistFixed
		if set[name+"-min"] || set[name+"-max"] || set[name+"-stddev"] {
			return fmt.Errorf("--%s-min, -max and -stddev need --%s-dist uniform or normal", name, name)
		}
	case agent.DistUniform:
		d.Mean = (d.Min + d.Max) / 2
	}
	return nil
}

// build completes the spec from the flags given and validates it; errors
// name the flag and the fix. What it checks itself is only what the spec
// cannot show: which flags were given, and values that mean "the default"
// to the library but were given explicitly.
func (c *loadCLI) build(fs *flag.FlagSet) (agent.Spec, error) {
	if err := c.applyVLLMAliases(fs); err != nil {
		return c.spec, err
	}
	set := setFlags(fs)
	s := c.spec
	m := &s.Load
	if err := c.clientFlags.apply(&s.Target); err != nil {
		return s, err
	}
	tc, err := s.Target.TLSConfig()
	if err != nil {
		return s, loadFlagNames().rename(err)
	}
	c.tls = tc
	if set["rate"] {
		switch {
		case set["ramp-from"]:
			if set["arrival"] {
				return s, errors.New("--ramp-from ramps evenly spaced arrivals: drop --arrival")
			}
			m.Kind = agent.LoadRamp
		case set["arrival"]:
			switch c.arrival {
			case agent.LoadPoisson, agent.LoadConstant, agent.LoadGamma:
				if c.arrival == agent.LoadGamma && !set["burstiness"] {
					// The library reads shape 0 as 1 (Poisson): ask.
					return s, errors.New("--arrival gamma needs --burstiness B (1 is Poisson, below 1 burstier)")
				}
				m.Kind = c.arrival
			default:
				return s, fmt.Errorf("--arrival %q is unknown: use poisson, constant or gamma", c.arrival)
			}
		case set["burstiness"]:
			m.Kind = agent.LoadGamma
		default:
			m.Kind = agent.LoadPoisson
		}
	} else {
		if set["arrival"] {
			return s, errors.New("--arrival applies to an open loop: add --rate R")
		}
		m.Kind = agent.LoadClosed
		if !set["concurrency"] {
			m.Concurrency = 1
		}
	}
	if !set["requests"] && !set["duration"] {
		m.Requests = 100
	}
	// A zero the user gave is refused where the library reads 0 as "the
	// default" or "none".
	for _, z := range []struct {
		name string
		zero bool
	}{{"requests", m.Requests == 0}, {"duration", m.Duration == 0}, {"burstiness", m.Burstiness == 0},
		{"timeout", s.Timeout == 0}, {"connect-timeout", s.ConnectTimeout == 0}, {"interval", s.Interval == 0},
		{"client-bound-p99", m.ClientBoundP99 == 0}, {"error-window", m.ErrorWindow == 0}} {
		if set[z.name] && z.zero {
			return s, fmt.Errorf("--%s %s is invalid: give a positive value (leave the flag out for its default)", z.name, fs.Lookup(z.name).Value)
		}
	}

	// --duration bounds the wall time; a time-based warm-up runs inside it.
	c.wall = m.Duration
	if m.Duration > 0 && m.Warmup > 0 {
		if m.Warmup >= m.Duration {
			return s, fmt.Errorf("--warmup %v does not fit in --duration %v, which bounds the whole run with its warm-up: shorten --warmup or lengthen --duration", m.Warmup, m.Duration)
		}
		m.Duration -= m.Warmup
	}

	// Workload.
	g := &s.Generator
	g.Seed = m.Seed
	if err := finishDist(&g.InputLen, "input-len", set); err != nil {
		return s, err
	}
	if err := finishDist(&g.OutputLen, "output-len", set); err != nil {
		return s, err
	}
	switch {
	case g.Path != "":
		if !g.InputLen.IsZero() || set["prefix-len"] || set["prompt"] {
			return s, errors.New("--dataset supplies the prompts: drop --input-len, --prefix-len and --prompt")
		}
		format := c.dsFormat
		if format == "" {
			switch {
			case strings.HasSuffix(g.Path, ".jsonl"):
				format = agent.GenJSONL
			case strings.HasSuffix(g.Path, ".json"):
				format = agent.GenShareGPT
			default:
				return s, fmt.Errorf("--dataset %s: cannot tell its format from the extension: add --dataset-format jsonl or sharegpt", g.Path)
			}
		}
		if format != agent.GenJSONL && format != agent.GenShareGPT {
			return s, fmt.Errorf("--dataset-format %q is unknown: use jsonl or sharegpt", format)
		}
		g.Kind = format
	case set["prefix-len"]:
		if g.InputLen.IsZero() || set["prompt"] {
			return s, errors.New("--prefix-len needs --input-len (the whole prompt's length) and no --prompt")
		}
		g.Kind = agent.GenSharedPrefix
	case !g.InputLen.IsZero():
		if set["prompt"] {
			return s, errors.New("--input-len generates the prompts: drop --prompt")
		}
		g.Kind = agent.GenSynthetic
	default:
		if set["dataset-format"] || set["num-prefixes"] {
			return s, errors.New("--dataset-format and --num-prefixes need --dataset and --prefix-len")
		}
		g.Kind = agent.GenFixed
	}
	if g.Kind != agent.GenSharedPrefix {
		g.PrefixLen, g.NumPrefixes = 0, 0
	}
	if set["max-tokens"] && !g.OutputLen.IsZero() {
		return s, errors.New("--max-tokens and --output-len are both set: --output-len sets max_tokens; drop one")
	}
	if s.Workload.Prompt == "" {
		s.Workload.Prompt = defaultProbePrompt
	}
	if err := c.buildExports(set); err != nil {
		return s, err
	}
	s.RunID = "load-" + time.Now().UTC().Format("20060102T150405Z")
	s.AgentID = "local"

	probe := s
	if probe.Target.Model == "" {
		probe.Target.Model = "-" // looked up later
	}
	if err := probe.Validate(); err != nil {
		return agent.Spec{}, loadFlagNames().rename(err)
	}
	return s, nil
}

// buildExports checks the export flags; an export flag that would be
// ignored is an error.
func (c *loadCLI) buildExports(set map[string]bool) error {
	if c.saveResult == "" {
		for _, f := range []string{"save-detailed", "metric-percentiles", "percentile-metrics"} {
			if set[f] {
				return fmt.Errorf("--%s shapes the --save-result file: add --save-result FILE", f)
			}
		}
	} else if dir := filepath.Dir(c.saveResult); dir != "" {
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			return fmt.Errorf("--save-result %s: directory %s does not exist: create it or pick another path", c.saveResult, dir)
		}
	}
	var err error
	if c.percentiles, err = benchjson.ParsePercentiles(c.percentilesFlag); err != nil {
		return fmt.Errorf("--metric-percentiles: %w", err)
	}
	if c.percentileMetrics, err = benchjson.ParseMetrics(c.metricsFlag); err != nil {
		return fmt.Errorf("--percentile-metrics: %w", err)
	}
	if c.saveRequests != "" && c.saveRequests == c.saveResult {
		return fmt.Errorf("--save-requests and --save-result are both %s: give two files", c.saveRequests)
	}
	return nil
}
