package sim

import (
	"errors"
	"testing"
	"time"
)

// testScheduler returns a scheduler for Qwen2.5-1.5B on an H200 with
// numBlocks KV blocks, driven synchronously by the test.
func testScheduler(t testing.TB, numBlocks, maxSeqs, budget int) *scheduler {
	t.Helper()
	m, _ := LookupModel("Qwen/Qwen2.5-1.5B-Instruct")
	g, _ := LookupGPU("h200")
	return newScheduler(schedulerConfig{
		perf:                NewPerfModel(m, g, DefaultPerfParams(), false),
		numBlocks:           numBlocks,
		prefixCaching:       true,
		maxNumSeqs:          maxSeqs,
		maxNumBatchedTokens: budget,
		tok:                 newTokenizer(m.Vocab, 0),
		met:                 newMetrics("m", 32768, time.Now()),
	})
}

// step runs one schedule/complete cycle and returns the batch.
func step(s *scheduler) []scheduledWork {
	s.drain(time.Now())
	b := s.schedule(time.Now())
	s.complete(b, time.Now())
	return b
}

func TestChunkedPrefill(t *testing.T) {
	s := testScheduler(t, 10000, 256, 2048)
	r := newRequest("r", seqTokens(0, 5000), 3, time.Now())
	if err := s.submit(r); err != nil {
		t.Fatal(err)
	}
	var chunks []int
	for i := 0; i < 10 && !r.progress().done; i++ {
		for _, w := range step(s) {
			chunks = append(chunks, w.n)
		}
	}
	want := []int{2048, 2048, 904, 1, 1}
	if len(chunks) != len(want) {
		t.Fatalf("chunks %v, want %v", chunks, want)
	}
	for i := range want {
		if chunks[i] != want[i] {
			t.Fatalf("chunks %v, want %v", chunks, want)
		}
	}
	if p := r.progress(); !p.done || p.out != 3 || p.reason != "length" {
		t.Errorf("progress %+v, want done with 3 tokens, length", p)
	}
	if u := s.kv.pool.usage(); u != 0 {
		t.Errorf("KV usage after finish = %v, want 0", u)
	}
}

func TestMaxNumSeqsAndBudget(t *testing.T) {
	tests := []struct {
		name             string
		maxSeqs, budget  int
		prompts          []int
		wantFirstBatchNs []int
	}{
		{"seq cap", 2, 8192, []int{10, 10, 10}, []int{10, 10}},
		{"token budget shares by FCFS", 256, 100, []int{60, 60, 60}, []int{60, 40}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := testScheduler(t, 1000, tt.maxSeqs, tt.budget)
			for i, n := range tt.prompts {
				if err := s.submit(newRequest("r", seqTokens(i*1000, n), 5, time.Now())); err != nil {
					t.Fatal(err)
				}
			}
			b := step(s)
			if len(b) != len(tt.wantFirstBatchNs) {
				t.Fatalf("batch of %d, want %d", len(b), len(tt.wantFirstBatchNs))
			}
			for i, w := range b {
				if w.n != tt.wantFirstBatchNs[i] {
					t.Errorf("batch[%d].n = %d, want %d", i, w.n, tt.wantFirstBatchNs[i])
				}
			}
		})
	}
}

func TestPreemptionCompletesEveryRequest(t *testing.T) {
	s := testScheduler(t, 1+12, 256, 8192) // 12 usable blocks = 192 tokens
	var reqs []*request
	for i := range 3 {
		r := newRequest("r", seqTokens(i*1000, 40), 60, time.Now()) // 100 tokens = 7 blocks each at the end
		reqs = append(reqs, r)
		if err := s.submit(r); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 2000; i++ {
		done := true
		for _, r := range reqs {
			done = done && r.progress().done
		}
		if done {
			break
		}
		step(s)
	}
	for i, r := range reqs {
		if p := r.progress(); !p.done || p.out != 60 || p.err != nil {
			t.Errorf("request %d: %+v, want done with 60 tokens", i, p)
		}
	}
	if s.met.preemptions == 0 {
		t.Error("no preemption counted with a KV cache too small for the batch")
	}
	if u := s.kv.pool.usage(); u != 0 {
		t.Errorf("KV usage at the end = %v, want 0", u)
	}
}

func TestRequestThatCannotFitIsFailed(t *testing.T) {
	s := testScheduler(t, 1+2, 256, 8192) // 32 tokens of KV
	r := newRequest("big", seqTokens(0, 40), 1, time.Now())
	if err := s.submit(r); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5 && !r.progress().done; i++ {
		step(s)
	}
	if p := r.progress(); !p.done || !errors.Is(p.err, errCannotFit) {
		t.Errorf("progress %+v, want failed with errCannotFit", p)
	}
	// A request that fits its prompt but not its decode fails too, rather
	// than being preempted and recomputed forever.
	r2 := newRequest("grows", seqTokens(100, 20), 30, time.Now())
	if err := s.submit(r2); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 100 && !r2.progress().done; i++ {
		step(s)
	}
	if p := r2.progress(); !p.done || !errors.Is(p.err, errCannotFit) {
		t.Errorf("progress %+v, want failed with errCannotFit", p)
	}
}

func TestAbortFreesBlocks(t *testing.T) {
	s := testScheduler(t, 100, 256, 8192)
	r := newRequest("r", seqTokens(0, 200), 100, time.Now())
	if err := s.submit(r); err != nil {
		t.Fatal(err)
	}
	step(s)
	if s.kv.pool.usage() == 0 {
		t.Fatal("no KV in use while running")
	}
	s.abort(r)
	s.drain(time.Now())
	if u := s.kv.pool.usage(); u != 0 || len(s.running) != 0 {
		t.Errorf("after abort: usage %v, running %d; want 0, 0", u, len(s.running))
	}
	if p := r.progress(); !p.done || p.reason != "abort" {
		t.Errorf("progress %+v, want aborted", p)
	}
}

// BenchmarkStep measures one scheduler step (schedule, step-time model,
// complete) with 256 running requests decoding at ~1k context and new
// requests arriving as others finish.
func BenchmarkStep(b *testing.B) {
	s := testScheduler(b, 200000, 256, 8192)
	newReq := func(i int) *request { return newRequest("r", seqTokens(i*7, 1000), 128, time.Time{}) }
	for i := range 256 {
		s.submit(newReq(i)) //nolint:errcheck // open scheduler
	}
	s.drain(time.Now())
	next := 256
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		now := time.Now()
		batch := s.schedule(now)
		_ = s.stepTime(batch)
		s.complete(batch, now)
		for len(s.running)+len(s.waiting) < 256 {
			r := newReq(next)
			next++
			r.state = stateWaiting
			s.waiting = append(s.waiting, r)
		}
	}
}
