package agent

import (
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"time"
)

// Load model kinds, as in LoadModel.Kind.
const (
	// LoadClosed runs Concurrency workers that each send the next request
	// as soon as the previous one ends.
	LoadClosed = "closed"
	// LoadConstant sends requests evenly spaced at Rate per second.
	LoadConstant = "constant"
	// LoadPoisson sends requests with exponential gaps of mean 1/Rate.
	LoadPoisson = "poisson"
	// LoadGamma sends requests with gamma gaps of shape Burstiness and scale
	// 1/(Rate·Burstiness), as vLLM bench serve does: mean 1/Rate, burstier
	// below 1, more regular above.
	LoadGamma = "gamma"
	// LoadRamp sends evenly spaced requests whose rate rises (or falls)
	// linearly from StartRate to Rate over Duration.
	LoadRamp = "ramp"
)

// Pacer is an open-loop arrival schedule: hit n (from 0) is due at a fixed
// offset from the run's start, whatever happened to earlier hits. Its
// methods are pure functions of their arguments (random pacers draw hit n's
// gap from a generator seeded by (seed, n)), so a schedule is the same on
// every agent and in every test. Implementations are safe for concurrent
// use.
type Pacer interface {
	// Due returns when hit n is due, as an offset from the start, or stop
	// true when the schedule has no hit n.
	Due(n uint64) (at time.Duration, stop bool)
	// Pace is vegeta's view of the same schedule: given the time elapsed
	// since the start and the hits sent so far, it returns how long to
	// wait until the next hit is due (0 when it is overdue) and whether the
	// schedule is over.
	Pace(elapsed time.Duration, hits uint64) (wait time.Duration, stop bool)
}

// pace implements Pacer.Pace from Due.
func pace(p interface {
	Due(uint64) (time.Duration, bool)
}, elapsed time.Duration, hits uint64) (time.Duration, bool) {
	at, stop := p.Due(hits)
	if stop {
		return 0, true
	}
	return max(at-elapsed, 0), false
}

// ConstantPacer sends Rate hits per second, evenly spaced, the first at 0.
type ConstantPacer struct {
	Rate float64
}

// Due returns n/Rate.
func (p ConstantPacer) Due(n uint64) (time.Duration, bool) {
	if p.Rate <= 0 || math.IsNaN(p.Rate) {
		return 0, true
	}
	return secs(float64(n) / p.Rate), false
}

// Pace implements Pacer.
func (p ConstantPacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	return pace(p, elapsed, hits)
}

// RampPacer sends evenly spaced hits (in the sense of the cumulative rate)
// whose rate moves linearly from StartRate at 0 to EndRate at Duration,
// then stops: hit n is due when ∫₀ᵗ rate = n.
type RampPacer struct {
	StartRate, EndRate float64
	Duration           time.Duration
}

// Due solves r0·t + (r1−r0)·t²/(2D) = n for t.
func (p RampPacer) Due(n uint64) (time.Duration, bool) {
	d := p.Duration.Seconds()
	r0, r1 := p.StartRate, p.EndRate
	if d <= 0 || r0 < 0 || r1 < 0 || r0+r1 <= 0 {
		return 0, true
	}
	x := float64(n)
	if n == 0 {
		return 0, false
	}
	if x >= (r0+r1)/2*d { // beyond the ramp's total count
		return 0, true
	}
	a := (r1 - r0) / (2 * d)
	var t float64
	if math.Abs(a) < 1e-12 {
		t = x / r0
	} else {
		// Numerically stable root of a·t² + r0·t − x = 0 with t ≥ 0.
		t = 2 * x / (r0 + math.Sqrt(r0*r0+4*a*x))
	}
	if t >= d {
		return 0, true
	}
	return secs(t), false
}

// Pace implements Pacer.
func (p RampPacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	return pace(p, elapsed, hits)
}

// RandomPacer sends hits whose gaps are independent random draws with mean
// 1/Rate: exponential (Poisson arrivals) when Shape is 1, gamma with shape
// Shape and scale 1/(Rate·Shape) otherwise. The first hit is due at 0 and
// hit n's gap before it is drawn from a generator seeded by (Seed, n), so
// the schedule depends on the seed alone. It caches the running sum to make
// increasing n cheap; it is safe for concurrent use.
type RandomPacer struct {
	rate, shape float64
	seed        uint64

	mu  sync.Mutex
	n   uint64        // the last hit whose time is cached
	at  time.Duration // its time
	src rand.PCG
	rng *rand.Rand
}

