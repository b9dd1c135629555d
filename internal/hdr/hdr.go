// Package hdr fixes the one HdrHistogram configuration that every agent and
// the coordinator use, so that merging interval histograms across hosts is
// exact, and provides encoding, merging and summaries on top of it.
//
// All latencies are recorded in microseconds, from 1 µs to 1 hour, with 3
// significant digits. A Histogram is not safe for concurrent use.
package hdr

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"sync"
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
	// h holds the counters. A decoded histogram starts as sparse alone
	// and gets h on first need (dense): an interval histogram fills a few
	// hundred of the 23,552 counters, and the coordinator mostly validates,
	// counts and merges what it decodes, which the sparse form does without
	// allocating and clearing the dense array (BenchmarkMerge200Agents in
	// coordinator).
	h *hdrhistogram.Histogram
	// once builds h from sparse, so that concurrent readers of a decoded
	// histogram (Summarize, Merge from it) stay as safe as with a dense one.
	once sync.Once
	// sparse is a decoded histogram's non-empty counters in index order,
	// and total their sum; both are immutable and dropped by the first
	// change to the histogram (Record, Merge into it, Reset).
	sparse []counter
	total  int64
	// clamped counts values outside [Lowest, Highest] that were clamped
	// rather than dropped, so nothing measured is silently lost.
	clamped int64
}

// New returns an empty histogram in the shared configuration.
func New() *Histogram {
	return &Histogram{h: hdrhistogram.New(Lowest, Highest, SigFigs)}
}

// dense returns the counters as a library histogram, building it from the
// decoded counters on first use. It does not change what h holds.
func (h *Histogram) dense() *hdrhistogram.Histogram {
	h.once.Do(func() {
		if h.h != nil {
			return
		}
		d := hdrhistogram.New(Lowest, Highest, SigFigs)
		for _, c := range h.sparse {
			// In range by construction: decodeCounts bounds every index.
			_ = d.RecordValues(valueAtIndex(int64(c.idx)), int64(c.n))
		}
		h.h = d
	})
	return h.h
}

// mutable returns the library histogram for a change, after which the
// decoded counters no longer describe h.
func (h *Histogram) mutable() *hdrhistogram.Histogram {
	d := h.dense()
	h.sparse, h.total = nil, 0
	return d
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
	_ = h.mutable().RecordValue(us)
}

// Clamped returns how many recorded values were clamped into range.
func (h *Histogram) Clamped() int64 { return h.clamped }

// Count returns the number of recorded values.
func (h *Histogram) Count() int64 {
	if h.sparse != nil {
		return h.total
	}
	return h.dense().TotalCount()
}

// Merge adds every value of o into h. Both use the shared configuration, so
// the merge is exact: no value moves bucket.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil {
		return
	}
	d := h.mutable()
	if o.sparse != nil {
		for _, c := range o.sparse {
			_ = d.RecordValues(valueAtIndex(int64(c.idx)), int64(c.n))
		}
	} else {
		d.Merge(o.dense())
	}
	h.clamped += o.clamped
}

// Reset empties the histogram, keeping its allocation.
func (h *Histogram) Reset() {
	h.mutable().Reset()
	h.clamped = 0
}

// Encode returns the histogram in HdrHistogram's V2 compressed encoding.
func (h *Histogram) Encode() ([]byte, error) {
	b, err := h.dense().Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		return nil, fmt.Errorf("encode histogram: %w", err)
	}
	return b, nil
}

// Limits on an encoded histogram. Histograms arrive from other processes
// (agents over gRPC, events.jsonl on disk), so Decode checks every byte
// against them before anything is allocated on the input's say.
const (
	// CountsLen is the number of counters in the shared configuration.
	CountsLen = 23552
	// MaxInflatedBytes caps the zlib-inflated V2 payload: the 40-byte header
	// plus at most 9 bytes per counter, rounded up. A larger payload cannot
	// come from the shared configuration and is refused as a bomb.
	MaxInflatedBytes = 256 << 10
	// MaxEncodedBytes caps the base64 text handed to Decode: the base64 of
	// an 8-byte envelope and a deflate stream of MaxInflatedBytes stored
	// uncompressed, with room for deflate's per-block overhead.
	MaxEncodedBytes = 384 << 10
	// MaxCount caps the values one encoded histogram may hold, which also
	// keeps every counter and the total far from int64 overflow when merged.
	// An interval histogram from an agent holds one value per request or
	// per token, so 1e9 is well beyond any real interval.
	MaxCount = 1_000_000_000
)

