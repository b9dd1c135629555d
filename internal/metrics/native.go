package metrics

import (
	"math"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"github.com/ttftlab/ttftlab/internal/hdr"
)

// NativeBucketFactor is the growth factor of the native histograms'
// buckets, as client_golang's HistogramOpts.NativeHistogramBucketFactor:
// 1.1 gives schema 3, buckets that grow by 2^(1/8) ≈ 1.09.
const NativeBucketFactor = 1.1

// nativeSchema is the schema client_golang picks for NativeBucketFactor.
const nativeSchema = 3

// nativeZeroThreshold is client_golang's default zero bucket width; every
// latency is at least 1 µs, far above it.
const nativeZeroThreshold = 2.938735877055719e-39

// classicBounds are the few classic buckets (seconds) each latency
// histogram also carries, so that a Prometheus without native histograms
// can still read it.
func classicBounds() []float64 {
	return []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 25, 60}
}

// nativeBounds are the schema-3 bucket boundaries within one octave, as
// fractions in [0.5, 1): client_golang's own table, so that a value on an
// edge lands where its histogram would put it.
func nativeBounds() [8]float64 {
	return [8]float64{0.5, 0.5452538663326288, 0.5946035575013605, 0.6484197773255048,
		0.7071067811865475, 0.7711054127039704, 0.8408964152537144, 0.9170040432046711}
}

// nativeKey is the schema-3 bucket index of v > 0, as client_golang's
// histogram computes it: bucket i holds (2^((i-1)/8), 2^(i/8)].
func nativeKey(v float64) int {
	frac, exp := math.Frexp(v) // v = frac × 2^exp, frac in [0.5, 1)
	b := nativeBounds()
	return sort.SearchFloat64s(b[:], frac) + (exp-1)*len(b)
}

// nativeHist accumulates a latency distribution in seconds as a native
// histogram (schema 3) and a classic one, with counts: a whole bucket of an
// HdrHistogram is added at once, not value by value. It is not safe for
// concurrent use.
type nativeHist struct {
	count   uint64
	sum     float64
	zero    uint64
	pos     map[int]int64
	bounds  []float64
	classic []uint64 // per bound, not cumulative
	created time.Time
}

func newNativeHist(created time.Time) *nativeHist {
	b := classicBounds()
	return &nativeHist{pos: map[int]int64{}, bounds: b, classic: make([]uint64, len(b)), created: created}
}

// add records n observations of v seconds.
func (h *nativeHist) add(v float64, n uint64) {
	if n == 0 || math.IsNaN(v) || v < 0 {
		return
	}
	h.count += n
	h.sum += v * float64(n)
	if v <= nativeZeroThreshold {
		h.zero += n
	} else {
		h.pos[nativeKey(v)] += int64(n)
	}
	for i, b := range h.bounds {
		if v <= b {
			h.classic[i] += n
			break
		}
	}
}

// addHDR adds every value of an HdrHistogram (microseconds): each HDR
// bucket, 0.1 % wide, is added with its count at its midpoint. Native
// buckets are 9 % wide, so only a value within 0.05 % of a native bucket's
// edge can land in the neighbouring bucket.
func (h *nativeHist) addHDR(hh *hdr.Histogram) {
	hh.Buckets(func(lo, hi, n int64) {
		if n > 0 {
			h.add((float64(lo)+float64(hi))/2/1e6, uint64(n))
		}
	})
}

// metric returns the histogram as a constant Prometheus metric with both
// the native buckets and the classic ones.
func (h *nativeHist) metric(desc *prometheus.Desc, labelValues ...string) (prometheus.Metric, error) {
	m, err := prometheus.NewConstNativeHistogram(desc, h.count, h.sum, h.pos, nil, h.zero, nativeSchema, nativeZeroThreshold, h.created, labelValues...)
	if err != nil {
		return nil, err
	}
	var cum uint64
	buckets := make([]*dto.Bucket, len(h.bounds))
	for i, b := range h.bounds {
		cum += h.classic[i]
		buckets[i] = &dto.Bucket{UpperBound: proto.Float64(b), CumulativeCount: proto.Uint64(cum)}
	}
	return withClassic{Metric: m, buckets: buckets}, nil
}

// withClassic adds classic buckets to a constant native histogram.
type withClassic struct {
	prometheus.Metric
	buckets []*dto.Bucket
}

// Write writes the native histogram and sets its classic buckets.
func (w withClassic) Write(out *dto.Metric) error {
	if err := w.Metric.Write(out); err != nil {
		return err
	}
	out.Histogram.Bucket = w.buckets
	return nil
}
