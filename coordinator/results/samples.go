package results

import (
	"fmt"
	"strings"

	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/orderstat"
)

// The sample rules of docs/metrics.md ("Enough samples").
const (
	// MinSuccessesP90 and MinSuccessesP99 are the fewest successful
	// requests a p90 or p99 is reported from without the insufficient mark.
	MinSuccessesP90 = 10
	MinSuccessesP99 = 20
	// MinWindowE2E is how many E2E p50s a level's measured window must
	// last: a shorter window holds mostly requests that started before it
	// or end after it, and its latencies are those of a ramp, not a level.
	MinWindowE2E = 3.0
	// CIMaxN is the sample size below which percentiles carry a confidence
	// interval; CIConfidence its level.
	CIMaxN       = 1000
	CIConfidence = 0.95
)

// CIBounds is a percentile's confidence interval in ms, [lo, hi]; a nil
// bound means the sample is too small to bound that side (JSON null).
type CIBounds [2]*float64

// quantileCI returns the CIConfidence order-statistic interval of h's
// q-quantile, or nil when h is empty or holds CIMaxN values or more.
func quantileCI(h *hdr.Histogram, q float64) *CIBounds {
	n := h.Count()
	if n == 0 || n >= CIMaxN {
		return nil
	}
	r, err := orderstat.QuantileRanks(int(n), q, CIConfidence)
	if err != nil {
		return nil
	}
	var ci CIBounds
	if r.Lo > 0 {
		ci[0] = ptr(h.ValueAtRankMs(int64(r.Lo)))
	}
	if r.Hi > 0 {
		ci[1] = ptr(h.ValueAtRankMs(int64(r.Hi)))
	}
	return &ci
}

// fmtCI renders an interval as " [380.0, 450.0]", " [380.0, ∞)" when it is
// unbounded above; "" for none.
func fmtCI(ci *CIBounds) string {
	if ci == nil {
		return ""
	}
	// Latencies are not negative, so an interval unbounded below starts at 0.
	lo, hi := "0", "∞)"
	if ci[0] != nil {
		lo = fmt.Sprintf("%.1f", *ci[0])
	}
	if ci[1] != nil {
		hi = fmt.Sprintf("%.1f]", *ci[1])
	}
	return fmt.Sprintf(" [%s, %s", lo, hi)
}

// sampleVerdict says whether a level (or a warm set) measured enough for
// its percentiles, and which percentiles it cannot support.
type sampleVerdict struct {
	Reasons []string
	// Marked are the percentiles ("p50", "p90", "p99") shown with ⚠.
	Marked []string
	// NeedWindowS is the window MinWindowE2E × E2E p50 asks for; 0 when
	// the E2E is unknown.
	NeedWindowS float64
}

func (v sampleVerdict) insufficient() bool { return len(v.Reasons) > 0 }

func (v sampleVerdict) marks(p string) bool {
	for _, m := range v.Marked {
		if m == p {
			return true
		}
	}
	return false
}

// judgeSamples applies the sample rules: fewer than MinSuccessesP99 (p99)
// or MinSuccessesP90 (p90) successes, or a window shorter than MinWindowE2E
// × E2E p50 (every percentile). windowS and e2eP50S are nil when unknown;
// that rule is then not applied.
func judgeSamples(successes uint64, windowS, e2eP50S *float64) sampleVerdict {
	var v sampleVerdict
	mark := func(ps ...string) {
		for _, p := range ps {
			if !v.marks(p) {
				v.Marked = append(v.Marked, p)
			}
		}
	}
	if windowS != nil && e2eP50S != nil && *e2eP50S > 0 {
		v.NeedWindowS = MinWindowE2E * *e2eP50S
		if *windowS < v.NeedWindowS {
			v.Reasons = append(v.Reasons, fmt.Sprintf("the %.1f s window is shorter than %g × E2E p50 (%.1f s)", *windowS, MinWindowE2E, v.NeedWindowS))
			mark("p50", "p90", "p99")
		}
	}
	switch {
	case successes < MinSuccessesP90:
		v.Reasons = append(v.Reasons, fmt.Sprintf("%d successes, fewer than the %d p90 and the %d p99 need", successes, MinSuccessesP90, MinSuccessesP99))
		mark("p90", "p99")
	case successes < MinSuccessesP99:
		v.Reasons = append(v.Reasons, fmt.Sprintf("%d successes, fewer than the %d p99 needs", successes, MinSuccessesP99))
		mark("p99")
	}
	return v
}

// insufficientObservation says what a marked level measured and what it
// would have needed, e.g. "c=4 …: 2 successes in a 6.0 s window with E2E
// p50 6.5 s; a window of at least 19.5 s (3 × E2E p50) and 20 successes are
// needed for p99 (at the measured 0.33 successes/s, 20 take about 60 s)".
// The window clause is left out when the window already met its rule.
func insufficientObservation(name string, l LevelResult) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s has too few samples for the percentiles marked ⚠: %d successes", name, l.Successes)
	if l.WindowS != nil {
		fmt.Fprintf(&b, " in a %.1f s window", *l.WindowS)
	}
	if s, ok := l.Metrics[hdr.E2E]; ok && s.Count > 0 {
		fmt.Fprintf(&b, " with E2E p50 %.1f s", s.P50/1000)
	}
	var need []string
	if l.NeedWindowS != nil && (l.WindowS == nil || *l.WindowS < *l.NeedWindowS) {
		need = append(need, fmt.Sprintf("a window of at least %.1f s (%g × E2E p50)", *l.NeedWindowS, MinWindowE2E))
	}
	need = append(need, fmt.Sprintf("%d successes", MinSuccessesP99))
	fmt.Fprintf(&b, "; %s are needed for p99", strings.Join(need, " and "))
	// How long a window would have collected them at the rate measured.
	if l.Successes > 0 && l.Successes < MinSuccessesP99 && l.WindowS != nil && *l.WindowS > 0 {
		rate := float64(l.Successes) / *l.WindowS
		fmt.Fprintf(&b, " (at the measured %.2f successes/s, %d take about %.0f s)", rate, MinSuccessesP99, float64(MinSuccessesP99)/rate)
	}
	switch {
	case l.Level == 0:
		b.WriteString("; the first level has no level before it to be sized from: give the levels a longer duration")
	case l.DurationReason == "" || strings.HasPrefix(l.DurationReason, "pinned"):
		b.WriteString("; leave the level duration unpinned and ttftlab sizes the windows from the level before")
	}
	b.WriteString(".")
	return b.String()
}