// V2 encoding cookies (HdrHistogram's wire format); the low nibble's 0x10
// bit carries the word size and is masked off.
const (
	v2CompressedCookie = 0x1c849304
	v2Cookie           = 0x1c849303
	v2HeaderLen        = 40
	envelopeLen        = 8
)

// Decode parses a V2-encoded histogram from an untrusted source. It
// validates the input before decoding: the base64 text and the inflated
// payload are size-capped (so a zlib bomb is refused after MaxInflatedBytes),
// the header must carry the shared configuration, and every counter must be
// non-negative, in range and sum to at most MaxCount. It never panics; a
// histogram that fails any check is refused with the reason. A caller that
// decodes many histograms uses a Decoder, which does the same with less
// garbage.
func Decode(b []byte) (*Histogram, error) {
	return decode(&scratch{}, b)
}

// Decoder decodes histograms as Decode does, reusing its inflaters and
// buffers between calls: the coordinator decodes 1,400 histograms a second
// from 200 agents, and a fresh zlib inflater and payload buffer per
// histogram were most of its garbage (BenchmarkMerge200Agents in
// coordinator). The zero value is ready to use; it is safe for concurrent
// use and must not be copied after first use. Decoded histograms share
// nothing with it.
type Decoder struct {
	pool sync.Pool // of *scratch
}

// Decode is the package's Decode with reused buffers.
func (d *Decoder) Decode(b []byte) (*Histogram, error) {
	sc, _ := d.pool.Get().(*scratch)
	if sc == nil {
		sc = &scratch{}
	}
	defer d.pool.Put(sc)
	return decode(sc, b)
}

// scratch is one decode's reusable state.
type scratch struct {
	raw     []byte        // the base64-decoded envelope
	payload []byte        // the inflated V2 payload
	counts  []counter     // the non-empty counters, copied out at the end
	src     bytes.Reader  // reads raw for z
	z       io.ReadCloser // a zlib inflater, reset for each input
}

func decode(sc *scratch, b []byte) (*Histogram, error) {
	counts, err := sc.decodeCounts(b)
	if err != nil {
		return nil, fmt.Errorf("decode histogram: %w", err)
	}
	h := &Histogram{sparse: slices.Clone(counts)}
	if h.sparse == nil {
		h.sparse = []counter{} // empty, yet decoded: Count reads total
	}
	for _, c := range counts {
		h.total += int64(c.n)
	}
	return h, nil
}

// The shared configuration's bucket layout (HdrHistogram's): index i below
// 2·subBucketHalf is value i; above, bucket b = i/subBucketHalf − 1 holds
// the values (subBucketHalf + i mod subBucketHalf) << b.
const subBucketHalfMagnitude = 10 // log2(subBucketCount/2) for 3 significant figures

// valueAtIndex is the lowest value counted at counter index idx.
func valueAtIndex(idx int64) int64 {
	const half = 1 << subBucketHalfMagnitude
	if idx < 2*half {
		return idx
	}
	bucket := idx>>subBucketHalfMagnitude - 1
	return (half + idx&(half-1)) << bucket
}

// counter is one non-empty counter of a decoded histogram: an index below
// CountsLen and a count of at most MaxCount, both well within int32, so
// that a decoded histogram's counters take half the memory.
type counter struct{ idx, n int32 }

// Both limits fit a counter's int32 fields (a compile error otherwise).
const _ = uint32(math.MaxInt32-MaxCount) + uint32(math.MaxInt32-CountsLen)

