// Package membership wraps hashicorp/memberlist for ttftlab: every process
// joins one gossip cluster and announces its role and gRPC address in its
// node metadata. Histograms and results never travel over gossip.
//
// Only this package imports memberlist.
package membership

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"slices"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
)

// ProtocolVersion is announced by every node; nodes with another version are
// ignored by the coordinator. It covers the gRPC contract and the shared
// histogram configuration.
const ProtocolVersion = 1

// Role is what a node does in the cluster.
type Role string

// The roles.
const (
	RoleCoordinator Role = "coordinator"
	RoleAgent       Role = "agent"
	RoleGPUNode     Role = "gpunode"
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool {
	return r == RoleCoordinator || r == RoleAgent || r == RoleGPUNode
}

// Meta is a node's announced metadata. Encoded, it must fit in
// memberlist.MetaMaxSize (512 bytes).
type Meta struct {
	Role     Role   `json:"r"`
	GRPCAddr string `json:"a"`
	Version  uint32 `json:"v"`
	// Capacity is a role-specific hint: concurrent streams for an agent,
	// GPUs for a gpunode.
	Capacity int `json:"c,omitempty"`
	// Boot identifies one run of the process: New sets it to fresh random
	// hex, and every ack the node sends carries it, so that a peer can tell
	// a restarted node from the one it knew under the same name and address.
	Boot string `json:"b,omitempty"`
	// Labels describe the node, for selection: a gpunode's GPU model,
	// count, memory and driver, its host, and the operator's --label
	// flags. Received over gossip they are validated (ValidateLabels).
	Labels map[string]string `json:"l,omitempty"`
}

// bootLen is the length of a Boot identifier: 8 random bytes in hex.
const bootLen = 16

func newBoot() (string, error) {
	b := make([]byte, bootLen/2)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("membership: make a boot identifier: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// decodeMeta decodes a peer's metadata, which arrives over gossip and is
// untrusted: it must be a JSON object within memberlist's size limit.
func decodeMeta(b []byte) (Meta, error) {
	var m Meta
	if len(b) > memberlist.MetaMaxSize {
		return m, fmt.Errorf("metadata is %d bytes, over the limit of %d", len(b), memberlist.MetaMaxSize)
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("metadata is not JSON: %w", err)
	}
	if err := ValidateLabels(m.Labels); err != nil {
		return m, fmt.Errorf("metadata labels: %w", err)
	}
	return m, nil
}

// parseBoot returns the boot identifier an ack payload carries, or false
// when the payload is not one (a peer of an older version sends none).
func parseBoot(payload []byte) (string, bool) {
	if len(payload) != bootLen {
		return "", false
	}
	for _, c := range payload {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return "", false
		}
	}
	return string(payload), true
}

func (m Meta) encode() ([]byte, error) {
	if err := ValidateLabels(m.Labels); err != nil {
		return nil, fmt.Errorf("node metadata: %w", err)
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode node metadata: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		if len(m.Labels) > 0 {
			// Name the longest label: it is the one to shorten or drop.
			longest := ""
			for k, v := range m.Labels {
				if l := k + "=" + v; len(l) > len(longest) || len(l) == len(longest) && l < longest {
					longest = l
				}
			}
			return nil, fmt.Errorf("node metadata is %d bytes, over memberlist's limit of %d: its %d labels take %d bytes; shorten or drop some, the longest is %q",
				len(b), memberlist.MetaMaxSize, len(m.Labels), len(FormatLabels(m.Labels)), longest)
		}
		return nil, fmt.Errorf("node metadata is %d bytes, over memberlist's limit of %d: shorten the gRPC address", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// Member is one node as this node currently sees it.
type Member struct {
	Name string
	Addr string // gossip address
	Meta
	// State is "alive": Members lists the nodes in view, which are those
	// not declared dead and not left. (memberlist reports no suspicion to
	// its callbacks, so a suspect node stays listed until declared dead.)
	State string
}

// Config configures a node.
type Config struct {
	// Name must be unique in the cluster.
	Name string
	// BindAddr and BindPort are the gossip address; port 0 picks a free one.
	BindAddr string
	BindPort int
	Meta     Meta
	// SecretKey, when set, encrypts gossip (16, 24 or 32 bytes, AES). Nodes
	// without the key cannot join.
	SecretKey []byte
	// Fast shortens gossip and probe timers, for one-host clusters and tests.
	Fast bool
	// InProcess marks a cluster whose members all live in this process
	// (ttftlab up and the in-process experiments). A member of it cannot
	// fail on its own, so the failure detector can only be wrong: on a
	// starved host, Fast's 100 ms probe timeout declared a healthy gpunode
	// dead mid-run. It keeps Fast's quick push and pull but probes with a
	// 1 s timeout and a long suspicion, gossips every 100 ms and gives a
	// TCP exchange 10 s (200 such nodes on 2 cores starved and timed out
	// with Fast's 20 ms and 1 s).
	InProcess bool
	// KeepJoined starts a background loop that, while no alive coordinator
	// other than this node is in view, re-joins the remembered seeds: every
	// address given to Join plus the gossip addresses of the coordinators
	// seen in the cluster. It also re-joins a coordinator that answers a
	// probe with another boot identifier than the one gossip announced,
	// which is a coordinator restarted at the same address before anyone
	// noticed it was gone, and joins any coordinator in view that this node
	// has not exchanged state with (in a push and pull) under its current
	// boot identifier, which is a restarted coordinator whose alive message
	// reached this node by gossip while it still knows nobody. Agents and
	// gpunodes set it; coordinators do not.
	KeepJoined bool
	// RejoinInterval is how often the loop checks for a coordinator and
	// the first delay between failed re-joins (default 1 s).
	RejoinInterval time.Duration
	// RejoinMaxBackoff caps the delay between failed re-joins, which
	// doubles after each failure (default 4 s).
	RejoinMaxBackoff time.Duration
	// RejoinLogEvery is the least time between two warnings that re-joins
	// keep failing (default 30 s), so a long outage does not flood the log.
	RejoinLogEvery time.Duration

	// pushPullInterval, when set, overrides memberlist's full state sync
	// interval, for tests that must not be rescued by a periodic sync.
	pushPullInterval time.Duration
	// noCatchUp turns off the catch-up exchanges after a join, for the
	// same tests; catchUpFirst, when set, replaces their first pause.
	noCatchUp    bool
	catchUpFirst time.Duration
}

// The rejoin loop's defaults.
const (
	defaultRejoinInterval   = time.Second
	defaultRejoinMaxBackoff = 4 * time.Second
	defaultRejoinLogEvery   = 30 * time.Second
	// maxLearnedSeeds bounds the coordinator addresses remembered from
	// gossip, on top of the addresses given to Join.
	maxLearnedSeeds = 16
)

// DefaultConfig returns a configuration for a LAN cluster.
func DefaultConfig() Config {
	return Config{BindAddr: "0.0.0.0", BindPort: 7946}
}

// Node is this process's membership in the cluster. It is safe for
// concurrent use.
type Node struct {
	list    *memberlist.Memberlist
	view    *events
	logger  *slog.Logger
	changes chan struct{}
	name    string
	boot    string
	cfg     Config // rejoin timers, defaults filled in

	// stop ends the rejoin loop; loopDone is closed when it has returned.
	// loopDone is nil when the node does not keep itself joined.
	stop     chan struct{}
	loopDone chan struct{}
	// wake nudges the rejoin loop (coalesced, size 1).
	wake chan struct{}

	seedMu sync.Mutex
	// given are the addresses passed to Join, in order; learned are the
	// gossip addresses of coordinators seen since, oldest first.
	given, learned []string
	// restarted holds the gossip addresses of coordinators that answered a
	// probe with an unexpected boot identifier, until the loop re-joins them.
	restarted []string
	// joinAttempts counts the loop's re-join attempts (each a Join of one
	// or more seeds), for tests.
	joinAttempts int
	// unsyncedNoted is the last set of unsynced coordinators the loop
	// logged at info level, so a flapping one is not logged every second.
	unsyncedNoted string

	// ex records the coordinators this node exchanged state with.
	ex *exchanges
	// dlg is memberlist's delegate, which counts the exchanges.
	dlg *delegate

	// catchUps counts the catch-up goroutines Join started; Close waits
	// for them. catchingUp is true while one runs. catchMu guards closing
	// stop against starting one.
	catchUps   sync.WaitGroup
	catchingUp atomic.Bool
	catchMu    sync.Mutex

	mu     sync.Mutex
	closed bool
}

var _ memberlist.Delegate = (*delegate)(nil)
var _ memberlist.EventDelegate = (*events)(nil)

// delegate serves our metadata, and in every push and pull (a join or the
// periodic full sync) sends this node's hello and records the coordinator
// hellos it receives; we gossip nothing else.
type delegate struct {
	meta  []byte
	hello []byte
	ex    *exchanges
	// exchanged counts the pushes and pulls this node took part in, for
	// tests.
	exchanged atomic.Int64
}

func (d *delegate) NodeMeta(limit int) []byte                  { return d.meta }
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return d.hello }

// MergeRemoteState receives the peer's hello at the end of a push and pull,
// after memberlist has merged the peer's member list.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	d.exchanged.Add(1)
	h, err := decodeHello(buf)
	if err != nil || h.Role != RoleCoordinator {
		return // an older peer sends none; a malformed one proves nothing.
	}
	d.ex.record(h.Name, h.Boot)
}

// pings puts this node's boot identifier in every ack it sends and checks
// the one each probed coordinator sends back.
type pings struct {
	payload []byte
	node    *Node // set right after the memberlist is created
	ready   chan struct{}
}

var _ memberlist.PingDelegate = (*pings)(nil)

func (p *pings) AckPayload() []byte { return p.payload }

func (p *pings) NotifyPingComplete(other *memberlist.Node, _ time.Duration, payload []byte) {
	select {
	case <-p.ready:
	default:
		return // a probe answered before New returned: nothing to compare yet.
	}
	boot, ok := parseBoot(payload)
	if !ok {
		return
	}
	meta, err := decodeMeta(other.Meta)
	if err != nil || meta.Role != RoleCoordinator || meta.Boot == "" || meta.Boot == boot {
		return
	}
	p.node.noteRestarted(other.Address())
}

// events keeps this node's own copy of the member list and turns memberlist
// callbacks into a coalesced change signal. memberlist.Members returns
// pointers into state its goroutines keep writing; the callbacks run under
// memberlist's lock, so copying there is the race-free way to read it.
type events struct {
	changes chan struct{}

	mu    sync.Mutex
	nodes map[string]memberlist.Node // by name; alive or suspect
}

func (e *events) notify() {
	select {
	case e.changes <- struct{}{}:
	default: // a signal is already pending; watchers re-read Members.
	}
}

func (e *events) put(n *memberlist.Node) {
	c := *n
	c.Addr = slices.Clone(n.Addr)
	c.Meta = slices.Clone(n.Meta)
	e.mu.Lock()
	e.nodes[c.Name] = c
	e.mu.Unlock()
	e.notify()
}

func (e *events) NotifyJoin(n *memberlist.Node)   { e.put(n) }
func (e *events) NotifyUpdate(n *memberlist.Node) { e.put(n) }
func (e *events) NotifyLeave(n *memberlist.Node) {
	e.mu.Lock()
	delete(e.nodes, n.Name)
	e.mu.Unlock()
	e.notify()
}

// snapshot returns copies of the nodes in view.
func (e *events) snapshot() []memberlist.Node {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]memberlist.Node, 0, len(e.nodes))
	for _, n := range e.nodes {
		out = append(out, n)
	}
	return out
}

// New creates a node and starts gossiping. It does not join anyone; call Join.
func New(cfg Config, logger *slog.Logger) (*Node, error) {
	if cfg.Name == "" {
		return nil, errors.New("membership: empty node name: give each node a unique --name")
	}
	if !cfg.Meta.Role.Valid() {
		return nil, fmt.Errorf("membership: role %q is not one of coordinator, agent, gpunode", cfg.Meta.Role)
	}
	if n := len(cfg.SecretKey); n != 0 && n != 16 && n != 24 && n != 32 {
		return nil, fmt.Errorf("membership: gossip key is %d bytes; it must be 16, 24 or 32 bytes", n)
	}
	if logger == nil {
		logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if cfg.RejoinInterval < 0 || cfg.RejoinMaxBackoff < 0 || cfg.RejoinLogEvery < 0 {
		return nil, fmt.Errorf("membership: negative rejoin timer (interval %s, max backoff %s, log every %s): use 0 for the defaults or a positive duration",
			cfg.RejoinInterval, cfg.RejoinMaxBackoff, cfg.RejoinLogEvery)
	}
	if cfg.RejoinInterval == 0 {
		cfg.RejoinInterval = defaultRejoinInterval
	}
	if cfg.RejoinMaxBackoff == 0 {
		cfg.RejoinMaxBackoff = defaultRejoinMaxBackoff
	}
	if cfg.RejoinMaxBackoff < cfg.RejoinInterval {
		cfg.RejoinMaxBackoff = cfg.RejoinInterval
	}
	if cfg.RejoinLogEvery == 0 {
		cfg.RejoinLogEvery = defaultRejoinLogEvery
	}
	cfg.Meta.Version = ProtocolVersion
	boot, err := newBoot()
	if err != nil {
		return nil, err
	}
	cfg.Meta.Boot = boot
	meta, err := cfg.Meta.encode()
	if err != nil {
		return nil, err
	}
	mc := memberlistConfig(cfg)
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertisePort = cfg.BindPort
	mc.SecretKey = cfg.SecretKey
	mc.Logger = log.New(&slogWriter{logger}, "", 0)
	changes := make(chan struct{}, 1) // size 1: a coalesced "something changed" signal.
	hello, err := hello{Name: cfg.Name, Role: cfg.Meta.Role, Boot: boot}.encode()
	if err != nil {
		return nil, err
	}
	ex := &exchanges{boots: map[string]string{}}
	dlg := &delegate{meta: meta, hello: hello, ex: ex}
	mc.Delegate = dlg
	ev := &events{changes: changes, nodes: map[string]memberlist.Node{}}
	mc.Events = ev
	pd := &pings{payload: []byte(boot), ready: make(chan struct{})}
	mc.Ping = pd
	list, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("membership: start gossip on %s: %w", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	n := &Node{list: list, view: ev, logger: logger, changes: changes, name: cfg.Name, boot: boot, cfg: cfg,
		stop: make(chan struct{}), wake: make(chan struct{}, 1), ex: ex, dlg: dlg}
	pd.node = n
	close(pd.ready)
	if cfg.KeepJoined {
		n.loopDone = make(chan struct{})
		go n.keepJoined()
	}
	return n, nil
}

// Addr returns this node's gossip address, for others to Join.
func (n *Node) Addr() string {
	ln := n.list.LocalNode()
	return net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
}

// Join contacts the given gossip addresses and returns how many answered.
// A node that keeps itself joined remembers them as seeds, even when none
// answered.
func (n *Node) Join(addrs []string) (int, error) {
	if len(addrs) == 0 {
		return 0, nil
	}
	n.seedMu.Lock()
	for _, a := range addrs {
		if !contains(n.given, a) {
			n.given = append(n.given, a)
		}
	}
	n.seedMu.Unlock()
	k, err := n.list.Join(addrs)
	if err != nil {
		return k, fmt.Errorf("membership: join %v: %w", addrs, err)
	}
	n.startCatchUp(addrs)
	return k, nil
}

// Catch-up exchanges after a join. A join is one push and pull with each
// seed, which hands the joiner the members the seed knew at that moment. In
// a cluster that starts at once (a lab's daemons, 200 agents) the early
// joiners learn of the later ones only by gossip, which at 200 nodes carries
// 200 alive messages through 1,400-byte packets, and by the periodic full
// sync, which memberlist stretches with the cluster's size (5 s × 4 at 200
// nodes). The seeds, though, hear from every joiner directly. So after a
// successful join the node exchanges state with one of its seeds again
// catchUpRounds times, catchUpFirst after the join and then at doubling
// pauses (1, 2 and 4 s: about 1, 3 and 7 s after it), each ±50 % jittered
// so that 200 joiners do not come back in lockstep. A node that joined
// alone costs three small exchanges.
const (
	catchUpFirst  = time.Second
	catchUpRounds = 3
)

// startCatchUp starts the catch-up exchanges with seeds unless some are
// already under way or the node is closed (or a test turned them off).
func (n *Node) startCatchUp(seeds []string) {
	if n.cfg.noCatchUp {
		return
	}
	// Not n.mu: the rejoin loop calls this, and Close holds n.mu while it
	// waits for the loop. catchMu orders the Add before Close's Wait.
	n.catchMu.Lock()
	defer n.catchMu.Unlock()
	select {
	case <-n.stop:
		return
	default:
	}
	if !n.catchingUp.CompareAndSwap(false, true) {
		return
	}
	n.catchUps.Add(1)
	seeds = slices.Clone(seeds)
	go func() {
		defer n.catchUps.Done()
		defer n.catchingUp.Store(false) // not n.mu: Close holds it while it waits
		n.catchUp(seeds)
	}()
}

// catchUp runs the catch-up exchanges, each with the next seed (from a
// random one on), until done or the node closes.
func (n *Node) catchUp(seeds []string) {
	next := mrand.IntN(len(seeds))
	pause := catchUpFirst
	if n.cfg.catchUpFirst > 0 {
		pause = n.cfg.catchUpFirst
	}
	for range catchUpRounds {
		t := time.NewTimer(pause + time.Duration((mrand.Float64()-0.5)*float64(pause)))
		select {
		case <-n.stop:
			t.Stop()
			return
		case <-t.C:
		}
		// A seed that does not answer is tried again next round; the
		// periodic sync and the rejoin loop cover the rest.
		if _, err := n.list.Join([]string{seeds[next]}); err != nil {
			n.logger.Debug("catch-up exchange after join failed", "seed", seeds[next], "err", err)
		}
		next = (next + 1) % len(seeds)
		pause *= 2
	}
}

// Changes returns a channel that receives a value after the membership
// changes. Signals coalesce; re-read Members after each.
func (n *Node) Changes() <-chan struct{} { return n.changes }

// Members returns the nodes this node sees as alive, including itself,
// sorted by name. Nodes announcing another protocol version are skipped.
func (n *Node) Members() []Member { return n.members(true) }

// members is Members; with warn false it skips unusable nodes silently (the
// rejoin loop reads the view every second and must not repeat warnings).
func (n *Node) members(warn bool) []Member {
	var out []Member
	for _, m := range n.view.snapshot() {
		meta, err := decodeMeta(m.Meta)
		if err != nil {
			if warn {
				n.logger.Warn("ignoring node with unreadable metadata", "node", m.Name, "err", err)
			}
			continue
		}
		if meta.Version != ProtocolVersion {
			if warn {
				n.logger.Warn("ignoring node with another protocol version", "node", m.Name, "version", meta.Version)
			}
			continue
		}
		// memberlist reports no suspicion through its callbacks: a node in
		// view is alive until it is declared dead or leaves.
		out = append(out, Member{Name: m.Name, Addr: m.Address(), Meta: meta, State: "alive"})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// ByRole returns the alive members with the given role.
func ByRole(ms []Member, r Role) []Member {
	var out []Member
	for _, m := range ms {
		if m.Role == r && m.State == "alive" {
			out = append(out, m)
		}
	}
	return out
}

// Close stops the rejoin loop and waits for it (an attempt in progress
// finishes first: at most memberlist's TCP timeout, 10 s, for a seed that
// drops packets), leaves the cluster (so others see "left", not "dead") and
// stops gossiping. It is safe to call more than once.
func (n *Node) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	n.catchMu.Lock()
	close(n.stop)
	n.catchMu.Unlock()
	if n.loopDone != nil {
		<-n.loopDone
	}
	n.catchUps.Wait()
	leaveErr := n.list.Leave(time.Second)
	if err := n.list.Shutdown(); err != nil {
		return fmt.Errorf("membership: shutdown: %w", err)
	}
	if leaveErr != nil {
		return fmt.Errorf("membership: leave: %w", leaveErr)
	}
	return nil
}

// slogWriter forwards memberlist's log lines to slog at debug level.
type slogWriter struct{ l *slog.Logger }

func (w *slogWriter) Write(p []byte) (int, error) {
	w.l.Debug("memberlist", "line", string(trimNL(p)))
	return len(p), nil
}

func trimNL(p []byte) []byte {
	for len(p) > 0 && (p[len(p)-1] == '\n' || p[len(p)-1] == '\r') {
		p = p[:len(p)-1]
	}
	return p
}

// memberlistConfig returns memberlist's configuration for cfg: the LAN
// defaults, or shorter timers for Fast and InProcess clusters.
func memberlistConfig(cfg Config) *memberlist.Config {
	mc := memberlist.DefaultLANConfig()
	// A node cut off for less than the suspicion timeout keeps its peers
	// "suspect" and learns that it was declared dead only at its next full
	// state exchange; at memberlist's 30 s that made a restored agent wait
	// up to 45 s to rejoin (e2e/netns). Lab clusters are small, and
	// memberlist stretches the interval itself above 32 nodes.
	mc.PushPullInterval = 5 * time.Second
	if cfg.Fast {
		mc = memberlist.DefaultLocalConfig()
		mc.GossipInterval = 20 * time.Millisecond
		mc.ProbeInterval = 200 * time.Millisecond
		mc.ProbeTimeout = 100 * time.Millisecond
		mc.SuspicionMult = 2
		mc.PushPullInterval = 2 * time.Second
	}
	if cfg.InProcess {
		mc.ProbeInterval = time.Second
		mc.ProbeTimeout = time.Second
		mc.SuspicionMult = 8
		// A join or push and pull that times out on a starved host only
		// delays convergence: take LAN's 10 s, not Local's 1 s, which
		// failed 10 of 199 first joins at 200 nodes on 2 cores. And gossip
		// every 100 ms (memberlist's Local default), not Fast's 20 ms: every
		// node re-gossips each member it learns, so 200 nodes joining at
		// once sent 200 × 200 alive messages at 50 rounds a second, which
		// starved the host they all share; joins and the catch-up exchanges
		// carry the state anyway.
		mc.TCPTimeout = 10 * time.Second
		mc.GossipInterval = 100 * time.Millisecond
	}
	// A node restarted under its old name at another address (say, a new
	// port) takes the name over as soon as the old one is declared dead,
	// instead of being refused as a conflict until the dead entry is reaped
	// (30 s). memberlist's 0 means never, so the smallest useful value.
	mc.DeadNodeReclaimTime = time.Millisecond
	if cfg.pushPullInterval > 0 {
		mc.PushPullInterval = cfg.pushPullInterval
	}
	return mc
}
