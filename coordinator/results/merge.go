package results

import (
	"fmt"
	"math"
	"strings"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// Added says what Merger.Add did with a report.
type Added int

const (
	// Merged: the report's counts and histograms were merged.
	Merged Added = iota
	// Duplicate: the same agent's report with the same sequence number and
	// interval was added before; it is counted once.
	Duplicate
	// Warmup: a warm-up report; it counts toward coverage and
	// WarmupRequests only, never toward a statistic.
	Warmup
	// Refused: the report's histograms failed validation and are left
	// out; its request counts are kept. Add's error says why.
	Refused
)

// Coverage is what one agent delivered to a Merger.
type Coverage struct {
	// Intervals counts the agent's reports, warm-up included.
	Intervals int
	// FinalReports counts the reports marked final (one per segment run).
	FinalReports int
	// OK and Failed count the agent's measured requests.
	OK, Failed uint64
	// LastEndNs is the end of the agent's latest interval.
	LastEndNs int64
}

// Merger merges agents' interval reports into one set of statistics, the
// one merge of ttftlab: Build (a baseline), BuildSweep (each level) and
// `ttftlab load` all use it. It counts each report once (by agent, sequence
// number and interval), leaves warm-up reports out of every statistic,
// validates each report's histograms before merging any of them
// (ReportHistograms: a bad report's histograms are left out, its counts
// kept), and keeps each agent's coverage. Check asserts that the merge was
// lossless. A Merger is not safe for concurrent use.
type Merger struct {
	// dec decodes the reports' histograms, reusing its buffers.
	dec  hdr.Decoder
	seen map[mergeKey]bool
	set  hdr.Set
	// ttftByAgent is each agent's TTFT count as its reports said it.
	ttftByAgent map[string]int64
	// histOK counts the successful requests of the reports whose
	// histograms were merged.
	histOK int64
	agents map[string]*Coverage

	// Totals over the measured (not warm-up) reports.
	OK, Failed, Interrupted, Good, OutputTokens uint64
	ErrorsByKind                                map[string]uint64
	// WarmupRequests counts the requests (ok, failed or interrupted) of
	// the warm-up reports, which no statistic includes.
	WarmupRequests uint64
	// ClientBound is set when any measured report was client-bound.
	ClientBound bool
	// Usage is the weakest usage source of the measured reports;
	// USAGE_SOURCE_UNSPECIFIED when none said.
	Usage pb.UsageSource
	// Aborts are the agents' abort reasons (an error budget spent), in
	// arrival order.
	Aborts []Abort
	// MeasuredStartNs and MeasuredEndNs are the measured span (earliest
	// intended send to latest finish of a measured request) over the
	// agents; zero when no report carried one. IntervalStartNs and
	// IntervalEndNs are the measured reports' interval bounds, the
	// fallback for agents that send no measured span.
	MeasuredStartNs, MeasuredEndNs int64
	IntervalStartNs, IntervalEndNs int64
	// PromptTokens sums the measured successful requests' input lengths
	// (vLLM's total_input_tokens); PromptLens counts those requests by
	// the source of their length.
	PromptTokens uint64
	PromptLens   PromptLenCounts
	// moments are the exact sums of the merged reports, by metric;
	// noMoments names the metrics some merged report had values of but
	// no moments for (an older agent): their exact mean is unknown.
	moments   map[string]*Moment
	noMoments map[string]bool
}

// Moment is one metric's exact count, sum and sum of squares, in
// milliseconds, merged over reports: sums add, so the merge is lossless.
type Moment struct {
	Count      uint64
	Sum, SumSq float64
}

// Mean and Std are the exact mean and population standard deviation
// (numpy's np.std), in milliseconds; NaN when no value was added.
func (m Moment) Mean() float64 {
	if m.Count == 0 {
		return math.NaN()
	}
	return m.Sum / float64(m.Count)
}

// Std is the population standard deviation; see Mean.
func (m Moment) Std() float64 {
	if m.Count == 0 {
		return math.NaN()
	}
	n := float64(m.Count)
	return math.Sqrt(max(m.SumSq-m.Sum*m.Sum/n, 0) / n)
}

// Prompt-length sources (docs/metrics.md, "Exact prompt lengths"); a merge
// of several is PromptLenMixed.
const (
	PromptLenTokenize = "tokenize"
	PromptLenUsage    = "usage"
	PromptLenEstimate = "estimate"
	PromptLenMixed    = "mixed"
)

// PromptLenCounts counts successful requests by the source of their input
// length.
type PromptLenCounts struct {
	Tokenize uint64 `json:"tokenize"`
	Usage    uint64 `json:"usage"`
	Estimate uint64 `json:"estimate"`
}

// Source is the one source every counted request had, PromptLenMixed when
// they differ, or "" when none was counted.
func (p PromptLenCounts) Source() string {
	var src []string
	for _, c := range []struct {
		name string
		n    uint64
	}{{PromptLenTokenize, p.Tokenize}, {PromptLenUsage, p.Usage}, {PromptLenEstimate, p.Estimate}} {
		if c.n > 0 {
			src = append(src, c.name)
		}
	}
	switch len(src) {
	case 0:
		return ""
	case 1:
		return src[0]
	}
	return PromptLenMixed
}

// String is the source, with the counts when mixed: "mixed (tokenize 120,
// estimate 30)"; "n/a" when none was counted.
func (p PromptLenCounts) String() string {
	src := p.Source()
	switch src {
	case "":
		return "n/a"
	case PromptLenMixed:
		var parts []string
		for _, c := range []struct {
			name string
			n    uint64
		}{{PromptLenTokenize, p.Tokenize}, {PromptLenUsage, p.Usage}, {PromptLenEstimate, p.Estimate}} {
			if c.n > 0 {
				parts = append(parts, fmt.Sprintf("%s %d", c.name, c.n))
			}
		}
		return src + " (" + strings.Join(parts, ", ") + ")"
	}
	return src
}

func (p *PromptLenCounts) add(o PromptLenCounts) {
	p.Tokenize += o.Tokenize
	p.Usage += o.Usage
	p.Estimate += o.Estimate
}

// reportPromptLens is a measured report's provenance counts; a report from
// an older agent that counts none but says its prompts were sized counts
// every success as tokenize.
func reportPromptLens(rep *pb.IntervalReport) PromptLenCounts {
	pl := rep.GetPromptLens()
	c := PromptLenCounts{Tokenize: pl.GetTokenize(), Usage: pl.GetUsage(), Estimate: pl.GetEstimate()}
	if c == (PromptLenCounts{}) && rep.GetPromptLenSource() == PromptLenTokenize {
		c.Tokenize = rep.GetRequestsOk()
	}
	return c
}

// Abort is an agent's report that its share ended early as failed.
type Abort struct {
	Agent, Reason string
}

// AbortError joins the abort reasons, each named by its agent; "" when no
// agent aborted.
func (m *Merger) AbortError() string {
	var b strings.Builder
	for i, a := range m.Aborts {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "agent %s: %s", a.Agent, a.Reason)
	}
	return b.String()
}

