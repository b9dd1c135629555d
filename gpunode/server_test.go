package gpunode

import (
	"context"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"

	ttftlabv1 "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/vllmlog"
)

// newTestClient serves n over an in-memory connection.
func newTestClient(t *testing.T, n *Node) ttftlabv1.GPUNodeServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	srv := grpc.NewServer()
	ttftlabv1.RegisterGPUNodeServiceServer(srv, NewServer(n))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(lis)
	}()
	conn, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() {
		conn.Close()
		srv.Stop()
		<-done
	})
	return ttftlabv1.NewGPUNodeServiceClient(conn)
}

func TestServerStartStop(t *testing.T) {
	n := newTestNode(t, nil, "ready")
	c := newTestClient(t, n)
	ctx := t.Context()

	resp, err := c.StartEngine(ctx, &ttftlabv1.StartEngineRequest{
		Profile: "ready",
		Knobs: &ttftlabv1.EngineKnobs{
			ServedModelName:     "alias",
			MaxNumSeqs:          32,
			EnablePrefixCaching: ttftlabv1.OptionalBool_OPTIONAL_BOOL_FALSE,
		},
		ReadyTimeoutMs: 20_000,
	})
	if err != nil {
		t.Fatalf("StartEngine: %v", err)
	}
	e := resp.GetEngine()
	if e.GetServedModelName() != "alias" || e.GetModel() != "test/model" || e.GetKind() != KindVLLM || e.GetSimulated() {
		t.Errorf("engine = %v", e)
	}
	if e.GetPid() <= 0 || e.GetReadyS() <= 0 || e.GetReadyUnixNano() <= e.GetSpawnUnixNano() {
		t.Errorf("pid %d ready_s %v spawn %d ready %d", e.GetPid(), e.GetReadyS(), e.GetSpawnUnixNano(), e.GetReadyUnixNano())
	}
	argv := strings.Join(e.GetArgv(), " ")
	if !strings.Contains(argv, "--max-num-seqs 32") || !strings.Contains(argv, "--no-enable-prefix-caching") {
		t.Errorf("argv %q lacks the knobs", argv)
	}
	sources := map[string]string{}
	for _, p := range e.GetPhases() {
		sources[p.GetName()] = p.GetSource()
	}
	if sources[vllmlog.PhaseReady] != vllmlog.SourceSupervisor || sources[vllmlog.PhaseLoadModel] != vllmlog.SourceLog {
		t.Errorf("phase sources = %v", sources)
	}
	if len(e.GetLogTail()) == 0 {
		t.Errorf("no log tail")
	}

	stop, err := c.StopEngine(ctx, &ttftlabv1.StopEngineRequest{GraceMs: 2000})
	if err != nil {
		t.Fatalf("StopEngine: %v", err)
	}
	if !stop.GetWasRunning() || stop.GetExitStatus() != "exit status 0" {
		t.Errorf("StopEngine = %v", stop)
	}
	if err := syscall.Kill(-int(e.GetPid()), 0); err != syscall.ESRCH {
		t.Errorf("kill(-pgid, 0) = %v, want ESRCH", err)
	}
}

