package sim

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Errors a request can end with.
var (
	errEngineStopped = errors.New("engine stopped")
	errCannotFit     = errors.New("request does not fit in the KV cache even alone")
)

// reqState is where a request sits in the scheduler.
type reqState int

const (
	stateNew reqState = iota
	stateWaiting
	stateRunning
	stateFinished
)

// request is one generation request. Fields above mu are owned by the
// scheduler goroutine once submitted; fields under mu are shared with the
// HTTP handler that waits on notify.
type request struct {
	id        string
	promptLen int
	maxTokens int
	arrival   time.Time

	tokens          []uint32 // prompt then generated token ids
	numComputed     int      // tokens whose KV is computed
	blocks          []int32
	blockHashes     []uint64
	numCachedBlocks int // leading blocks registered in the prefix cache
	state           reqState
	queued          time.Time
	scheduled       time.Time // first scheduled
	firstToken      time.Time
	lastToken       time.Time

	notify chan struct{} // capacity 1: a pending wake-up is enough

	mu     sync.Mutex
	out    int // generated tokens so far
	done   bool
	reason string // finish_reason: "length", "stop" or "abort"
	err    error
	cached int // prompt tokens served from the prefix cache
}

func newRequest(id string, prompt []uint32, maxTokens int, arrival time.Time) *request {
	return &request{
		id:        id,
		promptLen: len(prompt),
		maxTokens: maxTokens,
		arrival:   arrival,
		tokens:    prompt,
		notify:    make(chan struct{}, 1),
	}
}

// progress is what a handler sees of a request.
type progress struct {
	out    int
	done   bool
	reason string
	err    error
	cached int
}

func (r *request) progress() progress {
	r.mu.Lock()
	defer r.mu.Unlock()
	return progress{out: r.out, done: r.done, reason: r.reason, err: r.err, cached: r.cached}
}

func (r *request) wake() {
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// scheduledWork is one request's share of a step: n new tokens on top of
// ctx computed ones.
type scheduledWork struct {
	req    *request
	n, ctx int
}

// scheduler is vLLM V1's continuous-batching scheduler and step loop
// (vllm/v1/core/sched/scheduler.py): one goroutine schedules a batch, sleeps
// the step time the PerfModel gives in real time, then applies the step.
// Other goroutines talk to it through submit and abort only.
type scheduler struct {
	perf     *PerfModel
	kv       *kvManager
	met      *metrics
	tok      tokenizer
	maxSeqs  int
	budget   int
	chunked  bool // chunked prefill: a prompt may span steps
	lazyInit time.Duration

	inboxMu sync.Mutex
	inbox   []*request
	aborts  []*request
	resets  []chan<- resetResult
	closed  bool
	wakeCh  chan struct{} // capacity 1: a pending wake-up is enough

	// sleeping pauses the step loop (POST /sleep); requests queue meanwhile.
	sleeping atomic.Bool

	// jitter records how late each step starts against its modelled start.
	jitter jitterHist

	// Owned by the loop goroutine.
	waiting     []*request
	running     []*request
	lazyPending bool
	noopReset   bool
}

type schedulerConfig struct {
	perf                *PerfModel
	numBlocks           int
	prefixCaching       bool
	seed                int64
	maxNumSeqs          int
	maxNumBatchedTokens int
	// noChunkedPrefill is --no-enable-chunked-prefill: a waiting request
	// is scheduled only when its whole prompt fits in the step's budget.
	noChunkedPrefill bool
	lazyInit         time.Duration
	tok              tokenizer
	met              *metrics
	// noopReset is Config.TestNoopPrefixReset.
	noopReset bool
}

func newScheduler(c schedulerConfig) *scheduler {
	return &scheduler{
		perf:        c.perf,
		kv:          newKVManager(c.numBlocks, c.prefixCaching, c.seed),
		met:         c.met,
		tok:         c.tok,
		maxSeqs:     c.maxNumSeqs,
		budget:      c.maxNumBatchedTokens,
		chunked:     !c.noChunkedPrefill,
		lazyInit:    c.lazyInit,
		lazyPending: c.lazyInit > 0,
		noopReset:   c.noopReset,
		wakeCh:      make(chan struct{}, 1),
	}
}

// submit hands r to the scheduler. It fails once the scheduler has stopped.
func (s *scheduler) submit(r *request) error {
	s.inboxMu.Lock()
	if s.closed {
		s.inboxMu.Unlock()
		return errEngineStopped
	}
	s.inbox = append(s.inbox, r)
	s.inboxMu.Unlock()
	s.wake()
	return nil
}

// abort asks the scheduler to drop r and free its KV blocks.
func (s *scheduler) abort(r *request) {
	s.inboxMu.Lock()
	if !s.closed {
		s.aborts = append(s.aborts, r)
	}
	s.inboxMu.Unlock()
	s.wake()
}

// resetResult is the answer to a prefix-cache reset: ok, or the number of
// blocks still in use that prevented it.
type resetResult struct {
	ok   bool
	used int
}

// resetPrefixCache asks the loop to drop every cached block hash, as
// vLLM's reset_prefix_cache does; it fails while any block is in use.
func (s *scheduler) resetPrefixCache(ctx context.Context) (resetResult, error) {
	ch := make(chan resetResult, 1) // the loop answers without waiting
	s.inboxMu.Lock()
	if s.closed {
		s.inboxMu.Unlock()
		return resetResult{}, errEngineStopped
	}
	s.resets = append(s.resets, ch)
	s.inboxMu.Unlock()
	s.wake()
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		return resetResult{}, ctx.Err()
	}
}

