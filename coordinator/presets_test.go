package coordinator

import (
	"context"
	"encoding/csv"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// presetsGPU is a gpunode whose engine applies vLLM's scheduler-config
// check (refusing chunked-off points whose budget is below max_model_len)
// and remembers the knobs it runs, so that presetsAgent can answer as that
// configuration would.
type presetsGPU struct {
	fakeGPU
	mu    sync.Mutex
	knobs *pb.EngineKnobs
}

func (g *presetsGPU) StartEngine(ctx context.Context, req *pb.StartEngineRequest) (*pb.EngineInfo, error) {
	k := req.GetKnobs()
	if r := PresetsExpectedRefusal(int(k.GetMaxNumBatchedTokens()), int(k.GetMaxNumSeqs()), int(k.GetMaxModelLen()), k.GetEnableChunkedPrefill() == pb.OptionalBool_OPTIONAL_BOOL_TRUE); r != "" {
		return nil, errors.New("engine exited before it was ready (exit status 1); cause config: ValueError: " + r)
	}
	g.mu.Lock()
	g.knobs = k
	g.mu.Unlock()
	return g.fakeGPU.StartEngine(ctx, req)
}

// presetsAgent reports one interval per level whose TTFT and output
// tokens follow a made-up model of the knobs: TTFT = 10 ms × concurrency,
// ×2 at budget 8192, ×3 with chunked prefill off; output tokens =
// 100 × concurrency × (3 at budget 8192) × (2 at max_num_seqs 64) × (½
// with chunked prefill off).
type presetsAgent struct {
	g         *presetsGPU
	successes uint64
}

func (a presetsAgent) RunProbe(ctx context.Context, req *pb.RunProbeRequest, fn func(*pb.RunProbeResponse) error) error {
	a.g.mu.Lock()
	k := a.g.knobs
	a.g.mu.Unlock()
	conc := float64(req.GetLoad().GetConcurrency())
	ttft, tokens := 10*conc, 100*conc
	if k.GetMaxNumBatchedTokens() == 8192 {
		ttft, tokens = ttft*2, tokens*3
	}
	if k.GetMaxNumSeqs() == 64 {
		tokens *= 2
	}
	if k.GetEnableChunkedPrefill() == pb.OptionalBool_OPTIONAL_BOOL_FALSE {
		ttft, tokens = ttft*3, tokens/2
	}
	start := req.GetStartUnixNano()
	select {
	case <-time.After(time.Until(time.Unix(0, start)) + time.Duration(req.GetLoad().GetWarmupMs()+req.GetLoad().GetDurationMs())*time.Millisecond):
	case <-ctx.Done():
		return ctx.Err()
	}
	set := hdr.Set{}
	for i := uint64(0); i < a.successes; i++ {
		set.Get(hdr.TTFT).Record(time.Duration(ttft * float64(time.Millisecond)))
		set.Get(hdr.E2E).Record(50 * time.Millisecond)
		set.Get(hdr.TPOT).Record(5 * time.Millisecond)
		set.Get(hdr.ITL).Record(5 * time.Millisecond)
	}
	// The measured span is the level's pinned duration exactly, so the
	// rates are the model's figures.
	mStart := start + req.GetLoad().GetWarmupMs()*int64(time.Millisecond)
	mEnd := mStart + req.GetLoad().GetDurationMs()*int64(time.Millisecond)
	rep := &pb.IntervalReport{RunId: req.GetRunId(), AgentId: req.GetAgentId(), Seq: 1, Final: true, RequestsOk: a.successes,
		OutputTokens: uint64(tokens), StartUnixNano: start, EndUnixNano: mEnd, MeasuredStartUnixNano: mStart, MeasuredEndUnixNano: mEnd}
	for m, h := range set {
		b, err := h.Encode()
		if err != nil {
			return err
		}
		rep.Histograms = append(rep.Histograms, &pb.EncodedHistogram{Metric: m, V2: b})
	}
	return fn(&pb.RunProbeResponse{Report: rep})
}

func runFakePresets(t *testing.T, successes uint64, slo float64, small bool) (*results.PresetsResults, string) {
	t.Helper()
	g := &presetsGPU{}
	g.noNVML = true
	c := New(Config{OutDir: t.TempDir(), DiscoveryTimeout: time.Second, SampleInterval: 5 * time.Millisecond, ReadyTimeout: time.Second, RequestTimeout: time.Second},
		members, fakeDialer{gpu: g, agent: presetsAgent{g: g, successes: successes}}, nil)
	spec := PresetsSpec{RunID: "presets", Knobs: &pb.EngineKnobs{Model: "meta-llama/Llama-3.2-3B-Instruct", Gpu: "h100"},
		MaxNumBatchedTokens: []int{2048, 8192}, MaxNumSeqs: []int{4, 64}, ChunkedPrefill: []bool{true, false}, MaxModelLen: 4096,
		Concurrencies: []int{2, 8, 32}, InputLen: 1024, OutputLen: 16, SLOTTFTMs: slo, MaxTTFTMs: 1000,
		LevelDuration: 500 * time.Millisecond, Warmup: 50 * time.Millisecond}
	if small {
		spec.MaxNumBatchedTokens, spec.MaxNumSeqs, spec.ChunkedPrefill, spec.Concurrencies = []int{2048}, []int{64}, []bool{true}, []int{2, 8}
	}
	res, err := c.RunPresets(context.Background(), spec, nil)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := results.BuildPresets(mustEvents(t, res.Dir))
	if err != nil {
		t.Fatal(err)
	}
	return pr, res.Dir
}

// TestPresetsPicksBothPresetsAndRecordsRefusals runs the 2 × 2 × 2 grid on
// the fake: the chunked-off points at budget 2048 (< max_model_len 4096)
// are refused and the grid goes on; the interactive preset is the highest
// throughput with TTFT p95 ≤ 100 ms and the throughput preset the highest
// with TTFT p95 ≤ 1000 ms, each with its exact vllm serve flags; the CSV
// and report have every point, observations come from the numbers, and
// `ttftlab report` re-renders them.
func TestPresetsPicksBothPresetsAndRecordsRefusals(t *testing.T) {
	pr, dir := runFakePresets(t, 30, 100, false)
	if pr.Status != results.StatusOK || len(pr.Points) != 8 {
		t.Fatalf("status %q (%s), %d points: want ok, 8", pr.Status, pr.Error, len(pr.Points))
	}
	for _, p := range pr.Points {
		refused := p.MaxNumBatchedTokens == 2048 && !p.ChunkedPrefill
		if refused != (p.Status == results.PointRefused) || refused != (p.ExpectedRefusal != "") {
			t.Errorf("%s: status %q, expected refusal %q", p.Label, p.Status, p.ExpectedRefusal)
		}
		if refused && (!strings.Contains(p.Error, "smaller than max_model_len") || len(p.Levels) != 0) {
			t.Errorf("%s: refused with %q and %d levels: want the engine's error and no level", p.Label, p.Error, len(p.Levels))
		}
		if !refused && len(p.Levels) != 3 {
			t.Errorf("%s: %d levels, want 3", p.Label, len(p.Levels))
		}
	}
	tests := []struct {
		name  string
		got   results.Preset
		flags string
		conc  int
	}{
		{"interactive", pr.Interactive, "--max-model-len 4096 --max-num-batched-tokens 2048 --max-num-seqs 64 --enable-chunked-prefill", 8},
		{"throughput", pr.Throughput, "--max-model-len 4096 --max-num-batched-tokens 8192 --max-num-seqs 64 --enable-chunked-prefill", 32},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !tt.got.Found || tt.got.Flags != tt.flags || tt.got.Concurrency != tt.conc {
				t.Fatalf("preset %+v: want flags %q at concurrency %d", tt.got, tt.flags, tt.conc)
			}
			if tt.got.Command != "vllm serve meta-llama/Llama-3.2-3B-Instruct "+tt.flags {
				t.Errorf("command %q", tt.got.Command)
			}
		})
	}
	f, err := os.Open(filepath.Join(dir, results.PresetsCSV))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rows[0], ",") != strings.Join(results.PresetsColumns, ",") || len(rows) != 1+2+6*3 {
		t.Fatalf("header %v, %d rows: want the columns and 2 refused + 18 measured rows", rows[0], len(rows)-1)
	}
	for _, r := range rows[1:] {
		if r[4] == results.PointRefused {
			for i := 5; i < len(r); i++ {
				if r[i] != "" {
					t.Errorf("refused row %v: column %s is %q, want empty", r, rows[0][i], r[i])
				}
			}
		}
	}
	md, err := os.ReadFile(filepath.Join(dir, results.PresetsReport))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"vllm serve meta-llama/Llama-3.2-3B-Instruct --max-model-len 4096 --max-num-batched-tokens 2048 --max-num-seqs 64 --enable-chunked-prefill",
		"Measured at client concurrency **8**",
		// Chunked prefill at budget 8192, seqs 64, concurrency 32: TTFT
		// p95 1920 → 640 ms (as HdrHistogram rounds them), throughput ×2,
		// from the fake's numbers.
		"Chunked prefill at budget 8192, seqs 64, concurrency 32 (off → on): TTFT p95 1921.0 → 640.5 ms (-67%)",
		"output tokens/s 19200.0 → 38400.0 (+100%)",
		"the engine refused to start (as expected: max_num_batched_tokens (2048) is smaller than max_model_len (4096)",
		"above max_num_seqs 4",
	} {
		if !strings.Contains(string(md), want) {
			t.Errorf("presets.md lacks %q:\n%s", want, md)
		}
	}
	if err := os.Remove(filepath.Join(dir, results.PresetsCSV)); err != nil {
		t.Fatal(err)
	}
	if _, err := results.RenderDir(dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, results.PresetsCSV)); err != nil {
		t.Fatalf("re-render: %v", err)
	}
}

