package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/membership"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

type fakeMembers []membership.Member

func (f fakeMembers) Members() []membership.Member { return f }

func TestTargetPolicy(t *testing.T) {
	members := fakeMembers{{Name: "g", Meta: membership.Meta{Role: membership.RoleGPUNode, GRPCAddr: "10.0.0.7:9000"}, State: "alive"}}
	check := targetPolicy(members, []string{"vllm.lab"})
	for url, ok := range map[string]bool{
		"http://127.0.0.1:8000":    true,
		"http://localhost:8000/v1": true,
		"http://[::1]:8000":        true,
		"http://10.0.0.7:8000":     true, // a gpunode's host
		"http://VLLM.lab:8000":     true, // --allow-target, any case
		"http://10.0.0.8:8000":     false,
		"https://api.example.com":  false,
		"not a url":                false,
	} {
		err := check(url)
		if (err == nil) != ok {
			t.Errorf("check(%q) = %v, want allowed=%v", url, err, ok)
		}
		if err != nil && strings.Contains(url, "10.0.0.8") && !strings.Contains(err.Error(), "--allow-target 10.0.0.8") {
			t.Errorf("error %q does not name the fix", err)
		}
	}
}

func TestServicesRequireTheBearerToken(t *testing.T) {
	const token = "0123456789abcdef-token"
	s, err := startService(serviceConfig{name: "c", grpcAddr: "127.0.0.1:0", gossip: "127.0.0.1:0", fast: true, token: token},
		membership.RoleCoordinator, func(gs *grpc.Server) {
			pb.RegisterCoordinatorServiceServer(gs, pb.UnimplementedCoordinatorServiceServer{})
		}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	call := func(opts ...grpc.DialOption) error {
		cc, err := grpc.NewClient(s.lis.Addr().String(), append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
		if err != nil {
			t.Fatal(err)
		}
		defer cc.Close()
		_, err = pb.NewCoordinatorServiceClient(cc).ListMembers(context.Background(), &pb.ListMembersRequest{})
		return err
	}
	if code := status.Code(call()); code != codes.Unauthenticated {
		t.Errorf("no token: %v, want Unauthenticated", code)
	}
	if code := status.Code(call(grpc.WithPerRPCCredentials(bearerCreds("wrong-token-0000000")))); code != codes.Unauthenticated {
		t.Errorf("wrong token: %v, want Unauthenticated", code)
	}
	// The right token passes authentication and reaches the (unimplemented) service.
	if code := status.Code(call(grpc.WithPerRPCCredentials(bearerCreds(token)))); code != codes.Unimplemented {
		t.Errorf("right token: %v, want Unimplemented from the service itself", code)
	}
}

func TestNonLoopbackNeedsAToken(t *testing.T) {
	_, err := startService(serviceConfig{name: "c", grpcAddr: "0.0.0.0:0", gossip: "127.0.0.1:0", insecure: true}, membership.RoleAgent, func(*grpc.Server) {}, nil)
	if err == nil || !strings.Contains(err.Error(), "--token-file") {
		t.Errorf("err = %v, want a demand for --token-file", err)
	}
	short := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(short, []byte("abc\n"), 0o600)
	if _, err := readToken(short); err == nil || !strings.Contains(err.Error(), "at least 16") {
		t.Errorf("short token accepted: %v", err)
	}
}

func TestServicesOverMutualTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	var out strings.Builder
	if err := runCerts(context.Background(), []string{"--dir", dir, "--hosts", "gpu-1.lab"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	sc := serviceConfig{name: "c", grpcAddr: "127.0.0.1:0", gossip: "127.0.0.1:0", fast: true, tlsDir: dir}
	if err := sc.load(); err != nil {
		t.Fatal(err)
	}
	s, err := startService(sc, membership.RoleCoordinator, func(gs *grpc.Server) {
		pb.RegisterCoordinatorServiceServer(gs, pb.UnimplementedCoordinatorServiceServer{})
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	call := func(cf coordinatorFlags) error {
		cf.addr = s.lis.Addr().String()
		client, closer, err := cf.dial()
		if err != nil {
			return err
		}
		defer closer.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		_, err = client.ListMembers(ctx, &pb.ListMembersRequest{})
		return err
	}
	if code := status.Code(call(coordinatorFlags{tlsDir: dir})); code != codes.Unimplemented {
		t.Errorf("mutual TLS: %v, want Unimplemented from the service itself", code)
	}
	if err := call(coordinatorFlags{}); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext to a TLS server: %v, want Unavailable", err)
	}
	other := filepath.Join(t.TempDir(), "other")
	if err := runCerts(context.Background(), []string{"--dir", other}, &out, &out); err != nil {
		t.Fatal(err)
	}
	if err := call(coordinatorFlags{tlsDir: other}); status.Code(err) != codes.Unavailable {
		t.Errorf("a certificate from another CA: %v, want Unavailable", err)
	}
	if err := runCerts(context.Background(), nil, &out, &out); err == nil || !strings.Contains(err.Error(), "--dir is required") {
		t.Errorf("certs without --dir: %v", err)
	}
}

func TestNonLoopbackGossipNeedsAKey(t *testing.T) {
	_, err := startService(serviceConfig{name: "a", grpcAddr: "127.0.0.1:0", gossip: "0.0.0.0:0"}, membership.RoleAgent, func(*grpc.Server) {}, nil)
	if err == nil || !strings.Contains(err.Error(), "--gossip-key-file") {
		t.Errorf("err = %v, want a demand for --gossip-key-file", err)
	}
}

// panickingCoordinator panics in a unary and a streaming handler.
type panickingCoordinator struct {
	pb.UnimplementedCoordinatorServiceServer
}

func (panickingCoordinator) ListMembers(context.Context, *pb.ListMembersRequest) (*pb.ListMembersResponse, error) {
	var m map[string]int
	m["boom"]++ // a nil-map write, as a decoding bug would
	return nil, nil
}

func (panickingCoordinator) RunBaseline(*pb.RunBaselineRequest, grpc.ServerStreamingServer[pb.RunBaselineResponse]) error {
	panic("malformed histogram")
}

func TestServicesTurnHandlerPanicsIntoInternalErrors(t *testing.T) {
	s, err := startService(serviceConfig{name: "c", grpcAddr: "127.0.0.1:0", gossip: "127.0.0.1:0", fast: true},
		membership.RoleCoordinator, func(gs *grpc.Server) {
			pb.RegisterCoordinatorServiceServer(gs, panickingCoordinator{})
		}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cc, err := grpc.NewClient(s.lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	client := pb.NewCoordinatorServiceClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
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