// setSleeping pauses or resumes the step loop.
func (s *scheduler) setSleeping(v bool) {
	s.sleeping.Store(v)
	s.wake()
}

func (s *scheduler) wake() {
	select {
	case s.wakeCh <- struct{}{}:
	default:
	}
}

// maxCatchUp bounds how late a step may start and still be charged from
// the previous step's deadline (see run).
const maxCatchUp = 5 * time.Millisecond

// Spin-wait bounds: the loop's timer fires spinEarly before a deadline and
// the goroutine spins the rest, so Go-runtime wake-up latency (a timer
// goroutine waits behind runnable HTTP handlers on a busy 2-core host) is
// absorbed by the margin instead of delaying the step. The margin adapts to
// the observed wake-up latency.
const (
	minSpinEarly = 50 * time.Microsecond
	maxSpinEarly = 2 * time.Millisecond
)

// run is the step loop. It returns when ctx is done, ending every request
// it holds with errEngineStopped.
//
// Steps are chained on deadlines: while the engine stays busy, a step starts
// at the previous step's modelled end rather than when the timer actually
// fired, so lateness does not accumulate and the mean step time matches the
// model. A step that starts more than maxCatchUp late (the process was
// descheduled) is charged from now. How late each step really started is
// recorded in s.jitter.
func (s *scheduler) run(ctx context.Context) {
	defer s.stop()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var deadline time.Time // modelled end of the previous step; zero after idle
	var boundary time.Time // when the previous step really ended; zero after idle
	early := 500 * time.Microsecond
	for {
		s.drain(time.Now())
		if (len(s.running) == 0 && len(s.waiting) == 0) || s.sleeping.Load() {
			s.publishGauges()
			deadline, boundary = time.Time{}, time.Time{}
			select {
			case <-ctx.Done():
				return
			case <-s.wakeCh:
				continue
			}
		}
		start := time.Now()
		if boundary.IsZero() {
			boundary = start
		}
		if !deadline.IsZero() && start.Sub(deadline) < maxCatchUp {
			start = deadline
		}
		batch := s.schedule(start)
		s.publishGauges()
		if len(batch) == 0 {
			// A preemption emptied the batch; the next pass admits or fails
			// the requeued request, so the loop always makes progress.
			continue
		}
		d := s.stepTime(batch)
		if s.lazyPending {
			d += s.lazyInit
			s.lazyPending = false
		}
		deadline = start.Add(d)
		if wait := time.Until(deadline) - early; wait > 0 {
			timer.Reset(wait)
			select {
			case <-ctx.Done():
				return
			case <-timer.C:
			}
			// Adapt the margin to how late the timer goroutine ran.
			woke := time.Until(deadline)
			lag := early - woke
			early = min(max(early+(2*lag-early)/8, minSpinEarly), maxSpinEarly)
		}
		for time.Now().Before(deadline) {
			// Spin: yielding here would queue the loop behind every
			// runnable handler.
		}
		now := time.Now()
		s.jitter.observe(now.Sub(deadline))
		s.jitter.observeStep(d, now.Sub(boundary))
		boundary = now
		s.complete(batch, now)
	}
}

