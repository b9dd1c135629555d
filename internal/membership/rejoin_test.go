package membership

import (
	"bytes"
	"fmt"
	"log/slog"
	"net"
	"slices"
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
	return startTimed(t, name, role, port, key, keep, 100*time.Millisecond, logger)
}

// startTimed is startCfg with the given rejoin interval, the backoff capped
// at four times it.
func startTimed(t *testing.T, name string, role Role, port int, key []byte, keep bool, interval time.Duration, logger *slog.Logger) *Node {
	t.Helper()
	n, err := New(Config{Name: name, BindAddr: "127.0.0.1", BindPort: port, Fast: true, SecretKey: key,
		KeepJoined: keep, RejoinInterval: interval, RejoinMaxBackoff: 4 * interval,
		Meta: Meta{Role: role, GRPCAddr: "127.0.0.1:1234"},
		// No periodic full sync and no catch-up after a join within a
		// test: only the rejoin logic may bring a restarted coordinator back.
		pushPullInterval: time.Hour, noCatchUp: true}, logger)
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

// relay gets coordinator c's alive message about itself to m on the ack of
// a ping, as a restarted coordinator's refutation of the death the members
// still gossip to it does (the e2e failure): c queues an alive message with
// an incarnation above any its previous run reached, and memberlist
// piggybacks it on the next packet c sends, the ack. m learns c's new
// metadata by gossip, without a push and pull: c learns nothing of m.
func relay(t *testing.T, c, m *Node) {
	t.Helper()
	for range 8 {
		if err := c.list.UpdateNode(0); err != nil {
			t.Fatal(err)
		}
	}
	addr, err := net.ResolveUDPAddr("udp", c.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.list.Ping(c.name, addr); err != nil {
		t.Fatalf("ping the restarted coordinator: %v", err)
	}
}

// TestRejoinCoordinatorSeenOnlyByGossip reproduces the flaky e2e rejoin
// deterministically: the restarted coordinator's alive message, with its new
// boot identifier, reaches the members by gossip before any of them joined
// it. They see it alive, but it knows nobody; the members must still join
// it, because they never exchanged state with it under that boot.
func TestRejoinCoordinatorSeenOnlyByGossip(t *testing.T) {
	tests := []struct {
		name string
		// samePort restarts the coordinator on its old address, after the
		// members noticed and a re-join of it failed, as in e2e; otherwise
		// it comes back on another port and the old address keeps
		// refusing, so the seeds can never bring it back.
		samePort bool
		// interval is the members' rejoin interval: on the old address,
		// the next re-join comes 2 intervals after the failed one, well
		// after the gossip got there.
		interval time.Duration
	}{
		{name: "new port, the old address refusing", interval: 100 * time.Millisecond},
		{name: "same address, after the members noticed", samePort: true, interval: time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs syncBuf
			logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
			c := startCfg(t, "coord", RoleCoordinator, 0, testKey, false, nil)
			a := startTimed(t, "agent-1", RoleAgent, 0, testKey, true, tt.interval, logger)
			g := startTimed(t, "gpu-1", RoleGPUNode, 0, testKey, true, tt.interval, nil)
			for _, n := range []*Node{a, g} {
				if _, err := n.Join([]string{c.Addr()}); err != nil {
					t.Fatal(err)
				}
			}
			waitFor(t, "3 members", func() bool { return sees(c, "coord", "agent-1", "gpu-1") })
			waitFor(t, "members see the coordinator", func() bool { return seesCoordinator(a, c.boot) && seesCoordinator(g, c.boot) })
			time.Sleep(time.Second) // let the joins' alive messages finish their retransmissions.

			p := port(t, c)
			crash(t, c)
			waitFor(t, "both members to fail a re-join", func() bool {
				for _, n := range []*Node{a, g} {
					n.seedMu.Lock()
					k := n.joinAttempts
					n.seedMu.Unlock()
					if k == 0 || len(ByRole(n.Members(), RoleCoordinator)) != 0 {
						return false
					}
				}
				return true
			})
			if !tt.samePort {
				p = 0
			}
			c2 := startCfg(t, "coord", RoleCoordinator, p, testKey, false, nil)
			relay(t, c2, a)
			waitFor(t, "members see the restarted coordinator by gossip", func() bool {
				return seesCoordinator(a, c2.boot) && seesCoordinator(g, c2.boot)
			})
			if !sees(c2, "coord") {
				t.Fatalf("restarted coordinator sees %+v before anyone joined it, want only itself: the gossip did the joining", c2.Members())
			}

			began := time.Now()
			waitFor(t, "restarted coordinator sees the members", func() bool { return sees(c2, "coord", "agent-1", "gpu-1") })
			t.Logf("restarted coordinator knows the members %s after they saw it by gossip", time.Since(began).Round(time.Millisecond))
			waitFor(t, "back-in-view log", func() bool { return strings.Contains(logs.String(), "coordinator back in view") })
			if !strings.Contains(logs.String(), "has not exchanged state with") {
				t.Errorf("agent did not say why it joined a coordinator in view:\n%s", logs.String())
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

func TestDecodeHello(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want hello  // when ok
		err  string // when not ok: a part of the error
	}{
		{name: "coordinator", in: `{"n":"coord","r":"coordinator","b":"0123456789abcdef"}`,
			want: hello{Name: "coord", Role: RoleCoordinator, Boot: "0123456789abcdef"}},
		{name: "agent", in: `{"n":"a","r":"agent","b":"0123456789abcdef"}`,
			want: hello{Name: "a", Role: RoleAgent, Boot: "0123456789abcdef"}},
		{name: "not JSON", in: "\x00\x01", err: "not JSON"},
		{name: "no name", in: `{"r":"coordinator","b":"0123456789abcdef"}`, err: `node ""`},
		{name: "unknown role", in: `{"n":"x","r":"boss","b":"0123456789abcdef"}`, err: `role "boss"`},
		{name: "malformed boot", in: `{"n":"x","r":"coordinator","b":"XYZ"}`, err: `boot identifier "XYZ"`},
		{name: "too long", in: `{"n":"` + strings.Repeat("x", 600) + `","r":"agent","b":"0123456789abcdef"}`, err: "over the limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeHello([]byte(tt.in))
			if tt.err == "" {
				if err != nil || got != tt.want {
					t.Errorf("decodeHello = %+v, %v; want %+v", got, err, tt.want)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("decodeHello error %v, want one containing %q", err, tt.err)
			}
		})
	}
}

// TestExchangesUnsynced checks the bookkeeping behind "back in view": a
// coordinator counts only under the boot of the last exchange, one that
// left the view is forgotten, and the record stays bounded.
func TestExchangesUnsynced(t *testing.T) {
	coord := func(name, boot string) Member {
		return Member{Name: name, Addr: name + ":7946", Meta: Meta{Role: RoleCoordinator, Boot: boot}, State: "alive"}
	}
	names := func(ms []Member) []string {
		var out []string
		for _, m := range ms {
			out = append(out, m.Name)
		}
		return out
	}
	t.Run("boots compared", func(t *testing.T) {
		e := &exchanges{boots: map[string]string{}}
		e.record("c1", "0000000000000001")
		e.record("c2", "0000000000000002")
		view := []Member{coord("c1", "0000000000000001"), coord("c2", "000000000000000f"), coord("c3", "0000000000000003"), coord("old", "")}
		if got := names(e.unsynced(view)); !slices.Equal(got, []string{"c2", "c3"}) {
			t.Errorf("unsynced %v, want [c2 c3]: c2 has another boot, c3 was never exchanged with, old announces no boot", got)
		}
	})
	t.Run("forgotten when out of view", func(t *testing.T) {
		e := &exchanges{boots: map[string]string{}}
		e.record("c1", "0000000000000001")
		e.unsynced(nil)
		if got := names(e.unsynced([]Member{coord("c1", "0000000000000001")})); !slices.Equal(got, []string{"c1"}) {
			t.Errorf("unsynced %v after c1 left the view and came back, want [c1]", got)
		}
	})
	t.Run("bounded", func(t *testing.T) {
		e := &exchanges{boots: map[string]string{}}
		for i := range 10 * maxLearnedSeeds {
			e.record(fmt.Sprintf("c%d", i), "0000000000000001")
		}
		if n := len(e.boots); n > maxLearnedSeeds {
			t.Errorf("%d entries recorded, want at most %d", n, maxLearnedSeeds)
		}
	})
}

// FuzzPeerData feeds arbitrary metadata, ack payloads and push-pull
// hellos, all of which arrive from peers, to their decoders: no panic, and
// whatever is accepted is well formed.
func FuzzPeerData(f *testing.F) {
	f.Add([]byte(`{"r":"coordinator","a":"127.0.0.1:1","v":1,"b":"0123456789abcdef"}`))
	f.Add([]byte("0123456789abcdef"))
	f.Add([]byte(`{"r":1}`))
	f.Add([]byte{})
	f.Add([]byte(`{"n":"coord","r":"coordinator","b":"0123456789abcdef"}`))
	f.Add([]byte(`{"r":"gpunode","a":"127.0.0.1:1","v":1,"l":{"gpu":"NVIDIA-H200","gpus":"8","rack":"r-12"}}`))
	f.Add([]byte(`{"r":"agent","v":1,"l":{"bad key":"v","k":"` + strings.Repeat("x", 70) + `"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		if m, err := decodeMeta(b); err == nil {
			if len(b) > 512 {
				t.Errorf("accepted %d bytes of metadata: %+v", len(b), m)
			}
			// Accepted labels are well formed: a selector built from
			// them parses back to the same set.
			if err := ValidateLabels(m.Labels); err != nil {
				t.Errorf("accepted invalid labels %v: %v", m.Labels, err)
			}
			for k, v := range m.Labels {
				if v == "" {
					continue
				}
				if sel, err := ParseSelector(k + "=" + v); err != nil || !Matches(m.Labels, sel) {
					t.Errorf("accepted label %s=%s does not parse back as a selector: %v", k, v, err)
				}
			}
		}
		if boot, ok := parseBoot(b); ok && len(boot) != bootLen {
			t.Errorf("accepted boot %q of %d characters", boot, len(boot))
		}
		if h, err := decodeHello(b); err == nil {
			if _, ok := parseBoot([]byte(h.Boot)); !ok || h.Name == "" || !h.Role.Valid() || len(b) > maxHelloSize {
				t.Errorf("accepted a malformed hello %+v from %d bytes", h, len(b))
			}
		}
	})
}
