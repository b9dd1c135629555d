package coordinator

import (
	"context"
	"github.com/ttftlab/ttftlab/coordinator/results"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// budgetAgent answers each level with one final report: ok successes, and
// failed errors of kind connect_refused with abort as its abort_reason.
type budgetAgent struct {
	ok, failed, interrupted uint64
	abort                   string

	mu     sync.Mutex
	levels int
}

func (a *budgetAgent) RunProbe(_ context.Context, req *pb.RunProbeRequest, fn func(*pb.RunProbeResponse) error) error {
	a.mu.Lock()
	a.levels++
	a.mu.Unlock()
	now := time.Now()
	set := hdr.Set{}
	for range a.ok {
		set.Get(hdr.TTFT).Record(10 * time.Millisecond)
		set.Get(hdr.E2E).Record(20 * time.Millisecond)
	}
	rep := &pb.IntervalReport{AgentId: req.GetAgentId(), Seq: 1, RequestsOk: a.ok, RequestsFailed: a.failed, RequestsInterrupted: a.interrupted,
		StartUnixNano: now.UnixNano(), EndUnixNano: now.Add(time.Second).UnixNano(), Final: true, AbortReason: a.abort}
	if a.failed > 0 {
		rep.ErrorsByKind = map[string]uint64{"connect_refused": a.failed}
	}
	for m, h := range set {
		b, _ := h.Encode()
		rep.Histograms = append(rep.Histograms, &pb.EncodedHistogram{Metric: m, V2: b})
	}
	return fn(&pb.RunProbeResponse{Report: rep})
}

func TestSweepLevelFailures(t *testing.T) {
	const reason = "error budget spent: 12 of 12 attempts (100%) failed within 5s, over the 50% limit: connect_refused=12"
	tests := []struct {
		name       string
		agent      *budgetAgent
		wantErr    string // from RunSweep; empty when the run itself ends without error
		wantLevels int    // levels the agent ran
		wantLevel  string // level 1's error
		wantRun    string // results.json error
	}{
		{"an abort reason fails the level and stops the sweep", &budgetAgent{failed: 12, interrupted: 3, abort: reason}, "level 1 failed: agent agent-a1: " + reason,
			1, "agent agent-a1: " + reason, "level 1 failed: agent agent-a1: error budget spent"},
		{"a level without a success is failed", &budgetAgent{failed: 4}, "", 2, "no request succeeded (4 attempts, 4 errors)",
			"level 1 (1) failed: no request succeeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := sweepCoordinator(t, map[string]Agent{"a1": tt.agent})
			res, err := c.RunSweep(context.Background(), SweepSpec{RunID: "s", Levels: []float64{1, 2},
				Load: &pb.LoadModel{Kind: "closed", DurationMs: 1000}}, nil)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Fatalf("RunSweep = %v, want error %q", err, tt.wantErr)
			}
			if tt.agent.levels != tt.wantLevels {
				t.Errorf("agent ran %d levels, want %d", tt.agent.levels, tt.wantLevels)
			}
			evs, err := ReadEvents(filepath.Join(res.Dir, "events.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			sr, err := results.BuildSweep(evs)
			if err != nil {
				t.Fatal(err)
			}
			l := sr.Levels[0]
			if l.Status != "failed" || !strings.Contains(l.Error, tt.wantLevel) {
				t.Errorf("level 1 status %q error %q, want failed with %q", l.Status, l.Error, tt.wantLevel)
			}
			a := tt.agent
			if l.Requests != a.ok+a.failed+a.interrupted || l.Successes != a.ok || l.Errors != a.failed || l.Interrupted != a.interrupted {
				t.Errorf("level 1 requests %d = %d + %d + %d, want %d attempts = %d ok + %d failed + %d interrupted",
					l.Requests, l.Successes, l.Errors, l.Interrupted, a.ok+a.failed+a.interrupted, a.ok, a.failed, a.interrupted)
			}
			if sr.Status != "failed" || !strings.Contains(sr.Error, tt.wantRun) {
				t.Errorf("sweep status %q error %q, want failed with %q", sr.Status, sr.Error, tt.wantRun)
			}
			md, err := os.ReadFile(filepath.Join(res.Dir, results.SweepReport))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(md), "**failed**") {
				t.Errorf("sweep.md does not mark the failed level:\n%s", md)
			}
		})
	}
}
