package agent

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// Error budget defaults.
const (
	// DefaultMaxErrorRate is the failed fraction of the attempts finished
	// in one window above which a run ends as failed.
	DefaultMaxErrorRate = 0.5
	// DefaultErrorWindow is the error budget's sliding window.
	DefaultErrorWindow = 5 * time.Second
	// minBudgetAttempts is the number of attempts a window must hold before
	// the budget can be spent, so one early error does not end a run.
	minBudgetAttempts = 10
	// budgetBuckets is the window's resolution.
	budgetBuckets = 50
)

// errorBudget counts the attempts finished in a sliding window, in
// budgetBuckets buckets, and says when the failed fraction passes the
// limit. It is not safe for concurrent use; the run holds it under its
// mutex.
type errorBudget struct {
	maxRate float64
	window  time.Duration
	width   time.Duration
	t0      time.Time
	buckets [budgetBuckets]budgetBucket
}

type budgetBucket struct {
	slot   int64 // the bucket's index since t0; -1 when empty
	ok     uint64
	failed uint64
	kinds  map[string]uint64
}

// newErrorBudget returns a budget that trips when more than maxRate of the
// attempts finished in any window fail; nil when maxRate ≥ 1 (never
// passed) or negative (off).
func newErrorBudget(maxRate float64, window time.Duration, t0 time.Time) *errorBudget {
	if maxRate < 0 || maxRate >= 1 {
		return nil
	}
	b := &errorBudget{maxRate: maxRate, window: window, width: max(window/budgetBuckets, time.Millisecond), t0: t0}
	for i := range b.buckets {
		b.buckets[i].slot = -1
	}
	return b
}

// add records one finished attempt at now (kind empty for a success) and
// returns a reason when the budget is spent.
func (b *errorBudget) add(now time.Time, kind string) (reason string) {
	slot := int64(max(now.Sub(b.t0), 0) / b.width)
	bk := &b.buckets[slot%budgetBuckets]
	if bk.slot != slot {
		bk.slot, bk.ok, bk.failed = slot, 0, 0
		clear(bk.kinds)
	}
	if kind == "" {
		bk.ok++
		return ""
	}
	bk.failed++
	if bk.kinds == nil {
		bk.kinds = map[string]uint64{}
	}
	bk.kinds[kind]++
	var ok, failed uint64
	oldest := slot - budgetBuckets + 1
	for i := range b.buckets {
		if c := &b.buckets[i]; c.slot >= oldest && c.slot <= slot {
			ok += c.ok
			failed += c.failed
		}
	}
	n := ok + failed
	if n < minBudgetAttempts || float64(failed) <= b.maxRate*float64(n) {
		return ""
	}
	kinds := map[string]uint64{}
	for i := range b.buckets {
		if c := &b.buckets[i]; c.slot >= oldest && c.slot <= slot {
			for k, v := range c.kinds {
				kinds[k] += v
			}
		}
	}
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool {
		if kinds[names[i]] != kinds[names[j]] {
			return kinds[names[i]] > kinds[names[j]]
		}
		return names[i] < names[j]
	})
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s=%d", k, kinds[k])
	}
	return fmt.Sprintf("error budget spent: %d of %d attempts (%.0f%%) failed within %v, over the %.0f%% limit: %s",
		failed, n, 100*float64(failed)/float64(n), b.window, 100*b.maxRate, strings.Join(parts, " "))
}

// errorBudget returns the run's error budget, or nil when it is off.
func (m *LoadModel) errorBudget(t0 time.Time) *errorBudget {
	rate, window := m.MaxErrorRate, m.ErrorWindow
	if rate == 0 {
		rate = DefaultMaxErrorRate
	}
	if window == 0 {
		window = DefaultErrorWindow
	}
	return newErrorBudget(rate, window, t0)
}
