package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/oai"
	"github.com/ttftlab/ttftlab/internal/oai/oaitest"
	"github.com/ttftlab/ttftlab/internal/segment"
)

// fakeEngine stands in for the server inside a synctest bubble, where time
// is virtual: a request waits for one of slots (0: no limit; the wait is the
// server's queue, so it counts in TTFT), then its first token comes ttft
// later and the rest gap apart.
type fakeEngine struct {
	ttft, gap time.Duration
	tokens    int
	slots     chan struct{}

	mu      sync.Mutex
	open    int
	maxOpen int
}

func newFakeEngine(ttft, gap time.Duration, tokens, slots int) *fakeEngine {
	f := &fakeEngine{ttft: ttft, gap: gap, tokens: tokens}
	if slots > 0 {
		f.slots = make(chan struct{}, slots)
	}
	return f
}

// Do serves req in virtual time; fakeEngine is the Sender of fakeAgent.
func (f *fakeEngine) Do(ctx context.Context, req oai.Request) oai.Result {
	r := oai.Result{Send: time.Now(), CachedTokens: -1, Preview: req.Prompt}
	f.mu.Lock()
	f.open++
	f.maxOpen = max(f.maxOpen, f.open)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.open--
		f.mu.Unlock()
	}()
	if f.slots != nil {
		f.slots <- struct{}{}
		defer func() { <-f.slots }()
	}
	time.Sleep(f.ttft)
	r.FirstToken = time.Now()
	r.Marks = append(r.Marks, oai.Mark{At: r.FirstToken.Sub(r.Send), Tokens: 1})
	for range f.tokens - 1 {
		time.Sleep(f.gap)
		r.Marks = append(r.Marks, oai.Mark{At: time.Since(r.Send), Tokens: 1})
	}
	r.Last, r.Done = time.Now(), time.Now()
	r.OutputTokens, r.UsageSource = f.tokens, oai.UsageContinuous
	return r
}

// Close implements Sender.
func (f *fakeEngine) Close() {}

func fakeAgent(f *fakeEngine) *Agent {
	cfg := DefaultConfig()
	cfg.NewSender = func(oai.Config) (Sender, error) { return f, nil }
	return New(cfg, nil)
}

func loadSpec(m LoadModel) Spec {
	s := testSpec("http://127.0.0.1:8000")
	s.Concurrency, s.Requests = 0, 0
	s.Load = m
	s.Records = true
	s.Interval = 100 * time.Millisecond
	return s
}

// split returns the warm-up and measured reports.
func split(reps []Report) (warm, meas []Report) {
	for _, r := range reps {
		if r.Warmup {
			warm = append(warm, r)
		} else {
			meas = append(meas, r)
		}
	}
	return warm, meas
}

func records(reps []Report) []Record {
	var out []Record
	for _, r := range reps {
		out = append(out, r.Records...)
	}
	slices.SortFunc(out, func(a, b Record) int { return a.Index - b.Index })
	return out
}

func TestOpenLoopSendsAtIntendedTimes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Each request takes 1 s, ten times the gap between arrivals: an
		// open loop must not wait for them.
		f := newFakeEngine(time.Second, 10*time.Millisecond, 3, 0)
		spec := loadSpec(LoadModel{Kind: LoadConstant, Rate: 10, Requests: 10})
		spec.Start = time.Now().Add(time.Second)
		reps, err := collect(t, context.Background(), fakeAgent(f), spec)
		if err != nil {
			t.Fatal(err)
		}
		checkSequence(t, reps)
		recs := records(reps)
		if len(recs) != 10 {
			t.Fatalf("%d records, want 10", len(recs))
		}
		for i, rec := range recs {
			want := spec.Start.Add(time.Duration(i) * 100 * time.Millisecond)
			if !rec.Sched.Equal(want) || !rec.Send.Equal(want) || rec.DispatchLag != 0 || rec.TTFTSched != rec.TTFT || rec.TTFT != time.Second {
				t.Errorf("request %d: sched %v send %v lag %v ttft %v ttft_sched %v; want all at %v with TTFT 1s",
					i, rec.Sched.Sub(spec.Start), rec.Send.Sub(spec.Start), rec.DispatchLag, rec.TTFT, rec.TTFTSched, want.Sub(spec.Start))
			}
		}
		if f.maxOpen != 10 {
			t.Errorf("server saw at most %d requests at once, want all 10", f.maxOpen)
		}
		last := reps[len(reps)-1]
		if last.ClientBound || last.Scheduled != 10 || last.InFlight != 0 {
			t.Errorf("final report: client_bound %v scheduled %d in flight %d", last.ClientBound, last.Scheduled, last.InFlight)
		}
		set := merged(t, reps)
		for _, m := range Metrics() {
			want := int64(10)
			if m == hdr.ITL || m == hdr.ICL {
				want = 20
			}
			if got := set.Get(m).Count(); got != want {
				t.Errorf("merged %s count %d, want %d", m, got, want)
			}
		}
	})
}

