package kvcalc

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// GiB is 2^30 bytes, vLLM's GiB_bytes.
const GiB = 1 << 30

// DefaultBlockSize is vLLM's KV block size on CUDA, in tokens.
const DefaultBlockSize = 16

// maxBlockSize bounds --block-size (vLLM accepts up to 256 on CUDA; hybrid
// models may raise it further, so the bound is loose).
const maxBlockSize = 1 << 12

// maxTensorParallel bounds --tensor-parallel-size.
const maxTensorParallel = 1 << 10

// KVCacheDTypes lists the accepted --kv-cache-dtype values.
var kvCacheDTypes = []string{"auto", "bfloat16", "float16", "float32", "fp8", "fp8_e4m3", "fp8_e5m2"}

// RuntimeDTypeBytes returns the element size vLLM runs a checkpoint of
// dtype in under `--dtype auto` (vllm/config/model.py _resolve_auto_dtype):
// bfloat16 and float16 as they are, and float32 (or no dtype at all, which
// vLLM reads as float32) downcast to the platform's preferred 16-bit type.
// Every accepted dtype therefore runs in 2-byte elements.
func RuntimeDTypeBytes(dtype string) int {
	_ = dtype // bfloat16, float16, float32 and "" all run in 16 bits
	return 2
}

// KVDTypeBytes returns the size of one KV element for --kv-cache-dtype
// kvDType with a model running in modelDTypeBytes-byte elements: auto uses
// the model's dtype, fp8 variants take 1 byte, bfloat16/float16 2, float32 4.
func KVDTypeBytes(kvDType string, modelDTypeBytes int) (int, error) {
	switch kvDType {
	case "auto":
		return modelDTypeBytes, nil
	case "fp8", "fp8_e4m3", "fp8_e5m2":
		return 1, nil
	case "bfloat16", "float16", "half":
		return 2, nil
	case "float32", "float":
		return 4, nil
	}
	return 0, fmt.Errorf("--kv-cache-dtype %q: accepted: %s", kvDType, strings.Join(kvCacheDTypes, ", "))
}

// KVHeadsPerRank returns the KV heads one tensor-parallel rank holds:
// max(1, heads/tp), as vLLM's ModelConfig.get_num_kv_heads (a KV head is
// replicated when there are fewer heads than ranks).
func KVHeadsPerRank(kvHeads, tp int) int { return max(1, kvHeads/tp) }

// Layout is the KV-cache layout of one GPU (one tensor-parallel rank):
// what vLLM's per-layer KV cache specs (vllm/v1/kv_cache_interface.py)
// describe for a decoder-only transformer.
type Layout struct {
	// Layers is the number of attention layers.
	Layers int
	// KVHeads is the KV heads per rank (see KVHeadsPerRank).
	KVHeads int
	// HeadDim is the head size.
	HeadDim int
	// DTypeBytes is the size of one KV element.
	DTypeBytes int
	// BlockSize is the tokens per block (0 means DefaultBlockSize).
	BlockSize int
	// SlidingWindow is the window of the sliding-window layers (0: none).
	SlidingWindow int
	// FullLayers is the number of full-attention layers when SlidingWindow
	// is set; 0 means every layer slides.
	FullLayers int
}

// LayoutOf returns the per-rank layout of c under --kv-cache-dtype kvDType,
// --tensor-parallel-size tp and --block-size blockSize.
func LayoutOf(c Config, kvDType string, tp, blockSize int) (Layout, error) {
	if tp < 1 || tp > maxTensorParallel {
		return Layout{}, fmt.Errorf("--tensor-parallel-size %d: must be 1..%d", tp, maxTensorParallel)
	}
	if blockSize < 1 || blockSize > maxBlockSize {
		return Layout{}, fmt.Errorf("--block-size %d: must be 1..%d (vLLM's CUDA default is 16)", blockSize, maxBlockSize)
	}
	if c.Heads%tp != 0 {
		return Layout{}, fmt.Errorf("--tensor-parallel-size %d: num_attention_heads %d must be a multiple of it (vLLM refuses to start)", tp, c.Heads)
	}
	db, err := KVDTypeBytes(kvDType, RuntimeDTypeBytes(c.DType))
	if err != nil {
		return Layout{}, err
	}
	return Layout{
		Layers:        c.Layers,
		KVHeads:       KVHeadsPerRank(c.KVHeads, tp),
		HeadDim:       c.HeadDim,
		DTypeBytes:    db,
		BlockSize:     blockSize,
		SlidingWindow: c.SlidingWindow,
		FullLayers:    c.FullLayers,
	}, nil
}

