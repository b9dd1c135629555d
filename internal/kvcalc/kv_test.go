package kvcalc

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ttftlab/ttftlab/internal/vllmlog"
)

// TestMaxConcurrencyMatchesGoldenLogs takes the KV tokens (V1) or GPU
// blocks (V0) from every real vLLM log in internal/vllmlog/testdata that
// logs a maximum concurrency, and checks that the calculator prints the
// same figure to the last digit.
func TestMaxConcurrencyMatchesGoldenLogs(t *testing.T) {
	logs, err := filepath.Glob(filepath.Join("..", "vllmlog", "testdata", "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no golden logs: %v", err)
	}
	checked := map[string]int{}
	for _, path := range logs {
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		res, err := vllmlog.ParseLog(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if res.MaxConcurrency == nil || res.MaxConcurrencyTokens == nil || res.KVCacheTokens == nil {
			continue
		}
		name := strings.TrimSuffix(filepath.Base(path), ".log")
		t.Run(name, func(t *testing.T) {
			bs, mml := int(res.BlockSize), int(*res.MaxConcurrencyTokens)
			l := Layout{Layers: 1, KVHeads: 1, HeadDim: 1, DTypeBytes: 2, BlockSize: bs}
			want := fmt.Sprintf("%.2f", *res.MaxConcurrency)
			var got string
			if res.KVBlocks != nil { // V0: "# GPU blocks: N"
				got = fmt.Sprintf("%.2f", MaxConcurrencyV0(int(*res.KVBlocks), bs, mml))
				checked["v0"]++
			} else { // V1: "GPU KV cache size: N tokens"
				c, err := l.ConcurrencyFromTokens(int(*res.KVCacheTokens), mml, 0)
				if err != nil {
					t.Fatal(err)
				}
				got = fmt.Sprintf("%.2f", c)
				checked["v1"]++
			}
			if got != want {
				t.Errorf("max concurrency for %d tokens = %sx, log says %sx", mml, got, want)
			}
		})
	}
	if checked["v0"] < 2 || checked["v1"] < 2 {
		t.Errorf("checked %v logs, want at least 2 of each engine", checked)
	}
}

func TestMaxConcurrencyRoundsToBlocks(t *testing.T) {
	l := Layout{Layers: 28, KVHeads: 2, HeadDim: 128, DTypeBytes: 2}
	tests := []struct {
		name         string
		blocks, mml  int
		wantV1, want string
	}{
		{"multiple of the block size", 1000, 4096, "3.91", "3.91"},
		{"one token past a block", 1000, 4097, "3.89", "3.91"},
		{"shorter than a block", 1000, 10, "1000.00", "1600.00"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := fmt.Sprintf("%.2f", l.MaxConcurrency(tt.blocks, tt.mml, 0)); got != tt.wantV1 {
				t.Errorf("V1 = %s, want %s (blocks / ⌈mml/16⌉)", got, tt.wantV1)
			}
			if got := fmt.Sprintf("%.2f", MaxConcurrencyV0(tt.blocks, 16, tt.mml)); got != tt.want {
				t.Errorf("V0 = %s, want %s (blocks·16 / mml)", got, tt.want)
			}
		})
	}
}

func TestKVHeadsPerRank(t *testing.T) {
	for _, tt := range []struct {
		name            string
		heads, tp, want int
	}{
		{"tp 1", 8, 1, 8}, {"split", 8, 4, 2}, {"one per rank", 8, 8, 1}, {"replicated", 2, 8, 1},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := KVHeadsPerRank(tt.heads, tt.tp); got != tt.want {
				t.Errorf("KVHeadsPerRank(%d, %d) = %d, want %d", tt.heads, tt.tp, got, tt.want)
			}
		})
	}
}

func TestKVDTypeBytes(t *testing.T) {
	for _, tt := range []struct {
		dtype string
		model int
		want  int
	}{
		{"auto", 2, 2}, {"auto", 4, 4}, {"fp8", 2, 1}, {"fp8_e4m3", 2, 1}, {"fp8_e5m2", 2, 1},
		{"bfloat16", 4, 2}, {"float16", 2, 2}, {"float32", 2, 4},
	} {
		t.Run(tt.dtype, func(t *testing.T) {
			got, err := KVDTypeBytes(tt.dtype, tt.model)
			if err != nil || got != tt.want {
				t.Errorf("KVDTypeBytes(%q, %d) = %d, %v; want %d", tt.dtype, tt.model, got, err, tt.want)
			}
		})
	}
	if _, err := KVDTypeBytes("int4", 2); err == nil || !strings.Contains(err.Error(), `--kv-cache-dtype "int4"`) || !strings.Contains(err.Error(), "fp8_e5m2") {
		t.Errorf("bad dtype error = %v, want one naming the flag, the value and the accepted values", err)
	}
}

