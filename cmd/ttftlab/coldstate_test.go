package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ttftlab/ttftlab/gpunode"
	"github.com/ttftlab/ttftlab/internal/sim"
)

// TestGPUNodeAndSimAgreeOnColdState checks the contract that replaced the
// gpunode's import of the simulator: the variable the gpunode sets and the
// sim reads, and the mode names it carries.
func TestGPUNodeAndSimAgreeOnColdState(t *testing.T) {
	pairs := []struct{ name, gpunode, sim string }{
		{"environment variable", gpunode.SimColdStateEnv, sim.ColdStateEnv},
		{"cold-disk", gpunode.ColdDisk, sim.ColdDisk},
		{"cold-compile", gpunode.ColdCompile, sim.ColdCompile},
	}
	for _, p := range pairs {
		t.Run(p.name, func(t *testing.T) {
			if p.gpunode != p.sim {
				t.Errorf("gpunode says %q, sim says %q", p.gpunode, p.sim)
			}
		})
	}
}

func TestSimColdStateFromFlagAndEnvironment(t *testing.T) {
	tests := []struct {
		name string
		env  string
		args []string
	}{
		{"flag", "", []string{"--cold-state", "lukewarm"}},
		{"environment", "lukewarm", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(sim.ColdStateEnv, tt.env)
			args := append([]string{"--port", "0", "--state-dir", t.TempDir()}, tt.args...)
			err := runSim(t.Context(), args, &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), `--cold-state "lukewarm"`) {
				t.Errorf("runSim = %v, want an error naming --cold-state \"lukewarm\"", err)
			}
		})
	}
	t.Run("flag wins over the environment", func(t *testing.T) {
		t.Setenv(sim.ColdStateEnv, "lukewarm")
		url := startSim(t, "--cold-state", "cold-disk")
		if url == "" {
			t.Fatal("no URL")
		}
	})
}
