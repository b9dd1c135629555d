package coordinator

import (
	"bufio"
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// vllmKeys reads the golden key list of vLLM's --save-result (key, type,
// whether only --save-detailed writes it).
func vllmKeys(t *testing.T) [][3]string {
	t.Helper()
	f, err := os.Open("../internal/benchjson/testdata/vllm_keys.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out [][3]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		fs := strings.Fields(line)
		k := [3]string{fs[0], fs[1]}
		if len(fs) > 2 {
			k[2] = fs[2]
		}
		out = append(out, k)
	}
	return out
}

// jsonType is a decoded JSON value's type in the key list's words.
func jsonType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case []any:
		return "array"
	case json.Number:
		if strings.ContainsAny(x.String(), ".eE") {
			return "number"
		}
		return "integer"
	}
	return "object"
}

// typeOK reports whether got satisfies a key list type such as
// "number|string" or "integer|null"; an integer is a number too.
func typeOK(want, got string) bool {
	for _, w := range strings.Split(want, "|") {
		if w == got || (w == "number" && got == "integer") {
			return true
		}
	}
	return false
}

// Acceptance for issue 13 (sweep export): an in-process sweep on the
// simulator, 2 agents, 2 short levels, writes one vLLM-format file per level
// into save_result/, with every golden key in vLLM's types; completed is the
// merged successes, the TTFT mean and std are those of the agents' own exact
// sums, total_input_tokens is completed × the input length (prompts sized
// with the sim's /tokenize), and results.json says where the prompt lengths
// came from.
func TestSimSweepSavesVLLMResultPerLevel(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the simulated engine for about 5 s")
	}
	const inputLen = 48
	url, model := startSimEngine(t)
	c := sweepCoordinator(t, map[string]Agent{"a": startAgentServer(t), "b": startAgentServer(t)})
	c.cfg.AgentSilence = 10e9 // 10 s: in-process agents, as in sim_sweep_test.go
	res, err := c.RunSweep(context.Background(), SweepSpec{RunID: "export", BaseURL: url, Model: model, Levels: []float64{2, 4},
		Load:     &pb.LoadModel{Kind: "closed", DurationMs: 1500, WarmupMs: 300},
		Workload: &pb.Workload{MaxTokens: 16, IgnoreEos: true},
		Generator: &pb.WorkloadGen{Kind: "synthetic", Seed: 1, InputLen: &pb.LengthDist{Kind: "fixed", Mean: inputLen},
			OutputLen: &pb.LengthDist{Kind: "fixed", Mean: 16}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := ReadEvents(filepath.Join(res.Dir, "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	sr, err := results.BuildSweep(evs)
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range sr.Warnings {
		t.Errorf("warning %q: a real agent's reports must pass validation", w)
	}
	if sr.PromptLenSource != results.PromptLenTokenize {
		t.Errorf("results.json prompt_len_source %q, want tokenize (the sim has /tokenize)", sr.PromptLenSource)
	}
	// The agents' own sums, per level, straight from their reports.
	type sums struct{ n, sum, sq float64 }
	ttft := map[int]*sums{}
	for _, ev := range evs {
		if ev.Kind != results.EventSweepInterval {
			continue
		}
		p, err := results.Decode(ev)
		if err != nil {
			t.Fatal(err)
		}
		si := p.(results.SweepInterval)
		if si.Report.GetWarmup() {
			continue
		}
		if ttft[si.Level] == nil {
			ttft[si.Level] = &sums{}
		}
		for _, m := range si.Report.GetMoments() {
			if m.GetMetric() == hdr.TTFT {
				s := ttft[si.Level]
				s.n += float64(m.GetCount())
				s.sum += m.GetSumMs()
				s.sq += m.GetSumSqMs()
			}
		}
	}
	keys := vllmKeys(t)
	for li, name := range []string{"level-01-c2.json", "level-02-c4.json"} {
		t.Run(name, func(t *testing.T) {
			b, err := os.ReadFile(filepath.Join(res.Dir, results.SaveResultDir, name))
			if err != nil {
				t.Fatal(err)
			}
			dec := json.NewDecoder(strings.NewReader(string(b)))
			dec.UseNumber()
			var got map[string]any
			if err := dec.Decode(&got); err != nil {
				t.Fatal(err)
			}
			for _, k := range keys {
				v, ok := got[k[0]]
				switch {
				case k[2] == "detailed":
					if ok {
						t.Errorf("%s is written without --save-detailed", k[0])
					}
				case !ok:
					t.Errorf("key %s missing", k[0])
				case !typeOK(k[1], jsonType(v)):
					t.Errorf("key %s is %s (%v), vLLM writes %s", k[0], jsonType(v), v, k[1])
				}
			}
			l := sr.Levels[li]
			num := func(k string) float64 {
				f, err := got[k].(json.Number).Float64()
				if err != nil {
					t.Fatalf("%s: %v", k, err)
				}
				return f
			}
			if l.Successes == 0 || num("completed") != float64(l.Successes) {
				t.Errorf("completed %v, merged successes %d", got["completed"], l.Successes)
			}
			if want := float64(l.Successes) * inputLen; num("total_input_tokens") != want {
				t.Errorf("total_input_tokens %v, want %d × %d = %v", got["total_input_tokens"], l.Successes, inputLen, want)
			}
			s := ttft[li]
			if s == nil || s.n != float64(l.Successes) {
				t.Fatalf("agents' TTFT sums count %v values, want %d", s, l.Successes)
			}
			mean := s.sum / s.n
			std := math.Sqrt((s.sq - s.sum*s.sum/s.n) / s.n)
			if m := num("mean_ttft_ms"); math.Abs(m-mean) > 1e-9*mean {
				t.Errorf("mean_ttft_ms %v, the agents' sums give %v", m, mean)
			}
			if sd := num("std_ttft_ms"); math.Abs(sd-std) > 1e-6*max(std, 1e-3) {
				t.Errorf("std_ttft_ms %v, the agents' sums give %v", sd, std)
			}
			// The median is the merged histogram's, nearest rank.
			if med := num("median_ttft_ms"); math.Abs(med-l.Metrics[hdr.TTFT].P50) > 0.002*med {
				t.Errorf("median_ttft_ms %v, results.json TTFT p50 %v", med, l.Metrics[hdr.TTFT].P50)
			}
			if got["ttftlab_prompt_len_source"] != "tokenize" || got["tokenizer_id"] != model {
				t.Errorf("ttftlab_prompt_len_source %v, tokenizer_id %v; want tokenize and %s", got["ttftlab_prompt_len_source"], got["tokenizer_id"], model)
			}
			if num("max_concurrency") != l.Value || got["request_rate"] != "inf" {
				t.Errorf("max_concurrency %v, request_rate %v; want %v and inf", got["max_concurrency"], got["request_rate"], l.Value)
			}
			if pc := num("max_concurrent_requests"); pc < 1 || pc > l.Value {
				t.Errorf("max_concurrent_requests %v outside [1, %v]", pc, l.Value)
			}
		})
	}
}
