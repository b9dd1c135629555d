package gpunode

import (
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/ttftlab/ttftlab/internal/vllmlog"
)

// vllmMetrics is /metrics text in vLLM 0.11's shape (label names sorted,
// counters with _total and _created, two engines for the sums).
const vllmMetrics = `# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="qwen"} 3.0
vllm:num_requests_running{engine="1",model_name="qwen"} 1.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="qwen"} 2.0
# HELP vllm:kv_cache_usage_perc KV-cache usage. 1 means 100 percent usage.
# TYPE vllm:kv_cache_usage_perc gauge
vllm:kv_cache_usage_perc{engine="0",model_name="qwen"} 0.25
# HELP vllm:prefix_cache_queries_total Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_total counter
vllm:prefix_cache_queries_total{engine="0",model_name="qwen"} 4096.0
# HELP vllm:prefix_cache_queries_created Prefix cache queries, in terms of number of queried tokens.
# TYPE vllm:prefix_cache_queries_created gauge
vllm:prefix_cache_queries_created{engine="0",model_name="qwen"} 1.7e+09
# HELP vllm:prefix_cache_hits_total Prefix cache hits, in terms of number of cached tokens.
# TYPE vllm:prefix_cache_hits_total counter
vllm:prefix_cache_hits_total{engine="0",model_name="qwen"} 1024.0
# HELP vllm:num_preemptions_total Cumulative number of preemption from the engine.
# TYPE vllm:num_preemptions_total counter
vllm:num_preemptions_total{engine="0",model_name="qwen"} 0.0
# HELP vllm:time_to_first_token_seconds Histogram of time to first token in seconds.
# TYPE vllm:time_to_first_token_seconds histogram
vllm:time_to_first_token_seconds_bucket{engine="0",le="0.001",model_name="qwen"} 0.0
vllm:time_to_first_token_seconds_bucket{engine="0",le="+Inf",model_name="qwen"} 5.0
vllm:time_to_first_token_seconds_count{engine="0",model_name="qwen"} 5.0
vllm:time_to_first_token_seconds_sum{engine="0",model_name="qwen"} 0.75
# HELP python_gc_objects_collected_total Objects collected during gc
# TYPE python_gc_objects_collected_total counter
python_gc_objects_collected_total{generation="0"} 1234.0
`

func TestParseMetrics(t *testing.T) {
	got, err := ParseMetrics(strings.NewReader(vllmMetrics))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]float64{
		"vllm:num_requests_running":              4,
		"vllm:num_requests_waiting":              2,
		"vllm:kv_cache_usage_perc":               0.25,
		"vllm:prefix_cache_queries_total":        4096,
		"vllm:prefix_cache_hits_total":           1024,
		"vllm:num_preemptions_total":             0,
		"vllm:time_to_first_token_seconds_sum":   0.75,
		"vllm:time_to_first_token_seconds_count": 5,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ParseMetrics (-want +got):\n%s", diff)
	}
	old := "# TYPE vllm:gpu_cache_usage_perc gauge\nvllm:gpu_cache_usage_perc{model_name=\"m\"} 0.5\n"
	if got, _ := ParseMetrics(strings.NewReader(old)); got["vllm:gpu_cache_usage_perc"] != 0.5 {
		t.Errorf("pre-0.9 gauge: %v", got)
	}
	if _, err := ParseMetrics(strings.NewReader("garbage{")); err == nil {
		t.Errorf("ParseMetrics(garbage) returned no error")
	}
}

