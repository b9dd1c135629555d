package sim

import (
	"strings"
	"testing"
	"time"
)

// TestSlowdownScalesServing checks that --slowdown multiplies every step's
// duration and t_api, that a client measures the slower engine, and that
// a bad factor is refused with the flag's name.
func TestSlowdownScalesServing(t *testing.T) {
	base := testConfig(t)
	slow := testConfig(t)
	slow.Slowdown = 1.5
	fast, slowE := start(t, base), start(t, slow)
	batch := []SeqWork{{NewTokens: 200}}
	if got, want := slowE.perf.StepTime(batch), time.Duration(float64(fast.perf.StepTime(batch))*1.5); got < want-time.Microsecond || got > want+time.Microsecond {
		t.Errorf("step time %v with --slowdown 1.5, want 1.5 × %v = %v", got, fast.perf.StepTime(batch), want)
	}
	if got, want := slowE.cfg.Perf.TAPI, time.Duration(float64(base.Perf.TAPI)*1.5); got != want {
		t.Errorf("t_api %v with --slowdown 1.5, want %v", got, want)
	}
	if !strings.Contains(slowE.log.String(), "--slowdown") {
		t.Errorf("the log does not warn of --slowdown:\n%s", slowE.log)
	}
	body := map[string]any{"prompt": words(200), "max_tokens": 40, "stream": true}
	// The best of three of each: a loaded host only stretches sleeps.
	best := func(te *testEngine) time.Duration {
		var b time.Duration
		for i := range 3 {
			_, ev := te.stream(t, "/v1/completions", body)
			if e := ev[len(ev)-1].at; i == 0 || e < b {
				b = e
			}
		}
		return b
	}
	eFast, eSlow := best(fast), best(slowE)
	t.Logf("e2e %v at 1, %v at 1.5", eFast, eSlow)
	if eSlow < eFast*13/10 {
		t.Errorf("e2e %v with --slowdown 1.5 is not clearly slower than %v", eSlow, eFast)
	}

	for _, tt := range []struct {
		name string
		f    float64
	}{{"negative", -1}, {"too small", 0.01}, {"too large", 1000}} {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig(t)
			c.Slowdown = tt.f
			if _, err := c.resolve(); err == nil || !strings.Contains(err.Error(), "--slowdown") {
				t.Errorf("--slowdown %v: err = %v, want one naming --slowdown", tt.f, err)
			}
		})
	}
}
