package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/testing/protocmp"

	ttftlabv1 "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// startAgentServer serves an Agent over bufconn and returns a client.
func startAgentServer(t *testing.T, a *Agent) ttftlabv1.AgentServiceClient {
	t.Helper()
	lis := bufconn.Listen(1 << 20)
	gs := grpc.NewServer()
	ttftlabv1.RegisterAgentServiceServer(gs, NewServer(a))
	go func() { _ = gs.Serve(lis) }()
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient("passthrough:///bufnet",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return lis.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return ttftlabv1.NewAgentServiceClient(cc)
}

func protoRequest(base string) *ttftlabv1.RunProbeRequest {
	return &ttftlabv1.RunProbeRequest{
		RunId:       "run1",
		AgentId:     "agent1",
		Target:      &ttftlabv1.Target{BaseUrl: base, Model: "m", Api: "chat"},
		Workload:    &ttftlabv1.Workload{Prompt: "hi", MaxTokens: 8},
		Concurrency: 1,
		Requests:    3,
		Labels:      []string{"cold_1", "warm_1", "warm_2"},
		IntervalMs:  20,
	}
}

func TestServerStreamsReports(t *testing.T) {
	f := newFakeServer(t, streamTokens(3, 5*time.Millisecond))
	client := startAgentServer(t, New(DefaultConfig(), nil))
	stream, err := client.RunProbe(context.Background(), protoRequest(f.URL))
	if err != nil {
		t.Fatal(err)
	}
	var reps []*ttftlabv1.IntervalReport
	for {
		resp, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		reps = append(reps, resp.GetReport())
	}
	if len(reps) == 0 || !reps[len(reps)-1].GetFinal() {
		t.Fatalf("got %d reports, want a final one last", len(reps))
	}
	var ok uint64
	var labels []string
	ttft := hdr.New()
	for i, r := range reps {
		if r.GetSeq() != uint64(i) || r.GetRunId() != "run1" || r.GetAgentId() != "agent1" {
			t.Errorf("report %d: seq %d ids %q %q", i, r.GetSeq(), r.GetRunId(), r.GetAgentId())
		}
		ok += r.GetRequestsOk()
		for _, rec := range r.GetRequests() {
			labels = append(labels, rec.GetLabel())
			if rec.GetTtftS() <= 0 || rec.GetE2ES() < rec.GetTtftS() || rec.GetOutputTokens() != 3 || rec.GetChunks() == 0 {
				t.Errorf("record %+v", rec)
			}
		}
		for _, h := range r.GetHistograms() {
			if h.GetMetric() == hdr.TTFT {
				d, err := hdr.Decode(h.GetV2())
				if err != nil {
					t.Fatal(err)
				}
				ttft.Merge(d)
			}
		}
	}
	if diff := cmp.Diff([]string{"cold_1", "warm_1", "warm_2"}, labels); diff != "" {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	if ok != 3 || ttft.Count() != 3 {
		t.Errorf("ok %d, merged ttft count %d; want 3, 3", ok, ttft.Count())
	}
}

func TestServerRejectsInvalidSpec(t *testing.T) {
	client := startAgentServer(t, New(DefaultConfig(), nil))
	req := protoRequest("http://127.0.0.1:1")
	req.Concurrency = 0
	stream, err := client.RunProbe(context.Background(), req)
	if err == nil {
		_, err = stream.Recv()
	}
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "concurrency 0 is invalid: set concurrency ≥ 1") {
		t.Fatalf("RunProbe = %v, want InvalidArgument naming concurrency", err)
	}
}

func TestServerCancelEndsRun(t *testing.T) {
	f := newFakeServer(t, streamTokens(1000, 10*time.Millisecond))
	client := startAgentServer(t, New(DefaultConfig(), nil))
	req := protoRequest(f.URL)
	req.Labels = nil
	req.Requests = 1000
	req.Concurrency = 2
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := client.RunProbe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}
	cancel()
	deadline := time.Now().Add(2 * time.Second)
	for {
		f.mu.Lock()
		open := f.open
		f.mu.Unlock()
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests still open 2 s after the client went away", open)
		}
		time.Sleep(10 * time.Millisecond)
	}
	sent := f.requests.Load()
	time.Sleep(100 * time.Millisecond)
	if f.requests.Load() != sent {
		t.Errorf("load continued after the lease ended: %d then %d requests", sent, f.requests.Load())
	}
}

func TestProtoConversion(t *testing.T) {
	start := time.Unix(0, 1_700_000_000_000_000_000)
	req := protoRequest("http://h:8000")
	req.StartUnixNano = start.UnixNano()
	req.TimeoutMs = 1500
	req.Workload.IgnoreEos = true
	req.Workload.Temperature = 0.5
	want := Spec{
		RunID:       "run1",
		AgentID:     "agent1",
		Target:      Target{BaseURL: "http://h:8000", Model: "m", API: "chat"},
		Workload:    Workload{Prompt: "hi", MaxTokens: 8, IgnoreEOS: true, Temperature: 0.5},
		Concurrency: 1,
		Requests:    3,
		Labels:      []string{"cold_1", "warm_1", "warm_2"},
		Interval:    20 * time.Millisecond,
		Start:       start,
		Timeout:     1500 * time.Millisecond,
	}
	if diff := cmp.Diff(want, specFromProto(req)); diff != "" {
		t.Errorf("specFromProto (-want +got):\n%s", diff)
	}

	rep := Report{
		RunID: "r", AgentID: "a", Seq: 2, Start: start, End: start.Add(time.Second),
		Histograms:   []Histogram{{Metric: hdr.TTFT, V2: []byte{1, 2}}},
		OK:           3,
		Failed:       1,
		OutputTokens: 30,
		ErrorsByKind: map[string]uint64{"http_500": 1},
		ErrorSamples: []string{"request 1: http_500: bad \xff"},
		Records: []Record{{Label: "cold_1", Send: start, TTFT: 250 * time.Millisecond, E2E: time.Second,
			FirstByte: 10 * time.Millisecond, FirstChunk: 20 * time.Millisecond, OutputTokens: 9, PromptTokens: 4, Chunks: 11, Preview: "p"}},
		InFlight: 2,
		Final:    true,
	}
	wantPB := &ttftlabv1.IntervalReport{
		RunId: "r", AgentId: "a", Seq: 2,
		StartUnixNano: start.UnixNano(), EndUnixNano: start.Add(time.Second).UnixNano(),
		Histograms:     []*ttftlabv1.EncodedHistogram{{Metric: hdr.TTFT, V2: []byte{1, 2}}},
		RequestsOk:     3,
		RequestsFailed: 1,
		OutputTokens:   30,
		ErrorsByKind:   map[string]uint64{"http_500": 1},
		ErrorSamples:   []string{"request 1: http_500: bad \uFFFD"},
		Requests: []*ttftlabv1.RequestRecord{{Label: "cold_1", SendUnixNano: start.UnixNano(), TtftS: 0.25, E2ES: 1,
			FirstByteS: 0.01, FirstChunkS: 0.02, OutputTokens: 9, PromptTokens: 4, Chunks: 11, OutputPreview: "p"}},
		InFlight: 2,
		Final:    true,
	}
	if diff := cmp.Diff(wantPB, reportToProto(rep), protocmp.Transform()); diff != "" {
		t.Errorf("reportToProto (-want +got):\n%s", diff)
	}
}