// TestPlanHybridGemma2 checks vLLM's grouping for an interleaved model:
// Gemma-2-2B's 13 full and 13 sliding layers form two groups of 13 that
// share one block pool, so tokens are half the blocks × 16 and a request
// reserves blocks in both groups.
func TestPlanHybridGemma2(t *testing.T) {
	l := Layout{Layers: 26, KVHeads: 4, HeadDim: 256, DTypeBytes: 2, BlockSize: 16, SlidingWindow: 4096, FullLayers: 13}
	if got := l.NumGroups(); got != 2 {
		t.Fatalf("groups = %d, want 2", got)
	}
	page := int64(2 * 16 * 4 * 256 * 2)
	p, err := PlanKV(Inputs{KVCacheMemoryBytes: 10 * GiB, Layout: l, MaxModelLen: 8192, MaxNumBatchedTokens: 2048})
	if err != nil {
		t.Fatal(err)
	}
	wantBlocks := int(10 * GiB / page / 13)
	if p.NumBlocks != wantBlocks || p.Tokens != wantBlocks/2*16 {
		t.Errorf("blocks, tokens = %d, %d; want %d, %d", p.NumBlocks, p.Tokens, wantBlocks, wantBlocks/2*16)
	}
	// Full: ⌈8192/16⌉ = 512; sliding: ⌈min(4095+2048, 8192)/16⌉+1 = 386.
	if p.BlocksPerRequest != 512+385 {
		t.Errorf("blocks per request = %d, want %d", p.BlocksPerRequest, 512+385)
	}
	if got, want := p.MaxConcurrency, float64(wantBlocks)/897; got != want {
		t.Errorf("max concurrency = %v, want %v", got, want)
	}
	// 10 full + 4 sliding layers: groups of 4 (10 ≥ 1.5·4), 3 + 1 groups.
	l = Layout{Layers: 14, KVHeads: 1, HeadDim: 64, DTypeBytes: 2, SlidingWindow: 128, FullLayers: 10}
	if size, gs := l.groups(); size != 4 || len(gs) != 4 {
		t.Errorf("10 full + 4 sliding: group size %d, %d groups; want 4, 4", size, len(gs))
	}
}

func TestPlanKVFailures(t *testing.T) {
	l := Layout{Layers: 32, KVHeads: 32, HeadDim: 96, DTypeBytes: 2}
	tests := []struct {
		name    string
		in      Inputs
		want    string
		wantEst int
	}{
		{"no memory", Inputs{TotalGiB: 10, Utilization: 0.1, WeightsGiB: 2, Layout: l, MaxModelLen: 4096}, "No available memory for the cache blocks.", 0},
		{"one request does not fit", Inputs{KVCacheMemoryBytes: 1 << 30, Layout: l, MaxModelLen: 4096}, "the estimated maximum model length is 2720.", 2720},
		{"bad max_model_len", Inputs{KVCacheMemoryBytes: 1 << 30, Layout: l, MaxModelLen: 0}, "max_model_len 0: must be", 0},
		{"bad layout", Inputs{KVCacheMemoryBytes: 1 << 30, Layout: Layout{Layers: 1}, MaxModelLen: 16}, "KV layout kv heads 0", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := PlanKV(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("PlanKV error = %v, want one containing %q", err, tt.want)
			}
			var kerr *Error
			if errors.As(err, &kerr) && kerr.EstimatedMaxModelLen != tt.wantEst {
				t.Errorf("estimated max model len = %d, want %d", kerr.EstimatedMaxModelLen, tt.wantEst)
			}
		})
	}
}

// TestPlanKVProperties checks, over random layouts and budgets, that the
// blocks fill the budget without exceeding it and that the logged tokens
// and concurrency follow from the blocks.
func TestPlanKVProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		l := Layout{
			Layers: 1 + r.IntN(128), KVHeads: 1 + r.IntN(64), HeadDim: 16 * (1 + r.IntN(16)),
			DTypeBytes: []int{1, 2, 4}[r.IntN(3)], BlockSize: []int{8, 16, 32, 64}[r.IntN(4)],
		}
		if r.IntN(3) == 0 {
			l.SlidingWindow = 1 + r.IntN(8192)
			l.FullLayers = r.IntN(l.Layers)
		}
		in := Inputs{KVCacheMemoryBytes: 1 + r.Int64N(200*GiB), Layout: l, MaxModelLen: 1 + r.IntN(1<<17), MaxNumBatchedTokens: 1 + r.IntN(16384)}
		p, err := PlanKV(in)
		if err != nil {
			var kerr *Error
			if !errors.As(err, &kerr) {
				t.Fatalf("case %d %+v: unexpected error %v", i, l, err)
			}
			if kerr.EstimatedMaxModelLen >= in.MaxModelLen {
				t.Fatalf("case %d: estimate %d not below max_model_len %d", i, kerr.EstimatedMaxModelLen, in.MaxModelLen)
			}
			continue
		}
		used := int64(p.NumBlocks) * l.BlockBytes()
		if used > in.KVCacheMemoryBytes || in.KVCacheMemoryBytes-used >= l.BlockBytes() {
			t.Fatalf("case %d %+v: %d blocks of %d bytes in a %d-byte budget", i, l, p.NumBlocks, l.BlockBytes(), in.KVCacheMemoryBytes)
		}
		if p.Tokens != p.NumBlocks/l.NumGroups()*l.BlockSize {
			t.Fatalf("case %d: tokens %d from %d blocks in %d groups", i, p.Tokens, p.NumBlocks, l.NumGroups())
		}
		if p.MaxConcurrency < 1 || math.Abs(p.MaxConcurrency*float64(p.BlocksPerRequest)-float64(p.NumBlocks)) > 1e-6*float64(p.NumBlocks) {
			t.Fatalf("case %d: concurrency %v from %d blocks / %d per request", i, p.MaxConcurrency, p.NumBlocks, p.BlocksPerRequest)
		}
		if l.SlidingWindow == 0 && l.BytesPerToken()*int64(l.BlockSize) != l.BlockBytes() {
			t.Fatalf("case %d: block bytes %d != 16 × bytes per token %d", i, l.BlockBytes(), l.BytesPerToken())
		}
	}
}

func TestCommaInt(t *testing.T) {
	for _, tt := range []struct {
		n    int
		want string
	}{{0, "0"}, {999, "999"}, {1000, "1,000"}, {4561600, "4,561,600"}, {-32768, "-32,768"}} {
		if got := CommaInt(tt.n); got != tt.want {
			t.Errorf("CommaInt(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}
