package segment

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		start, end string
		want       string // String() or an error substring after "!"
	}{
		{"0", "1", "0:1"},
		{"", "", "0:1"},
		{"1/3", "2/3", "1/3:2/3"},
		{"2/6", "4/6", "1/3:2/3"},
		{"0.25", "0.5", "1/4:1/2"},
		{"25%", "50%", "1/4:1/2"},
		{" 0 ", "12.5%", "0:1/8"},
		{"1/2", "1/2", "!is empty"},
		{"2/3", "1/3", "!is empty"},
		{"0", "3/2", "!outside [0, 1]"},
		{"-1/2", "1", "!outside [0, 1]"},
		{"x", "1", "!is not a rational"},
		{"1e-1", "1", "!is not a rational"},
		{"0", "1/x%", "!not a percentage"},
		{"0", "1/0", "!not a rational"},
		{"0", "1/8589934593", "!denominator above"},
	}
	for _, tt := range tests {
		t.Run(tt.start+":"+tt.end, func(t *testing.T) {
			s, err := Parse(tt.start, tt.end)
			if want, ok := strings.CutPrefix(tt.want, "!"); ok {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("Parse = %v, %v; want an error containing %q", s, err, want)
				}
				return
			}
			if err != nil || s.String() != tt.want {
				t.Fatalf("Parse = %v, %v; want %s", s, err, tt.want)
			}
		})
	}
	var zero Segment
	if !zero.IsFull() || zero.String() != "0:1" || !zero.Owns(12345) || zero.Count(7) != 7 || zero.Scale(9) != 9 {
		t.Errorf("zero segment is not the whole plan: %v", zero)
	}
}

// randomTiling returns k segments tiling [0, 1) with bounds on denominators
// up to maxDen.
func randomTiling(r *rand.Rand, k int, maxDen uint64) []Segment {
	den := 1 + r.Uint64N(maxDen)
	for den < uint64(k) {
		den++
	}
	cuts := map[uint64]bool{0: true, den: true}
	for len(cuts) < k+1 {
		cuts[1+r.Uint64N(den-1)] = true
	}
	var bounds []uint64
	for c := range cuts {
		bounds = append(bounds, c)
	}
	slices.Sort(bounds)
	var out []Segment
	for i := 1; i < len(bounds); i++ {
		s, err := New(bounds[i-1], den, bounds[i], den)
		if err != nil {
			panic(err)
		}
		out = append(out, s)
	}
	return out
}

// Property: over any tiling, shares sum to exactly N, and every index is
// owned by exactly one segment.
func TestSharesSumExactly(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for trial := range 150 {
		k := 1 + r.IntN(7)
		segs := randomTiling(r, k, 40)
		n := r.Int64N(3000)
		if trial%10 == 0 {
			n = r.Int64N(10)
		}
		var scale int64
		var count uint64
		for _, s := range segs {
			sc := s.Scale(n)
			if sc < 0 || math.Abs(float64(sc)-float64(n)*s.Len()) >= 1 {
				t.Fatalf("%v.Scale(%d) = %d, want within 1 of %.3f", s, n, sc, float64(n)*s.Len())
			}
			scale += sc
			count += s.Count(uint64(n))
		}
		if scale != n || count != uint64(n) {
			t.Fatalf("tiling %v of N=%d: Σ Scale = %d, Σ Count = %d; want %d", segs, n, scale, count, n)
		}
		for i := range uint64(300) {
			owners := 0
			for _, s := range segs {
				if s.Owns(i) {
					owners++
				}
			}
			if owners != 1 {
				t.Fatalf("tiling %v: index %d owned by %d segments, want 1", segs, i, owners)
			}
		}
	}
}

func TestCountMatchesOwns(t *testing.T) {
	for _, s := range append(Even(3), Even(7)...) {
		var c uint64
		for i := range uint64(8000) {
			if i%97 == 0 && c != s.Count(i) {
				t.Fatalf("%v.Count(%d) = %d, owned so far %d", s, i, s.Count(i), c)
			}
			if s.Owns(i) {
				c++
			}
		}
	}
}

// Striping is fair: a segment with a denominator of at most 10 never strays
// more than a few indices from its exact share of any prefix of the
// indices; halves, thirds, quarters and sixths stay within 2.
func TestStripingIsFair(t *testing.T) {
	for k := 1; k <= 10; k++ {
		for _, s := range Even(k) {
			var c uint64
			worst := 0.0
			for i := range uint64(20000) {
				if s.Owns(i) {
					c++
				}
				worst = max(worst, math.Abs(float64(c)-float64(i+1)*s.Len()))
			}
			bound := 5.0
			if 12%k == 0 {
				bound = 2
			}
			if worst > bound {
				t.Errorf("%v: count strays %.2f from its share", s, worst)
			}
		}
	}
	// The first index goes to the segment starting at 0, the second to the
	// one holding 1/2.
	h := Even(2)
	if !h[0].Owns(0) || !h[1].Owns(1) || !h[0].Owns(2) || !h[1].Owns(3) {
		t.Error("halves do not alternate")
	}
}

func TestPosition(t *testing.T) {
	want := [][2]uint64{{0, 1}, {1, 2}, {1, 6}, {4, 6}, {2, 6}, {5, 6}, {1, 12}}
	for i, w := range want {
		n, d := Position(uint64(i))
		if n*w[1] != w[0]*d {
			t.Errorf("Position(%d) = %d/%d, want %d/%d", i, n, d, w[0], w[1])
		}
	}
}

func TestSequenceAndRate(t *testing.T) {
	segs, err := Sequence("0,1/3,2/3,1")
	if err != nil || len(segs) != 3 || segs[1].String() != "1/3:2/3" {
		t.Fatalf("Sequence = %v, %v", segs, err)
	}
	if got := segs[1].ScaleRate(30); math.Abs(got-10) > 1e-9 {
		t.Errorf("ScaleRate(30) = %v, want 10", got)
	}
	if _, err := Sequence("0,1/2,1/3"); err == nil {
		t.Error("a decreasing sequence was accepted")
	}
	if got := segs[0].Next(1); got != 2 {
		t.Errorf("Next(1) = %d, want 2", got)
	}
}
