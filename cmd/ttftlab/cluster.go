package main

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/coordinator"
	"github.com/ttftlab/ttftlab/internal/labtls"
	"github.com/ttftlab/ttftlab/internal/membership"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// service is one daemon's gRPC server plus its cluster membership.
type service struct {
	name string
	gs   *grpc.Server
	lis  net.Listener
	mem  *membership.Node
	done chan error
}

// serviceConfig holds the flags every daemon shares.
type serviceConfig struct {
	name     string
	grpcAddr string
	gossip   string
	join     string
	keyFile  string
	key      []byte
	insecure bool
	fast     bool
	// tokenFile holds the bearer token every gRPC call must carry.
	tokenFile string
	token     string
	// tlsDir holds the lab CA and this node's certificate (ttftlab certs).
	tlsDir    string
	serverTLS *tls.Config
	clientTLS *tls.Config
}

func (c *serviceConfig) register(fs *flag.FlagSet, role membership.Role) {
	host, _ := os.Hostname()
	fs.StringVar(&c.name, "name", string(role)+"-"+host, "unique node name in the cluster")
	fs.StringVar(&c.grpcAddr, "grpc-addr", "127.0.0.1:0", "gRPC listen address (host:port; port 0 picks one)")
	fs.StringVar(&c.gossip, "gossip-addr", "127.0.0.1:7946", "memberlist gossip address (host:port)")
	fs.StringVar(&c.join, "join", "", "comma-separated gossip addresses of existing members; agents and gpunodes re-join them, and the coordinators seen since, whenever no coordinator is in view (restart a coordinator on its old --gossip-addr and it is found again)")
	fs.StringVar(&c.keyFile, "gossip-key-file", "", "file holding the base64 gossip key (16, 24 or 32 bytes); all members must share it")
	fs.BoolVar(&c.insecure, "insecure", false, "allow plaintext gRPC on non-loopback addresses")
	fs.StringVar(&c.tlsDir, "tls-dir", "", "directory made by `ttftlab certs`: serve and dial gRPC with mutual TLS under its lab CA")
	fs.StringVar(&c.tokenFile, "token-file", "", "file holding the bearer token that every gRPC call to and from this node carries; all members share it (required on a non-loopback --grpc-addr)")
}

func (c *serviceConfig) load() error {
	if c.tlsDir != "" {
		var err error
		if c.serverTLS, err = labtls.ServerConfig(c.tlsDir); err != nil {
			return fmt.Errorf("--tls-dir: %w", err)
		}
		if c.clientTLS, err = labtls.ClientConfig(c.tlsDir); err != nil {
			return fmt.Errorf("--tls-dir: %w", err)
		}
	}
	if c.tokenFile != "" {
		tok, err := readToken(c.tokenFile)
		if err != nil {
			return fmt.Errorf("--token-file: %w", err)
		}
		c.token = tok
	}
	if c.keyFile == "" {
		return nil
	}
	b, err := os.ReadFile(c.keyFile)
	if err != nil {
		return fmt.Errorf("--gossip-key-file: %w", err)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(b)))
	if err != nil {
		return fmt.Errorf("--gossip-key-file %s: not base64 (%v): write a key with `head -c 32 /dev/urandom | base64`", c.keyFile, err)
	}
	c.key = key
	return nil
}

func newGossipKey() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}

