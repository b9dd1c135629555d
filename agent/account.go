package agent

import (
	"fmt"
	"slices"
	"time"

	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/oai"
)

// Met reports whether a successful result, intended at sched, meets s. A
// request with fewer than two output tokens has no TPOT and meets that part.
func (s SLO) Met(res *oai.Result, sched time.Time) bool {
	if s.TTFT > 0 && (res.FirstToken.IsZero() || res.FirstToken.Sub(sched) > s.TTFT) {
		return false
	}
	if s.TPOT > 0 {
		if tpot, ok := res.TPOT(); ok && tpot > s.TPOT {
			return false
		}
	}
	if s.E2E > 0 && res.Send.Add(res.E2E()).Sub(sched) > s.E2E {
		return false
	}
	return true
}

// acc accumulates one interval of either warm-up or measured requests.
type acc struct {
	set         hdr.Set
	ok          uint64
	failed      uint64
	interrupted uint64
	good        uint64
	outTokens   uint64
	// cached sums cached_tokens over the successful requests whose server
	// sent it (cachedReqs of them); cachedPrompt sums the prompt tokens of
	// every successful request.
	cached, cachedReqs, cachedPrompt uint64
	errs                             map[string]uint64
	samples                          []string
	recs                             []Record
	usage                            string
	// mom are the exact moments of the histograms in MomentMetrics.
	mom moments
	// promptTokens sums the successful requests' input lengths, and
	// promptLens counts them by the lengths' source.
	promptTokens uint64
	promptLens   PromptLenCounts
}

// MomentMetrics lists the histograms whose exact count, sum and sum of
// squares every report carries (Report.Moments), in order.
var MomentMetrics = [...]string{hdr.TTFT, hdr.TPOT, hdr.ITL, hdr.ICL, hdr.E2E}

// moments are one interval's running sums, indexed as MomentMetrics.
type moments [len(MomentMetrics)]Moments

func newMoments() moments {
	var m moments
	for i, name := range MomentMetrics {
		m[i].Metric = name
	}
	return m
}

// add adds one value of metric i, in milliseconds as the report sends it.
func (m *moments) add(i int, d time.Duration) {
	if m == nil {
		return
	}
	x := float64(d) / float64(time.Millisecond)
	m[i].Count++
	m[i].Sum += x
	m[i].SumSq += x * x
}

// addN adds the same value k times.
func (m *moments) addN(i int, d time.Duration, k int) {
	if m == nil {
		return
	}
	x := float64(d) / float64(time.Millisecond)
	m[i].Count += uint64(k)
	m[i].Sum += float64(k) * x
	m[i].SumSq += float64(k) * x * x
}

// Indexes into moments, as MomentMetrics.
const (
	momTTFT = iota
	momTPOT
	momITL
	momICL
	momE2E
)

func newAcc() acc { return acc{set: newSet(), errs: map[string]uint64{}, mom: newMoments()} }

func (c *acc) empty() bool {
	return c.ok == 0 && c.failed == 0 && c.interrupted == 0 && len(c.recs) == 0
}

// usageRank orders usage sources from weakest to strongest.
func usageRank(s string) int {
	switch s {
	case oai.UsageCounted:
		return 1
	case oai.UsageFinal:
		return 2
	case oai.UsageContinuous:
		return 3
	}
	return 4
}

func newSet() hdr.Set {
	s := hdr.Set{}
	for _, m := range metrics {
		s.Get(m)
	}
	return s
}

