package membership

import (
	"bytes"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var testKey = []byte("0123456789abcdef")

// startCfg starts a node on 127.0.0.1 with fast timers; port 0 picks one.
func startCfg(t *testing.T, name string, role Role, port int, key []byte, keep bool, logger *slog.Logger) *Node {
	t.Helper()
	n, err := New(Config{Name: name, BindAddr: "127.0.0.1", BindPort: port, Fast: true, SecretKey: key,
		KeepJoined: keep, RejoinInterval: 100 * time.Millisecond, RejoinMaxBackoff: 400 * time.Millisecond,
		Meta: Meta{Role: role, GRPCAddr: "127.0.0.1:1234"},
		// No periodic full sync within a test: only the rejoin logic may
		// bring a restarted coordinator back.
		pushPullInterval: time.Hour}, logger)
	if err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	t.Cleanup(func() { n.Close() })
	return n
}

// crash stops n as kill -9 would: no leave message, its loop just gone.
func crash(t *testing.T, n *Node) {
	t.Helper()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return
	}
	n.closed = true
	close(n.stop)
	if n.loopDone != nil {
		<-n.loopDone
	}
	if err := n.list.Shutdown(); err != nil {
		t.Fatal(err)
	}
}

func port(t *testing.T, n *Node) int {
	t.Helper()
	_, p, err := net.SplitHostPort(n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	i, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return i
}

// sees reports whether n sees every name alive, and nothing else.
func sees(n *Node, names ...string) bool {
	ms := n.Members()
	if len(ms) != len(names) {
		return false
	}
	for _, m := range ms {
		if m.State != "alive" || !contains(names, m.Name) {
			return false
		}
	}
	return true
}

// seesCoordinator reports whether n sees an alive coordinator with boot.
func seesCoordinator(n *Node, boot string) bool {
	for _, m := range ByRole(n.Members(), RoleCoordinator) {
		if m.Boot == boot {
			return true
		}
	}
	return false
}

// TestRejoinAfterCoordinatorRestart kills the coordinator of a three-node
// cluster and starts a new one under its name, without Join: the members
// find it again on their own.
func TestRejoinAfterCoordinatorRestart(t *testing.T) {
	tests := []struct {
		name string
		// waitDead waits until the members no longer see the old
		// coordinator alive before starting the new one.
		waitDead bool
		// newPort starts the new coordinator on another port; it then
		// joins one member, as only its old address is known.
		newPort bool
	}{
		{name: "same address after it was declared dead", waitDead: true},
		{name: "same address at once, before anyone noticed"},
		{name: "new port after it was declared dead, joining a member", waitDead: true, newPort: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := startCfg(t, "coord", RoleCoordinator, 0, testKey, false, nil)
			a := startCfg(t, "agent-1", RoleAgent, 0, testKey, true, nil)
			g := startCfg(t, "gpu-1", RoleGPUNode, 0, testKey, true, nil)
			for _, n := range []*Node{a, g} {
				if _, err := n.Join([]string{c.Addr()}); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "3 members", func() bool { return sees(c, "coord", "agent-1", "gpu-1") })
			waitFor(t, "members see the coordinator", func() bool { return seesCoordinator(a, c.boot) && seesCoordinator(g, c.boot) })

			// Let the join's alive messages finish their retransmissions: a
			// young cluster's gossip would otherwise still carry them to the
			// new coordinator, which a settled one does not.
			time.Sleep(time.Second)
			p := port(t, c)
			crash(t, c)
			if tt.waitDead {
				waitFor(t, "coordinator no longer alive", func() bool {
					return len(ByRole(a.Members(), RoleCoordinator)) == 0 && len(ByRole(g.Members(), RoleCoordinator)) == 0
				})
			}
			if tt.newPort {
				p = 0
			}
			c2 := startCfg(t, "coord", RoleCoordinator, p, testKey, false, nil)
			if tt.newPort {
				if _, err := c2.Join([]string{a.Addr()}); err != nil {
					t.Fatal(err)
				}
			}
			began := time.Now()
			waitFor(t, "restarted coordinator sees the members", func() bool { return sees(c2, "coord", "agent-1", "gpu-1") })
			waitFor(t, "members see the restarted coordinator", func() bool { return seesCoordinator(a, c2.boot) && seesCoordinator(g, c2.boot) })
			t.Logf("cluster whole again %s after the restart", time.Since(began).Round(time.Millisecond))
			if got := a.Seeds(); !contains(got, c.Addr()) {
				t.Errorf("agent seeds %v lack the coordinator's address %s", got, c.Addr())
			}
		})
	}
}

