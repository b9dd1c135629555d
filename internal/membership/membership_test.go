package membership

import (
	"fmt"
	"testing"
	"time"
)

func startNode(t *testing.T, name string, role Role, key []byte) *Node {
	t.Helper()
	n, err := New(Config{Name: name, BindAddr: "127.0.0.1", BindPort: 0, Fast: true, SecretKey: key,
		Meta: Meta{Role: role, GRPCAddr: "127.0.0.1:1234"}}, nil)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// waitFor retries until cond holds or the deadline passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("timed out waiting for %s", what)
}

func TestClusterConvergesAndSeesRoles(t *testing.T) {
	key := []byte("0123456789abcdef")
	c := startNode(t, "coord", RoleCoordinator, key)
	a1 := startNode(t, "agent-1", RoleAgent, key)
	a2 := startNode(t, "agent-2", RoleAgent, key)
	g := startNode(t, "gpu-1", RoleGPUNode, key)
	for _, n := range []*Node{a1, a2, g} {
		if _, err := n.Join([]string{c.Addr()}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "4 members", func() bool { return len(c.Members()) == 4 })
	ms := c.Members()
	if got := len(ByRole(ms, RoleAgent)); got != 2 {
		t.Errorf("agents = %d, want 2", got)
	}
	gs := ByRole(ms, RoleGPUNode)
	if len(gs) != 1 || gs[0].GRPCAddr != "127.0.0.1:1234" || gs[0].Version != ProtocolVersion {
		t.Errorf("gpunodes = %+v, want one with the announced address and version", gs)
	}
	select {
	case <-c.Changes():
	default:
		t.Error("no change signal after joins")
	}

	// A node that leaves disappears from the alive view.
	if err := a2.Close(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "agent-2 gone", func() bool { return len(ByRole(c.Members(), RoleAgent)) == 1 })
}

func TestNodeWithoutKeyCannotJoin(t *testing.T) {
	c := startNode(t, "coord", RoleCoordinator, []byte("0123456789abcdef"))
	intruder := startNode(t, "intruder", RoleAgent, nil)
	if _, err := intruder.Join([]string{c.Addr()}); err == nil {
		t.Fatal("join without the gossip key succeeded")
	}
	time.Sleep(200 * time.Millisecond)
	if n := len(c.Members()); n != 1 {
		t.Errorf("coordinator sees %d members, want only itself", n)
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"no name", Config{Meta: Meta{Role: RoleAgent}}},
		{"bad role", Config{Name: "x", Meta: Meta{Role: "boss"}}},
		{"bad key", Config{Name: "x", Meta: Meta{Role: RoleAgent}, SecretKey: []byte("short")}},
		{"meta too big", Config{Name: "x", Meta: Meta{Role: RoleAgent, GRPCAddr: fmt.Sprintf("%0600d", 0)}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.BindAddr, tt.cfg.Fast = "127.0.0.1", true
			if n, err := New(tt.cfg, nil); err == nil {
				n.Close()
				t.Fatal("New succeeded, want an error")
			}
		})
	}
}

func TestMemberlistConfigTimers(t *testing.T) {
	for _, tc := range []struct {
		name                 string
		cfg                  Config
		probeTimeout         time.Duration
		suspicionMultAtLeast int
		pushPull             time.Duration
		tcpTimeout           time.Duration
	}{
		{"lan", Config{}, 500 * time.Millisecond, 4, 5 * time.Second, 10 * time.Second},
		{"fast", Config{Fast: true}, 100 * time.Millisecond, 2, 2 * time.Second, time.Second},
		// A starved host must not fail the joins of an in-process cluster.
		{"in process", Config{Fast: true, InProcess: true}, time.Second, 8, 2 * time.Second, 10 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mc := memberlistConfig(tc.cfg)
			if mc.ProbeTimeout != tc.probeTimeout {
				t.Errorf("probe timeout %v, want %v", mc.ProbeTimeout, tc.probeTimeout)
			}
			if mc.SuspicionMult < tc.suspicionMultAtLeast {
				t.Errorf("suspicion multiplier %d, want at least %d", mc.SuspicionMult, tc.suspicionMultAtLeast)
			}
			if mc.PushPullInterval != tc.pushPull {
				t.Errorf("push-pull interval %v, want %v", mc.PushPullInterval, tc.pushPull)
			}
			if mc.TCPTimeout != tc.tcpTimeout {
				t.Errorf("TCP timeout %v, want %v", mc.TCPTimeout, tc.tcpTimeout)
			}
			if mc.DeadNodeReclaimTime != time.Millisecond {
				t.Errorf("dead node reclaim time %v, want 1ms", mc.DeadNodeReclaimTime)
			}
		})
	}
}

// TestJoinCatchesUpWithSeeds checks the catch-up exchanges after a join: a
// joiner exchanges state with its seed once to join and catchUpRounds times
// more, so that it learns of the nodes that joined the seed after it, and
// not at all more when they are off. No periodic full sync runs in the test.
func TestJoinCatchesUpWithSeeds(t *testing.T) {
	for _, tc := range []struct {
		name      string
		noCatchUp bool
		want      int64
	}{
		{"catch-up", false, 1 + catchUpRounds},
		{"off", true, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := func(name string, role Role) *Node {
				n, err := New(Config{Name: name, BindAddr: "127.0.0.1", Fast: true,
					Meta:             Meta{Role: role, GRPCAddr: "127.0.0.1:1234"},
					pushPullInterval: time.Hour, noCatchUp: tc.noCatchUp, catchUpFirst: 50 * time.Millisecond}, nil)
				if err != nil {
					t.Fatalf("start %s: %v", name, err)
				}
				t.Cleanup(func() { n.Close() })
				return n
			}
			seed := start("seed", RoleCoordinator)
			joiner := start("joiner", RoleAgent)
			if _, err := joiner.Join([]string{seed.Addr()}); err != nil {
				t.Fatal(err)
			}
			// The rounds end 50 + 100 + 200 ms (+50 %) after the join; wait
			// for the count, then well past the last round for any extra.
			waitFor(t, fmt.Sprintf("%d exchanges at the seed", tc.want), func() bool { return seed.dlg.exchanged.Load() >= tc.want })
			time.Sleep(time.Second)
			if got := seed.dlg.exchanged.Load(); got != tc.want {
				t.Errorf("the seed took part in %d exchanges, want %d", got, tc.want)
			}
			if got := joiner.dlg.exchanged.Load(); got != tc.want {
				t.Errorf("the joiner took part in %d exchanges, want %d", got, tc.want)
			}
		})
	}
}
