package results

import (
	"encoding/json"
	"flag"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/vllmlog"
)

// update rewrites the golden files of this package's tests (testdata/golden/*
// and testdata/decompose/*.md) from the code's output; review the diff.
var update = flag.Bool("update", false, "rewrite the golden files under testdata from the current output")

// assertPartsWithinParents fails when a part exceeds the row it is inside.
func assertPartsWithinParents(t *testing.T, rows []DecompRow) {
	t.Helper()
	for i, r := range rows {
		if r.Depth == 0 || r.Seconds == nil {
			continue
		}
		for j := i - 1; j >= 0; j-- {
			if rows[j].Depth >= r.Depth {
				continue
			}
			if p := rows[j].Seconds; p != nil && *r.Seconds > *p+1e-9 {
				t.Errorf("%q is %.3f s, more than its parent %q (%.3f s)", r.Component, *r.Seconds, rows[j].Component, *p)
			}
			break
		}
		if r.Depth > 0 && i == 0 {
			t.Errorf("part %q has no parent", r.Component)
		}
	}
}

func readFixture(t *testing.T, path string) *Results {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r Results
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return &r
}

// TestDecomposeGolden renders the decomposition of every fixture in
// testdata/decompose and compares it with the golden Markdown next to it.
// Run `go test ./coordinator -run TestDecomposeGolden -update` to rewrite
// them, then review the diff.
func TestDecomposeGolden(t *testing.T) {
	fixtures, err := filepath.Glob(filepath.Join("testdata", "decompose", "*.json"))
	if err != nil || len(fixtures) == 0 {
		t.Fatalf("no fixtures: %v", err)
	}
	// What each fixture must say, beyond matching its golden file.
	must := map[string][]string{
		"torch-engine-bootstrap-reads": {"page-cache fill: no weight files read", "bootstrap reads (libraries, imports): 1.40 GiB"},
		"torch-engine-old-node":        {"was cut to the load window 20.060–21.000 s"},
		"vllm-weight-files-cold":       {"page-cache fill (weight files, +3.09 GiB) | 3.000 |", "mincore over 2 weight files", "overlaps weights arriving in GPU memory by 2.500 s"},
		"vllm-weight-files-warm":       {"page-cache fill: not needed (weight files already cached) | n/a |"},
		"vllm-weight-files-unknown":    {"page-cache fill (estimate from the load window) | 3.000 |", "an estimate from the window"},
		"sim":                          {"page-cache fill: no weight files read", "bootstrap reads (libraries, imports): none seen"},
	}
	for _, path := range fixtures {
		name := strings.TrimSuffix(filepath.Base(path), ".json")
		t.Run(name, func(t *testing.T) {
			rows := Decompose(readFixture(t, path))
			assertPartsWithinParents(t, rows)
			got := RenderDecomposition(rows)
			golden := strings.TrimSuffix(path, ".json") + ".md"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			} else {
				want, err := os.ReadFile(golden)
				if err != nil {
					t.Fatalf("read golden (run with -update to create it): %v", err)
				}
				if diff := cmp.Diff(string(want), got); diff != "" {
					t.Errorf("decomposition of %s (-want +got):\n%s", path, diff)
				}
			}
			wants, ok := must[name]
			if !ok {
				t.Fatalf("fixture %s has no expectations in the test", name)
			}
			for _, w := range wants {
				if !strings.Contains(got, w) {
					t.Errorf("decomposition lacks %q:\n%s", w, got)
				}
			}
		})
	}
}

