//go:build linux

// Package netns runs ttftlab's daemons as real processes across real
// network boundaries: one Linux network namespace per role (coordinator,
// gpunodes, agents), each with its own address in 10.213.0.0/24 on a veth
// pair plugged into a bridge that belongs to the test. Links are cut with
// `ip link set … down` and delayed with `tc netem`, so partitions and latency
// are the kernel's, not a fake's. Nothing is sent to any address outside
// loopback and the test's own namespaces: the host end of each veth and the
// bridge carry no address, so the private range is reachable only from
// inside the namespaces.
//
// The tests need root (CAP_NET_ADMIN), iproute2 and the ttftlab binary;
// `make test-netns` builds the binary and sets TTFTLAB_BIN and
// TTFTLAB_NETNS=1. Without them each test skips and says why.
package netns

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// subnet is the private /24 of every test topology. Each topology has its
// own bridge, so two runs at once use the same addresses without meeting.
const subnet = "10.213.0"

// netnsDir is where `ip netns add` mounts named namespaces.
const netnsDir = "/var/run/netns"

// nsPrefix and linkPrefix start every namespace and link the tests create;
// the creating process's pid (base 36, five digits) follows, so the sweeper
// can tell a crashed run's leftovers from a live run's.
const (
	nsPrefix   = "ttftlab-"
	linkPrefix = "tfl"
)

// staleNS and staleLink match the names the tests create and capture the
// creator's pid.
var (
	staleNS   = regexp.MustCompile(`^` + nsPrefix + `([0-9a-z]{5})-`)
	staleLink = regexp.MustCompile(`^` + linkPrefix + `([0-9a-z]{5})[a-z]{2}`)
)

// pid36 is this process's pid in base 36, zero-padded to five digits (the
// largest Linux pid, 4194304, is "2hwcg").
func pid36(pid int) string {
	return fmt.Sprintf("%05s", strconv.FormatInt(int64(pid), 36))
}

// ipCmd runs a command (ip, tc) to its end and returns an error that
// carries its output.
func ipCmd(name string, args ...string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

// skipReason says why this machine cannot run the tests, or "" when it can.
// It creates and deletes a probe namespace, so that a kernel or sandbox
// without network namespaces is found before any daemon starts.
func skipReason() string {
	if os.Getenv("TTFTLAB_NETNS") == "" {
		return "network-namespace tests run under `make test-netns` (TTFTLAB_NETNS=1, as root)"
	}
	if runtime.GOOS != "linux" {
		return "network namespaces need Linux"
	}
	if os.Geteuid() != 0 {
		return fmt.Sprintf("network namespaces, veth pairs and bridges need root (CAP_NET_ADMIN); running as uid %d", os.Geteuid())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "`ip` (iproute2) is not in PATH: install iproute2"
	}
	probe := fmt.Sprintf("%s%s-probe", nsPrefix, pid36(os.Getpid()))
	if err := ipCmd("ip", "netns", "add", probe); err != nil {
		return fmt.Sprintf("cannot create a network namespace: %v", err)
	}
	// A kernel without bridge or veth support (CONFIG_BRIDGE, CONFIG_VETH)
	// is found here too, not halfway through a topology.
	reason := ""
	br, veth := linkPrefix+pid36(os.Getpid())+"pb", linkPrefix+pid36(os.Getpid())+"pv"
	if err := ipCmd("ip", "link", "add", br, "type", "bridge"); err != nil {
		reason = fmt.Sprintf("cannot create a bridge (kernel without CONFIG_BRIDGE?): %v", err)
	} else {
		if err := ipCmd("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", probe); err != nil {
			reason = fmt.Sprintf("cannot create a veth pair (kernel without CONFIG_VETH?): %v", err)
		}
		_ = ipCmd("ip", "link", "del", br)
	}
	if err := ipCmd("ip", "netns", "del", probe); err != nil && reason == "" { // deletes the veth pair with it
		reason = fmt.Sprintf("cannot delete the probe network namespace: %v", err)
	}
	return reason
}

// requireNetns skips t when the machine cannot run these tests.
func requireNetns(t *testing.T) {
	t.Helper()
	if r := skipReason(); r != "" {
		t.Skip(r)
	}
}

// sweepStale deletes the namespaces and bridges a crashed earlier run left:
// those named for a process that no longer exists. A live run's are kept.
func sweepStale() []error {
	var errs []error
	if ents, err := os.ReadDir(netnsDir); err == nil {
		for _, e := range ents {
			if m := staleNS.FindStringSubmatch(e.Name()); m != nil && !creatorAlive(m[1]) {
				if err := ipCmd("ip", "netns", "del", e.Name()); err != nil {
					errs = append(errs, err)
				}
			}
		}
	}
	ifs, err := net.Interfaces()
	if err != nil {
		return append(errs, err)
	}
	for _, i := range ifs {
		if m := staleLink.FindStringSubmatch(i.Name); m != nil && !creatorAlive(m[1]) {
			if err := ipCmd("ip", "link", "del", i.Name); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				errs = append(errs, err)
			}
		}
	}
	return errs
}