type mergeKey struct {
	agent      string
	seq        uint64
	start, end int64
}

// NewMerger returns an empty Merger.
func NewMerger() *Merger {
	return &Merger{seen: map[mergeKey]bool{}, set: hdr.Set{}, ttftByAgent: map[string]int64{},
		agents: map[string]*Coverage{}, ErrorsByKind: map[string]uint64{},
		moments: map[string]*Moment{}, noMoments: map[string]bool{}}
}

// Add merges one report. A duplicate is not counted again. The error is
// set only with Refused, naming the agent, the interval and the reason.
func (m *Merger) Add(rep *pb.IntervalReport) (Added, error) {
	return m.add(rep, nil)
}

// Checked is a report's histograms as ReportHistograms (or
// ReportHistogramsWith) returned them: the decoded set, or the error that
// refused it.
type Checked struct {
	Set hdr.Set
	Err error
}

// AddChecked is Add for a report whose histograms the caller already
// decoded and checked with ReportHistograms: c is what that returned for
// this very report. It lets a caller that validates each report as it
// arrives (the coordinator's recorder), or that merges one report into
// several Mergers (compare), decode it once. The histograms are only read.
// A nil c decodes as Add does.
func (m *Merger) AddChecked(rep *pb.IntervalReport, c *Checked) (Added, error) {
	return m.add(rep, c)
}

