package node

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/labtls"
	"github.com/ttftlab/ttftlab/internal/membership"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// loopback is a Config that serves on loopback with no secrets.
func loopback(name string) Config {
	return Config{Name: name, GRPCAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true}
}

func startCoordinator(t *testing.T, cfg Config, srv pb.CoordinatorServiceServer) *Server {
	t.Helper()
	s, err := Start(t.Context(), cfg, membership.RoleCoordinator, func(r Registrar) {
		pb.RegisterCoordinatorServiceServer(r, srv)
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// listMembers calls ListMembers over a connection made by Dial.
func listMembers(t *testing.T, addr string, o DialOptions) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	cc, err := Dial(ctx, addr, o)
	if err != nil {
		return err
	}
	defer cc.Close()
	_, err = pb.NewCoordinatorServiceClient(cc).ListMembers(ctx, &pb.ListMembersRequest{})
	return err
}

func TestServerRequiresTheBearerToken(t *testing.T) {
	const token = "0123456789abcdef-token"
	cfg := loopback("c")
	cfg.Token = token
	s := startCoordinator(t, cfg, pb.UnimplementedCoordinatorServiceServer{})
	tests := []struct {
		name  string
		token string
		want  codes.Code
	}{
		{"no token", "", codes.Unauthenticated},
		{"wrong token", "wrong-token-0000000", codes.Unauthenticated},
		// The right token passes authentication and reaches the
		// (unimplemented) service itself.
		{"right token", token, codes.Unimplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if code := status.Code(listMembers(t, s.Addr(), DialOptions{Token: tt.token})); code != tt.want {
				t.Errorf("code %v, want %v", code, tt.want)
			}
		})
	}
}

func TestStartRefusesUnsafeAddresses(t *testing.T) {
	tests := []struct {
		name    string
		cfg     func(*Config)
		wantErr string
	}{
		{"non-loopback gRPC without a token", func(c *Config) { c.GRPCAddr, c.Insecure = "0.0.0.0:0", true }, "--token-file"},
		{"non-loopback plaintext without --insecure", func(c *Config) { c.GRPCAddr, c.Token = "0.0.0.0:0", "0123456789abcdef" }, "--insecure"},
		{"non-loopback gossip without a key", func(c *Config) { c.GossipAddr = "0.0.0.0:0" }, "--gossip-key-file"},
		{"gossip address without a port", func(c *Config) { c.GossipAddr = "127.0.0.1" }, `--gossip-addr "127.0.0.1" is not host:port`},
		{"bad join", func(c *Config) { c.Join = "10.0.0.5" }, `--join "10.0.0.5"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := loopback("a")
			tt.cfg(&cfg)
			s, err := Start(t.Context(), cfg, membership.RoleAgent, func(Registrar) {}, nil)
			if err == nil {
				s.Close()
				t.Fatalf("Start succeeded, want an error naming %s", tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("err = %v, want it to name %s", err, tt.wantErr)
			}
		})
	}
}

func TestLoadNamesTheFlag(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "tok")
	os.WriteFile(short, []byte("abc\n"), 0o600)
	badKey := filepath.Join(dir, "key")
	os.WriteFile(badKey, []byte("not base64!\n"), 0o600)
	tests := []struct {
		name    string
		cfg     Config
		wantErr []string
	}{
		{"short token", Config{TokenFile: short}, []string{"--token-file", "at least 16"}},
		{"missing token file", Config{TokenFile: filepath.Join(dir, "none")}, []string{"--token-file", "no such file"}},
		{"gossip key not base64", Config{GossipKeyFile: badKey}, []string{"--gossip-key-file", "not base64"}},
		{"empty TLS directory", Config{TLSDir: dir}, []string{"--tls-dir"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.Load()
			for _, w := range tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), w) {
					t.Errorf("Load() = %v, want an error containing %q", err, w)
				}
			}
		})
	}
	t.Run("client short token", func(t *testing.T) {
		if _, err := (ClientFlags{TokenFile: short}).DialOptions(); err == nil || !strings.Contains(err.Error(), "--token-file") {
			t.Errorf("DialOptions() = %v, want an error naming --token-file", err)
		}
	})
}

func TestServerOverMutualTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	if err := labtls.Generate(dir, []string{"gpu-1.lab"}, time.Now()); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "other")
	if err := labtls.Generate(other, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	cfg := loopback("c")
	cfg.TLSDir = dir
	if err := cfg.Load(); err != nil {
		t.Fatal(err)
	}
	s := startCoordinator(t, cfg, pb.UnimplementedCoordinatorServiceServer{})
	tests := []struct {
		name  string
		flags ClientFlags
		want  codes.Code
	}{
		{"mutual TLS", ClientFlags{TLSDir: dir}, codes.Unimplemented},
		{"plaintext to a TLS server", ClientFlags{}, codes.Unavailable},
		{"a certificate from another CA", ClientFlags{TLSDir: other}, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := tt.flags.DialOptions()
			if err != nil {
				t.Fatal(err)
			}
			if code := status.Code(listMembers(t, s.Addr(), o)); code != tt.want {
				t.Errorf("code %v, want %v", code, tt.want)
			}
		})
	}
}

func TestDialRefusesPlaintextToNonLoopback(t *testing.T) {
	_, err := Dial(t.Context(), "10.0.0.1:7000", DialOptions{})
	if err == nil || !strings.Contains(err.Error(), "--insecure") || !strings.Contains(err.Error(), "--tls-dir") {
		t.Errorf("Dial = %v, want a refusal naming --insecure and --tls-dir", err)
	}
	cc, err := Dial(t.Context(), "10.0.0.1:7000", DialOptions{Insecure: true})
	if err != nil {
		t.Fatalf("Dial with Insecure: %v", err)
	}
	cc.Close()
}

func TestCheckPlaintext(t *testing.T) {
	tests := []struct {
		addr     string
		insecure bool
		ok       bool
	}{
		{"127.0.0.1:1", false, true},
		{"localhost:5", false, true},
		{"[::1]:5", false, true},
		{"10.0.0.1:5", false, false},
		{"nohost", false, false},
		{"10.0.0.1:5", true, true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/insecure=%v", tt.addr, tt.insecure), func(t *testing.T) {
			if err := CheckPlaintext(tt.addr, tt.insecure); (err == nil) != tt.ok {
				t.Errorf("CheckPlaintext(%s, %v) = %v, want ok=%v", tt.addr, tt.insecure, err, tt.ok)
			}
		})
	}
}

// TestKeepaliveEndsAgree checks that the servers admit the clients' pings:
// a server that saw pings more often than its MinTime would answer with
// GOAWAY "too_many_pings" and drop the connection.
func TestKeepaliveEndsAgree(t *testing.T) {
	client := clientKeepalive()
	params, policy := serverKeepalive(membership.RoleAgent)
	if client.Time < 10*time.Second {
		t.Errorf("client ping time %v is under grpc-go's 10 s floor: it would be raised silently", client.Time)
	}
	if policy.MinTime > client.Time {
		t.Errorf("server MinTime %v exceeds the client's ping time %v: clients would be dropped for pinging too often", policy.MinTime, client.Time)
	}
	if !policy.PermitWithoutStream || !client.PermitWithoutStream {
		t.Errorf("PermitWithoutStream: server %v, client %v; want both, or idle pings are refused", policy.PermitWithoutStream, client.PermitWithoutStream)
	}
	if params.Time+params.Timeout > 2*time.Second {
		t.Errorf("server pings every %v and waits %v: a frozen coordinator would hold an agent's load for over 2 s", params.Time, params.Timeout)
	}
	// The coordinator and the gpunode hold runs, not leases: a loaded
	// client that answers a ping late must not lose its run.
	for _, role := range []membership.Role{membership.RoleCoordinator, membership.RoleGPUNode} {
		if p, _ := serverKeepalive(role); p.Timeout < 5*time.Second {
			t.Errorf("%s server drops a client %v after an unanswered ping: a slow CLI or coordinator would lose its run", role, p.Timeout)
		}
	}
}

// panickingCoordinator panics in a unary and a streaming handler.
type panickingCoordinator struct {
	pb.UnimplementedCoordinatorServiceServer
}

func (panickingCoordinator) ListMembers(context.Context, *pb.ListMembersRequest) (*pb.ListMembersResponse, error) {
	var m map[string]int
	//lint:ignore SA5000 the panic is the point: a nil-map write, as a decoding bug would make
	m["boom"]++
	return nil, nil
}

func (panickingCoordinator) RunBaseline(*pb.RunBaselineRequest, grpc.ServerStreamingServer[pb.RunBaselineResponse]) error {
	panic("malformed histogram")
}

func TestServerTurnsHandlerPanicsIntoInternalErrors(t *testing.T) {
	s := startCoordinator(t, loopback("c"), panickingCoordinator{})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	cc, err := Dial(ctx, s.Addr(), DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := pb.NewCoordinatorServiceClient(cc)
	cases := []struct {
		name string
		call func() error
		want string
	}{
		{"unary", func() error { _, err := client.ListMembers(ctx, &pb.ListMembersRequest{}); return err }, "assignment to entry in nil map"},
		{"stream", func() error {
			st, err := client.RunBaseline(ctx, &pb.RunBaselineRequest{})
			if err != nil {
				return err
			}
			_, err = st.Recv()
			return err
		}, "malformed histogram"},
	}
	// Twice each: the daemon must still serve after a panic.
	for round := 1; round <= 2; round++ {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("%s/%d", tc.name, round), func(t *testing.T) {
				err := tc.call()
				if status.Code(err) != codes.Internal || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("err = %v, want codes.Internal carrying %q", err, tc.want)
				}
			})
		}
	}
}

func TestWaitEndsWithTheContextAndCloseTwice(t *testing.T) {
	s, err := Start(t.Context(), loopback("c"), membership.RoleCoordinator, func(Registrar) {}, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Wait(ctx) }()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Wait after cancel = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Wait did not return within 5 s of the context's end")
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v, want nil", err)
	}
}

func TestParseJoin(t *testing.T) {
	tests := []struct {
		name    string
		join    string
		want    []string
		wantErr string // a substring of the error; empty means none
	}{
		{name: "empty", join: ""},
		{name: "blank", join: "  "},
		{name: "one", join: "10.0.0.5:7946", want: []string{"10.0.0.5:7946"}},
		{name: "several with spaces", join: "10.0.0.5:7946, coord.lab:7946", want: []string{"10.0.0.5:7946", "coord.lab:7946"}},
		{name: "ipv6", join: "[::1]:7946", want: []string{"[::1]:7946"}},
		{name: "no port", join: "10.0.0.5", wantErr: `"10.0.0.5" is not a gossip address host:port`},
		{name: "empty entry", join: "10.0.0.5:7946,,", wantErr: `"" is not a gossip address`},
		{name: "no host", join: ":7946", wantErr: `":7946" is not a gossip address`},
		{name: "port zero", join: "10.0.0.5:0", wantErr: `has port "0": use 1..65535`},
		{name: "port not a number", join: "10.0.0.5:gossip", wantErr: `has port "gossip"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseJoin(tt.join)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ParseJoin(%q) = %v, %v; want an error containing %q", tt.join, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("ParseJoin(%q) = %v, %v; want %v", tt.join, got, err, tt.want)
			}
		})
	}
}

