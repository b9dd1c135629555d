package coordinator

import (
	"context"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ttftlab/ttftlab/internal/browsertest"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/membership"
)

// TestDashboardInChromium runs a live two-level sweep on the simulator with
// the dashboard observing it, opens the dashboard in headless Chromium
// through its token, and checks that the page follows the sweep: it shows
// level 1, then level 2 (the level number changes without a reload), with
// TTFT percentiles and the GPU gauges; no console error. Screenshots of
// both levels go to the test's artefact directory. Run with
// `make test-browser`.
func TestDashboardInChromium(t *testing.T) {
	br := browsertest.New(t, 2*time.Minute)
	url, model := startSimEngine(t)
	ms := staticMembers{
		{Name: "g", Meta: membership.Meta{Role: membership.RoleGPUNode, GRPCAddr: "g:1"}, State: "alive"},
		{Name: "agent-a", Meta: membership.Meta{Role: membership.RoleAgent, GRPCAddr: "a"}, State: "alive"},
	}
	d, err := NewDashboard(DashboardConfig{OutDir: t.TempDir(), Token: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(d.Handler())
	defer srv.Close()
	// Close the dashboard first: it ends the page's event stream, which
	// srv.Close would otherwise wait for.
	defer d.Close()
	cfg := DefaultConfig()
	cfg.OutDir = t.TempDir()
	cfg.DiscoveryTimeout = time.Second
	cfg.Observer = Observers(d)
	cfg.AgentSilence = 10 * time.Second // in-process agent, as in sim_sweep_test.go
	c := New(cfg, ms, multiDialer{gpu: &fakeGPU{}, agents: map[string]Agent{"a": startAgentServer(t)}}, nil)
	done := make(chan error, 1)
	go func() {
		_, err := c.RunSweep(context.Background(), SweepSpec{RunID: "live-sweep", BaseURL: url, Model: model, Levels: []float64{1, 4},
			Load:     &pb.LoadModel{Kind: "closed", DurationMs: 4000},
			Workload: &pb.Workload{Prompt: "hello", MaxTokens: 16}}, nil)
		done <- err
	}()
	waited := false
	defer func() {
		if !waited {
			<-done
		}
	}()

	if err := chromedp.Do(br.Ctx, chromedp.Navigate(srv.URL+"/?token=tok")); err != nil {
		t.Fatalf("open the dashboard: %v", err)
	}
	level := func() int {
		s, err := chromedp.Run(br.Ctx, chromedp.Evaluate[string](`(document.querySelector('[data-run="live-sweep"] b.level') || {textContent: ""}).textContent`))
		if err != nil {
			t.Fatal(err)
		}
		n, _ := strconv.Atoi(s)
		return n
	}
	seen := map[int]bool{}
	deadline := time.Now().Add(60 * time.Second)
	for !seen[2] && time.Now().Before(deadline) {
		l := level()
		if l > 0 && !seen[l] {
			seen[l] = true
			if l == 1 {
				// Wait for a TTFT figure in level 1, then take its picture.
				chromedp.Run(br.Ctx, chromedp.Poll[bool](`(() => { const e = document.querySelector('[data-run="live-sweep"] b.p50'); return e && e.textContent !== "n/a"; })()`, chromedp.WithPollingTimeout(10*time.Second)))
				br.Screenshot(t, "dashboard-level-1.png")
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !seen[1] || !seen[2] {
		t.Fatalf("levels seen on the page: %v; want 1 then 2 as the sweep runs", seen)
	}
	gpu, err := chromedp.Run(br.Ctx, chromedp.Evaluate[string](`document.querySelector('[data-run="live-sweep"] .gpus').textContent`))
	if err != nil || gpu == "" {
		t.Errorf("GPU gauges %q (err %v)", gpu, err)
	}
	t.Logf("GPU line: %s", gpu)
	br.Screenshot(t, "dashboard-level-2.png")
	waited = true
	if err := <-done; err != nil {
		t.Errorf("sweep: %v", err)
	}
	// The page shows the end of the run within a couple of ticks.
	if _, err := chromedp.Run(br.Ctx, chromedp.Poll[bool](`(() => { const e = document.querySelector('[data-run="live-sweep"] .status'); return e && e.textContent === "ok"; })()`, chromedp.WithPollingTimeout(5*time.Second))); err != nil {
		t.Errorf("the page never showed the sweep as ok: %v", err)
	}
	br.CheckConsole(t)
}
