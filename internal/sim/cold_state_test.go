package sim

import (
	"regexp"
	"strings"
	"testing"
)

var loadWeightsRE = regexp.MustCompile(`Loading weights took ([0-9.]+) seconds`)

// TestColdStateResetsTheSimulatedCaches starts an engine once to fill its
// page-cache and compile state, then again with each --cold-state, and
// checks from the log which caches the second start found cold.
func TestColdStateResetsTheSimulatedCaches(t *testing.T) {
	tests := []struct {
		state       string
		diskCold    bool // weights read at disk speed
		compileCold bool // torch.compile from scratch
		logs        string
	}{
		{state: "", logs: ""},
		{state: ColdWarm, logs: ""},
		{state: ColdDisk, diskCold: true, logs: "--cold-state cold-disk: evicted the simulated page cache of Qwen/Qwen2.5-7B-Instruct"},
		{state: ColdCompile, compileCold: true, logs: "--cold-state cold-compile: emptied the simulated compile cache of Qwen/Qwen2.5-7B-Instruct"},
	}
	for _, tt := range tests {
		name := tt.state
		if name == "" {
			name = "unset"
		}
		t.Run(name, func(t *testing.T) {
			c := testConfig(t)
			c.StartupScale = 0.02
			c.Model = "Qwen/Qwen2.5-7B-Instruct"
			// A slow disk widens the gap: 15 GB take 30 s from disk and 3 s
			// from the page cache (0.6 s against 0.06 s at this scale).
			c.Startup.DiskReadBps = 0.5e9
			m, err := LookupModel(c.Model)
			if err != nil {
				t.Fatal(err)
			}
			// A sleep never ends early, so a disk-speed load takes at least
			// its nominal time; a page-cache load would have to be delayed
			// by half a second to look like one.
			diskLoad := c.StartupScale * (c.Startup.WeightsFixed.Seconds() + float64(m.WeightBytes())/c.Startup.DiskReadBps)
			first := start(t, c)
			first.Close()
			c.ColdState = tt.state
			second := start(t, c)
			second.Close()
			log := second.log.String()
			load := startupSeconds(t, log, loadWeightsRE)
			if gotCold := load >= 0.9*diskLoad; gotCold != tt.diskCold {
				t.Errorf("weights took %.3f s (%.3f s at disk speed): disk-cold %v, want %v", load, diskLoad, gotCold, tt.diskCold)
			}
			if got := strings.Contains(log, "Compiling a graph"); got != tt.compileCold {
				t.Errorf("compiled from scratch %v, want %v\n%s", got, tt.compileCold, log)
			}
			if tt.logs != "" && !strings.Contains(log, tt.logs) {
				t.Errorf("log lacks %q\n%s", tt.logs, log)
			}
			if tt.logs == "" && strings.Contains(log, "--cold-state") {
				t.Errorf("a warm start logged a cold-state reset\n%s", log)
			}
		})
	}
}

func TestColdStateNamesTheFlag(t *testing.T) {
	c := testConfig(t)
	c.ColdState = "cold"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), `--cold-state "cold"`) || !strings.Contains(err.Error(), "cold-disk") {
		t.Errorf("Validate = %v, want an error naming --cold-state and the accepted values", err)
	}
}
