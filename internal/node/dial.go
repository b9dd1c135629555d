package node

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
)

// DialOptions say how to reach a ttftlab daemon.
type DialOptions struct {
	// Insecure allows plaintext to a non-loopback address.
	Insecure bool
	// Token, when set, is sent as "authorization: Bearer <token>" with
	// every call.
	Token string
	// TLS, when set, secures the connection (mutual TLS with a lab CA).
	TLS *tls.Config
}

// Dial returns a connection to the daemon at addr, the one dial path of
// ttftlab: the coordinator uses it for agents and gpunodes, the CLI for
// the coordinator. Plaintext is refused for a non-loopback addr unless
// o.Insecure is set. The connection starts connecting at once, not at the
// first call; Close it when done.
func Dial(ctx context.Context, addr string, o DialOptions) (*grpc.ClientConn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	creds := insecure.NewCredentials()
	if o.TLS != nil {
		creds = credentials.NewTLS(o.TLS)
	} else if err := CheckPlaintext(addr, o.Insecure); err != nil {
		return nil, fmt.Errorf("%w (or use --tls-dir)", err)
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		grpc.WithKeepaliveParams(clientKeepalive()),
	}
	if o.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(o.Token)))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	cc.Connect()
	return cc, nil
}

// clientKeepalive pings an idle connection every KeepaliveTime, streams
// or not.
func clientKeepalive() keepalive.ClientParameters {
	return keepalive.ClientParameters{Time: KeepaliveTime, Timeout: LeaseProbe, PermitWithoutStream: true}
}

// bearer sends the cluster's bearer token with every call.
type bearer string

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials. The
// token also travels in plaintext on loopback or with --insecure.
func (bearer) RequireTransportSecurity() bool { return false }

// CheckPlaintext refuses plaintext gRPC with a non-loopback address unless
// insecure is set.
func CheckPlaintext(addr string, insecure bool) error {
	if insecure {
		return nil
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("address %q is not host:port: %w", addr, err)
	}
	if isLoopback(host) {
		return nil
	}
	return fmt.Errorf("refusing plaintext gRPC to non-loopback address %s: pass --insecure to allow it on a trusted network", addr)
}

// isLoopback reports whether host is localhost or a loopback IP.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