// observe records one finished request; promptLen is its prompt's length
// as the generator built it (0 when unknown; the server's usage then counts
// it). An interrupted one (cancelled
// because the run stopped) counts neither as a success nor as a failure,
// nor against the error budget.
func (r *run) observe(i int, sched time.Time, warm, interrupted bool, res *oai.Result, promptLen int) {
	end := time.Now()
	label := ""
	if i < len(r.spec.Labels) {
		label = r.spec.Labels[i]
	}
	if r.obs != nil {
		e := RequestEnd{Warmup: warm, Interrupted: interrupted, Sent: !res.Send.IsZero()}
		if e.Sent {
			e.DispatchLag = max(res.Send.Sub(sched), 0)
		}
		if res.Err != nil && !interrupted {
			e.ErrKind = res.Err.Kind
		}
		r.obs.RequestEnded(e)
	}
	if res.Err != nil && !interrupted {
		r.log.Debug("request failed", "run_id", r.spec.RunID, "index", i, "label", label,
			"kind", res.Err.Kind, "detail", res.Err.Detail)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.inFlight--
	c := &r.meas
	if warm {
		r.warmInFlight--
		c = &r.warm
	} else {
		if r.measStart.IsZero() || sched.Before(r.measStart) {
			r.measStart = sched
		}
		if end.After(r.measEnd) {
			r.measEnd = end
		}
	}
	if !res.Send.IsZero() {
		// Dispatch lag is the client's, so failed requests count too.
		lag := max(res.Send.Sub(sched), 0)
		c.set.Get(hdr.DispatchLag).Record(lag)
		if !warm {
			r.lag.Record(lag)
		}
	}
	switch {
	case interrupted:
		c.interrupted++
		if !warm {
			r.totalIntr++
		}
	case res.OK():
		c.ok++
		c.outTokens += uint64(max(res.OutputTokens, 0))
		c.cachedPrompt += uint64(max(res.PromptTokens, 0))
		if res.CachedTokens >= 0 {
			c.cached += uint64(res.CachedTokens)
			c.cachedReqs++
		}
		if usageRank(res.UsageSource) < usageRank(c.usage) {
			c.usage = res.UsageSource
		}
		recordMetrics(c.set, &c.mom, res)
		n, src := r.inputLen(res, promptLen)
		c.promptTokens += uint64(n)
		c.promptLens.add(src)
		if r.spec.Load.SLO.Set() && r.spec.Load.SLO.Met(res, sched) {
			c.good++
		}
		if !res.FirstToken.IsZero() {
			c.set.Get(hdr.TTFTSched).Record(res.FirstToken.Sub(sched))
		}
		if !warm {
			r.totalOK++
		}
	default:
		c.failed++
		c.errs[res.Err.Kind]++
		if r.nSamples < r.maxSamples {
			r.nSamples++
			c.samples = append(c.samples, errorSample(i, label, res.Err))
		}
		if !warm {
			r.totalFailed++
		}
	}
	if r.budget != nil && !interrupted {
		kind := ""
		if res.Err != nil {
			kind = res.Err.Kind
		}
		if reason := r.budget.add(end, kind); reason != "" && r.abortReason == "" {
			r.abortReason = reason
			r.abort()
		}
	}
	if r.records {
		rec := newRecord(i, label, res)
		rec.Sched, rec.Warmup, rec.PromptLen = sched, warm, promptLen
		if r.spec.RecordMarks && len(res.Marks) > 0 {
			rec.Marks = slices.Clone(res.Marks)
		}
		if !res.Send.IsZero() {
			rec.DispatchLag = max(res.Send.Sub(sched), 0)
		}
		if !res.FirstToken.IsZero() {
			rec.TTFTSched = res.FirstToken.Sub(sched)
		}
		c.recs = append(c.recs, rec)
	}
}

func errorSample(i int, label string, e *oai.Error) string {
	name := fmt.Sprintf("request %d", i)
	if label != "" {
		name += " (" + label + ")"
	}
	s := name + ": " + e.Error()
	if e.Body != "" && e.Body != e.Detail {
		s += "; body: " + e.Body
	}
	return s
}

func newRecord(i int, label string, res *oai.Result) Record {
	rec := Record{
		Index:        i,
		Label:        label,
		Send:         res.Send,
		TTFT:         res.TTFT(),
		OutputTokens: res.OutputTokens,
		PromptTokens: res.PromptTokens,
		CachedTokens: res.CachedTokens,
		UsageSource:  res.UsageSource,
		Chunks:       res.Chunks,
		Preview:      res.Preview,
	}
	if !res.Send.IsZero() {
		rec.E2E = res.E2E()
	}
	if !res.Header.IsZero() {
		rec.FirstByte = res.Header.Sub(res.Send)
	}
	if !res.FirstChunk.IsZero() {
		rec.FirstChunk = res.FirstChunk.Sub(res.Send)
	}
	if res.Err != nil {
		rec.Err = res.Err.Error()
		rec.ErrKind = res.Err.Kind
	}
	return rec
}

// inputLen is a successful request's input length, as vLLM's
// total_input_tokens counts it, and where it came from: the generator's
// length when the prompts were sized with the server's tokenizer (exact),
// else the server's usage.prompt_tokens, else the generator's estimate.
func (r *run) inputLen(res *oai.Result, promptLen int) (int, string) {
	switch {
	case r.promptLenSource == PromptLenTokenize && promptLen > 0:
		if res.PromptTokens > 0 {
			return res.PromptTokens, PromptLenTokenize
		}
		return promptLen, PromptLenTokenize
	case res.PromptTokens > 0:
		return res.PromptTokens, PromptLenUsage
	}
	return max(promptLen, 0), PromptLenEstimate
}

// add counts one request whose input length came from src.
func (p *PromptLenCounts) add(src string) {
	switch src {
	case PromptLenTokenize:
		p.Tokenize++
	case PromptLenUsage:
		p.Usage++
	default:
		p.Estimate++
	}
}

// recordMetrics adds a successful result's send-relative metrics to s and,
// when mom is not nil, their exact moments.
func recordMetrics(s hdr.Set, mom *moments, res *oai.Result) {
	if !res.FirstToken.IsZero() {
		s.Get(hdr.TTFT).Record(res.TTFT())
		mom.add(momTTFT, res.TTFT())
	}
	s.Get(hdr.E2E).Record(res.E2E())
	mom.add(momE2E, res.E2E())
	if tpot, ok := res.TPOT(); ok {
		s.Get(hdr.TPOT).Record(tpot)
		mom.add(momTPOT, tpot)
	}
	if len(res.Marks) < 2 {
		return
	}
	itl, icl := s.Get(hdr.ITL), s.Get(hdr.ICL)
	prev := res.Marks[0].At
	for _, m := range res.Marks[1:] {
		gap := m.At - prev
		prev = m.At
		icl.Record(gap)
		mom.add(momICL, gap)
		k := max(int(m.Tokens), 1)
		per := gap / time.Duration(k)
		for range k {
			itl.Record(per)
		}
		mom.addN(momITL, per, k)
	}
}
