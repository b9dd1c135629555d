// Package segment implements k6-style execution segments: each agent of a
// multi-agent run gets a rational slice [start, end) of one global load plan
// and computes its own share of it exactly and reproducibly, with no
// coordination beyond the segment itself.
//
// Two kinds of share are computed:
//
//   - Scale splits a plain integer such as a concurrency (k6's
//     ExecutionSegment.Scale): round(N·end) − round(N·start). The shares of
//     segments that tile [0, 1) telescope to exactly N, and each differs from
//     N·(end−start) by less than 1.
//   - Owns and Count stripe an indexed sequence, such as the global arrivals
//     of an open-loop schedule or the global request indices: index i has a
//     fixed position in [0, 1), and the segment whose interval holds that
//     position owns it. Any set of segments that tiles [0, 1) therefore
//     partitions the indices exactly, whatever their number, and the union
//     of the agents' arrivals is the single-agent schedule.
//
// The striping positions are the mixed-radix radical inverse of i with the
// digit bases 2, 3, 2, 5, 2, 3, 7 repeated (one cycle multiplies to 2520, the
// least common multiple of 1..10). Consecutive indices thus land far apart,
// and a segment whose bounds are multiples of 1/2520 (halves, thirds, …,
// tenths, twelfths, …) gets exactly 2520·(end−start) of every block of 2520
// consecutive indices, so its count never strays far from N·(end−start).
// (floor(end·N) − floor(start·N) is not a partition of the indices: the same
// index can fall to two segments or to none.)
//
// Segment values are immutable and safe for concurrent use.
package segment

import (
	"errors"
	"fmt"
	"math/big"
	"math/bits"
	"strings"
)

// maxDenom bounds a bound's denominator so that exact comparisons fit in
// 128-bit arithmetic; "0.333333333" (10⁹) is fine.
const maxDenom = 1 << 32

// bases are the digit bases of the striping positions, repeated.
var bases = [...]uint64{2, 3, 2, 5, 2, 3, 7}

// block is the product of one cycle of bases.
const block = 2520

// Segment is the half-open slice [Start, End) of a global plan, with
// 0 ≤ Start < End ≤ 1. The zero value is the whole plan, [0, 1).
type Segment struct {
	// a/b is the start and c/d the end; d == 0 means the zero value.
	a, b, c, d uint64
}

// Full returns the whole plan, [0, 1).
func Full() Segment { return Segment{a: 0, b: 1, c: 1, d: 1} }

// New returns the segment [start, end) from two rationals given as
// num/denom pairs.
func New(startNum, startDen, endNum, endDen uint64) (Segment, error) {
	if startDen == 0 || endDen == 0 {
		return Segment{}, errors.New("segment bound has a zero denominator: give bounds such as 1/3")
	}
	s := Segment{a: startNum, b: startDen, c: endNum, d: endDen}
	s.a, s.b = reduce(s.a, s.b)
	s.c, s.d = reduce(s.c, s.d)
	return s, s.check()
}

// Parse parses a segment from its start and end, each "0", "1", a fraction
// such as "1/3", a decimal such as "0.25", or a percentage such as "25%".
// Empty start means 0 and empty end means 1.
func Parse(start, end string) (Segment, error) {
	if start == "" {
		start = "0"
	}
	if end == "" {
		end = "1"
	}
	a, b, err := ParseRat(start)
	if err != nil {
		return Segment{}, fmt.Errorf("segment start: %w", err)
	}
	c, d, err := ParseRat(end)
	if err != nil {
		return Segment{}, fmt.Errorf("segment end: %w", err)
	}
	s := Segment{a: a, b: b, c: c, d: d}
	return s, s.check()
}

// ParseRat parses a rational in [0, 1] written as "1/3", "0.25", "25%" or
// an integer, and returns it reduced as num/den.
func ParseRat(s string) (num, den uint64, err error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, 0, errors.New("empty value: write a fraction such as 1/3, a decimal such as 0.25 or a percentage such as 25%")
	}
	r := new(big.Rat)
	if p, ok := strings.CutSuffix(in, "%"); ok {
		if _, ok := r.SetString(strings.TrimSpace(p)); !ok || strings.Contains(p, "/") {
			return 0, 0, fmt.Errorf("%q is not a percentage: write for example 25%%", s)
		}
		r.Quo(r, big.NewRat(100, 1))
	} else if _, ok := r.SetString(in); !ok || strings.ContainsAny(in, "eE") {
		return 0, 0, fmt.Errorf("%q is not a rational: write a fraction such as 1/3, a decimal such as 0.25 or a percentage such as 25%%", s)
	}
	if r.Sign() < 0 || r.Cmp(big.NewRat(1, 1)) > 0 {
		return 0, 0, fmt.Errorf("%q is outside [0, 1]: segment bounds are fractions of the whole plan", s)
	}
	if !r.Denom().IsUint64() || r.Denom().Uint64() > maxDenom {
		return 0, 0, fmt.Errorf("%q has a denominator above %d: use a simpler fraction", s, uint64(maxDenom))
	}
	return r.Num().Uint64(), r.Denom().Uint64(), nil
}

func reduce(n, d uint64) (uint64, uint64) {
	g := gcd(n, d)
	if g == 0 {
		return n, d
	}
	return n / g, d / g
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}