// TestRejoinRefusedWithoutKey restarts the coordinator with another gossip
// key: the members' re-joins fail and it never sees them.
func TestRejoinRefusedWithoutKey(t *testing.T) {
	c := startCfg(t, "coord", RoleCoordinator, 0, testKey, false, nil)
	a := startCfg(t, "agent-1", RoleAgent, 0, testKey, true, nil)
	if _, err := a.Join([]string{c.Addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "2 members", func() bool { return sees(c, "coord", "agent-1") })
	p := port(t, c)
	crash(t, c)
	waitFor(t, "coordinator no longer alive", func() bool { return len(ByRole(a.Members(), RoleCoordinator)) == 0 })

	intruder := startCfg(t, "coord", RoleCoordinator, p, []byte("fedcba9876543210"), false, nil)
	waitFor(t, "a failed re-join attempt", func() bool {
		a.seedMu.Lock()
		defer a.seedMu.Unlock()
		return a.joinAttempts >= 3
	})
	if !sees(intruder, "coord") {
		t.Errorf("coordinator with another key sees %+v, want only itself", intruder.Members())
	}
	if cs := ByRole(a.Members(), RoleCoordinator); len(cs) != 0 {
		t.Errorf("agent sees coordinators %+v through another key", cs)
	}
}

// syncBuf is a bytes.Buffer safe for the logger's concurrent writes.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestRejoinBacksOffQuietly leaves an agent without its coordinator for a
// while: it re-joins with backoff instead of spinning, warns once, says when
// the coordinator is back, and Close waits for the loop promptly.
func TestRejoinBacksOffQuietly(t *testing.T) {
	var logs syncBuf
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	c := startCfg(t, "coord", RoleCoordinator, 0, testKey, false, nil)
	a := startCfg(t, "agent-1", RoleAgent, 0, testKey, true, logger)
	if _, err := a.Join([]string{c.Addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "2 members", func() bool { return sees(c, "coord", "agent-1") })
	p := port(t, c)
	crash(t, c)
	waitFor(t, "coordinator no longer alive", func() bool { return len(ByRole(a.Members(), RoleCoordinator)) == 0 })

	// Interval 100 ms, backoff capped at 400 ms: over 2 s at most
	// 100+200+400+400+400+400+400 ms, i.e. 7 attempts, plus jitter; a loop
	// that spun would make hundreds.
	a.seedMu.Lock()
	before := a.joinAttempts
	a.seedMu.Unlock()
	time.Sleep(2 * time.Second)
	a.seedMu.Lock()
	attempts := a.joinAttempts - before
	a.seedMu.Unlock()
	if attempts < 3 || attempts > 10 {
		t.Errorf("%d re-join attempts in 2 s with a 100 ms interval capped at 400 ms; want 3..10", attempts)
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
		t.Errorf("%d warnings while the coordinator was down, want exactly 1:\n%s", n, logs.String())
	}

	c2 := startCfg(t, "coord", RoleCoordinator, p, testKey, false, nil)
	waitFor(t, "restarted coordinator sees the agent", func() bool { return sees(c2, "coord", "agent-1") })
	waitFor(t, "back-in-view log", func() bool { return strings.Contains(logs.String(), "coordinator back in view") })

	began := time.Now()
	if err := a.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if d := time.Since(began); d > 3*time.Second {
		t.Errorf("Close took %s, want the loop stopped within 3 s", d)
	}
}

// TestSeedsLearnCoordinators joins an agent through another agent: it
// learns the coordinator's address from gossip and keeps it as a seed.
func TestSeedsLearnCoordinators(t *testing.T) {
	c := startCfg(t, "coord", RoleCoordinator, 0, testKey, false, nil)
	a1 := startCfg(t, "agent-1", RoleAgent, 0, testKey, true, nil)
	a2 := startCfg(t, "agent-2", RoleAgent, 0, testKey, true, nil)
	if _, err := a1.Join([]string{c.Addr()}); err != nil {
		t.Fatal(err)
	}
	if _, err := a2.Join([]string{a1.Addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "agent-2 learns the coordinator", func() bool { return contains(a2.Seeds(), c.Addr()) })
	if got := a2.Seeds(); got[0] != a1.Addr() {
		t.Errorf("seeds %v: want the Join address %s first", got, a1.Addr())
	}
}

func TestRejoinConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		cfg  Config
	}{
		{"negative interval", Config{RejoinInterval: -time.Second}},
		{"negative backoff", Config{RejoinMaxBackoff: -time.Second}},
		{"negative log interval", Config{RejoinLogEvery: -time.Second}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.cfg.Name, tt.cfg.Meta.Role, tt.cfg.BindAddr, tt.cfg.Fast, tt.cfg.KeepJoined = "x", RoleAgent, "127.0.0.1", true, true
			n, err := New(tt.cfg, nil)
			if err == nil {
				n.Close()
				t.Fatal("New succeeded, want an error")
			}
			if !strings.Contains(err.Error(), "negative rejoin timer") {
				t.Errorf("error %q does not name the bad timer", err)
			}
		})
	}
}

func TestParseBoot(t *testing.T) {
	tests := []struct {
		name    string
		payload string
		ok      bool
	}{
		{"boot id", "0123456789abcdef", true},
		{"empty (older peer)", "", false},
		{"short", "0123", false},
		{"upper case", "0123456789ABCDEF", false},
		{"not hex", "0123456789abcdeg", false},
		{"long", "0123456789abcdef0", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := parseBoot([]byte(tt.payload))
			if ok != tt.ok || (ok && got != tt.payload) {
				t.Errorf("parseBoot(%q) = %q, %v; want ok %v", tt.payload, got, ok, tt.ok)
			}
		})
	}
}

// FuzzPeerData feeds arbitrary metadata and ack payloads, both of which
// arrive from peers, to their decoders: no panic, and whatever is accepted
// is well formed.
func FuzzPeerData(f *testing.F) {
	f.Add([]byte(`{"r":"coordinator","a":"127.0.0.1:1","v":1,"b":"0123456789abcdef"}`))
	f.Add([]byte("0123456789abcdef"))
	f.Add([]byte(`{"r":1}`))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeMeta(b); err == nil && len(b) > 512 {
			t.Errorf("accepted %d bytes of metadata: %+v", len(b), m)
		}
		if boot, ok := parseBoot(b); ok && len(boot) != bootLen {
			t.Errorf("accepted boot %q of %d characters", boot, len(boot))
		}
	})
}
