package agent

import (
	"context"
	"errors"
	"math"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/internal/oai"
	"github.com/ttftlab/ttftlab/internal/oai/oaitest"
)

// fixedRand returns vs in turn, then the last one for ever.
func fixedRand(vs ...float64) func() float64 {
	i := 0
	return func() float64 {
		v := vs[min(i, len(vs)-1)]
		i++
		return v
	}
}

func TestBackoff(t *testing.T) {
	ms := func(v float64) time.Duration { return time.Duration(v * float64(time.Millisecond)) }
	const reset = -1.0
	tests := []struct {
		name string
		// steps are random draws, or reset.
		steps []float64
		want  []time.Duration
	}{
		{"lowest draws stay at the base", []float64{0, 0, 0}, []time.Duration{ms(10), ms(10), ms(10)}},
		{"middle draws grow about 1.5 times", []float64{0.5, 0.5, 0.5, 0.5}, []time.Duration{ms(20), ms(35), ms(57.5), ms(91.25)}},
		{"reset starts over at the base", []float64{0.5, 0.5, reset, 0.5}, []time.Duration{ms(20), ms(35), ms(20)}},
		{"draws out of [0,1) count as 0", []float64{1.5, -0.2, math.NaN(), math.Inf(1)}, []time.Duration{ms(10), ms(10), ms(10), ms(10)}},
		{"the cap holds", []float64{0.75, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75, 0.75}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var draws []float64
			for _, s := range tt.steps {
				if s != reset {
					draws = append(draws, s)
				}
			}
			b := Backoff{Base: 10 * time.Millisecond, Max: time.Second, Rand: fixedRand(draws...)}
			var got []time.Duration
			for _, s := range tt.steps {
				if s == reset {
					b.Reset()
					continue
				}
				got = append(got, b.Next())
			}
			for _, d := range got {
				if d < b.Base || d > b.Max {
					t.Errorf("wait %v outside [%v, %v]", d, b.Base, b.Max)
				}
			}
			if tt.want == nil {
				// Capped at 1 s, a draw of 0.75 gives 10 ms + 0.75·990 ms.
				if last := got[len(got)-1]; last != ms(752.5) {
					t.Errorf("waits %v end at %v, want the capped 752.5ms", got, last)
				}
				return
			}
			if len(got) != len(tt.want) {
				t.Fatalf("waits %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("waits %v, want %v", got, tt.want)
					break
				}
			}
		})
	}
}

func TestErrorBudget(t *testing.T) {
	type ev struct {
		at   time.Duration
		kind string // "" is a success
	}
	repeat := func(n int, at time.Duration, kind string) []ev {
		out := make([]ev, n)
		for i := range out {
			out[i] = ev{at, kind}
		}
		return out
	}
	cat := func(parts ...[]ev) []ev {
		var out []ev
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	alternate := func(n int) []ev {
		var out []ev
		for i := range n {
			kind := ""
			if i%2 == 1 {
				kind = oai.KindConnectRefused
			}
			out = append(out, ev{time.Duration(i) * time.Millisecond, kind})
		}
		return out
	}
	tests := []struct {
		name     string
		rate     float64
		events   []ev
		tripAt   int // index of the event that spends the budget; -1 never
		inReason []string
	}{
		{"one early error does not trip", 0.5, repeat(1, 0, oai.KindConnectRefused), -1, nil},
		{"nine failures are under the minimum", 0.5, repeat(9, 0, oai.KindConnectRefused), -1, nil},
		{"ten failures trip", 0.5, repeat(10, 0, oai.KindConnectRefused), 9,
			[]string{"10 of 10 attempts (100%) failed within 5s", "over the 50% limit", "connect_refused=10"}},
		{"exactly half does not pass half", 0.5, alternate(40), -1, nil},
		{"kinds are named, most frequent first", 0.5, cat(repeat(3, 0, "http_503"), repeat(7, 0, ""), repeat(7, time.Second, oai.KindConnectRefused)), 14,
			[]string{"8 of 15 attempts", "connect_refused=5 http_503=3"}},
		{"old failures slide out of the window", 0.5, cat(repeat(9, 0, oai.KindConnectRefused), repeat(9, 6*time.Second, oai.KindConnectRefused), repeat(1, 6500*time.Millisecond, oai.KindConnectRefused)), 18,
			[]string{"10 of 10 attempts"}},
		{"a lower limit trips sooner", 0.2, cat(repeat(8, 0, ""), repeat(3, 0, oai.KindTimeoutTTFT)), 10, []string{"3 of 11 attempts (27%)", "over the 20% limit"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t0 := time.Unix(1000, 0)
			b := newErrorBudget(tt.rate, 5*time.Second, t0)
			got, reason := -1, ""
			for i, e := range tt.events {
				if r := b.add(t0.Add(e.at), e.kind); r != "" {
					got, reason = i, r
					break
				}
			}
			if got != tt.tripAt {
				t.Fatalf("budget spent at event %d (%q), want %d", got, reason, tt.tripAt)
			}
			for _, s := range tt.inReason {
				if !strings.Contains(reason, s) {
					t.Errorf("reason %q lacks %q", reason, s)
				}
			}
		})
	}
	t.Run("off", func(t *testing.T) {
		for _, rate := range []float64{1, -1} {
			if b := newErrorBudget(rate, time.Second, time.Now()); b != nil {
				t.Errorf("newErrorBudget(%v) = %+v, want nil (off)", rate, b)
			}
		}
	})
}

func TestClosedLoopBacksOffAfterConnectErrors(t *testing.T) {
	spec := loadSpec(LoadModel{Kind: LoadClosed, Concurrency: 4, Duration: time.Second, MaxErrorRate: -1})
	spec.Target.BaseURL = oaitest.RefusedURL(t)
	spec.Records = false
	start := time.Now()
	reps, err := collect(t, context.Background(), New(DefaultConfig(), nil), spec)
	if err != nil {
		t.Fatal(err)
	}
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("run took %v for a 1 s duration: a backoff wait outlived the run", took)
	}
	ok, failed, errs := checkSequence(t, reps)
	// Without backoff four workers make thousands of attempts a second
	// against a refused port; with it each makes about ten.
	if ok != 0 || failed < 4 || failed > 120 || errs[oai.KindConnectRefused] != failed {
		t.Errorf("ok %d failed %d errors %v; want 4..120 attempts, all connect_refused", ok, failed, errs)
	}
	t.Logf("%d attempts in 1 s from 4 workers", failed)
}

