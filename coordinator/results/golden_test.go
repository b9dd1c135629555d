package results

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// readFixtureEvents reads testdata/<name>.events.jsonl.
func readFixtureEvents(t *testing.T, name string) []Event {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", name+".events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	evs, err := ReadEvents(f, name)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// checkGolden compares got with testdata/golden/<file>, or rewrites it
// with -update.
func checkGolden(t *testing.T, file string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", "golden", file)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read golden (run `go test ./coordinator/results -run TestGolden -update` to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("%s changed (-want +got); if the change is intended, rerun with -update and review the diff:\n%s", path, diff)
	}
}

// TestGolden renders every events.jsonl fixture — real runs of `ttftlab up`
// against the simulator (a baseline and a sweep), and runs of the
// coordinator with fakes: a baseline whose engine was SIGKILLed (failed)
// and a sweep that lost an agent mid-level (degraded) — and compares
// results.json and the Markdown report with the golden files in
// testdata/golden. Run `go test ./coordinator/results -run TestGolden
// -update` to rewrite them, then review the diff.
func TestGolden(t *testing.T) {
	tests := []struct {
		name string
		// must are facts each rendering must state, beyond matching its
		// golden files, so that a wrong -update does not go unnoticed.
		must []string
	}{
		{name: "baseline", must: []string{`"status": "ok"`, "| cold_1 | 0.", "### Restart to first token, decomposed", "Warm band:", `"warm": {`}},
		{name: "sweep", must: []string{`"kind": "sweep"`, "Peak output throughput", "| c=1 |", `"status": "ok"`}},
		{name: "failed", must: []string{`"status": "failed"`, "**The run failed:** engine on gpunode g exited unexpectedly (killed by SIGKILL", "| warm_1 | n/a | n/a | n/a | not run |", `"warm": null`}},
		{name: "degraded", must: []string{`"status": "degraded"`, "agent-dying lost after 2 intervals (", `"lost": true`, "degraded |"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := Render(readFixtureEvents(t, tt.name))
			if err != nil {
				t.Fatal(err)
			}
			var js bytes.Buffer
			if err := r.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			md := r.Files[r.Report]
			checkGolden(t, tt.name+".results.json", js.Bytes())
			checkGolden(t, tt.name+".md", md)
			all := js.String() + string(md)
			for _, w := range tt.must {
				if !strings.Contains(all, w) {
					t.Errorf("the rendering of %s lacks %q", tt.name, w)
				}
			}
		})
	}
}
