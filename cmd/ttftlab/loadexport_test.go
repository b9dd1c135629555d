package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// vllmKeys reads the golden key list taken from vLLM's source
// (internal/benchjson/testdata/vllm_keys.txt): name, allowed JSON types and
// whether only --save-detailed writes it.
func vllmKeys(t *testing.T) map[string][2]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "internal", "benchjson", "testdata", "vllm_keys.txt"))
	if err != nil {
		t.Fatal(err)
	}
	keys := map[string][2]string{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		detailed := ""
		if len(f) > 2 {
			detailed = f[2]
		}
		keys[f[0]] = [2]string{f[1], detailed}
	}
	return keys
}

func jsonKind(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case []any:
		return "array"
	case json.Number:
		if !strings.ContainsAny(x.String(), ".eE") {
			return "integer"
		}
		return "number"
	}
	return "other"
}

func readJSONObject(t *testing.T, path string) map[string]any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("%s is not a JSON object: %v", path, err)
	}
	return m
}

func readJSONLines(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<24)
	for sc.Scan() {
		var m map[string]any
		dec := json.NewDecoder(bytes.NewReader(sc.Bytes()))
		dec.UseNumber()
		if err := dec.Decode(&m); err != nil {
			t.Fatalf("%s: line %d: %v", path, len(out)+1, err)
		}
		out = append(out, m)
	}
	return out
}

// TestLoadSaveResultAgainstSim runs `ttftlab load` against the in-process
// simulator and checks the exports: every key vLLM's --save-result writes
// is present with vLLM's type, prompts are exactly --input-len tokens as the
// server counts them (usage.prompt_tokens), and --save-requests holds one
// line per request.
func TestLoadSaveResultAgainstSim(t *testing.T) {
	url := startSim(t, "--model", simModel)
	keys := vllmKeys(t)
	for _, tt := range []struct {
		name, api string
		detailed  bool
	}{
		{"chat detailed", "chat", true},
		{"completions summary", "completions", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			res, reqs, out := filepath.Join(dir, "result.json"), filepath.Join(dir, "requests.jsonl"), filepath.Join(dir, "out.jsonl")
			args := []string{"--url", url, "--model", simModel, "--api", tt.api, "--concurrency", "2", "--requests", "6",
				"--warmup-requests", "1", "--input-len", "1024", "--output-len", "8", "--interval", "100ms", "--json",
				"--save-result", res, "--save-requests", reqs, "--out", out,
				"--metric-percentiles", "50,90,99", "--percentile-metrics", "ttft,tpot,itl,e2el"}
			if tt.detailed {
				args = append(args, "--save-detailed")
			}
			var stdout, stderr bytes.Buffer
			if err := runLoad(context.Background(), args, &stdout, &stderr); err != nil {
				t.Fatalf("runLoad: %v\nstderr: %s", err, stderr.String())
			}
			got := readJSONObject(t, res)
			for k, spec := range keys {
				v, ok := got[k]
				if spec[1] == "detailed" && !tt.detailed {
					if ok {
						t.Errorf("%s written without --save-detailed", k)
					}
					continue
				}
				if !ok {
					t.Errorf("vLLM key %s missing", k)
					continue
				}
				kind, allowed := jsonKind(v), strings.Split(spec[0], "|")
				if !strings.Contains("|"+spec[0]+"|", "|"+kind+"|") && !(kind == "integer" && strings.Contains(spec[0], "number")) {
					t.Errorf("%s is %s (%v), want %v", k, kind, v, allowed)
				}
			}
			for _, k := range []string{"p50_ttft_ms", "p90_itl_ms", "std_e2el_ms", "median_tpot_ms", "ttftlab_p99_ttft_ms"} {
				if jsonKind(got[k]) != "number" && jsonKind(got[k]) != "integer" {
					t.Errorf("%s = %v, want a number", k, got[k])
				}
			}
			if got["ttftlab_prompt_len_source"] != "tokenize" || got["total_input_tokens"] != json.Number("6144") ||
				got["completed"] != json.Number("6") || got["ttftlab_status"] != "ok" || got["tokenizer_id"] != simModel {
				t.Errorf("prompt_len_source %v, total_input_tokens %v, completed %v, status %v, tokenizer_id %v; want tokenize, 6144, 6, ok, the model",
					got["ttftlab_prompt_len_source"], got["total_input_tokens"], got["completed"], got["ttftlab_status"], got["tokenizer_id"])
			}
			if tt.detailed {
				for i, n := range got["input_lens"].([]any) {
					if n != json.Number("1024") {
						t.Errorf("input_lens[%d] = %v, want 1024", i, n)
					}
				}
			}

			lines := readJSONLines(t, reqs)
			if len(lines) != 7 {
				t.Fatalf("--save-requests has %d lines, want 7 (1 warm-up + 6)", len(lines))
			}
			for i, l := range lines {
				if l["prompt_tokens"] != json.Number("1024") || l["prompt_len_source"] != "tokenize" || l["error"] != "" {
					t.Errorf("request line %d: prompt_tokens %v, source %v, error %q; want exactly 1024 from the server's usage, tokenize, no error",
						i, l["prompt_tokens"], l["prompt_len_source"], l["error"])
				}
			}

			for i, l := range readJSONLines(t, out) {
				if l["type"] != "interval" {
					continue
				}
				rep := l["report"].(map[string]any)
				for _, k := range []string{"metrics_ms", "hdr_v2", "output_tokens_streamed", "in_flight"} {
					if _, ok := rep[k]; !ok {
						t.Errorf("--out line %d lacks %s: %v", i, k, rep)
					}
				}
				if _, ok := rep["Histograms"]; ok {
					t.Errorf("--out line %d has Go field names", i)
				}
			}

			if py, err := exec.LookPath("python3"); err == nil {
				script := `import json,sys
r=json.load(open(sys.argv[1]))
for k in ["date","backend","model_id","completed","failed","total_input_tokens","mean_ttft_ms","p99_ttft_ms","std_itl_ms","latencies","queue_times"]:
    assert k in r, k
assert r["total_input_tokens"]==6144, r["total_input_tokens"]
assert isinstance(r["mean_ttft_ms"], float)
`
				if b, err := exec.Command(py, "-c", script, res).CombinedOutput(); err != nil {
					t.Errorf("python3 json.load check: %v\n%s", err, b)
				}
			}
		})
	}
}

