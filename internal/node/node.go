// Package node owns how ttftlab's daemons and CLI talk gRPC: the server and
// dial options (mutual TLS from internal/labtls, the cluster's bearer token,
// keepalive on both ends, panic recovery), the flags that set them, and the
// gossip settings a daemon joins the cluster with. It is the one place,
// besides the server.go/grpc.go adapters and generated code, that imports
// google.golang.org/grpc (internal/deptest enforces it); cmd/ttftlab only
// wires flags to it.
package node

import (
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/internal/labtls"
	"github.com/ttftlab/ttftlab/internal/membership"
)

// KeepaliveTime is how long a client lets a connection sit idle before it
// pings the server. grpc-go raises any smaller client ping time to 10 s
// (with a warning), so 10 s is the honest figure; the servers' enforcement
// policy admits pings at half that, so a client that pings on time is never
// told it pings too often. Keepalive is not how a run notices a lost peer:
// agents send application heartbeats on the run stream every 500 ms and the
// coordinator marks an agent lost after 1.5 s of silence
// (coordinator/liveness.go).
const KeepaliveTime = 10 * time.Second

// LeaseProbe is how often a server pings an idle client, and how long
// either end waits for a ping's answer. Servers are not floored like
// clients, and a RunProbe stream carries nothing from the coordinator to
// the agent, so these pings are how an agent notices a coordinator that
// froze or sits behind a partition (no RST) and ends its load — the lease —
// within about 2 s.
const LeaseProbe = time.Second

// LeaseGrace is how long the coordinator's and the gpunode's servers wait
// for a ping's answer before dropping a client. Their clients (the CLI, the
// coordinator) hold runs, not leases on load: a slow answer from a busy
// host must not end them. A client that is really gone still ends its
// streams through TCP, or after this grace.
const LeaseGrace = 10 * time.Second

// Config is what a daemon (coordinator, agent, gpunode) serves and joins
// the cluster with. RegisterFlags binds it to a daemon's flags and Load
// reads the files they name.
type Config struct {
	// Name is the node's unique name in the cluster.
	Name string
	// GRPCAddr is the gRPC listen address; port 0 picks one.
	GRPCAddr string
	// GossipAddr is the memberlist bind address.
	GossipAddr string
	// Join lists gossip addresses of existing members, comma-separated.
	Join string
	// GossipKeyFile names the file of the base64 gossip key; Load sets
	// GossipKey from it.
	GossipKeyFile string
	GossipKey     []byte
	// Insecure allows plaintext gRPC on a non-loopback address.
	Insecure bool
	// Fast shortens gossip timers, for one-host clusters and tests.
	Fast bool
	// InProcess tells membership that every member lives in this process
	// (see membership.Config.InProcess).
	InProcess bool
	// TokenFile names the file of the cluster's bearer token; Load sets
	// Token from it. Every call to this node must carry Token, and every
	// call from it carries Token.
	TokenFile string
	Token     string
	// TLSDir is a directory made by `ttftlab certs`; Load sets ServerTLS
	// and ClientTLS from it (mutual TLS under the lab CA).
	TLSDir    string
	ServerTLS *tls.Config
	ClientTLS *tls.Config
	// Labels are announced in the node's gossip metadata, for selection
	// (membership.ValidateLabels checks them at Start).
	Labels map[string]string
}

