package vllmlog

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// seedLogs adds the first lines of every golden log as seeds.
func seedLogs(f *testing.F) {
	logs, err := filepath.Glob(filepath.Join("testdata", "*.log"))
	if err != nil || len(logs) == 0 {
		f.Fatalf("no golden logs: %v", err)
	}
	for _, l := range logs {
		b, err := os.ReadFile(l)
		if err != nil {
			f.Fatal(err)
		}
		lines := bytes.SplitAfter(b, []byte("\n"))
		f.Add(bytes.Join(lines[:min(len(lines), 40)], nil))
	}
	f.Add([]byte("INFO 01-23 15:50:06 [loader.py:1] Loading weights took 1" + strings.Repeat("0", 400) + " seconds\n"))
	f.Add([]byte("(EngineCore_DP0 pid=1) \x1b[1;36mINFO\x1b[0m 13-45 99:99:99 [x:0] GPU KV cache size: 99999999999999999999999 tokens\r\r\n"))
}

func FuzzParseLog(f *testing.F) {
	seedLogs(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		res, err := ParseLog(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("ParseLog on an in-memory reader failed: %v", err)
		}
		if res.Lines < 0 || res.EngineLines < 0 || (len(b) == 0 && res.Lines != 0) {
			t.Fatalf("%d lines, %d engine lines for %d bytes", res.Lines, res.EngineLines, len(b))
		}
		// What parse-log prints must always be valid JSON: no NaN or Inf.
		if _, err := json.Marshal(res.Figures()); err != nil {
			t.Fatalf("figures do not encode: %v", err)
		}
		for _, ph := range res.Phases {
			if ph.Duration < 0 {
				t.Fatalf("phase %s has a negative duration %v", ph.Name, ph.Duration)
			}
		}
	})
}

func FuzzParseLine(f *testing.F) {
	seedLogs(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		l := ParseLine(string(b))
		if strings.ContainsAny(l.Raw, "\n") && !bytes.Contains(b, []byte("\n")) {
			t.Fatalf("Raw %q gained a newline", l.Raw)
		}
		if l.Level != "" && !strings.Contains(l.Raw, l.Level) {
			t.Fatalf("level %q not in the line %q", l.Level, l.Raw)
		}
	})
}
