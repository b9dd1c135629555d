package node

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sync"

	"github.com/ttftlab/ttftlab/internal/membership"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// Registrar is what a daemon registers its gRPC services on, so that the
// callers of Start need not import gRPC themselves.
type Registrar = grpc.ServiceRegistrar

// Server is one daemon's gRPC server plus its cluster membership. Its
// serving goroutine is joined by Close.
type Server struct {
	name string
	gs   *grpc.Server
	lis  net.Listener
	mem  *membership.Node

	serveErr  chan error // the serving goroutine's result, sent once
	closeOnce sync.Once
	closeErr  error
}

// Start listens on cfg.GRPCAddr, registers the services with register,
// serves, and joins the cluster as role announcing the real gRPC address.
// Its errors name the flag at fault.
func Start(ctx context.Context, cfg Config, role membership.Role, register func(Registrar), logger *slog.Logger) (*Server, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if cfg.ServerTLS == nil {
		if err := CheckPlaintext(cfg.GRPCAddr, cfg.Insecure); err != nil {
			return nil, fmt.Errorf("--grpc-addr: %w (or serve TLS with --tls-dir)", err)
		}
	}
	if cfg.Token == "" && cfg.ServerTLS == nil && CheckPlaintext(cfg.GRPCAddr, false) != nil {
		return nil, fmt.Errorf("--grpc-addr %s is not loopback: give every member the same --token-file, or mutual TLS with --tls-dir, so that only they can call this node", cfg.GRPCAddr)
	}
	gossipHost, gossipPort, err := parseGossipAddr(cfg.GossipAddr, len(cfg.GossipKey) > 0)
	if err != nil {
		return nil, err
	}
	seeds, err := ParseJoin(cfg.Join)
	if err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("--grpc-addr %s: %w", cfg.GRPCAddr, err)
	}
	gs := grpc.NewServer(serverOptions(cfg, role, logger)...)
	register(gs)
	s := &Server{name: cfg.Name, gs: gs, lis: lis, serveErr: make(chan error, 1)}
	go func() { s.serveErr <- gs.Serve(lis) }()

	mem, err := membership.New(membership.Config{
		Name: cfg.Name, BindAddr: gossipHost, BindPort: gossipPort, SecretKey: cfg.GossipKey, Fast: cfg.Fast, InProcess: cfg.InProcess,
		Meta: membership.Meta{Role: role, GRPCAddr: lis.Addr().String(), Labels: cfg.Labels},
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
			if role == membership.RoleCoordinator {
				s.Close()
				return nil, fmt.Errorf("--join %s: %w", cfg.Join, err)
			}
			// An agent or gpunode started before its coordinator (a pod
			// scheduled first, a Slurm step started early) keeps the seeds
			// and its rejoin loop retries them with backoff.
			logger.Warn("the coordinator does not answer at --join yet; retrying in the background", "join", cfg.Join, "err", err)
		}
	}
	return s, nil
}

// serverOptions are the options of every daemon's gRPC server: TLS,
// keepalive, and the recovery and token interceptors.
func serverOptions(cfg Config, role membership.Role, logger *slog.Logger) []grpc.ServerOption {
	var opts []grpc.ServerOption
	if cfg.ServerTLS != nil {
		opts = append(opts, grpc.Creds(credentials.NewTLS(cfg.ServerTLS)))
	}
	params, policy := serverKeepalive(role)
	return append(opts,
		grpc.KeepaliveParams(params),
		grpc.KeepaliveEnforcementPolicy(policy),
		// Recovery comes first, so a panic anywhere below, the token check
		// included, becomes an Internal error for that one call.
		grpc.ChainUnaryInterceptor(recoverUnary(logger), tokenUnary(cfg.Token)),
		grpc.ChainStreamInterceptor(recoverStream(logger), tokenStream(cfg.Token)),
	)
}

// serverKeepalive pings an idle client every LeaseProbe and admits client
// pings every KeepaliveTime/2 or slower, streams or not. An agent drops a
// client after LeaseProbe more without an answer: its RunProbe stream is a
// lease, and a coordinator that froze must not keep load running. The
// coordinator and the gpunode wait LeaseGrace instead: dropping a CLI's
// stream aborts its run, and dropping the coordinator's sample stream
// fails it, so a client slowed down by a loaded host must not cost a run.
func serverKeepalive(role membership.Role) (keepalive.ServerParameters, keepalive.EnforcementPolicy) {
	timeout := LeaseGrace
	if role == membership.RoleAgent {
		timeout = LeaseProbe
	}
	return keepalive.ServerParameters{Time: LeaseProbe, Timeout: timeout},
		keepalive.EnforcementPolicy{MinTime: KeepaliveTime / 2, PermitWithoutStream: true}
}

// Name is the node's name in the cluster.
func (s *Server) Name() string { return s.name }

// Addr is the gRPC address the server listens on.
func (s *Server) Addr() string { return s.lis.Addr().String() }

// Members is the server's cluster membership.
func (s *Server) Members() *membership.Node { return s.mem }

// Wait blocks until ctx is done, then closes the server, or until the
// server fails, which it returns.
func (s *Server) Wait(ctx context.Context) error {
	select {
	case <-ctx.Done():
		return s.Close()
	case err := <-s.serveErr:
		s.serveErr <- err // for Close
		s.Close()
		return fmt.Errorf("gRPC server stopped: %w", err)
	}
}

// Close leaves the cluster, then stops the gRPC server and waits for its
// serving goroutine. It may be called more than once.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.mem != nil {
			errs = append(errs, s.mem.Close())
		}
		s.gs.Stop()
		if err := <-s.serveErr; err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			errs = append(errs, err)
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// tokenUnary and tokenStream admit only calls that carry the token.
func tokenUnary(token string) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if err := checkToken(ctx, token); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
}

func tokenStream(token string) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if err := checkToken(ss.Context(), token); err != nil {
			return err
		}
		return h(srv, ss)
	}
}

// checkToken admits a call that carries "authorization: Bearer <token>",
// compared in constant time; with no token configured every call is
// admitted (loopback only, which Start enforces).
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
	logger.Error("gRPC handler panicked; the call fails, the daemon keeps serving", "method", method, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
	return status.Errorf(codes.Internal, "%s: internal error: %v (the daemon logged the stack; please report it)", method, p)
}
