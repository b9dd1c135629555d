package membership

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"
)

// A restarted coordinator knows nobody: it was started without --join, and
// memberlist never contacts a node it does not know. So the members find it
// again. Two cases:
//
//   - The coordinator was gone long enough to be suspected or declared dead:
//     no alive coordinator is in view, and the loop re-joins the seeds until
//     one answers (every RejoinInterval, doubling after each failure up to
//     RejoinMaxBackoff).
//   - It came back at the same address before anyone noticed: it answers the
//     probes sent to its name, so it looks alive, yet it does not know the
//     cluster. Its acks carry a new boot identifier, which differs from the
//     one its old metadata announced; the loop re-joins it at once. The push
//     and pull of that join hands it the whole cluster, and it refutes the old
//     incarnation with its new metadata.
//
// Either way the join is memberlist's own, so it is encrypted with the gossip
// key like any other: a coordinator with another key cannot be re-joined.
//
// Seeing the coordinator alive is not proof that it knows this node. A
// restarted coordinator that receives gossip about its own death (members
// keep gossiping to a dead node for a while) refutes it with an alive
// message carrying its new metadata, and that message reaches the members
// piggybacked on any packet it sends, say the ack to a probe still in
// flight, or relayed by another member. The members then see it alive,
// under its new boot identifier, while it still knows nobody: nothing but a
// push and pull (a join, or the periodic full sync, 30 s apart) hands it
// the cluster. So the loop only counts a coordinator as back once this node
// has exchanged state with it under the boot identifier it is seen with:
// every push and pull carries each side's hello (name, role, boot), and a
// coordinator in view whose boot differs from the one of the last exchange
// is joined again.

// hello is what a node sends in every push and pull, next to its member
// list: who it is, in this run.
type hello struct {
	Name string `json:"n"`
	Role Role   `json:"r"`
	Boot string `json:"b"`
}

// maxHelloSize bounds a hello, which arrives from a peer.
const maxHelloSize = 512

func (h hello) encode() ([]byte, error) {
	b, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("membership: encode the push-pull hello: %w", err)
	}
	if len(b) > maxHelloSize {
		return nil, fmt.Errorf("membership: node name is too long (%d bytes of hello, limit %d): shorten --name", len(b), maxHelloSize)
	}
	return b, nil
}

// decodeHello decodes a peer's hello, which is untrusted: a JSON object
// within maxHelloSize, with a name, a known role and a well-formed boot.
func decodeHello(b []byte) (hello, error) {
	var h hello
	if len(b) > maxHelloSize {
		return hello{}, fmt.Errorf("hello is %d bytes, over the limit of %d", len(b), maxHelloSize)
	}
	if err := json.Unmarshal(b, &h); err != nil {
		return hello{}, fmt.Errorf("hello is not JSON: %w", err)
	}
	if h.Name == "" || !h.Role.Valid() {
		return hello{}, fmt.Errorf("hello names node %q with role %q", h.Name, h.Role)
	}
	if _, ok := parseBoot([]byte(h.Boot)); !ok {
		return hello{}, fmt.Errorf("hello of %q has a malformed boot identifier %q", h.Name, h.Boot)
	}
	return h, nil
}

// exchanges records, by coordinator name, the boot identifier each
// coordinator had in the last push and pull with this node. It is written
// from memberlist's goroutines and read by the rejoin loop.
type exchanges struct {
	mu    sync.Mutex
	boots map[string]string
}

func (e *exchanges) record(name, boot string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.boots[name]; !ok && len(e.boots) >= maxLearnedSeeds {
		// Names come from peers: bound the map. The loop prunes it to the
		// coordinators in view, so this only drops stale entries or costs
		// one extra join.
		for k := range e.boots {
			delete(e.boots, k)
			break
		}
	}
	e.boots[name] = boot
}

// unsynced returns the coordinators among coords that this node has not
// exchanged state with under their current boot identifier, and forgets
// the coordinators that are no longer in view.
func (e *exchanges) unsynced(coords []Member) []Member {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []Member
	for _, c := range coords {
		// A coordinator that announces no boot (an older version) sends no
		// hello either: there is nothing to compare, so trust the view.
		if c.Boot != "" && e.boots[c.Name] != c.Boot {
			out = append(out, c)
		}
	}
	for name := range e.boots {
		if !slices.ContainsFunc(coords, func(c Member) bool { return c.Name == name }) {
			delete(e.boots, name)
		}
	}
	return out
}

