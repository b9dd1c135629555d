package sim

import (
	"sync/atomic"
	"time"
)

// jitterBucket is the resolution of the step-jitter histogram.
const (
	jitterBucket  = 10 * time.Microsecond
	jitterBuckets = 1000 // 0–10 ms; later starts land in the last bucket
)

// jitterHist is a lock-free histogram of step-boundary lateness: how long
// after a step's modelled end (the modelled start of the next step) the
// loop really woke to publish its tokens and start the next one. One
// goroutine observes; any goroutine may read or reset.
type jitterHist struct {
	counts [jitterBuckets + 1]atomic.Uint64
	max    atomic.Int64
	// sim and wall sum, over the steps of busy periods, the modelled step
	// durations and the wall-clock time from one step boundary to the next.
	sim, wall atomic.Int64
}

// observeStep adds one busy step: d modelled, real measured.
func (h *jitterHist) observeStep(d, real time.Duration) {
	h.sim.Add(int64(d))
	h.wall.Add(int64(real))
}

func (h *jitterHist) observe(late time.Duration) {
	late = max(late, 0)
	i := min(int(late/jitterBucket), jitterBuckets)
	h.counts[i].Add(1)
	for {
		m := h.max.Load()
		if int64(late) <= m || h.max.CompareAndSwap(m, int64(late)) {
			return
		}
	}
}

func (h *jitterHist) reset() {
	for i := range h.counts {
		h.counts[i].Store(0)
	}
	h.max.Store(0)
	h.sim.Store(0)
	h.wall.Store(0)
}

// JitterStats summarises how late engine steps started against the
// timing model: a step is due when the previous one's modelled duration
// ends, and lateness is what the Go runtime, the OS and the simulator's own
// bookkeeping (scheduling, waking handlers) add. Quantiles are upper bounds
// with 10 µs resolution.
type JitterStats struct {
	// Steps is how many step boundaries were measured.
	Steps uint64
	// Late is how many steps started more than 1 ms late.
	Late           uint64
	P50, P99, P999 time.Duration
	Max            time.Duration
	// Simulated is the sum of the modelled step durations and Wall the
	// wall-clock time those steps took; Simulated/Wall below 1 means the
	// engine fell behind real time.
	Simulated, Wall time.Duration
}

// RealTimeRatio returns Simulated/Wall, or 0 when no step was measured.
func (s JitterStats) RealTimeRatio() float64 {
	if s.Wall <= 0 {
		return 0
	}
	return float64(s.Simulated) / float64(s.Wall)
}

func (h *jitterHist) stats() JitterStats {
	var counts [jitterBuckets + 1]uint64
	var n uint64
	for i := range counts {
		counts[i] = h.counts[i].Load()
		n += counts[i]
	}
	s := JitterStats{Steps: n, Max: time.Duration(h.max.Load()), Simulated: time.Duration(h.sim.Load()), Wall: time.Duration(h.wall.Load())}
	for i := int(time.Millisecond / jitterBucket); i <= jitterBuckets; i++ {
		s.Late += counts[i]
	}
	if n == 0 {
		return s
	}
	q := func(p float64) time.Duration {
		rank := uint64(p*float64(n-1)) + 1
		var cum uint64
		for i, c := range counts {
			cum += c
			if cum >= rank {
				if i == jitterBuckets {
					return s.Max
				}
				return min(time.Duration(i+1)*jitterBucket, s.Max)
			}
		}
		return s.Max
	}
	s.P50, s.P99, s.P999 = q(0.50), q(0.99), q(0.999)
	return s
}

// StepJitter returns the step-start jitter measured since the engine became
// ready or since the last ResetStepJitter. It is valid once Ready is closed.
func (e *Engine) StepJitter() JitterStats {
	if e.sched == nil {
		return JitterStats{}
	}
	return e.sched.jitter.stats()
}

// ResetStepJitter clears the step-jitter histogram.
func (e *Engine) ResetStepJitter() {
	if e.sched != nil {
		e.sched.jitter.reset()
	}
}
