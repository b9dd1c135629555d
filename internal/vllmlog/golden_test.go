package vllmlog

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden testdata/*.json files from the parser's output")

// TestGolden parses every real vLLM log excerpt in testdata (see
// testdata/README for their sources) and compares its figures with the
// golden JSON next to it. Run `go test ./internal/vllmlog -update` to
// rewrite the goldens, then review the diff.
func TestGolden(t *testing.T) {
	logs, err := filepath.Glob(filepath.Join("testdata", "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no golden logs: %v", err)
	}
	versions := map[string]bool{}
	failures := 0
	for _, path := range logs {
		name := strings.TrimSuffix(filepath.Base(path), ".log")
		if v, _, ok := strings.Cut(name, "-"); ok && strings.HasPrefix(v, "v0.") {
			versions[v] = true
		}
		t.Run(name, func(t *testing.T) {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			res, err := ParseLog(f)
			if err != nil {
				t.Fatalf("ParseLog: %v", err)
			}
			got, err := json.MarshalIndent(res.Figures(), "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			golden := strings.TrimSuffix(path, ".log") + ".json"
			if *update {
				if err := os.WriteFile(golden, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden (run with -update to create it): %v", err)
			}
			if diff := cmp.Diff(string(want), string(got)); diff != "" {
				t.Errorf("figures of %s (-want +got):\n%s", path, diff)
			}
			if strings.HasPrefix(name, "fail-") {
				if res.Figures().Error == nil {
					t.Errorf("failure log %s: no error classified", path)
				}
			} else if _, ok := res.RootCause(); ok {
				t.Errorf("startup log %s: classified a failure", path)
			}
		})
		if strings.HasPrefix(name, "fail-") {
			failures++
		}
	}
	if len(versions) < 4 || failures < 2 {
		t.Errorf("goldens cover %d vLLM versions and %d failure logs; want at least 4 and 2", len(versions), failures)
	}
}

// TestFiguresJSONKeys pins the exact key set of parse-log's output.
func TestFiguresJSONKeys(t *testing.T) {
	b, err := json.Marshal(Figures{})
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	want := []string{"weights_load_s", "model_load_gib", "model_load_s", "compile_s", "graph_capture_s", "graph_capture_gib", "kv_cache_tokens", "max_concurrency", "max_concurrency_tokens", "engine_init_s", "first_to_ready_s", "error"}
	if len(m) != len(want) {
		t.Errorf("keys %v, want exactly %v", m, want)
	}
	for _, k := range want {
		if v, ok := m[k]; !ok || v != nil {
			t.Errorf("key %q: present %v, value %v; want present and null", k, ok, v)
		}
	}
	if !bytes.HasPrefix(b, []byte(`{"weights_load_s":null,`)) {
		t.Errorf("key order: %s", b)
	}
}

func TestFirstToReadyWraps(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  float64
	}{
		{"same minute", []string{
			"INFO 06-02 11:03:11 [backends.py:170] x",
			"INFO 06-02 11:03:56 [api_server.py:1336] Starting vLLM API server on http://0.0.0.0:8000",
		}, 45},
		{"midnight", []string{
			"INFO 03-31 23:59:50 [a.py:1] x",
			"INFO 04-01 00:00:20 [api_server.py:1] Starting vLLM API server 0 on http://0.0.0.0:8000",
			"INFO:     Application startup complete.",
		}, 30},
		{"new year", []string{
			"(APIServer pid=1) INFO 12-31 23:59:00 [a.py:1] x",
			"(EngineCore_DP0 pid=2) INFO 01-01 00:01:00 [core.py:1] y",
			"(APIServer pid=1) INFO:     Application startup complete.",
		}, 120},
		{"leap day", []string{
			"INFO 02-28 23:00:00 [a.py:1] x",
			"INFO 02-29 01:00:00 [a.py:1] Starting vLLM server on http://0.0.0.0:8000",
		}, 7200},
		{"out of order across processes", []string{
			"INFO 05-01 10:00:05 [a.py:1] x",
			"INFO 05-01 10:00:03 [a.py:1] y",
			"INFO 05-01 10:00:10 [a.py:1] Starting vLLM server on http://0.0.0.0:8000",
		}, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := ParseLog(strings.NewReader(strings.Join(tt.lines, "\n") + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			if res.FirstToReadyS == nil || *res.FirstToReadyS != tt.want {
				t.Errorf("FirstToReadyS = %v, want %v", res.FirstToReadyS, tt.want)
			}
		})
	}
	res, _ := ParseLog(strings.NewReader("INFO 05-01 10:00:05 [a.py:1] x\n"))
	if res.FirstToReadyS != nil {
		t.Errorf("FirstToReadyS with no ready line = %v, want nil", *res.FirstToReadyS)
	}
}