// TestLoadPromptLenWithoutTokenize: against a server without /tokenize the
// prompt lengths are the server's usage numbers, and the result says so.
func TestLoadPromptLenWithoutTokenize(t *testing.T) {
	f := newFakeOpenAI(t)
	res := filepath.Join(t.TempDir(), "result.json")
	var stdout, stderr bytes.Buffer
	if err := runLoad(context.Background(), []string{"--url", f.URL, "--requests", "3", "--input-len", "12",
		"--output-len", "2", "--interval", "50ms", "--json", "--save-result", res}, &stdout, &stderr); err != nil {
		t.Fatalf("runLoad: %v\nstderr: %s", err, stderr.String())
	}
	got := readJSONObject(t, res)
	if got["ttftlab_prompt_len_source"] != "usage" || got["total_input_tokens"] != json.Number("15") || got["tokenizer_id"] != nil {
		t.Errorf("prompt_len_source %v, total_input_tokens %v, tokenizer_id %v; want usage, 15 (3 × the fake's 5), null",
			got["ttftlab_prompt_len_source"], got["total_input_tokens"], got["tokenizer_id"])
	}
}

func TestLoadExportFlagErrors(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"detailed without result", []string{"--save-detailed"}, "--save-detailed shapes the --save-result file"},
		{"percentiles without result", []string{"--metric-percentiles", "50"}, "add --save-result FILE"},
		{"bad percentile", []string{"--save-result", filepath.Join(dir, "r.json"), "--metric-percentiles", "50,abc"}, `percentile "abc" is invalid`},
		{"bad metric", []string{"--save-result", filepath.Join(dir, "r.json"), "--percentile-metrics", "ttft,latency"}, `metric "latency" is unknown`},
		{"missing directory", []string{"--save-result", filepath.Join(dir, "nope", "r.json")}, "does not exist"},
		{"same file", []string{"--save-result", filepath.Join(dir, "r.json"), "--save-requests", filepath.Join(dir, "r.json")}, "give two files"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := runLoad(context.Background(), append([]string{"--url", "http://127.0.0.1:1", "--model", "m"}, tt.args...), &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("runLoad(%v) = %v, want an error containing %q", tt.args, err, tt.want)
			}
		})
	}
}
