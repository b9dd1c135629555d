// Package hdr fixes the one HdrHistogram configuration that every agent and
// the coordinator use, so that merging interval histograms across hosts is
// exact, and provides encoding, merging and summaries on top of it.
//
// All latencies are recorded in microseconds, from 1 µs to 1 hour, with 3
// significant digits. A Histogram is not safe for concurrent use.
package hdr

import (
	"errors"
	"fmt"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// The one configuration. Changing it breaks merges with older agents, so it
// is part of the wire protocol (see ProtocolVersion in internal/membership).
const (
	// Lowest is the lowest discernible value, in microseconds.
	Lowest = 1
	// Highest is the highest trackable value, in microseconds (1 hour).
	Highest = int64(time.Hour / time.Microsecond)
	// SigFigs is the number of significant decimal digits kept.
	SigFigs = 3
)

// Metric names shared by the agent, the coordinator and the reports.
const (
	TTFT        = "ttft"
	TTFTSched   = "ttft_sched"
	E2E         = "e2e"
	ITL         = "itl"
	ICL         = "icl"
	TPOT        = "tpot"
	DispatchLag = "dispatch_lag"
)

// Histogram is a latency histogram in the shared configuration.
type Histogram struct {
	h *hdrhistogram.Histogram
	// clamped counts values outside [Lowest, Highest] that were clamped
	// rather than dropped, so nothing measured is silently lost.
	clamped int64
}

// New returns an empty histogram in the shared configuration.
func New() *Histogram {
	return &Histogram{h: hdrhistogram.New(Lowest, Highest, SigFigs)}
}

// Record adds one duration. Values below 1 µs count as 1 µs and values above
// one hour count as one hour; both are counted in Clamped.
func (h *Histogram) Record(d time.Duration) {
	us := d.Microseconds()
	if us < Lowest {
		us = Lowest
		h.clamped++
	} else if us > Highest {
		us = Highest
		h.clamped++
	}
	// RecordValue only fails for values out of range, which the clamp rules out.
	_ = h.h.RecordValue(us)
}

// Clamped returns how many recorded values were clamped into range.
func (h *Histogram) Clamped() int64 { return h.clamped }

// Count returns the number of recorded values.
func (h *Histogram) Count() int64 { return h.h.TotalCount() }

// Merge adds every value of o into h. Both use the shared configuration, so
// the merge is exact: no value moves bucket.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil {
		return
	}
	h.h.Merge(o.h)
	h.clamped += o.clamped
}

// Reset empties the histogram, keeping its allocation.
func (h *Histogram) Reset() {
	h.h.Reset()
	h.clamped = 0
}

// Encode returns the histogram in HdrHistogram's V2 compressed encoding.
func (h *Histogram) Encode() ([]byte, error) {
	b, err := h.h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return nil, fmt.Errorf("encode histogram: %w", err)
	}
	return b, nil
}

// Decode parses a V2-encoded histogram and checks that it uses the shared
// configuration; a histogram in another configuration cannot be merged
// exactly and is refused.
func Decode(b []byte) (*Histogram, error) {
	if len(b) == 0 {
		return nil, errors.New("decode histogram: empty input")
	}
	d, err := hdrhistogram.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("decode histogram: %w", err)
	}
	if d.LowestTrackableValue() != Lowest || d.HighestTrackableValue() != Highest || d.SignificantFigures() != SigFigs {
		return nil, fmt.Errorf("decode histogram: configuration (%d, %d, %d) differs from the shared (%d, %d, %d); upgrade the agent so both sides use one configuration",
			d.LowestTrackableValue(), d.HighestTrackableValue(), d.SignificantFigures(), Lowest, Highest, SigFigs)
	}
	return &Histogram{h: d}, nil
}

// Summary is a histogram's digest, in milliseconds.
type Summary struct {
	Count int64   `json:"count"`
	Mean  float64 `json:"mean"`
	Min   float64 `json:"min"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// Summarize returns the digest. Percentiles are HdrHistogram's
// highest-equivalent values, accurate to 3 significant digits.
func (h *Histogram) Summarize() Summary {
	if h.Count() == 0 {
		return Summary{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	return Summary{
		Count: h.Count(),
		Mean:  h.h.Mean() / 1000,
		Min:   ms(h.h.Min()),
		P50:   ms(h.h.ValueAtQuantile(50)),
		P90:   ms(h.h.ValueAtQuantile(90)),
		P95:   ms(h.h.ValueAtQuantile(95)),
		P99:   ms(h.h.ValueAtQuantile(99)),
		Max:   ms(h.h.Max()),
	}
}

// Set is a group of named histograms, one per metric. It is not safe for
// concurrent use.
type Set map[string]*Histogram

// Get returns the histogram for metric, creating it when absent.
func (s Set) Get(metric string) *Histogram {
	h, ok := s[metric]
	if !ok {
		h = New()
		s[metric] = h
	}
	return h
}

// Merge adds every histogram of o into s.
func (s Set) Merge(o Set) {
	for m, h := range o {
		s.Get(m).Merge(h)
	}
}
