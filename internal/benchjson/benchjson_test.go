package benchjson

import (
	"bufio"
	"bytes"
	"encoding/json"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

// GoldenKey is one line of testdata/vllm_keys.txt.
type GoldenKey struct {
	Name     string
	Types    []string
	Detailed bool
}

// readGolden reads the key list taken from vLLM's source.
func readGolden(t *testing.T) []GoldenKey {
	t.Helper()
	f, err := os.Open("testdata/vllm_keys.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []GoldenKey
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		out = append(out, GoldenKey{Name: fs[0], Types: strings.Split(fs[1], "|"), Detailed: len(fs) > 2 && fs[2] == "detailed"})
	}
	return out
}

// jsonType names v's JSON type as the golden list does.
func jsonType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "bool"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	case json.Number:
		if _, err := x.Int64(); err == nil && !strings.ContainsAny(x.String(), ".eE") {
			return "integer"
		}
		return "number"
	}
	return "?"
}

// CheckKeys fails t unless every vLLM key is in got with an allowed type.
// "integer" satisfies "number".
func checkKeys(t *testing.T, got map[string]any, detailed bool) {
	t.Helper()
	for _, k := range readGolden(t) {
		v, ok := got[k.Name]
		if k.Detailed && !detailed {
			if ok {
				t.Errorf("key %s is written without --save-detailed; vLLM drops it", k.Name)
			}
			continue
		}
		if !ok {
			t.Errorf("vLLM key %s is missing", k.Name)
			continue
		}
		typ := jsonType(v)
		allowed := false
		for _, want := range k.Types {
			if typ == want || (typ == "integer" && want == "number") {
				allowed = true
			}
		}
		if !allowed {
			t.Errorf("key %s is %s (%v), want %s", k.Name, typ, v, strings.Join(k.Types, "|"))
		}
	}
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("result is not a JSON object: %v\n%s", err, b)
	}
	return m
}

func TestResultHasVLLMKeys(t *testing.T) {
	origin := time.Unix(1_700_000_000, 0)
	for _, detailed := range []bool{false, true} {
		name := map[bool]string{false: "summary", true: "detailed"}[detailed]
		t.Run(name, func(t *testing.T) {
			a := New(Options{Detailed: detailed}, origin)
			a.Add(Request{Start: origin.Add(10 * time.Millisecond), OK: true, PromptLen: 8, OutputLen: 3,
				FirstChunk: 20 * time.Millisecond, FirstToken: 30 * time.Millisecond, Latency: 50 * time.Millisecond,
				Chunks: []Chunk{{Gap: 0, Tokens: 1}, {Gap: 10 * time.Millisecond, Tokens: 1}, {Gap: 10 * time.Millisecond, Tokens: 1}}, Text: " a b c"})
			a.Add(Request{Start: origin.Add(20 * time.Millisecond), Error: "http_500: boom"})
			var buf bytes.Buffer
			good := uint64(1)
			if err := a.Write(&buf, Settings{Date: origin, Backend: "openai-chat", ModelID: "m", NumPrompts: 2, Burstiness: 1, MaxConcurrency: 2},
				Run{Duration: time.Second, Good: &good, Status: "ok", PromptLenSource: "tokenize"}); err != nil {
				t.Fatal(err)
			}
			got := decode(t, buf.Bytes())
			checkKeys(t, got, detailed)
			if got["request_rate"] != "inf" {
				t.Errorf("request_rate = %v, want \"inf\" for a closed loop", got["request_rate"])
			}
		})
	}
}

func TestStatistics(t *testing.T) {
	origin := time.Unix(1_700_000_000, 0)
	a := New(Options{Percentiles: []float64{50, 99.9}, Metrics: []string{MetricTTFT, MetricE2EL}}, origin)
	ttfts := []time.Duration{10 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond, 40 * time.Millisecond}
	for i, d := range ttfts {
		a.Add(Request{Start: origin.Add(time.Duration(i) * time.Second), OK: true, PromptLen: 100, OutputLen: 1, FirstChunk: d, FirstToken: d, Latency: 2 * d})
	}
	a.Add(Request{Start: origin, Error: "refused"})
	var buf bytes.Buffer
	if err := a.Write(&buf, Settings{Date: origin, Backend: "openai", ModelID: "m", RequestRate: 2, Burstiness: math.Inf(1)}, Run{Duration: 4 * time.Second, Status: "ok"}); err != nil {
		t.Fatal(err)
	}
	got := decode(t, buf.Bytes())
	f := func(k string) float64 {
		t.Helper()
		n, ok := got[k].(json.Number)
		if !ok {
			t.Fatalf("%s = %v, want a number", k, got[k])
		}
		v, _ := n.Float64()
		return v
	}
	tests := []struct {
		key  string
		want float64
		tol  float64
	}{
		{"mean_ttft_ms", 25, 1e-9},
		{"std_ttft_ms", math.Sqrt(125), 1e-9}, // np.std([10,20,30,40])
		{"median_ttft_ms", 20, 0.02},          // nearest rank 2 of 4
		{"p99.9_ttft_ms", 40, 0.05},
		{"mean_e2el_ms", 50, 1e-9},
		{"completed", 4, 0},
		{"failed", 1, 0},
		{"total_input_tokens", 400, 0},
		{"request_throughput", 1, 1e-9},
		{"max_concurrent_requests", 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.key, func(t *testing.T) {
			if v := f(tt.key); math.Abs(v-tt.want) > tt.tol {
				t.Errorf("%s = %v, want %v ± %v", tt.key, v, tt.want, tt.tol)
			}
		})
	}
	for _, k := range []string{"mean_tpot_ms", "p50_tpot_ms", "mean_itl_ms"} {
		if _, ok := got[k]; ok {
			t.Errorf("%s written though tpot and itl were not selected", k)
		}
	}
	// One-token outputs have no TPOT and chunkless responses no ITL: null,
	// never 0.
	if v, ok := got["ttftlab_mean_itl_ms"]; !ok || v != nil {
		t.Errorf("ttftlab_mean_itl_ms = %v (present %v), want null", v, ok)
	}
	if got["burstiness"] != "inf" || got["request_rate"] != json.Number("2.0") {
		t.Errorf("burstiness %v, request_rate %v; want \"inf\" and 2.0 (a float, as Python writes it)", got["burstiness"], got["request_rate"])
	}
}

func TestParseFlags(t *testing.T) {
	tests := []struct {
		name, in string
		ok       bool
	}{
		{"percentiles", "50,90,99", true},
		{"fraction", "99.9", true},
		{"zero", "0", false},
		{"over 100", "101", false},
		{"word", "p99", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePercentiles(tt.in)
			if (err == nil) != tt.ok {
				t.Fatalf("ParsePercentiles(%q) error %v, want ok=%v", tt.in, err, tt.ok)
			}
		})
	}
	if _, err := ParseMetrics("ttft,e2el"); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseMetrics("ttft,latency"); err == nil || !strings.Contains(err.Error(), `"latency"`) {
		t.Fatalf("ParseMetrics(ttft,latency) = %v, want an error naming latency", err)
	}
}
