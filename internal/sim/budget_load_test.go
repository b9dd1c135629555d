package sim

import (
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

// loadStats is what a virtual-time closed loop measured.
type loadStats struct {
	ttftP95, ttftLongP95, itlP95, itlMax time.Duration
	tokensPerS                           float64
}

// closedLoopVirtual drives the scheduler on a virtual clock (each step
// lasts what the PerfModel says, with no wall-clock sleeping, so the result
// is exact and independent of the host): conc clients each keep one request
// of a prompt uniform in [lo, hi] tokens and out output tokens in flight
// for dur. Long prompts are those above (lo+hi)/2.
func closedLoopVirtual(t *testing.T, chunked bool, budget, conc, lo, hi, out int, dur time.Duration) loadStats {
	t.Helper()
	s := testScheduler(t, 200000, 256, budget)
	s.chunked = chunked
	rng := rand.New(rand.NewPCG(1, 2))
	now := time.Unix(0, 0)
	type live struct {
		r    *request
		sent time.Time
		last time.Time
		seen int
		long bool
	}
	var next int
	submit := func() *live {
		n := lo + rng.IntN(hi-lo+1)
		next++
		r := newRequest("r", seqTokens(next*100000, n), out, now)
		if err := s.submit(r); err != nil {
			t.Fatal(err)
		}
		return &live{r: r, sent: now, long: n > (lo+hi)/2}
	}
	var reqs []*live
	for range conc {
		reqs = append(reqs, submit())
	}
	var ttft, ttftLong, itl []time.Duration
	tokens := 0
	warm := now.Add(2 * time.Second) // the opening burst is left out
	end := now.Add(dur)
	for now.Before(end) {
		s.drain(now)
		b := s.schedule(now)
		if len(b) == 0 {
			t.Fatal("empty batch with requests in flight")
		}
		now = now.Add(s.stepTime(b))
		s.complete(b, now)
		for i, l := range reqs {
			p := l.r.progress()
			if p.out > l.seen {
				if now.After(warm) {
					if l.seen == 0 {
						ttft = append(ttft, now.Sub(l.sent))
						if l.long {
							ttftLong = append(ttftLong, now.Sub(l.sent))
						}
					} else {
						itl = append(itl, now.Sub(l.last))
					}
					tokens += p.out - l.seen
				}
				l.seen, l.last = p.out, now
			}
			if p.done {
				reqs[i] = submit()
			}
		}
	}
	pct := func(v []time.Duration, q float64) time.Duration {
		if len(v) == 0 {
			t.Fatal("no samples")
		}
		slices.Sort(v)
		return v[min(len(v)-1, int(q*float64(len(v))))]
	}
	return loadStats{ttftP95: pct(ttft, 0.95), ttftLongP95: pct(ttftLong, 0.95), itlP95: pct(itl, 0.95), itlMax: pct(itl, 1),
		tokensPerS: float64(tokens) / end.Sub(warm).Seconds()}
}

// TestChunkingAndBudgetUnderLoad checks the directions vLLM documents for
// its scheduler knobs, under a closed loop of mixed prompts on a virtual
// clock: chunked prefill keeps decode steps short (ITL p95 and max down)
// against whole-prompt prefill at vLLM's non-chunked default budget
// (max_model_len), at some cost in long prompts' TTFT; and a smaller
// budget lowers ITL while raising TTFT under load.
func TestChunkingAndBudgetUnderLoad(t *testing.T) {
	const conc, lo, hi, out = 32, 500, 7500, 64
	const dur = 20 * time.Second
	off := closedLoopVirtual(t, false, 16384, conc, lo, hi, out, dur) // vLLM's default without chunking: max_model_len
	big := closedLoopVirtual(t, true, 8192, conc, lo, hi, out, dur)
	small := closedLoopVirtual(t, true, 1024, conc, lo, hi, out, dur)
	for _, x := range []struct {
		name string
		s    loadStats
	}{{"chunked off, budget 16384", off}, {"chunked, budget 8192", big}, {"chunked, budget 1024", small}} {
		t.Logf("%s: TTFT p95 %v (long prompts %v), ITL p95 %v, max %v, %.0f output tokens/s", x.name, x.s.ttftP95, x.s.ttftLongP95, x.s.itlP95, x.s.itlMax, x.s.tokensPerS)
	}
	tests := []struct {
		name string
		ok   bool
	}{
		{"chunked prefill lowers the largest ITL", big.itlMax < off.itlMax},
		{"chunked prefill lowers ITL p95", big.itlP95 <= off.itlP95},
		{"a smaller budget lowers ITL p95", small.itlP95 < big.itlP95},
		{"a smaller budget lowers the largest ITL", small.itlMax < big.itlMax},
		{"a smaller budget raises TTFT p95 under load", small.ttftP95 > big.ttftP95},
		{"a smaller budget raises long prompts' TTFT p95", small.ttftLongP95 > big.ttftLongP95},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.ok {
				t.Error("the simulator moves this the other way")
			}
		})
	}
}
