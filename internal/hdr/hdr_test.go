package hdr

import (
	"testing"
	"time"
)

func TestMergeIsExactAcrossEncodings(t *testing.T) {
	// Two "agents" record disjoint values; the merge of their decoded V2
	// encodings must equal one histogram that recorded everything.
	a, b, all := New(), New(), New()
	for i := 1; i <= 5000; i++ {
		d := time.Duration(i*i) * time.Microsecond
		if i%2 == 0 {
			a.Record(d)
		} else {
			b.Record(d)
		}
		all.Record(d)
	}
	merged := New()
	for _, h := range []*Histogram{a, b} {
		enc, err := h.Encode()
		if err != nil {
			t.Fatal(err)
		}
		dec, err := Decode(enc)
		if err != nil {
			t.Fatal(err)
		}
		merged.Merge(dec)
	}
	if merged.Count() != a.Count()+b.Count() {
		t.Fatalf("merged count %d != %d + %d", merged.Count(), a.Count(), b.Count())
	}
	if got, want := merged.Summarize(), all.Summarize(); got != want {
		t.Errorf("merged summary %+v != direct %+v", got, want)
	}
}

func TestRecordClampsInsteadOfDropping(t *testing.T) {
	h := New()
	h.Record(0)
	h.Record(2 * time.Hour)
	h.Record(time.Millisecond)
	if h.Count() != 3 || h.Clamped() != 2 {
		t.Errorf("count %d clamped %d, want 3 and 2", h.Count(), h.Clamped())
	}
}

func TestDecodeRefusesOtherConfiguration(t *testing.T) {
	if _, err := Decode(nil); err == nil {
		t.Error("Decode(nil) succeeded")
	}
	if _, err := Decode([]byte("not a histogram")); err == nil {
		t.Error("Decode(garbage) succeeded")
	}
}

func TestSummarizeMilliseconds(t *testing.T) {
	h := New()
	for i := 0; i < 100; i++ {
		h.Record(10 * time.Millisecond)
	}
	s := h.Summarize()
	if s.Count != 100 || s.P50 < 9.99 || s.P50 > 10.01 || s.Max < 9.99 || s.Max > 10.01 {
		t.Errorf("summary %+v, want all ≈ 10 ms", s)
	}
}

func BenchmarkRecord(b *testing.B) {
	h := New()
	for i := 0; b.Loop(); i++ {
		h.Record(time.Duration(i%100000) * time.Microsecond)
	}
}

func BenchmarkEncodeDecodeMerge(b *testing.B) {
	src := New()
	for i := 0; i < 100000; i++ {
		src.Record(time.Duration(i) * time.Microsecond)
	}
	dst := New()
	for b.Loop() {
		enc, _ := src.Encode()
		d, _ := Decode(enc)
		dst.Merge(d)
	}
}
