package sim

import (
	"fmt"
	"path"
	"sort"
	"strings"

	"github.com/ttftlab/ttftlab/internal/kvcalc"
)

// Model is the part of a Hugging Face config.json that the simulator needs.
// All built-in models are bf16 decoder-only transformers.
type Model struct {
	// Name is the Hugging Face repository id, e.g. "Qwen/Qwen2.5-1.5B-Instruct".
	Name string
	// Architecture is the HF architectures[0] entry, e.g. "Qwen2ForCausalLM".
	Architecture string
	// Layers is num_hidden_layers.
	Layers int
	// Hidden is hidden_size.
	Hidden int
	// Heads is num_attention_heads.
	Heads int
	// KVHeads is num_key_value_heads.
	KVHeads int
	// HeadDim is head_dim (hidden_size / num_attention_heads when absent).
	HeadDim int
	// FFN is intermediate_size.
	FFN int
	// Vocab is vocab_size.
	Vocab int
	// TiedEmbeddings is tie_word_embeddings: the lm_head shares the embedding.
	TiedEmbeddings bool
	// QKVBias reports whether the q, k and v projections carry a bias (Qwen2).
	QKVBias bool
	// MaxPositionEmbeddings is max_position_embeddings, vLLM's default max_model_len.
	MaxPositionEmbeddings int
	// SlidingWindow is the effective sliding window (0 when none); it only
	// changes the per-request KV budget vLLM uses for "Maximum concurrency".
	SlidingWindow int
	// FullLayers is how many layers attend globally although SlidingWindow
	// is set (Gemma-2 interleaves); 0 means every layer slides.
	FullLayers int
	// DTypeBytes is the size of one parameter or KV element (torch_dtype):
	// 2 for bfloat16 and float16, 4 for float32; 0 means 2.
	DTypeBytes int
	// ExtraParams are weights outside the language model (a vision tower
	// and projector): loaded at startup and counted in "Model loading
	// took", but not read by a text-only step.
	ExtraParams int64
}

// bytesPerParam is the size of one bf16 parameter or KV element.
const bytesPerParam = 2

// dtypeBytes returns the element size of the model's weights.
func (m Model) dtypeBytes() int64 {
	if m.DTypeBytes > 0 {
		return int64(m.DTypeBytes)
	}
	return bytesPerParam
}

// KVConfig returns m as the KV calculator's config, so that the simulator
// and `ttftlab kv` share one implementation of vLLM's arithmetic.
func (m Model) KVConfig() kvcalc.Config {
	dtype := ""
	switch m.DTypeBytes {
	case 2:
		dtype = "bfloat16"
	case 4:
		dtype = "float32"
	}
	return kvcalc.Config{
		Name: m.Name, Architecture: m.Architecture,
		Layers: m.Layers, Hidden: m.Hidden, Heads: m.Heads, KVHeads: m.KVHeads, HeadDim: m.HeadDim,
		FFN: m.FFN, Vocab: m.Vocab, TiedEmbeddings: m.TiedEmbeddings, QKVBias: m.QKVBias,
		MaxPositionEmbeddings: m.MaxPositionEmbeddings, SlidingWindow: m.SlidingWindow, FullLayers: m.FullLayers,
		DType: dtype, ExtraParams: m.ExtraParams,
	}
}

// KVLayout returns the model's KV layout on one GPU with vLLM's defaults:
// --kv-cache-dtype auto, no tensor parallelism, 16-token blocks.
func (m Model) KVLayout() kvcalc.Layout {
	c := m.KVConfig()
	return kvcalc.Layout{
		Layers: c.Layers, KVHeads: c.KVHeads, HeadDim: c.HeadDim,
		DTypeBytes: kvcalc.RuntimeDTypeBytes(c.DType), BlockSize: BlockSize,
		SlidingWindow: c.SlidingWindow, FullLayers: c.FullLayers,
	}
}

// NonEmbeddingParams returns the parameter count of the transformer layers
// and the final norm, excluding the embedding and the lm_head.
func (m Model) NonEmbeddingParams() int64 { return m.KVConfig().NonEmbeddingParams() }

// LMHeadParams returns V·d, the parameters the lm_head multiplies by per
// sequence (read every step whether or not they are tied to the embedding).
func (m Model) LMHeadParams() int64 { return m.KVConfig().LMHeadParams() }

