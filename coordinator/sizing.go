package coordinator

import (
	"fmt"
	"math"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
)

const (
	// DefaultMaxLevelDuration caps an auto-sized level.
	DefaultMaxLevelDuration = 3 * time.Minute
	// e2eGrowth allows for the next level's E2E being longer than the
	// level before's when a window is sized from the latter.
	e2eGrowth = 1.5
)

// sizeLevel chooses a level's measured duration when the sweep's duration is
// not pinned: the largest of the base duration, results.MinWindowE2E × e2eGrowth ×
// the previous level's E2E p50, and the time results.MinSuccessesP99 completions
// take at the next level (closed loop: next workers, each finishing one
// request per e2eGrowth × previous E2E p50; open loop: next req/s), capped
// by maxDur. prevE2E is 0 when the previous level measured no E2E (or this
// is the first level): the base is kept. It returns the duration and why.
func sizeLevel(base, maxDur time.Duration, closed bool, next float64, prevE2E time.Duration, prevName string) (time.Duration, string) {
	if prevE2E <= 0 {
		return base, fmt.Sprintf("default %v: no earlier level's E2E to size it from", base)
	}
	e2e := prevE2E.Seconds() * e2eGrowth
	window := results.MinWindowE2E * e2e
	var count float64
	if closed {
		count = results.MinSuccessesP99 * e2e / math.Max(next, 1)
	} else {
		count = results.MinSuccessesP99 / next
	}
	need := math.Max(window, count)
	d := max(base, time.Duration(need*float64(time.Second)).Round(100*time.Millisecond))
	why := fmt.Sprintf("max(default %v, %g × %g × E2E p50 %.2f s of %s = %.1f s, %d successes ≈ %.1f s)",
		base, results.MinWindowE2E, e2eGrowth, prevE2E.Seconds(), prevName, window, results.MinSuccessesP99, count)
	if maxDur > 0 && d > maxDur {
		return maxDur, why + fmt.Sprintf(", capped at the maximum %v", maxDur)
	}
	return d, why + fmt.Sprintf(" = %v", d)
}
