package results

import (
	"bytes"
	"reflect"
	"testing"
)

// TestAddCheckedMatchesAdd checks that merging reports decoded once by the
// caller (AddChecked) gives what Add gives, for good and refused reports,
// and that one decoded set merged into two Mergers leaves both right.
func TestAddCheckedMatchesAdd(t *testing.T) {
	events := largeSweepEvents(t, 3, 4)
	list, err := ReadEvents(bytes.NewReader(events), "synthetic")
	if err != nil {
		t.Fatal(err)
	}
	plain, once, twice := NewMerger(), NewMerger(), NewMerger()
	refused := 0
	for i, ev := range list {
		if ev.Kind != EventSweepInterval {
			continue
		}
		v, err := Decode(ev)
		if err != nil {
			t.Fatal(err)
		}
		rep := v.(SweepInterval).Report
		if i%5 == 0 {
			rep.Histograms[0].V2 = []byte("garbage") // refused whole
		}
		a1, e1 := plain.Add(rep)
		set, cerr := ReportHistograms(rep)
		c := &Checked{Set: set, Err: cerr}
		a2, e2 := once.AddChecked(rep, c)
		_, _ = twice.AddChecked(rep, c)
		if a1 != a2 || (e1 == nil) != (e2 == nil) {
			t.Fatalf("report %d: Add gave %v, %v; AddChecked %v, %v", i, a1, e1, a2, e2)
		}
		if a1 == Refused {
			refused++
		}
	}
	if refused == 0 {
		t.Fatal("no report was refused: the test checks nothing about refusals")
	}
	for name, m := range map[string]*Merger{"once": once, "twice": twice} {
		if err := m.Check(); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !reflect.DeepEqual(plain.Summaries(), m.Summaries()) || plain.OK != m.OK || plain.Failed != m.Failed {
			t.Errorf("%s: AddChecked's merge differs from Add's", name)
		}
	}
}
