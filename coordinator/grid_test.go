package coordinator

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/sim"
)

func TestKVScaleSteps(t *testing.T) {
	tests := []struct {
		name       string
		cstar, cap int
		want       []int
		capped     bool
	}{
		{"typical", 38, 64, []int{19, 29, 34, 38, 42, 46, 49, 57}, false},
		{"small C* deduplicates", 4, 64, []int{2, 3, 4, 5, 6}, false},
		{"C* of one", 1, 64, []int{1, 2}, false},
		{"above the cap", 114, 64, []int{57, 64}, true},
		{"zero C* still tests one", 0, 64, []int{1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, capped := kvScaleSteps(tt.cstar, tt.cap)
			if !slices.Equal(got, tt.want) || capped != tt.capped {
				t.Errorf("kvScaleSteps(%d, %d) = %v capped %v, want %v capped %v", tt.cstar, tt.cap, got, capped, tt.want, tt.capped)
			}
		})
	}
}

func TestObserveLevel(t *testing.T) {
	// Samples one second apart from t=9 s; the level runs 10..20 s, its
	// warm-up ends at 12 s and its measured window at 18 s.
	mk := func(preempt []float64, waiting []float64) []engineMetricSample {
		var ms []engineMetricSample
		for i := range waiting {
			m := engineMetricSample{t: int64(9+i) * 1e9, waiting: waiting[i], hasWaiting: true}
			if preempt != nil {
				m.preempt, m.hasPreempt = preempt[i], true
			}
			ms = append(ms, m)
		}
		return ms
	}
	const from, warm, measEnd, to = 10e9, 12e9, 18e9, 20e9
	tests := []struct {
		name        string
		ms          []engineMetricSample
		preemptions *float64
		frac        *float64
		onset       bool
	}{
		{"queue stands after the warm-up: onset",
			mk(nil, []float64{0, 9, 7, 5, 4, 4, 3, 4, 3, 5, 0, 0}), nil, ptr(1), true},
		{"burst admitted before the warm-up ends: no onset",
			mk(nil, []float64{0, 9, 7, 0, 0, 0, 0, 0, 0, 0, 0, 0}), nil, ptr(0), false},
		{"queue of one comes and goes in a quarter of the samples: onset",
			mk(nil, []float64{0, 9, 3, 0, 1, 0, 0, 1, 0, 0, 0, 0}), nil, ptr(2.0 / 7), true},
		{"one transient: no onset",
			mk(nil, []float64{0, 9, 3, 0, 0, 0, 1, 0, 0, 0, 0, 0}), nil, ptr(1.0 / 7), false},
		{"queue after the load stopped is not counted",
			mk(nil, []float64{0, 9, 0, 0, 0, 0, 0, 0, 0, 0, 3, 2}), nil, ptr(0), false},
		{"preemption counter rises: onset",
			mk([]float64{5, 5, 5, 6, 8, 8, 8, 8, 8, 8, 8, 8}, []float64{0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}), ptr(3), ptr(0), true},
		{"queue while the KV cache is half full: another limit, no onset",
			withUsage(mk(nil, []float64{0, 9, 7, 5, 4, 4, 3, 4, 3, 5, 0, 0}), 0.5), nil, ptr(1), false},
		{"queue with the KV cache full: onset",
			withUsage(mk(nil, []float64{0, 9, 7, 5, 4, 4, 3, 4, 3, 5, 0, 0}), 0.97), nil, ptr(1), true},
		{"no metrics: nothing measured",
			[]engineMetricSample{{t: 11e9}, {t: 12e9}}, nil, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, _ := observeLevel(tt.ms, from, warm, measEnd, to)
			if !eqPtr(o.Preemptions, tt.preemptions) || !eqPtr(o.WaitingFrac, tt.frac) || results.KVOnset(&o) != tt.onset {
				t.Errorf("got preemptions %s, waiting frac %s, onset %v; want %s, %s, %v",
					fmtF(o.Preemptions, "%g"), fmtF(o.WaitingFrac, "%.3f"), results.KVOnset(&o), fmtF(tt.preemptions, "%g"), fmtF(tt.frac, "%.3f"), tt.onset)
			}
		})
	}
}

// withUsage sets every sample's vllm:kv_cache_usage_perc.
func withUsage(ms []engineMetricSample, u float64) []engineMetricSample {
	for i := range ms {
		ms[i].usage, ms[i].hasKV = u, true
	}
	return ms
}

func eqPtr(a, b *float64) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	d := *a - *b
	return d < 1e-9 && d > -1e-9
}

