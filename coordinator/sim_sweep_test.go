package coordinator

import (
	"context"
	"github.com/ttftlab/ttftlab/coordinator/results"
	"io"
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/ttftlab/ttftlab/agent"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/sim"
)

// startSimEngine runs the simulated vLLM engine in-process, startup scaled
// down, and returns its URL and served model name.
func startSimEngine(t *testing.T) (string, string) {
	t.Helper()
	cfg := sim.DefaultConfig()
	cfg.Port = 0
	cfg.StateDir = t.TempDir()
	cfg.StartupScale = 0.001
	cfg.FirstRequestDelay = 0
	cfg.DisableLogStats = true
	cfg.DisableAccessLog = true
	cfg.ShutdownGrace = 200 * time.Millisecond
	e, err := sim.New(cfg, io.Discard, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	select {
	case <-e.Ready():
	case err := <-done:
		t.Fatalf("sim did not start: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("sim not ready after 30 s")
	}
	return e.URL(), cfg.Model
}

// startAgentServer serves a real agent over gRPC on loopback and returns a
// coordinator-side client for it.
func startAgentServer(t *testing.T) Agent {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterAgentServiceServer(srv, agent.NewServer(agent.New(agent.DefaultConfig(), nil)))
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return AgentClient{C: pb.NewAgentServiceClient(conn)}
}

// Acceptance for issue 9: on the simulator, a sweep pinned at 2 s with
// 1,024 output tokens (E2E well over the window) marks its levels
// insufficient, and its output throughput does not fall from one level to
// the next: tokens still streaming at the window's end are counted.
func TestSimSweepWithLongRequestsMarksLevelsAndKeepsThroughput(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the simulated engine for about 15 s")
	}
	url, model := startSimEngine(t)
	c := sweepCoordinator(t, map[string]Agent{"a": startAgentServer(t)})
	// The agent and the engine share this test's process: the in-process
	// cluster's silence limit applies (a loaded host's scheduling delays
	// are not a frozen agent; TestFrozenAgentIsLostWithin2s tests liveness).
	c.cfg.AgentSilence = 10 * time.Second
	res, err := c.RunSweep(context.Background(), SweepSpec{RunID: "long", BaseURL: url, Model: model, Levels: []float64{1, 4},
		// No warm-up: with E2E over the window, a worker's first request
		// is the only one it starts inside the window.
		Load:     &pb.LoadModel{Kind: "closed", DurationMs: 2000},
		Workload: &pb.Workload{MaxTokens: 1024, IgnoreEos: true},
		Generator: &pb.WorkloadGen{Kind: "synthetic", Seed: 1, InputLen: &pb.LengthDist{Kind: "fixed", Mean: 64},
			OutputLen: &pb.LengthDist{Kind: "fixed", Mean: 1024}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	evs, err := ReadEvents(filepath.Join(res.Dir, "events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	sr, err := results.BuildSweep(evs)
	if err != nil {
		t.Fatal(err)
	}
	if len(sr.Levels) != 2 {
		t.Fatalf("%d levels, want 2", len(sr.Levels))
	}
	for _, l := range sr.Levels {
		e2e := l.Metrics[hdr.E2E]
		completed := float64(l.OutputTokens) / *l.DurationS
		t.Logf("c=%g: %d successes, E2E p50 %.2f s, window %s s, %s tok/s streamed in the window (completed tokens over the measured span: %.0f tok/s); %v",
			l.Value, l.Successes, e2e.P50/1000, fmtG(l.WindowS), fmtG(l.TokensPerS), completed, l.InsufficientReasons)
		if e2e.Count == 0 || e2e.P50 < 2000 {
			t.Fatalf("c=%g: E2E p50 %.0f ms; the test needs requests longer than the 2 s window", l.Value, e2e.P50)
		}
		if l.ThroughputBasis != "streamed" || l.WindowS == nil || *l.WindowS < 1.9 || *l.WindowS > 2.1 {
			t.Errorf("c=%g: throughput basis %q over %s s, want streamed tokens over the 2 s window", l.Value, l.ThroughputBasis, fmtG(l.WindowS))
		}
		if !l.Insufficient || len(l.InsufficientFor) != 3 {
			t.Errorf("c=%g: insufficient %v for %v; a 2 s window with E2E p50 %.1f s must mark every percentile", l.Value, l.Insufficient, l.InsufficientFor, e2e.P50/1000)
		}
	}
	a, b := sr.Levels[0], sr.Levels[1]
	if b.Errors == 0 && *b.TokensPerS < *a.TokensPerS {
		t.Errorf("output throughput fell from %.0f tok/s at c=1 to %.0f at c=4 with no error", *a.TokensPerS, *b.TokensPerS)
	}
}
