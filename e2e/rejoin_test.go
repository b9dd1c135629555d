//go:build linux

package e2e

import (
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// lostCoordinatorRE is the agents' and gpunodes' one warning when no alive
// coordinator is in view any more.
var lostCoordinatorRE = regexp.MustCompile(`level=WARN msg="no alive coordinator in view`)

// TestE2ECoordinatorRestartIsRejoined SIGKILLs the coordinator of a running
// cluster and starts it again on its old gossip address, without --join:
// the gpunode and the agent find it on their own within 10 s, it lists them,
// and a baseline or sweep through it succeeds.
func TestE2ECoordinatorRestartIsRejoined(t *testing.T) {
	tests := []struct {
		name string
		// noticed waits, before the restart, until the members have
		// declared the old coordinator dead and started re-joining.
		noticed bool
		// run is the measurement made through the restarted coordinator.
		run string
	}{
		{name: "restarted at once", run: "baseline"},
		{name: "restarted after the members noticed", noticed: true, run: "sweep"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t)
			old := c.startCoordinator()
			gpu := c.startGPUNode("gpu")
			agent := c.startAgent("agent1")
			c.waitAllAlive()
			// Let the joins' alive messages finish their retransmissions: a
			// young cluster's gossip would still carry them to the new
			// coordinator and hide whether the members find it themselves.
			time.Sleep(2 * time.Second)

			old.Kill()
			if tt.noticed {
				gpu.WaitLog(lostCoordinatorRE, 30*time.Second)
				agent.WaitLog(lostCoordinatorRE, 30*time.Second)
			}
			restarted := c.restartCoordinator("coord", old.gossip)
			began := time.Now()
			waitUntil(t, 10*time.Second, "the restarted coordinator to list the gpunode and the agent", c.allAlive)
			t.Logf("members listed %s after the restart", time.Since(began).Round(time.Millisecond))
			if restarted.gossip != old.gossip {
				t.Errorf("restarted coordinator gossips on %s, want its old %s", restarted.gossip, old.gossip)
			}

			switch tt.run {
			case "baseline":
				_, stderr, err := c.cli(90*time.Second, "baseline", "--coordinator", c.coord.grpc, "--warm-runs", "1", "--max-tokens", "16",
					"--out", "baselines", "--run-id", "after-restart", "--quiet")
				if err != nil {
					t.Fatalf("baseline through the restarted coordinator: %v\n%s", err, stderr)
				}
				var res struct {
					Status string `json:"status"`
					Error  string `json:"error"`
				}
				readJSON(t, filepath.Join(c.dir, "coordinator-results", "baselines", "after-restart", "results.json"), &res)
				if res.Status != "ok" {
					t.Fatalf("baseline status %q (%s), want ok", res.Status, res.Error)
				}
			case "sweep":
				_, stderr, err := c.cli(90*time.Second, c.sweepArgs("sweeps", "after-restart", "--levels", "2", "--level-duration", "1s")...)
				if err != nil {
					t.Fatalf("sweep through the restarted coordinator: %v\n%s", err, stderr)
				}
				var res sweepResults
				readJSON(t, filepath.Join(c.dir, "coordinator-results", "sweeps", "after-restart", "results.json"), &res)
				if res.Status != "ok" || len(res.Levels) != 1 {
					t.Fatalf("sweep status %q (%s), %d levels; want ok and 1", res.Status, res.Error, len(res.Levels))
				}
				if l := res.Levels[0]; l.Requests == 0 || l.Errors != 0 || !slices.Equal(l.Agents, []string{"agent1"}) {
					t.Errorf("level: %d requests, %d errors, agents %v; want some requests, no errors, agent1", l.Requests, l.Errors, l.Agents)
				}
			}

			// The members warned at most once each about the lost
			// coordinator, and did not repeat it while re-joining.
			for _, d := range []*daemon{gpu, agent} {
				log := d.Log.String()
				if n := len(lostCoordinatorRE.FindAllStringIndex(log, -1)); n > 1 {
					t.Errorf("%s warned %d times that the coordinator was lost, want at most once", d.Name, n)
				}
				if n := strings.Count(log, "still no coordinator"); n > 1 {
					t.Errorf("%s repeated %d times that re-joining fails, within one 30 s log interval", d.Name, n)
				}
			}
		})
	}
}

// restartCoordinator starts the coordinator again under its node name,
// gossiping on gossip, without --join, and makes it the cluster's
// coordinator.
func (c *cluster) restartCoordinator(name, gossip string) *daemon {
	c.t.Helper()
	p := start(c.t, c.bin, c.dir, name+"-restarted", "coordinator", "--name", name, "--grpc-addr", "127.0.0.1:0",
		"--gossip-addr", gossip, "--gossip-key-file", c.keyFile, "--out", filepath.Join(c.dir, "coordinator-results"), "--agent-silence", e2eAgentSilence)
	m := p.WaitLog(servingRE, 15*time.Second)
	if m[1] != name {
		c.t.Fatalf("restarted coordinator logged serving name=%s, want %s", m[1], name)
	}
	d := &daemon{proc: p, role: "coordinator", grpc: m[2], gossip: m[3]}
	c.coord = d
	c.daemons[name] = d
	return d
}

// allAlive reports whether the coordinator lists every started daemon,
// alive, with the role and gRPC address it was started with, and nothing
// else; the error says what differs.
func (c *cluster) allAlive() (bool, error) {
	ms, err := c.members()
	if err != nil {
		return false, err
	}
	if len(ms) != len(c.daemons) {
		return false, fmt.Errorf("%d members, want %d: %v", len(ms), len(c.daemons), ms)
	}
	for _, m := range ms {
		d, ok := c.daemons[m.name]
		if !ok || m.role != d.role || m.grpc != d.grpc || m.state != "alive" {
			return false, fmt.Errorf("member %+v does not match a started daemon", m)
		}
	}
	return true, nil
}
