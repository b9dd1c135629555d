package sim

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/ttftlab/ttftlab/internal/kvcalc"
)

// Model is a model as the simulator sees it: kvcalc's Config, the one
// definition of the config.json fields that size the weights and the KV
// cache (layers, KV heads, head dim, dtype, sliding window, ...), so that
// the simulator and `ttftlab kv` compute from the same inputs, with the
// simulator's methods on it. Built-in models are bf16 (DType ""); a model
// read from a config.json keeps its checkpoint dtype, which vLLM's
// --dtype auto runs in 16-bit elements (kvcalc.RuntimeDTypeBytes).
type Model struct {
	kvcalc.Config
}

// dtypeBytes returns the element size the model's weights take on the GPU.
func (m Model) dtypeBytes() int64 { return int64(kvcalc.RuntimeDTypeBytes(m.DType)) }

// KVConfig returns m as the KV calculator's config, so that the simulator
// and `ttftlab kv` share one implementation of vLLM's arithmetic.
func (m Model) KVConfig() kvcalc.Config { return m.Config }

// KVLayout returns the model's KV layout on one GPU with vLLM's defaults:
// --kv-cache-dtype auto, no tensor parallelism, 16-token blocks.
func (m Model) KVLayout() kvcalc.Layout {
	return kvcalc.Layout{
		Layers: m.Layers, KVHeads: m.KVHeads, HeadDim: m.HeadDim,
		DTypeBytes: kvcalc.RuntimeDTypeBytes(m.DType), BlockSize: BlockSize,
		SlidingWindow: m.SlidingWindow, FullLayers: m.FullLayers,
	}
}

// WeightBytes returns the size of the weights in their dtype, which is both
// the safetensors payload read from disk and the GPU memory they take.
func (m Model) WeightBytes() int64 { return m.TotalParams() * m.dtypeBytes() }

// StepWeightBytes returns the weight bytes one text step reads: the
// transformer layers and the lm_head (V·d, read whether or not it is tied).
func (m Model) StepWeightBytes() int64 {
	return (m.NonEmbeddingParams() + m.LMHeadParams()) * m.dtypeBytes()
}

// KVBytesPerToken returns 2·L·kv_heads·head_dim·dtype bytes: K and V for
// every layer (28 KiB for Qwen2.5-1.5B in bf16), in the dtype vLLM runs the
// model in (a float32 checkpoint runs in 16 bits).
func (m Model) KVBytesPerToken() int64 { return m.KVLayout().BytesPerToken() }