func TestScraperFeedsSamples(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		fmt.Fprint(w, vllmMetrics)
	}))
	defer srv.Close()
	s := newSampler(slog.New(slog.DiscardHandler), 5*time.Millisecond, newHostSampler(filepath.Join("testdata", "proc1")), &gpus{reason: "test"}, func() int { return 0 }, time.Now())
	s.metrics = newScraper(slog.New(slog.DiscardHandler), 10*time.Millisecond, func() string { return srv.URL })
	ch, cancel := s.subscribe()
	defer cancel()
	go s.run()
	defer s.close()
	deadline := time.After(5 * time.Second)
	with, without := 0, 0
	for with < 2 || without < 1 {
		select {
		case smp := <-ch:
			if smp.EngineMetrics != nil {
				with++
				if smp.EngineMetrics["vllm:num_requests_running"] != 4 {
					t.Fatalf("metrics %v", smp.EngineMetrics)
				}
			} else {
				without++
			}
		case <-deadline:
			t.Fatalf("after 5 s: %d samples with metrics, %d without", with, without)
		}
	}
}

func TestTimelineMergesEvidence(t *testing.T) {
	spawn := time.Now()
	at := func(ms int) time.Time { return spawn.Add(time.Duration(ms) * time.Millisecond) }
	gpu := func(used uint64) []GPUSample { return []GPUSample{{Index: 0, MemoryUsedBytes: used}} }
	base := Sample{Time: at(-50), GPUs: gpu(500 << 20), DiskReadBytes: 10 << 30, PageCacheBytes: 1 << 30}
	samples := []Sample{
		{Time: at(100), GPUs: gpu(500 << 20), DiskReadBytes: 10 << 30, PageCacheBytes: 1 << 30},
		{Time: at(200), GPUs: gpu(600 << 20), DiskReadBytes: 11 << 30, EngineReadBytes: 1 << 30, PageCacheBytes: 2 << 30},
		{Time: at(300), GPUs: gpu(1500 << 20), DiskReadBytes: 12 << 30, EngineReadBytes: 2 << 30, PageCacheBytes: 3 << 30},
		{Time: at(400), GPUs: gpu(3500 << 20), DiskReadBytes: 12 << 30, EngineReadBytes: 2 << 30, PageCacheBytes: 3 << 30},
		{Time: at(500), GPUs: gpu(3510 << 20), DiskReadBytes: 12 << 30, EngineReadBytes: 2 << 30, PageCacheBytes: 3 << 30},
	}
	res := vllmlog.Result{ModelLoadGiB: new(2.8871)}
	logPhases := []vllmlog.Phase{
		{Name: vllmlog.PhaseLoadModel, Start: 150 * time.Millisecond, End: 420 * time.Millisecond, Source: vllmlog.SourceLog},
		{Name: vllmlog.PhaseReady, Start: 500 * time.Millisecond, End: 520 * time.Millisecond, Source: vllmlog.SourceSupervisor},
	}
	tl, _ := buildTimeline(timelineInput{phases: logPhases, spawn: spawn, ready: at(520), baseline: base, samples: samples,
		cold: ColdReport{Mode: ColdDisk, Files: 1, Bytes: 3 << 30, ResidentBefore: 1, ResidentAfter: 0, Took: 20 * time.Millisecond}, nvml: true, log: res})
	var names []string
	for _, p := range tl {
		names = append(names, p.Name+"/"+p.Source)
	}
	want := []string{"cold_prep/supervisor", "spawn/supervisor", "bootstrap_reads/sampler", "page_cache_fill/sampler", "load_model/log", "weights_on_gpu/sampler", "ready/supervisor"}
	if diff := cmp.Diff(want, names); diff != "" {
		t.Fatalf("timeline (-want +got):\n%s\n%+v", diff, tl)
	}
	boot, fill, weights := tl[2], tl[3], tl[5]
	// The sample at 200 ms covers (100, 200]: half of it is before the load
	// starts at 150 ms, so half its 1 GiB is the bootstrap's.
	if boot.Start != 100*time.Millisecond || boot.End != 150*time.Millisecond || !strings.Contains(boot.Detail, "engine read 0.50 GiB, page cache +0.50 GiB") {
		t.Errorf("bootstrap_reads = %+v", boot)
	}
	if fill.Start != 150*time.Millisecond || fill.End != 300*time.Millisecond || !strings.Contains(fill.Detail, "estimate from the load_model window") ||
		!strings.Contains(fill.Detail, "the engine read 1.50 GiB, the disks 1.50 GiB, page cache +1.50 GiB") {
		t.Errorf("page_cache_fill = %+v", fill)
	}
	if weights.Start != 200*time.Millisecond || weights.End != 400*time.Millisecond || !strings.Contains(weights.Detail, "GPU memory +2.93 GiB (log: model 2.89 GiB)") {
		t.Errorf("weights_on_gpu = %+v", weights)
	}
	if tl[0].Start != -20*time.Millisecond || !strings.Contains(tl[0].Detail, "resident 100.0% → 0.0%") {
		t.Errorf("cold_prep = %+v", tl[0])
	}

	tl, _ = buildTimeline(timelineInput{spawn: spawn, ready: at(520), samples: samples[:1], nvml: false, nvmlWhy: "NVML not available: test"})
	if !hasPhase(tl, PhaseWeightsOnGPU, "not observed: no NVML (NVML not available: test)") || !hasPhase(tl, PhasePageCacheFill, "not observed") {
		t.Errorf("no-NVML timeline = %+v", tl)
	}
}

