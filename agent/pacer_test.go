package agent

import (
	"math"
	"testing"
	"time"
)

func TestConstantPacer(t *testing.T) {
	p := BoundedPacer{Pacer: ConstantPacer{Rate: 10}, MaxHits: 5}
	tests := []struct {
		name     string
		elapsed  time.Duration
		hits     uint64
		wantWait time.Duration
		wantStop bool
	}{
		{"first hit at once", 0, 0, 0, false},
		{"second hit 100ms after the start", 0, 1, 100 * time.Millisecond, false},
		{"partly waited", 30 * time.Millisecond, 1, 70 * time.Millisecond, false},
		{"overdue hit is due now", time.Second, 2, 0, false},
		{"fifth hit", 0, 4, 400 * time.Millisecond, false},
		{"stops after MaxHits", 0, 5, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wait, stop := p.Pace(tt.elapsed, tt.hits)
			if wait != tt.wantWait || stop != tt.wantStop {
				t.Errorf("Pace(%v, %d) = %v, %v; want %v, %v", tt.elapsed, tt.hits, wait, stop, tt.wantWait, tt.wantStop)
			}
		})
	}
	for n := range uint64(1000) {
		at, _ := ConstantPacer{Rate: 3}.Due(n)
		if want := time.Duration(float64(n) / 3 * 1e9); at != want {
			t.Fatalf("Due(%d) at rate 3 = %v, want %v", n, at, want)
		}
	}
}

func TestBoundedPacerStops(t *testing.T) {
	tests := []struct {
		name    string
		p       BoundedPacer
		wantHit uint64 // hits before stop
	}{
		{"hits", BoundedPacer{Pacer: ConstantPacer{Rate: 100}, MaxHits: 7}, 7},
		{"duration", BoundedPacer{Pacer: ConstantPacer{Rate: 100}, MaxDuration: 95 * time.Millisecond}, 10},
		{"duration first", BoundedPacer{Pacer: ConstantPacer{Rate: 100}, MaxHits: 50, MaxDuration: 100 * time.Millisecond}, 10},
		{"hits first", BoundedPacer{Pacer: ConstantPacer{Rate: 100}, MaxHits: 3, MaxDuration: time.Second}, 3},
		{"ramp ends", BoundedPacer{Pacer: RampPacer{StartRate: 0, EndRate: 20, Duration: time.Second}}, 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var n uint64
			for ; n < 1000; n++ {
				if _, stop := tt.p.Due(n); stop {
					break
				}
			}
			if n != tt.wantHit {
				t.Errorf("schedule has %d hits, want %d", n, tt.wantHit)
			}
		})
	}
}

// gaps returns the first n gaps of p in seconds.
func gaps(p Pacer, n int) []float64 {
	out := make([]float64, 0, n)
	prev := time.Duration(0)
	for i := 1; i <= n; i++ {
		at, _ := p.Due(uint64(i))
		out = append(out, (at - prev).Seconds())
		prev = at
	}
	return out
}

func meanVar(xs []float64) (mean, variance float64) {
	for _, x := range xs {
		mean += x
	}
	mean /= float64(len(xs))
	for _, x := range xs {
		variance += (x - mean) * (x - mean)
	}
	return mean, variance / float64(len(xs)-1)
}

func TestRandomPacersRateAndShape(t *testing.T) {
	const n = 40000
	tests := []struct {
		name   string
		p      *RandomPacer
		rate   float64
		wantCV float64 // squared coefficient of variation of the gaps: 1/shape
	}{
		{"poisson", NewPoissonPacer(50, 1), 50, 1},
		{"gamma bursty", NewGammaPacer(20, 0.25, 2), 20, 4},
		{"gamma regular", NewGammaPacer(200, 4, 3), 200, 0.25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mean, v := meanVar(gaps(tt.p, n))
			if rate := 1 / mean; math.Abs(rate-tt.rate)/tt.rate > 0.03 {
				t.Errorf("mean rate %.2f, want %.2f ± 3%%", rate, tt.rate)
			}
			if cv := v / (mean * mean); math.Abs(cv-tt.wantCV)/tt.wantCV > 0.1 {
				t.Errorf("squared CV of gaps %.3f, want %.3f ± 10%%", cv, tt.wantCV)
			}
			if at, _ := tt.p.Due(0); at != 0 {
				t.Errorf("first hit due at %v, want 0", at)
			}
		})
	}
}

func TestRandomPacerDeterministic(t *testing.T) {
	a, b, c := NewGammaPacer(30, 0.5, 42), NewGammaPacer(30, 0.5, 42), NewGammaPacer(30, 0.5, 43)
	same := true
	for n := range uint64(500) {
		x, _ := a.Due(n)
		y, _ := b.Due(n)
		z, _ := c.Due(n)
		if x != y {
			t.Fatalf("same seed: Due(%d) = %v and %v", n, x, y)
		}
		if n > 0 && x != z {
			same = false
		}
	}
	if same {
		t.Error("seeds 42 and 43 gave the same schedule")
	}
	// Pure in n: asking out of order gives the same times.
	late, _ := a.Due(499)
	early, _ := a.Due(7)
	fresh := NewGammaPacer(30, 0.5, 42)
	if f7, _ := fresh.Due(7); f7 != early {
		t.Errorf("Due(7) after Due(499) = %v, fresh %v", early, f7)
	}
	if f499, _ := fresh.Due(499); f499 != late {
		t.Errorf("Due(499) = %v, fresh %v", late, f499)
	}
	if _, stop := NewPoissonPacer(0, 1).Due(0); !stop {
		t.Error("rate 0 does not stop")
	}
}

func TestRampPacerIntegral(t *testing.T) {
	tests := []struct {
		name   string
		r0, r1 float64
		d      time.Duration
	}{
		{"up", 10, 100, 10 * time.Second},
		{"from zero", 0, 50, 4 * time.Second},
		{"down", 80, 20, 5 * time.Second},
		{"flat", 30, 30, 2 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := RampPacer{StartRate: tt.r0, EndRate: tt.r1, Duration: tt.d}
			D := tt.d.Seconds()
			var n uint64
			prev := time.Duration(-1)
			for ; ; n++ {
				at, stop := p.Due(n)
				if stop {
					break
				}
				if at <= prev && n > 0 {
					t.Fatalf("Due(%d) = %v not after Due(%d) = %v", n, at, n-1, prev)
				}
				prev = at
				// ∫₀ᵗ rate at the due time equals n.
				s := at.Seconds()
				if integral := tt.r0*s + (tt.r1-tt.r0)*s*s/(2*D); math.Abs(integral-float64(n)) > 1e-6 {
					t.Fatalf("∫ rate to Due(%d) = %.9f, want %d", n, integral, n)
				}
			}
			if want := (tt.r0 + tt.r1) / 2 * D; math.Abs(float64(n)-want) > 1 {
				t.Errorf("%d hits, want the integral %.1f", n, want)
			}
		})
	}
}

func TestNewPacer(t *testing.T) {
	p, err := NewPacer(LoadModel{Kind: LoadConstant, Rate: 10, Requests: 5, WarmupRequests: 2})
	if err != nil {
		t.Fatal(err)
	}
	if _, stop := p.Due(6); stop {
		t.Error("warm-up requests are not added to the bound")
	}
	if _, stop := p.Due(7); !stop {
		t.Error("schedule does not stop after warm-up + requests")
	}
	if _, err := NewPacer(LoadModel{Kind: LoadClosed}); err == nil {
		t.Error("closed loop got a pacer")
	}
}
