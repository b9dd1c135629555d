package results

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// This file is `ttftlab compare`: two runs' statistics, level by level and
// agent by agent, with bootstrap confidence intervals of every change and
// a verdict per metric; and the --fail-on rules a CI job gates on. It is
// pure: runs are read from an io.Reader.

// Comparison defaults.
const (
	// DefaultBootstrap is the number of bootstrap replicates.
	DefaultBootstrap = 1000
	// DefaultConfidence is the confidence level of the intervals.
	DefaultConfidence = 0.95
	// DefaultMinEffect is the smallest relative change called better or
	// worse: a change inside ±5% is "no significant change" even when its
	// interval excludes zero, because two runs of one configuration differ
	// by more than sampling alone (host noise, the engine's state).
	DefaultMinEffect = 0.05
	// maxCompareAgents bounds the agents one run may name, so that a
	// hostile file cannot make the reader keep a histogram set per name.
	maxCompareAgents = 1024
)

// Verdicts of a metric's change.
const (
	VerdictBetter   = "better"
	VerdictWorse    = "worse"
	VerdictNoChange = "no significant change"
	VerdictNoData   = "n/a"
)

// CompareRun is one run's measured statistics, by level.
type CompareRun struct {
	// Name is where the run was read from.
	Name string
	// Kind is "load" (a `ttftlab load --out` file) or "sweep".
	Kind string
	// Levels are in level order; a load run has one, keyed "load".
	Levels []*CompareLevel
}

// CompareLevel is one level of a run: the merge of all its agents and of
// each agent alone.
type CompareLevel struct {
	// Key names the level: "load" or "level 2 (8)".
	Key string
	// Index is the sweep's 0-based level; Value its concurrency or rate.
	Index int
	Value float64
	All   *Merger
	// Agents are each agent's reports merged alone, by agent id.
	Agents map[string]*Merger
	// dec decodes each report's histograms once, for both merges.
	dec hdr.Decoder
}

func (l *CompareLevel) add(rep *pb.IntervalReport) error {
	a := rep.GetAgentId()
	m, ok := l.Agents[a]
	if !ok {
		if len(l.Agents) >= maxCompareAgents {
			return fmt.Errorf("more than %d agents in %s: not a run ttftlab wrote", maxCompareAgents, l.Key)
		}
		m = NewMerger()
		l.Agents[a] = m
	}
	// A report whose histograms are refused keeps its counts (as the
	// run's own report does); the comparison notes it through the merger's
	// lossless check.
	// Decoded once for both merges.
	set, err := ReportHistogramsWith(&l.dec, rep)
	c := &Checked{Set: set, Err: err}
	_, _ = m.AddChecked(rep, c)
	_, _ = l.All.AddChecked(rep, c)
	return nil
}

func newCompareLevel(key string, index int, value float64) *CompareLevel {
	return &CompareLevel{Key: key, Index: index, Value: value, All: NewMerger(), Agents: map[string]*Merger{}}
}

// ReadCompareRun reads a run for comparison from r: a run directory's
// events.jsonl (a sweep) or the JSON lines of `ttftlab load --out`. The
// input crossed a process boundary: every line is decoded and validated
// (histograms through hdr.Decode), and a file that is neither is an error
// naming name and what was expected.
func ReadCompareRun(r io.Reader, name string) (*CompareRun, error) {
	br := bufio.NewReader(r)
	first, err := peekLine(br)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	var probe struct {
		Kind *string `json:"kind"`
		Type *string `json:"type"`
	}
	if err := json.Unmarshal(first, &probe); err != nil {
		return nil, fmt.Errorf("%s: the first line is not JSON (%v): give a run directory (with events.jsonl) or a `ttftlab load --out` file", name, err)
	}
	switch {
	case probe.Kind != nil:
		return readSweepRun(br, name)
	case probe.Type != nil:
		return readLoadRun(br, name)
	}
	return nil, fmt.Errorf("%s: lines have neither \"kind\" (events.jsonl) nor \"type\" (ttftlab load --out): give a run directory or a load --out file", name)
}

