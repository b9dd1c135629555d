package results

import (
	"bytes"
	"encoding/json"
	"os"
	"testing"
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
	})
}
