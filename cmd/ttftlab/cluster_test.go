package main

import (
	"context"
	"flag"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/membership"
	"github.com/ttftlab/ttftlab/internal/node"
	"google.golang.org/grpc/codes"
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

func TestCertsThenDialTheCoordinatorOverMutualTLS(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	var out strings.Builder
	if err := runCerts(t.Context(), []string{"--dir", dir, "--hosts", "gpu-1.lab"}, &out, &out); err != nil {
		t.Fatal(err)
	}
	sc := node.Config{Name: "c", GRPCAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true, TLSDir: dir}
	if err := sc.Load(); err != nil {
		t.Fatal(err)
	}
	s, err := node.Start(t.Context(), sc, membership.RoleCoordinator, func(r node.Registrar) {
		pb.RegisterCoordinatorServiceServer(r, pb.UnimplementedCoordinatorServiceServer{})
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	tests := []struct {
		name string
		args []string
		want codes.Code
	}{
		{"mutual TLS", []string{"--tls-dir", dir}, codes.Unimplemented},
		{"plaintext to a TLS server", nil, codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("members", flag.ContinueOnError)
			var cf coordinatorFlags
			cf.register(fs)
			if err := fs.Parse(append([]string{"--coordinator", s.Addr()}, tt.args...)); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
			defer cancel()
			client, closer, err := cf.dial(ctx)
			if err != nil {
				t.Fatal(err)
			}
			defer closer.Close()
			if _, err := client.ListMembers(ctx, &pb.ListMembersRequest{}); status.Code(err) != tt.want {
				t.Errorf("ListMembers = %v, want %v", err, tt.want)
			}
		})
	}
	if err := runCerts(t.Context(), nil, &out, &out); err == nil || !strings.Contains(err.Error(), "--dir is required") {
		t.Errorf("certs without --dir: %v", err)
	}
}

func TestCoordinatorFlagsNameTheFlag(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{"no address", nil, "--coordinator is required"},
		{"plaintext to a remote coordinator", []string{"--coordinator", "10.0.0.1:7000"}, "--coordinator 10.0.0.1:7000: refusing plaintext"},
		{"missing token file", []string{"--coordinator", "127.0.0.1:7000", "--token-file", "/nonexistent/tok"}, "--token-file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("members", flag.ContinueOnError)
			var cf coordinatorFlags
			cf.register(fs)
			if err := fs.Parse(tt.args); err != nil {
				t.Fatal(err)
			}
			_, closer, err := cf.dial(t.Context())
			if err == nil {
				closer.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("dial = %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}