// noteRestarted records that the coordinator at addr answered a probe with
// a boot identifier other than the one gossip announced for it.
func (n *Node) noteRestarted(addr string) {
	if n.loopDone == nil {
		return
	}
	n.seedMu.Lock()
	if !contains(n.restarted, addr) && len(n.restarted) < maxLearnedSeeds {
		n.restarted = append(n.restarted, addr)
	}
	n.seedMu.Unlock()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// Seeds returns the addresses the node re-joins when it loses the
// coordinator: those given to Join, then the coordinators seen in gossip.
func (n *Node) Seeds() []string {
	n.seedMu.Lock()
	defer n.seedMu.Unlock()
	out := slices.Clone(n.given)
	for _, a := range n.learned {
		if !contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// learn remembers the gossip addresses of the alive coordinators, keeping
// the newest maxLearnedSeeds.
func (n *Node) learn(coords []Member) {
	n.seedMu.Lock()
	defer n.seedMu.Unlock()
	for _, c := range coords {
		if i := slices.Index(n.learned, c.Addr); i >= 0 {
			n.learned = slices.Delete(n.learned, i, i+1)
		}
		n.learned = append(n.learned, c.Addr)
	}
	if over := len(n.learned) - maxLearnedSeeds; over > 0 {
		n.learned = slices.Delete(n.learned, 0, over)
	}
}

// noteUnsynced logs the coordinators in view that this node has not
// exchanged state with: at info level when the set changes, else at debug.
func (n *Node) noteUnsynced(unsynced []Member) {
	var ids []string
	for _, c := range unsynced {
		ids = append(ids, c.Name+"@"+c.Addr+"/"+c.Boot)
	}
	key := strings.Join(ids, ",")
	n.seedMu.Lock()
	changed := key != n.unsyncedNoted
	n.unsyncedNoted = key
	n.seedMu.Unlock()
	level := slog.LevelDebug
	if changed {
		level = slog.LevelInfo
	}
	n.logger.Log(context.Background(), level, "coordinator in view that this node has not exchanged state with (it may not know this node); joining it",
		"coordinators", ids)
}

// takeRestarted returns and clears the restarted coordinators' addresses.
func (n *Node) takeRestarted() []string {
	n.seedMu.Lock()
	defer n.seedMu.Unlock()
	r := n.restarted
	n.restarted = nil
	return r
}

// otherCoordinators returns the alive coordinators in view, this node aside.
func (n *Node) otherCoordinators() []Member {
	var out []Member
	for _, m := range ByRole(n.members(false), RoleCoordinator) {
		if m.Name != n.name {
			out = append(out, m)
		}
	}
	return out
}

// keepJoined is the rejoin loop; Close stops it and waits for it.
func (n *Node) keepJoined() {
	defer close(n.loopDone)
	interval, maxBackoff, logEvery := n.cfg.RejoinInterval, n.cfg.RejoinMaxBackoff, n.cfg.RejoinLogEvery
	var (
		lost      bool      // no alive coordinator in view since lostSince
		lostSince time.Time // when the loop noticed
		failures  int       // failed attempts since lostSince
		lastWarn  time.Time // last "still failing" warning
		delay     = interval
	)
	timer := time.NewTimer(interval)
	defer timer.Stop()
	for {
		select {
		case <-n.stop:
			return
		case <-timer.C:
		case <-n.wake:
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
		}

		restarted := n.takeRestarted()
		coords := n.otherCoordinators()
		n.learn(coords)
		unsynced := n.ex.unsynced(coords)
		if len(coords) > 0 && len(restarted) == 0 && len(unsynced) == 0 {
			if lost {
				n.logger.Info("coordinator back in view", "coordinators", len(coords), "after", time.Since(lostSince).Round(time.Millisecond), "failed_rejoins", failures)
			}
			lost, failures, delay = false, 0, interval
			timer.Reset(interval)
			continue
		}

		targets := restarted
		if len(targets) > 0 {
			n.logger.Info("coordinator restarted at its old address; re-joining it", "addrs", targets)
		}
		if len(unsynced) > 0 {
			n.noteUnsynced(unsynced)
			for _, c := range unsynced {
				if !contains(targets, c.Addr) {
					targets = append(targets, c.Addr)
				}
			}
		}
		if len(targets) == 0 {
			targets = n.Seeds()
			if !lost {
				lost, lostSince, failures, lastWarn = true, time.Now(), 0, time.Now()
				if len(targets) == 0 {
					n.logger.Warn("no alive coordinator in view and no seeds to re-join: restart this node with --join COORDINATOR_GOSSIP_ADDR")
				} else {
					n.logger.Warn("no alive coordinator in view; re-joining the seeds until one answers", "seeds", targets)
				}
			}
		}
		if len(targets) == 0 {
			timer.Reset(interval)
			continue
		}

		k, err := n.rejoin(targets)
		switch {
		case k > 0:
			n.logger.Debug("re-joined", "answered", k, "of", len(targets))
			delay = interval
		case errors.Is(err, errStopped):
			return
		case !lost:
			// A restarted or unsynced coordinator that did not answer: the
			// next round tries again, or it is declared dead and the seeds
			// are tried.
			n.logger.Debug("re-joining a coordinator in view failed", "addrs", targets, "err", err)
			delay = min(2*delay, maxBackoff)
		default:
			failures++
			delay = min(2*delay, maxBackoff)
			if time.Since(lastWarn) >= logEvery {
				lastWarn = time.Now()
				n.logger.Warn("still no coordinator: re-joining the seeds keeps failing", "for", time.Since(lostSince).Round(time.Second),
					"attempts", failures, "next_in", delay, "err", err)
			}
		}
		// ±10 % jitter, so members that lost the coordinator together do not
		// knock on it in lockstep.
		timer.Reset(delay + time.Duration((rand.Float64()*0.2-0.1)*float64(delay)))
	}
}

var errStopped = errors.New("membership: node closed")

// rejoin joins the targets one at a time, so that Close waits for at most
// one connection attempt, and returns how many answered.
func (n *Node) rejoin(targets []string) (int, error) {
	n.seedMu.Lock()
	n.joinAttempts++
	n.seedMu.Unlock()
	var (
		k    int
		errs []error
	)
	for _, t := range targets {
		select {
		case <-n.stop:
			return k, errStopped
		default:
		}
		m, err := n.list.Join([]string{t})
		k += m
		if err != nil {
			errs = append(errs, err)
		}
	}
	if k > 0 {
		// A re-join is a join: catch up with the seeds as Join does.
		n.startCatchUp(targets)
		return k, nil
	}
	return 0, errors.Join(errs...)
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }
