package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ttftlab/ttftlab/internal/sim"
)

// runKVJSON runs `ttftlab kv ARGS --json` and decodes the object.
func runKVJSON(t *testing.T, args ...string) (map[string]any, error) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), append(append([]string{"kv"}, args...), "--json"), &stdout, &stderr)
	out := map[string]any{}
	if stdout.Len() > 0 {
		if jerr := json.Unmarshal(stdout.Bytes(), &out); jerr != nil {
			t.Fatalf("output is not JSON: %v\n%s", jerr, stdout.String())
		}
	}
	return out, err
}

// TestKVBytesPerTokenFromConfigs checks kv_bytes_per_token = 2 × layers ×
// KV heads × head dim × dtype bytes for real config.json files, the dims
// written out here by hand from each config.
func TestKVBytesPerTokenFromConfigs(t *testing.T) {
	tests := []struct {
		file                                 string
		layers, kvHeads, headDim, dtypeBytes int64
	}{
		{"qwen2.5-1.5b-instruct.json", 28, 2, 128, 2},
		{"phi-3-mini-4k-instruct.json", 32, 32, 96, 2},
		{"llama-3.1-8b.json", 32, 8, 128, 2},
		{"qwen3-0.6b.json", 28, 8, 128, 2},    // explicit head_dim ≠ hidden/heads
		{"gemma-2-2b-it.json", 26, 4, 256, 2}, // explicit head_dim; float32 runs as bf16
		{"llava-v1.6-mistral-7b.json", 32, 8, 128, 2},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSuffix(tt.file, ".json"), func(t *testing.T) {
			out, err := runKVJSON(t, "--model-config", filepath.Join("..", "..", "internal", "kvcalc", "testdata", tt.file), "--gpu", "h200")
			if err != nil {
				t.Fatal(err)
			}
			want := 2 * tt.layers * tt.kvHeads * tt.headDim * tt.dtypeBytes
			if got := out["kv_bytes_per_token"]; got != float64(want) {
				t.Errorf("kv_bytes_per_token = %v, want %d", got, want)
			}
			if out["kv_cache_bytes_source"] != "estimate" || out["weights_bytes_estimate"] == nil {
				t.Errorf("source %v, weights %v; want an estimate", out["kv_cache_bytes_source"], out["weights_bytes_estimate"])
			}
			for _, k := range []string{"kv_cache_bytes", "num_gpu_blocks", "kv_cache_tokens", "max_concurrency"} {
				if v, ok := out[k].(float64); !ok || v <= 0 {
					t.Errorf("%s = %v, want a positive number", k, out[k])
				}
			}
		})
	}
}

// TestKVAgreesWithSim checks that `ttftlab kv` and the simulator's startup
// plan give the same blocks, tokens and concurrency.
func TestKVAgreesWithSim(t *testing.T) {
	for _, tt := range []struct{ model, gpu string }{
		{"Qwen/Qwen2.5-1.5B-Instruct", "h200"}, {"microsoft/Phi-3-mini-4k-instruct", "h100"}, {"meta-llama/Llama-3.1-8B-Instruct", "a100"},
	} {
		t.Run(tt.model+" "+tt.gpu, func(t *testing.T) {
			c := sim.DefaultConfig()
			c.Model, c.GPU, c.MaxModelLen = tt.model, tt.gpu, 4096
			plan, err := c.PlanKV()
			if err != nil {
				t.Fatal(err)
			}
			out, err := runKVJSON(t, "--model", tt.model, "--gpu", tt.gpu, "--max-model-len", "4096")
			if err != nil {
				t.Fatal(err)
			}
			if out["num_gpu_blocks"] != float64(plan.NumBlocks) || out["kv_cache_tokens"] != float64(plan.Tokens) || out["max_concurrency"] != plan.MaxConcurrency {
				t.Errorf("kv: %v blocks, %v tokens, %vx; sim: %d, %d, %vx", out["num_gpu_blocks"], out["kv_cache_tokens"], out["max_concurrency"], plan.NumBlocks, plan.Tokens, plan.MaxConcurrency)
			}
		})
	}
}

// TestKVGivenFigures reproduces a real H100 llava-v1.6-mistral-7b log
// (451,744 tokens, 110.29x at 4,096) from its logged tokens and from its
// logged KV memory.
func TestKVGivenFigures(t *testing.T) {
	for _, tt := range []struct {
		name string
		args []string
	}{
		{"tokens", []string{"--kv-cache-tokens", "451744"}},
		{"memory", []string{"--kv-cache-gib", "55.1455"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, err := runKVJSON(t, append([]string{"--model", "llava-hf/llava-v1.6-mistral-7b-hf", "--gpu", "h100", "--max-model-len", "4096"}, tt.args...)...)
			if err != nil {
				t.Fatal(err)
			}
			if out["kv_cache_bytes_source"] != "given" || out["weights_bytes_estimate"] != nil {
				t.Errorf("source %v, weights %v; want given and null", out["kv_cache_bytes_source"], out["weights_bytes_estimate"])
			}
			logs := fmt.Sprint(out["v1_log"])
			for _, want := range []string{"GPU KV cache size: 451,744 tokens", "Maximum concurrency for 4,096 tokens per request: 110.29x"} {
				if !strings.Contains(logs, want) {
					t.Errorf("v1_log %s lacks %q", logs, want)
				}
			}
			if v0 := fmt.Sprint(out["v0_log"]); !strings.Contains(v0, "# GPU blocks: 28234, # CPU blocks: 2048") || !strings.Contains(v0, "for 4096 tokens per request: 110.29x") {
				t.Errorf("v0_log = %s", v0)
			}
		})
	}
}

