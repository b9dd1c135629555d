package sim

import (
	"fmt"
	"time"
)

// PerfParams are the coefficients of the per-step roofline (SIM-NOTES §5).
// Zero efficiencies mean "derive from the GPU and the model".
type PerfParams struct {
	// EtaMFU is the fraction of peak FLOP/s a prefill reaches; 0 means the
	// GPU's default (0.5 on H100/H200, 0.65 on A100).
	EtaMFU float64
	// EtaBW is the fraction of peak bandwidth a decode reaches; 0 means
	// 0.80 for every model. (It used to be 0.65 for hidden ≤ 2048 and 0.75
	// for hidden ≤ 3072, which double-counted the small-kernel penalty that
	// TauLayer already charges per layer: on an L4, whose 300 GB/s a 0.5B
	// model's layers saturate easily, it put the decode step 50 % too slow.)
	EtaBW float64
	// TauLayer is the fixed per-layer cost of a CUDA-graph step (30 µs).
	TauLayer time.Duration
	// TauLayerEager is the per-layer kernel-launch cost of an eager step
	// (--enforce-eager, or more than MaxCaptureSize tokens). Eager steps are
	// launch-bound: their GPU time is at least Layers·TauLayerEager, which
	// overlaps the roofline time. 170 µs makes the GPU part of a batch-1
	// decode of Qwen2.5-1.5B on an H200 about 2.4× slower than with CUDA
	// graphs and matches the eager T=128 prefill microbenchmark (4.9 ms).
	TauLayerEager time.Duration
	// TGPU0 is the fixed GPU cost per step: sampler and logits (0.15 ms).
	TGPU0 time.Duration
	// TStepCPU is the engine's CPU cost per step: schedule, prepare inputs,
	// detokenize, stream (2.0 ms, fitted to the Qwen2.5 A100 batch-1
	// benchmark of vLLM 0.6.3; modern vLLM on a fast host may be nearer 1 ms).
	TStepCPU time.Duration
	// TAPI is the API server's cost per request outside the engine's steps:
	// HTTP, JSON, tokenisation, the hops to and from the engine core (5 ms,
	// an estimate; SIM-NOTES had 8 ms, which put a one-step prefill's TTFT
	// floor at ~12 ms on an H200 and a cached 4,096-token prefix only 3.0×
	// faster than a cold one). It is part of the TTFT.
	TAPI time.Duration
	// MaxCaptureSize is the largest CUDA-graph batch (512). Steps are padded
	// to the next capture size: 1, 2, 4, 8, then multiples of 8.
	MaxCaptureSize int
	// AsyncScheduling is vLLM's --async-scheduling (off by default in vLLM
	// 0.11, on by default in later versions): the engine schedules step
	// n+1 while the GPU runs step n, so a step takes max(T_gpu, t_step_cpu)
	// instead of their sum.
	AsyncScheduling bool
}

// DefaultPerfParams returns the calibrated defaults of SIM-NOTES §5, with
// t_step_cpu and τ_eager refitted to the calibration table of docs/sim.md.
func DefaultPerfParams() PerfParams {
	return PerfParams{
		TauLayer:       30 * time.Microsecond,
		TauLayerEager:  170 * time.Microsecond,
		TGPU0:          150 * time.Microsecond,
		TStepCPU:       2000 * time.Microsecond,
		TAPI:           5 * time.Millisecond,
		MaxCaptureSize: 512,
	}
}

func (p PerfParams) validate() error {
	if p.EtaMFU < 0 || p.EtaMFU > 1 || p.EtaBW < 0 || p.EtaBW > 1 {
		return fmt.Errorf("sim: efficiencies must be in [0, 1] (got mfu %v, bw %v)", p.EtaMFU, p.EtaBW)
	}
	if p.TauLayer < 0 || p.TauLayerEager < 0 || p.TGPU0 < 0 || p.TStepCPU < 0 || p.TAPI < 0 {
		return fmt.Errorf("sim: step-time coefficients must not be negative")
	}
	if p.MaxCaptureSize < 0 {
		return fmt.Errorf("sim: max capture size %d must not be negative", p.MaxCaptureSize)
	}
	return nil
}

// SeqWork is one sequence's share of an engine step: NewTokens tokens
// computed now (a prefill chunk, or 1 for a decode) on top of Context tokens
// whose KV is already cached.
type SeqWork struct {
	NewTokens int
	Context   int
}

// PerfModel computes the wall-clock duration of one engine step from the
// batch composition. It is immutable and safe for concurrent use.
type PerfModel struct {
	layers     float64
	attnDim    float64 // H·hd
	pne        float64 // non-embedding parameters
	lmHead     float64 // V·d
	weights    float64 // bytes a step reads: (P_ne + V·d)·dtype
	kvTok      float64 // KV bytes per token
	flops      float64 // η_mfu·F_peak
	bw         float64 // η_bw·BW
	tauGraph   float64 // seconds
	tauEager   float64
	tgpu0      float64
	tcpu       float64
	eager      bool
	async      bool
	maxCapture int
	// slowdown multiplies every step's duration (Config.Slowdown); 0 is 1.
	slowdown float64
}

// WithSlowdown returns a copy of p whose step times are multiplied by f
// (Config.Slowdown); f ≤ 0 or 1 leaves them as they are.
func (p *PerfModel) WithSlowdown(f float64) *PerfModel {
	q := *p
	q.slowdown = f
	return &q
}

// defaultEtaBW is the decode bandwidth efficiency when PerfParams.EtaBW is 0.
const defaultEtaBW = 0.80

// NewPerfModel returns the step-time model of model m on GPU g. With eager
// set (--enforce-eager) no step uses CUDA graphs.
func NewPerfModel(m Model, g GPU, p PerfParams, eager bool) *PerfModel {
	mfu := p.EtaMFU
	if mfu == 0 {
		mfu = g.EtaMFU
	}
	bw := p.EtaBW
	if bw == 0 {
		bw = defaultEtaBW
	}
	return &PerfModel{
		layers:     float64(m.Layers),
		attnDim:    float64(m.Heads * m.HeadDim),
		pne:        float64(m.NonEmbeddingParams()),
		lmHead:     float64(m.LMHeadParams()),
		weights:    float64(m.StepWeightBytes()),
		kvTok:      float64(m.KVBytesPerToken()),
		flops:      mfu * g.PeakFLOPS,
		bw:         bw * g.BandwidthBps,
		tauGraph:   p.TauLayer.Seconds(),
		tauEager:   p.TauLayerEager.Seconds(),
		tgpu0:      p.TGPU0.Seconds(),
		tcpu:       p.TStepCPU.Seconds(),
		eager:      eager,
		async:      p.AsyncScheduling,
		maxCapture: p.MaxCaptureSize,
	}
}

// captureSize returns the CUDA-graph batch size n is padded to: 1, 2, 4, 8,
// then the next multiple of 8.
func captureSize(n int) int {
	switch {
	case n <= 1:
		return 1
	case n <= 2:
		return 2
	case n <= 4:
		return 4
	default:
		return (n + 7) / 8 * 8
	}
}

// StepTime returns T_step = T_gpu + t_step_cpu for one step over batch
// (max(T_gpu, t_step_cpu) with async scheduling), where:
//
//	F     = 2·P_ne·N_tok + 2·V·d·N_seq + Σ 4·L·(H·hd)·n_i·(c_i + n_i/2)
//	Bytes = 2·(P_ne + V·d) + kv_tok·Σ(c_i + n_i)
//	T_gpu = max(Bytes/(η_bw·BW), F/(η_mfu·F_peak)) + L·τ_layer + t_gpu0   (CUDA graph)
//	T_gpu = max(roofline + L·τ_layer, L·τ_eager) + t_gpu0                 (eager)
//
// A step runs in a CUDA graph unless the model is eager or it has more than
// MaxCaptureSize tokens; a graphed step pads N_tok to the capture size (the
// padding costs linear FLOPs only). An empty batch takes no time.
func (p *PerfModel) StepTime(batch []SeqWork) time.Duration {
	if len(batch) == 0 {
		return 0
	}
	gpu, cpu := p.GPUTime(batch), time.Duration(p.tcpu*float64(time.Second))
	d := gpu + cpu
	if p.async {
		d = max(gpu, cpu)
	}
	if p.slowdown > 0 && p.slowdown != 1 {
		d = time.Duration(float64(d) * p.slowdown)
	}
	return d
}

// GPUTime returns T_gpu, the GPU-kernel part of StepTime (everything but
// t_step_cpu). It is what a kernel microbenchmark measures.
func (p *PerfModel) GPUTime(batch []SeqWork) time.Duration {
	if len(batch) == 0 {
		return 0
	}
	var nTok, ctx, attn float64
	for _, s := range batch {
		n, c := float64(s.NewTokens), float64(s.Context)
		nTok += n
		ctx += c + n
		attn += n * (c + n/2)
	}
	nSeq := float64(len(batch))
	graphed := !p.eager && int(nTok) <= p.maxCapture
	linTok := nTok
	if graphed {
		linTok = float64(captureSize(int(nTok)))
	}
	f := 2*p.pne*linTok + 2*p.lmHead*nSeq + 4*p.layers*p.attnDim*attn
	bytes := p.weights + p.kvTok*ctx
	roof := max(bytes/p.bw, f/p.flops) + p.layers*p.tauGraph
	if !graphed {
		roof = max(roof, p.layers*p.tauEager)
	}
	sec := roof + p.tgpu0
	return time.Duration(sec * float64(time.Second))
}