// decodeCounts checks and decodes b into the shared configuration's
// non-empty counters, in index order. The slice it returns is sc's and is
// overwritten by the next call.
func (sc *scratch) decodeCounts(b []byte) ([]counter, error) {
	if len(b) == 0 {
		return nil, errors.New("empty input")
	}
	if len(b) > MaxEncodedBytes {
		return nil, fmt.Errorf("%d bytes of base64, over the limit of %d for the shared configuration", len(b), MaxEncodedBytes)
	}
	if dl := base64.StdEncoding.DecodedLen(len(b)); cap(sc.raw) < dl {
		sc.raw = make([]byte, dl)
	}
	raw := sc.raw[:base64.StdEncoding.DecodedLen(len(b))]
	n, err := base64.StdEncoding.Decode(raw, b)
	if err != nil {
		return nil, fmt.Errorf("not base64: %w", err)
	}
	raw = raw[:n]
	if len(raw) < envelopeLen {
		return nil, fmt.Errorf("truncated: %d bytes, shorter than the %d-byte V2 envelope", len(raw), envelopeLen)
	}
	if c := int32(binary.BigEndian.Uint32(raw)) &^ 0xf0; c != v2CompressedCookie {
		return nil, fmt.Errorf("cookie %#x is not the V2 compressed encoding (%#x)", uint32(c), v2CompressedCookie)
	}
	clen := int64(int32(binary.BigEndian.Uint32(raw[4:])))
	if clen <= 0 || clen != int64(len(raw)-envelopeLen) {
		return nil, fmt.Errorf("compressed length %d does not match the %d bytes that follow the envelope", clen, len(raw)-envelopeLen)
	}
	sc.src.Reset(raw[envelopeLen:])
	if sc.z == nil {
		z, err := zlib.NewReader(&sc.src)
		if err != nil {
			return nil, fmt.Errorf("zlib: %w", err)
		}
		sc.z = z
	} else if err := sc.z.(zlib.Resetter).Reset(&sc.src, nil); err != nil {
		return nil, fmt.Errorf("zlib: %w", err)
	}
	payload, err := sc.inflate()
	if err != nil {
		return nil, fmt.Errorf("zlib: %w", err)
	}
	if len(payload) > MaxInflatedBytes {
		return nil, fmt.Errorf("inflates to more than %d bytes, more than the shared configuration can need: refused as a decompression bomb", MaxInflatedBytes)
	}
	if len(payload) < v2HeaderLen {
		return nil, fmt.Errorf("truncated: %d inflated bytes, shorter than the %d-byte V2 header", len(payload), v2HeaderLen)
	}
	hd := payload[:v2HeaderLen]
	if c := int32(binary.BigEndian.Uint32(hd)) &^ 0xf0; c != v2Cookie {
		return nil, fmt.Errorf("inner cookie %#x is not V2 (%#x)", uint32(c), v2Cookie)
	}
	if pl := int64(int32(binary.BigEndian.Uint32(hd[4:]))); pl != int64(len(payload)-v2HeaderLen) {
		return nil, fmt.Errorf("payload length %d does not match the %d counter bytes present", pl, len(payload)-v2HeaderLen)
	}
	offset := int32(binary.BigEndian.Uint32(hd[8:]))
	sig := int32(binary.BigEndian.Uint32(hd[12:]))
	lo := int64(binary.BigEndian.Uint64(hd[16:]))
	hi := int64(binary.BigEndian.Uint64(hd[24:]))
	ratio := math.Float64frombits(binary.BigEndian.Uint64(hd[32:]))
	if lo != Lowest || hi != Highest || sig != SigFigs {
		return nil, fmt.Errorf("configuration (%d, %d, %d) differs from the shared (%d, %d, %d); upgrade the agent so both sides use one configuration",
			lo, hi, sig, Lowest, Highest, SigFigs)
	}
	// hdrhistogram-go writes a normalizing offset of 1 and other encoders 0;
	// neither shifts the counters here.
	if (offset != 0 && offset != 1) || ratio != 1 {
		return nil, fmt.Errorf("normalizing offset %d and conversion ratio %g: only offsets 0 or 1 and ratio 1 are produced by the shared configuration", offset, ratio)
	}
	counts := sc.counts[:0]
	defer func() { sc.counts = counts[:0] }()
	var idx, total int64
	for p := payload[v2HeaderLen:]; len(p) > 0; {
		v, n, err := zigzag(p)
		if err != nil {
			return nil, fmt.Errorf("counter %d: %w", idx, err)
		}
		p = p[n:]
		if v < 0 {
			zeros := -v
			if zeros <= 0 || zeros > CountsLen-idx {
				return nil, fmt.Errorf("counter %d: a run of %d zeros overruns the %d counters", idx, uint64(zeros), CountsLen)
			}
			idx += zeros
			continue
		}
		if idx >= CountsLen {
			return nil, fmt.Errorf("more than the %d counters of the shared configuration", CountsLen)
		}
		if v > MaxCount-total {
			return nil, fmt.Errorf("counter %d: count %d takes the total past the limit of %d values", idx, v, MaxCount)
		}
		if v > 0 {
			counts = append(counts, counter{int32(idx), int32(v)}) // idx < CountsLen, v ≤ MaxCount
		}
		total += v
		idx++
	}
	return counts, nil
}