func TestRunErrorBudgetAborts(t *testing.T) {
	tests := []struct {
		name string
		m    LoadModel
	}{
		{"closed loop", LoadModel{Kind: LoadClosed, Concurrency: 2, Requests: 100_000}},
		{"open loop keeps its schedule until the budget stops it", LoadModel{Kind: LoadConstant, Rate: 500, Requests: 100_000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A server per case: a request interrupted at the abort may
			// still reach its server afterwards, and must not be counted
			// against the next case.
			f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.WriteHeader(http.StatusServiceUnavailable)
				_, _ = w.Write([]byte(`{"error":{"message":"overloaded"}}`))
			})
			before := f.Requests.Load()
			spec := loadSpec(tt.m)
			spec.Target.BaseURL = f.URL
			spec.Records = false
			start := time.Now()
			reps, err := collect(t, context.Background(), New(DefaultConfig(), nil), spec)
			if err != nil {
				t.Fatalf("Run = %v, want nil with the reason in the final report", err)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("run took %v, want the budget to end it at once", took)
			}
			ok, failed, errs := checkSequence(t, reps)
			last := reps[len(reps)-1]
			for _, s := range []string{"error budget spent", "http_503="} {
				if !strings.Contains(last.AbortReason, s) {
					t.Errorf("final AbortReason %q lacks %q", last.AbortReason, s)
				}
			}
			for _, r := range reps[:len(reps)-1] {
				if r.AbortReason != "" {
					t.Errorf("report %d (not final) has AbortReason %q", r.Seq, r.AbortReason)
				}
			}
			var intr uint64
			for _, r := range reps {
				intr += r.Interrupted
			}
			// An interrupted attempt may or may not have reached the server
			// when the run stopped; every finished one did.
			sent := uint64(f.Requests.Load() - before)
			if ok != 0 || failed < minBudgetAttempts || failed > 1000 || errs["http_503"] != failed || sent < ok+failed || sent > ok+failed+intr {
				t.Errorf("ok %d failed %d interrupted %d errors %v, server saw %d; want ≥ 10 failures, stopped early, every attempt counted once",
					ok, failed, intr, errs, sent)
			}
		})
	}
}

func TestRunCancelCountsInterrupted(t *testing.T) {
	var started atomic.Int32
	f := oaitest.NewServer(t, func(w http.ResponseWriter, r *http.Request) {
		started.Add(1)
		s := oaitest.StartSSE(w)
		s.Data(oaitest.ChatRole(0))
		<-r.Context().Done()
	})
	tests := []struct {
		name string
		m    LoadModel
	}{
		{"closed loop", LoadModel{Kind: LoadClosed, Concurrency: 3, Requests: 100}},
		{"open loop", LoadModel{Kind: LoadConstant, Rate: 100, Requests: 3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			started.Store(0)
			spec := loadSpec(tt.m)
			spec.Target.BaseURL = f.URL
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go func() {
				for started.Load() < 3 {
					time.Sleep(5 * time.Millisecond)
				}
				cancel()
			}()
			reps, err := collect(t, ctx, New(DefaultConfig(), nil), spec)
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("Run = %v, want context.Canceled", err)
			}
			ok, failed, errs := checkSequence(t, reps)
			var intr uint64
			for _, r := range reps {
				intr += r.Interrupted
			}
			if ok != 0 || failed != 0 || len(errs) != 0 || intr != 3 {
				t.Errorf("ok %d failed %d errors %v interrupted %d; want 3 interrupted and no errors", ok, failed, errs, intr)
			}
			if last := reps[len(reps)-1]; last.AbortReason != "" {
				t.Errorf("a cancelled run has AbortReason %q, want none", last.AbortReason)
			}
		})
	}
}
