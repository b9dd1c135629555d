package results

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// prefixFixture is a short prefix run's events.jsonl from the simulator
// (samples left out): prefix 256 cold, repeat and hot, and hit ratio 1.
const prefixFixture = "testdata/prefix_events.jsonl"

// TestRenderPrefixFixture renders the fixture: four steps, the cold one
// with no cached_tokens (nothing was cached) and no p95 (too few requests).
func TestRenderPrefixFixture(t *testing.T) {
	b, err := os.ReadFile(prefixFixture)
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
	csvb, err := os.ReadFile(filepath.Join(dir, PrefixCSV))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(csvb)), "\n")
	if len(lines) != 5 || !strings.HasPrefix(lines[1], "on,prefix_len,256,128,,cold,1,2,") || !strings.Contains(lines[1], ",,1.0000,,0.0000,1.00,ok") ||
		!strings.HasPrefix(lines[3], "on,prefix_len,256,128,,hot,1,2,") || !strings.Contains(lines[3], ",0.3333,256.0,0.6667,") {
		t.Fatalf("CSV:\n%s\nwant cold with empty p95 and cached_tokens, hot with a third uncached", csvb)
	}
	md, err := os.ReadFile(filepath.Join(dir, PrefixReport))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(md), "1 of 1 prefix-cache resets verified") && !strings.Contains(string(md), "2 of 2 prefix-cache resets verified") {
		t.Errorf("report lacks the reset observation:\n%s", md)
	}
}

// FuzzRenderPrefix renders arbitrary prefix event logs: any error is fine,
// a panic is not.
func FuzzRenderPrefix(f *testing.F) {
	b, err := os.ReadFile(prefixFixture)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	lines := bytes.Split(b, []byte("\n"))
	for i := 1; i+4 < len(lines); i += 5 {
		f.Add(bytes.Join(append([][]byte{lines[0]}, lines[i:i+4]...), []byte("\n")))
	}
	f.Fuzz(func(t *testing.T, events []byte) {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "events.jsonl"), events, 0o644); err != nil {
			t.Fatal(err)
		}
		_, _ = RenderDir(dir)
	})
}
