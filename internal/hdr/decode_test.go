package hdr

import (
	"bytes"
	"compress/zlib"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// v2Header describes the inflated V2 header of a crafted histogram.
type v2Header struct {
	cookie     int32
	payloadLen int32 // -1: the real length
	offset     int32
	sig        int32
	lo, hi     int64
	ratio      float64
}

func sharedHeader() v2Header {
	return v2Header{cookie: v2Cookie | 0x10, payloadLen: -1, sig: SigFigs, lo: Lowest, hi: Highest, ratio: 1}
}

// zigzagEncode writes v in HdrHistogram's ZigZag LEB128 form.
func zigzagEncode(v int64) []byte {
	u := uint64((v << 1) ^ (v >> 63))
	var out []byte
	for i := 0; i < 8; i++ {
		if u < 0x80 {
			return append(out, byte(u))
		}
		out = append(out, byte(u&0x7f)|0x80)
		u >>= 7
	}
	return append(out, byte(u))
}

// craft builds a V2 histogram from a header and raw counter bytes.
func craft(h v2Header, counters []byte) []byte {
	var inner bytes.Buffer
	pl := h.payloadLen
	if pl < 0 {
		pl = int32(len(counters))
	}
	for _, v := range []any{h.cookie, pl, h.offset, h.sig, h.lo, h.hi, math.Float64bits(h.ratio)} {
		_ = binary.Write(&inner, binary.BigEndian, v)
	}
	inner.Write(counters)
	return envelope(deflate(inner.Bytes()), -1)
}

func deflate(b []byte) []byte {
	var z bytes.Buffer
	w := zlib.NewWriter(&z)
	_, _ = w.Write(b)
	_ = w.Close()
	return z.Bytes()
}

// envelope wraps compressed bytes in the V2 compressed envelope; clen -1
// writes the real length.
func envelope(compressed []byte, clen int32) []byte {
	var out bytes.Buffer
	_ = binary.Write(&out, binary.BigEndian, int32(v2CompressedCookie|0x10))
	if clen == -1 {
		clen = int32(len(compressed))
	}
	_ = binary.Write(&out, binary.BigEndian, clen)
	out.Write(compressed)
	return []byte(base64.StdEncoding.EncodeToString(out.Bytes()))
}

func counters(vs ...int64) []byte {
	var out []byte
	for _, v := range vs {
		out = append(out, zigzagEncode(v)...)
	}
	return out
}

func TestCountsLenMatchesLibrary(t *testing.T) {
	if n := len(hdrhistogram.New(Lowest, Highest, SigFigs).Export().Counts); n != CountsLen {
		t.Fatalf("the shared configuration has %d counters, CountsLen says %d", n, CountsLen)
	}
}

func TestDecodeAcceptsCraftedValidHistogram(t *testing.T) {
	// 3 zeros, then 5 at index 3 (value 3 µs), then 2 at index 4.
	h, err := Decode(craft(sharedHeader(), counters(-3, 5, 2)))
	if err != nil {
		t.Fatal(err)
	}
	if h.Count() != 7 || h.dense().Min() != 3 || h.dense().Max() != 4 {
		t.Fatalf("count %d min %d max %d, want 7, 3, 4", h.Count(), h.dense().Min(), h.dense().Max())
	}
}

func TestDecodeRoundTripsEveryCounter(t *testing.T) {
	// A histogram with the top and bottom counters set must survive.
	src := New()
	src.Record(time.Microsecond)
	src.Record(time.Hour)
	for i := 1; i < 100000; i += 7 {
		src.Record(time.Duration(i) * time.Millisecond)
	}
	b, err := src.Encode()
	if err != nil {
		t.Fatal(err)
	}
	d, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if !d.dense().Equals(src.dense()) {
		t.Fatalf("decoded histogram differs from the source: %+v vs %+v", d.Summarize(), src.Summarize())
	}
}

func TestDecodeRefusesBadInput(t *testing.T) {
	other, err := hdrhistogram.New(1, 1000, 2).Encode(hdrhistogram.V2CompressedEncodingCookieBase)
	if err != nil {
		t.Fatal(err)
	}
	// A bomb: 8 MiB of zeros deflate to about 8 KiB.
	bombInner := make([]byte, 8<<20)
	hd := craft(sharedHeader(), nil)
	raw, _ := base64.StdEncoding.DecodeString(string(hd))
	inner, _ := zlibInflate(raw[8:])
	copy(bombInner, inner)
	bomb := envelope(deflate(bombInner), -1)
	good := craft(sharedHeader(), counters(1))
	goodRaw, _ := base64.StdEncoding.DecodeString(string(good))

	hdrWith := func(f func(*v2Header)) v2Header { h := sharedHeader(); f(&h); return h }
	cases := []struct {
		name string
		in   []byte
		want string
	}{
		{"empty", nil, "empty input"},
		{"not base64", []byte("not a histogram"), "not base64"},
		{"under 8 bytes", []byte(base64.StdEncoding.EncodeToString([]byte{0x1c, 0x84, 0x93})), "shorter than the 8-byte"},
		{"wrong cookie", []byte(base64.StdEncoding.EncodeToString(make([]byte, 16))), "not the V2 compressed"},
		{"negative length", envelope(goodRaw[8:], -5), "compressed length -5"},
		{"length past the end", envelope(goodRaw[8:], 1<<30), "compressed length 1073741824"},
		{"truncated zlib", []byte(base64.StdEncoding.EncodeToString(append(goodRaw[:4:4], append([]byte{0, 0, 0, 5}, goodRaw[8:13]...)...))), "zlib"},
		{"too long", bytes.Repeat([]byte("A"), MaxEncodedBytes+4), "over the limit"},
		{"zlib bomb", bomb, "decompression bomb"},
		{"other configuration", other, "differs from the shared"},
		{"inner cookie", craft(hdrWith(func(h *v2Header) { h.cookie = 7 }), counters(1)), "inner cookie"},
		{"payload length lies", craft(hdrWith(func(h *v2Header) { h.payloadLen = 1000 }), counters(1)), "payload length 1000"},
		{"normalizing offset", craft(hdrWith(func(h *v2Header) { h.offset = 3 }), counters(1)), "normalizing offset 3"},
		{"short header", envelope(deflate([]byte{0x1c, 0x84, 0x93, 0x13}), -1), "shorter than the 40-byte"},
		{"zero run overruns", craft(sharedHeader(), counters(-CountsLen, 1)), "more than the 23552 counters"},
		{"zero run too long", craft(sharedHeader(), counters(-(CountsLen + 1))), "overruns"},
		{"min int64 zero run", craft(sharedHeader(), counters(math.MinInt64)), "overruns"},
		{"huge count", craft(sharedHeader(), counters(math.MaxInt64)), "past the limit"},
		{"total past the limit", craft(sharedHeader(), counters(MaxCount/2+1, MaxCount/2+1)), "past the limit"},
		{"truncated varint", craft(sharedHeader(), []byte{0x80, 0x80}), "truncated varint"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			h, err := Decode(tc.in)
			if err == nil {
				t.Fatalf("Decode accepted it: count %d", h.Count())
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("refusing took %v", d)
			}
		})
	}
}

