package coordinator

import (
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

// TestJudgeReset checks the reset verification on the five scrapes around
// its probes: before the cold probe, after it, after the hot one, after the
// reset, and after the probe that followed the reset.
func TestJudgeReset(t *testing.T) {
	v1 := func(hits ...float64) (ms [5]map[string]float64) {
		for i, h := range hits {
			ms[i] = map[string]float64{"vllm:prefix_cache_hits_total": h, "vllm:prefix_cache_queries_total": 100 * float64(i)}
		}
		return ms
	}
	v0 := func(rates ...float64) (ms [5]map[string]float64) {
		for i, r := range rates {
			ms[i] = map[string]float64{v0HitRate: r}
		}
		return ms
	}
	tests := []struct {
		name    string
		ms      [5]map[string]float64
		source  string
		wantErr string // "" when verified
	}{
		{"V1 real reset", v1(10, 10, 90, 90, 90), "counters", ""},
		{"V1 cold probe with a template hit, real reset", v1(0, 16, 112, 112, 128), "counters", ""},
		{"V1 reset answered 200 but did nothing", v1(10, 10, 90, 90, 170), "counters", "was not reset: the probe cached before it still hit 80 tokens"},
		{"V1 caching not caching", v1(0, 0, 0, 0, 0), "counters", "prefix caching is not caching"},
		{"V1 older counter names", func() (ms [5]map[string]float64) {
			for i, h := range []float64{0, 0, 80, 80, 0} {
				ms[i] = map[string]float64{"vllm:gpu_prefix_cache_hits_total": h, "vllm:gpu_prefix_cache_queries_total": 100 * float64(i)}
			}
			return ms
		}(), "counters", ""},
		{"V0 gauge real reset", v0(0.5, 0.4, 0.6, 0.6, 0.5), "gauge", ""},
		{"V0 gauge no-op reset", v0(0.5, 0.4, 0.6, 0.6, 0.7), "gauge", "was not reset"},
		{"V0 gauge not caching", v0(0.5, 0.4, 0.4, 0.4, 0.3), "gauge", "not caching"},
		{"no prefix metrics", [5]map[string]float64{{}, {}, {}, {}, {}}, "", "cannot be verified"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			chk := results.PrefixResetCheck{HTTPStatus: 200}
			err := judgeReset(tt.ms, &chk)
			if tt.wantErr == "" && err != nil {
				t.Fatalf("a real reset was refused: %v", err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
			}
			if chk.Source != tt.source {
				t.Errorf("source %q, want %q", chk.Source, tt.source)
			}
		})
	}
}

func TestPrefixSpecValidate(t *testing.T) {
	tests := []struct {
		name string
		spec PrefixSpec
		want string
	}{
		{"negative prefix", PrefixSpec{PrefixLens: []int{-1}}, "prefix_lens -1 is out of range"},
		{"hit ratio above 1", PrefixSpec{HitRatios: []float64{1.5}}, "hit_ratios 1.5 is out of range"},
		{"requests longer than the context", PrefixSpec{PrefixLens: []int{4096}, Knobs: knobsMML(2048)}, "max_model_len 2048 is shorter than the longest request"},
		{"no shareable prefix for the hit-ratio sweep", PrefixSpec{PrefixLens: []int{0}}, "hit_prefix_len 0 is out of range"},
		{"short level", PrefixSpec{LevelDuration: time.Millisecond}, "level_duration_ms 1ms is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ValidatePrefix(tt.spec)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
	if err := ValidatePrefix(PrefixSpec{}); err != nil {
		t.Fatalf("the defaults are invalid: %v", err)
	}
	if s := (PrefixSpec{}).withDefaults(); s.HitPrefixLen != 1024 {
		t.Errorf("default hit prefix %d, want 1024 (the largest default prefix up to 1024)", s.HitPrefixLen)
	}
}

func knobsMML(n int32) *pb.EngineKnobs { return &pb.EngineKnobs{MaxModelLen: n} }
