package coordinator

import (
	"context"
	"errors"
	"github.com/ttftlab/ttftlab/coordinator/results"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/membership"
)

type staticMembers []membership.Member

func (s staticMembers) Members() []membership.Member { return s }
func (s staticMembers) Changes() <-chan struct{}     { return nil }

// fakeGPU is a gpunode whose engine "uses" 3000 MiB once started.
type fakeGPU struct {
	startErr error
	noNVML   bool

	mu      sync.Mutex
	running bool
}

func (f *fakeGPU) Info(context.Context) (*pb.InfoResponse, error) {
	info := &pb.InfoResponse{Hostname: "h1", Os: "TestOS", Kernel: "6.1", NvmlAvailable: !f.noNVML, CpuCount: 2}
	if f.noNVML {
		info.NvmlError = "NVML not available: libnvidia-ml.so.1 not found"
	} else {
		info.Gpus = []*pb.GPUInfo{{Name: "NVIDIA H200", MemoryTotalBytes: 140 << 30}}
	}
	return info, nil
}

func (f *fakeGPU) StartEngine(ctx context.Context, req *pb.StartEngineRequest) (*pb.EngineInfo, error) {
	if f.startErr != nil {
		return nil, f.startErr
	}
	f.mu.Lock()
	f.running = true
	f.mu.Unlock()
	return &pb.EngineInfo{BaseUrl: "http://127.0.0.1:1", ServedModelName: "m", Model: "m", Kind: "sim", Version: "0.11.0+sim",
		Argv: []string{"ttftlab", "sim", "--enforce-eager"}, ReadyS: 1.5, Simulated: true,
		Phases: []*pb.Phase{{Name: "load_weights", StartS: 0.1, EndS: 0.7, DurationS: 0.6, Source: "log"}}}, nil
}

func (f *fakeGPU) StopEngine(context.Context, *pb.StopEngineRequest) (*pb.StopEngineResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	was := f.running
	f.running = false
	return &pb.StopEngineResponse{WasRunning: was}, nil
}

func (f *fakeGPU) StreamSamples(ctx context.Context, interval time.Duration, fn func(*pb.StreamSamplesResponse)) error {
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	var seq uint64
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case now := <-t.C:
			seq++
			f.mu.Lock()
			s := &pb.HostSample{Seq: seq, UnixNano: now.UnixNano(), EngineCpuPercent: -1}
			if f.running {
				s.EngineCpuPercent = 50
			}
			if f.noNVML {
				s.NvmlError = "NVML not available: libnvidia-ml.so.1 not found"
			} else {
				used := uint64(500 << 20)
				if f.running {
					used += 3000 << 20
				}
				s.Gpus = []*pb.GPUSample{{MemoryUsedBytes: used, MemoryTotalBytes: 140 << 30, GpuUtilPercent: 40}}
			}
			f.mu.Unlock()
			fn(&pb.StreamSamplesResponse{Sample: s})
		}
	}
}

// fakeAgent answers each labelled request with a TTFT from ttft(label).
type fakeAgent struct {
	ttft func(label string) time.Duration
	fail string // label that fails
}

func (a *fakeAgent) RunProbe(ctx context.Context, req *pb.RunProbeRequest, fn func(*pb.RunProbeResponse) error) error {
	set := hdr.Set{}
	rep := &pb.IntervalReport{RunId: req.GetRunId(), AgentId: req.GetAgentId(), Seq: 1, Final: true, StartUnixNano: time.Now().UnixNano()}
	for _, l := range req.GetLabels() {
		// Each request takes a few ms so the sampler sees the windows.
		time.Sleep(15 * time.Millisecond)
		if l == a.fail {
			rep.RequestsFailed++
			rep.Requests = append(rep.Requests, &pb.RequestRecord{Label: l, Error: "http_5xx: 500 boom"})
			continue
		}
		d := a.ttft(l)
		set.Get(hdr.TTFT).Record(d)
		set.Get(hdr.E2E).Record(d + 100*time.Millisecond)
		rep.RequestsOk++
		rep.Requests = append(rep.Requests, &pb.RequestRecord{Label: l, TtftS: d.Seconds(), E2ES: (d + 100*time.Millisecond).Seconds(), OutputTokens: 64, PromptTokens: 20})
	}
	rep.EndUnixNano = time.Now().UnixNano()
	for m, h := range set {
		b, err := h.Encode()
		if err != nil {
			return err
		}
		rep.Histograms = append(rep.Histograms, &pb.EncodedHistogram{Metric: m, V2: b})
	}
	return fn(&pb.RunProbeResponse{Report: rep})
}

