package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/oai"
)

// Run validates spec, waits for its start time and runs it, calling emit
// with one Report per interval and a last one with Final set. emit is called
// from Run's goroutine only, never concurrently; an emit error stops the run
// and is returned.
//
// When ctx is cancelled, Run stops sending requests at once, cancels those
// in flight (they are reported as Interrupted, not as failures), tries to
// emit the final report, and returns ctx.Err().
//
// When the load model's error budget is spent, Run stops the same way and
// returns nil: its final report's AbortReason says that the run failed and
// why. A closed-loop worker whose request failed before any response backs
// off (see Backoff) before its next one; open-loop arrivals keep their
// schedule.
func (a *Agent) Run(ctx context.Context, spec Spec, emit func(Report) error) error {
	if err := spec.Validate(); err != nil {
		return err
	}
	if spec.Load.Kind == "" && spec.Concurrency > a.cfg.MaxConcurrency {
		return fmt.Errorf("%w: concurrency %d exceeds this agent's limit of %d: lower concurrency or spread the load over more agents",
			ErrInvalidSpec, spec.Concurrency, a.cfg.MaxConcurrency)
	}
	if a.cfg.CheckTarget != nil {
		if err := a.cfg.CheckTarget(spec.Target.BaseURL); err != nil {
			return fmt.Errorf("%w: %s: %w", ErrTargetNotAllowed, spec.Target.BaseURL, err)
		}
	}
	pl, err := a.plan(&spec)
	if err != nil {
		return err
	}
	gen, err := NewGenerator(spec.Workload, spec.Generator, a.openDataset)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	if spec.Interval == 0 {
		spec.Interval = a.cfg.DefaultInterval
	}
	if spec.Timeout == 0 {
		spec.Timeout = a.cfg.DefaultTimeout
	}
	if spec.TTFTTimeout == 0 {
		spec.TTFTTimeout = a.cfg.TTFTTimeout
	}
	if spec.ConnectTimeout == 0 {
		spec.ConnectTimeout = a.cfg.ConnectTimeout
	}
	if spec.Target.API == "" {
		spec.Target.API = oai.APIChat
	}
	// The pool holds as many connections as requests may be in flight, so
	// that a request never waits for one once sent: in closed loop the
	// workers, in open loop the in-flight cap (whose semaphore is taken
	// before the send, so that its wait is dispatch lag).
	conns := pl.workers
	if pl.pacer != nil {
		conns = pl.inflightCap
	}
	tlsCfg, err := spec.Target.TLSConfig()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	sender, err := a.cfg.NewSender(oai.Config{
		MaxConns:       max(conns, 1),
		ConnectTimeout: spec.ConnectTimeout,
		TTFTTimeout:    spec.TTFTTimeout,
		Timeout:        spec.Timeout,
		TLS:            tlsCfg,
		Transport:      spec.Target.Transport,
		RxTimestamps:   spec.Target.FirstTokenClock,
	})
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidSpec, err)
	}
	defer sender.Close()

	log := a.log.With("run_id", spec.RunID, "agent_id", spec.AgentID)
	sized := false
	if tc, ok := sender.(TokenCounter); ok {
		sized, err = gen.SizeWithServer(ctx, tc, spec.Target)
		switch {
		case errors.Is(err, ErrInvalidSpec):
			return err
		case err != nil:
			log.Warn("prompt lengths are estimates", "err", err)
		case sized:
			log.Info("prompts sized with the server's tokenizer")
		}
	}
	r := newRun(spec, pl, gen, sender, a.cfg.MaxErrorSamples, a.log)
	r.obs = a.cfg.Observer
	if sized {
		r.promptLenSource = PromptLenTokenize
	}

	if wait := time.Until(spec.Start); !spec.Start.IsZero() && wait > 0 {
		log.Info("waiting for start barrier", "wait", wait)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			r.intervalStart = time.Now()
			_ = r.emit(emit, true)
			return ctx.Err()
		}
	}

	// t0 anchors the schedule: the barrier when there is one, so agents
	// that share a barrier share a schedule, with this clock's monotonic
	// reading so that timer waits ignore wall-clock steps.
	now := time.Now()
	r.t0 = now
	if !spec.Start.IsZero() {
		r.t0 = now.Add(spec.Start.Sub(now))
	}
	log.Info("run started", "target", spec.Target.BaseURL, "model", spec.Target.Model, "api", spec.Target.API,
		"load", pl.model.Kind, "segment", pl.seg.String(), "workers", pl.workers, "rate", pl.seg.ScaleRate(pl.model.Rate))
	r.intervalStart = now
	loadCtx, stopLoad := context.WithCancel(ctx)
	defer stopLoad()
	r.budget, r.abort = pl.model.errorBudget(now), stopLoad
	var wg sync.WaitGroup
	if pl.pacer != nil {
		wg.Go(func() { r.schedule(loadCtx, &wg) })
	} else {
		for w := range pl.workers {
			wg.Go(func() { r.work(loadCtx, uint64(w)) })
		}
	}
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()

	tick := time.NewTicker(spec.Interval)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			if err := r.emit(emit, false); err != nil {
				stopLoad()
				<-done
				log.Warn("run stopped: report not delivered", "err", err)
				return err
			}
		case <-done:
			err := r.emit(emit, true)
			r.mu.Lock()
			ok, failed, intr, reason := r.totalOK, r.totalFailed, r.totalIntr, r.abortReason
			r.mu.Unlock()
			if reason != "" {
				log.Warn("run aborted", "reason", reason, "ok", ok, "failed", failed, "interrupted", intr)
			}
			log.Info("run finished", "ok", ok, "failed", failed, "interrupted", intr, "reports", r.seq, "client_bound", r.clientBound)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return err
		}
	}
}

