package gpunode

import (
	"os"
	"testing"

	"github.com/ttftlab/ttftlab/internal/vllmlog"
)

// TestRealSimEngine starts the real simulated engine through the built-in
// sim profile. It runs only when TTFTLAB_BIN names a built ttftlab binary
// (make test-e2e sets it).
func TestRealSimEngine(t *testing.T) {
	bin := os.Getenv("TTFTLAB_BIN")
	if bin == "" {
		t.Skip("TTFTLAB_BIN not set; build ttftlab and set it to run the real sim")
	}
	n := newTestNode(t, func(c *Config) {
		c.Profiles = BuiltinProfiles(bin)
		c.Launcher = ExecLauncher
	})
	info, err := n.StartEngine(t.Context(), StartSpec{Profile: "sim", Knobs: Knobs{MaxModelLen: 8192}})
	if err != nil {
		t.Fatalf("StartEngine(sim): %v", err)
	}
	t.Logf("sim %s ready in %v at %s", info.Version, info.ReadyDuration, info.BaseURL)
	for _, p := range info.Phases {
		t.Logf("  %-24s %-10s %8.3f → %8.3f  (%.3f s) %s", p.Name, p.Source, p.Start.Seconds(), p.End.Seconds(), p.Duration.Seconds(), p.Detail)
	}
	if !info.Simulated || info.Version == "" {
		t.Errorf("Simulated %v, Version %q", info.Simulated, info.Version)
	}
	names := map[string]bool{}
	for _, p := range info.Phases {
		names[p.Name] = true
	}
	for _, want := range []string{vllmlog.PhaseBootstrap, vllmlog.PhaseLoadModel, vllmlog.PhaseReady} {
		if !names[want] {
			t.Errorf("no %s phase", want)
		}
	}
	if _, err := n.StopEngine(t.Context(), 0); err != nil {
		t.Fatalf("StopEngine: %v", err)
	}
}