// With the in-flight cap reached, later arrivals wait for the client, and
// the wait must show in TTFT_sched and the dispatch lag, never vanish.
func TestCappedOpenLoopShowsLag(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeEngine(200*time.Millisecond, 0, 1, 0)
		spec := loadSpec(LoadModel{Kind: LoadConstant, Rate: 20, Requests: 10, MaxInFlight: 1})
		reps, err := collect(t, context.Background(), fakeAgent(f), spec)
		if err != nil {
			t.Fatal(err)
		}
		checkSequence(t, reps)
		recs := records(reps)
		t0 := recs[0].Sched
		for n, rec := range recs {
			// Due at 50n ms, sent when the previous one ends, at 200n ms.
			wantLag := time.Duration(n) * 150 * time.Millisecond
			if rec.Sched.Sub(t0) != time.Duration(n)*50*time.Millisecond || rec.DispatchLag != wantLag ||
				rec.TTFT != 200*time.Millisecond || rec.TTFTSched != 200*time.Millisecond+wantLag {
				t.Errorf("request %d: sched +%v lag %v ttft %v ttft_sched %v; want +%v, %v, 200ms, %v",
					n, rec.Sched.Sub(t0), rec.DispatchLag, rec.TTFT, rec.TTFTSched, time.Duration(n)*50*time.Millisecond, wantLag, 200*time.Millisecond+wantLag)
			}
		}
		if !reps[len(reps)-1].ClientBound {
			t.Error("final report is not flagged client-bound")
		}
		set := merged(t, reps)
		if lag := set.Get(hdr.DispatchLag).Summarize(); lag.Count != 10 || lag.Max < 1349 {
			t.Errorf("dispatch lag %+v, want 10 values up to 1350 ms", lag)
		}
		if s := set.Get(hdr.TTFTSched).Summarize(); s.Max < 1549 {
			t.Errorf("ttft_sched max %.1f ms, want ≈1550", s.Max)
		}
	})
}

func TestClosedLoopLagIsZeroAndSerial(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeEngine(50*time.Millisecond, 0, 1, 0)
		spec := loadSpec(LoadModel{Kind: LoadClosed, Concurrency: 2, Requests: 6})
		reps, err := collect(t, context.Background(), fakeAgent(f), spec)
		if err != nil {
			t.Fatal(err)
		}
		ok, _, _ := checkSequence(t, reps)
		if ok != 6 || f.maxOpen != 2 {
			t.Errorf("ok %d, at most %d open; want 6, 2", ok, f.maxOpen)
		}
		for _, rec := range records(reps) {
			if rec.DispatchLag != 0 || rec.TTFTSched != rec.TTFT {
				t.Errorf("closed-loop request %d has lag %v, ttft %v, ttft_sched %v", rec.Index, rec.DispatchLag, rec.TTFT, rec.TTFTSched)
			}
		}
	})
}