// RegisterFlags binds c to the flags every daemon shares.
func (c *Config) RegisterFlags(fs *flag.FlagSet, role membership.Role) {
	host, _ := os.Hostname()
	fs.StringVar(&c.Name, "name", string(role)+"-"+host, "unique node name in the cluster")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", "127.0.0.1:0", "gRPC listen address (host:port; port 0 picks one)")
	fs.StringVar(&c.GossipAddr, "gossip-addr", "127.0.0.1:7946", "memberlist gossip address (host:port)")
	fs.StringVar(&c.Join, "join", "", "comma-separated gossip addresses of existing members; agents and gpunodes re-join them, and the coordinators seen since, whenever no coordinator is in view (restart a coordinator on its old --gossip-addr and it is found again)")
	fs.StringVar(&c.GossipKeyFile, "gossip-key-file", "", "`file` holding the base64 gossip key (16, 24 or 32 bytes); all members must share it")
	fs.BoolVar(&c.Insecure, "insecure", false, "allow plaintext gRPC on non-loopback addresses")
	fs.StringVar(&c.TLSDir, "tls-dir", "", "`directory` made by ttftlab certs: serve and dial gRPC with mutual TLS under its lab CA")
	fs.StringVar(&c.TokenFile, "token-file", "", "`file` holding the bearer token that every gRPC call to and from this node carries; all members share it (required on a non-loopback --grpc-addr)")
}

// Load reads the files the flags name: the TLS directory, the token and
// the gossip key. Its errors name the flag.
func (c *Config) Load() error {
	if c.TLSDir != "" {
		var err error
		if c.ServerTLS, err = labtls.ServerConfig(c.TLSDir); err != nil {
			return fmt.Errorf("--tls-dir: %w", err)
		}
		if c.ClientTLS, err = labtls.ClientConfig(c.TLSDir); err != nil {
			return fmt.Errorf("--tls-dir: %w", err)
		}
	}
	if c.TokenFile != "" {
		tok, err := readToken(c.TokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		c.Token = tok
	}
	if c.GossipKeyFile == "" {
		return nil
	}
	b, err := os.ReadFile(c.GossipKeyFile)
	if err != nil {
		return fmt.Errorf("--gossip-key-file: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("--gossip-key-file %s: not base64 (%v): write a key with `head -c 32 /dev/urandom | base64`", c.GossipKeyFile, err)
	}
	c.GossipKey = key
	return nil
}

// DialOptions are the options this daemon dials its peers with: its
// client TLS, token and --insecure.
func (c *Config) DialOptions() DialOptions {
	return DialOptions{Insecure: c.Insecure, Token: c.Token, TLS: c.ClientTLS}
}

// ClientFlags are the security flags of a command that dials a daemon
// (the CLI dialling the coordinator).
type ClientFlags struct {
	Insecure  bool
	TokenFile string
	TLSDir    string
}

// RegisterFlags binds f to --insecure, --token-file and --tls-dir; peer
// names what is dialled ("the coordinator").
func (f *ClientFlags) RegisterFlags(fs *flag.FlagSet, peer string) {
	fs.BoolVar(&f.Insecure, "insecure", false, "allow plaintext gRPC to a non-loopback "+strings.TrimPrefix(peer, "the "))
	fs.StringVar(&f.TokenFile, "token-file", "", "`file` holding the cluster's bearer token")
	fs.StringVar(&f.TLSDir, "tls-dir", "", "`directory` made by ttftlab certs: talk to "+peer+" over mutual TLS")
}

// DialOptions reads the files the flags name. Its errors name the flag.
func (f ClientFlags) DialOptions() (DialOptions, error) {
	o := DialOptions{Insecure: f.Insecure}
	if f.TLSDir != "" {
		cfg, err := labtls.ClientConfig(f.TLSDir)
		if err != nil {
			return o, fmt.Errorf("--tls-dir: %w", err)
		}
		o.TLS = cfg
	}
	if f.TokenFile != "" {
		tok, err := readToken(f.TokenFile)
		if err != nil {
			return o, fmt.Errorf("--token-file: %w", err)
		}
		o.Token = tok
	}
	return o, nil
}

// readToken reads a bearer token file.
func readToken(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < 16 {
		return "", fmt.Errorf("%s holds a token of %d characters: use at least 16, e.g. `head -c 32 /dev/urandom | base64 > %s`", path, len(tok), path)
	}
	return tok, nil
}

// NewToken returns a fresh random bearer token (for `ttftlab up`).
func NewToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return base64.RawURLEncoding.EncodeToString(b)
}

// NewGossipKey returns a fresh random 32-byte gossip key (for `ttftlab up`).
func NewGossipKey() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}