type fakeDialer struct {
	gpu   GPUNode
	agent Agent
}

func (d fakeDialer) GPUNode(context.Context, string) (GPUNode, io.Closer, error) {
	return d.gpu, io.NopCloser(nil), nil
}
func (d fakeDialer) Agent(context.Context, string) (Agent, io.Closer, error) {
	return d.agent, io.NopCloser(nil), nil
}

var members = staticMembers{
	{Name: "g", Meta: membership.Meta{Role: membership.RoleGPUNode, GRPCAddr: "g:1"}, State: "alive"},
	{Name: "a", Meta: membership.Meta{Role: membership.RoleAgent, GRPCAddr: "a:1"}, State: "alive"},
}

func newTestCoordinator(t *testing.T, gpu GPUNode, ag Agent) *Coordinator {
	t.Helper()
	cfg := DefaultConfig()
	cfg.OutDir = t.TempDir()
	cfg.DiscoveryTimeout = time.Second
	return New(cfg, members, fakeDialer{gpu: gpu, agent: ag}, nil)
}

func coldWarm(label string) time.Duration {
	if label == "cold_1" {
		return 400 * time.Millisecond
	}
	if label == "warm_3" {
		return 90 * time.Millisecond // an outlier
	}
	return 20 * time.Millisecond
}