func zlibInflate(b []byte) ([]byte, error) {
	z, err := zlib.NewReader(bytes.NewReader(b))
	if err != nil {
		return nil, err
	}
	var out bytes.Buffer
	_, err = out.ReadFrom(z)
	return out.Bytes(), err
}

func FuzzDecode(f *testing.F) {
	seed := New()
	for i := 1; i < 1000; i++ {
		seed.Record(time.Duration(i*i) * time.Microsecond)
	}
	enc, _ := seed.Encode()
	f.Add(enc)
	f.Add(craft(sharedHeader(), counters(-3, 5, 2)))
	f.Add(craft(sharedHeader(), counters(math.MinInt64)))
	f.Add([]byte("HISTFAAAACl4nJNpmSzMwMDAxQABzFCaEUzOmNZg/wEi0NzIyMzAwMTAxAAAqZYEiQ=="))
	f.Add([]byte{})
	// One Decoder across all inputs, as the coordinator keeps one: its
	// reused buffers must give Decode's answer for every input.
	var dec Decoder
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := Decode(b)
		h2, err2 := dec.Decode(b)
		if (err == nil) != (err2 == nil) || err != nil && err.Error() != err2.Error() {
			t.Fatalf("Decode says %v, a reused Decoder %v", err, err2)
		}
		if err != nil {
			return
		}
		if !slices.Equal(h.sparse, h2.sparse) || h.total != h2.total {
			t.Fatalf("a reused Decoder decoded %d counters (total %d), Decode %d (total %d)", len(h2.sparse), h2.total, len(h.sparse), h.total)
		}
		if h.Count() < 0 || h.Count() > MaxCount {
			t.Fatalf("decoded count %d out of [0, %d]", h.Count(), MaxCount)
		}
		// A decoded histogram must merge and summarise without trouble.
		m := New()
		m.Merge(h)
		if m.Count() != h.Count() {
			t.Fatalf("merge kept %d of %d values", m.Count(), h.Count())
		}
		_ = m.Summarize()
		if _, err := h.Encode(); err != nil {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

func TestSummaryOfNothingIsNull(t *testing.T) {
	tests := []struct {
		name string
		h    *Histogram
		want string
	}{
		{"empty", New(), `{"count":0,"mean":null,"min":null,"p50":null,"p90":null,"p95":null,"p99":null,"max":null}`},
		{"one value", func() *Histogram { h := New(); h.Record(2 * time.Millisecond); return h }(), `{"count":1,"mean":2,"min":2,"p50":2,"p90":2,"p95":2,"p99":2,"max":2}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.h.Summarize())
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != tt.want {
				t.Errorf("JSON %s, want %s", b, tt.want)
			}
		})
	}
}

// TestValueAtIndexMatchesLibrary records valueAtIndex(i) for every counter
// index i and checks that the library counts each at i, so Decode sets
// exactly the counters it read.
func TestValueAtIndexMatchesLibrary(t *testing.T) {
	h := hdrhistogram.New(Lowest, Highest, SigFigs)
	for i := int64(0); i < CountsLen; i++ {
		if err := h.RecordValue(valueAtIndex(i)); err != nil {
			t.Fatalf("index %d: value %d: %v", i, valueAtIndex(i), err)
		}
	}
	for i, c := range h.Export().Counts {
		if c != 1 {
			t.Fatalf("counter %d holds %d, want 1: valueAtIndex disagrees with the library's layout", i, c)
		}
	}
}

// TestDecodeMatchesImport checks the sparse decode against the library's
// own dense import on histograms of realistic and extreme spreads.
func TestDecodeMatchesImport(t *testing.T) {
	tests := []struct {
		name string
		fill func(*Histogram)
	}{
		{"itl around 15 ms", func(h *Histogram) {
			for i := range 5000 {
				h.Record(time.Duration(12000+i%7000) * time.Microsecond)
			}
		}},
		{"every power of two", func(h *Histogram) {
			for d := time.Microsecond; d <= time.Hour; d *= 2 {
				h.Record(d)
			}
			h.Record(time.Hour)
		}},
		{"one value", func(h *Histogram) { h.Record(time.Microsecond) }},
		{"empty", func(*Histogram) {}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			src := New()
			tc.fill(src)
			b, err := src.Encode()
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(b)
			if err != nil {
				t.Fatal(err)
			}
			want := hdrhistogram.Import(src.dense().Export())
			if !got.dense().Equals(want) || got.Count() != src.Count() {
				t.Fatalf("decoded %+v, the library imports %+v", got.Summarize(), want)
			}
		})
	}
}

// TestDecodedHistogramBehavesAsDense checks the decoded (sparse) form
// against the dense one: counts, merges in both directions, a change
// after decoding, and concurrent readers (run with -race).
func TestDecodedHistogramBehavesAsDense(t *testing.T) {
	src := New()
	for i := range 3000 {
		src.Record(time.Duration(1000+i*37) * time.Microsecond)
	}
	b, err := src.Encode()
	if err != nil {
		t.Fatal(err)
	}
	decode := func(t *testing.T) *Histogram {
		t.Helper()
		d, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	t.Run("merge from decoded", func(t *testing.T) {
		dst := New()
		dst.Merge(decode(t))
		dst.Merge(decode(t))
		want := src.Summarize()
		want.Count *= 2
		if dst.Summarize() != want {
			t.Fatalf("merged %+v, want twice %+v", dst.Summarize(), src.Summarize())
		}
	})
	t.Run("merge into decoded", func(t *testing.T) {
		d := decode(t)
		d.Merge(src)
		if d.Count() != 2*src.Count() {
			t.Fatalf("count %d, want %d", d.Count(), 2*src.Count())
		}
	})
	t.Run("record after decode", func(t *testing.T) {
		d := decode(t)
		d.Record(time.Hour)
		if d.Count() != src.Count()+1 || d.Summarize().Max < 3.5e6 {
			t.Fatalf("after one more value: %+v", d.Summarize())
		}
	})
	t.Run("reset after decode", func(t *testing.T) {
		d := decode(t)
		d.Reset()
		if d.Count() != 0 {
			t.Fatalf("count %d after Reset", d.Count())
		}
	})
	t.Run("concurrent readers", func(t *testing.T) {
		d := decode(t)
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				dst := New()
				dst.Merge(d)
				if s := d.Summarize(); s != src.Summarize() || dst.Count() != src.Count() {
					t.Errorf("reader saw %+v", s)
				}
			}()
		}
		wg.Wait()
	})
}

// TestDecoderReuse checks that a Decoder's reused buffers leak nothing from
// one decode into the next: every bad input is refused with Decode's error
// between good decodes of two different histograms, each of which must come
// out with its own counters, and histograms decoded earlier are not changed
// by later decodes. Concurrent decodes share one Decoder under -race.
func TestDecoderReuse(t *testing.T) {
	small, big := New(), New()
	small.Record(5 * time.Millisecond)
	for i := 1; i < 5000; i++ {
		big.Record(time.Duration(i*i) * time.Microsecond)
	}
	smallEnc, err := small.Encode()
	if err != nil {
		t.Fatal(err)
	}
	bigEnc, err := big.Encode()
	if err != nil {
		t.Fatal(err)
	}
	bad := [][]byte{
		nil,
		[]byte("not a histogram"),
		craft(sharedHeader(), counters(-(CountsLen + 1))),
		craft(sharedHeader(), []byte{0x80, 0x80}),
		craft(sharedHeader(), counters(math.MaxInt64)),
	}
	var dec Decoder
	var kept []*Histogram
	for i := range 3 {
		for _, enc := range [][]byte{bigEnc, smallEnc} {
			h, err := dec.Decode(enc)
			if err != nil {
				t.Fatalf("round %d: %v", i, err)
			}
			kept = append(kept, h)
		}
		for _, b := range bad {
			_, want := Decode(b)
			if _, err := dec.Decode(b); err == nil || err.Error() != want.Error() {
				t.Errorf("round %d: a reused Decoder says %v, Decode %v", i, err, want)
			}
		}
	}
	for i, h := range kept {
		want := big
		if i%2 == 1 {
			want = small
		}
		if h.Count() != want.Count() || h.Summarize() != want.Summarize() {
			t.Errorf("histogram %d: count %d, summary %+v; want %d, %+v", i, h.Count(), h.Summarize(), want.Count(), want.Summarize())
		}
	}
	t.Run("concurrent", func(t *testing.T) {
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 50 {
					enc, want := bigEnc, big.Count()
					if (g+i)%2 == 1 {
						enc, want = smallEnc, small.Count()
					}
					h, err := dec.Decode(enc)
					if err != nil {
						t.Error(err)
						return
					}
					if h.Count() != want {
						t.Errorf("goroutine %d decode %d: count %d, want %d", g, i, h.Count(), want)
						return
					}
				}
			}()
		}
		wg.Wait()
	})
}