// TestPredictKVMatchesTheSimulator checks the prediction against the
// simulated engine's own plan (what its log reports) for the default
// kvscale model and GPU, and a refusal against the simulator's refusal.
func TestPredictKVMatchesTheSimulator(t *testing.T) {
	tests := []struct {
		name  string
		mml   int
		util  float64
		seqs  int
		fails bool
	}{
		{"3B on L4 0.5 len 2048", 2048, 0.5, 0, false},
		{"3B on L4 0.9 len 8192", 8192, 0.9, 0, false},
		{"3B on L4 0.5 max-num-seqs 32", 4096, 0.5, 32, false},
		{"3B on L4 0.3 refuses", 2048, 0.3, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := &pb.EngineKnobs{Model: "meta-llama/Llama-3.2-3B-Instruct", Gpu: "l4", MaxModelLen: int32(tt.mml), GpuMemoryUtilization: tt.util, MaxNumSeqs: int32(tt.seqs)}
			p := PredictKV("sim", k, nil)
			c := sim.DefaultConfig()
			c.Model, c.GPU, c.MaxModelLen, c.GPUMemoryUtilization, c.MaxNumSeqs = k.Model, k.Gpu, tt.mml, tt.util, tt.seqs
			want, err := c.PlanKV()
			if tt.fails {
				if err == nil || p.Refusal == "" {
					t.Fatalf("sim error %v, prediction refusal %q: want both to refuse", err, p.Refusal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if p.Source != "config+gpu" || p.KVTokens == nil || *p.KVTokens != want.Tokens || *p.NumBlocks != want.NumBlocks || *p.MaxConcurrency != want.MaxConcurrency {
				t.Fatalf("prediction %+v (tokens %s), simulator plan %+v", p, fmt.Sprint(p.KVTokens), want)
			}
			// From the reported budget alone, the same blocks.
			gib := want.AvailableBytes / (1 << 30)
			r := PredictKV("vllm", &pb.EngineKnobs{Model: k.Model, MaxModelLen: k.MaxModelLen}, &gib)
			if r.Source != "reported_available_kv" || r.NumBlocks == nil || *r.NumBlocks != want.NumBlocks {
				t.Fatalf("prediction from the reported budget %+v, want %d blocks", r, want.NumBlocks)
			}
		})
	}
	if p := PredictKV("vllm", &pb.EngineKnobs{Model: "org/unknown-model"}, nil); p.Source != "" || !strings.Contains(p.Note, "org/unknown-model") {
		t.Errorf("an unknown model: %+v, want no prediction and a note naming it", p)
	}
}

// kvGPU is a gpunode whose engine refuses to start below a utilisation
// and reports KV figures and engine metrics otherwise: concurrency above
// capacity shows a standing queue.
type kvGPU struct {
	fakeGPU
	refuseBelow float64
	capacity    int // concurrency that fits

	mu   sync.Mutex
	conc int // the load now running
}

func (g *kvGPU) StartEngine(ctx context.Context, req *pb.StartEngineRequest) (*pb.EngineInfo, error) {
	if req.GetKnobs().GetGpuMemoryUtilization() < g.refuseBelow {
		return nil, errors.New("engine exited before it was ready (exit status 1); cause kv_cache: ValueError: No available memory for the cache blocks")
	}
	info, err := g.fakeGPU.StartEngine(ctx, req)
	if err != nil {
		return nil, err
	}
	p := PredictKV("sim", req.GetKnobs(), nil)
	tokens := int64(*p.KVTokens)
	info.Figures = &pb.EngineFigures{KvCacheTokens: &tokens, MaxConcurrency: p.MaxConcurrency}
	return info, nil
}

func (g *kvGPU) StreamSamples(ctx context.Context, interval time.Duration, fn func(*pb.StreamSamplesResponse)) error {
	return g.fakeGPU.StreamSamples(ctx, interval, func(m *pb.StreamSamplesResponse) {
		g.mu.Lock()
		waiting := float64(max(0, g.conc-g.capacity))
		g.mu.Unlock()
		m.GetSample().EngineMetrics = map[string]float64{"vllm:num_requests_waiting": waiting, "vllm:num_preemptions_total": 0}
		fn(m)
	})
}

// kvLoadAgent reports one interval of successes at the plan's concurrency
// and tells the gpunode what load runs.
type kvLoadAgent struct{ g *kvGPU }

func (a kvLoadAgent) RunProbe(ctx context.Context, req *pb.RunProbeRequest, fn func(*pb.RunProbeResponse) error) error {
	a.g.mu.Lock()
	a.g.conc = int(req.GetLoad().GetConcurrency())
	a.g.mu.Unlock()
	defer func() { a.g.mu.Lock(); a.g.conc = 0; a.g.mu.Unlock() }()
	end := time.After(time.Until(time.Unix(0, req.GetStartUnixNano())) + time.Duration(req.GetLoad().GetWarmupMs()+req.GetLoad().GetDurationMs())*time.Millisecond)
	beat := time.NewTicker(200 * time.Millisecond)
	defer beat.Stop()
wait:
	for {
		select {
		case <-end:
			break wait
		case <-beat.C:
			if err := fn(&pb.RunProbeResponse{Heartbeat: &pb.Heartbeat{UnixNano: time.Now().UnixNano()}}); err != nil {
				return err
			}
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	set := hdr.Set{}
	for i := 0; i < 10; i++ {
		set.Get(hdr.TTFT).Record(time.Duration(20+i) * time.Millisecond)
		set.Get(hdr.E2E).Record(time.Duration(200+i) * time.Millisecond)
		set.Get(hdr.TPOT).Record(5 * time.Millisecond)
	}
	now := time.Now().UnixNano()
	rep := &pb.IntervalReport{RunId: req.GetRunId(), AgentId: req.GetAgentId(), Seq: 1, Final: true, RequestsOk: 10, OutputTokens: 640,
		StartUnixNano: req.GetStartUnixNano(), EndUnixNano: now, MeasuredStartUnixNano: req.GetStartUnixNano(), MeasuredEndUnixNano: now}
	for m, h := range set {
		b, err := h.Encode()
		if err != nil {
			return err
		}
		rep.Histograms = append(rep.Histograms, &pb.EncodedHistogram{Metric: m, V2: b})
	}
	return fn(&pb.RunProbeResponse{Report: rep})
}

// TestKVScaleGridRecordsRefusalsAndFindsTheOnset runs a 2 × 2 grid on a
// fake gpunode: the 0.3 points refuse to start and are recorded with the
// engine's error while the grid goes on; at the others the steps stop at
// the first concurrency above the fake's capacity, and the CSV has the
// issue's columns with empty cells where nothing was measured.
func TestKVScaleGridRecordsRefusalsAndFindsTheOnset(t *testing.T) {
	g := &kvGPU{refuseBelow: 0.4, capacity: 3}
	g.noNVML = true
	c := New(Config{OutDir: t.TempDir(), DiscoveryTimeout: time.Second, SampleInterval: 5 * time.Millisecond, ReadyTimeout: time.Second, RequestTimeout: time.Second},
		members, fakeDialer{gpu: g, agent: kvLoadAgent{g}}, nil)
	// max_num_seqs 4 leaves a C* the fake's steps can reach quickly; the
	// fake's capacity (3) is what the onset must find.
	res, err := c.RunKVScale(context.Background(), KVScaleSpec{RunID: "grid", Knobs: &pb.EngineKnobs{Model: "meta-llama/Llama-3.2-3B-Instruct", Gpu: "l4"},
		MaxModelLens: []int{2048, 4096}, Utilizations: []float64{0.3, 0.5}, LevelDuration: 500 * time.Millisecond, Warmup: 100 * time.Millisecond, MaxConcurrency: 8}, nil)
	if err != nil {
		t.Fatal(err)
	}
	kr, err := results.BuildKVScale(mustEvents(t, res.Dir))
	if err != nil {
		t.Fatal(err)
	}
	if len(kr.Points) != 4 {
		t.Fatalf("%d points, want 4", len(kr.Points))
	}
	for _, p := range kr.Points {
		switch {
		case p.GPUMemoryUtilization < 0.4:
			if p.Status != results.PointRefused || !strings.Contains(p.Error, "No available memory") || p.Prediction.Refusal == "" || len(p.Levels) != 0 {
				t.Errorf("%s: status %q error %q predicted refusal %q, %d levels: want refused with the engine's error, predicted, no level", p.Label, p.Status, p.Error, p.Prediction.Refusal, len(p.Levels))
			}
		default:
			last := p.Levels[len(p.Levels)-1]
			if p.Status != results.PointOK || p.Onset == nil || *p.Onset != last.Concurrency || *p.Onset <= g.capacity || p.OnsetKind != "queue" {
				t.Errorf("%s: status %q, onset %v (%s), last step %d: want the first step above %d", p.Label, p.Status, p.Onset, p.OnsetKind, last.Concurrency, g.capacity)
			}
			// A step above capacity before the last is only one whose warm-up
			// (100 ms) was shorter than its requests (200 ms): inconclusive,
			// and run again with a warm-up sized from them.
			for _, l := range p.Levels[:len(p.Levels)-1] {
				if l.Onset || (l.Concurrency > g.capacity && !l.Inconclusive) {
					t.Errorf("%s: step %d (onset %v, inconclusive %v) before the onset step", p.Label, l.Concurrency, l.Onset, l.Inconclusive)
				}
			}
			if n := len(p.Levels); n > 1 && p.Levels[n-2].Inconclusive && (p.Levels[n-1].WarmupMs < 300 || p.Levels[n-1].Concurrency != p.Levels[n-2].Concurrency) {
				t.Errorf("%s: the repeat of an inconclusive step has warm-up %d ms at concurrency %d; want ≥ 1.5 × E2E at the same concurrency", p.Label, p.Levels[n-1].WarmupMs, p.Levels[n-1].Concurrency)
			}
			if p.KVTokensDiffPct == nil || *p.KVTokensDiffPct != 0 {
				t.Errorf("%s: KV tokens diff %s, want 0 (the fake reports the prediction)", p.Label, fmtF(p.KVTokensDiffPct, "%g"))
			}
		}
	}
	f, err := os.Open(filepath.Join(res.Dir, results.KVScaleCSV))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	rows, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rows[0], ",") != "max_model_len,gpu_memory_utilization,max_num_seqs,kv_cache_tokens_reported,kv_cache_tokens_predicted,max_concurrency_reported,max_concurrency_predicted,concurrency,ttft_p50_ms,ttft_p95_ms,tpot_p50_ms,output_tokens_per_s,preemptions,waiting_max" {
		t.Fatalf("header %v", rows[0])
	}
	for _, r := range rows[1:] {
		if r[1] == "0.3" && (r[3] != "" || r[7] != "" || r[8] != "") {
			t.Errorf("refused point row %v: unmeasured cells must be empty", r)
		}
		if r[1] == "0.5" && (r[3] == "" || r[7] == "" || r[8] == "" || r[13] == "") {
			t.Errorf("measured row %v has empty cells", r)
		}
		for i, cell := range r {
			if cell == "0" && i != 12 && i != 13 {
				t.Errorf("row %v: column %s is 0; unmeasured must be empty", r, rows[0][i])
			}
		}
	}
	md, err := os.ReadFile(filepath.Join(res.Dir, results.KVScaleReport))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"the engine refused to start", "C* =", "queue begins at concurrency"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("kv_cache_scaling.md lacks %q", want)
		}
	}
	// `ttftlab report` re-renders the same files from events.jsonl.
	if err := os.Remove(filepath.Join(res.Dir, results.KVScaleCSV)); err != nil {
		t.Fatal(err)
	}
	if _, err := results.RenderDir(res.Dir); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(res.Dir, results.KVScaleCSV)); err != nil {
		t.Fatalf("re-render: %v", err)
	}
}