func TestWarmupExcluded(t *testing.T) {
	tests := []struct {
		name           string
		m              LoadModel
		warmN, measN   uint64
		firstMeasIndex int
	}{
		{"closed, by count", LoadModel{Kind: LoadClosed, Concurrency: 1, Requests: 4, WarmupRequests: 3}, 3, 4, 3},
		{"open, by count", LoadModel{Kind: LoadConstant, Rate: 10, Requests: 4, WarmupRequests: 2}, 2, 4, 2},
		{"open, by time", LoadModel{Kind: LoadPoisson, Rate: 10, Requests: 5, Warmup: 300 * time.Millisecond, Seed: 3}, 0, 5, -1},
		{"closed, by time", LoadModel{Kind: LoadClosed, Concurrency: 1, Requests: 5, Warmup: 250 * time.Millisecond}, 3, 5, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeEngine(100*time.Millisecond, 0, 2, 0)
				reps, err := collect(t, context.Background(), fakeAgent(f), loadSpec(tt.m))
				if err != nil {
					t.Fatal(err)
				}
				checkSequence(t, reps)
				warm, meas := split(reps)
				var wOK, mOK uint64
				for _, r := range warm {
					wOK += r.OK
				}
				for _, r := range meas {
					mOK += r.OK
				}
				if tt.name == "open, by time" {
					// Arrivals due before 300 ms are warm-up, whatever their number.
					p := NewPoissonPacer(10, 3)
					for n := uint64(0); ; n++ {
						if at, _ := p.Due(n); at >= 300*time.Millisecond {
							tt.warmN, tt.firstMeasIndex = n, int(n)
							break
						}
					}
				}
				if wOK != tt.warmN || mOK != tt.measN {
					t.Errorf("warm-up ok %d, measured ok %d; want %d, %d", wOK, mOK, tt.warmN, tt.measN)
				}
				if got := merged(t, meas).Get(hdr.TTFT).Count(); got != int64(tt.measN) {
					t.Errorf("measured TTFT count %d, want %d", got, tt.measN)
				}
				if len(warm) == 0 && tt.warmN > 0 {
					t.Error("no warm-up report")
				}
				for _, rec := range records(meas) {
					if rec.Warmup || rec.Index < tt.firstMeasIndex {
						t.Errorf("measured report holds warm-up request %d", rec.Index)
					}
				}
				for _, rec := range records(warm) {
					if !rec.Warmup || rec.Index >= tt.firstMeasIndex {
						t.Errorf("warm-up report holds request %d (warmup %v)", rec.Index, rec.Warmup)
					}
				}
				last := reps[len(reps)-1]
				if last.MeasuredStart.IsZero() || !last.MeasuredEnd.After(last.MeasuredStart) {
					t.Errorf("measured span %v – %v", last.MeasuredStart, last.MeasuredEnd)
				}
			})
		})
	}
}

func TestDurationBound(t *testing.T) {
	tests := []struct {
		name string
		m    LoadModel
		want uint64
	}{
		// Due at 0, 20, …, 180 ms: ten before 200 ms.
		{"open", LoadModel{Kind: LoadConstant, Rate: 50, Duration: 200 * time.Millisecond}, 10},
		{"open, requests first", LoadModel{Kind: LoadConstant, Rate: 50, Duration: 200 * time.Millisecond, Requests: 4}, 4},
		// Each worker starts at 0, 30, 60 and 90 ms.
		{"closed", LoadModel{Kind: LoadClosed, Concurrency: 2, Duration: 100 * time.Millisecond}, 8},
		{"ramp", LoadModel{Kind: LoadRamp, StartRate: 0, Rate: 100, Duration: 400 * time.Millisecond}, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFakeEngine(30*time.Millisecond, 0, 1, 0)
				reps, err := collect(t, context.Background(), fakeAgent(f), loadSpec(tt.m))
				if err != nil {
					t.Fatal(err)
				}
				if ok, _, _ := checkSequence(t, reps); ok != tt.want {
					t.Errorf("%d requests, want %d", ok, tt.want)
				}
			})
		})
	}
}

// sentByIndex maps global request index to (offset of t_sched from the
// barrier, prompt).
type sent struct {
	Sched  time.Duration
	Prompt string
}