// peekLine returns the first non-empty line without consuming it.
func peekLine(br *bufio.Reader) ([]byte, error) {
	for n := 64; ; n *= 4 {
		b, err := br.Peek(n)
		if i := bytes.IndexByte(b, '\n'); i >= 0 && len(bytes.TrimSpace(b[:i])) > 0 {
			return bytes.TrimSpace(b[:i]), nil
		} else if i >= 0 {
			if _, err := br.Discard(i + 1); err != nil {
				return nil, err
			}
			n = 16
			continue
		}
		if err != nil {
			if len(bytes.TrimSpace(b)) > 0 && errors.Is(err, io.EOF) {
				return bytes.TrimSpace(b), nil
			}
			if errors.Is(err, io.EOF) {
				return nil, errors.New("empty: no run was recorded here")
			}
			if errors.Is(err, bufio.ErrBufferFull) {
				return nil, errors.New("the first line is longer than the reader's buffer: not a run ttftlab wrote")
			}
			return nil, err
		}
		if n >= br.Size() {
			return nil, errors.New("the first line is longer than the reader's buffer: not a run ttftlab wrote")
		}
	}
}

func readSweepRun(r io.Reader, name string) (*CompareRun, error) {
	events, err := ReadEvents(r, name)
	if err != nil {
		return nil, err
	}
	run := &CompareRun{Name: name, Kind: "sweep"}
	byIndex := map[int]*CompareLevel{}
	level := func(i int, v float64) *CompareLevel {
		l, ok := byIndex[i]
		if !ok {
			l = newCompareLevel("", i, v)
			byIndex[i] = l
		}
		return l
	}
	baseline := false
	for _, ev := range events {
		p, err := Decode(ev)
		if errors.Is(err, ErrUnknownKind) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		switch p := p.(type) {
		case RunStart:
			baseline = true
		case LevelStart:
			level(p.Level, p.Value).Value = p.Value
		case SweepInterval:
			if p.Report == nil {
				continue
			}
			if err := level(p.Level, 0).add(p.Report); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
	}
	if len(byIndex) == 0 {
		if baseline {
			return nil, fmt.Errorf("%s is a cold/warm baseline: compare reads sweeps (their events.jsonl) and `ttftlab load --out` files, which hold latency distributions", name)
		}
		return nil, fmt.Errorf("%s holds no sweep level: compare reads sweeps and `ttftlab load --out` files", name)
	}
	for _, i := range slices.Sorted(mapsKeys(byIndex)) {
		l := byIndex[i]
		l.Key = fmt.Sprintf("level %d (%g)", i+1, l.Value)
		run.Levels = append(run.Levels, l)
	}
	return run, nil
}

func mapsKeys[K comparable, V any](m map[K]V) func(func(K) bool) {
	return func(yield func(K) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// loadLine is one line of `ttftlab load --out`: {"type":"interval",
// "report":{...}}, or {"type":"summary",...}, which compare does not need.
type loadLine struct {
	Type   string          `json:"type"`
	Report json.RawMessage `json:"report"`
}

// loadReport is the part of an interval report in a `ttftlab load --out`
// file that compare reads: the snake_case form with "hdr_v2" (each
// histogram's V2 text by metric), or the earlier form, an agent.Report as
// encoding/json writes it (Go field names, "Histograms").
type loadReport struct {
	RunID                     string    `json:"run_id"`
	AgentID                   string    `json:"agent_id"`
	Seq                       uint64    `json:"seq"`
	Start                     time.Time `json:"start"`
	End                       time.Time `json:"end"`
	OK                        uint64    `json:"ok"`
	Failed, Good, Interrupted uint64
	OutputTokens              uint64 `json:"output_tokens"`
	Warmup, Final             bool
	HdrV2                     map[string]string `json:"hdr_v2"`
	LegacyRunID               string            `json:"RunID"`
	LegacyAgentID             string            `json:"AgentID"`
	LegacyOutputTokens        uint64            `json:"OutputTokens"`
	MeasuredStart             time.Time
	MeasuredEnd               time.Time
	Histograms                []struct {
		Metric string
		V2     []byte
	}
}

func readLoadRun(r io.Reader, name string) (*CompareRun, error) {
	l := newCompareLevel("load", 0, 0)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 64*1024*1024)
	lineNo, n := 0, 0
	var pending error
	for sc.Scan() {
		lineNo++
		if pending != nil {
			return nil, pending
		}
		b := bytes.TrimSpace(sc.Bytes())
		if len(b) == 0 {
			continue
		}
		var ln loadLine
		if err := json.Unmarshal(b, &ln); err != nil {
			// A torn last line (the process died mid-write) is skipped.
			pending = fmt.Errorf("%s line %d: %w", name, lineNo, err)
			continue
		}
		if ln.Type != "interval" {
			continue
		}
		var rep loadReport
		if err := json.Unmarshal(ln.Report, &rep); err != nil {
			return nil, fmt.Errorf("%s line %d: interval report: %w", name, lineNo, err)
		}
		ns := func(t time.Time) int64 {
			if t.IsZero() {
				return 0
			}
			return t.UnixNano()
		}
		p := &pb.IntervalReport{RunId: rep.RunID + rep.LegacyRunID, AgentId: rep.AgentID + rep.LegacyAgentID, Seq: rep.Seq,
			StartUnixNano: ns(rep.Start), EndUnixNano: ns(rep.End),
			RequestsOk: rep.OK, RequestsFailed: rep.Failed, RequestsGood: rep.Good, RequestsInterrupted: rep.Interrupted,
			OutputTokens: rep.OutputTokens + rep.LegacyOutputTokens, Warmup: rep.Warmup, Final: rep.Final,
			MeasuredStartUnixNano: ns(rep.MeasuredStart), MeasuredEndUnixNano: ns(rep.MeasuredEnd)}
		for _, h := range rep.Histograms {
			p.Histograms = append(p.Histograms, &pb.EncodedHistogram{Metric: h.Metric, V2: h.V2})
		}
		for _, m := range slices.Sorted(mapsKeys(rep.HdrV2)) {
			p.Histograms = append(p.Histograms, &pb.EncodedHistogram{Metric: m, V2: []byte(rep.HdrV2[m])})
		}
		if err := l.add(p); err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%s holds no interval report: was it written by `ttftlab load --out`?", name)
	}
	return &CompareRun{Name: name, Kind: "load", Levels: []*CompareLevel{l}}, nil
}

// Metric is one compared statistic.
type Metric struct {
	// Name is the rule name, for example "ttft_p99" or "throughput".
	Name string
	// hist and q select a histogram percentile (q in (0, 1)); an empty
	// hist is a rate.
	hist string
	q    float64
	// tokens selects the output-token rate instead of the request rate.
	tokens bool
	// HigherIsBetter is set for rates.
	HigherIsBetter bool
	// Unit is "ms", "req/s" or "tok/s".
	Unit string
}

// CompareMetrics are the statistics compared, in report order.
func CompareMetrics() []Metric {
	var out []Metric
	for _, h := range []string{hdr.TTFT, hdr.TPOT, hdr.ITL, hdr.E2E} {
		for _, q := range []struct {
			s string
			q float64
		}{{"p50", 0.50}, {"p90", 0.90}, {"p99", 0.99}} {
			out = append(out, Metric{Name: h + "_" + q.s, hist: h, q: q.q, Unit: "ms"})
		}
	}
	return append(out,
		Metric{Name: "throughput", HigherIsBetter: true, Unit: "req/s"},
		Metric{Name: "output_throughput", tokens: true, HigherIsBetter: true, Unit: "tok/s"})
}

func lookupMetric(name string) (Metric, bool) {
	for _, m := range CompareMetrics() {
		if m.Name == name {
			return m, true
		}
	}
	return Metric{}, false
}

// CompareOptions set the bootstrap and the verdict rule.
type CompareOptions struct {
	// Bootstrap is the number of replicates (DefaultBootstrap when 0).
	Bootstrap int
	// Confidence is the interval's level (DefaultConfidence when 0).
	Confidence float64
	// MinEffect is the smallest relative change that is better or worse
	// (DefaultMinEffect when 0; negative for none).
	MinEffect float64
	// Seed seeds the bootstrap; equal seeds give equal intervals.
	Seed uint64
}

func (o CompareOptions) withDefaults() CompareOptions {
	if o.Bootstrap == 0 {
		o.Bootstrap = DefaultBootstrap
	}
	if o.Confidence == 0 {
		o.Confidence = DefaultConfidence
	}
	if o.MinEffect == 0 {
		o.MinEffect = DefaultMinEffect
	}
	o.MinEffect = max(o.MinEffect, 0)
	return o
}

// Validate checks the options; errors name the CLI's flags.
func (o CompareOptions) Validate() error {
	switch {
	case o.Bootstrap < 0 || o.Bootstrap > 100_000:
		return fmt.Errorf("--bootstrap %d is out of range: give 100 to 100000 replicates (default %d)", o.Bootstrap, DefaultBootstrap)
	case o.Bootstrap > 0 && o.Bootstrap < 100:
		return fmt.Errorf("--bootstrap %d is too few for a %g%% interval: give at least 100 (default %d)", o.Bootstrap, 100*DefaultConfidence, DefaultBootstrap)
	case o.Confidence != 0 && !(o.Confidence >= 0.5 && o.Confidence < 1):
		return fmt.Errorf("--confidence %g is out of range: give a level from 0.5 to below 1, such as 0.95", o.Confidence)
	case math.IsNaN(o.MinEffect) || o.MinEffect >= 10:
		return fmt.Errorf("--min-effect %g is out of range: give a fraction such as 0.05 (5%%)", o.MinEffect)
	}
	return nil
}

// Comparison is the result of comparing run B against run A.
type Comparison struct {
	// RunA and RunB name the runs.
	RunA string `json:"run_a"`
	RunB string `json:"run_b"`
	// Method states the bootstrap and the verdict rule.
	Method CompareMethod     `json:"method"`
	Levels []LevelComparison `json:"levels"`
	// OnlyInA and OnlyInB are levels that one run lacks.
	OnlyInA []string `json:"only_in_a,omitempty"`
	OnlyInB []string `json:"only_in_b,omitempty"`
	// Rules are the --fail-on rules and whether each tripped.
	Rules []RuleResult `json:"rules,omitempty"`
	// Failed is set when a rule tripped.
	Failed bool `json:"failed"`
}

// CompareMethod records how the intervals and verdicts were made.
type CompareMethod struct {
	Bootstrap  int     `json:"bootstrap_replicates"`
	Confidence float64 `json:"confidence"`
	MinEffect  float64 `json:"min_effect"`
	Seed       uint64  `json:"seed"`
	Rule       string  `json:"verdict_rule"`
}

// LevelComparison compares one level, over all agents and per agent.
type LevelComparison struct {
	Level   string             `json:"level"`
	Value   float64            `json:"value"`
	Metrics []MetricComparison `json:"metrics"`
	// Agents compares each agent present in both runs, by agent id.
	Agents []AgentComparison `json:"agents,omitempty"`
	// Warnings say what in the level's data is suspect.
	Warnings []string `json:"warnings,omitempty"`
}

// AgentComparison compares one agent's share of a level.
type AgentComparison struct {
	Agent   string             `json:"agent"`
	Metrics []MetricComparison `json:"metrics"`
}

// MetricComparison is one statistic in both runs. Missing values (a
// histogram with no samples) are null.
type MetricComparison struct {
	Metric string   `json:"metric"`
	Unit   string   `json:"unit"`
	A      *float64 `json:"a"`
	B      *float64 `json:"b"`
	// NA and NB are the sample sizes (requests) behind A and B.
	NA uint64 `json:"n_a"`
	NB uint64 `json:"n_b"`
	// Change is B/A − 1; CILow and CIHigh its bootstrap interval.
	Change  *float64 `json:"change"`
	CILow   *float64 `json:"ci_low"`
	CIHigh  *float64 `json:"ci_high"`
	Verdict string   `json:"verdict"`
}

// Compare compares run b against run a: levels are matched by index and
// value (a load run's single level matches a load run's).
func Compare(a, b *CompareRun, opt CompareOptions) *Comparison {
	opt = opt.withDefaults()
	c := &Comparison{RunA: a.Name, RunB: b.Name, Method: CompareMethod{
		Bootstrap: opt.Bootstrap, Confidence: opt.Confidence, MinEffect: opt.MinEffect, Seed: opt.Seed,
		Rule: fmt.Sprintf("better or worse when the %g%% bootstrap interval of the change B/A−1 excludes 0 and the change is at least %g%%; otherwise no significant change",
			100*opt.Confidence, 100*opt.MinEffect),
	}}
	key := func(l *CompareLevel) string { return fmt.Sprintf("%d/%g", l.Index, l.Value) }
	inB := map[string]*CompareLevel{}
	for _, l := range b.Levels {
		inB[key(l)] = l
	}
	matched := map[string]bool{}
	// One generator for the whole comparison, seeded: equal inputs and
	// seeds give equal intervals.
	rng := rand.New(rand.NewPCG(opt.Seed, 0x7474667463))
	for _, la := range a.Levels {
		lb, ok := inB[key(la)]
		if !ok {
			c.OnlyInA = append(c.OnlyInA, la.Key)
			continue
		}
		matched[key(la)] = true
		lc := LevelComparison{Level: la.Key, Value: la.Value, Metrics: compareMergers(la.All, lb.All, opt, rng)}
		for _, m := range []struct {
			run string
			m   *Merger
		}{{"A", la.All}, {"B", lb.All}} {
			if err := m.m.Check(); err != nil {
				lc.Warnings = append(lc.Warnings, fmt.Sprintf("run %s: %v", m.run, err))
			}
		}
		for _, id := range slices.Sorted(mapsKeys(la.Agents)) {
			mb, ok := lb.Agents[id]
			if !ok || len(la.Agents) < 2 {
				continue // one agent is the level itself
			}
			lc.Agents = append(lc.Agents, AgentComparison{Agent: id, Metrics: compareMergers(la.Agents[id], mb, opt, rng)})
		}
		c.Levels = append(c.Levels, lc)
	}
	for _, l := range b.Levels {
		if !matched[key(l)] {
			c.OnlyInB = append(c.OnlyInB, l.Key)
		}
	}
	return c
}

// compareMergers compares every metric of two merged sets of reports.
func compareMergers(a, b *Merger, opt CompareOptions, rng *rand.Rand) []MetricComparison {
	var out []MetricComparison
	for _, m := range CompareMetrics() {
		out = append(out, compareMetric(m, a, b, opt, rng))
	}
	return out
}

// sampler draws one bootstrap replicate of a metric; ok is false when the
// run has no data for it.
type sampler struct {
	point float64
	n     uint64
	draw  func(rng *rand.Rand) float64
}

func newSampler(m Metric, g *Merger) (sampler, bool) {
	if m.hist != "" {
		h, ok := g.Histograms()[m.hist]
		if !ok || h.Count() == 0 {
			return sampler{}, false
		}
		var buckets []float64 // each bucket's highest equivalent value, ms
		var cum []int64
		var total int64
		h.Buckets(func(_, highUs, count int64) {
			total += count
			buckets = append(buckets, float64(highUs)/1000)
			cum = append(cum, total)
		})
		n := total
		k := quantileRank(m.q, n)
		at := func(u float64) float64 {
			// F⁻¹(u): the smallest bucket whose cumulative share reaches u.
			target := int64(math.Ceil(u * float64(n)))
			i := sort.Search(len(cum), func(i int) bool { return cum[i] >= target })
			return buckets[min(i, len(buckets)-1)]
		}
		return sampler{
			point: at(float64(k) / float64(n)),
			n:     uint64(n),
			// The k-th smallest of n values drawn with replacement from
			// the histogram is F⁻¹(U₍ₖ₎), and U₍ₖ₎ ~ Beta(k, n−k+1): one
			// draw per replicate gives exactly the distribution of the
			// percentile of n resampled values, at O(log buckets) cost.
			draw: func(rng *rand.Rand) float64 { return at(betaSample(rng, float64(k), float64(n-k+1))) },
		}, true
	}
	start, end := g.Span()
	if g.OK == 0 || end <= start {
		return sampler{}, false
	}
	span := float64(end-start) / 1e9
	per := 1.0
	if m.tokens {
		if g.OutputTokens == 0 {
			return sampler{}, false
		}
		per = float64(g.OutputTokens) / float64(g.OK)
	}
	c := float64(g.OK)
	return sampler{
		point: c * per / span,
		n:     g.OK,
		// Completions in the span are taken as Poisson: the replicate
		// count is Normal(c, c), a conservative spread for a closed loop,
		// whose completions are more regular than Poisson.
		draw: func(rng *rand.Rand) float64 { return max(c+math.Sqrt(c)*rng.NormFloat64(), 0) * per / span },
	}, true
}

// quantileRank is the rank HdrHistogram reads quantile q at among n
// values: ⌈q·n⌉, at least 1.
func quantileRank(q float64, n int64) int64 {
	return min(max(int64(math.Ceil(q*float64(n))), 1), n)
}

func compareMetric(m Metric, a, b *Merger, opt CompareOptions, rng *rand.Rand) MetricComparison {
	mc := MetricComparison{Metric: m.Name, Unit: m.Unit, Verdict: VerdictNoData}
	sa, okA := newSampler(m, a)
	sb, okB := newSampler(m, b)
	if okA {
		mc.A, mc.NA = ptr(sa.point), sa.n
	}
	if okB {
		mc.B, mc.NB = ptr(sb.point), sb.n
	}
	if !okA || !okB || sa.point <= 0 {
		return mc
	}
	mc.Change = ptr(sb.point/sa.point - 1)
	reps := make([]float64, 0, opt.Bootstrap)
	for range opt.Bootstrap {
		ra := sa.draw(rng)
		if ra <= 0 {
			continue
		}
		reps = append(reps, sb.draw(rng)/ra-1)
	}
	if len(reps) < opt.Bootstrap/2 {
		return mc
	}
	slices.Sort(reps)
	alpha := (1 - opt.Confidence) / 2
	lo := reps[int(math.Floor(alpha*float64(len(reps)-1)))]
	hi := reps[int(math.Ceil((1-alpha)*float64(len(reps)-1)))]
	mc.CILow, mc.CIHigh = ptr(lo), ptr(hi)
	mc.Verdict = VerdictNoChange
	if (lo > 0 || hi < 0) && math.Abs(*mc.Change) >= opt.MinEffect {
		up := *mc.Change > 0
		if up == m.HigherIsBetter {
			mc.Verdict = VerdictBetter
		} else {
			mc.Verdict = VerdictWorse
		}
	}
	return mc
}

// betaSample draws from Beta(a, b), a, b ≥ 1, as X/(X+Y) of two gamma
// draws.
func betaSample(rng *rand.Rand, a, b float64) float64 {
	x, y := gammaSample(rng, a), gammaSample(rng, b)
	if x+y == 0 {
		return 0.5
	}
	return x / (x + y)
}

// gammaSample draws from Gamma(shape, 1), shape ≥ 1, by Marsaglia and
// Tsang's method.
func gammaSample(rng *rand.Rand, shape float64) float64 {
	d := shape - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := rng.Float64()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}

// Rule is one --fail-on rule: the metric's change compared with a
// threshold, for example ttft_p99 > +10%.
type Rule struct {
	Metric string
	// Greater is set for ">", clear for "<".
	Greater bool
	// Threshold is the relative change, +0.10 for +10%.
	Threshold float64
}

// String renders the rule as it is written.
func (r Rule) String() string {
	op := "<"
	if r.Greater {
		op = ">"
	}
	return fmt.Sprintf("%s%s%+g%%", r.Metric, op, r.Threshold*100)
}

// maxRules bounds a --fail-on list.
const maxRules = 64

// ParseRules reads a --fail-on list: rules separated by commas, each
// METRIC>+N% or METRIC<-N% (the sign may be left out), for example
// "ttft_p99>+10%,throughput<-5%". Errors name the rule and the fix.
func ParseRules(s string) ([]Rule, error) {
	if len(s) > 4096 {
		return nil, fmt.Errorf("--fail-on is %d bytes long: give at most %d rules", len(s), maxRules)
	}
	var out []Rule
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if len(out) == maxRules {
			return nil, fmt.Errorf("--fail-on has more than %d rules", maxRules)
		}
		i := strings.IndexAny(part, "<>")
		if i < 0 {
			return nil, fmt.Errorf("--fail-on rule %q has no > or <: write it like ttft_p99>+10%% or throughput<-5%%", part)
		}
		name := strings.TrimSpace(part[:i])
		m, ok := lookupMetric(name)
		if !ok {
			return nil, fmt.Errorf("--fail-on rule %q: metric %q is unknown: use one of %s", part, name, strings.Join(metricNames(), ", "))
		}
		val := strings.TrimSpace(part[i+1:])
		if !strings.HasSuffix(val, "%") {
			return nil, fmt.Errorf("--fail-on rule %q: threshold %q is not a relative change: write it as a percentage, like +10%%", part, val)
		}
		pct, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(val, "%")), 64)
		if err != nil || math.IsNaN(pct) || math.IsInf(pct, 0) || pct <= -100 || pct > 1e6 {
			return nil, fmt.Errorf("--fail-on rule %q: threshold %q is not a percentage above -100%%: write for example +10%% or -5%%", part, val)
		}
		r := Rule{Metric: m.Name, Greater: part[i] == '>', Threshold: pct / 100}
		out = append(out, r)
	}
	if len(out) == 0 {
		return nil, errors.New("--fail-on is empty: give rules such as \"ttft_p99>+10%,throughput<-5%\"")
	}
	return out, nil
}

