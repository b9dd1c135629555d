package metrics

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/ttftlab/ttftlab/internal/hdr"
)

// The native histogram written with counts is the one client_golang's own
// histogram (NativeHistogramBucketFactor 1.1, the same classic buckets)
// builds from the same values one Observe at a time.
func TestNativeHistMatchesClientGolang(t *testing.T) {
	tests := []struct {
		name   string
		values func(r *rand.Rand) float64
		n      int
	}{
		{name: "TTFT-like, 1 ms to 10 s", values: func(r *rand.Rand) float64 { return math.Exp(r.Float64()*math.Log(1e4)) / 1e3 }, n: 5000},
		{name: "ITL-like, tens of µs to 100 ms", values: func(r *rand.Rand) float64 { return 1e-5 + r.ExpFloat64()*0.01 }, n: 5000},
		{name: "powers of two and bucket edges", values: func(r *rand.Rand) float64 { return math.Exp2(float64(r.IntN(40)-30) / 8) }, n: 500},
		{name: "one value", values: func(*rand.Rand) float64 { return 0.25 }, n: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			ref := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "x", Help: "x", Buckets: classicBounds(), NativeHistogramBucketFactor: NativeBucketFactor})
			ours := newNativeHist(time.Unix(0, 0))
			counts := map[float64]uint64{}
			for range tt.n {
				v := tt.values(r)
				ref.Observe(v)
				counts[v]++
			}
			for v, n := range counts {
				ours.add(v, n) // with counts, not value by value
			}
			var want, got dto.Metric
			if err := ref.Write(&want); err != nil {
				t.Fatal(err)
			}
			m, err := ours.metric(prometheus.NewDesc("x", "x", nil, nil))
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Write(&got); err != nil {
				t.Fatal(err)
			}
			wh, gh := want.GetHistogram(), got.GetHistogram()
			if gh.GetSchema() != wh.GetSchema() || gh.GetSampleCount() != wh.GetSampleCount() || gh.GetZeroCount() != wh.GetZeroCount() {
				t.Errorf("schema %d count %d zero %d, want %d %d %d", gh.GetSchema(), gh.GetSampleCount(), gh.GetZeroCount(),
					wh.GetSchema(), wh.GetSampleCount(), wh.GetZeroCount())
			}
			if math.Abs(gh.GetSampleSum()-wh.GetSampleSum()) > 1e-9*math.Abs(wh.GetSampleSum()) {
				t.Errorf("sum %g, want %g", gh.GetSampleSum(), wh.GetSampleSum())
			}
			if d := cmp.Diff(wh.GetPositiveSpan(), gh.GetPositiveSpan(), protocmp.Transform()); d != "" {
				t.Errorf("native spans differ (-client_golang +ours):\n%s", d)
			}
			if d := cmp.Diff(wh.GetPositiveDelta(), gh.GetPositiveDelta()); d != "" {
				t.Errorf("native deltas differ (-client_golang +ours):\n%s", d)
			}
			if d := cmp.Diff(wh.GetBucket(), gh.GetBucket(), protocmp.Transform()); d != "" {
				t.Errorf("classic buckets differ (-client_golang +ours):\n%s", d)
			}
		})
	}
}

// An HdrHistogram's values land in the native bucket of their own value:
// the count is exact, and each value's native bucket is the one
// client_golang would pick for it.
func TestAddHDRKeepsCountAndBuckets(t *testing.T) {
	tests := []struct {
		name string
		us   []int64
	}{
		// No value within 0.1 % of a native bucket's edge: there, the HDR
		// bucket's midpoint may fall on the other side (2 s is an edge).
		{name: "spread", us: []int64{1, 17, 999, 1000, 1234, 50_000, 123_456, 1_900_000, 3_599_999_999}},
		{name: "repeated", us: []int64{4200, 4200, 4200, 4201, 9000}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := hdr.New()
			ref := newNativeHist(time.Time{})
			for _, us := range tt.us {
				h.Record(time.Duration(us) * time.Microsecond)
				ref.add(float64(us)/1e6, 1)
			}
			got := newNativeHist(time.Time{})
			got.addHDR(h)
			if got.count != uint64(len(tt.us)) {
				t.Fatalf("count %d, want %d", got.count, len(tt.us))
			}
			if d := cmp.Diff(ref.pos, got.pos); d != "" {
				t.Errorf("native buckets differ from the exact values' (-exact +from HDR):\n%s", d)
			}
			if math.Abs(got.sum-ref.sum) > 1e-3*ref.sum {
				t.Errorf("sum %g s, want %g s within 0.1%%", got.sum, ref.sum)
			}
		})
	}
}