func (l Layout) blockSize() int {
	if l.BlockSize > 0 {
		return l.BlockSize
	}
	return DefaultBlockSize
}

// BytesPerToken returns 2·layers·kv_heads·head_dim·dtype bytes: K and V of
// one token in every layer.
func (l Layout) BytesPerToken() int64 {
	return 2 * int64(l.Layers) * int64(l.KVHeads) * int64(l.HeadDim) * int64(l.DTypeBytes)
}

// PageBytes returns one layer's block, AttentionSpec.page_size_bytes:
// 2·block_size·kv_heads·head_dim·dtype bytes.
func (l Layout) PageBytes() int64 {
	return 2 * int64(l.blockSize()) * int64(l.KVHeads) * int64(l.HeadDim) * int64(l.DTypeBytes)
}

// group is one KV cache group: layers that share a block table.
type group struct{ sliding bool }

// groups returns vLLM's KV cache groups and the layers per group
// (kv_cache_utils.py get_kv_cache_groups). A model whose layers all have
// one spec is one group of every layer. A hybrid model (full and sliding
// layers) is split into groups of equal size: the smaller type's layer
// count, or the larger's when it is under 1.5× the smaller, with each type
// taking ⌈its layers / group size⌉ groups.
func (l Layout) groups() (groupSize int, gs []group) {
	sliding := l.Layers - l.FullLayers
	if l.SlidingWindow == 0 {
		return l.Layers, []group{{}}
	}
	if l.FullLayers == 0 || sliding <= 0 {
		return l.Layers, []group{{sliding: sliding > 0}}
	}
	lo, hi := min(l.FullLayers, sliding), max(l.FullLayers, sliding)
	groupSize = lo
	if float64(hi) < float64(lo)*1.5 {
		groupSize = hi
	}
	for range cdiv(l.FullLayers, groupSize) {
		gs = append(gs, group{})
	}
	for range cdiv(sliding, groupSize) {
		gs = append(gs, group{sliding: true})
	}
	return groupSize, gs
}

// NumGroups returns the number of KV cache groups.
func (l Layout) NumGroups() int {
	_, gs := l.groups()
	return len(gs)
}

// blocksFor returns the blocks one layer of kind g needs for a request of
// maxModelLen tokens (KVCacheSpec.max_memory_usage_bytes / page size): all
// of it for full attention; for a sliding window the last window−1 tokens
// plus one step's maxBatchedTokens, capped at maxModelLen, plus one block
// because the window need not start on a block boundary.
func (l Layout) blocksFor(g group, maxModelLen, maxBatchedTokens int) int {
	bs := l.blockSize()
	if !g.sliding {
		return cdiv(maxModelLen, bs)
	}
	return cdiv(min(l.SlidingWindow-1+maxBatchedTokens, maxModelLen), bs) + 1
}

// BlocksPerRequest returns the blocks one request of maxModelLen tokens
// reserves, summed over the KV cache groups: the denominator of vLLM's
// "Maximum concurrency" (get_max_concurrency_for_kv_cache_config).
func (l Layout) BlocksPerRequest(maxModelLen, maxBatchedTokens int) int {
	_, gs := l.groups()
	n := 0
	for _, g := range gs {
		n += l.blocksFor(g, maxModelLen, maxBatchedTokens)
	}
	return n
}

// RequestBytes returns the KV memory one request of maxModelLen tokens
// needs, which vLLM checks the budget against at startup
// (_max_memory_usage_bytes_from_groups): group size × page × blocks.
func (l Layout) RequestBytes(maxModelLen, maxBatchedTokens int) int64 {
	size, _ := l.groups()
	return int64(size) * l.PageBytes() * int64(l.BlocksPerRequest(maxModelLen, maxBatchedTokens))
}

// BlockBytes returns the memory one block index takes across the layers
// that share it: page × group size (V0: CacheEngine.get_cache_block_size).
func (l Layout) BlockBytes() int64 {
	size, _ := l.groups()
	return int64(size) * l.PageBytes()
}

// NumBlocks returns ⌊available / page / group size⌋, vLLM's get_num_blocks
// (V0: ⌊available / cache block size⌋), never negative.
func (l Layout) NumBlocks(availableBytes float64) int {
	if availableBytes <= 0 {
		return 0
	}
	size, _ := l.groups()
	return int(math.Floor(math.Floor(availableBytes/float64(l.PageBytes())) / float64(size)))
}