func metricNames() []string {
	var out []string
	for _, m := range CompareMetrics() {
		out = append(out, m.Name)
	}
	return out
}

// RuleResult is one rule applied to every level of a comparison.
type RuleResult struct {
	Rule    string `json:"rule"`
	Tripped bool   `json:"tripped"`
	// Levels name the levels that tripped it, with the change.
	Levels []string `json:"levels,omitempty"`
}

// ApplyRules evaluates rules on every level (all agents merged) and sets
// c.Failed when any trips. A rule trips on a level when the change is past
// its threshold and significant: its bootstrap interval excludes 0, so
// sampling noise alone does not fail a CI job.
func (c *Comparison) ApplyRules(rules []Rule) {
	for _, r := range rules {
		rr := RuleResult{Rule: r.String()}
		for _, l := range c.Levels {
			for _, m := range l.Metrics {
				if m.Metric != r.Metric || m.Change == nil || m.CILow == nil {
					continue
				}
				past := *m.Change > r.Threshold
				if !r.Greater {
					past = *m.Change < r.Threshold
				}
				significant := *m.CILow > 0 || *m.CIHigh < 0
				if past && significant {
					rr.Tripped = true
					rr.Levels = append(rr.Levels, fmt.Sprintf("%s: %+.1f%% [%+.1f%%, %+.1f%%]", l.Level, 100**m.Change, 100**m.CILow, 100**m.CIHigh))
				}
			}
		}
		c.Failed = c.Failed || rr.Tripped
		c.Rules = append(c.Rules, rr)
	}
}

