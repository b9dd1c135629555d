package orderstat

import (
	"math"
	"strings"
	"testing"
)

// The expected ranks and coverages were computed with exact rational
// arithmetic (Python's fractions and math.comb), independently of this
// code; n = 20 and n = 100 at the median are the textbook values (e.g.
// Conover, Practical Nonparametric Statistics, table A3).
func TestQuantileRanks(t *testing.T) {
	tests := []struct {
		name     string
		n        int
		q        float64
		lo, hi   int
		coverage float64
	}{
		{"median of 20", 20, 0.5, 6, 15, 0.9586105346679688},
		{"median of 100", 100, 0.5, 40, 61, 0.9647997997822951},
		{"median of 10", 10, 0.5, 2, 9, 0.978515625},
		{"median of 5 is unbounded both ways", 5, 0.5, 0, 0, 1},
		{"one value", 1, 0.5, 0, 0, 1},
		{"p90 of 50", 50, 0.9, 41, 50, 0.9703082890880884},
		{"p90 of 20 is unbounded above", 20, 0.9, 15, 0, 0.988746865835491},
		{"p90 of 30 is unbounded above", 30, 0.9, 23, 0, 0.9922163807620787},
		{"p99 of 100 is unbounded above", 100, 0.99, 97, 0, 0.9816259635553504},
		{"p99 of 367 is still unbounded above", 367, 0.99, 359, 0, 0.9873807468697265},
		{"p99 of 368 is bounded", 368, 0.99, 360, 368, 0.9624158204108587},
		{"p99 of 1000", 1000, 0.99, 983, 997, 0.9760947634979771},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := QuantileRanks(tt.n, tt.q, 0.95)
			if err != nil {
				t.Fatal(err)
			}
			if r.Lo != tt.lo || r.Hi != tt.hi || math.Abs(r.Coverage-tt.coverage) > 1e-9 {
				t.Errorf("QuantileRanks(%d, %g) = %+v, want ranks %d..%d, coverage %.10f", tt.n, tt.q, r, tt.lo, tt.hi, tt.coverage)
			}
			if r.Coverage < 0.95 {
				t.Errorf("coverage %g is below the confidence asked for", r.Coverage)
			}
		})
	}
}

func TestMinN(t *testing.T) {
	tests := []struct {
		name string
		q    float64
		want int
	}{
		{"p99", 0.99, 368},
		{"p90", 0.9, 36},
		{"p50", 0.5, 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := MinN(tt.q, 0.95)
			if n != tt.want {
				t.Fatalf("MinN(%g) = %d, want %d", tt.q, n, tt.want)
			}
			// The boundary agrees with QuantileRanks.
			below, _ := QuantileRanks(n-1, tt.q, 0.95)
			at, _ := QuantileRanks(n, tt.q, 0.95)
			if below.Hi != 0 || at.Hi == 0 {
				t.Errorf("at n=%d upper rank %d, at n=%d %d: want unbounded then bounded", n-1, below.Hi, n, at.Hi)
			}
		})
	}
}

func TestQuantileRanksRefusesBadInput(t *testing.T) {
	tests := []struct {
		name    string
		n       int
		q, conf float64
		want    string
	}{
		{"no values", 0, 0.5, 0.95, "n 0"},
		{"quantile as a percent", 10, 90, 0.95, "quantile 90"},
		{"NaN quantile", 10, math.NaN(), 0.95, "quantile NaN"},
		{"confidence as a percent", 10, 0.5, 95, "confidence 95"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := QuantileRanks(tt.n, tt.q, tt.conf); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one naming %q", err, tt.want)
			}
		})
	}
}