func TestServerErrors(t *testing.T) {
	n := newTestNode(t, nil, "ready", "oom")
	c := newTestClient(t, n)
	tests := []struct {
		name string
		req  *ttftlabv1.StartEngineRequest
		code codes.Code
		want []string
	}{
		{"no profile", &ttftlabv1.StartEngineRequest{}, codes.InvalidArgument, []string{"profile is empty"}},
		{"unknown profile", &ttftlabv1.StartEngineRequest{Profile: "x"}, codes.InvalidArgument, []string{`unknown profile "x"`, "oom, ready"}},
		{"bad utilization", &ttftlabv1.StartEngineRequest{Profile: "ready", Knobs: &ttftlabv1.EngineKnobs{GpuMemoryUtilization: 1.5}}, codes.InvalidArgument, []string{"gpu_memory_utilization 1.5 is invalid"}},
		{"negative max_model_len", &ttftlabv1.StartEngineRequest{Profile: "ready", Knobs: &ttftlabv1.EngineKnobs{MaxModelLen: -4}}, codes.InvalidArgument, []string{"max_model_len -4 is invalid"}},
		{"flag as model", &ttftlabv1.StartEngineRequest{Profile: "ready", Knobs: &ttftlabv1.EngineKnobs{Model: "--help"}}, codes.InvalidArgument, []string{"model", "must not start with '-'"}},
		{"bad optional bool", &ttftlabv1.StartEngineRequest{Profile: "ready", Knobs: &ttftlabv1.EngineKnobs{EnforceEager: 7}}, codes.InvalidArgument, []string{"enforce_eager"}},
		{"bad timeout", &ttftlabv1.StartEngineRequest{Profile: "ready", ReadyTimeoutMs: -1}, codes.InvalidArgument, []string{"ready_timeout_ms -1"}},
		{"drop caches without cold disk", &ttftlabv1.StartEngineRequest{Profile: "ready", ColdMode: ColdCompile, DropCaches: true}, codes.InvalidArgument, []string{`drop_caches is for cold_mode "cold-disk" only`}},
		{"cold disk with no weights", &ttftlabv1.StartEngineRequest{Profile: "ready", ColdMode: ColdDisk}, codes.FailedPrecondition, []string{"no weight files", "HF_HOME"}},
		{"engine exits", &ttftlabv1.StartEngineRequest{Profile: "oom"}, codes.Aborted, []string{"exit status 1", "cuda_oom", "CUDA out of memory", "last "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.StartEngine(t.Context(), tt.req)
			st := status.Convert(err)
			if st.Code() != tt.code {
				t.Fatalf("code = %v (%v), want %v", st.Code(), st.Message(), tt.code)
			}
			for _, w := range tt.want {
				if !strings.Contains(st.Message(), w) {
					t.Errorf("message %q lacks %q", st.Message(), w)
				}
			}
		})
	}
	if _, err := c.StopEngine(t.Context(), &ttftlabv1.StopEngineRequest{GraceMs: -5}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("StopEngine(grace -5) = %v, want InvalidArgument", err)
	}
	stop, err := c.StopEngine(t.Context(), &ttftlabv1.StopEngineRequest{})
	if err != nil || stop.GetWasRunning() {
		t.Errorf("StopEngine with nothing running = %v, %v", stop, err)
	}
}

func TestServerInfoAndSamples(t *testing.T) {
	n := newTestNode(t, nil, "ready")
	c := newTestClient(t, n)
	info, err := c.Info(t.Context(), &ttftlabv1.InfoRequest{})
	if err != nil {
		t.Fatalf("Info: %v", err)
	}
	if info.GetNvmlAvailable() || info.GetNvmlError() == "" || info.GetHostname() == "" || info.GetCpuCount() < 1 || info.GetProfiles()[0] != "ready" {
		t.Errorf("Info = %v", info)
	}

	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	// The node samples every 20 ms; ask for 60 ms.
	stream, err := c.StreamSamples(ctx, &ttftlabv1.StreamSamplesRequest{IntervalMs: 60})
	if err != nil {
		t.Fatalf("StreamSamples: %v", err)
	}
	var prev *ttftlabv1.HostSample
	for range 4 {
		r, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		s := r.GetSample()
		if s.GetEngineCpuPercent() != -1 || s.GetNvmlError() == "" || s.GetMemAvailableBytes() == 0 {
			t.Errorf("sample = %v", s)
		}
		if prev != nil {
			if s.GetSeq() <= prev.GetSeq() {
				t.Errorf("seq %d after %d", s.GetSeq(), prev.GetSeq())
			}
			if gap := time.Duration(s.GetMonoNs() - prev.GetMonoNs()); gap < 45*time.Millisecond {
				t.Errorf("samples %v apart, want about 60 ms", gap)
			}
		}
		prev = s
	}
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Canceled {
		t.Errorf("Recv after cancel = %v, want Canceled", err)
	}

	bad, err := c.StreamSamples(t.Context(), &ttftlabv1.StreamSamplesRequest{IntervalMs: -1})
	if err == nil {
		_, err = bad.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("StreamSamples(-1) = %v, want InvalidArgument", err)
	}
}
