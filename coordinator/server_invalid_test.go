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

// TestRemoteRunsNameTheBadField checks that a remote client whose request
// breaks a spec rule gets InvalidArgument naming the request field, with no
// run started.
func TestRemoteRunsNameTheBadField(t *testing.T) {
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
	lm := func(kind string, conc float64) *pb.RunSweepRequest {
		return &pb.RunSweepRequest{Levels: []float64{conc}, Load: &pb.LoadModel{Kind: kind, DurationMs: 1000}}
	}
	sweeps := []struct {
		name string
		req  *pb.RunSweepRequest
		want string
	}{
		{"concurrency over the cap", lm("closed", 200_000), "levels 200000 is over the concurrency limit of 100000"},
		{"gamma without shape", lm("gamma", 5), "load.burstiness 0 is invalid for gamma arrivals"},
		{"error rate above 1", &pb.RunSweepRequest{Levels: []float64{1}, Load: &pb.LoadModel{Kind: "closed", DurationMs: 1000, MaxErrorRate: 3}}, "load.max_error_rate 3 is invalid"},
		{"all gpunodes in a sweep", &pb.RunSweepRequest{Levels: []float64{1}, Load: &pb.LoadModel{Kind: "closed", DurationMs: 1000}, Selection: &pb.Selection{AllGpunodes: true}},
			"selection.all_gpunodes is not supported by this experiment"},
		{"hostile selector label", &pb.RunSweepRequest{Levels: []float64{1}, Load: &pb.LoadModel{Kind: "closed", DurationMs: 1000}, Selection: &pb.Selection{Selector: map[string]string{"gpu": "h200\n; rm"}}},
			`selection.selector "gpu=h200\n; rm" is not a valid selector`},
	}
	for _, tt := range sweeps {
		t.Run(tt.name, func(t *testing.T) {
			st, err := client.RunSweep(context.Background(), tt.req)
			if err == nil {
				_, err = st.Recv()
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("RunSweep = %v, want InvalidArgument containing %q", err, tt.want)
			}
		})
	}
	kvscales := []struct {
		name string
		req  *pb.RunKVScaleRequest
		want string
	}{
		{"negative level duration", &pb.RunKVScaleRequest{MaxModelLens: []int32{2048}, GpuMemoryUtilizations: []float64{0.9}, LevelDurationMs: -1},
			"level_duration_ms -1ms is negative"},
		{"negative warm-up", &pb.RunKVScaleRequest{MaxModelLens: []int32{2048}, GpuMemoryUtilizations: []float64{0.9}, WarmupMs: -5},
			"warmup_ms -5ms is negative"},
		{"utilization above 1", &pb.RunKVScaleRequest{MaxModelLens: []int32{2048}, GpuMemoryUtilizations: []float64{1.5}},
			"gpu_memory_utilizations 1.5 is out of range"},
	}
	for _, tt := range kvscales {
		t.Run(tt.name, func(t *testing.T) {
			st, err := client.RunKVScale(context.Background(), tt.req)
			if err == nil {
				_, err = st.Recv()
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("RunKVScale = %v, want InvalidArgument containing %q", err, tt.want)
			}
		})
	}
	for _, tt := range []struct {
		name string
		req  *pb.RunPrefixRequest
		want string
	}{
		{"prefix negative level duration", &pb.RunPrefixRequest{PrefixLens: []int32{0, 256}, LevelDurationMs: -2000}, "level_duration_ms -2s is negative"},
		{"prefix warm-up over an hour", &pb.RunPrefixRequest{PrefixLens: []int32{0, 256}, WarmupMs: 7_200_000}, "warmup_ms 2h0m0s is out of range"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			st, err := client.RunPrefix(context.Background(), tt.req)
			if err == nil {
				_, err = st.Recv()
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("RunPrefix = %v, want InvalidArgument containing %q", err, tt.want)
			}
		})
	}
	t.Run("baseline warm runs", func(t *testing.T) {
		st, err := client.RunBaseline(context.Background(), &pb.RunBaselineRequest{WarmRuns: -1})
		if err == nil {
			_, err = st.Recv()
		}
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "warm_runs -1 is out of range") {
			t.Errorf("RunBaseline = %v, want InvalidArgument naming warm_runs", err)
		}
	})
}
