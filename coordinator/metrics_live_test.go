package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/membership"
	"github.com/ttftlab/ttftlab/internal/metrics"
)

// scrape GETs url asking for the protobuf exposition (native histograms
// exist only there) and decodes every metric family.
func scrape(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeProtoDelim)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	if f := expfmt.ResponseFormat(resp.Header); f.FormatType() != expfmt.TypeProtoDelim {
		return nil, fmt.Errorf("GET %s answered %q, want the protobuf exposition", url, f)
	}
	dec := expfmt.NewDecoder(resp.Body, expfmt.ResponseFormat(resp.Header))
	out := map[string]*dto.MetricFamily{}
	for {
		var mf dto.MetricFamily
		if err := dec.Decode(&mf); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, fmt.Errorf("decode %s: %w", url, err)
		}
		out[mf.GetName()] = &mf
	}
}

// labelValue returns the value of the label name of m, or "".
func labelValue(m *dto.Metric, name string) string {
	for _, l := range m.GetLabel() {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Acceptance for issue 12, part 5: during a sweep on the simulator, the
// coordinator's --metrics-addr serves a live TTFT native histogram of the
// running level, which expfmt parses, before the sweep has ended.
func TestSweepServesLiveTTFTHistogram(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the simulated engine for about 6 s")
	}
	url, model := startSimEngine(t)
	ms := staticMembers{
		{Name: "g", Meta: membership.Meta{Role: membership.RoleGPUNode, GRPCAddr: "g:1"}, State: "alive"},
		{Name: "agent-a", Meta: membership.Meta{Role: membership.RoleAgent, GRPCAddr: "a"}, State: "alive"},
	}
	obs := metrics.NewCoordinator(metrics.CoordinatorOptions{Members: ms.Members})
	srv, err := metrics.Serve(context.Background(), "127.0.0.1:0", obs.Registry(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	cfg := DefaultConfig()
	cfg.OutDir = t.TempDir()
	cfg.DiscoveryTimeout = time.Second
	cfg.Observer = obs
	cfg.AgentSilence = 10 * time.Second // in-process agent, as in sim_sweep_test.go
	c := New(cfg, ms, multiDialer{gpu: &fakeGPU{}, agents: map[string]Agent{"a": startAgentServer(t)}}, nil)

	done := make(chan error, 1)
	go func() {
		_, err := c.RunSweep(context.Background(), SweepSpec{RunID: "live", BaseURL: url, Model: model, Levels: []float64{2},
			Load:     &pb.LoadModel{Kind: "closed", DurationMs: 4000},
			Workload: &pb.Workload{Prompt: "hello", MaxTokens: 16}}, nil)
		done <- err
	}()

	metricsURL := "http://" + srv.Addr() + "/metrics"
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var found *dto.Histogram
	for found == nil {
		select {
		case err := <-done:
			t.Fatalf("the sweep ended (err %v) before a scrape showed a live TTFT histogram", err)
		case <-ctx.Done():
			t.Fatal("no live TTFT histogram within 30 s")
		case <-time.After(200 * time.Millisecond):
		}
		mfs, err := scrape(ctx, metricsURL)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mfs["ttftlab_ttft_seconds"].GetMetric() {
			if labelValue(m, "run") == "live" && labelValue(m, "level") == "1" && m.GetHistogram().GetSampleCount() > 0 {
				found = m.GetHistogram()
			}
		}
		if found != nil {
			if got := mfs["ttftlab_runs"]; got == nil {
				t.Error("no ttftlab_runs family next to the histogram")
			}
			members := 0.0
			for _, m := range mfs["ttftlab_members"].GetMetric() {
				members += m.GetGauge().GetValue()
			}
			if members != 2 {
				t.Errorf("ttftlab_members sums to %g, want the 2 members", members)
			}
		}
	}
	if found.Schema == nil || len(found.GetPositiveSpan()) == 0 || len(found.GetBucket()) == 0 {
		t.Errorf("TTFT histogram schema %v, %d spans, %d classic buckets: want a native histogram with classic buckets too",
			found.Schema, len(found.GetPositiveSpan()), len(found.GetBucket()))
	}
	if s := found.GetSampleSum(); s <= 0 || s/float64(found.GetSampleCount()) > 10 {
		t.Errorf("TTFT sum %g s over %d requests: want a positive mean TTFT under 10 s", s, found.GetSampleCount())
	}
	t.Logf("live TTFT: %d requests, mean %.1f ms", found.GetSampleCount(), 1000*found.GetSampleSum()/float64(found.GetSampleCount()))
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
