package results

import (
	"fmt"
	"math"
	"strings"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// knownMetric reports whether m is a histogram name an agent sends.
func knownMetric(m string) bool {
	switch m {
	case hdr.TTFT, hdr.TTFTSched, hdr.E2E, hdr.ITL, hdr.ICL, hdr.TPOT, hdr.DispatchLag:
		return true
	}
	return false
}

// ReportHistograms decodes and checks an interval report's histograms. The
// report came from an agent (over gRPC, or read back from events.jsonl), so
// every histogram is validated by hdr.Decode, a metric may appear once, and
// the counts must agree with the report's own request counts: E2E holds one
// value per successful request, TTFT, TTFT_sched and TPOT at most one, and
// dispatch lag at most one per request sent (ok, failed or interrupted:
// the lag is the client's, recorded once a request is sent). A report that fails any check
// is refused whole, so the merged metrics keep describing one set of
// requests; the error names the agent, the interval and the reason.
func ReportHistograms(rep *pb.IntervalReport) (hdr.Set, error) {
	return ReportHistogramsWith(nil, rep)
}

// ReportHistogramsWith is ReportHistograms decoding with dec, which reuses
// its buffers across calls; a nil dec decodes with hdr.Decode.
func ReportHistogramsWith(dec *hdr.Decoder, rep *pb.IntervalReport) (hdr.Set, error) {
	decode := hdr.Decode
	if dec != nil {
		decode = dec.Decode
	}
	set := hdr.Set{}
	var problems []string
	for _, eh := range rep.GetHistograms() {
		m := eh.GetMetric()
		if !knownMetric(m) {
			problems = append(problems, fmt.Sprintf("unknown metric %q", m))
			continue
		}
		if _, dup := set[m]; dup {
			problems = append(problems, fmt.Sprintf("metric %s sent twice", m))
			continue
		}
		h, err := decode(eh.GetV2())
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", m, err))
			continue
		}
		set[m] = h
	}
	ok := int64(rep.GetRequestsOk())
	if len(problems) == 0 {
		count := func(m string) int64 {
			if h, found := set[m]; found {
				return h.Count()
			}
			return 0
		}
		if _, found := set[hdr.E2E]; (found || ok > 0) && count(hdr.E2E) != ok {
			problems = append(problems, fmt.Sprintf("e2e holds %d values but the report counts %d successful requests", count(hdr.E2E), ok))
		}
		for _, m := range []string{hdr.TTFT, hdr.TTFTSched, hdr.TPOT} {
			if c := count(m); c > ok {
				problems = append(problems, fmt.Sprintf("%s holds %d values, more than the %d successful requests", m, c, ok))
			}
		}
		if c, sent := count(hdr.DispatchLag), ok+int64(rep.GetRequestsFailed())+int64(rep.GetRequestsInterrupted()); c > sent {
			problems = append(problems, fmt.Sprintf("dispatch_lag holds %d values, more than the %d requests sent", c, sent))
		}
		problems = append(problems, checkMoments(rep, set)...)
		problems = append(problems, checkPromptLens(rep)...)
	}
	if len(problems) > 0 {
		at := ""
		if ns := rep.GetStartUnixNano(); ns > 0 {
			at = " (from " + time.Unix(0, ns).UTC().Format("15:04:05.000") + ")"
		}
		return nil, fmt.Errorf("agent %q interval %d%s: histograms refused: %s", rep.GetAgentId(), rep.GetSeq(), at, strings.Join(problems, "; "))
	}
	return set, nil
}

// BadHistogramsWarning is the warning recorded for a refused report, both
// when it arrives and when the results are rebuilt, so the two match.
func BadHistogramsWarning(err error) string {
	return err.Error() + "; the interval's histograms are left out of the results, its request counts are kept"
}

// warnings collects a result's warnings: those recorded as events, and
// those Build derives from the events. A derived warning that was already
// recorded when the report arrived (the recorder writes it just before the
// report) is not repeated.
type warnings struct {
	list     []string
	recorded map[string]int
}

// addRecorded adds a warning read from a warning event.
func (w *warnings) addRecorded(msg string) {
	if w.recorded == nil {
		w.recorded = map[string]int{}
	}
	w.list = append(w.list, msg)
	w.recorded[msg]++
}

// addDerived adds a warning derived from the events, unless a recorded one
// with the same text is still unmatched.
func (w *warnings) addDerived(msg string) {
	if w.recorded[msg] > 0 {
		w.recorded[msg]--
		return
	}
	w.list = append(w.list, msg)
}

// usageNames are the usage sources' names in the deprecated string field
// and in reports.
var usageNames = map[pb.UsageSource]string{
	pb.UsageSource_USAGE_SOURCE_COUNTED:    "counted",
	pb.UsageSource_USAGE_SOURCE_FINAL:      "final",
	pb.UsageSource_USAGE_SOURCE_CONTINUOUS: "continuous",
}

