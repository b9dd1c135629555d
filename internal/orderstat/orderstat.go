// Package orderstat computes distribution-free confidence intervals for
// quantiles from order statistics: for n independent values, the interval
// between the l-th and u-th smallest holds the q-quantile with probability
// P(l ≤ B ≤ u−1), B ~ Binomial(n, q), whatever the distribution.
package orderstat

import (
	"fmt"
	"math"
)

// Ranks is a confidence interval for a quantile as 1-based ranks into the
// sorted sample. Lo is 0 when no rank bounds the quantile from below at the
// requested confidence (the sample is too small), and Hi is 0 when none
// bounds it from above: the interval is then unbounded on that side.
type Ranks struct {
	Lo, Hi int
	// Coverage is the exact probability that the interval holds the
	// quantile, with an unbounded side counted as always holding it.
	Coverage float64
}

// QuantileRanks returns the equal-tailed interval for the q-quantile of n
// values at confidence conf: the largest l with P(B ≤ l−1) ≤ (1−conf)/2 and
// the smallest u with P(B ≤ u−1) ≥ 1 − (1−conf)/2, B ~ Binomial(n, q). For
// n = 20, q = 0.5, conf = 0.95 that is ranks 6 and 15 (coverage 95.9%).
func QuantileRanks(n int, q, conf float64) (Ranks, error) {
	switch {
	case n < 1:
		return Ranks{}, fmt.Errorf("orderstat: n %d is not positive: an interval needs at least one value", n)
	case !(q > 0 && q < 1):
		return Ranks{}, fmt.Errorf("orderstat: quantile %g is outside (0, 1): write p90 as 0.9", q)
	case !(conf > 0 && conf < 1):
		return Ranks{}, fmt.Errorf("orderstat: confidence %g is outside (0, 1): write 95%% as 0.95", conf)
	}
	tail := (1 - conf) / 2
	// cdf[k] = P(B ≤ k), from the pmf in log space so large n cannot
	// underflow a factor.
	cdf := make([]float64, n+1)
	lq, lp := math.Log(q), math.Log1p(-q)
	lgN, _ := math.Lgamma(float64(n + 1))
	var c float64
	for k := 0; k <= n; k++ {
		lk, _ := math.Lgamma(float64(k + 1))
		lnk, _ := math.Lgamma(float64(n - k + 1))
		c += math.Exp(lgN - lk - lnk + float64(k)*lq + float64(n-k)*lp)
		cdf[k] = math.Min(c, 1)
	}
	at := func(k int) float64 { // P(B ≤ k)
		switch {
		case k < 0:
			return 0
		case k >= n:
			return 1
		}
		return cdf[k]
	}
	// A relative slack absorbs the rounding of the summed pmf, so that a
	// tail exactly at the limit is treated as at it.
	const eps = 1e-12
	var r Ranks
	for l := 1; l <= n && at(l-1) <= tail+eps; l++ {
		r.Lo = l
	}
	for u := 1; u <= n; u++ {
		if at(u-1) >= 1-tail-eps {
			r.Hi = u
			break
		}
	}
	hi, lo := 1.0, 0.0
	if r.Hi > 0 {
		hi = at(r.Hi - 1)
	}
	if r.Lo > 0 {
		lo = at(r.Lo - 1)
	}
	r.Coverage = hi - lo
	return r, nil
}

// MinN returns the smallest n for which QuantileRanks bounds the q-quantile
// from above at confidence conf: 1 − q^n ≥ 1 − (1−conf)/2. For p99 at 95%
// that is 368.
func MinN(q, conf float64) int {
	tail := (1 - conf) / 2
	return int(math.Ceil(math.Log(tail) / math.Log(q)))
}
