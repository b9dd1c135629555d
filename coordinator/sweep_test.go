package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/ttftlab/ttftlab/coordinator/results"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/membership"
	"github.com/ttftlab/ttftlab/internal/specerr"
)

// sweepAgent sends `intervals` reports of `perInterval` requests each; the
// TTFT grows with the level's concurrency. When dieAfter > 0 it fails after
// that many intervals.
type sweepAgent struct {
	intervals, perInterval, dieAfter int
	warmup                           bool
	good                             int // per interval

	mu   sync.Mutex
	reqs []*pb.RunProbeRequest
}

func (a *sweepAgent) RunProbe(ctx context.Context, req *pb.RunProbeRequest, fn func(*pb.RunProbeResponse) error) error {
	a.mu.Lock()
	a.reqs = append(a.reqs, req)
	a.mu.Unlock()
	start := time.Now()
	for i := 0; i < a.intervals; i++ {
		if a.dieAfter > 0 && i == a.dieAfter {
			return errors.New("rpc error: code = Unavailable desc = connection reset")
		}
		set := hdr.Set{}
		for j := 0; j < a.perInterval; j++ {
			set.Get(hdr.TTFT).Record(time.Duration(req.GetLoad().GetConcurrency()) * 10 * time.Millisecond)
			set.Get(hdr.TTFTSched).Record(time.Duration(req.GetLoad().GetConcurrency()) * 10 * time.Millisecond)
			set.Get(hdr.E2E).Record(time.Duration(req.GetLoad().GetConcurrency()) * 20 * time.Millisecond)
		}
		rep := &pb.IntervalReport{AgentId: req.GetAgentId(), Seq: uint64(i + 1), RequestsOk: uint64(a.perInterval), OutputTokens: uint64(a.perInterval) * 10,
			StartUnixNano: start.Add(time.Duration(i) * time.Second).UnixNano(), EndUnixNano: start.Add(time.Duration(i+1) * time.Second).UnixNano(),
			Final: i == a.intervals-1, Usage: pb.UsageSource_USAGE_SOURCE_CONTINUOUS, Warmup: a.warmup && i == 0, RequestsGood: uint64(a.good)}
		for m, h := range set {
			b, _ := h.Encode()
			rep.Histograms = append(rep.Histograms, &pb.EncodedHistogram{Metric: m, V2: b})
		}
		if err := fn(&pb.RunProbeResponse{Report: rep}); err != nil {
			return err
		}
	}
	return nil
}

// multiDialer hands out one fake agent per address.
type multiDialer struct {
	gpu    GPUNode
	agents map[string]Agent
}