// NewPoissonPacer returns Poisson arrivals at rate per second.
func NewPoissonPacer(rate float64, seed uint64) *RandomPacer {
	return NewGammaPacer(rate, 1, seed)
}

// NewGammaPacer returns gamma-distributed gaps of mean 1/rate and shape
// burstiness (vLLM bench serve's --burstiness).
func NewGammaPacer(rate, burstiness float64, seed uint64) *RandomPacer {
	p := &RandomPacer{rate: rate, shape: burstiness, seed: seed}
	p.rng = rand.New(&p.src)
	return p
}

// Due implements Pacer.
func (p *RandomPacer) Due(n uint64) (time.Duration, bool) {
	if p.rate <= 0 || p.shape <= 0 || math.IsNaN(p.rate) || math.IsNaN(p.shape) {
		return 0, true
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if n < p.n {
		p.n, p.at = 0, 0
	}
	for p.n < n {
		p.n++
		p.at += secs(p.gap(p.n))
	}
	return p.at, false
}

// Pace implements Pacer.
func (p *RandomPacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	return pace(p, elapsed, hits)
}

// gap draws the gap before hit n, in seconds.
func (p *RandomPacer) gap(n uint64) float64 {
	p.src.Seed(mix(p.seed^0x9e3779b97f4a7c15), mix(n))
	if p.shape == 1 {
		return p.rng.ExpFloat64() / p.rate
	}
	return gammaDraw(p.rng, p.shape) / (p.rate * p.shape)
}

// gammaDraw returns a Gamma(shape, 1) variate (Marsaglia and Tsang; for
// shape < 1 the boost Gamma(shape+1)·U^(1/shape)).
func gammaDraw(r *rand.Rand, shape float64) float64 {
	if shape < 1 {
		u := r.Float64()
		for u == 0 {
			u = r.Float64()
		}
		return gammaDraw(r, shape+1) * math.Pow(u, 1/shape)
	}
	d := shape - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := r.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := r.Float64()
		if u < 1-0.0331*x*x*x*x || math.Log(u) < 0.5*x*x+d*(1-v+math.Log(v)) {
			return d * v
		}
	}
}

// mix is splitmix64's finaliser: it spreads nearby seeds far apart.
func mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// secs converts seconds to a Duration, saturating.
func secs(s float64) time.Duration {
	if s >= float64(math.MaxInt64)/1e9 {
		return math.MaxInt64
	}
	return time.Duration(s * 1e9)
}

// BoundedPacer stops a schedule after MaxHits hits (0: no limit) or at
// MaxDuration (0: no limit), whichever comes first.
type BoundedPacer struct {
	Pacer
	MaxHits     uint64
	MaxDuration time.Duration
}

// Due implements Pacer.
func (p BoundedPacer) Due(n uint64) (time.Duration, bool) {
	if p.MaxHits > 0 && n >= p.MaxHits {
		return 0, true
	}
	at, stop := p.Pacer.Due(n)
	if stop || (p.MaxDuration > 0 && at >= p.MaxDuration) {
		return 0, true
	}
	return at, false
}

// Pace implements Pacer.
func (p BoundedPacer) Pace(elapsed time.Duration, hits uint64) (time.Duration, bool) {
	return pace(p, elapsed, hits)
}

// NewPacer returns the open-loop pacer for m, bounded by its total hit count
// (warm-up included) and total duration. m must be valid and open-loop.
func NewPacer(m LoadModel) (Pacer, error) {
	var p Pacer
	switch m.Kind {
	case LoadConstant:
		p = ConstantPacer{Rate: m.Rate}
	case LoadPoisson:
		p = NewPoissonPacer(m.Rate, m.Seed)
	case LoadGamma:
		p = NewGammaPacer(m.Rate, m.burstiness(), m.Seed)
	case LoadRamp:
		p = RampPacer{StartRate: m.StartRate, EndRate: m.Rate, Duration: m.totalDuration()}
	default:
		return nil, fmt.Errorf("load kind %q has no pacer: use %s, %s, %s or %s", m.Kind, LoadConstant, LoadPoisson, LoadGamma, LoadRamp)
	}
	return BoundedPacer{Pacer: p, MaxHits: m.totalRequests(), MaxDuration: m.totalDuration()}, nil
}