// creatorAlive reports whether the process whose base-36 pid is p is
// running: it exists and is not a zombie (a crashed test binary may not be
// reaped yet).
func creatorAlive(p string) bool {
	pid, err := strconv.ParseInt(p, 36, 64)
	if err != nil || pid <= 0 {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) state …; comm may hold spaces and parentheses.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] != 'Z' && s[i+2] != 'X'
}

// host is one role's namespace and its link to the bridge.
type host struct {
	name string // the daemon's name: coord, gpu, agent1, …
	ns   string // the namespace
	veth string // the veth end on the bridge, in the root namespace
	ip   string // its address in subnet
}

// addr is ip:port.
func (h *host) addr(port int) string { return net.JoinHostPort(h.ip, strconv.Itoa(port)) }

// topology is a bridge and one namespace per host, all removed in
// t.Cleanup whatever the test's outcome.
type topology struct {
	t      *testing.T
	bridge string
	hosts  map[string]*host
}

// hostSpec names a host, the short tag of its link (at most three
// characters) and the last octet of its address.
type hostSpec struct {
	name, tag string
	octet     int
}

// newTopology builds a bridge and one namespace per spec, each with a veth
// pair (eth0 inside, the other end on the bridge) and loopback up. tag (two
// lower-case letters) makes the names unique among the tests of one run.
func newTopology(t *testing.T, tag string, specs ...hostSpec) *topology {
	t.Helper()
	if !regexp.MustCompile(`^[a-z]{2}$`).MatchString(tag) {
		t.Fatalf("topology tag %q: want two lower-case letters", tag)
	}
	id := pid36(os.Getpid()) + tag
	tp := &topology{t: t, bridge: linkPrefix + id + "br", hosts: map[string]*host{}}
	must := func(name string, args ...string) {
		t.Helper()
		if err := ipCmd(name, args...); err != nil {
			t.Fatal(err)
		}
	}
	must("ip", "link", "add", tp.bridge, "type", "bridge")
	// Registered first, so it runs last: after every process is gone and
	// every namespace (and with it each veth pair) is deleted.
	t.Cleanup(func() {
		if err := ipCmd("ip", "link", "del", tp.bridge); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	must("ip", "link", "set", tp.bridge, "up")
	for _, s := range specs {
		h := &host{name: s.name, ns: nsPrefix + id[:5] + "-" + tag + "-" + s.name, veth: linkPrefix + id + s.tag, ip: fmt.Sprintf("%s.%d", subnet, s.octet)}
		must("ip", "netns", "add", h.ns)
		t.Cleanup(func() {
			if err := ipCmd("ip", "netns", "del", h.ns); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		})
		must("ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.ns)
		// Deleting one end deletes the pair at once; a namespace's own
		// teardown would leave the host end behind for a while.
		t.Cleanup(func() {
			if err := ipCmd("ip", "link", "del", h.veth); err != nil && !strings.Contains(err.Error(), "Cannot find device") {
				t.Errorf("cleanup: %v", err)
			}
		})
		must("ip", "link", "set", h.veth, "master", tp.bridge, "up")
		must("ip", "-n", h.ns, "addr", "add", h.ip+"/24", "dev", "eth0")
		must("ip", "-n", h.ns, "link", "set", "eth0", "up")
		must("ip", "-n", h.ns, "link", "set", "lo", "up")
		tp.hosts[s.name] = h
	}
	return tp
}

// host returns the named host.
func (tp *topology) host(name string) *host {
	tp.t.Helper()
	h, ok := tp.hosts[name]
	if !ok {
		tp.t.Fatalf("no host %q in the topology", name)
	}
	return h
}

// cut takes the host's link to the bridge down, as a pulled cable: the host
// keeps its address and routes and hears nothing (no RST, no unreachable).
func (tp *topology) cut(name string) {
	tp.t.Helper()
	if err := ipCmd("ip", "link", "set", tp.host(name).veth, "down"); err != nil {
		tp.t.Fatal(err)
	}
}

// restore brings the host's link back up.
func (tp *topology) restore(name string) {
	tp.t.Helper()
	if err := ipCmd("ip", "link", "set", tp.host(name).veth, "up"); err != nil {
		tp.t.Fatal(err)
	}
}

// netemReason says why `tc netem` cannot be used here, or "" when it can:
// it adds and removes a netem qdisc on the host's link.
func (tp *topology) netemReason(name string) string {
	if _, err := exec.LookPath("tc"); err != nil {
		return "`tc` (iproute2) is not in PATH: install iproute2"
	}
	v := tp.host(name).veth
	if err := ipCmd("tc", "qdisc", "add", "dev", v, "root", "netem", "delay", "0ms"); err != nil {
		return fmt.Sprintf("this kernel cannot add a netem qdisc (CONFIG_NET_SCH_NETEM / sch_netem): %v", err)
	}
	if err := ipCmd("tc", "qdisc", "del", "dev", v, "root"); err != nil {
		return fmt.Sprintf("cannot remove the probe netem qdisc: %v", err)
	}
	return ""
}

// delay adds d of netem delay to both directions of the host's link: on its
// bridge end (traffic to the host) and on its eth0 (traffic from it).
func (tp *topology) delay(name string, d time.Duration) {
	tp.t.Helper()
	h := tp.host(name)
	ms := fmt.Sprintf("%dms", d.Milliseconds())
	for _, args := range [][]string{
		{"qdisc", "add", "dev", h.veth, "root", "netem", "delay", ms},
		{"-n", h.ns, "qdisc", "add", "dev", "eth0", "root", "netem", "delay", ms},
	} {
		if err := ipCmd("tc", args...); err != nil {
			tp.t.Fatal(err)
		}
	}
}

// dialer returns a DialContext that opens its sockets inside the host's
// namespace, so that the test process (in the root namespace, with no
// address on the bridge) can reach the host's services as a peer would.
func (h *host) dialer() func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		type result struct {
			c   net.Conn
			err error
		}
		ch := make(chan result, 1)
		go func() {
			// The thread enters the namespace and comes back before it is
			// unlocked. Were it left to exit instead, any process it had
			// forked with Pdeathsig (every daemon here) would be killed with
			// it. A socket stays in the namespace it was made in.
			runtime.LockOSThread()
			self, err := os.Open("/proc/thread-self/ns/net")
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{err: err}
				return
			}
			defer self.Close()
			target, err := os.Open(netnsDir + "/" + h.ns)
			if err != nil {
				runtime.UnlockOSThread()
				ch <- result{err: err}
				return
			}
			defer target.Close()
			if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
				runtime.UnlockOSThread()
				ch <- result{err: fmt.Errorf("setns %s: %w", h.ns, err)}
				return
			}
			var d net.Dialer
			c, err := d.DialContext(ctx, network, addr)
			if rerr := unix.Setns(int(self.Fd()), unix.CLONE_NEWNET); rerr != nil {
				// Stuck in the foreign namespace: the thread must not
				// serve other goroutines, so it stays locked and exits.
				ch <- result{c, err}
				return
			}
			runtime.UnlockOSThread()
			ch <- result{c, err}
		}()
		r := <-ch
		return r.c, r.err
	}
}