// inflate reads sc.z to its end into sc.payload, stopping after
// MaxInflatedBytes+1 bytes so that the caller can refuse a bomb.
func (sc *scratch) inflate() ([]byte, error) {
	if sc.payload == nil {
		sc.payload = make([]byte, 0, 8<<10)
	}
	buf := sc.payload[:0]
	for len(buf) <= MaxInflatedBytes {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(cap(buf), MaxInflatedBytes+1-len(buf)))
		}
		n, err := sc.z.Read(buf[len(buf):min(cap(buf), MaxInflatedBytes+1)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			sc.payload = buf[:0]
			return nil, err
		}
	}
	sc.payload = buf[:0]
	return buf, nil
}

// zigzag reads one of HdrHistogram's ZigZag LEB128 values (at most 9 bytes,
// the ninth contributing all 8 bits), returning it and the bytes read.
func zigzag(p []byte) (int64, int, error) {
	var u uint64
	for i := 0; i < 9; i++ {
		if i >= len(p) {
			return 0, 0, fmt.Errorf("truncated varint after %d bytes", i)
		}
		if i == 8 {
			u |= uint64(p[i]) << 56
			return int64((u >> 1) ^ -(u & 1)), 9, nil
		}
		u |= uint64(p[i]&0x7f) << (7 * i)
		if p[i]&0x80 == 0 {
			return int64((u >> 1) ^ -(u & 1)), i + 1, nil
		}
	}
	return 0, 0, errors.New("varint longer than 9 bytes")
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

// MarshalJSON writes the digest; a summary of no values has null
// statistics, never zeros, so an empty histogram cannot pass for a fast one.
func (s Summary) MarshalJSON() ([]byte, error) {
	if s.Count > 0 {
		type plain Summary
		return json.Marshal(plain(s))
	}
	return []byte(`{"count":0,"mean":null,"min":null,"p50":null,"p90":null,"p95":null,"p99":null,"max":null}`), nil
}

// Summarize returns the digest. Percentiles are HdrHistogram's
// highest-equivalent values, accurate to 3 significant digits.
func (h *Histogram) Summarize() Summary {
	if h.Count() == 0 {
		return Summary{}
	}
	ms := func(us int64) float64 { return float64(us) / 1000 }
	d := h.dense()
	return Summary{
		Count: h.Count(),
		Mean:  d.Mean() / 1000,
		Min:   ms(d.Min()),
		P50:   ms(d.ValueAtQuantile(50)),
		P90:   ms(d.ValueAtQuantile(90)),
		P95:   ms(d.ValueAtQuantile(95)),
		P99:   ms(d.ValueAtQuantile(99)),
		Max:   ms(d.Max()),
	}
}

// ValueAtRankMs returns the value of the rank-th smallest recorded value
// (1-based, clamped to [1, Count]) in milliseconds: HdrHistogram's
// highest-equivalent value, as Summarize's percentiles are. It returns 0 for
// an empty histogram.
func (h *Histogram) ValueAtRankMs(rank int64) float64 {
	n := h.Count()
	if n == 0 {
		return 0
	}
	rank = min(max(rank, 1), n)
	return float64(h.dense().ValueAtQuantile(100*float64(rank)/float64(n))) / 1000
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
