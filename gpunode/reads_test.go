package gpunode

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/internal/vllmlog"
)

// stream builds a sample every step from spawn to ready: engine reads and
// page cache grow by readPerStep(t) bytes in the step ending at t, GPU
// memory by gpuPerStep(t).
func stream(spawn time.Time, step, ready time.Duration, readPerStep, gpuPerStep func(t time.Duration) uint64) (Sample, []Sample) {
	base := Sample{Time: spawn.Add(-step / 2), GPUs: []GPUSample{{MemoryUsedBytes: 600 << 20}}, DiskReadBytes: 50 << 30, PageCacheBytes: 10 << 30}
	var out []Sample
	cur := base
	for t := step; t <= ready; t += step {
		d := readPerStep(t)
		cur.Time = spawn.Add(t)
		cur.EngineReadBytes += d
		cur.DiskReadBytes += d
		cur.PageCacheBytes += d
		cur.GPUs = []GPUSample{{MemoryUsedBytes: cur.GPUs[0].MemoryUsedBytes + gpuPerStep(t)}}
		out = append(out, cur)
	}
	return base, out
}

func phaseNamed(tl []vllmlog.Phase, name string) (vllmlog.Phase, bool) {
	for _, p := range tl {
		if p.Name == name {
			return p, true
		}
	}
	return vllmlog.Phase{}, false
}

// assertInside fails when a sampler phase of tl leaves its window: the
// weight load for page_cache_fill and weights_on_gpu, spawn → load start
// for bootstrap_reads, spawn → ready otherwise.
func assertInside(t *testing.T, tl []vllmlog.Phase, ready time.Duration) {
	t.Helper()
	ls, le, win := loadWindow(tl)
	for _, p := range tl {
		if p.Source != vllmlog.SourceSampler {
			continue
		}
		lo, hi := time.Duration(0), ready
		switch {
		case win && (p.Name == PhasePageCacheFill || p.Name == PhaseWeightsOnGPU):
			lo, hi = ls, le
		case win && p.Name == PhaseBootstrapReads:
			hi = ls
		}
		if p.Start < lo || p.End > hi || p.End < p.Start || p.Duration != p.End-p.Start {
			t.Errorf("%s spans %v–%v (duration %v), outside its window %v–%v: %s", p.Name, p.Start, p.End, p.Duration, lo, hi, p.Detail)
		}
	}
}

