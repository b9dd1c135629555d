package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/ttftlab/ttftlab/internal/kvcalc"
	"github.com/ttftlab/ttftlab/internal/sim"
)

// kvFlags are the inputs of `ttftlab kv`.
type kvFlags struct {
	model, modelConfig, gpu, kvDType, maxModelLen string
	gpuGiB, util, kvCacheGiB, swapGiB             float64
	blockSize, tp, maxBatched, maxSeqs, kvTokens  int
	asJSON                                        bool
}

// kvRow is one max-model-len of the table.
type kvRow struct {
	MaxModelLen      int      `json:"max_model_len"`
	BlocksPerRequest int      `json:"blocks_per_request"`
	KVBytesRequest   int64    `json:"kv_bytes_per_request"`
	Fits             bool     `json:"fits"`
	MaxConcurrency   *float64 `json:"max_concurrency"`
	V0MaxConcurrency *float64 `json:"v0_max_concurrency"`
	Error            string   `json:"error,omitempty"`
}

// kvReport is `ttftlab kv --json`.
type kvReport struct {
	Model                string   `json:"model"`
	GPU                  *string  `json:"gpu"`
	GPUMemoryGiB         *float64 `json:"gpu_memory_gib"`
	GPUMemoryUtilization float64  `json:"gpu_memory_utilization"`
	TensorParallelSize   int      `json:"tensor_parallel_size"`
	BlockSize            int      `json:"block_size"`
	KVCacheDType         string   `json:"kv_cache_dtype"`
	KVDTypeBytes         int      `json:"kv_dtype_bytes"`
	NumLayers            int      `json:"num_layers"`
	NumKVHeads           int      `json:"num_kv_heads_per_gpu"`
	HeadDim              int      `json:"head_dim"`
	SlidingWindow        *int     `json:"sliding_window"`
	KVCacheGroups        int      `json:"kv_cache_groups"`
	KVBytesPerToken      int64    `json:"kv_bytes_per_token"`
	BlockBytes           int64    `json:"block_bytes"`
	MaxNumBatchedTokens  int      `json:"max_num_batched_tokens"`
	MaxNumSeqs           int      `json:"max_num_seqs"`
	WeightsBytes         *float64 `json:"weights_bytes_estimate"`
	ActivationBytes      *float64 `json:"activation_bytes_estimate"`
	NonTorchBytes        *float64 `json:"non_torch_bytes_estimate"`
	KVCacheBytes         float64  `json:"kv_cache_bytes"`
	KVCacheBytesSource   string   `json:"kv_cache_bytes_source"`
	NumGPUBlocks         *int     `json:"num_gpu_blocks"`
	NumCPUBlocks         *int     `json:"num_cpu_blocks"`
	KVCacheTokens        *int     `json:"kv_cache_tokens"`
	MaxModelLen          int      `json:"max_model_len"`
	MaxConcurrency       *float64 `json:"max_concurrency"`
	V0MaxConcurrency     *float64 `json:"v0_max_concurrency"`
	Error                string   `json:"error,omitempty"`
	V1Log                []string `json:"v1_log"`
	V0Log                []string `json:"v0_log"`
	Rows                 []kvRow  `json:"rows"`
}

