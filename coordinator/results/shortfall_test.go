package results

import (
	"strings"
	"testing"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

func TestJudgeShortfall(t *testing.T) {
	t0 := time.Unix(1000, 0).UnixNano()
	sec := func(s float64) int64 { return t0 + int64(s*1e9) }
	tests := []struct {
		name      string
		load      *pb.LoadModel
		value     float64
		requests  uint64
		errors    uint64
		coverage  map[string]*LevelCoverage
		wantShort string // "" when the level must not be degraded
		wantPlan  float64
	}{
		{name: "closed count met", load: &pb.LoadModel{Kind: "closed", Requests: 312}, value: 4, requests: 300, errors: 12, wantPlan: 312},
		{name: "closed count short", load: &pb.LoadModel{Kind: "closed", Requests: 312}, value: 4, requests: 238,
			wantShort: "delivered 238 of 312 planned requests (−23.7%)", wantPlan: 312},
		{name: "constant rate within 5%", load: &pb.LoadModel{Kind: "constant", DurationMs: 10_000}, value: 20, requests: 192, wantPlan: 200},
		{name: "constant rate short", load: &pb.LoadModel{Kind: "constant", DurationMs: 10_000}, value: 20, requests: 150,
			wantShort: "delivered 150 of 200 planned requests (−25.0%)", wantPlan: 200},
		{name: "poisson within its noise", load: &pb.LoadModel{Kind: "poisson", DurationMs: 10_000}, value: 10, requests: 88, wantPlan: 100},
		{name: "poisson beyond its noise", load: &pb.LoadModel{Kind: "poisson", DurationMs: 10_000}, value: 10, requests: 60,
			wantShort: "delivered 60 of 100 planned requests (−40.0%)", wantPlan: 100},
		{name: "ramp", load: &pb.LoadModel{Kind: "ramp", DurationMs: 10_000, StartRate: 0}, value: 20, requests: 100, wantPlan: 100},
		{name: "closed by duration, all final", load: &pb.LoadModel{Kind: "closed", DurationMs: 10_000}, value: 2,
			coverage: map[string]*LevelCoverage{"a1": {Final: true}, "a2": {Final: true}}},
		{name: "closed by duration, one lost at 4 s", load: &pb.LoadModel{Kind: "closed", DurationMs: 10_000}, value: 2,
			coverage:  map[string]*LevelCoverage{"a1": {Final: true}, "a2": {Lost: true, lastEndNs: sec(4)}},
			wantShort: "delivered 14.0 of 20.0 planned agent-seconds (−30.0%): a2 covered 4.0 s of 10.0 s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := &LevelResult{Value: tt.value, Requests: tt.requests + tt.errors, Successes: tt.requests, Errors: tt.errors, Coverage: tt.coverage}
			judgeShortfall(ProtoJSON(tt.load), l, t0)
			if l.Shortfall != tt.wantShort || l.Degraded != (tt.wantShort != "") {
				t.Errorf("shortfall %q degraded %v; want %q", l.Shortfall, l.Degraded, tt.wantShort)
			}
			if tt.wantPlan > 0 && (l.PlannedRequests == nil || *l.PlannedRequests != tt.wantPlan) {
				t.Errorf("planned %v, want %g", l.PlannedRequests, tt.wantPlan)
			}
			if tt.wantPlan == 0 && l.PlannedRequests != nil {
				t.Errorf("planned %v for a load with no fixed count, want null", *l.PlannedRequests)
			}
			if strings.Contains(tt.name, "lost") && l.Coverage["a2"].CoveredS != 4 {
				t.Errorf("a2 covered_s %v, want 4", l.Coverage["a2"].CoveredS)
			}
		})
	}
}