// run is the state of one Run. Fields under mu are shared with the request
// goroutines; the rest belong to Run's goroutine or are fixed.
type run struct {
	spec       Spec
	plan       *plan
	gen        *Generator
	sender     Sender
	log        *slog.Logger
	obs        Observer // nil: none
	maxSamples int
	records    bool
	base       oai.Request
	t0         time.Time
	// promptLenSource is PromptLenTokenize when the prompts were sized
	// with the server's tokenizer; fixed before the load starts.
	promptLenSource string
	sem             chan struct{} // open-loop in-flight cap; sized by the cap

	// Closed-loop index dispenser.
	dmu     sync.Mutex
	nextIdx uint64
	taken   int64

	mu           sync.Mutex
	meas, warm   acc
	lag          *hdr.Histogram // measured dispatch lag, cumulative
	clientBound  bool
	inFlight     int
	warmInFlight int
	scheduled    uint64
	nSamples     int
	totalOK      uint64
	totalFailed  uint64
	totalIntr    uint64
	measStart    time.Time
	measEnd      time.Time
	budget       *errorBudget // nil when off
	abortReason  string
	abort        func() // stops the load; set before it starts

	// streamedMeas and streamedWarm count the tokens streamed since the
	// last report, added by the client per chunk and swapped out by emit.
	streamedMeas, streamedWarm atomic.Uint64

	// Owned by Run's goroutine: the accumulators swapped in next, kept to
	// reuse their histograms.
	spareWarm, spareMeas acc
	seq                  uint64
	intervalStart        time.Time
}

func newRun(spec Spec, pl *plan, gen *Generator, sender Sender, maxSamples int, log *slog.Logger) *run {
	r := &run{
		spec:       spec,
		plan:       pl,
		gen:        gen,
		sender:     sender,
		log:        log,
		maxSamples: maxSamples,
		records:    spec.Records || spec.RecordMarks || len(spec.Labels) > 0,
		meas:       newAcc(),
		warm:       newAcc(),
		spareMeas:  newAcc(),
		spareWarm:  newAcc(),
		lag:        hdr.New(),
		base: oai.Request{
			BaseURL:     spec.Target.BaseURL,
			API:         spec.Target.API,
			Model:       spec.Target.Model,
			APIKey:      spec.Target.APIKey,
			Headers:     spec.Target.Headers,
			ExtraBody:   spec.Workload.ExtraBody,
			Temperature: spec.Workload.Temperature,
			Stream:      true,
		},
	}
	if pl.pacer != nil {
		r.sem = make(chan struct{}, pl.inflightCap)
	}
	return r
}

// take hands a closed-loop worker that became free at now its next global
// request index, and says whether it is warm-up.
func (r *run) take(now time.Time) (i uint64, warm, ok bool) {
	p := r.plan
	r.dmu.Lock()
	defer r.dmu.Unlock()
	el := now.Sub(r.t0)
	if p.endDur > 0 && el >= p.endDur {
		return 0, false, false
	}
	// The next index this segment owns, scanning no further than the bound.
	for i = r.nextIdx; !p.seg.Owns(i); i++ {
		if p.maxIdx > 0 && i >= p.maxIdx {
			return 0, false, false
		}
	}
	if p.maxIdx > 0 && i >= p.maxIdx {
		return 0, false, false
	}
	warm = i < p.warmHits || el < p.warmDur
	if !warm && p.quota >= 0 {
		if r.taken >= p.quota {
			return 0, false, false
		}
		r.taken++
	}
	r.nextIdx = i + 1
	return i, warm, true
}

// work is closed-loop worker w: its intended send time is the moment it
// becomes free, so its dispatch lag is the client's own overhead. After a
// request that failed before any response (a refused or timed-out connect,
// a reset) it waits out a jittered exponential backoff first, so that a
// dead target is not hammered in a hot loop; any response resets it. The
// wait is not dispatch lag: the next request's intended send time is when
// the wait ends.
func (r *run) work(ctx context.Context, w uint64) {
	bo := Backoff{Base: backoffBase, Max: backoffMax, Rand: rand.New(rand.NewPCG(r.plan.model.Seed, w)).Float64}
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for ctx.Err() == nil {
		free := time.Now()
		i, warm, ok := r.take(free)
		if !ok {
			return
		}
		r.begin(warm)
		if !r.do(ctx, i, free, warm, r.gen.Prompt(i)) {
			bo.Reset()
			continue
		}
		d := bo.Next()
		if end := r.plan.endDur; end > 0 {
			// No request starts after the end: waiting past it is pointless.
			d = min(d, max(time.Until(r.t0.Add(end)), 0))
		}
		if timer == nil {
			timer = time.NewTimer(d)
		} else {
			timer.Reset(d)
		}
		select {
		case <-timer.C:
		case <-ctx.Done():
			return
		}
	}
}

// schedule walks the global open-loop schedule and dispatches, at its
// intended time, each arrival this agent's segment owns, in a goroutine of
// its own: no arrival waits for an earlier one unless the in-flight cap is
// reached, and then the wait is dispatch lag. Request goroutines join wg.
func (r *run) schedule(ctx context.Context, wg *sync.WaitGroup) {
	p := r.plan
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for n := uint64(0); ; n++ {
		at, stop := p.pacer.Due(n)
		if stop {
			return
		}
		if !p.seg.Owns(n) {
			continue
		}
		sched := r.t0.Add(at)
		warm := n < p.warmHits
		prompt := r.gen.Prompt(n) // built before the due time, off the lag
		if d := time.Until(sched); d > 0 {
			timer.Reset(d)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return
			}
		}
		if ctx.Err() != nil {
			return
		}
		r.mu.Lock()
		r.scheduled++
		r.mu.Unlock()
		select {
		case r.sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		r.begin(warm)
		wg.Go(func() {
			defer func() { <-r.sem }()
			r.do(ctx, n, sched, warm, prompt)
		})
	}
}

func (r *run) begin(warm bool) {
	if r.obs != nil {
		r.obs.RequestStarted()
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.plan.pacer == nil {
		r.scheduled++
	}
	r.inFlight++
	if warm {
		r.warmInFlight++
	}
}

// do sends request i, intended at sched, and records it. It reports whether
// the request failed before any response, for the closed loop's backoff.
func (r *run) do(ctx context.Context, i uint64, sched time.Time, warm bool, p Prompt) (backoff bool) {
	req := r.base
	req.Prompt, req.MaxTokens, req.IgnoreEOS = p.Text, p.MaxTokens, p.IgnoreEOS
	req.Streamed = &r.streamedMeas
	if warm {
		req.Streamed = &r.streamedWarm
	}
	res := r.sender.Do(ctx, req)
	interrupted := res.Err != nil && res.Err.Kind == oai.KindCanceled && ctx.Err() != nil
	promptLen := p.Tokens
	if promptLen == 0 && (r.records || (res.OK() && res.PromptTokens <= 0)) {
		// Records show the estimate; a success the server sent no usage
		// for counts it toward its input tokens.
		promptLen = ApproxTokens(p.Text)
	}
	r.observe(int(i), sched, warm, interrupted, &res, promptLen)
	backoff = !interrupted && failedBeforeResponse(&res)
	res.Release() // observe keeps no reference to the marks.
	return backoff
}
