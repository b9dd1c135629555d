package coordinator

import (
	"reflect"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/testing/protocmp"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

// TestSpecRequestRoundTrip: for every experiment, a spec with every field
// set survives spec → request → spec, and the request has every field set,
// so a field added to the spec or the request but not to both conversions
// fails here.
func TestSpecRequestRoundTrip(t *testing.T) {
	sel := Selection{GPUNode: "g1", Selector: map[string]string{"gpu": "h200"}, All: true, AgentsSelector: map[string]string{"zone": "a"}}
	knobs := &pb.EngineKnobs{Model: "m", Gpu: "h200", MaxModelLen: 4096}
	tests := []struct {
		name      string
		spec      any
		roundTrip func() (any, any) // the request and the spec it gives back
	}{
		{"sweep", nil, nil},
		{"baseline", nil, nil},
		{"kvscale", nil, nil},
		{"prefix", nil, nil},
		{"presets", nil, nil},
	}
	sweep := SweepSpec{RunID: "r", OutDir: "o", Profile: "sim", Knobs: knobs, BaseURL: "http://h/v1", Model: "m", API: "chat",
		Load: &pb.LoadModel{Kind: "closed", DurationMs: 1000}, Levels: []float64{1, 2}, Workload: &pb.Workload{MaxTokens: 8},
		Generator: &pb.WorkloadGen{Kind: "synthetic"}, AgentLoss: "abort", MaxAgents: 3, AutoDuration: true, MaxDuration: 3 * time.Minute, Selection: sel,
		TargetCAPEM: []byte("-----BEGIN CERTIFICATE-----"), TargetInsecureSkipVerify: true, TargetTransport: "h2", TargetFirstTokenClock: "read_return"}
	baseline := BaselineSpec{Profile: "sim", Knobs: knobs, Prompt: "p", MaxTokens: 9, WarmRuns: 2, Repeats: 3, API: "chat", ColdMode: "page-cache",
		OutDir: "o", RunID: "r", Selection: sel}
	kv := KVScaleSpec{RunID: "r", OutDir: "o", Profile: "sim", Knobs: knobs, API: "completions", MaxModelLens: []int{2048, 4096},
		Utilizations: []float64{0.5, 0.9}, MaxNumSeqs: 64, OutputLen: 32, LevelDuration: 4 * time.Second, Warmup: time.Second,
		MaxConcurrency: 128, MaxAgents: 2, Selection: sel}
	prefix := PrefixSpec{RunID: "r", OutDir: "o", Profile: "sim", Knobs: knobs, API: "completions", PrefixLens: []int{0, 256}, SuffixLen: 32,
		HitRatios: []float64{0, 1}, HitPrefixLen: 512, Concurrency: 4, Repeats: 5, OutputLen: 16, LevelDuration: 2 * time.Second,
		Warmup: 500 * time.Millisecond, SkipOff: true, MaxAgents: 1, Selection: sel}
	presets := PresetsSpec{RunID: "r", OutDir: "o", Profile: "sim", Knobs: knobs, API: "completions", MaxNumBatchedTokens: []int{2048, 8192},
		MaxNumSeqs: []int{32, 128}, ChunkedPrefill: []bool{true, false}, MaxModelLen: 8192, Concurrencies: []int{1, 8}, InputLen: 512,
		OutputLen: 64, SLOTTFTMs: 200, MaxTTFTMs: 1000, LevelDuration: 3 * time.Second, Warmup: time.Second, MaxAgents: 2, Selection: sel}
	tests[0].spec, tests[0].roundTrip = sweep, func() (any, any) { r := sweep.Request(); return r, SweepSpecFromProto(r) }
	tests[1].spec, tests[1].roundTrip = baseline, func() (any, any) { r := baseline.Request(); return r, BaselineSpecFromProto(r) }
	tests[2].spec, tests[2].roundTrip = kv, func() (any, any) { r := kv.Request(); return r, KVScaleSpecFromProto(r) }
	tests[3].spec, tests[3].roundTrip = prefix, func() (any, any) { r := prefix.Request(); return r, PrefixSpecFromProto(r) }
	tests[4].spec, tests[4].roundTrip = presets, func() (any, any) { r := presets.Request(); return r, PresetsSpecFromProto(r) }
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if f := zeroField(reflect.ValueOf(tt.spec)); f != "" {
				t.Fatalf("the test's spec leaves %s unset: set it, so that the round trip covers it", f)
			}
			req, back := tt.roundTrip()
			if f := zeroField(reflect.ValueOf(req).Elem()); f != "" {
				t.Errorf("the request leaves %s unset: Request does not fill it from the spec", f)
			}
			if d := cmp.Diff(tt.spec, back, protocmp.Transform()); d != "" {
				t.Errorf("spec → request → spec differs (-want +got):\n%s", d)
			}
		})
	}
}

// zeroField returns the name of the first exported field of struct v that
// holds its zero value, or "".
func zeroField(v reflect.Value) string {
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.IsExported() && v.Field(i).IsZero() {
			return f.Name
		}
	}
	return ""
}

// TestSpecFromProtoKeepsNilLists: an empty repeated field stays nil in the
// spec, which withDefaults reads as "use the defaults".
func TestSpecFromProtoKeepsNilLists(t *testing.T) {
	if s := KVScaleSpecFromProto(&pb.RunKVScaleRequest{}); s.MaxModelLens != nil {
		t.Errorf("kvscale max_model_lens %v, want nil", s.MaxModelLens)
	}
	if s := PrefixSpecFromProto(&pb.RunPrefixRequest{}); s.PrefixLens != nil || s.HitRatios != nil {
		t.Errorf("prefix lens %v ratios %v, want nil", s.PrefixLens, s.HitRatios)
	}
	if s := PresetsSpecFromProto(&pb.RunPresetsRequest{}); s.MaxNumBatchedTokens != nil || s.MaxNumSeqs != nil || s.Concurrencies != nil {
		t.Errorf("presets lists %v %v %v, want nil", s.MaxNumBatchedTokens, s.MaxNumSeqs, s.Concurrencies)
	}
	if got := narrow([]int{1 << 40, -(1 << 40)}); got[0] != 1<<31-1 || got[1] != -1<<31 {
		t.Errorf("narrow = %v, want the int32 ends", got)
	}
}