func mustEvents(t *testing.T, dir string) []results.Event {
	t.Helper()
	evs, err := ReadEvents(filepath.Join(dir, "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

// TestKVScaleInterruptedGridRendersWhatItMeasured cuts a grid's events
// after its first point's first level: the report keeps that level and
// marks the point interrupted and the run incomplete.
func TestKVScaleInterruptedGridRendersWhatItMeasured(t *testing.T) {
	g := &kvGPU{capacity: 100}
	g.noNVML = true
	c := New(Config{OutDir: t.TempDir(), DiscoveryTimeout: time.Second, SampleInterval: 5 * time.Millisecond, ReadyTimeout: time.Second, RequestTimeout: time.Second},
		members, fakeDialer{gpu: g, agent: kvLoadAgent{g}}, nil)
	res, err := c.RunKVScale(context.Background(), KVScaleSpec{RunID: "cut", Knobs: &pb.EngineKnobs{Model: "meta-llama/Llama-3.2-3B-Instruct", Gpu: "l4"},
		MaxModelLens: []int{8192}, Utilizations: []float64{0.5}, LevelDuration: 500 * time.Millisecond, Warmup: 100 * time.Millisecond, MaxConcurrency: 4}, nil)
	if err != nil {
		t.Fatal(err)
	}
	evs := mustEvents(t, res.Dir)
	cut := 0
	for i, ev := range evs {
		if ev.Kind == results.EventGridLevelEnd {
			cut = i + 1
			break
		}
	}
	kr, err := results.BuildKVScale(evs[:cut])
	if err != nil {
		t.Fatal(err)
	}
	p := kr.Points[0]
	if kr.Status != "incomplete" || p.Status != "interrupted" || len(p.Levels) != 1 || p.Levels[0].Metrics[hdr.TTFT].Count == 0 {
		t.Fatalf("run %q, point %q with %d levels: want incomplete, interrupted, the measured level kept", kr.Status, p.Status, len(p.Levels))
	}
}

// fmtF formats an optional figure, or n/a.
func fmtF(v *float64, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}