// builtinModels holds the real HF config numbers of the supported models.
var builtinModels = []Model{
	{Config: kvcalc.Config{Name: "Qwen/Qwen2.5-0.5B-Instruct", Architecture: "Qwen2ForCausalLM", Layers: 24, Hidden: 896, Heads: 14, KVHeads: 2, HeadDim: 64, FFN: 4864, Vocab: 151936, TiedEmbeddings: true, QKVBias: true, MaxPositionEmbeddings: 32768}},
	{Config: kvcalc.Config{Name: "Qwen/Qwen2.5-1.5B-Instruct", Architecture: "Qwen2ForCausalLM", Layers: 28, Hidden: 1536, Heads: 12, KVHeads: 2, HeadDim: 128, FFN: 8960, Vocab: 151936, TiedEmbeddings: true, QKVBias: true, MaxPositionEmbeddings: 32768}},
	{Config: kvcalc.Config{Name: "Qwen/Qwen2.5-3B-Instruct", Architecture: "Qwen2ForCausalLM", Layers: 36, Hidden: 2048, Heads: 16, KVHeads: 2, HeadDim: 128, FFN: 11008, Vocab: 151936, TiedEmbeddings: true, QKVBias: true, MaxPositionEmbeddings: 32768}},
	{Config: kvcalc.Config{Name: "Qwen/Qwen2.5-7B-Instruct", Architecture: "Qwen2ForCausalLM", Layers: 28, Hidden: 3584, Heads: 28, KVHeads: 4, HeadDim: 128, FFN: 18944, Vocab: 152064, TiedEmbeddings: false, QKVBias: true, MaxPositionEmbeddings: 32768}},
	{Config: kvcalc.Config{Name: "Qwen/Qwen2.5-14B-Instruct", Architecture: "Qwen2ForCausalLM", Layers: 48, Hidden: 5120, Heads: 40, KVHeads: 8, HeadDim: 128, FFN: 13824, Vocab: 152064, TiedEmbeddings: false, QKVBias: true, MaxPositionEmbeddings: 32768}},
	{Config: kvcalc.Config{Name: "Qwen/Qwen2.5-32B-Instruct", Architecture: "Qwen2ForCausalLM", Layers: 64, Hidden: 5120, Heads: 40, KVHeads: 8, HeadDim: 128, FFN: 27648, Vocab: 152064, TiedEmbeddings: false, QKVBias: true, MaxPositionEmbeddings: 32768}},
	{Config: kvcalc.Config{Name: "microsoft/Phi-3-mini-4k-instruct", Architecture: "Phi3ForCausalLM", Layers: 32, Hidden: 3072, Heads: 32, KVHeads: 32, HeadDim: 96, FFN: 8192, Vocab: 32064, TiedEmbeddings: false, MaxPositionEmbeddings: 4096, SlidingWindow: 2047}},
	{Config: kvcalc.Config{Name: "meta-llama/Llama-3.2-1B-Instruct", Architecture: "LlamaForCausalLM", Layers: 16, Hidden: 2048, Heads: 32, KVHeads: 8, HeadDim: 64, FFN: 8192, Vocab: 128256, TiedEmbeddings: true, MaxPositionEmbeddings: 131072}},
	{Config: kvcalc.Config{Name: "meta-llama/Llama-3.2-3B-Instruct", Architecture: "LlamaForCausalLM", Layers: 28, Hidden: 3072, Heads: 24, KVHeads: 8, HeadDim: 128, FFN: 8192, Vocab: 128256, TiedEmbeddings: true, MaxPositionEmbeddings: 131072}},
	{Config: kvcalc.Config{Name: "meta-llama/Llama-3.1-8B-Instruct", Architecture: "LlamaForCausalLM", Layers: 32, Hidden: 4096, Heads: 32, KVHeads: 8, HeadDim: 128, FFN: 14336, Vocab: 128256, TiedEmbeddings: false, MaxPositionEmbeddings: 131072}},
	// Qwen3-4B: config.json of Qwen/Qwen3-4B (hidden 2560, 36 layers, 32 heads, 8 KV heads, head_dim 128,
	// intermediate 9728, vocab 151936, tied embeddings, max_position_embeddings 40960).
	{Config: kvcalc.Config{Name: "Qwen/Qwen3-4B", Architecture: "Qwen3ForCausalLM", Layers: 36, Hidden: 2560, Heads: 32, KVHeads: 8, HeadDim: 128, FFN: 9728, Vocab: 151936, TiedEmbeddings: true, MaxPositionEmbeddings: 40960}},
	// The text model is Mistral-7B (vocab 32064); ExtraParams is the
	// CLIP ViT-L/14-336 vision tower (303,507,456) plus the 1024→4096→4096
	// projector and the image_newline vector (20,983,808).
	{Config: kvcalc.Config{Name: "llava-hf/llava-v1.6-mistral-7b-hf", Architecture: "LlavaNextForConditionalGeneration", Layers: 32, Hidden: 4096, Heads: 32, KVHeads: 8, HeadDim: 128, FFN: 14336, Vocab: 32064, TiedEmbeddings: false, MaxPositionEmbeddings: 32768, ExtraParams: 324_491_264}},
}

// ModelNames returns the names of the built-in models, sorted.
func ModelNames() []string {
	names := make([]string, len(builtinModels))
	for i, m := range builtinModels {
		names[i] = m.Name
	}
	sort.Strings(names)
	return names
}

// LookupModel finds a built-in model by its exact name, case-insensitively,
// or by the last path element of name (so "/models/Qwen2.5-1.5B-Instruct"
// and "qwen2.5-1.5b-instruct" both find Qwen/Qwen2.5-1.5B-Instruct).
func LookupModel(name string) (Model, error) {
	for _, m := range builtinModels {
		if strings.EqualFold(m.Name, name) {
			return m, nil
		}
	}
	base := path.Base(strings.TrimRight(name, "/"))
	for _, m := range builtinModels {
		if strings.EqualFold(path.Base(m.Name), base) {
			return m, nil
		}
	}
	return Model{}, fmt.Errorf("--model %q: unknown model; accepted: %s", name, strings.Join(ModelNames(), ", "))
}

