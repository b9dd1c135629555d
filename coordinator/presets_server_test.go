package coordinator

import (
	"context"
	"net"
	"strings"
	"testing"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// TestRemotePresetsNamesTheBadField checks that a remote RunPresets whose
// request breaks a spec rule gets InvalidArgument naming the request field,
// with no run started.
func TestRemotePresetsNamesTheBadField(t *testing.T) {
	srv := grpc.NewServer()
	pb.RegisterCoordinatorServiceServer(srv, NewServer(sweepCoordinator(t, map[string]Agent{"a": &sweepAgent{}})))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := pb.NewCoordinatorServiceClient(conn)
	tests := []struct {
		name string
		req  *pb.RunPresetsRequest
		want string
	}{
		{"SLO above the max", &pb.RunPresetsRequest{SloTtftMs: 900, MaxTtftMs: 300}, "slo_ttft_ms 900 is above max_ttft_ms 300"},
		{"prompts longer than max_model_len", &pb.RunPresetsRequest{MaxModelLen: 1024, InputLen: 1024}, "max_model_len 1024 is out of range"},
		{"negative warm-up", &pb.RunPresetsRequest{WarmupMs: -1}, "warmup_ms -1"},
		{"zero budget", &pb.RunPresetsRequest{MaxNumBatchedTokens: []int32{0}}, "max_num_batched_tokens 0 is out of range"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := client.RunPresets(context.Background(), tt.req)
			if err == nil {
				_, err = st.Recv()
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("RunPresets = %v, want InvalidArgument containing %q", err, tt.want)
			}
		})
	}
}
