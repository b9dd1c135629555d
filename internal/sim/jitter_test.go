package sim

import (
	"testing"
	"time"
)

func TestJitterStatsRealTimeRatio(t *testing.T) {
	tests := []struct {
		name      string
		steps     [][2]time.Duration // modelled, wall
		wantRatio float64
	}{
		{"no steps", nil, 0},
		{"kept up", [][2]time.Duration{{10 * time.Millisecond, 10 * time.Millisecond}, {5 * time.Millisecond, 5 * time.Millisecond}}, 1},
		{"fell behind", [][2]time.Duration{{10 * time.Millisecond, 20 * time.Millisecond}}, 0.5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h jitterHist
			for _, s := range tt.steps {
				h.observeStep(s[0], s[1])
			}
			if got := h.stats().RealTimeRatio(); got != tt.wantRatio {
				t.Errorf("RealTimeRatio() = %v, want %v", got, tt.wantRatio)
			}
			h.reset()
			if s := h.stats(); s.Simulated != 0 || s.Wall != 0 {
				t.Errorf("after reset: simulated %v wall %v, want 0", s.Simulated, s.Wall)
			}
		})
	}
}