// TestPresetsSaysSoWhenNothingQualifies: an SLO no point meets gives no
// interactive preset and the reason, never the closest point; thin
// measurements are never presets.
func TestPresetsSaysSoWhenNothingQualifies(t *testing.T) {
	t.Run("SLO below every TTFT", func(t *testing.T) {
		pr, _ := runFakePresets(t, 30, 5, true)
		if pr.Interactive.Found || !strings.Contains(pr.Interactive.Reason, "no point meets TTFT p95 ≤ 5 ms") || !strings.Contains(pr.Interactive.Reason, "20.0 ms (at concurrency 2)") {
			t.Errorf("interactive %+v: want none, naming the lowest TTFT p95 (20 ms)", pr.Interactive)
		}
		if !pr.Throughput.Found {
			t.Errorf("throughput preset missing: %+v", pr.Throughput)
		}
	})
	t.Run("thin samples", func(t *testing.T) {
		pr, _ := runFakePresets(t, 5, 100, true)
		for _, x := range []results.Preset{pr.Interactive, pr.Throughput} {
			if x.Found || !strings.Contains(x.Reason, "enough samples") {
				t.Errorf("%s %+v: want none, because no measurement has enough samples", x.Name, x)
			}
		}
	})
}

func TestPresetsSpecValidate(t *testing.T) {
	base := func() PresetsSpec { return PresetsSpec{}.withDefaults() }
	tests := []struct {
		name string
		mod  func(*PresetsSpec)
		want string
	}{
		{"defaults are valid", func(*PresetsSpec) {}, ""},
		{"empty budget list", func(s *PresetsSpec) { s.MaxNumBatchedTokens = []int{} }, "max_num_batched_tokens is empty"},
		{"chunked twice", func(s *PresetsSpec) { s.ChunkedPrefill = []bool{true, true} }, "chunked_prefill [true true]"},
		{"duplicate seqs", func(s *PresetsSpec) { s.MaxNumSeqs = []int{32, 32} }, "max_num_seqs 32 is given twice"},
		{"prompt does not fit", func(s *PresetsSpec) { s.MaxModelLen = 2048 }, "max_model_len 2048 is out of range"},
		{"SLO above max", func(s *PresetsSpec) { s.SLOTTFTMs, s.MaxTTFTMs = 500, 200 }, "slo_ttft_ms 500 is above max_ttft_ms 200"},
		{"negative SLO", func(s *PresetsSpec) { s.SLOTTFTMs = -1 }, "slo_ttft_ms -1 is out of range"},
		{"zero concurrency", func(s *PresetsSpec) { s.Concurrencies = []int{0} }, "concurrencies 0 is out of range"},
		{"too many points", func(s *PresetsSpec) {
			s.MaxNumBatchedTokens = []int{1024, 2048, 4096, 8192, 16384, 32768}
			s.MaxNumSeqs = []int{1, 2, 4, 8, 16, 32}
		}, "the grid has 72 points"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base()
			tt.mod(&s)
			err := s.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}