func TestReadsAttributedToTheirWindow(t *testing.T) {
	const step = 100 * time.Millisecond
	spawn := time.Now()
	sec := func(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
	logPhases := func(loadStart, loadEnd time.Duration) []vllmlog.Phase {
		return []vllmlog.Phase{
			{Name: vllmlog.PhaseBootstrap, Start: 0, End: loadStart, Duration: loadStart, Source: vllmlog.SourceLog},
			{Name: vllmlog.PhaseLoadModel, Start: loadStart, End: loadEnd, Duration: loadEnd - loadStart, Source: vllmlog.SourceLog},
		}
	}
	// torch-engine on the H200: 1.4 GiB of libraries read over a 20 s
	// bootstrap, weights built on the GPU in 0.94 s, and (after the load)
	// reads by other processes on the host disks.
	importReads := func(t time.Duration) uint64 {
		if t <= sec(20) {
			return (14 << 30) / 2000
		}
		return 0
	}
	loadReads := func(t time.Duration) uint64 {
		if t > sec(20) && t <= sec(20.9) {
			return (3 << 30) / 9
		}
		return 0
	}
	gpuInLoad := func(t time.Duration) uint64 {
		switch {
		case t == sec(2): // the CUDA context, during the bootstrap
			return 500 << 20
		case t > sec(20) && t <= sec(20.9):
			return (3 << 30) / 9
		}
		return 0
	}
	resident := func(before, after int64) weightSet {
		return weightSet{files: []string{"a.safetensors", "b.safetensors"}, bytes: 3 << 30, residentBefore: before, residentAfter: after}
	}
	tests := []struct {
		name      string
		phases    []vllmlog.Phase
		reads     func(time.Duration) uint64
		weights   weightSet
		generated string
		fill      string // the page_cache_fill detail starts with this
		boot      string // the bootstrap_reads detail holds this ("" when no phase)
	}{
		{name: "torch-engine bootstrap reads, no weight files", phases: logPhases(sec(20), sec(20.94)), reads: importReads,
			weights: weightSet{note: "no weight files found", residentBefore: -1, residentAfter: -1},
			fill:    "no weight files read: no weight files known (no weight files found) and no reads inside the load_model window", boot: "engine read 1.40 GiB"},
		{name: "vLLM cold, weight files read in the load", phases: logPhases(sec(20), sec(21)), reads: func(t time.Duration) uint64 { return importReads(t) + loadReads(t) },
			weights: resident(0, 3<<30), fill: "weight files +3.00 GiB into the page cache", boot: "engine read 1.40 GiB"},
		{name: "vLLM warm restart, weight files already resident", phases: logPhases(sec(20), sec(21)), reads: importReads,
			weights: resident(3<<30, 3<<30), fill: "not observed: the weight files were already in the page cache", boot: "engine read 1.40 GiB"},
		{name: "load-format dummy", phases: logPhases(sec(20), sec(21)), reads: importReads, weights: resident(0, 0), generated: "--load-format dummy: random",
			fill: "no weight files read: --load-format dummy", boot: "engine read 1.40 GiB"},
		{name: "weight files unknown, reads in the load", phases: logPhases(sec(20), sec(21)), reads: loadReads,
			weights: weightSet{note: "gone", residentBefore: -1, residentAfter: -1}, fill: "estimate from the load_model window", boot: "engine read 0.00 GiB"},
		{name: "no load phase in the log", reads: importReads, weights: weightSet{note: "gone", residentBefore: -1, residentAfter: -1},
			fill: "not observed: no weight files known (gone) and the log marks no weight-load phase"},
		{name: "sim", phases: logPhases(sec(1), sec(2)), reads: func(time.Duration) uint64 { return 0 },
			weights: findWeights(KindSim, "m", nil), fill: "no weight files read: no weight files known (simulated engine", boot: "not observed: no reads before the weight load"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ready := sec(22)
			base, samples := stream(spawn, step, ready, tt.reads, gpuInLoad)
			tl, reads := buildTimeline(timelineInput{phases: tt.phases, spawn: spawn, ready: spawn.Add(ready), baseline: base, samples: samples,
				nvml: true, weights: tt.weights, generated: tt.generated})
			assertInside(t, tl, ready)
			fill, ok := phaseNamed(tl, PhasePageCacheFill)
			if !ok || !strings.HasPrefix(fill.Detail, tt.fill) {
				t.Errorf("page_cache_fill = %+v, want a detail starting %q", fill, tt.fill)
			}
			boot, ok := phaseNamed(tl, PhaseBootstrapReads)
			if ok != (tt.boot != "") || !strings.Contains(boot.Detail, tt.boot) {
				t.Errorf("bootstrap_reads = %+v (present %v), want %q", boot, ok, tt.boot)
			}
			if tt.phases != nil {
				if reads.BootstrapRead == nil || reads.LoadRead == nil {
					t.Fatalf("reads = %+v: windows not measured", reads)
				}
				// Every byte the engine read before ready is in exactly one
				// window or after the load.
				var total uint64
				if len(samples) > 0 {
					total = samples[len(samples)-1].EngineReadBytes
				}
				if got := *reads.BootstrapRead + *reads.LoadRead; got > int64(total) {
					t.Errorf("bootstrap %d + load %d bytes exceed the %d the engine read", *reads.BootstrapRead, *reads.LoadRead, total)
				}
			}
		})
	}
}

