package membership

import (
	"errors"
	"math/rand/v2"
	"slices"
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
		if len(coords) > 0 && len(restarted) == 0 {
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
		} else {
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
			// A restarted coordinator that did not answer: the probes will
			// tell again, or it will be declared dead and the seeds tried.
			n.logger.Debug("re-joining the restarted coordinator failed", "addrs", targets, "err", err)
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
		return k, nil
	}
	return 0, errors.Join(errs...)
}

func contains(list []string, s string) bool { return slices.Contains(list, s) }