// stop ends every request with errEngineStopped and refuses new ones.
func (s *scheduler) stop() {
	s.inboxMu.Lock()
	s.closed = true
	pending, resets := s.inbox, s.resets
	s.inbox, s.aborts, s.resets = nil, nil, nil
	s.inboxMu.Unlock()
	for _, ch := range resets {
		ch <- resetResult{}
	}
	for _, r := range slices.Concat(pending, s.waiting, s.running) {
		s.end(r, "abort", errEngineStopped, time.Now())
	}
	s.waiting, s.running = nil, nil
}

// drain moves submitted requests to the waiting queue and applies aborts.
func (s *scheduler) drain(now time.Time) {
	s.inboxMu.Lock()
	in, ab, rs := s.inbox, s.aborts, s.resets
	s.inbox, s.aborts, s.resets = nil, nil, nil
	s.inboxMu.Unlock()
	for _, ch := range rs {
		used := s.kv.pool.usable() - s.kv.pool.numFree
		ok := used == 0
		if ok && !s.noopReset {
			s.kv.pool.resetCache()
			s.met.resetPrefixStats()
		}
		ch <- resetResult{ok: ok, used: used}
	}
	for _, r := range in {
		r.state = stateWaiting
		r.queued = now
		s.waiting = append(s.waiting, r)
	}
	for _, r := range ab {
		switch r.state {
		case stateWaiting:
			s.waiting = slices.DeleteFunc(s.waiting, func(x *request) bool { return x == r })
		case stateRunning:
			s.running = slices.DeleteFunc(s.running, func(x *request) bool { return x == r })
		default:
			continue
		}
		s.end(r, "abort", nil, now)
	}
}

// schedule forms the next batch: running requests first (decodes and the
// rest of chunked prefills), then waiting requests FCFS while the token
// budget and max_num_seqs last (without chunked prefill, only those whose
// whole prompt fits in the budget left). A running request that cannot get a KV block
// preempts the last running request; no new request is admitted in a step
// that preempted.
func (s *scheduler) schedule(now time.Time) []scheduledWork {
	budget := s.budget
	var batch []scheduledWork
	preempted := false
	for i := 0; i < len(s.running) && budget > 0; {
		r := s.running[i]
		n := min(len(r.tokens)-r.numComputed, budget)
		ok := true
		for !s.kv.allocate(r, nil, n) {
			victim := s.running[len(s.running)-1]
			s.running = s.running[:len(s.running)-1]
			if victim == r && i == 0 {
				// Alone and still short of blocks: it can never run. Fail
				// it rather than requeue it forever.
				s.end(r, "abort", errCannotFit, now)
			} else {
				s.preempt(victim)
				preempted = true
			}
			if victim == r {
				ok = false
				break
			}
		}
		if !ok {
			break
		}
		batch = append(batch, scheduledWork{req: r, n: n, ctx: r.numComputed})
		budget -= n
		i++
	}
	if preempted {
		return batch
	}
	// Without chunked prefill a request whose remaining tokens exceed the
	// budget left is skipped for this step and keeps its place (vLLM's
	// skipped_waiting_requests); later, smaller requests may still go.
	for i := 0; i < len(s.waiting) && budget > 0 && len(s.running) < s.maxSeqs; {
		r := s.waiting[i]
		hit := s.kv.computedBlocks(r)
		hitTokens := len(hit) * BlockSize
		n := len(r.tokens) - hitTokens
		if !s.chunked && n > budget {
			i++
			continue
		}
		n = min(n, budget)
		if !s.kv.allocate(r, hit, n) {
			if len(s.running) == 0 {
				s.waiting = slices.Delete(s.waiting, i, i+1)
				s.end(r, "abort", errCannotFit, now)
				continue
			}
			break
		}
		s.waiting = slices.Delete(s.waiting, i, i+1)
		if s.kv.pool.caching {
			s.met.observePrefixQuery(len(r.tokens), hitTokens)
		}
		if r.scheduled.IsZero() {
			r.scheduled = now
			if now.Before(r.queued) { // now is a chained deadline (see run)
				r.scheduled = r.queued
			}
			r.mu.Lock()
			r.cached = hitTokens
			r.mu.Unlock()
		}
		r.state = stateRunning
		s.running = append(s.running, r)
		batch = append(batch, scheduledWork{req: r, n: n, ctx: hitTokens})
		budget -= n
	}
	return batch
}