// Tokens returns "GPU KV cache size" in tokens: ⌊blocks / groups⌋ × block
// size (_report_kv_cache_config).
func (l Layout) Tokens(numBlocks int) int {
	return numBlocks / l.NumGroups() * l.blockSize()
}

// BlocksFromTokens inverts Tokens for a uniform layout: the num_gpu_blocks
// behind a logged "GPU KV cache size". For hybrid layouts it returns the
// smallest block count that logs those tokens.
func (l Layout) BlocksFromTokens(tokens int) (int, error) {
	bs := l.blockSize()
	if tokens <= 0 || tokens%bs != 0 {
		return 0, fmt.Errorf("--kv-cache-tokens %d: must be a positive multiple of --block-size %d (vLLM logs whole blocks)", tokens, bs)
	}
	return tokens / bs * l.NumGroups(), nil
}

// MaxConcurrency returns vLLM V1's "Maximum concurrency for N tokens per
// request": blocks / blocks one max_model_len request reserves.
func (l Layout) MaxConcurrency(numBlocks, maxModelLen, maxBatchedTokens int) float64 {
	return float64(numBlocks) / float64(l.BlocksPerRequest(maxModelLen, maxBatchedTokens))
}

// MaxConcurrencyV0 returns vLLM V0's (and V1 before 0.9's) figure:
// blocks × block size / max_model_len, with no block rounding.
func MaxConcurrencyV0(numBlocks, blockSize, maxModelLen int) float64 {
	return float64(numBlocks) * float64(blockSize) / float64(maxModelLen)
}

// CPUBlocks returns V0's "# CPU blocks": ⌊swap space / cache block size⌋.
func (l Layout) CPUBlocks(swapBytes int64) int {
	return int(swapBytes / l.BlockBytes())
}

// Validate reports an out-of-range layout field.
func (l Layout) Validate() error {
	for _, f := range []struct {
		name string
		v    int
		hi   int
	}{
		{"layers", l.Layers, maxLayers}, {"kv heads", l.KVHeads, maxHeads}, {"head dim", l.HeadDim, maxHeadDim},
		{"dtype bytes", l.DTypeBytes, 8}, {"block size", l.blockSize(), maxBlockSize},
	} {
		if f.v < 1 || f.v > f.hi {
			return fmt.Errorf("KV layout %s %d: must be 1..%d", f.name, f.v, f.hi)
		}
	}
	if l.SlidingWindow < 0 || l.FullLayers < 0 || l.FullLayers > l.Layers {
		return fmt.Errorf("KV layout sliding window %d with %d full layers of %d: out of range", l.SlidingWindow, l.FullLayers, l.Layers)
	}
	return nil
}

// Inputs are the inputs of vLLM V1's KV-capacity computation
// (vllm/v1/worker/gpu_worker.py determine_available_memory, then
// vllm/v1/core/kv_cache_utils.py get_kv_cache_configs), all per GPU.
type Inputs struct {
	TotalGiB      float64 // torch's total GPU memory
	Utilization   float64 // --gpu-memory-utilization
	WeightsGiB    float64 // "Model loading took"
	ActivationGiB float64 // torch peak increase during the profile run
	NonTorchGiB   float64 // CUDA context, NCCL, cuBLAS
	// KVCacheMemoryBytes, when > 0, replaces the profiled budget (a
	// measured "Available KV cache memory", or --kv-cache-memory-bytes).
	KVCacheMemoryBytes int64
	Layout             Layout
	MaxModelLen        int
	// MaxNumBatchedTokens sizes a sliding-window request's blocks.
	MaxNumBatchedTokens int
}

// Plan is the KV-cache layout vLLM logs at startup.
type Plan struct {
	// RequestedGiB is total × utilisation.
	RequestedGiB float64
	// AvailableBytes is the KV budget ("Available KV cache memory").
	AvailableBytes float64
	// NumBlocks is num_gpu_blocks.
	NumBlocks int
	// Tokens is "GPU KV cache size" in tokens.
	Tokens int
	// BlocksPerRequest is the blocks one max_model_len request reserves.
	BlocksPerRequest int
	// MaxConcurrency is "Maximum concurrency for max_model_len tokens per request".
	MaxConcurrency float64
}

// AvailableGiB returns the KV budget in GiB.
func (p Plan) AvailableGiB() float64 { return p.AvailableBytes / GiB }

// Error is a KV-capacity startup failure; Error returns vLLM's ValueError
// text (without its link to the docs).
type Error struct {
	// EstimatedMaxModelLen is the longest max_model_len that fits (0: none).
	EstimatedMaxModelLen int
	msg                  string
}