// TestDecomposeOverLogExcerpts combines every real vLLM log excerpt's
// phases with evidence of every kind — including sampler spans that run
// over the whole start, as the gpunode sent before issue 9 was fixed — and
// checks that no part of the decomposition exceeds its parent.
func TestDecomposeOverLogExcerpts(t *testing.T) {
	logs, err := filepath.Glob(filepath.Join("..", "..", "internal", "vllmlog", "testdata", "*.log"))
	if err != nil || len(logs) == 0 {
		t.Fatalf("no log excerpts: %v", err)
	}
	n := func(v int64) *int64 { return &v }
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
			var ph []Phase
			ready := 0.5
			var load *Phase
			for _, p := range res.Phases {
				ph = append(ph, Phase{Name: p.Name, StartS: p.Start.Seconds(), EndS: p.End.Seconds(), DurationS: p.Duration.Seconds(), Source: p.Source, Detail: p.Detail})
				ready = math.Max(ready, p.End.Seconds()+0.5)
			}
			for i := range ph {
				if ph[i].Name == "load_model" {
					load = &ph[i]
				}
			}
			wide := []Phase{
				{Name: "bootstrap_reads", StartS: 0, EndS: ready, Source: "sampler"},
				{Name: "page_cache_fill", StartS: 0, EndS: ready, Source: "sampler", Detail: "engine read 1.40 GiB"},
				{Name: "weights_on_gpu", StartS: 0, EndS: ready, Source: "sampler", Detail: "GPU memory +4 GiB"},
			}
			loadWin := func(r StartReads) *StartReads {
				if load != nil {
					r.LoadPhase, r.LoadStartS, r.LoadEndS = "load_model", load.StartS, load.EndS
				}
				return &r
			}
			variants := map[string]*StartReads{
				"old node, no attribution": nil,
				"bootstrap reads, no weight files": loadWin(StartReads{WeightFilesNote: "none found", BootstrapReadBytes: n(3 << 29), BootstrapPageCacheDeltaBytes: n(3 << 29),
					LoadReadBytes: n(0), LoadDiskReadBytes: n(0), LoadPageCacheDeltaBytes: n(0)}),
				"weight files read": loadWin(StartReads{WeightFiles: 4, WeightBytes: 16 << 30, ResidentBeforeBytes: n(0), ResidentAfterBytes: n(16 << 30),
					BootstrapReadBytes: n(1 << 30), LoadReadBytes: n(16 << 30), LoadDiskReadBytes: n(16 << 30), LoadPageCacheDeltaBytes: n(16 << 30)}),
				"weight files unknown, reads in the load": loadWin(StartReads{WeightFilesNote: "gone", BootstrapReadBytes: n(1 << 30),
					LoadReadBytes: n(8 << 30), LoadDiskReadBytes: n(8 << 30), LoadPageCacheDeltaBytes: n(8 << 30)}),
			}
			for vname, reads := range variants {
				t.Run(vname, func(t *testing.T) {
					r := &Results{Engine: EngineFacts{ReadyS: ready, Phases: ph, Timeline: append(append([]Phase{}, wide...), ph...), Reads: reads},
						Runs: []Run{{Label: "cold_1", TTFTS: 0.4}}, Warm: &WarmStats{N: 3, MedianS: 0.5}}
					rows := Decompose(r)
					assertPartsWithinParents(t, rows)
					text := RenderDecomposition(rows)
					if vname == "bootstrap reads, no weight files" {
						want := "page-cache fill: no weight files read"
						if load == nil {
							want = "page-cache fill: not attributable"
						}
						if !strings.Contains(text, want) {
							t.Errorf("decomposition lacks %q:\n%s", want, text)
						}
					}
				})
			}
		})
	}
}

func TestStartReadsFromUntrustedProto(t *testing.T) {
	n := func(v int64) *int64 { return &v }
	tests := []struct {
		name  string
		in    *pb.StartReads
		check func(*StartReads) bool
	}{
		{"nil", nil, func(r *StartReads) bool { return r == nil }},
		{"negative read is not measured", &pb.StartReads{LoadEngineReadBytes: n(-5), BootstrapEngineReadBytes: n(7)},
			func(r *StartReads) bool { return r.LoadReadBytes == nil && *r.BootstrapReadBytes == 7 }},
		{"negative page-cache delta is kept", &pb.StartReads{LoadPageCacheDeltaBytes: n(-5)}, func(r *StartReads) bool { return *r.LoadPageCacheDeltaBytes == -5 }},
		{"window ending before it starts is dropped", &pb.StartReads{LoadPhase: "load_model", LoadStartS: 5, LoadEndS: 2},
			func(r *StartReads) bool { return r.LoadPhase == "" && r.LoadStartS == 0 }},
		{"NaN window is dropped", &pb.StartReads{LoadPhase: "load_model", LoadStartS: math.NaN(), LoadEndS: 2}, func(r *StartReads) bool { return r.LoadPhase == "" }},
		{"negative file count", &pb.StartReads{WeightFiles: -3, WeightBytes: -1}, func(r *StartReads) bool { return r.WeightFiles == 0 && r.WeightBytes == 0 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := startReads(tt.in); !tt.check(got) {
				t.Errorf("startReads(%v) = %+v", tt.in, got)
			}
		})
	}
}