// startService listens, registers the gRPC services, serves, and joins the
// cluster announcing the real gRPC address.
func startService(cfg serviceConfig, role membership.Role, registerFn func(*grpc.Server), logger *slog.Logger) (*service, error) {
	if cfg.serverTLS == nil {
		if err := coordinator.CheckPlaintext(cfg.grpcAddr, cfg.insecure); err != nil {
			return nil, fmt.Errorf("--grpc-addr: %w (or serve TLS with --tls-dir)", err)
		}
	}
	if cfg.token == "" && cfg.serverTLS == nil && coordinator.CheckPlaintext(cfg.grpcAddr, false) != nil {
		return nil, fmt.Errorf("--grpc-addr %s is not loopback: give every member the same --token-file, or mutual TLS with --tls-dir, so that only they can call this node", cfg.grpcAddr)
	}
	lis, err := net.Listen("tcp", cfg.grpcAddr)
	if err != nil {
		return nil, fmt.Errorf("--grpc-addr %s: %w", cfg.grpcAddr, err)
	}
	var serverOpts []grpc.ServerOption
	if cfg.serverTLS != nil {
		serverOpts = append(serverOpts, grpc.Creds(credentials.NewTLS(cfg.serverTLS)))
	}
	gs := grpc.NewServer(append(serverOpts,
		// A run is a lease tied to its stream: ping an idle peer every second
		// and drop it after one more, so an agent whose coordinator vanished
		// (even behind a partition, with no RST) stops its load within ~2 s.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Second, Timeout: time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 500 * time.Millisecond, PermitWithoutStream: true}),
		// Recovery comes first, so a panic anywhere below, the token check
		// included, becomes an Internal error for that one call.
		grpc.ChainUnaryInterceptor(recoverUnary(logger), func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := checkToken(ctx, cfg.token); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(recoverStream(logger), func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := checkToken(ss.Context(), cfg.token); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)...)
	registerFn(gs)
	s := &service{name: cfg.name, gs: gs, lis: lis, done: make(chan error, 1)}
	go func() { s.done <- gs.Serve(lis) }()

	host, portStr, err := net.SplitHostPort(cfg.gossip)
	if err != nil {
		s.Close()
		return nil, fmt.Errorf("--gossip-addr %q is not host:port: %w", cfg.gossip, err)
	}
	if len(cfg.key) == 0 {
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			s.Close()
			return nil, fmt.Errorf("--gossip-addr %s is not loopback: give every member the same --gossip-key-file, or anyone who reaches it could join as a gpunode or agent", cfg.gossip)
		}
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		s.Close()
		return nil, fmt.Errorf("--gossip-addr %q: port must be 0..65535", cfg.gossip)
	}
	seeds, err := parseJoin(cfg.join)
	if err != nil {
		s.Close()
		return nil, err
	}
	mem, err := membership.New(membership.Config{
		Name: cfg.name, BindAddr: host, BindPort: port, SecretKey: cfg.key, Fast: cfg.fast,
		Meta: membership.Meta{Role: role, GRPCAddr: lis.Addr().String()},
		// Agents and gpunodes find a restarted coordinator again on their
		// own: it comes back knowing nobody, at its old gossip address.
		KeepJoined: role != membership.RoleCoordinator,
	}, logger)
	if err != nil {
		s.Close()
		return nil, err
	}
	s.mem = mem
	if len(seeds) > 0 {
		if _, err := mem.Join(seeds); err != nil {
			s.Close()
			return nil, fmt.Errorf("--join %s: %w", cfg.join, err)
		}
	}
	return s, nil
}

// parseJoin splits --join into gossip addresses, each host:port.
func parseJoin(join string) ([]string, error) {
	if strings.TrimSpace(join) == "" {
		return nil, nil
	}
	var out []string
	for _, a := range strings.Split(join, ",") {
		a = strings.TrimSpace(a)
		host, portStr, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			return nil, fmt.Errorf("--join %q: %q is not a gossip address host:port: give the coordinator's --gossip-addr, e.g. --join 10.0.0.5:7946", join, a)
		}
		if p, err := strconv.Atoi(portStr); err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("--join %q: %q has port %q: use 1..65535", join, a, portStr)
		}
		out = append(out, a)
	}
	return out, nil
}

// Close leaves the cluster, then stops the gRPC server.
func (s *service) Close() error {
	var errs []error
	if s.mem != nil {
		errs = append(errs, s.mem.Close())
	}
	s.gs.Stop()
	if err := <-s.done; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// recoverUnary turns a panic in a unary handler into codes.Internal carrying
// the panic value, and logs the stack, so that no single request can stop
// the daemon.
func recoverUnary(logger *slog.Logger) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
		defer func() {
			if p := recover(); p != nil {
				err = panicError(logger, info.FullMethod, p)
			}
		}()
		return h(ctx, req)
	}
}

// recoverStream is recoverUnary for streaming handlers. A panic in a
// goroutine the handler started is not on this stack and is not caught.
func recoverStream(logger *slog.Logger) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) (err error) {
		defer func() {
			if p := recover(); p != nil {
				err = panicError(logger, info.FullMethod, p)
			}
		}()
		return h(srv, ss)
	}
}

func panicError(logger *slog.Logger, method string, p any) error {
	if logger == nil {
		logger = slog.Default()
	}
	logger.Error("gRPC handler panicked; the call fails, the daemon keeps serving", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "%s: internal error: %v (the daemon logged the stack; please report it)", method, p)
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

// checkToken admits a call that carries "authorization: Bearer <token>";
// with no token configured every call is admitted (loopback only).
func checkToken(ctx context.Context, token string) error {
	if token == "" {
		return nil
	}
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if subtle.ConstantTimeCompare([]byte(v), []byte("Bearer "+token)) == 1 {
			return nil
		}
	}
	return status.Error(codes.Unauthenticated, "missing or wrong bearer token: pass the cluster's --token-file")
}

func newToken() string {
	b := make([]byte, 24)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// runCerts makes a lab CA and a node certificate for mutual TLS.
func runCerts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("certs", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "directory to write ca.pem, ca-key.pem, node.pem and node-key.pem into")
	hosts := fs.String("hosts", "", "comma-separated host names and IP addresses the nodes are reached at (localhost and 127.0.0.1 are always included)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required: name the directory for the lab CA and node certificate, e.g. --dir /etc/ttftlab/tls")
	}
	var hs []string
	for _, h := range strings.Split(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hs = append(hs, h)
		}
	}
	if err := labtls.Generate(*dir, hs, time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote a lab CA and a node certificate to %s; copy ca.pem, node.pem and node-key.pem (not ca-key.pem) to every node and start each with --tls-dir DIR\n", *dir)
	return nil
}
