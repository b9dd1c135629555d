package hdr

import (
	"testing"
	"time"
)

func TestValueAtRankMs(t *testing.T) {
	h := New()
	for i := 1; i <= 20; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	tests := []struct {
		name string
		rank int64
		want float64
	}{
		{"first", 1, 1},
		{"sixth", 6, 6},
		{"fifteenth", 15, 15},
		{"last", 20, 20},
		{"below range clamps to the first", 0, 1},
		{"above range clamps to the last", 21, 20},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Highest-equivalent values are within 3 significant digits.
			if got := h.ValueAtRankMs(tt.rank); got < tt.want || got > tt.want*1.001 {
				t.Errorf("ValueAtRankMs(%d) = %g, want %g", tt.rank, got, tt.want)
			}
		})
	}
	if got := New().ValueAtRankMs(1); got != 0 {
		t.Errorf("empty histogram: %g, want 0", got)
	}
}