func TestStartFillsTimelineAndFigures(t *testing.T) {
	n := newTestNode(t, nil, "ready")
	info, err := n.StartEngine(t.Context(), StartSpec{Profile: "ready"})
	if err != nil {
		t.Fatal(err)
	}
	if info.ColdMode != ColdWarmRestart {
		t.Errorf("ColdMode = %q, want %q", info.ColdMode, ColdWarmRestart)
	}
	if f := info.Figures; f.KVCacheTokens == nil || *f.KVCacheTokens != 4503936 || f.ModelLoadGiB == nil || f.EngineInitS == nil || f.Error != nil {
		t.Errorf("Figures = %+v", f)
	}
	sources := map[string]bool{}
	for _, p := range info.Timeline {
		sources[p.Source] = true
	}
	for _, s := range []string{vllmlog.SourceLog, vllmlog.SourceSampler, vllmlog.SourceSupervisor} {
		if !sources[s] {
			t.Errorf("timeline has no %s phase: %+v", s, info.Timeline)
		}
	}
	for _, name := range []string{PhaseSpawn, PhaseWeightsOnGPU, vllmlog.PhasePortOpen, vllmlog.PhaseHealthOK, vllmlog.PhaseReady, vllmlog.PhaseMemoryKV} {
		if !hasPhase(info.Timeline, name, "") {
			t.Errorf("timeline lacks %s", name)
		}
	}
}

// BenchmarkSampleOnce measures one full sample: the host and engine tree
// from /proc, every GPU through NVML, and the /metrics hand-off. At 10 Hz
// the share of one core is ns/op × 10 / 1e9.
func BenchmarkSampleOnce(b *testing.B) {
	run := func(b *testing.B, procRoot string, enginePID int, lib NVML) {
		g := openGPUs(lib, slog.New(slog.DiscardHandler))
		defer g.close()
		s := newSampler(slog.New(slog.DiscardHandler), 100*time.Millisecond, newHostSampler(procRoot), g, func() int { return enginePID }, time.Now())
		b.ReportAllocs()
		// Each iteration is one 100 ms tick, so the once-a-second full
		// process scan weighs in as it does at 10 Hz.
		now := time.Now()
		for b.Loop() {
			now = now.Add(100 * time.Millisecond)
			_ = s.sampleOnce(now)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)*10/1e9*100, "%core@10Hz")
	}
	b.Run("fakeproc+mocknvml", func(b *testing.B) { run(b, filepath.Join("testdata", "proc2"), 100, benchNVML()) })
	b.Run("realproc+mocknvml", func(b *testing.B) { run(b, "/proc", os.Getpid(), benchNVML()) })
}