// GPU describes one accelerator: what torch reports as total memory and the
// datasheet peaks the roofline uses.
type GPU struct {
	// Name is the canonical --gpu value, e.g. "h200".
	Name string
	// DeviceName is what torch.cuda.get_device_name returns.
	DeviceName string
	// Aliases are other accepted --gpu values.
	Aliases []string
	// TotalGiB is torch.cuda.mem_get_info's total, in GiB.
	TotalGiB float64
	// PeakFLOPS is the dense bf16 peak, in FLOP/s.
	PeakFLOPS float64
	// BandwidthBps is the HBM/GDDR bandwidth, in bytes/s.
	BandwidthBps float64
	// EtaMFU is the prefill model-FLOPs utilisation reached by vLLM.
	EtaMFU float64
	// IsA100 marks the A100 family, which vLLM's batch defaults single out.
	IsA100 bool
}

// builtinGPUs holds the supported accelerators.
var builtinGPUs = []GPU{
	{Name: "a100-80g", DeviceName: "NVIDIA A100-SXM4-80GB", Aliases: []string{"a100", "a100-80gb", "a100-sxm4-80gb"}, TotalGiB: 79.15, PeakFLOPS: 312e12, BandwidthBps: 2.039e12, EtaMFU: 0.65, IsA100: true},
	{Name: "a100-40g", DeviceName: "NVIDIA A100-SXM4-40GB", Aliases: []string{"a100-40gb", "a100-sxm4-40gb"}, TotalGiB: 39.39, PeakFLOPS: 312e12, BandwidthBps: 1.555e12, EtaMFU: 0.65, IsA100: true},
	{Name: "h100-sxm", DeviceName: "NVIDIA H100 80GB HBM3", Aliases: []string{"h100", "h100-80g", "h100-80gb"}, TotalGiB: 79.19, PeakFLOPS: 989e12, BandwidthBps: 3.35e12, EtaMFU: 0.5},
	{Name: "h200", DeviceName: "NVIDIA H200", Aliases: []string{"h200-141g", "h200-sxm"}, TotalGiB: 140.4, PeakFLOPS: 989e12, BandwidthBps: 4.8e12, EtaMFU: 0.5},
	{Name: "l40s", DeviceName: "NVIDIA L40S", Aliases: []string{"l40-s"}, TotalGiB: 44.4, PeakFLOPS: 362e12, BandwidthBps: 0.864e12, EtaMFU: 0.5},
	{Name: "l4", DeviceName: "NVIDIA L4", TotalGiB: 22.0, PeakFLOPS: 121e12, BandwidthBps: 0.3e12, EtaMFU: 0.5},
}

// GPUNames returns the canonical names of the built-in GPUs.
func GPUNames() []string {
	names := make([]string, len(builtinGPUs))
	for i, g := range builtinGPUs {
		names[i] = g.Name
	}
	return names
}

// LookupGPU finds a built-in GPU by name or alias, case-insensitively.
func LookupGPU(name string) (GPU, error) {
	for _, g := range builtinGPUs {
		if strings.EqualFold(g.Name, name) {
			return g, nil
		}
		for _, a := range g.Aliases {
			if strings.EqualFold(a, name) {
				return g, nil
			}
		}
	}
	return GPU{}, fmt.Errorf("--gpu %q: unknown GPU; accepted: %s", name, strings.Join(GPUNames(), ", "))
}

// BatchDefaults returns vLLM's defaults for max_num_batched_tokens and
// max_num_seqs on g (see batchDefaults).
func (g GPU) BatchDefaults() (maxBatchedTokens, maxSeqs int) { return g.batchDefaults() }

// batchDefaults returns vLLM's `vllm serve` defaults for max_num_batched_tokens
// and max_num_seqs: 8192 / 1024 on GPUs with at least 70 GiB that are not
// A100, otherwise 2048 / 256 (vllm/engine/arg_utils.py get_batch_defaults).
func (g GPU) batchDefaults() (maxBatchedTokens, maxSeqs int) {
	if g.TotalGiB >= 70 && !g.IsA100 {
		return 8192, 1024
	}
	return 2048, 256
}
