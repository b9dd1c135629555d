package gpunode

import (
	"encoding/json"
	"math"
	"strings"
	"testing"
)

func FuzzParseMetrics(f *testing.F) {
	f.Add(vllmMetrics)
	f.Add("vllm:num_requests_waiting NaN\nvllm:num_requests_running +Inf\n")
	f.Add("# TYPE vllm:time_to_first_token_seconds histogram\nvllm:time_to_first_token_seconds_bucket{le=\"+Inf\"} 3\nvllm:time_to_first_token_seconds_sum 1e309\nvllm:time_to_first_token_seconds_count 3\n")
	f.Add("")
	f.Add("\x00\xff{{{")
	f.Fuzz(func(t *testing.T, text string) {
		out, err := ParseMetrics(strings.NewReader(text))
		if err != nil {
			return
		}
		for k, v := range out {
			if !keptMetrics[strings.TrimSuffix(strings.TrimSuffix(k, "_sum"), "_count")] {
				t.Fatalf("kept %q, which is not a kept family", k)
			}
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("%s = %v: the sample would not encode as JSON", k, v)
			}
		}
		if _, err := json.Marshal(out); err != nil {
			t.Fatal(err)
		}
	})
}