func TestKVTableAndFailures(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"kv", "--model", "meta-llama/Llama-3.1-8B-Instruct", "--gpu", "l4", "--max-model-len", "2048,131072"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "--max-model-len 131072") {
		t.Errorf("err = %v, want one naming --max-model-len 65536", err)
	}
	for _, want := range []string{"max-model-len", "2,048", "131,072", "n/a", "does not fit", "(estimate)", "Maximum concurrency for 2,048 tokens per request"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, stdout.String())
		}
	}
	out, err := runKVJSON(t, "--model", "microsoft/Phi-3-mini-4k-instruct", "--gpu", "l4", "--gpu-memory-utilization", "0.2")
	if err == nil || out["max_concurrency"] != nil || out["num_gpu_blocks"] != nil {
		t.Errorf("no KV memory: err %v, max_concurrency %v, blocks %v; want an error and nulls", err, out["max_concurrency"], out["num_gpu_blocks"])
	}
}

func TestKVRejectsBadFlags(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no model", []string{"--gpu", "h200"}, "give --model NAME"},
		{"both models", []string{"--model", "x", "--model-config", "y", "--gpu", "h200"}, `--model "x" and --model-config "y"`},
		{"unknown model", []string{"--model", "gpt-9", "--gpu", "h200"}, `--model "gpt-9": unknown model; accepted`},
		{"missing config", []string{"--model-config", "/nonexistent/config.json", "--gpu", "h200"}, "--model-config"},
		{"no gpu", []string{"--model", "Qwen/Qwen2.5-1.5B-Instruct"}, "no GPU: give --gpu NAME"},
		{"unknown gpu", []string{"--model", "Qwen/Qwen2.5-1.5B-Instruct", "--gpu", "tpu"}, `--gpu "tpu": unknown GPU`},
		{"bad gpu memory", []string{"--model", "Qwen/Qwen2.5-1.5B-Instruct", "--gpu-memory-gib", "-80"}, "--gpu-memory-gib -80"},
		{"bad utilization", []string{"--model", "Qwen/Qwen2.5-1.5B-Instruct", "--gpu", "h200", "--gpu-memory-utilization", "1.5"}, "--gpu-memory-utilization 1.5: must be in (0, 1]"},
		{"bad max-model-len", []string{"--model", "Qwen/Qwen2.5-1.5B-Instruct", "--gpu", "h200", "--max-model-len", "4096,x"}, `--max-model-len "4096,x": "x" is not a token count`},
		{"max-model-len past the model", []string{"--model", "microsoft/Phi-3-mini-4k-instruct", "--gpu", "h200", "--max-model-len", "8192"}, "--max-model-len 8192: larger than the model's max_position_embeddings 4096"},
		{"bad block size", []string{"--model", "Qwen/Qwen2.5-1.5B-Instruct", "--gpu", "h200", "--block-size", "0"}, "--block-size 0"},
		{"bad kv dtype", []string{"--model", "Qwen/Qwen2.5-1.5B-Instruct", "--gpu", "h200", "--kv-cache-dtype", "int4"}, `--kv-cache-dtype "int4"`},
		{"bad tp", []string{"--model", "Qwen/Qwen2.5-1.5B-Instruct", "--gpu", "h200", "--tensor-parallel-size", "5"}, "--tensor-parallel-size 5: num_attention_heads 12"},
		{"bad batched tokens", []string{"--model", "Qwen/Qwen2.5-1.5B-Instruct", "--gpu", "h200", "--max-num-batched-tokens", "-1"}, "--max-num-batched-tokens -1"},
		{"bad kv gib", []string{"--model", "Qwen/Qwen2.5-1.5B-Instruct", "--kv-cache-gib", "-3"}, "--kv-cache-gib -3"},
		{"bad kv tokens", []string{"--model", "Qwen/Qwen2.5-1.5B-Instruct", "--kv-cache-tokens", "1000"}, "--kv-cache-tokens 1000: must be a positive multiple of --block-size 16"},
		{"both measured", []string{"--model", "Qwen/Qwen2.5-1.5B-Instruct", "--kv-cache-tokens", "1024", "--kv-cache-gib", "3"}, "--kv-cache-gib 3 and --kv-cache-tokens 1024"},
		{"stray argument", []string{"--model", "Qwen/Qwen2.5-1.5B-Instruct", "--gpu", "h200", "extra"}, `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := run(context.Background(), append([]string{"kv"}, tt.args...), &stdout, &stderr)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("bad flags printed a report:\n%s", stdout.String())
			}
		})
	}
}

func TestKVHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"kv", "--help"}, &stdout, &stderr)
	if err != nil && err.Error() != "flag: help requested" {
		t.Fatalf("err = %v", err)
	}
	first, rest, _ := strings.Cut(stderr.String(), "\n")
	if !strings.HasPrefix(first, "Compute vLLM's KV-cache capacity") || !strings.Contains(rest, "Usage: ttftlab kv (--model NAME | --model-config PATH)") || !strings.Contains(rest, "--kv-cache-tokens") {
		t.Errorf("help =\n%s", stderr.String())
	}
}
