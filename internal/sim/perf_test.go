package sim

import (
	"math"
	"testing"
	"time"
)

func mustPerf(t testing.TB, model, gpu string, eager bool) *PerfModel {
	t.Helper()
	m, err := LookupModel(model)
	if err != nil {
		t.Fatal(err)
	}
	g, err := LookupGPU(gpu)
	if err != nil {
		t.Fatal(err)
	}
	return NewPerfModel(m, g, DefaultPerfParams(), eager)
}

// meanDecodeTPOT is the mean batch-1 decode step over a generation of n
// tokens from a 1-token prompt, as in the Qwen speed benchmark.
func meanDecodeTPOT(p *PerfModel, n int) time.Duration {
	var sum time.Duration
	for c := 1; c <= n; c++ {
		sum += p.StepTime([]SeqWork{{NewTokens: 1, Context: c}})
	}
	return sum / time.Duration(n)
}

// TestDecodeCalibration checks batch-1 decode against the Qwen2.5 speed
// benchmark (vLLM 0.6.3, A100-80G, 2048 generated tokens).
func TestDecodeCalibration(t *testing.T) {
	tests := []struct {
		model string
		want  time.Duration
	}{
		{"Qwen/Qwen2.5-0.5B-Instruct", 3210 * time.Microsecond},
		{"Qwen/Qwen2.5-1.5B-Instruct", 5450 * time.Microsecond},
		{"Qwen/Qwen2.5-3B-Instruct", 7840 * time.Microsecond},
		{"Qwen/Qwen2.5-7B-Instruct", 11870 * time.Microsecond},
	}
	for _, tt := range tests {
		t.Run(tt.model, func(t *testing.T) {
			got := meanDecodeTPOT(mustPerf(t, tt.model, "a100-80g", false), 2048)
			rel := float64(got-tt.want) / float64(tt.want)
			t.Logf("TPOT %v, published %v, error %+.1f%%", got, tt.want, 100*rel)
			if math.Abs(rel) > 0.20 {
				t.Errorf("TPOT %v is %+.1f%% off %v (limit ±20%%)", got, 100*rel, tt.want)
			}
		})
	}
}

// TestEagerSlowdown checks the GPU part of a batch-1 decode: eager is about
// 2.4× the CUDA-graph time on an H200 ([M]: 4.35 vs 1.78 ms at ctx 512).
func TestEagerSlowdown(t *testing.T) {
	step := []SeqWork{{NewTokens: 1, Context: 512}}
	graph := mustPerf(t, "Qwen/Qwen2.5-1.5B-Instruct", "h200", false).GPUTime(step)
	eager := mustPerf(t, "Qwen/Qwen2.5-1.5B-Instruct", "h200", true).GPUTime(step)
	ratio := float64(eager) / float64(graph)
	t.Logf("batch-1 decode GPU time on H200: graph %v, eager %v, ratio %.2f", graph, eager, ratio)
	if ratio < 2.1 || ratio > 2.8 {
		t.Errorf("eager/graph = %.2f, want about 2.4", ratio)
	}
}

func TestStepTimeShape(t *testing.T) {
	p := mustPerf(t, "Qwen/Qwen2.5-1.5B-Instruct", "h200", false)
	decode := func(batch, ctx int) time.Duration {
		w := make([]SeqWork, batch)
		for i := range w {
			w[i] = SeqWork{NewTokens: 1, Context: ctx}
		}
		return p.StepTime(w)
	}
	if d := p.StepTime(nil); d != 0 {
		t.Errorf("empty step = %v, want 0", d)
	}
	// Batching is nearly free at small batch and grows with context.
	if b1, b64 := decode(1, 2048), decode(64, 2048); b64 > 2*b1 || b64 <= b1 {
		t.Errorf("decode batch 64 = %v vs batch 1 = %v, want within (1×, 2×]", b64, b1)
	}
	if short, long := decode(64, 512), decode(64, 8192); long <= short {
		t.Errorf("decode at ctx 8192 = %v, not slower than at 512 = %v", long, short)
	}
	// CUDA-graph padding: 5 and 8 sequences cost the same.
	if d5, d8 := decode(5, 100), decode(8, 100); d5 != d8 {
		// Only KV bytes differ; padding makes the linear part equal.
		if float64(d8-d5)/float64(d8) > 0.01 {
			t.Errorf("batch 5 = %v, batch 8 = %v; want padded to the same capture size", d5, d8)
		}
	}
	// A 1k-token prefill on H200 is ~6 ms (SIM-NOTES §5: TTFT ≈ 8 + 5.6 + 2.2 ms).
	prefill := p.StepTime([]SeqWork{{NewTokens: 1024}})
	if prefill < 4*time.Millisecond || prefill > 10*time.Millisecond {
		t.Errorf("1024-token prefill = %v, want 4–10 ms", prefill)
	}
	// Prefill grows with tokens; an 8k chunk is compute-bound.
	if p8k := p.StepTime([]SeqWork{{NewTokens: 8192}}); p8k < 5*prefill {
		t.Errorf("8192-token prefill = %v, want ≥ 5× the 1024-token one (%v)", p8k, prefill)
	}
}

func TestCaptureSize(t *testing.T) {
	for n, want := range map[int]int{0: 1, 1: 1, 2: 2, 3: 4, 4: 4, 5: 8, 8: 8, 9: 16, 257: 264, 512: 512} {
		if got := captureSize(n); got != want {
			t.Errorf("captureSize(%d) = %d, want %d", n, got, want)
		}
	}
}