func (d multiDialer) GPUNode(context.Context, string) (GPUNode, io.Closer, error) {
	return d.gpu, nopCloser{}, nil
}
func (d multiDialer) Agent(_ context.Context, addr string) (Agent, io.Closer, error) {
	return d.agents[addr], nopCloser{}, nil
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

func sweepCoordinator(t *testing.T, agents map[string]Agent) *Coordinator {
	t.Helper()
	ms := staticMembers{{Name: "g", Meta: membership.Meta{Role: membership.RoleGPUNode, GRPCAddr: "g:1"}, State: "alive"}}
	for addr := range agents {
		ms = append(ms, membership.Member{Name: "agent-" + addr, Meta: membership.Meta{Role: membership.RoleAgent, GRPCAddr: addr}, State: "alive"})
	}
	cfg := DefaultConfig()
	cfg.OutDir = t.TempDir()
	cfg.DiscoveryTimeout = time.Second
	return New(cfg, ms, multiDialer{gpu: &fakeGPU{}, agents: agents}, nil)
}

func TestSweepSplitsLevelsAcrossAgentsAndMergesExactly(t *testing.T) {
	a1 := &sweepAgent{intervals: 3, perInterval: 5, warmup: true}
	a2 := &sweepAgent{intervals: 3, perInterval: 7, warmup: true}
	c := sweepCoordinator(t, map[string]Agent{"a1": a1, "a2": a2})
	res, err := c.RunSweep(context.Background(), SweepSpec{RunID: "s1", Levels: []float64{2, 8},
		Load: &pb.LoadModel{Kind: "closed", DurationMs: 3000}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Both agents got both levels, with complementary segments and one barrier time.
	for _, a := range []*sweepAgent{a1, a2} {
		if len(a.reqs) != 2 {
			t.Fatalf("agent got %d levels, want 2", len(a.reqs))
		}
	}
	segs := map[string]bool{}
	for i := range 2 {
		if a1.reqs[i].GetStartUnixNano() != a2.reqs[i].GetStartUnixNano() || a1.reqs[i].GetStartUnixNano() == 0 {
			t.Errorf("level %d: agents start at different barrier times", i)
		}
		if a1.reqs[i].GetLoad().GetConcurrency() != []int32{2, 8}[i] {
			t.Errorf("level %d: concurrency %d", i, a1.reqs[i].GetLoad().GetConcurrency())
		}
		segs[a1.reqs[i].GetSegment().GetStart()+"-"+a1.reqs[i].GetSegment().GetEnd()] = true
		segs[a2.reqs[i].GetSegment().GetStart()+"-"+a2.reqs[i].GetSegment().GetEnd()] = true
	}
	if !segs["0/2-1/2"] || !segs["1/2-2/2"] || len(segs) != 2 {
		t.Errorf("segments %v, want 0/2-1/2 and 1/2-2/2", segs)
	}
	b, err := os.ReadFile(filepath.Join(res.Dir, "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	evs, _ := ReadEvents(filepath.Join(res.Dir, "events.jsonl"))
	sr, err := results.BuildSweep(evs)
	if err != nil {
		t.Fatalf("results.BuildSweep: %v\n%s", err, b)
	}
	if len(sr.Levels) != 2 {
		t.Fatalf("%d levels, want 2", len(sr.Levels))
	}
	for _, l := range sr.Levels {
		// Warm-up intervals (the first of each agent) are excluded: 2×5 + 2×7.
		if l.Requests != 24 || l.Metrics[hdr.TTFT].Count != 24 || l.WarmupIntervals != 2 {
			t.Errorf("level %g: requests %d, ttft count %d, warm-up intervals %d; want 24, 24, 2", l.Value, l.Requests, l.Metrics[hdr.TTFT].Count, l.WarmupIntervals)
		}
		if l.Degraded {
			t.Errorf("level %g degraded without a loss", l.Value)
		}
	}
	if sr.Levels[1].Metrics[hdr.TTFT].P50 <= sr.Levels[0].Metrics[hdr.TTFT].P50 {
		t.Errorf("TTFT did not grow with the level")
	}
	md, _ := os.ReadFile(filepath.Join(res.Dir, results.SweepReport))
	for _, want := range []string{"| c=2 | 2 | 24 |", "| c=8 | 2 | 24 |", "TTFT p50 more than doubles by c=8", results.SweepLatencySVG} {
		if !strings.Contains(string(md), want) {
			t.Errorf("sweep.md lacks %q:\n%s", want, md)
		}
	}
	for _, f := range []string{results.SweepLatencySVG, results.SweepThroughSVG} {
		if _, err := os.Stat(filepath.Join(res.Dir, f)); err != nil {
			t.Error(err)
		}
	}
}

func TestSweepKeepsALostAgentsIntervals(t *testing.T) {
	good := &sweepAgent{intervals: 3, perInterval: 5}
	dying := &sweepAgent{intervals: 3, perInterval: 4, dieAfter: 2}
	c := sweepCoordinator(t, map[string]Agent{"good": good, "dying": dying})
	res, err := c.RunSweep(context.Background(), SweepSpec{RunID: "lost", Levels: []float64{2, 4}, Load: &pb.LoadModel{Kind: "closed", DurationMs: 3000}}, nil)
	if err != nil {
		t.Fatalf("continue policy failed the sweep: %v", err)
	}
	evs, _ := ReadEvents(filepath.Join(res.Dir, "events.jsonl"))
	sr, err := results.BuildSweep(evs)
	if err != nil {
		t.Fatal(err)
	}
	l0 := sr.Levels[0]
	cov := l0.Coverage["agent-dying"]
	if !l0.Degraded || cov == nil || !cov.Lost || cov.Intervals != 2 || !strings.Contains(cov.Error, "connection reset") {
		t.Errorf("level 1 coverage %+v degraded %v: want the dying agent lost after 2 intervals", cov, l0.Degraded)
	}
	// 3×5 from the good agent + 2×4 delivered before the loss.
	if l0.Requests != 23 || l0.Metrics[hdr.TTFT].Count != 23 {
		t.Errorf("level 1 requests %d, want 23: intervals received before the loss must be kept", l0.Requests)
	}
	// The lost agent sits out level 2.
	if len(dying.reqs) != 1 || len(sr.Levels[1].Agents) != 1 {
		t.Errorf("lost agent got %d levels; level 2 agents %v", len(dying.reqs), sr.Levels[1].Agents)
	}
	if !strings.Contains(strings.Join(sr.Observations, "\n"), "agent-dying lost after 2 intervals") {
		t.Errorf("observations %v do not name the loss", sr.Observations)
	}

	// With the abort policy the sweep stops after the loss, results kept.
	c2 := sweepCoordinator(t, map[string]Agent{"good": &sweepAgent{intervals: 2, perInterval: 1}, "dying": &sweepAgent{intervals: 2, perInterval: 1, dieAfter: 1}})
	res2, err := c2.RunSweep(context.Background(), SweepSpec{RunID: "abort", AgentLoss: "abort", Levels: []float64{1, 2}, Load: &pb.LoadModel{Kind: "closed", DurationMs: 1000}}, nil)
	if err == nil || !strings.Contains(err.Error(), "agent_loss is abort") {
		t.Errorf("err = %v, want an abort", err)
	}
	if _, err := os.Stat(filepath.Join(res2.Dir, results.SweepReport)); err != nil {
		t.Errorf("aborted sweep has no report: %v", err)
	}
}

// TestSweepSpecValidation checks the rules every front end gets (the CLI and
// a remote client's RunSweep): each refusal is a FieldError naming the
// spec field.
func TestSweepSpecValidation(t *testing.T) {
	c := sweepCoordinator(t, map[string]Agent{"a": &sweepAgent{}})
	closed := func(mut func(*pb.LoadModel)) *pb.LoadModel {
		lm := &pb.LoadModel{Kind: "closed", DurationMs: 1000}
		mut(lm)
		return lm
	}
	for _, tt := range []struct {
		name  string
		spec  SweepSpec
		field string
		want  string
	}{
		{"no levels", SweepSpec{}, "levels", "levels is empty"},
		{"fractional concurrency", SweepSpec{Levels: []float64{1.5}}, "levels", "levels 1.5 is invalid"},
		{"concurrency over the cap", SweepSpec{Levels: []float64{200_000}}, "levels", "levels 200000 is over the concurrency limit of 100000"},
		{"unknown kind", SweepSpec{Levels: []float64{1}, Load: &pb.LoadModel{Kind: "bursty", DurationMs: 1}}, "load.kind", `load.kind "bursty" is unknown`},
		{"no bound", SweepSpec{Levels: []float64{1}, Load: &pb.LoadModel{Kind: "closed"}}, "load", "load has no bound"},
		{"gamma without burstiness", SweepSpec{Levels: []float64{1}, Load: &pb.LoadModel{Kind: "gamma", DurationMs: 1000}}, "load.burstiness", "load.burstiness 0 is invalid for gamma arrivals"},
		{"error rate above 1", SweepSpec{Levels: []float64{1}, Load: closed(func(l *pb.LoadModel) { l.MaxErrorRate = 2 })}, "load.max_error_rate", "load.max_error_rate 2 is invalid"},
		{"short error window", SweepSpec{Levels: []float64{1}, Load: closed(func(l *pb.LoadModel) { l.ErrorWindowMs = 1 })}, "load.error_window_ms", "load.error_window_ms 1ms is invalid: set a window from 100ms to 1h0m0s"},
		{"long error window", SweepSpec{Levels: []float64{1}, Load: closed(func(l *pb.LoadModel) { l.ErrorWindowMs = 3_600_001 })}, "load.error_window_ms", "load.error_window_ms 1h0m0.001s is invalid"},
		// 2⁶⁴ ns + 100.45 ms: converted with wrap-around it would read as a valid 100ms window.
		{"error window beyond Duration", SweepSpec{Levels: []float64{1}, Load: closed(func(l *pb.LoadModel) { l.ErrorWindowMs = 18_446_744_073_810 })}, "load.error_window_ms", "load.error_window_ms 2562047h47m16.854775807s is invalid"},
		{"negative warm-up", SweepSpec{Levels: []float64{1}, Load: closed(func(l *pb.LoadModel) { l.WarmupMs = -5 })}, "load.warmup_ms", "load.warmup_ms -5ms is negative"},
		{"zero max tokens", SweepSpec{Levels: []float64{1}, Workload: &pb.Workload{}}, "workload.max_tokens", "workload.max_tokens 0 is invalid"},
		{"zero input len", SweepSpec{Levels: []float64{1}, Generator: &pb.WorkloadGen{Kind: "synthetic", InputLen: &pb.LengthDist{Kind: "fixed"}}}, "generator.input_len", "generator.input_len 0 is invalid"},
		{"unknown agent loss", SweepSpec{Levels: []float64{1}, AgentLoss: "panic"}, "agent_loss", `agent_loss "panic"`},
		{"out dir escapes", SweepSpec{Levels: []float64{1}, OutDir: "../x"}, "out_dir", `out_dir "../x" must be a relative path`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.RunSweep(context.Background(), tt.spec, nil)
			var fe *specerr.FieldError
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.As(err, &fe) {
				t.Fatalf("err = %v, want a FieldError containing %q", err, tt.want)
			}
			if fe.Field != tt.field {
				t.Errorf("field %q, want %q", fe.Field, tt.field)
			}
		})
	}
}

func TestSweepOfAnExternalTargetRecordsItsVersion(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/version" {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, `{"version":"0.11.0+sim"}`)
	}))
	defer srv.Close()
	c := sweepCoordinator(t, map[string]Agent{"a": &sweepAgent{intervals: 1, perInterval: 1}})
	res, err := c.RunSweep(context.Background(), SweepSpec{RunID: "ext", BaseURL: srv.URL + "/v1", Model: "m", Levels: []float64{1},
		Load: &pb.LoadModel{Kind: "closed", DurationMs: 1000}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	evs, _ := ReadEvents(filepath.Join(res.Dir, "events.jsonl"))
	sr, err := results.BuildSweep(evs)
	if err != nil {
		t.Fatal(err)
	}
	if sr.TargetVersion != "0.11.0+sim" || !sr.Simulated {
		t.Errorf("target version %q simulated %v, want the sim's version and simulated", sr.TargetVersion, sr.Simulated)
	}
	if _, err := c.RunSweep(context.Background(), SweepSpec{BaseURL: srv.URL, Levels: []float64{1}}, nil); err == nil || !strings.Contains(err.Error(), "model is empty") {
		t.Errorf("err = %v, want the missing model named", err)
	}
}

func TestSweepReportsGoodputWhenSLOsAreSet(t *testing.T) {
	c := sweepCoordinator(t, map[string]Agent{"a": &sweepAgent{intervals: 2, perInterval: 10, good: 7}})
	res, err := c.RunSweep(context.Background(), SweepSpec{RunID: "g", Levels: []float64{2},
		Load: &pb.LoadModel{Kind: "closed", DurationMs: 2000, SloTtftMs: 100}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	evs, _ := ReadEvents(filepath.Join(res.Dir, "events.jsonl"))
	sr, err := results.BuildSweep(evs)
	if err != nil {
		t.Fatal(err)
	}
	l := sr.Levels[0]
	if l.Good == nil || *l.Good != 14 || l.GoodputPerS == nil || *l.GoodputPerS <= 0 || l.RequestsPerS == nil || *l.GoodputPerS >= *l.RequestsPerS {
		t.Errorf("good %v goodput %v req/s %v: want 14 good and 0 < goodput < throughput", l.Good, l.GoodputPerS, l.RequestsPerS)
	}
	// Without SLOs there is no goodput, rather than a goodput equal to throughput.
	c2 := sweepCoordinator(t, map[string]Agent{"a": &sweepAgent{intervals: 1, perInterval: 3}})
	res2, _ := c2.RunSweep(context.Background(), SweepSpec{RunID: "ng", Levels: []float64{1}, Load: &pb.LoadModel{Kind: "closed", DurationMs: 1000}}, nil)
	evs2, _ := ReadEvents(filepath.Join(res2.Dir, "events.jsonl"))
	sr2, _ := results.BuildSweep(evs2)
	if sr2.Levels[0].GoodputPerS != nil {
		t.Errorf("goodput %v without SLOs, want nil", *sr2.Levels[0].GoodputPerS)
	}
}

func TestSweepGivesEachAgentAWorker(t *testing.T) {
	// At concurrency 1 only one of three agents runs: an agent whose segment
	// held no worker would own requests nobody sends.
	agents := map[string]Agent{"a": &sweepAgent{intervals: 1, perInterval: 1}, "b": &sweepAgent{intervals: 1, perInterval: 1}, "c": &sweepAgent{intervals: 1, perInterval: 1}}
	c := sweepCoordinator(t, agents)
	if _, err := c.RunSweep(context.Background(), SweepSpec{RunID: "w", Levels: []float64{1, 2}, Load: &pb.LoadModel{Kind: "closed", Requests: 10}}, nil); err != nil {
		t.Fatal(err)
	}
	var calls []int
	for _, a := range []string{"a", "b", "c"} {
		calls = append(calls, len(agents[a].(*sweepAgent).reqs))
	}
	if calls[0]+calls[1]+calls[2] != 3 { // 1 agent at c=1, 2 at c=2
		t.Errorf("agent calls %v, want 3 in all (1 at c=1, 2 at c=2)", calls)
	}
}

func TestSweepFailsWhenAnAgentRejectsThePlan(t *testing.T) {
	c := sweepCoordinator(t, map[string]Agent{"a": rejectingAgent{}})
	_, err := c.RunSweep(context.Background(), SweepSpec{RunID: "rej", Levels: []float64{1}, Load: &pb.LoadModel{Kind: "closed", DurationMs: 100}}, nil)
	if err == nil || !errors.Is(err, ErrAgentRejected) || !strings.Contains(err.Error(), "segment") {
		t.Errorf("err = %v, want the rejection, not a lost agent", err)
	}
}

type rejectingAgent struct{}

func (rejectingAgent) RunProbe(context.Context, *pb.RunProbeRequest, func(*pb.RunProbeResponse) error) error {
	return fmt.Errorf("%w: segment 0/1-1/1 holds no worker", ErrAgentRejected)
}

func TestSweepThroughputDividesByTheMeasuredSpan(t *testing.T) {
	// Two agents' reports cover 10 s of intervals (the first 2 s were
	// warm-up only), but their measured requests span 4 s: throughput is
	// requests / 4 s.
	t0 := time.Unix(1000, 0)
	mk := func(agent string, seq uint64, okN uint64, ms, me int64) results.Event {
		set := hdr.Set{}
		for i := uint64(0); i < okN; i++ {
			set.Get(hdr.TTFT).Record(time.Millisecond)
			set.Get(hdr.E2E).Record(time.Millisecond)
		}
		rep := &pb.IntervalReport{AgentId: agent, Seq: seq, RequestsOk: okN, OutputTokens: okN * 10, Final: true,
			StartUnixNano: t0.UnixNano(), EndUnixNano: t0.Add(10 * time.Second).UnixNano(),
			MeasuredStartUnixNano: ms, MeasuredEndUnixNano: me}
		for m, h := range set {
			b, _ := h.Encode()
			rep.Histograms = append(rep.Histograms, &pb.EncodedHistogram{Metric: m, V2: b})
		}
		data, _ := json.Marshal(results.SweepInterval{Level: 0, Report: rep})
		return results.Event{Kind: results.EventSweepInterval, Data: data}
	}
	sec := func(s float64) int64 { return t0.Add(time.Duration(s * float64(time.Second))).UnixNano() }
	lvl, _ := json.Marshal(results.LevelStart{Level: 0, Value: 2, Agents: []string{"a", "b"}})
	// The measured report of an interval inside the warm-up carries no span
	// and no request; it must not widen the span.
	early := mk("a", 0, 0, 0, 0)
	sr, err := results.BuildSweep([]results.Event{{Kind: results.EventLevelStart, Data: lvl}, early, mk("a", 1, 20, sec(2), sec(5)), mk("b", 1, 20, sec(2.5), sec(6))})
	if err != nil {
		t.Fatal(err)
	}
	if l := sr.Levels[0]; l.DurationS == nil || *l.DurationS != 4 || *l.RequestsPerS != 10 || *l.TokensPerS != 100 {
		t.Errorf("duration %v s, %v req/s, %v tok/s; want 4, 10, 100", fmtG(l.DurationS), fmtG(l.RequestsPerS), fmtG(l.TokensPerS))
	}
}

// fmtG formats *v, or n/a when v is nil.
func fmtG(v *float64) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprint(*v)
}