func runSegments(t *testing.T, m LoadModel, segs []segment.Segment) (map[int]sent, []uint64) {
	t.Helper()
	out := map[int]sent{}
	var counts []uint64
	synctest.Test(t, func(t *testing.T) {
		f := newFakeEngine(20*time.Millisecond, 0, 1, 0)
		start := time.Now().Add(time.Second)
		var mu sync.Mutex
		var wg sync.WaitGroup
		counts = make([]uint64, len(segs))
		for k, seg := range segs {
			spec := loadSpec(m)
			spec.Segment = seg
			spec.Start = start
			spec.AgentID = fmt.Sprintf("agent%d", k)
			spec.Generator = WorkloadGen{Kind: GenSynthetic, InputLen: LengthDist{Kind: DistUniform, Min: 3, Max: 9}, Seed: 11}
			wg.Go(func() {
				err := fakeAgent(f).Run(context.Background(), spec, func(r Report) error {
					mu.Lock()
					defer mu.Unlock()
					for _, rec := range r.Records {
						if _, dup := out[rec.Index]; dup {
							t.Errorf("request %d sent twice", rec.Index)
						}
						out[rec.Index] = sent{Sched: rec.Sched.Sub(start), Prompt: rec.Preview}
						counts[k]++
					}
					return nil
				})
				if err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	})
	return out, counts
}

// Agents on segments that tile the plan send together exactly the requests,
// intended times and prompts that one agent sends alone.
func TestSegmentsUnionIsTheWholePlan(t *testing.T) {
	models := []LoadModel{
		{Kind: LoadPoisson, Rate: 200, Requests: 61, Seed: 7},
		{Kind: LoadGamma, Rate: 100, Burstiness: 0.3, Duration: 300 * time.Millisecond, Seed: 9},
		{Kind: LoadConstant, Rate: 100, Requests: 30, WarmupRequests: 5},
	}
	halves, thirds := segment.Even(2), []segment.Segment{}
	for _, b := range [][2]string{{"0", "1/3"}, {"1/3", "2/3"}, {"2/3", "1"}} {
		s, err := segment.Parse(b[0], b[1])
		if err != nil {
			t.Fatal(err)
		}
		thirds = append(thirds, s)
	}
	for _, m := range models {
		t.Run(m.Kind, func(t *testing.T) {
			whole, _ := runSegments(t, m, []segment.Segment{segment.Full()})
			if len(whole) < 20 {
				t.Fatalf("single agent sent %d requests", len(whole))
			}
			for _, segs := range [][]segment.Segment{halves, thirds} {
				union, counts := runSegments(t, m, segs)
				if diff := cmp.Diff(whole, union); diff != "" {
					t.Errorf("%d agents differ from one (-one +union):\n%s", len(segs), diff)
				}
				for k, s := range segs {
					if want := s.Count(uint64(len(whole))); counts[k] != want {
						t.Errorf("agent %v sent %d, want its share %d", s, counts[k], want)
					}
				}
			}
		})
	}
	// Closed loop: the union of indices and prompts matches; times do not.
	m := LoadModel{Kind: LoadClosed, Concurrency: 4, Requests: 25}
	whole, _ := runSegments(t, m, []segment.Segment{segment.Full()})
	union, _ := runSegments(t, m, halves)
	strip := func(in map[int]sent) map[int]string {
		out := map[int]string{}
		for k, v := range in {
			out[k] = v.Prompt
		}
		return out
	}
	if diff := cmp.Diff(strip(whole), strip(union)); diff != "" || len(whole) != 25 {
		t.Errorf("closed loop: %d requests; halves differ (-one +union):\n%s", len(whole), diff)
	}
}

// An open loop against a real server that stalls every response for a
// while, with a small in-flight cap: TTFT_sched exceeds TTFT by about the
// stall, the dispatch lag is large and the run is flagged client-bound.
func TestOpenLoopAgainstStallingServer(t *testing.T) {
	const stall = 400 * time.Millisecond
	var once sync.Once
	release := make(chan struct{})
	f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() { time.AfterFunc(stall, func() { close(release) }) })
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		oaitest.StreamTokens(2, 0)(w, r)
	})
	spec := testSpec(f.URL)
	spec.Concurrency, spec.Requests = 0, 0
	spec.Load = LoadModel{Kind: LoadConstant, Rate: 50, Requests: 10, MaxInFlight: 2}
	reps, err := collect(t, context.Background(), New(DefaultConfig(), nil), spec)
	if err != nil {
		t.Fatal(err)
	}
	ok, failed, _ := checkSequence(t, reps)
	if ok != 10 || failed != 0 {
		t.Fatalf("ok %d failed %d, want 10, 0", ok, failed)
	}
	maxOpen := f.MaxOpen()
	if maxOpen > 2 {
		t.Errorf("server saw %d at once with max_in_flight 2", maxOpen)
	}
	set := merged(t, reps)
	ttft, sched, lag := set.Get(hdr.TTFT).Summarize(), set.Get(hdr.TTFTSched).Summarize(), set.Get(hdr.DispatchLag).Summarize()
	t.Logf("ttft %+v\nttft_sched %+v\nlag %+v", ttft, sched, lag)
	// Requests 2..9 are due at 40..180 ms but go out only after the stall
	// ends at ≈400 ms: their lag is ≈220..360 ms, while their own TTFT is
	// short.
	if lag.Count != 10 || lag.Max < 200 || lag.P50 < 100 {
		t.Errorf("dispatch lag %+v, want most above 100 ms and a max above 200 ms", lag)
	}
	if sched.Mean-ttft.Mean < 150 || sched.Max < float64(stall/time.Millisecond)-50 {
		t.Errorf("ttft_sched mean %.1f ms vs ttft mean %.1f ms: want the queueing (≈ the stall) to show", sched.Mean, ttft.Mean)
	}
	if !reps[len(reps)-1].ClientBound {
		t.Error("not flagged client-bound")
	}
}

