package results

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
)

// TestSummarizeLoadEmpty checks that a run that measured nothing says so:
// it failed, and its statistics are null in JSON and n/a in the table.
func TestSummarizeLoadEmpty(t *testing.T) {
	tests := []struct {
		name        string
		interrupted error
		wantReason  string
	}{
		{"nothing succeeded", nil, "no request succeeded: 0 attempts"},
		{"interrupted", errors.New("context canceled"), "interrupted; the summary covers what was measured: context canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := SummarizeLoad(NewMerger(), true, tt.interrupted)
			if s.Status != "failed" || !strings.Contains(s.Reason, tt.wantReason) {
				t.Errorf("status %q reason %q, want failed with %q", s.Status, s.Reason, tt.wantReason)
			}
			var js bytes.Buffer
			if err := LoadJSON(s)(&js); err != nil {
				t.Fatal(err)
			}
			var got map[string]any
			if err := json.Unmarshal(js.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			for _, k := range []string{"ttft_ms", "e2e_ms", "requests_per_s", "duration_s", "usage_source"} {
				if v, ok := got[k]; !ok || v != nil {
					t.Errorf("%s = %v (present %v), want null", k, v, ok)
				}
			}
			var tab bytes.Buffer
			if err := LoadTable(s, LoadRun{BaseURL: "http://h", Model: "m", API: "chat", Load: "closed loop, concurrency 1", SLO: "TTFT ≤ 200ms"})(&tab); err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{`Status:\s+failed`, `Request throughput \(req/s\):\s+n/a`, `Goodput .*:\s+n/a \(0 good\)`, `ttft\s+0\s+n/a`} {
				if !regexp.MustCompile(want).MatchString(tab.String()) {
					t.Errorf("table lacks %s:\n%s", want, tab.String())
				}
			}
			if strings.Contains(tab.String(), "0.000") {
				t.Errorf("table shows a 0 statistic for an empty run:\n%s", tab.String())
			}
		})
	}
}
