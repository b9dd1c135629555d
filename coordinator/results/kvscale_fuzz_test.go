package results

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// kvscaleFixture is a kvscale grid's events.jsonl from a fake gpunode: one
// refused point, one point with one concurrency step.
const kvscaleFixture = "testdata/kvscale_events.jsonl"

// TestRenderKVScaleFixture renders the fixture: the refused point and the
// measured step are both in the CSV.
func TestRenderKVScaleFixture(t *testing.T) {
	b, err := os.ReadFile(kvscaleFixture)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "events.jsonl"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := RenderDir(dir); err != nil {
		t.Fatal(err)
	}
	csvb, err := os.ReadFile(filepath.Join(dir, KVScaleCSV))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(csvb)), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "8192,0.3,,,,,,,") || !strings.HasPrefix(lines[2], "8192,0.5,,") {
		t.Fatalf("CSV:\n%s\nwant a header, the refused point with empty cells, one measured step", csvb)
	}
}

// FuzzRenderKVScale renders arbitrary kvscale event logs: any error is
// fine, a panic is not.
func FuzzRenderKVScale(f *testing.F) {
	b, err := os.ReadFile(kvscaleFixture)
	if err != nil {
		f.Fatal(err)
	}
	var keep [][]byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if !bytes.Contains(l, []byte(`"kind":"sample"`)) {
			keep = append(keep, l)
		}
	}
	f.Add(bytes.Join(keep, []byte("\n")))
	for i := 0; i+4 < len(keep); i += 3 {
		f.Add(bytes.Join(append([][]byte{keep[0]}, keep[i:i+4]...), []byte("\n")))
	}
	f.Fuzz(func(t *testing.T, events []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "events.jsonl"), events, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := RenderDir(dir)
		if err != nil && strings.Contains(err.Error(), "internal error") {
			t.Fatalf("RenderDir panicked: %v", err)
		}
	})
}