// TestPoolSizedToInFlightCap: a run's connection pool holds as many
// connections as its requests in flight may number, so that no request
// waits for a connection after Send is stamped (that wait would count as
// server TTFT and hide from the dispatch lag). An open loop without
// max_in_flight is capped by Config.MaxConcurrency, beyond 1024.
func TestPoolSizedToInFlightCap(t *testing.T) {
	tests := []struct {
		name   string
		maxCon int
		m      LoadModel
		want   int
	}{
		{"open, no max_in_flight", 4096, LoadModel{Kind: LoadConstant, Rate: 1000, Requests: 2}, 4096},
		{"open, above 1024", 1500, LoadModel{Kind: LoadPoisson, Rate: 1000, Requests: 2}, 1500},
		{"open, max_in_flight", 4096, LoadModel{Kind: LoadConstant, Rate: 1000, Requests: 2, MaxInFlight: 3}, 3},
		{"open, max_in_flight over the limit", 8, LoadModel{Kind: LoadConstant, Rate: 1000, Requests: 2, MaxInFlight: 100}, 8},
		{"closed", 4096, LoadModel{Kind: LoadClosed, Concurrency: 5, Requests: 2}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := DefaultConfig()
			cfg.MaxConcurrency = tt.maxCon
			var (
				mu     sync.Mutex
				conns  []int
				closed int
			)
			cfg.NewSender = func(c oai.Config) (Sender, error) {
				mu.Lock()
				conns = append(conns, c.MaxConns)
				mu.Unlock()
				return senderFunc{
					do: func(context.Context, oai.Request) oai.Result {
						now := time.Now()
						return oai.Result{Send: now, FirstToken: now, Last: now, Done: now, CachedTokens: -1, OutputTokens: 1}
					},
					close: func() { mu.Lock(); closed++; mu.Unlock() },
				}, nil
			}
			a := New(cfg, nil)
			if _, err := collect(t, context.Background(), a, loadSpec(tt.m)); err != nil {
				t.Fatal(err)
			}
			if len(conns) != 1 || conns[0] != tt.want || closed != 1 {
				t.Errorf("senders made with pools of %v connections, %d closed; want one of %d, closed", conns, closed, tt.want)
			}
		})
	}
}

// TestOpenLoopConnectionWaitIsDispatchLag runs an open loop whose arrivals
// outnumber its in-flight cap (Config.MaxConcurrency 2, no max_in_flight)
// against a real server that holds each response: the extra arrivals wait
// before they are sent, so their wait shows as dispatch lag and TTFT is the
// server's alone.
func TestOpenLoopConnectionWaitIsDispatchLag(t *testing.T) {
	const hold = 150 * time.Millisecond
	f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(hold):
		case <-r.Context().Done():
			return
		}
		oaitest.StreamTokens(1, 0)(w, r)
	})
	cfg := DefaultConfig()
	cfg.MaxConcurrency = 2
	spec := loadSpec(LoadModel{Kind: LoadConstant, Rate: 1000, Requests: 4})
	spec.Target.BaseURL = f.URL
	reps, err := collect(t, context.Background(), New(cfg, nil), spec)
	if err != nil {
		t.Fatal(err)
	}
	ok, _, _ := checkSequence(t, reps)
	recs := records(reps)
	if ok != 4 || len(recs) != 4 {
		t.Fatalf("ok %d, %d records; want 4, 4", ok, len(recs))
	}
	maxOpen := f.MaxOpen()
	if maxOpen > 2 {
		t.Errorf("server saw %d requests at once, want at most 2", maxOpen)
	}
	for _, rec := range recs {
		// TTFT is the server's hold, never the wait for a slot.
		if rec.TTFT < hold || rec.TTFT > hold+hold/2 {
			t.Errorf("request %d: ttft %v, want ≈%v (the server's hold alone)", rec.Index, rec.TTFT, hold)
		}
		if rec.TTFTSched != rec.DispatchLag+rec.TTFT {
			t.Errorf("request %d: ttft_sched %v ≠ lag %v + ttft %v", rec.Index, rec.TTFTSched, rec.DispatchLag, rec.TTFT)
		}
		if rec.Index >= 2 && rec.DispatchLag < hold*3/4 {
			t.Errorf("request %d: dispatch lag %v, want ≥ %v (it waited for a request to end)", rec.Index, rec.DispatchLag, hold*3/4)
		}
	}
	if lag := merged(t, reps).Get(hdr.DispatchLag).Summarize(); lag.Count != 4 || lag.Max < float64(hold*3/4)/float64(time.Millisecond) {
		t.Errorf("dispatch lag %+v, want 4 values up to ≈%v", lag, hold)
	}
}