// TestSamplerPhasesInsideWindowOverGoldenLogs runs every real vLLM log
// excerpt's phases against a worst-case sample stream (reads and GPU
// memory rising from spawn to ready) and checks that no sampler phase
// leaves its window: the fault behind a 21 s "page-cache fill" in a 0.94 s
// load.
func TestSamplerPhasesInsideWindowOverGoldenLogs(t *testing.T) {
	logs, err := filepath.Glob(filepath.Join("..", "internal", "vllmlog", "testdata", "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no golden logs: %v", err)
	}
	for _, path := range logs {
		t.Run(strings.TrimSuffix(filepath.Base(path), ".log"), func(t *testing.T) {
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			res, err := vllmlog.ParseLog(f)
			if err != nil {
				t.Fatal(err)
			}
			var ready time.Duration
			for _, p := range res.Phases {
				ready = max(ready, p.End)
			}
			ready += time.Second
			spawn := time.Now()
			base, samples := stream(spawn, 100*time.Millisecond, ready, func(time.Duration) uint64 { return 64 << 20 }, func(time.Duration) uint64 { return 300 << 20 })
			for _, w := range []weightSet{{note: "unknown", residentBefore: -1, residentAfter: -1}, {files: []string{"w"}, bytes: 1 << 30, residentBefore: 0, residentAfter: 1 << 30}} {
				tl, _ := buildTimeline(timelineInput{phases: res.Phases, spawn: spawn, ready: spawn.Add(ready), baseline: base, samples: samples, nvml: true, log: res, weights: w})
				assertInside(t, tl, ready)
			}
		})
	}
}

func TestWeightResidency(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "model.safetensors")
	data := make([]byte, 3<<20+123)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	w := findWeights(KindCommand, dir, nil)
	if len(w.files) != 1 || w.bytes != int64(len(data)) || w.note != "" {
		t.Fatalf("findWeights = %+v", w)
	}
	// Just written, every page is in the page cache; the count never
	// passes the file's size.
	if w.residentBefore != int64(len(data)) {
		t.Errorf("resident %d bytes of a %d-byte file just written", w.residentBefore, len(data))
	}
	if got := residentBytes([]string{filepath.Join(dir, "missing")}); got != -1 {
		t.Errorf("residentBytes(missing) = %d, want -1", got)
	}
	none := findWeights(KindCommand, filepath.Join(dir, "no-such-model"), []string{"HF_HUB_CACHE=" + dir})
	if len(none.files) != 0 || !strings.Contains(none.note, "no-such-model") || none.residentBefore != -1 {
		t.Errorf("findWeights(unknown) = %+v", none)
	}
}

func TestGeneratedWeights(t *testing.T) {
	tests := []struct {
		name string
		argv []string
		want bool
	}{
		{"separate value", []string{"vllm", "serve", "m", "--load-format", "dummy"}, true},
		{"equals", []string{"vllm", "serve", "m", "--load-format=dummy"}, true},
		{"safetensors", []string{"vllm", "serve", "m", "--load-format", "safetensors"}, false},
		{"flag last", []string{"vllm", "serve", "--load-format"}, false},
		{"none", []string{"python3", "serve_torch_openai.py"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := generatedWeights(tt.argv) != ""; got != tt.want {
				t.Errorf("generatedWeights(%q) = %v, want %v", tt.argv, got, tt.want)
			}
		})
	}
}

func TestStartReadsToPB(t *testing.T) {
	r := StartReads{WeightFiles: 2, WeightBytes: 3 << 30, ResidentBefore: new(int64(0)), ResidentAfter: new(int64(3 << 30)),
		LoadPhase: vllmlog.PhaseLoadModel, LoadStart: 1500 * time.Millisecond, LoadEnd: 2 * time.Second, LoadRead: new(int64(7))}
	p := r.toPB()
	if p.GetWeightFiles() != 2 || p.GetWeightResidentAfterBytes() != 3<<30 || p.WeightResidentBeforeBytes == nil || p.GetLoadStartS() != 1.5 ||
		p.GetLoadEndS() != 2 || p.GetLoadEngineReadBytes() != 7 || p.BootstrapEngineReadBytes != nil {
		t.Errorf("toPB = %v", p)
	}
}