// TestSweeperNames checks what the sweeper takes for a test's leftovers:
// only names made by newTopology, with the creator's pid recovered, and a
// creator counted as running only while it runs.
func TestSweeperNames(t *testing.T) {
	self := pid36(os.Getpid())
	for _, tc := range []struct {
		name, ns, link, pid string
	}{
		{name: "namespace", ns: nsPrefix + self + "-ag-agent2", pid: self},
		{name: "probe namespace", ns: nsPrefix + self + "-probe", pid: self},
		{name: "bridge", link: linkPrefix + self + "agbr", pid: self},
		{name: "veth", link: linkPrefix + self + "aga1", pid: self},
		{name: "largest pid", link: linkPrefix + pid36(4194304) + "dlc", pid: "2hwcg"},
		{name: "someone else's namespace", ns: "ttftlab-prod"},
		{name: "short pid", ns: nsPrefix + "1a-ag-coord"},
		{name: "host interface", link: "eth0"},
		{name: "other tfl link", link: "tfl0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			re, s := staleNS, tc.ns
			if tc.link != "" {
				re, s = staleLink, tc.link
			}
			m := re.FindStringSubmatch(s)
			switch {
			case tc.pid == "" && m != nil:
				t.Errorf("%q matched (pid %q): the sweeper would delete what no test made", s, m[1])
			case tc.pid != "" && (m == nil || m[1] != tc.pid):
				t.Errorf("%q: match %v, want pid %q", s, m, tc.pid)
			}
		})
	}
	if !creatorAlive(self) {
		t.Errorf("creatorAlive(%q) is false for this running test", self)
	}
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	if gone := pid36(cmd.Process.Pid); creatorAlive(gone) {
		t.Errorf("creatorAlive(%q) is true for a reaped process", gone)
	}
}