// TestAgentStartedBeforeItsCoordinatorJoinsLater: an agent whose --join
// does not answer yet starts anyway and joins the coordinator once it is
// up; a coordinator's own failed --join stays an error.
func TestAgentStartedBeforeItsCoordinatorJoinsLater(t *testing.T) {
	// A free gossip port: memberlist binds TCP and UDP on it.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()

	acfg := loopback("agent-early")
	acfg.Join = addr
	agent, err := Start(t.Context(), acfg, membership.RoleAgent, func(Registrar) {}, nil)
	if err != nil {
		t.Fatalf("agent with an unanswered --join: %v, want it to start and retry", err)
	}
	t.Cleanup(func() { agent.Close() })

	ccfg := loopback("coord-joins")
	ccfg.Join = addr
	if s, err := Start(t.Context(), ccfg, membership.RoleCoordinator, func(Registrar) {}, nil); err == nil {
		s.Close()
		t.Fatal("a coordinator with an unanswered --join started; want the --join error")
	} else if !strings.Contains(err.Error(), "--join") {
		t.Errorf("coordinator error %q does not name --join", err)
	}

	ccfg = loopback("coord")
	ccfg.GossipAddr = addr
	startCoordinator(t, ccfg, pb.UnimplementedCoordinatorServiceServer{})
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		for _, m := range agent.Members().Members() {
			if m.Role == membership.RoleCoordinator {
				return
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("the agent never joined the coordinator that came up at %s", addr)
}
