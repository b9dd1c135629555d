package results

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// presetsFixture is a presets grid's events.jsonl from the simulator (the
// sample events left out): one refused point and one started point with
// two concurrencies.
const presetsFixture = "testdata/presets_events.jsonl"

// TestRenderPresetsFixture renders the fixture: the refused point has a
// row of empty cells, each measured step a row, and both presets are
// either chosen with their flags or say why not.
func TestRenderPresetsFixture(t *testing.T) {
	b, err := os.ReadFile(presetsFixture)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, EventsFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := RenderDir(dir); err != nil {
		t.Fatal(err)
	}
	csvb, err := os.ReadFile(filepath.Join(dir, PresetsCSV))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(csvb)), "\n")
	if len(lines) != 4 || !strings.Contains(lines[1], ",refused,,,") || !strings.Contains(lines[2], ",ok,") || !strings.Contains(lines[3], ",ok,") {
		t.Fatalf("CSV:\n%s\nwant a header, the refused point with empty cells, two measured steps", csvb)
	}
	md, err := os.ReadFile(filepath.Join(dir, PresetsReport))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"### interactive", "### throughput", "the engine refused to start (as expected"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("presets.md lacks %q", want)
		}
	}
}

// FuzzRenderPresets renders arbitrary presets event logs: any error is
// fine, a panic is not.
func FuzzRenderPresets(f *testing.F) {
	b, err := os.ReadFile(presetsFixture)
	if err != nil {
		f.Fatal(err)
	}
	keep := bytes.Split(b, []byte("\n"))
	f.Add(b)
	for i := 0; i+4 < len(keep); i += 3 {
		f.Add(bytes.Join(append([][]byte{keep[0]}, keep[i:i+4]...), []byte("\n")))
	}
	f.Fuzz(func(t *testing.T, events []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, EventsFile), events, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := RenderDir(dir)
		if err != nil && strings.Contains(err.Error(), "internal error") {
			t.Fatalf("RenderDir panicked: %v", err)
		}
	})
}
