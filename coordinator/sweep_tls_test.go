package coordinator

import (
	"context"
	"encoding/pem"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/oai/oaitest"
)

// TestSweepOverHTTPSWithTargetCA: a sweep of an https:// base_url reaches
// the agents with the target's CA, so their requests verify and succeed;
// without it every request fails the certificate check; a CA that is not
// PEM is refused naming target_ca_pem.
func TestSweepOverHTTPSWithTargetCA(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real agents for a few seconds")
	}
	srv := oaitest.NewTLSServer(t, oaitest.StreamTokens(4, time.Millisecond))
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c := sweepCoordinator(t, map[string]Agent{"a": startAgentServer(t)})
	c.cfg.AgentSilence = 10 * time.Second // in-process agent, as in sim_sweep_test.go
	sweep := func(id string, ca []byte) (*results.SweepResults, error) {
		res, err := c.RunSweep(context.Background(), SweepSpec{RunID: id, BaseURL: srv.URL, Model: "m", API: "chat", Levels: []float64{2},
			Load:        &pb.LoadModel{Kind: "closed", DurationMs: 1000, MaxErrorRate: 1},
			Workload:    &pb.Workload{MaxTokens: 4, IgnoreEos: true},
			Generator:   &pb.WorkloadGen{Kind: "synthetic", Seed: 1, InputLen: &pb.LengthDist{Kind: "fixed", Mean: 8}, OutputLen: &pb.LengthDist{Kind: "fixed", Mean: 4}},
			TargetCAPEM: ca,
		}, nil)
		if res.Dir == "" {
			return nil, err
		}
		evs, rerr := ReadEvents(filepath.Join(res.Dir, "events.jsonl"))
		if rerr != nil {
			t.Fatal(rerr)
		}
		sr, berr := results.BuildSweep(evs)
		if berr != nil {
			t.Fatal(berr)
		}
		return sr, err
	}
	sr, err := sweep("with-ca", caPEM)
	if err != nil {
		t.Fatalf("sweep with the target's CA: %v", err)
	}
	if l := sr.Levels[0]; l.Successes == 0 || l.Errors != 0 {
		t.Errorf("with the CA: %d successes, %d errors; want successes only", l.Successes, l.Errors)
	}
	sr, _ = sweep("without-ca", nil)
	if sr == nil || len(sr.Levels) == 0 || sr.Levels[0].Successes != 0 || sr.Levels[0].Errors == 0 {
		t.Errorf("without the CA: %+v; want every request refused by the certificate check", sr)
	}
	if _, err := sweep("bad-ca", []byte("not pem")); err == nil || !strings.Contains(err.Error(), "target_ca_pem") {
		t.Errorf("sweep with a CA that is not PEM: %v, want an error naming target_ca_pem", err)
	}
}

// TestSweepClientSettings: target_transport "h2" reaches every agent, whose
// requests reach an https:// server offering HTTP/2 as HTTP/2 (the default,
// h1, as HTTP/1.1); results.json and sweep.md record the transport and the
// first-token clock; an unknown transport is refused naming
// target_transport.
func TestSweepClientSettings(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real agents for a few seconds")
	}
	srv := oaitest.NewTLSServer(t, oaitest.StreamTokens(4, time.Millisecond))
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c := sweepCoordinator(t, map[string]Agent{"a": startAgentServer(t)})
	c.cfg.AgentSilence = 10 * time.Second // in-process agent, as in sim_sweep_test.go
	sweep := func(id, transport, clock string) (*results.SweepResults, error) {
		res, err := c.RunSweep(context.Background(), SweepSpec{RunID: id, BaseURL: srv.URL, Model: "m", API: "chat", Levels: []float64{1},
			Load:        &pb.LoadModel{Kind: "closed", Requests: 3, MaxErrorRate: 1},
			Workload:    &pb.Workload{MaxTokens: 4, IgnoreEos: true},
			Generator:   &pb.WorkloadGen{Kind: "synthetic", Seed: 1, InputLen: &pb.LengthDist{Kind: "fixed", Mean: 8}, OutputLen: &pb.LengthDist{Kind: "fixed", Mean: 4}},
			TargetCAPEM: caPEM, TargetTransport: transport, TargetFirstTokenClock: clock,
		}, nil)
		if res.Dir == "" {
			return nil, err
		}
		evs, rerr := ReadEvents(filepath.Join(res.Dir, "events.jsonl"))
		if rerr != nil {
			t.Fatal(rerr)
		}
		sr, berr := results.BuildSweep(evs)
		if berr != nil {
			t.Fatal(berr)
		}
		return sr, err
	}
	tests := []struct {
		transport, clock       string
		wantProto              int
		wantTr, wantClock, row string
	}{
		{"h2", "", 2, "h2", "read_return", "| first-token clock | read_return (the time the read returned) |"},
		{"", "", 1, "h1", "kernel_rx", "| first-token clock | kernel_rx (the kernel's receive time of the bytes) |"},
	}
	for _, tt := range tests {
		before := len(srv.Protos())
		sr, err := sweep("client-"+tt.wantTr, tt.transport, tt.clock)
		if err != nil {
			t.Fatalf("sweep with transport %q: %v", tt.transport, err)
		}
		protos := srv.Protos()[before:]
		if len(protos) == 0 || slices.ContainsFunc(protos, func(p int) bool { return p != tt.wantProto }) {
			t.Errorf("transport %q: server saw protocol majors %v; want HTTP/%d only", tt.transport, protos, tt.wantProto)
		}
		if sr.Transport != tt.wantTr || sr.FirstTokenClock != tt.wantClock {
			t.Errorf("transport %q: results record %q, %q; want %q, %q", tt.transport, sr.Transport, sr.FirstTokenClock, tt.wantTr, tt.wantClock)
		}
		md := results.RenderSweepMarkdown(sr)
		if !strings.Contains(md, "| HTTP transport | "+tt.wantTr+" |") || !strings.Contains(md, tt.row) {
			t.Errorf("transport %q: sweep.md settings lack the client rows:\n%s", tt.transport, md)
		}
	}
	if _, err := sweep("bad-transport", "http2", ""); err == nil || !strings.Contains(err.Error(), `target_transport "http2" is unknown`) {
		t.Errorf("sweep with transport http2: %v, want an error naming target_transport", err)
	}
}