func (e *Error) Error() string { return e.msg }

// AvailableBytes returns the KV budget: the given KVCacheMemoryBytes, else
// ⌊(total × utilisation − weights − activation peak − non-torch) · GiB⌋.
func (in Inputs) AvailableBytes() float64 {
	if in.KVCacheMemoryBytes > 0 {
		return float64(in.KVCacheMemoryBytes)
	}
	return math.Floor((in.TotalGiB*in.Utilization - in.WeightsGiB - in.ActivationGiB - in.NonTorchGiB) * GiB)
}

// PlanKV applies vLLM V1's formula:
//
//	available  = util·total − weights − peak_activation − non_torch
//	num_blocks = ⌊available / page_bytes / layers_per_group⌋
//	tokens     = ⌊num_blocks / groups⌋ · block_size
//	max_concurrency = num_blocks / blocks_per_max_len_request
//
// It fails, with vLLM's text, when nothing is left for the cache or when one
// max_model_len request does not fit.
func PlanKV(in Inputs) (Plan, error) {
	l := in.Layout
	if err := l.Validate(); err != nil {
		return Plan{}, err
	}
	if in.MaxModelLen < 1 || in.MaxModelLen > maxPositions {
		return Plan{}, fmt.Errorf("max_model_len %d: must be 1..%d", in.MaxModelLen, maxPositions)
	}
	p := Plan{RequestedGiB: in.TotalGiB * in.Utilization, AvailableBytes: in.AvailableBytes()}
	if err := CheckFits(l, p.AvailableBytes, in.MaxModelLen, in.MaxNumBatchedTokens); err != nil {
		return p, err
	}
	p.NumBlocks = l.NumBlocks(p.AvailableBytes)
	p.Tokens = l.Tokens(p.NumBlocks)
	p.BlocksPerRequest = l.BlocksPerRequest(in.MaxModelLen, in.MaxNumBatchedTokens)
	p.MaxConcurrency = l.MaxConcurrency(p.NumBlocks, in.MaxModelLen, in.MaxNumBatchedTokens)
	return p, nil
}

// CheckFits is vLLM's _check_enough_kv_cache_memory: an error when the
// budget is not positive, or when one maxModelLen request needs more than
// it, then naming the longest max_model_len that fits (binary search, as
// estimate_max_model_len).
func CheckFits(l Layout, availableBytes float64, maxModelLen, maxBatchedTokens int) error {
	if availableBytes <= 0 {
		return &Error{msg: "No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine."}
	}
	needed := float64(l.RequestBytes(maxModelLen, maxBatchedTokens))
	if needed <= availableBytes {
		return nil
	}
	est := 0
	for lo, hi := 1, maxModelLen; lo <= hi; {
		mid := (lo + hi) / 2
		if float64(l.RequestBytes(mid, maxBatchedTokens)) <= availableBytes {
			est, lo = mid, mid+1
		} else {
			hi = mid - 1
		}
	}
	estMsg := ""
	if est > 0 {
		estMsg = fmt.Sprintf("Based on the available memory, the estimated maximum model length is %d.", est)
	}
	return &Error{EstimatedMaxModelLen: est, msg: fmt.Sprintf("To serve at least one request with the models's max seq len (%d), (%.2f GiB KV cache is needed, which is larger than the available KV cache memory (%.2f GiB). %s Try increasing `gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine.",
		maxModelLen, needed/GiB, availableBytes/GiB, estMsg)}
}

// CommaInt formats n with thousands separators, as Python's f"{n:,}".
func CommaInt(n int) string {
	s := strconv.Itoa(n)
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	var b strings.Builder
	for i, c := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	if neg {
		return "-" + b.String()
	}
	return b.String()
}

// cdiv returns ⌈a/b⌉ for non-negative a and positive b.
func cdiv(a, b int) int { return (a + b - 1) / b }

// ConcurrencyFromTokens returns V1's maximum concurrency given the "GPU KV
// cache size" in tokens that a real vLLM logged.
func (l Layout) ConcurrencyFromTokens(tokens, maxModelLen, maxBatchedTokens int) (float64, error) {
	blocks, err := l.BlocksFromTokens(tokens)
	if err != nil {
		return 0, err
	}
	if maxModelLen < 1 || maxModelLen > maxPositions {
		return 0, fmt.Errorf("max_model_len %d: must be 1..%d", maxModelLen, maxPositions)
	}
	return l.MaxConcurrency(blocks, maxModelLen, maxBatchedTokens), nil
}