func (s Segment) check() error {
	if s.b > maxDenom || s.d > maxDenom {
		return fmt.Errorf("segment %s has a denominator above %d: use a simpler fraction", s, uint64(maxDenom))
	}
	if cmpFrac(s.a, s.b, s.c, s.d) >= 0 {
		return fmt.Errorf("segment %s is empty: start must be below end (0 ≤ start < end ≤ 1)", s)
	}
	if s.c > s.d {
		return fmt.Errorf("segment %s ends after 1: end must be ≤ 1", s)
	}
	return nil
}

func (s Segment) norm() Segment {
	if s.d == 0 {
		return Full()
	}
	return s
}

// IsFull reports whether s is the whole plan.
func (s Segment) IsFull() bool {
	s = s.norm()
	return s.a == 0 && s.c == s.d
}

// String returns "start:end", for example "1/3:2/3".
func (s Segment) String() string {
	s = s.norm()
	return fracString(s.a, s.b) + ":" + fracString(s.c, s.d)
}

func fracString(n, d uint64) string {
	if d == 1 {
		return fmt.Sprint(n)
	}
	return fmt.Sprintf("%d/%d", n, d)
}

// Start and End return the bounds as float64, for display and rates.
func (s Segment) Start() float64 { s = s.norm(); return float64(s.a) / float64(s.b) }

// End returns the end bound as a float64.
func (s Segment) End() float64 { s = s.norm(); return float64(s.c) / float64(s.d) }

// Len returns end − start as a float64.
func (s Segment) Len() float64 { return s.End() - s.Start() }

// ScaleRate returns the segment's share of a global rate: rate·(end−start).
func (s Segment) ScaleRate(rate float64) float64 { return rate * s.Len() }

// Scale returns the segment's share of a global integer n ≥ 0, such as a
// concurrency, with k6's rule round(n·end) − round(n·start), rounding halves
// up. Shares of segments that tile [0, 1) sum to exactly n.
func (s Segment) Scale(n int64) int64 {
	if n <= 0 {
		return 0
	}
	s = s.norm()
	return roundMul(uint64(n), s.c, s.d) - roundMul(uint64(n), s.a, s.b)
}

// roundMul returns round(n·num/den), halves up, exactly.
func roundMul(n, num, den uint64) int64 {
	hi, lo := bits.Mul64(n, 2*num) // 2·n·num
	lo, carry := bits.Add64(lo, den, 0)
	hi += carry
	// The quotient is at most n, so hi < 2·den as Div64 requires.
	q, _ := bits.Div64(hi, lo, 2*den)
	return int64(q)
}

// Position returns the striping position of index i as num/den in [0, 1).
func Position(i uint64) (num, den uint64) {
	var digits [64]uint8
	var bs [64]uint8
	k := 0
	for x := i; x > 0; k++ {
		b := bases[k%len(bases)]
		digits[k] = uint8(x % b)
		bs[k] = uint8(b)
		x /= b
	}
	num, den = 0, 1
	for j := k - 1; j >= 0; j-- {
		num = uint64(digits[j])*den + num
		den *= uint64(bs[j])
	}
	return num, den
}

// Owns reports whether index i of a global sequence falls to this segment:
// start ≤ Position(i) < end.
func (s Segment) Owns(i uint64) bool {
	s = s.norm()
	if s.IsFull() {
		return true
	}
	pn, pd := Position(i)
	return cmpFrac(s.a, s.b, pn, pd) <= 0 && cmpFrac(pn, pd, s.c, s.d) < 0
}

// Count returns how many of the indices 0 … n−1 the segment owns. Counts of
// segments that tile [0, 1) sum to exactly n.
func (s Segment) Count(n uint64) uint64 {
	s = s.norm()
	if s.IsFull() {
		return n
	}
	var c, i uint64
	if block%s.b == 0 && block%s.d == 0 {
		// Every aligned block of 2520 indices holds each position g/2520
		// once, shifted by less than 1/2520, so it gives exactly
		// 2520·(end−start) indices.
		per := s.c*(block/s.d) - s.a*(block/s.b)
		full := n / block
		c, i = full*per, full*block
	}
	for ; i < n; i++ {
		if s.Owns(i) {
			c++
		}
	}
	return c
}

// Next returns the first index ≥ i that the segment owns. Every segment
// owns an index in each block of 2520 when its bounds are multiples of
// 1/2520, and eventually otherwise, since positions are dense.
func (s Segment) Next(i uint64) uint64 {
	for !s.Owns(i) {
		i++
	}
	return i
}

// cmpFrac compares a/b with c/d exactly.
func cmpFrac(a, b, c, d uint64) int {
	h1, l1 := bits.Mul64(a, d)
	h2, l2 := bits.Mul64(c, b)
	switch {
	case h1 < h2 || (h1 == h2 && l1 < l2):
		return -1
	case h1 == h2 && l1 == l2:
		return 0
	}
	return 1
}

// Sequence parses a k6-style segment sequence such as "0,1/3,2/3,1" into
// the segments it delimits.
func Sequence(s string) ([]Segment, error) {
	parts := strings.Split(s, ",")
	if len(parts) < 2 {
		return nil, fmt.Errorf("sequence %q needs at least two bounds: write for example 0,1/2,1", s)
	}
	var out []Segment
	for i := 1; i < len(parts); i++ {
		seg, err := Parse(parts[i-1], parts[i])
		if err != nil {
			return nil, fmt.Errorf("sequence %q: %w", s, err)
		}
		out = append(out, seg)
	}
	return out, nil
}

// Even returns n segments of equal length that tile [0, 1).
func Even(n int) []Segment {
	out := make([]Segment, 0, n)
	for i := range n {
		s, _ := New(uint64(i), uint64(n), uint64(i+1), uint64(n))
		out = append(out, s)
	}
	return out
}