// runKV runs `ttftlab kv`: vLLM's KV-cache capacity for a model on a GPU.
// It prints the report, then fails when vLLM would refuse to start with
// one of the given max-model-len values.
func runKV(_ context.Context, args []string, stdout, stderr io.Writer) error {
	var f kvFlags
	fs := newFlagSet("kv", stderr)
	fs.Usage = func() {
		helpHeader(stderr, "kv")
		fmt.Fprintf(stderr, `
Weights and the activation peak are estimates; --kv-cache-gib (vLLM's logged
"Available KV cache memory") or --kv-cache-tokens (its "GPU KV cache size")
replace them with a measured figure. See docs/kv.md.
Models: %s
GPUs: %s
`, strings.Join(sim.ModelNames(), ", "), strings.Join(sim.GPUNames(), ", "))
		printFlags(stderr, fs)
	}
	fs.StringVar(&f.model, "model", "", "built-in model `name` (see the list above)")
	fs.StringVar(&f.modelConfig, "model-config", "", "Hugging Face config.json `path` (file or directory)")
	fs.StringVar(&f.gpu, "gpu", "", "built-in `GPU` whose memory to use")
	fs.Float64Var(&f.gpuGiB, "gpu-memory-gib", 0, "total GPU memory in `GiB` as torch reports it (instead of --gpu)")
	fs.Float64Var(&f.util, "gpu-memory-utilization", 0.9, "`fraction` of GPU memory vLLM may use, in (0, 1]")
	fs.StringVar(&f.maxModelLen, "max-model-len", "", "context length in `tokens`, or a comma list for a table (default: the model's max_position_embeddings)")
	fs.IntVar(&f.blockSize, "block-size", kvcalc.DefaultBlockSize, "KV block size in `tokens`")
	fs.StringVar(&f.kvDType, "kv-cache-dtype", "auto", "KV element `dtype`: auto, bfloat16, float16, float32, fp8, fp8_e4m3, fp8_e5m2")
	fs.IntVar(&f.tp, "tensor-parallel-size", 1, "tensor-parallel `ranks`; figures are per GPU")
	fs.IntVar(&f.maxBatched, "max-num-batched-tokens", 0, "token budget per step, sizing the activation estimate and sliding-window requests (0: vLLM's default for the GPU)")
	fs.IntVar(&f.maxSeqs, "max-num-seqs", 0, "running sequences, sizing the activation estimate (0: vLLM's default for the GPU)")
	fs.Float64Var(&f.kvCacheGiB, "kv-cache-gib", 0, "measured KV budget in `GiB` (vLLM's \"Available KV cache memory\"), replacing the estimate")
	fs.IntVar(&f.kvTokens, "kv-cache-tokens", 0, "measured KV `tokens` (vLLM's \"GPU KV cache size\"): compute the concurrency from them")
	fs.Float64Var(&f.swapGiB, "swap-space-gib", 4, "V0's CPU swap space per GPU in `GiB`, for \"# CPU blocks\"")
	fs.BoolVar(&f.asJSON, "json", false, "print one JSON object instead of the table")
	if err := parseFlags(fs, args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("kv: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("kv: unexpected argument %q; flags are --name value or --name=value", fs.Arg(0))
	}
	rep, err := kvCompute(f)
	if err != nil {
		return fmt.Errorf("kv: %w", err)
	}
	if f.asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fmt.Errorf("kv: %w", err)
		}
	} else if err := writeKVTable(stdout, rep); err != nil {
		return fmt.Errorf("kv: %w", err)
	}
	for _, r := range rep.Rows {
		if !r.Fits {
			return fmt.Errorf("kv: vLLM would refuse to start with --max-model-len %d: %s", r.MaxModelLen, r.Error)
		}
	}
	return nil
}