// UsageName is a usage source's name ("continuous", "final", "counted"),
// or "" when unspecified or unknown.
func UsageName(u pb.UsageSource) string { return usageNames[u] }

// ReportUsage is a report's usage source: its usage field, or, from an
// older agent or event log, its deprecated usage_source string. An unknown
// value is unspecified.
func ReportUsage(rep *pb.IntervalReport) pb.UsageSource {
	if u := rep.GetUsage(); usageNames[u] != "" {
		return u
	}
	//lint:ignore SA1019 the deprecated string field is the fallback for older agents
	return ParseUsage(rep.GetUsageSource())
}

// ParseUsage is the usage source of a name ("continuous", "final",
// "counted"); unspecified for any other.
func ParseUsage(name string) pb.UsageSource {
	for u, n := range usageNames {
		if n == name {
			return u
		}
	}
	return pb.UsageSource_USAGE_SOURCE_UNSPECIFIED
}

// momentMetric reports whether m is a metric whose moments an agent sends.
func momentMetric(m string) bool {
	switch m {
	case hdr.TTFT, hdr.TPOT, hdr.ITL, hdr.ICL, hdr.E2E:
		return true
	}
	return false
}

// momentSlack is the relative rounding a float64 sum of squares may show
// against sum²/n; far above float64's, far below any real inconsistency.
const momentSlack = 1e-9

// checkMoments checks a report's exact moments against its decoded
// histograms: a known metric, once; count equal to the histogram's count;
// sums finite and non-negative; sum of squares at least sum²/count (within
// rounding) and at most count × max²; the mean inside the histogram's
// [min, max], widened by one HDR bucket (0.1 %) and the 1 µs the
// histogram rounds to. A report from an older agent carries none.
func checkMoments(rep *pb.IntervalReport, set hdr.Set) []string {
	var problems []string
	seen := map[string]bool{}
	for _, mo := range rep.GetMoments() {
		m := mo.GetMetric()
		switch {
		case !momentMetric(m):
			problems = append(problems, fmt.Sprintf("moments of unknown metric %q", m))
			continue
		case seen[m]:
			problems = append(problems, fmt.Sprintf("moments of %s sent twice", m))
			continue
		}
		seen[m] = true
		n, sum, sq := mo.GetCount(), mo.GetSumMs(), mo.GetSumSqMs()
		var hc int64
		h := set[m]
		if h != nil {
			hc = h.Count()
		}
		if int64(n) != hc || n > math.MaxInt64 {
			problems = append(problems, fmt.Sprintf("moments of %s count %d values but its histogram holds %d", m, n, hc))
			continue
		}
		if !finite(sum) || !finite(sq) || sum < 0 || sq < 0 {
			problems = append(problems, fmt.Sprintf("moments of %s are not finite and non-negative (sum %v ms, sum of squares %v ms²)", m, sum, sq))
			continue
		}
		if n == 0 {
			if sum != 0 || sq != 0 {
				problems = append(problems, fmt.Sprintf("moments of %s sum %v ms over no values", m, sum))
			}
			continue
		}
		fn := float64(n)
		if sq < sum*sum/fn*(1-momentSlack) {
			problems = append(problems, fmt.Sprintf("moments of %s: sum of squares %v ms² is below sum²/count = %v ms²: the sums are inconsistent", m, sq, sum*sum/fn))
			continue
		}
		s := h.Summarize()
		lo, hi := s.Min*(1-2e-3)-1e-3, s.Max*(1+2e-3)+1e-3
		if mean := sum / fn; mean < lo || (s.Max < float64(hdr.Highest)/1000 && mean > hi) {
			problems = append(problems, fmt.Sprintf("moments of %s: mean %v ms lies outside the histogram's [%v, %v] ms", m, mean, s.Min, s.Max))
			continue
		}
		if s.Max < float64(hdr.Highest)/1000 && sq > fn*hi*hi {
			problems = append(problems, fmt.Sprintf("moments of %s: sum of squares %v ms² is above count × max² = %v ms²", m, sq, fn*hi*hi))
		}
	}
	return problems
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

// checkPromptLens checks a report's prompt-length provenance: a known
// source, and counts that add up to the successful requests (or are all
// zero, from an older agent).
func checkPromptLens(rep *pb.IntervalReport) []string {
	var problems []string
	switch src := rep.GetPromptLenSource(); src {
	case "", PromptLenTokenize, PromptLenUsage, PromptLenEstimate:
	default:
		problems = append(problems, fmt.Sprintf("prompt_len_source %q is unknown", src))
	}
	pl := rep.GetPromptLens()
	t, u, e := pl.GetTokenize(), pl.GetUsage(), pl.GetEstimate()
	if ok := rep.GetRequestsOk(); t|u|e != 0 && (t > ok || u > ok-t || e != ok-t-u) {
		problems = append(problems, fmt.Sprintf("prompt_lens count %d+%d+%d requests but the report counts %d successful requests", t, u, e, rep.GetRequestsOk()))
	}
	return problems
}