// TestClosedLoopZeroWorkerShare: a closed loop split over more agents than
// its concurrency leaves some segments without a worker. With a request
// bound such a segment still owns a share of the request indices, which no
// agent would send (4 agents at concurrency 1 and 100 requests sent 24):
// the spec is refused. Bounded by duration alone, it just ends at once with
// an empty final report.
func TestClosedLoopZeroWorkerShare(t *testing.T) {
	segs := segment.Even(4)
	var workerless []segment.Segment
	for _, s := range segs {
		if s.Scale(1) == 0 {
			workerless = append(workerless, s)
		}
	}
	if len(workerless) != 3 {
		t.Fatalf("%d of 4 segments get no worker at concurrency 1, want 3", len(workerless))
	}
	for _, m := range []LoadModel{
		{Kind: LoadClosed, Concurrency: 1, Requests: 100},
		{Kind: LoadClosed, Concurrency: 1, Requests: 100, WarmupRequests: 4},
		{Kind: LoadClosed, Concurrency: 1, Requests: 100, Duration: time.Minute},
		{Kind: LoadClosed, Concurrency: 1, Requests: 100, Warmup: time.Second},
	} {
		for _, s := range workerless {
			spec := loadSpec(m)
			spec.Segment = s
			err := spec.Validate()
			if !errors.Is(err, ErrInvalidSpec) || !strings.Contains(err.Error(), "load.concurrency 1 gives segment "+s.String()+" no worker") ||
				!strings.Contains(err.Error(), "use at most 1 agents for concurrency 1") {
				t.Errorf("%+v on segment %v: Validate = %v, want ErrInvalidSpec naming concurrency, segment and fix", m, s, err)
			}
			if _, err := collect(t, context.Background(), fakeAgent(newFakeEngine(0, 0, 1, 0)), spec); !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("%+v on segment %v: Run = %v, want ErrInvalidSpec", m, s, err)
			}
		}
	}
	// The segment with the worker is fine, and so is a workerless segment
	// that owns none of the requests.
	spec := loadSpec(LoadModel{Kind: LoadClosed, Concurrency: 1, Requests: 100})
	for _, s := range segs {
		if s.Scale(1) == 1 {
			spec.Segment = s
		}
	}
	if err := spec.Validate(); err != nil {
		t.Errorf("segment with the worker: %v", err)
	}
	tiny, err := segment.Parse("999/1000", "1")
	if err != nil {
		t.Fatal(err)
	}
	spec = loadSpec(LoadModel{Kind: LoadClosed, Concurrency: 1, Requests: 1})
	spec.Segment = tiny
	if err := spec.Validate(); err != nil {
		t.Errorf("workerless segment %v owning none of 1 request: %v", tiny, err)
	}

	// Duration only: no request share to lose; the run ends at once.
	synctest.Test(t, func(t *testing.T) {
		f := newFakeEngine(10*time.Millisecond, 0, 1, 0)
		spec := loadSpec(LoadModel{Kind: LoadClosed, Concurrency: 1, Duration: time.Hour})
		spec.Segment = workerless[0]
		start := time.Now()
		reps, err := collect(t, context.Background(), fakeAgent(f), spec)
		if err != nil {
			t.Fatal(err)
		}
		ok, failed, _ := checkSequence(t, reps)
		last := reps[len(reps)-1]
		if d := time.Since(start); d != 0 || len(reps) != 1 || ok != 0 || failed != 0 || last.Scheduled != 0 {
			t.Errorf("workerless duration run: took %v, %d reports, ok %d failed %d scheduled %d; want an empty final report at once",
				d, len(reps), ok, failed, last.Scheduled)
		}
	})
}

// senderFunc is a Sender made of functions.
type senderFunc struct {
	do    func(context.Context, oai.Request) oai.Result
	close func()
}

func (s senderFunc) Do(ctx context.Context, req oai.Request) oai.Result { return s.do(ctx, req) }
func (s senderFunc) Close()                                             { s.close() }