// kvCompute validates f and computes the report.
func kvCompute(f kvFlags) (kvReport, error) {
	var m sim.Model
	var err error
	switch {
	case f.model != "" && f.modelConfig != "":
		return kvReport{}, fmt.Errorf("--model %q and --model-config %q: give one of them", f.model, f.modelConfig)
	case f.modelConfig != "":
		m, err = sim.LoadHFConfig(f.modelConfig)
	case f.model != "":
		m, err = sim.LookupModel(f.model)
	default:
		return kvReport{}, errors.New("no model: give --model NAME (a built-in model) or --model-config PATH (a config.json)")
	}
	if err != nil {
		return kvReport{}, err
	}
	rep := kvReport{Model: m.Name, GPUMemoryUtilization: f.util, TensorParallelSize: f.tp, BlockSize: f.blockSize, KVCacheDType: f.kvDType}

	measured := f.kvCacheGiB != 0 || f.kvTokens != 0
	if f.kvCacheGiB != 0 && f.kvTokens != 0 {
		return kvReport{}, fmt.Errorf("--kv-cache-gib %g and --kv-cache-tokens %d: give one of them", f.kvCacheGiB, f.kvTokens)
	}
	if f.kvCacheGiB < 0 || math.IsNaN(f.kvCacheGiB) || math.IsInf(f.kvCacheGiB, 0) || f.kvCacheGiB > 1<<20 {
		return kvReport{}, fmt.Errorf("--kv-cache-gib %g: must be a positive number of GiB (vLLM's \"Available KV cache memory\")", f.kvCacheGiB)
	}
	if f.kvTokens < 0 {
		return kvReport{}, fmt.Errorf("--kv-cache-tokens %d: must be positive (vLLM's \"GPU KV cache size\")", f.kvTokens)
	}
	if !(f.util > 0 && f.util <= 1) {
		return kvReport{}, fmt.Errorf("--gpu-memory-utilization %g: must be in (0, 1], e.g. 0.9", f.util)
	}
	if f.swapGiB < 0 || math.IsNaN(f.swapGiB) || f.swapGiB > 1<<20 {
		return kvReport{}, fmt.Errorf("--swap-space-gib %g: must be 0 or a positive number of GiB (vLLM's default is 4)", f.swapGiB)
	}
	defBatched, defSeqs := 8192, 1024 // vLLM's defaults on ≥70 GiB GPUs
	var totalGiB float64
	switch {
	case f.gpu != "" && f.gpuGiB != 0:
		return kvReport{}, fmt.Errorf("--gpu %q and --gpu-memory-gib %g: give one of them", f.gpu, f.gpuGiB)
	case f.gpu != "":
		g, err := sim.LookupGPU(f.gpu)
		if err != nil {
			return kvReport{}, err
		}
		totalGiB = g.TotalGiB
		defBatched, defSeqs = g.BatchDefaults()
		rep.GPU = &g.Name
		rep.GPUMemoryGiB = &totalGiB
	case f.gpuGiB != 0:
		if !(f.gpuGiB > 0 && f.gpuGiB <= 1<<20) {
			return kvReport{}, fmt.Errorf("--gpu-memory-gib %g: must be a positive number of GiB, e.g. 79.19 for an H100", f.gpuGiB)
		}
		totalGiB = f.gpuGiB
		defBatched, defSeqs = sim.GPU{TotalGiB: totalGiB}.BatchDefaults()
		rep.GPUMemoryGiB = &totalGiB
	case !measured:
		return kvReport{}, fmt.Errorf("no GPU: give --gpu NAME (%s) or --gpu-memory-gib GIB, or a measured --kv-cache-gib / --kv-cache-tokens", strings.Join(sim.GPUNames(), ", "))
	}
	if f.maxBatched < 0 {
		return kvReport{}, fmt.Errorf("--max-num-batched-tokens %d: must be positive, or 0 for vLLM's default (%d here)", f.maxBatched, defBatched)
	}
	if f.maxSeqs < 0 {
		return kvReport{}, fmt.Errorf("--max-num-seqs %d: must be positive, or 0 for vLLM's default (%d here)", f.maxSeqs, defSeqs)
	}
	rep.MaxNumBatchedTokens, rep.MaxNumSeqs = cmp0(f.maxBatched, defBatched), cmp0(f.maxSeqs, min(defSeqs, cmp0(f.maxBatched, defBatched)))

	lens, err := parseMaxModelLens(f.maxModelLen, m.MaxPositionEmbeddings)
	if err != nil {
		return kvReport{}, err
	}
	for _, n := range lens {
		if n > m.MaxPositionEmbeddings {
			return kvReport{}, fmt.Errorf("--max-model-len %d: larger than the model's max_position_embeddings %d, which vLLM refuses (unless VLLM_ALLOW_LONG_MAX_MODEL_LEN=1); give at most %d", n, m.MaxPositionEmbeddings, m.MaxPositionEmbeddings)
		}
	}
	c := m.KVConfig()
	l, err := kvcalc.LayoutOf(c, f.kvDType, f.tp, f.blockSize)
	if err != nil {
		return kvReport{}, err
	}
	rep.KVDTypeBytes, rep.NumLayers, rep.NumKVHeads, rep.HeadDim = l.DTypeBytes, l.Layers, l.KVHeads, l.HeadDim
	if l.SlidingWindow > 0 {
		rep.SlidingWindow = &l.SlidingWindow
	}
	rep.KVCacheGroups = l.NumGroups()
	rep.KVBytesPerToken, rep.BlockBytes = l.BytesPerToken(), l.BlockBytes()

	in := kvcalc.Inputs{TotalGiB: totalGiB, Utilization: f.util, Layout: l, MaxNumBatchedTokens: rep.MaxNumBatchedTokens}
	var numBlocks int
	switch {
	case f.kvTokens != 0:
		if numBlocks, err = l.BlocksFromTokens(f.kvTokens); err != nil {
			return kvReport{}, err
		}
		rep.KVCacheBytes, rep.KVCacheBytesSource = float64(int64(numBlocks)*l.BlockBytes()), "given"
	case f.kvCacheGiB != 0:
		in.KVCacheMemoryBytes = int64(f.kvCacheGiB * kvcalc.GiB)
		rep.KVCacheBytes, rep.KVCacheBytesSource = in.AvailableBytes(), "given"
		numBlocks = l.NumBlocks(rep.KVCacheBytes)
	default:
		w := kvcalc.EstimateWeightBytes(c, kvcalc.RuntimeDTypeBytes(c.DType), f.tp)
		a := kvcalc.EstimateActivationBytes(c, rep.MaxNumBatchedTokens, rep.MaxNumSeqs)
		w, a = math.Round(w), math.Round(a)
		n := math.Round(sim.DefaultConfig().Memory.NonTorchGiB * kvcalc.GiB)
		rep.WeightsBytes, rep.ActivationBytes, rep.NonTorchBytes = &w, &a, &n
		in.WeightsGiB, in.ActivationGiB, in.NonTorchGiB = w/kvcalc.GiB, a/kvcalc.GiB, n/kvcalc.GiB
		rep.KVCacheBytes, rep.KVCacheBytesSource = in.AvailableBytes(), "estimate"
		numBlocks = l.NumBlocks(rep.KVCacheBytes)
	}
	if rep.KVCacheBytes > 0 {
		tokens, cpu := l.Tokens(numBlocks), l.CPUBlocks(int64(f.swapGiB*kvcalc.GiB))
		rep.NumGPUBlocks, rep.KVCacheTokens, rep.NumCPUBlocks = &numBlocks, &tokens, &cpu
	}
	for _, n := range lens {
		row := kvRow{MaxModelLen: n, BlocksPerRequest: l.BlocksPerRequest(n, rep.MaxNumBatchedTokens), KVBytesRequest: l.RequestBytes(n, rep.MaxNumBatchedTokens)}
		if err := kvcalc.CheckFits(l, rep.KVCacheBytes, n, rep.MaxNumBatchedTokens); err != nil {
			row.Error = err.Error()
		} else {
			row.Fits = true
			v1 := l.MaxConcurrency(numBlocks, n, rep.MaxNumBatchedTokens)
			row.MaxConcurrency = &v1
			if rep.KVCacheGroups == 1 { // V0 had no hybrid (multi-group) KV cache
				v0 := kvcalc.MaxConcurrencyV0(numBlocks, f.blockSize, n)
				row.V0MaxConcurrency = &v0
			}
		}
		rep.Rows = append(rep.Rows, row)
	}
	first := rep.Rows[0]
	rep.MaxModelLen, rep.MaxConcurrency, rep.V0MaxConcurrency, rep.Error = first.MaxModelLen, first.MaxConcurrency, first.V0MaxConcurrency, first.Error
	rep.V1Log, rep.V0Log = []string{}, []string{}
	if rep.KVCacheBytesSource != "given" || f.kvTokens == 0 {
		rep.V1Log = append(rep.V1Log, fmt.Sprintf("Available KV cache memory: %.2f GiB", rep.KVCacheBytes/kvcalc.GiB))
	}
	if first.Fits {
		rep.V1Log = append(rep.V1Log,
			fmt.Sprintf("GPU KV cache size: %s tokens", kvcalc.CommaInt(*rep.KVCacheTokens)),
			fmt.Sprintf("Maximum concurrency for %s tokens per request: %.2fx", kvcalc.CommaInt(first.MaxModelLen), *first.MaxConcurrency))
		if first.V0MaxConcurrency != nil {
			rep.V0Log = append(rep.V0Log,
				fmt.Sprintf("# GPU blocks: %d, # CPU blocks: %d", numBlocks, *rep.NumCPUBlocks),
				fmt.Sprintf("Maximum concurrency for %d tokens per request: %.2fx", first.MaxModelLen, *first.V0MaxConcurrency))
		}
	} else {
		rep.V1Log = append(rep.V1Log, "ValueError: "+first.Error)
	}
	return rep, nil
}

