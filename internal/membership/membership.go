// Package membership wraps hashicorp/memberlist for ttftlab: every process
// joins one gossip cluster and announces its role and gRPC address in its
// node metadata. Histograms and results never travel over gossip.
//
// Only this package imports memberlist.
package membership

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"sort"
	"strconv"
	"sync"
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
}

func (m Meta) encode() ([]byte, error) {
	b, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode node metadata: %w", err)
	}
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("node metadata is %d bytes, over memberlist's limit of %d: shorten the gRPC address", len(b), memberlist.MetaMaxSize)
	}
	return b, nil
}

// Member is one node as this node currently sees it.
type Member struct {
	Name string
	Addr string // gossip address
	Meta
	// State is "alive", "suspect", "dead" or "left".
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
}

// DefaultConfig returns a configuration for a LAN cluster.
func DefaultConfig() Config {
	return Config{BindAddr: "0.0.0.0", BindPort: 7946}
}

// Node is this process's membership in the cluster. It is safe for
// concurrent use.
type Node struct {
	list    *memberlist.Memberlist
	logger  *slog.Logger
	changes chan struct{}

	mu     sync.Mutex
	closed bool
}

var _ memberlist.Delegate = (*delegate)(nil)
var _ memberlist.EventDelegate = (*events)(nil)

// delegate serves our metadata; we gossip nothing else.
type delegate struct{ meta []byte }

func (d *delegate) NodeMeta(limit int) []byte                  { return d.meta }
func (d *delegate) NotifyMsg([]byte)                           {}
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte { return nil }
func (d *delegate) LocalState(join bool) []byte                { return nil }
func (d *delegate) MergeRemoteState(buf []byte, join bool)     {}

// events turns memberlist callbacks into a coalesced change signal.
type events struct{ changes chan struct{} }

func (e *events) notify() {
	select {
	case e.changes <- struct{}{}:
	default: // a signal is already pending; watchers re-read Members.
	}
}
func (e *events) NotifyJoin(*memberlist.Node)   { e.notify() }
func (e *events) NotifyLeave(*memberlist.Node)  { e.notify() }
func (e *events) NotifyUpdate(*memberlist.Node) { e.notify() }

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
	cfg.Meta.Version = ProtocolVersion
	meta, err := cfg.Meta.encode()
	if err != nil {
		return nil, err
	}
	mc := memberlist.DefaultLANConfig()
	if cfg.Fast {
		mc = memberlist.DefaultLocalConfig()
		mc.GossipInterval = 20 * time.Millisecond
		mc.ProbeInterval = 200 * time.Millisecond
		mc.ProbeTimeout = 100 * time.Millisecond
		mc.SuspicionMult = 2
		mc.PushPullInterval = 2 * time.Second
	}
	mc.Name = cfg.Name
	mc.BindAddr = cfg.BindAddr
	mc.BindPort = cfg.BindPort
	mc.AdvertisePort = cfg.BindPort
	mc.SecretKey = cfg.SecretKey
	mc.Logger = log.New(&slogWriter{logger}, "", 0)
	changes := make(chan struct{}, 1) // size 1: a coalesced "something changed" signal.
	mc.Delegate = &delegate{meta: meta}
	mc.Events = &events{changes: changes}
	list, err := memberlist.Create(mc)
	if err != nil {
		return nil, fmt.Errorf("membership: start gossip on %s: %w", net.JoinHostPort(cfg.BindAddr, strconv.Itoa(cfg.BindPort)), err)
	}
	return &Node{list: list, logger: logger, changes: changes}, nil
}

// Addr returns this node's gossip address, for others to Join.
func (n *Node) Addr() string {
	ln := n.list.LocalNode()
	return net.JoinHostPort(ln.Addr.String(), strconv.Itoa(int(ln.Port)))
}

// Join contacts the given gossip addresses and returns how many answered.
func (n *Node) Join(addrs []string) (int, error) {
	if len(addrs) == 0 {
		return 0, nil
	}
	k, err := n.list.Join(addrs)
	if err != nil {
		return k, fmt.Errorf("membership: join %v: %w", addrs, err)
	}
	return k, nil
}

// Changes returns a channel that receives a value after the membership
// changes. Signals coalesce; re-read Members after each.
func (n *Node) Changes() <-chan struct{} { return n.changes }

// Members returns the nodes this node sees as alive, including itself,
// sorted by name. Nodes announcing another protocol version are skipped.
func (n *Node) Members() []Member {
	var out []Member
	for _, m := range n.list.Members() {
		var meta Meta
		if err := json.Unmarshal(m.Meta, &meta); err != nil {
			n.logger.Warn("ignoring node with unreadable metadata", "node", m.Name, "err", err)
			continue
		}
		if meta.Version != ProtocolVersion {
			n.logger.Warn("ignoring node with another protocol version", "node", m.Name, "version", meta.Version)
			continue
		}
		out = append(out, Member{Name: m.Name, Addr: m.Address(), Meta: meta, State: stateName(m.State)})
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

func stateName(s memberlist.NodeStateType) string {
	switch s {
	case memberlist.StateAlive:
		return "alive"
	case memberlist.StateSuspect:
		return "suspect"
	case memberlist.StateDead:
		return "dead"
	case memberlist.StateLeft:
		return "left"
	}
	return "unknown"
}

// Close leaves the cluster (so others see "left", not "dead") and stops
// gossiping. It is safe to call more than once.
func (n *Node) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
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
