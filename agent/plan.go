package agent

import (
	"fmt"
	"time"

	"github.com/ttftlab/ttftlab/internal/segment"
)

// plan is a run's share of the load model, fixed before it starts.
type plan struct {
	model LoadModel
	seg   segment.Segment
	// workers is the closed-loop worker count.
	workers int
	// pacer is the open-loop schedule in global arrival indices, bounded.
	pacer Pacer
	// inflightCap bounds open-loop requests in flight: the run's semaphore,
	// acquired before a request is sent, and its connection pool's size.
	inflightCap int
	// warmHits: global indices below it are warm-up.
	warmHits uint64
	// warmDur: closed-loop requests started before it are warm-up.
	warmDur time.Duration
	// endDur: no request is started (closed) or due (open) from it on; 0
	// means none.
	endDur time.Duration
	// maxIdx: global indices from it on are not sent; 0 means none.
	maxIdx uint64
	// quota caps measured closed-loop requests (time-based warm-up); -1
	// means none.
	quota     int64
	threshold time.Duration
}

func (a *Agent) plan(spec *Spec) (*plan, error) {
	m := spec.load()
	p := &plan{model: m, seg: spec.Segment, quota: -1, endDur: m.totalDuration(), threshold: m.ClientBoundP99}
	if p.threshold == 0 {
		p.threshold = DefaultClientBoundP99
	}
	if !m.open() {
		// A segment may get no worker (more agents than workers): Validate
		// refused it if it owns requests under a request bound; bounded by
		// duration alone it has nothing to send and ends at once.
		p.workers = int(p.seg.Scale(int64(m.Concurrency)))
		if p.workers > a.cfg.MaxConcurrency {
			return nil, fmt.Errorf("%w: concurrency %d exceeds this agent's limit of %d: lower concurrency or spread the load over more agents",
				ErrInvalidSpec, p.workers, a.cfg.MaxConcurrency)
		}
		p.warmHits = uint64(m.WarmupRequests)
		p.warmDur = m.Warmup
		if m.Requests > 0 {
			if m.Warmup > 0 {
				p.quota = p.seg.Scale(m.Requests)
			} else {
				p.maxIdx = m.totalRequests()
			}
		}
		return p, nil
	}
	p.inflightCap = a.cfg.MaxConcurrency
	if m.MaxInFlight > 0 {
		p.inflightCap = min(p.inflightCap, max(int(p.seg.Scale(int64(m.MaxInFlight))), 1))
	}
	p.warmHits = uint64(m.WarmupRequests)
	if m.Warmup > 0 {
		// The arrivals due in the warm-up are warm-up; the request bound
		// counts the measured ones after them.
		base, err := NewPacer(LoadModel{Kind: m.Kind, Rate: m.Rate, StartRate: m.StartRate, Burstiness: m.Burstiness,
			Seed: m.Seed, Duration: m.totalDuration(), Warmup: 0})
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidSpec, err)
		}
		n := uint64(0)
		for ; ; n++ {
			at, stop := base.Due(n)
			if stop || at >= m.Warmup {
				break
			}
			if n >= maxWarmupHits {
				return nil, fmt.Errorf("%w: load.warmup %v holds more than %d requests at rate %g: shorten the warm-up", ErrInvalidSpec, m.Warmup, maxWarmupHits, m.Rate)
			}
		}
		p.warmHits = n
		m.WarmupRequests = int64(n)
	}
	pacer, err := NewPacer(m)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	p.pacer = pacer
	return p, nil
}
