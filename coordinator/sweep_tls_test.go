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
// PEM is refused naming target_ca_pem. The agents' HTTP client is the
// one the sweep names (h2 reaches the server over HTTP/2), and results.json
// records it with its first-token clock.
func TestSweepOverHTTPSWithTargetCA(t *testing.T) {
	if testing.Short() {
		t.Skip("runs real agents for a few seconds")
	}
	srv := oaitest.NewTLSServer(t, oaitest.StreamTokens(4, time.Millisecond))
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	c := sweepCoordinator(t, map[string]Agent{"a": startAgentServer(t)})
	c.cfg.AgentSilence = 10 * time.Second // in-process agent, as in sim_sweep_test.go
	sweep := func(id string, ca []byte, transport ...string) (*results.SweepResults, error) {
		var tr string
		if len(transport) > 0 {
			tr = transport[0]
		}
		res, err := c.RunSweep(context.Background(), SweepSpec{RunID: id, BaseURL: srv.URL, Model: "m", API: "chat", Levels: []float64{2},
			Load:        &pb.LoadModel{Kind: "closed", DurationMs: 1000, MaxErrorRate: 1},
			Workload:    &pb.Workload{MaxTokens: 4, IgnoreEos: true},
			Generator:   &pb.WorkloadGen{Kind: "synthetic", Seed: 1, InputLen: &pb.LengthDist{Kind: "fixed", Mean: 8}, OutputLen: &pb.LengthDist{Kind: "fixed", Mean: 4}},
			TargetCAPEM: ca, TargetTransport: tr,
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
	if sr.Transport != "h1" || sr.FirstTokenClock != "kernel_rx" {
		t.Errorf("default client recorded as %q, clock %q; want h1, kernel_rx", sr.Transport, sr.FirstTokenClock)
	}
	for i, p := range srv.Protos() {
		if p != 1 {
			t.Fatalf("default client: request %d over HTTP/%d, want HTTP/1.1", i, p)
		}
	}
	before := len(srv.Protos())
	sr, err = sweep("h2", caPEM, "h2")
	if err != nil {
		t.Fatalf("sweep over h2: %v", err)
	}
	if sr.Transport != "h2" || sr.FirstTokenClock != "read_return" || sr.Levels[0].Successes == 0 {
		t.Errorf("h2 sweep recorded client %q, clock %q, %d successes; want h2, read_return, successes", sr.Transport, sr.FirstTokenClock, sr.Levels[0].Successes)
	}
	if ps := srv.Protos()[before:]; len(ps) == 0 || slices.ContainsFunc(ps, func(p int) bool { return p != 2 }) {
		t.Errorf("h2 sweep: the server saw HTTP major versions %v, want 2 only", ps)
	}
	if _, err := sweep("bad-transport", caPEM, "h3"); err == nil || !strings.Contains(err.Error(), `target_transport "h3" is unknown`) {
		t.Errorf("sweep with transport h3: %v, want an error naming target_transport", err)
	}
	sr, _ = sweep("without-ca", nil)
	if sr == nil || len(sr.Levels) == 0 || sr.Levels[0].Successes != 0 || sr.Levels[0].Errors == 0 {
		t.Errorf("without the CA: %+v; want every request refused by the certificate check", sr)
	}
	if _, err := sweep("bad-ca", []byte("not pem")); err == nil || !strings.Contains(err.Error(), "target_ca_pem") {
		t.Errorf("sweep with a CA that is not PEM: %v, want an error naming target_ca_pem", err)
	}
}