// preempt frees r's blocks and puts it back at the head of the waiting
// queue; it will recompute its prompt and output so far (hitting its own
// cached blocks when they survive).
func (s *scheduler) preempt(r *request) {
	s.kv.free(r)
	r.state = stateWaiting
	s.waiting = slices.Insert(s.waiting, 0, r)
	s.met.observePreemption()
}

// stepTime is the modelled duration of batch.
func (s *scheduler) stepTime(batch []scheduledWork) time.Duration {
	work := make([]SeqWork, len(batch))
	for i, w := range batch {
		work[i] = SeqWork{NewTokens: w.n, Context: w.ctx}
	}
	return s.perf.StepTime(work)
}

// complete applies a finished step at time now: it advances each request,
// samples a token for every request whose tokens are all computed, and
// finishes requests that reached max_tokens.
func (s *scheduler) complete(batch []scheduledWork, now time.Time) {
	var finished []*request
	iterTokens := 0 // vLLM: prompt tokens of finished prefills + new tokens
	for _, w := range batch {
		r := w.req
		if r.state != stateRunning {
			continue
		}
		r.numComputed += w.n
		s.kv.cacheFull(r)
		if r.numComputed < len(r.tokens) {
			continue // a prefill chunk that is not the last
		}
		k := len(r.tokens) - r.promptLen // index of the new token
		r.tokens = append(r.tokens, s.tok.outputID(k))
		iterTokens++
		if k == 0 {
			r.firstToken = now
			iterTokens += r.promptLen
			s.met.observePrefillDone(r.promptLen, now.Sub(r.arrival))
		}
		s.met.observeToken(now.Sub(r.lastToken), k == 0)
		r.lastToken = now
		r.mu.Lock()
		r.out = k + 1
		r.mu.Unlock()
		if k+1 >= r.maxTokens {
			finished = append(finished, r)
			continue
		}
		r.wake()
	}
	// The step's metrics are recorded before any handler learns its request
	// finished, so a client that reads /metrics after its response sees them.
	if iterTokens > 0 {
		s.met.observeIteration(iterTokens)
	}
	for _, r := range finished {
		s.end(r, "length", nil, now)
	}
	if len(finished) > 0 {
		s.running = slices.DeleteFunc(s.running, func(x *request) bool { return x.state == stateFinished })
	}
	s.publishGauges()
}

// end finishes r: frees its blocks, records its metrics and wakes its handler.
// The caller removes r from the queues.
func (s *scheduler) end(r *request, reason string, err error, now time.Time) {
	if r.state == stateFinished {
		return
	}
	s.kv.free(r)
	r.state = stateFinished
	t := requestTimes{
		arrival: r.arrival, queued: r.queued, scheduled: r.scheduled,
		firstToken: r.firstToken, lastToken: r.lastToken, finished: now,
		promptTokens: r.promptLen, outputTokens: len(r.tokens) - r.promptLen, maxTokens: r.maxTokens, reason: reason,
	}
	if err != nil {
		t.reason = "abort"
	}
	s.met.observeFinished(t)
	r.mu.Lock()
	r.done, r.reason, r.err = true, reason, err
	r.mu.Unlock()
	r.wake()
}

func (s *scheduler) publishGauges() {
	s.met.setGauges(len(s.running), len(s.waiting), s.kv.pool.usage())
}
