package results

import (
	"bytes"
	"encoding/json"
	"math"
	"os"
	"testing"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// FuzzDecodeEvent feeds Decode every kind with arbitrary data: it must
// return a payload of the kind's type or an error, never panic, and a
// payload it accepts must encode again.
func FuzzDecodeEvent(f *testing.F) {
	for _, name := range []string{"baseline", "sweep", "failed", "degraded"} {
		b, err := os.ReadFile("testdata/" + name + ".events.jsonl")
		if err != nil {
			f.Fatal(err)
		}
		seen := map[string]bool{}
		for _, line := range bytes.Split(b, []byte("\n")) {
			var ev Event
			if json.Unmarshal(line, &ev) != nil || seen[ev.Kind] {
				continue
			}
			seen[ev.Kind] = true
			f.Add(ev.Kind, []byte(ev.Data))
		}
	}
	// Interval reports with exact moments and prompt-length counts.
	for _, rep := range []*pb.IntervalReport{momentReport(f, "a", 0, []float64{10, 20, 40}), momentReport(f, "b", 3, []float64{0.0004, 3.6e6})} {
		b, err := EncodeData(SweepInterval{Level: 0, Report: rep})
		if err != nil {
			f.Fatal(err)
		}
		f.Add(EventSweepInterval, []byte(b))
		if b, err = EncodeData(rep); err != nil {
			f.Fatal(err)
		}
		f.Add(EventInterval, []byte(b))
	}
	f.Fuzz(func(t *testing.T, kind string, data []byte) {
		v, err := Decode(Event{Kind: kind, Data: data})
		if err != nil {
			if v != nil {
				t.Fatalf("Decode returned %T with the error %v", v, err)
			}
			return
		}
		if _, err := EncodeData(v); err != nil {
			t.Fatalf("accepted %s payload %T does not encode: %v", kind, v, err)
		}
		var rep *pb.IntervalReport
		switch p := v.(type) {
		case *pb.IntervalReport:
			rep = p
		case SweepInterval:
			rep = p.Report
		}
		if rep == nil {
			return
		}
		// A report the checks accept merges into finite, consistent
		// statistics; one they refuse adds none.
		m := NewMerger()
		added, err := m.Add(rep)
		if added == Refused && err == nil {
			t.Fatal("refused without a reason")
		}
		for _, name := range []string{hdr.TTFT, hdr.TPOT, hdr.ITL, hdr.ICL, hdr.E2E} {
			mo, ok := m.Moments(name)
			if !ok || mo.Count == 0 {
				continue
			}
			if added != Merged {
				t.Fatalf("moments of %s merged from a report that was %v", name, added)
			}
			if mean, std := mo.Mean(), mo.Std(); math.IsNaN(mean) || math.IsInf(mean, 0) || math.IsNaN(std) || math.IsInf(std, 0) || mean < 0 || std < 0 {
				t.Fatalf("accepted moments of %s give mean %v std %v", name, mean, std)
			}
		}
	})
}