// CompareMarkdown writes the comparison as Markdown.
func CompareMarkdown(w io.Writer, c *Comparison) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# ttftlab compare\n\n- A: `%s`\n- B: `%s`\n- method: %d bootstrap replicates from the merged histograms, seed %d; %s.\n",
		c.RunA, c.RunB, c.Method.Bootstrap, c.Method.Seed, c.Method.Rule)
	if len(c.Rules) > 0 {
		b.WriteString("\n## Rules\n\n| rule | result | where |\n|---|---|---|\n")
		for _, r := range c.Rules {
			res := "passed"
			if r.Tripped {
				res = "**TRIPPED**"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", r.Rule, res, orDash(strings.Join(r.Levels, "; ")))
		}
		if c.Failed {
			b.WriteString("\nResult: **failed** (a rule tripped).\n")
		} else {
			b.WriteString("\nResult: passed.\n")
		}
	}
	for _, l := range c.Levels {
		fmt.Fprintf(&b, "\n## %s\n\n", l.Level)
		for _, w := range l.Warnings {
			fmt.Fprintf(&b, "> WARNING: %s\n\n", w)
		}
		writeMetricTable(&b, l.Metrics)
		for _, a := range l.Agents {
			fmt.Fprintf(&b, "\n### agent %s\n\n", a.Agent)
			writeMetricTable(&b, a.Metrics)
		}
	}
	for _, s := range []struct {
		run    string
		levels []string
	}{{"A", c.OnlyInA}, {"B", c.OnlyInB}} {
		if len(s.levels) > 0 {
			fmt.Fprintf(&b, "\nOnly in run %s (not compared): %s.\n", s.run, strings.Join(s.levels, ", "))
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

func writeMetricTable(b *strings.Builder, ms []MetricComparison) {
	b.WriteString("| metric | A | B | change | CI | verdict |\n|---|---:|---:|---:|---|---|\n")
	for _, m := range ms {
		ci := "n/a"
		if m.CILow != nil {
			ci = fmt.Sprintf("[%+.1f%%, %+.1f%%]", 100**m.CILow, 100**m.CIHigh)
		}
		change := "n/a"
		if m.Change != nil {
			change = fmt.Sprintf("%+.1f%%", 100**m.Change)
		}
		fmt.Fprintf(b, "| %s | %s | %s | %s | %s | %s |\n", m.Metric, fmtUnit(m.A, m.Unit), fmtUnit(m.B, m.Unit), change, ci, m.Verdict)
	}
}

func fmtUnit(v *float64, unit string) string {
	if v == nil {
		return "n/a"
	}
	return strconv.FormatFloat(*v, 'f', 2, 64) + " " + unit
}

func orDash(s string) string {
	if s == "" {
		return "—"
	}
	return s
}

// CompareJSON writes the comparison as one indented JSON object.
func CompareJSON(w io.Writer, c *Comparison) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(c)
}