// TotalParams returns the parameter count as Hugging Face reports it.
func (m Model) TotalParams() int64 { return m.KVConfig().TotalParams() }

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
	{Name: "Qwen/Qwen2.5-0.5B-Instruct", Architecture: "Qwen2ForCausalLM", Layers: 24, Hidden: 896, Heads: 14, KVHeads: 2, HeadDim: 64, FFN: 4864, Vocab: 151936, TiedEmbeddings: true, QKVBias: true, MaxPositionEmbeddings: 32768},
	{Name: "Qwen/Qwen2.5-1.5B-Instruct", Architecture: "Qwen2ForCausalLM", Layers: 28, Hidden: 1536, Heads: 12, KVHeads: 2, HeadDim: 128, FFN: 8960, Vocab: 151936, TiedEmbeddings: true, QKVBias: true, MaxPositionEmbeddings: 32768},
	{Name: "Qwen/Qwen2.5-3B-Instruct", Architecture: "Qwen2ForCausalLM", Layers: 36, Hidden: 2048, Heads: 16, KVHeads: 2, HeadDim: 128, FFN: 11008, Vocab: 151936, TiedEmbeddings: true, QKVBias: true, MaxPositionEmbeddings: 32768},
	{Name: "Qwen/Qwen2.5-7B-Instruct", Architecture: "Qwen2ForCausalLM", Layers: 28, Hidden: 3584, Heads: 28, KVHeads: 4, HeadDim: 128, FFN: 18944, Vocab: 152064, TiedEmbeddings: false, QKVBias: true, MaxPositionEmbeddings: 32768},
	{Name: "Qwen/Qwen2.5-14B-Instruct", Architecture: "Qwen2ForCausalLM", Layers: 48, Hidden: 5120, Heads: 40, KVHeads: 8, HeadDim: 128, FFN: 13824, Vocab: 152064, TiedEmbeddings: false, QKVBias: true, MaxPositionEmbeddings: 32768},
	{Name: "Qwen/Qwen2.5-32B-Instruct", Architecture: "Qwen2ForCausalLM", Layers: 64, Hidden: 5120, Heads: 40, KVHeads: 8, HeadDim: 128, FFN: 27648, Vocab: 152064, TiedEmbeddings: false, QKVBias: true, MaxPositionEmbeddings: 32768},
	{Name: "microsoft/Phi-3-mini-4k-instruct", Architecture: "Phi3ForCausalLM", Layers: 32, Hidden: 3072, Heads: 32, KVHeads: 32, HeadDim: 96, FFN: 8192, Vocab: 32064, TiedEmbeddings: false, MaxPositionEmbeddings: 4096, SlidingWindow: 2047},
	{Name: "meta-llama/Llama-3.2-1B-Instruct", Architecture: "LlamaForCausalLM", Layers: 16, Hidden: 2048, Heads: 32, KVHeads: 8, HeadDim: 64, FFN: 8192, Vocab: 128256, TiedEmbeddings: true, MaxPositionEmbeddings: 131072},
	{Name: "meta-llama/Llama-3.2-3B-Instruct", Architecture: "LlamaForCausalLM", Layers: 28, Hidden: 3072, Heads: 24, KVHeads: 8, HeadDim: 128, FFN: 8192, Vocab: 128256, TiedEmbeddings: true, MaxPositionEmbeddings: 131072},
	{Name: "meta-llama/Llama-3.1-8B-Instruct", Architecture: "LlamaForCausalLM", Layers: 32, Hidden: 4096, Heads: 32, KVHeads: 8, HeadDim: 128, FFN: 14336, Vocab: 128256, TiedEmbeddings: false, MaxPositionEmbeddings: 131072},
	// The text model is Mistral-7B (vocab 32064); ExtraParams is the
	// CLIP ViT-L/14-336 vision tower (303,507,456) plus the 1024→4096→4096
	// projector and the image_newline vector (20,983,808).
	{Name: "llava-hf/llava-v1.6-mistral-7b-hf", Architecture: "LlavaNextForConditionalGeneration", Layers: 32, Hidden: 4096, Heads: 32, KVHeads: 8, HeadDim: 128, FFN: 14336, Vocab: 32064, TiedEmbeddings: false, MaxPositionEmbeddings: 32768, ExtraParams: 324_491_264},
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