func TestBaselineWritesResultsAndReport(t *testing.T) {
	c := newTestCoordinator(t, &fakeGPU{}, &fakeAgent{ttft: coldWarm})
	var kinds []string
	res, err := c.RunBaseline(context.Background(), BaselineSpec{WarmRuns: 5, RunID: "r1"}, func(ev results.Event) { kinds = append(kinds, ev.Kind) })
	if err != nil {
		t.Fatalf("RunBaseline: %v", err)
	}
	r := res.Results
	var labels []string
	for _, run := range r.Runs {
		labels = append(labels, run.Label)
	}
	if got, want := strings.Join(labels, ","), "cold_1,warm_1,warm_2,warm_3,warm_4,warm_5"; got != want {
		t.Errorf("runs = %s, want %s", got, want)
	}
	if r.Status != "ok" || r.Engine.ReadyS != 1.5 || len(r.Engine.Phases) != 1 {
		t.Errorf("status %q ready_s %v phases %d", r.Status, r.Engine.ReadyS, len(r.Engine.Phases))
	}
	if r.Warm == nil || r.Warm.MedianS != 0.02 || r.Warm.MaxS != 0.09 || len(r.Warm.Outliers) != 1 || r.Warm.Outliers[0] != "warm_3" {
		t.Errorf("warm stats = %+v, want median 0.02, max 0.09, outlier warm_3", r.Warm)
	}
	if h := r.Histograms[hdr.TTFT]; h.Count != 6 {
		t.Errorf("merged ttft count = %d, want 6", h.Count)
	}
	s := r.Sanity
	if s.GPUMemBeforeMiB == nil || *s.GPUMemBeforeMiB != 500 {
		t.Errorf("GPU memory before = %v, want 500 MiB", s.GPUMemBeforeMiB)
	}
	if s.GPUMemAfterColdMiB == nil || *s.GPUMemAfterColdMiB != 3500 {
		t.Errorf("GPU memory after cold = %v, want 3500 MiB", s.GPUMemAfterColdMiB)
	}
	if s.GPUUtilWarmPct == nil || *s.GPUUtilWarmPct != 40 || s.CPUWarmPct == nil || *s.CPUWarmPct != 50 {
		t.Errorf("warm util %v cpu %v, want 40 and 50", s.GPUUtilWarmPct, s.CPUWarmPct)
	}
	if !strings.Contains(strings.Join(kinds, " "), "engine_ready") {
		t.Errorf("emitted kinds %v lack engine_ready", kinds)
	}
	md, err := os.ReadFile(filepath.Join(res.Dir, "first_token_latency.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## Server Config", "## Single-Run Measurements (Cold vs Warm)", "| cold_1 | 0.4000 |",
		"## Warm-Run Variance (steady state)", "## Sanity Metrics", "| GPU memory before server start | 500 MiB |",
		"## Observations", "Cold TTFT is 20.00× the warm median", "Outliers among the warm runs", "warm_3", "Simulated engine",
		"### Restart to first token, decomposed", "| **spawn → ready** | 1.500 |", "↳ first-request extra (lazy runtime warm-up) | 0.380 |",
		"| **restart → first token** | 1.900 |"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, name := range []string{results.RunsSVG, results.PhasesSVG} {
		b, err := os.ReadFile(filepath.Join(res.Dir, name))
		if err != nil || !strings.Contains(string(b), "<svg") {
			t.Errorf("plot %s missing or not SVG: %v", name, err)
		}
		if !strings.Contains(string(md), "]("+name+")") {
			t.Errorf("report does not link %s", name)
		}
	}
	// Re-rendering from events.jsonl gives the same results.
	again, err := results.RenderDir(res.Dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(again.Runs) != len(r.Runs) || again.Warm.MedianS != r.Warm.MedianS {
		t.Errorf("re-rendered results differ")
	}
	// A client may pick a subdirectory of the coordinator's results directory.
	sub, err := c.RunBaseline(context.Background(), BaselineSpec{WarmRuns: 1, RunID: "r2", OutDir: "team-a"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(c.cfg.OutDir, "team-a", "r2"); sub.Dir != want {
		t.Errorf("run dir %s, want %s", sub.Dir, want)
	}
}

func TestBaselineWithoutNVMLSaysWhy(t *testing.T) {
	c := newTestCoordinator(t, &fakeGPU{noNVML: true}, &fakeAgent{ttft: coldWarm})
	res, err := c.RunBaseline(context.Background(), BaselineSpec{WarmRuns: 2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := os.ReadFile(filepath.Join(res.Dir, "first_token_latency.md"))
	if !strings.Contains(string(md), "| GPU memory before server start | not measured: NVML not available: libnvidia-ml.so.1 not found |") {
		t.Errorf("report does not say why GPU memory is missing:\n%s", md)
	}
}

func TestBaselineEngineFailureKeepsEvidence(t *testing.T) {
	c := newTestCoordinator(t, &fakeGPU{startErr: errors.New("engine exited: exit status 1: CUDA out of memory")}, &fakeAgent{ttft: coldWarm})
	res, err := c.RunBaseline(context.Background(), BaselineSpec{RunID: "fail"}, nil)
	if err == nil || !strings.Contains(err.Error(), "CUDA out of memory") {
		t.Fatalf("err = %v, want the engine's failure", err)
	}
	if res.Results == nil || res.Results.Status != "failed" || !strings.Contains(res.Results.Error, "CUDA out of memory") {
		t.Fatalf("results = %+v, want status failed with the reason", res.Results)
	}
	if _, err := os.Stat(filepath.Join(res.Dir, "first_token_latency.md")); err != nil {
		t.Errorf("no report after a failed run: %v", err)
	}
}

func TestBaselineFailedRequestIsReported(t *testing.T) {
	c := newTestCoordinator(t, &fakeGPU{}, &fakeAgent{ttft: coldWarm, fail: "warm_2"})
	res, err := c.RunBaseline(context.Background(), BaselineSpec{WarmRuns: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if res.Results.Warm.N != 2 {
		t.Errorf("warm stats over %d runs, want 2 (the failed one left out)", res.Results.Warm.N)
	}
	if !strings.Contains(strings.Join(res.Results.Observations, "\n"), "warm_2 failed: http_5xx") {
		t.Errorf("observations %v do not report the failure", res.Results.Observations)
	}
}

func TestBaselineSpecValidation(t *testing.T) {
	tests := []struct {
		spec BaselineSpec
		want string
	}{
		{BaselineSpec{WarmRuns: -1}, "warm_runs -1"},
		{BaselineSpec{API: "grpc"}, `api "grpc"`},
		{BaselineSpec{ColdMode: "freezing"}, `cold_mode "freezing"`},
		{BaselineSpec{RunID: "../etc"}, `run_id "../etc"`},
		{BaselineSpec{MaxTokens: -5}, "max_tokens -5"},
		{BaselineSpec{OutDir: "/etc"}, `out_dir "/etc" must be a relative path`},
		{BaselineSpec{OutDir: "a/../../b"}, `out_dir "a/../../b" must be a relative path`},
	}
	c := newTestCoordinator(t, &fakeGPU{}, &fakeAgent{ttft: coldWarm})
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			_, err := c.RunBaseline(context.Background(), tt.spec, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to name %s", err, tt.want)
			}
		})
	}
}

func TestNoAgentsIsAClearError(t *testing.T) {
	cfg := DefaultConfig()
	cfg.OutDir = t.TempDir()
	cfg.DiscoveryTimeout = 100 * time.Millisecond
	c := New(cfg, members[:1], fakeDialer{}, nil)
	_, err := c.RunBaseline(context.Background(), BaselineSpec{}, nil)
	if err == nil || !strings.Contains(err.Error(), "no agent is in the cluster") {
		t.Errorf("err = %v, want a discovery error saying no agent is in the cluster", err)
	}
}

func TestBuildRefusesLossyMerge(t *testing.T) {
	// Two agents' histograms merge to the sum of their counts.
	mk := func(agentID string, seq uint64, n int) results.Event {
		h := hdr.New()
		for i := 0; i < n; i++ {
			h.Record(time.Duration(i+1) * time.Millisecond)
		}
		b, _ := h.Encode()
		data, _ := results.EncodeData(&pb.IntervalReport{AgentId: agentID, Seq: seq, Final: true, RequestsOk: uint64(n), Histograms: []*pb.EncodedHistogram{{Metric: hdr.TTFT, V2: b}, {Metric: hdr.E2E, V2: b}}})
		return results.Event{Kind: results.EventInterval, Data: data}
	}
	res, err := results.Build([]results.Event{mk("a", 1, 10), mk("b", 1, 7), mk("a", 2, 3), mk("a", 2, 3)})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Histograms[hdr.TTFT].Count; got != 20 {
		t.Errorf("merged count %d, want 20", got)
	}
	if res.Agents["a"].Intervals != 2 || res.Agents["b"].Intervals != 1 {
		t.Errorf("coverage %+v", res.Agents)
	}
	if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "recorded twice") {
		t.Errorf("warnings %v, want the duplicate report named", res.Warnings)
	}
}

func TestBuildLeavesOutBadReportsWithAWarning(t *testing.T) {
	one := hdr.New()
	one.Record(time.Millisecond)
	b, _ := one.Encode()
	good, _ := results.EncodeData(&pb.IntervalReport{AgentId: "g", Seq: 1, RequestsOk: 1, Histograms: []*pb.EncodedHistogram{{Metric: hdr.E2E, V2: b}, {Metric: hdr.TTFT, V2: b}}})
	cases := []struct {
		name string
		rep  *pb.IntervalReport
		want string
	}{
		{"e2e disagrees with the success count", &pb.IntervalReport{AgentId: "c", Seq: 4, RequestsOk: 2, Histograms: []*pb.EncodedHistogram{{Metric: hdr.E2E, V2: b}}},
			`agent "c" interval 4: histograms refused: e2e holds 1 values but the report counts 2 successful requests`},
		{"undecodable ttft", &pb.IntervalReport{AgentId: "c", Seq: 5, Histograms: []*pb.EncodedHistogram{{Metric: hdr.TTFT, V2: []byte("AAAA")}}},
			`agent "c" interval 5: histograms refused: ttft: decode histogram: truncated`},
		{"metric sent twice", &pb.IntervalReport{AgentId: "c", Seq: 6, RequestsOk: 1, Histograms: []*pb.EncodedHistogram{{Metric: hdr.E2E, V2: b}, {Metric: hdr.E2E, V2: b}}},
			"metric e2e sent twice"},
		{"unknown metric", &pb.IntervalReport{AgentId: "c", Seq: 7, Histograms: []*pb.EncodedHistogram{{Metric: "x\n", V2: b}}},
			`unknown metric "x\n"`},
		{"ttft beyond the successes", &pb.IntervalReport{AgentId: "c", Seq: 8, Histograms: []*pb.EncodedHistogram{{Metric: hdr.TTFT, V2: b}}},
			"ttft holds 1 values, more than the 0 successful requests"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			data, _ := results.EncodeData(tc.rep)
			res, err := results.Build([]results.Event{{Kind: results.EventInterval, Data: good}, {Kind: results.EventInterval, Data: data}})
			if err != nil {
				t.Fatalf("results.Build failed instead of leaving the report out: %v", err)
			}
			if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], tc.want) {
				t.Fatalf("warnings %q, want one saying %q", res.Warnings, tc.want)
			}
			// The good report is still merged; the bad one's requests still count.
			if got := res.Histograms[hdr.E2E].Count; got != 1 {
				t.Errorf("merged e2e count %d, want the good report's 1", got)
			}
			if got := res.Agents["c"].Requests; got != int64(tc.rep.GetRequestsOk()) {
				t.Errorf("agent c requests %d, want %d kept", got, tc.rep.GetRequestsOk())
			}
		})
	}
}

func TestReadEventsSkipsTornLastLine(t *testing.T) {
	p := filepath.Join(t.TempDir(), "events.jsonl")
	os.WriteFile(p, []byte(`{"t":1,"kind":"mark","data":{"name":"x"}}`+"\n"+`{"t":2,"ki`), 0o644)
	evs, err := ReadEvents(p)
	if err != nil || len(evs) != 1 {
		t.Fatalf("ReadEvents = %d events, %v; want 1 and no error", len(evs), err)
	}
	os.WriteFile(p, []byte(`{"t":2,"ki`+"\n"+`{"t":1,"kind":"mark"}`+"\n"), 0o644)
	if _, err := ReadEvents(p); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("err = %v, want a bad line 1", err)
	}
}

func TestWatcherNeverBlocksTheRun(t *testing.T) {
	release := make(chan struct{})
	var got []string
	w := newWatcher(func(ev *pb.RunEvent) error {
		<-release // a client that stopped reading
		got = append(got, ev.GetKind())
		return nil
	})
	done := make(chan struct{})
	go func() {
		for i := 0; i < watchBuffer+50; i++ {
			w.emit(results.Event{Kind: results.EventInterval})
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("emit blocked on a watcher that does not read")
	}
	close(release)
	w.close()
	if n := len(got); n < watchBuffer || got[n-1] != results.EventWarning {
		t.Errorf("watcher got %d events (last %v), want the buffered ones and a warning about the missed ones", n, got[max(n-1, 0):])
	}
}

func TestBaselineRepeatsGiveAColdDistribution(t *testing.T) {
	gpu := &fakeGPU{}
	c := newTestCoordinator(t, gpu, &fakeAgent{ttft: func(label string) time.Duration {
		switch label {
		case "cold_1":
			return 400 * time.Millisecond
		case "r2/cold_1":
			return 600 * time.Millisecond
		case "r3/cold_1":
			return 500 * time.Millisecond
		}
		return 20 * time.Millisecond
	}})
	res, err := c.RunBaseline(context.Background(), BaselineSpec{RunID: "rep", WarmRuns: 2, Repeats: 3}, nil)
	if err != nil {
		t.Fatal(err)
	}
	r := res.Results
	if len(r.Rounds) != 3 || r.ColdSpread == nil {
		t.Fatalf("rounds %d spread %v, want 3 rounds and a spread", len(r.Rounds), r.ColdSpread)
	}
	s := r.ColdSpread
	if s.ColdTTFTMinS != 0.4 || s.ColdTTFTMedianS != 0.5 || s.ColdTTFTMaxS != 0.6 || s.RestartToFirstMedS != 2.0 {
		t.Errorf("spread %+v, want cold 0.4/0.5/0.6 and median restart→first token 1.5+0.5", s)
	}
	// Round 1 stays the headline: its cold_1 and warm runs, unprefixed.
	if cold := runByLabel(r.Runs, "cold_1"); cold == nil || cold.TTFTS != 0.4 || r.Warm.N != 2 {
		t.Errorf("round 1 cold %v warm n %d, want 0.4 s and 2 warm runs", cold, r.Warm.N)
	}
	if runByLabel(r.Runs, "r3/warm_2") == nil {
		t.Error("round 3's warm runs are missing")
	}
	md, _ := os.ReadFile(filepath.Join(res.Dir, "first_token_latency.md"))
	for _, want := range []string{"### Cold start over 3 of 3 restarts", "| 2 | 1.500 | 0.6000 | 0.0200 | 2.100 |", "Over 3 restarts, restart → first token was 1.90–2.10 s"} {
		if !strings.Contains(string(md), want) {
			t.Errorf("report lacks %q", want)
		}
	}
	if _, err := c.RunBaseline(context.Background(), BaselineSpec{Repeats: 101}, nil); err == nil || !strings.Contains(err.Error(), "repeats 101") {
		t.Errorf("err = %v, want repeats 101 refused", err)
	}
}

// runByLabel finds a labelled run in a result.
func runByLabel(runs []results.Run, label string) *results.Run {
	for i := range runs {
		if runs[i].Label == label {
			return &runs[i]
		}
	}
	return nil
}