// cmp0 returns v, or def when v is 0.
func cmp0(v, def int) int {
	if v == 0 {
		return def
	}
	return v
}

// parseMaxModelLens parses --max-model-len: one value or a comma list.
func parseMaxModelLens(s string, def int) ([]int, error) {
	if strings.TrimSpace(s) == "" {
		return []int{def}, nil
	}
	var out []int
	for _, part := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || n < 1 || n > 1<<30 {
			return nil, fmt.Errorf("--max-model-len %q: %q is not a token count in 1..%d; give e.g. 4096 or 2048,4096,8192", s, part, 1<<30)
		}
		out = append(out, n)
	}
	return out, nil
}

// writeKVTable prints the report for people.
func writeKVTable(w io.Writer, r kvReport) error {
	na := func(p *float64, format string) string {
		if p == nil {
			return "n/a"
		}
		return fmt.Sprintf(format, *p)
	}
	gib := func(b float64) string { return fmt.Sprintf("%.2f GiB", b/kvcalc.GiB) }
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "Model\t%s: %d layers × %d KV heads/GPU × head dim %d, %d-byte KV elements\n", r.Model, r.NumLayers, r.NumKVHeads, r.HeadDim, r.KVDTypeBytes)
	if r.GPUMemoryGiB != nil {
		name := "custom"
		if r.GPU != nil {
			name = *r.GPU
		}
		fmt.Fprintf(tw, "GPU\t%s: %.2f GiB × %g = %.2f GiB requested (TP %d, figures per GPU)\n", name, *r.GPUMemoryGiB, r.GPUMemoryUtilization, *r.GPUMemoryGiB*r.GPUMemoryUtilization, r.TensorParallelSize)
	}
	if r.WeightsBytes != nil {
		fmt.Fprintf(tw, "Weights\t%s (estimate: parameters × dtype bytes)\n", gib(*r.WeightsBytes))
		fmt.Fprintf(tw, "Activation peak\t%s (estimate: %d batched tokens, %d sequences)\n", gib(*r.ActivationBytes), r.MaxNumBatchedTokens, r.MaxNumSeqs)
		fmt.Fprintf(tw, "Non-torch\t%s (estimate)\n", gib(*r.NonTorchBytes))
	}
	fmt.Fprintf(tw, "KV cache\t%s (%s)\n", gib(r.KVCacheBytes), r.KVCacheBytesSource)
	fmt.Fprintf(tw, "KV per token\t%s bytes (2 × %d × %d × %d × %d)\n", kvcalc.CommaInt(int(r.KVBytesPerToken)), r.NumLayers, r.NumKVHeads, r.HeadDim, r.KVDTypeBytes)
	if r.SlidingWindow != nil {
		fmt.Fprintf(tw, "Sliding window\t%d tokens, %d KV cache group(s)\n", *r.SlidingWindow, r.KVCacheGroups)
	}
	if r.NumGPUBlocks != nil {
		fmt.Fprintf(tw, "GPU blocks\t%s of %d tokens (%s bytes each); %s CPU blocks\n", kvcalc.CommaInt(*r.NumGPUBlocks), r.BlockSize, kvcalc.CommaInt(int(r.BlockBytes)), kvcalc.CommaInt(*r.NumCPUBlocks))
		fmt.Fprintf(tw, "KV tokens\t%s\n", kvcalc.CommaInt(*r.KVCacheTokens))
	} else {
		fmt.Fprintf(tw, "GPU blocks\tn/a (no memory left for the KV cache)\n")
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "max-model-len\tblocks/request\tKV/request\tmax concurrency (V1)\t(V0)\t")
	for _, row := range r.Rows {
		fmt.Fprintf(tw, "%s\t%d\t%.2f MiB\t%s\t%s\t%s\n", kvcalc.CommaInt(row.MaxModelLen), row.BlocksPerRequest, float64(row.KVBytesRequest)/(1<<20),
			na(row.MaxConcurrency, "%.2fx"), na(row.V0MaxConcurrency, "%.2fx"), map[bool]string{true: "", false: "does not fit"}[row.Fits])
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "vLLM V1 would log:")
	for _, s := range r.V1Log {
		fmt.Fprintf(tw, "  %s\n", s)
	}
	if len(r.V0Log) > 0 {
		fmt.Fprintln(tw, "vLLM V0 would log:")
		for _, s := range r.V0Log {
			fmt.Fprintf(tw, "  %s\n", s)
		}
	}
	return tw.Flush()
}