func (m *Merger) add(rep *pb.IntervalReport, c *Checked) (Added, error) {
	// One agent runs several probes per baseline, each numbering its
	// reports from the start, so a duplicate is the same agent, sequence
	// number and interval.
	k := mergeKey{rep.GetAgentId(), rep.GetSeq(), rep.GetStartUnixNano(), rep.GetEndUnixNano()}
	if m.seen[k] {
		return Duplicate, nil
	}
	m.seen[k] = true
	cov := m.agents[rep.GetAgentId()]
	if cov == nil {
		cov = &Coverage{}
		m.agents[rep.GetAgentId()] = cov
	}
	cov.Intervals++
	if rep.GetFinal() {
		cov.FinalReports++
	}
	cov.LastEndNs = max(cov.LastEndNs, rep.GetEndUnixNano())
	if rep.GetWarmup() {
		m.WarmupRequests += rep.GetRequestsOk() + rep.GetRequestsFailed() + rep.GetRequestsInterrupted()
		return Warmup, nil
	}
	cov.OK += rep.GetRequestsOk()
	cov.Failed += rep.GetRequestsFailed()
	m.OK += rep.GetRequestsOk()
	m.Failed += rep.GetRequestsFailed()
	m.Interrupted += rep.GetRequestsInterrupted()
	m.Good += rep.GetRequestsGood()
	m.OutputTokens += rep.GetOutputTokens()
	for k, v := range rep.GetErrorsByKind() {
		m.ErrorsByKind[k] += v
	}
	m.ClientBound = m.ClientBound || rep.GetClientBound()
	if u := ReportUsage(rep); u != pb.UsageSource_USAGE_SOURCE_UNSPECIFIED && (m.Usage == pb.UsageSource_USAGE_SOURCE_UNSPECIFIED || u < m.Usage) {
		m.Usage = u
	}
	if r := rep.GetAbortReason(); r != "" {
		m.Aborts = append(m.Aborts, Abort{Agent: rep.GetAgentId(), Reason: r})
	}
	if s, e := rep.GetMeasuredStartUnixNano(), rep.GetMeasuredEndUnixNano(); s > 0 && e > 0 {
		if m.MeasuredStartNs == 0 || s < m.MeasuredStartNs {
			m.MeasuredStartNs = s
		}
		m.MeasuredEndNs = max(m.MeasuredEndNs, e)
	}
	if s := rep.GetStartUnixNano(); s > 0 && (m.IntervalStartNs == 0 || s < m.IntervalStartNs) {
		m.IntervalStartNs = s
	}
	m.IntervalEndNs = max(m.IntervalEndNs, rep.GetEndUnixNano())
	m.PromptTokens += rep.GetPromptTokens()
	var set hdr.Set
	var err error
	if c != nil {
		set, err = c.Set, c.Err
	} else {
		set, err = ReportHistogramsWith(&m.dec, rep)
	}
	if err != nil {
		return Refused, err
	}
	// Validated with the histograms: the counts add up.
	m.PromptLens.add(reportPromptLens(rep))
	m.histOK += int64(rep.GetRequestsOk())
	sent := map[string]bool{}
	for _, mo := range rep.GetMoments() {
		sent[mo.GetMetric()] = true
		t := m.moments[mo.GetMetric()]
		if t == nil {
			t = &Moment{}
			m.moments[mo.GetMetric()] = t
		}
		t.Count += mo.GetCount()
		t.Sum += mo.GetSumMs()
		t.SumSq += mo.GetSumSqMs()
	}
	for name, h := range set {
		if momentMetric(name) && !sent[name] && h.Count() > 0 {
			m.noMoments[name] = true
		}
	}
	for name, h := range set {
		if name == hdr.TTFT {
			m.ttftByAgent[rep.GetAgentId()] += h.Count()
		}
		m.set.Get(name).Merge(h)
	}
	return Merged, nil
}

// Check asserts that the merge was lossless: the merged TTFT histogram
// holds the sum of the agents' TTFT counts, and the merged E2E histogram
// one value per successful request of the merged reports.
func (m *Merger) Check() error {
	var sum int64
	for _, n := range m.ttftByAgent {
		sum += n
	}
	if h, ok := m.set[hdr.TTFT]; ok && h.Count() != sum {
		return fmt.Errorf("merged TTFT histogram holds %d values but the agents reported %d: the merge lost data", h.Count(), sum)
	}
	if h, ok := m.set[hdr.E2E]; ok && h.Count() != m.histOK {
		return fmt.Errorf("merged E2E histogram holds %d values but the agents counted %d successful requests: the reports are inconsistent", h.Count(), m.histOK)
	}
	return nil
}

// Histograms returns the merged histograms, by metric. The caller must not
// change them.
func (m *Merger) Histograms() hdr.Set { return m.set }

// Summaries summarises every merged histogram, in milliseconds.
func (m *Merger) Summaries() map[string]hdr.Summary {
	out := make(map[string]hdr.Summary, len(m.set))
	for name, h := range m.set {
		out[name] = h.Summarize()
	}
	return out
}

// Agents returns each agent's coverage, by agent id. The caller must not
// change it.
func (m *Merger) Agents() map[string]*Coverage { return m.agents }

// Span returns the measured span in nanoseconds: the agents' measured
// span, or the measured intervals' bounds when no agent sent one.
func (m *Merger) Span() (startNs, endNs int64) {
	if m.MeasuredStartNs == 0 {
		return m.IntervalStartNs, m.IntervalEndNs
	}
	return m.MeasuredStartNs, m.MeasuredEndNs
}

// Moments returns a metric's exact moments over the merged reports; false
// when some merged report had values of it but sent no moments (an older
// agent), so that the exact mean is unknown.
func (m *Merger) Moments(metric string) (Moment, bool) {
	if m.noMoments[metric] {
		return Moment{}, false
	}
	if t := m.moments[metric]; t != nil {
		return *t, true
	}
	return Moment{}, true
}
