package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
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
	"github.com/ttftlab/ttftlab/internal/oai"
	"github.com/ttftlab/ttftlab/internal/oai/oaitest"
	"github.com/ttftlab/ttftlab/internal/segment"
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
	f := oaitest.NewServer(t, oaitest.StreamTokens(3, 5*time.Millisecond))
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
		if resp.GetHeartbeat() != nil {
			continue
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
	f := oaitest.NewServer(t, oaitest.StreamTokens(1000, 10*time.Millisecond))
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
	// Both workers are mid-stream (10 s streams) before the client goes:
	// a request still on its way to the server when the lease ends would
	// otherwise arrive after it and read as new load.
	for deadline := time.Now().Add(10 * time.Second); f.Open() < 2; time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of the 2 workers' requests reached the server within 10 s", f.Open())
		}
	}
	cancel()
	deadline := time.Now().Add(2 * time.Second)
	for {
		open := f.Open()
		if open == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests still open 2 s after the client went away", open)
		}
		time.Sleep(10 * time.Millisecond)
	}
	sent := f.Requests.Load()
	time.Sleep(100 * time.Millisecond)
	if f.Requests.Load() != sent {
		t.Errorf("load continued after the lease ended: %d then %d requests", sent, f.Requests.Load())
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
	got, err := specFromProto(req)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(segment.Segment{})); diff != "" {
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
		InFlight:        2,
		Final:           true,
		Moments:         []Moments{{Metric: hdr.TTFT, Count: 3, Sum: 750, SumSq: 187500.5}},
		PromptTokens:    12,
		PromptLenSource: PromptLenTokenize,
		PromptLens:      PromptLenCounts{Tokenize: 2, Usage: 1},
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
		InFlight:        2,
		Final:           true,
		Moments:         []*ttftlabv1.Moments{{Metric: hdr.TTFT, Count: 3, SumMs: 750, SumSqMs: 187500.5}},
		PromptTokens:    12,
		PromptLenSource: "tokenize",
		PromptLens:      &ttftlabv1.PromptLenCounts{Tokenize: 2, Usage: 1},
	}
	if diff := cmp.Diff(wantPB, reportToProto(rep), protocmp.Transform()); diff != "" {
		t.Errorf("reportToProto (-want +got):\n%s", diff)
	}
}

func TestProtoConversionLoad(t *testing.T) {
	req := protoRequest("http://h:8000")
	req.Labels, req.Concurrency, req.Requests = nil, 0, 0
	req.Target.ApiKey = "sk"
	req.Target.Headers = map[string]string{"X-Tenant": "a"}
	req.Workload.ExtraBodyJson = `{"min_tokens": 2}`
	req.Records = true
	req.TtftTimeoutMs, req.ConnectTimeoutMs = 300, 400
	req.Load = &ttftlabv1.LoadModel{Kind: "gamma", Rate: 12.5, Burstiness: 0.5, DurationMs: 2000, Requests: 100,
		WarmupRequests: 4, MaxInFlight: 8, Seed: 9, ClientBoundP99Ms: 2.5}
	req.Segment = &ttftlabv1.Segment{Start: "1/3", End: "2/3"}
	req.Generator = &ttftlabv1.WorkloadGen{Kind: "shared_prefix", InputLen: &ttftlabv1.LengthDist{Kind: "uniform", Min: 20, Max: 40},
		OutputLen: &ttftlabv1.LengthDist{Kind: "fixed", Mean: 16}, PrefixLen: 10, NumPrefixes: 3, Seed: 5}
	got, err := specFromProto(req)
	if err != nil {
		t.Fatal(err)
	}
	seg, _ := segment.Parse("1/3", "2/3")
	want := Spec{
		RunID: "run1", AgentID: "agent1",
		Target:   Target{BaseURL: "http://h:8000", Model: "m", API: "chat", APIKey: "sk", Headers: map[string]string{"X-Tenant": "a"}},
		Workload: Workload{Prompt: "hi", MaxTokens: 8, ExtraBody: map[string]any{"min_tokens": json.Number("2")}},
		Load: LoadModel{Kind: LoadGamma, Rate: 12.5, Burstiness: 0.5, Duration: 2 * time.Second, Requests: 100, WarmupRequests: 4,
			MaxInFlight: 8, Seed: 9, ClientBoundP99: 2500 * time.Microsecond},
		Segment: seg,
		Generator: WorkloadGen{Kind: GenSharedPrefix, InputLen: LengthDist{Kind: DistUniform, Min: 20, Max: 40},
			OutputLen: Fixed(16), PrefixLen: 10, NumPrefixes: 3, Seed: 5},
		Records: true, Interval: 20 * time.Millisecond,
		TTFTTimeout: 300 * time.Millisecond, ConnectTimeout: 400 * time.Millisecond,
	}
	if diff := cmp.Diff(want, got, cmp.AllowUnexported(segment.Segment{})); diff != "" {
		t.Errorf("specFromProto (-want +got):\n%s", diff)
	}
	if err := got.Validate(); err != nil {
		t.Errorf("Validate = %v", err)
	}

	rep := reportToProto(Report{ClientBound: true, UsageSource: oai.UsageFinal, Scheduled: 7, Warmup: true})
	if !rep.GetClientBound() || rep.GetUsage() != ttftlabv1.UsageSource_USAGE_SOURCE_FINAL || rep.GetScheduled() != 7 || !rep.GetWarmup() {
		t.Errorf("reportToProto dropped fields: %v", rep)
	}
}

func TestServerRejectsBadLoad(t *testing.T) {
	client := startAgentServer(t, New(DefaultConfig(), nil))
	open := func(r *ttftlabv1.RunProbeRequest) {
		r.Labels, r.Concurrency, r.Requests = nil, 0, 0
		r.Load = &ttftlabv1.LoadModel{Kind: "poisson", Rate: 5, Requests: 10}
	}
	tests := []struct {
		name   string
		mutate func(*ttftlabv1.RunProbeRequest)
		code   codes.Code
		want   string
	}{
		{"segment reversed", func(r *ttftlabv1.RunProbeRequest) { open(r); r.Segment = &ttftlabv1.Segment{Start: "2/3", End: "1/3"} },
			codes.InvalidArgument, "segment 2/3:1/3 is empty"},
		{"segment garbage", func(r *ttftlabv1.RunProbeRequest) { open(r); r.Segment = &ttftlabv1.Segment{Start: "half"} },
			codes.InvalidArgument, `segment: segment start: "half" is not a rational`},
		{"segment without load", func(r *ttftlabv1.RunProbeRequest) { r.Segment = &ttftlabv1.Segment{Start: "0", End: "1/2"} },
			codes.InvalidArgument, "segment 0:1/2 is set but load is not"},
		{"unknown kind", func(r *ttftlabv1.RunProbeRequest) { open(r); r.Load.Kind = "zigzag" }, codes.InvalidArgument, `load.kind "zigzag" is unknown`},
		{"empty kind", func(r *ttftlabv1.RunProbeRequest) { open(r); r.Load.Kind = "" }, codes.InvalidArgument, "load.kind is empty"},
		{"zero rate", func(r *ttftlabv1.RunProbeRequest) { open(r); r.Load.Rate = 0 }, codes.InvalidArgument, "load.rate 0 is invalid"},
		{"no bound", func(r *ttftlabv1.RunProbeRequest) { open(r); r.Load.Requests = 0 }, codes.InvalidArgument, "load has no bound"},
		{"both warmups", func(r *ttftlabv1.RunProbeRequest) { open(r); r.Load.WarmupMs, r.Load.WarmupRequests = 10, 1 }, codes.InvalidArgument, "pick one"},
		{"ramp without duration", func(r *ttftlabv1.RunProbeRequest) { open(r); r.Load.Kind = "ramp" }, codes.InvalidArgument, "load.duration is 0 for a ramp"},
		{"legacy and load", func(r *ttftlabv1.RunProbeRequest) { open(r); r.Concurrency = 2 }, codes.InvalidArgument, "set them in load only"},
		{"bad extra body", func(r *ttftlabv1.RunProbeRequest) { r.Workload.ExtraBodyJson = "[1]" }, codes.InvalidArgument, "workload.extra_body_json"},
		{"bad header", func(r *ttftlabv1.RunProbeRequest) { r.Target.Headers = map[string]string{"X-A": "b\r\nc"} }, codes.InvalidArgument, "line break"},
		{"no input len", func(r *ttftlabv1.RunProbeRequest) { r.Generator = &ttftlabv1.WorkloadGen{Kind: "synthetic"} },
			codes.InvalidArgument, "generator.input_len.kind is empty"},
		{"bad p99", func(r *ttftlabv1.RunProbeRequest) { open(r); r.Load.ClientBoundP99Ms = -1 }, codes.InvalidArgument, "client_bound_p99_ms"},
		{"dataset over rpc", func(r *ttftlabv1.RunProbeRequest) {
			r.Generator = &ttftlabv1.WorkloadGen{Kind: "sharegpt", Path: "/etc/passwd"}
		}, codes.FailedPrecondition, "reads no dataset files over RPC"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := protoRequest("http://127.0.0.1:1")
			tt.mutate(req)
			stream, err := client.RunProbe(context.Background(), req)
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != tt.code || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("RunProbe = %v, want %v containing %q", err, tt.code, tt.want)
			}
		})
	}
}

// TestProtoMillisecondsRangeChecked: every *_ms field is range-checked before
// it becomes a time.Duration, so that a huge value cannot overflow and NaN
// or ±Inf cannot pass for a negative or zero objective.
func TestProtoMillisecondsRangeChecked(t *testing.T) {
	const day, hour = int64(24 * 3600 * 1000), 3600.0 * 1000
	load := func(r *ttftlabv1.RunProbeRequest) *ttftlabv1.LoadModel {
		r.Labels, r.Concurrency, r.Requests = nil, 0, 0
		r.Load = &ttftlabv1.LoadModel{Kind: "poisson", Rate: 5, Requests: 10}
		return r.Load
	}
	tests := []struct {
		name   string
		mutate func(*ttftlabv1.RunProbeRequest)
		want   string // "" means accepted
	}{
		{"interval overflow", func(r *ttftlabv1.RunProbeRequest) { r.IntervalMs = math.MaxInt64 }, "interval_ms 9223372036854775807 is invalid: set milliseconds in [0, 86400000]"},
		{"interval negative", func(r *ttftlabv1.RunProbeRequest) { r.IntervalMs = -1 }, "interval_ms -1 is invalid"},
		{"timeout overflow", func(r *ttftlabv1.RunProbeRequest) { r.TimeoutMs = math.MaxInt64 / 1000 }, "timeout_ms 9223372036854775 is invalid"},
		{"timeout wraps negative", func(r *ttftlabv1.RunProbeRequest) { r.TimeoutMs = math.MinInt64 }, "timeout_ms -9223372036854775808 is invalid"},
		{"timeout a day", func(r *ttftlabv1.RunProbeRequest) { r.TimeoutMs = day }, ""},
		{"timeout over a day", func(r *ttftlabv1.RunProbeRequest) { r.TimeoutMs = day + 1 }, "timeout_ms 86400001 is invalid"},
		{"ttft timeout", func(r *ttftlabv1.RunProbeRequest) { r.TtftTimeoutMs = 1 << 62 }, "ttft_timeout_ms 4611686018427387904 is invalid"},
		{"connect timeout", func(r *ttftlabv1.RunProbeRequest) { r.ConnectTimeoutMs = -5 }, "connect_timeout_ms -5 is invalid"},
		{"duration overflow", func(r *ttftlabv1.RunProbeRequest) { load(r).DurationMs = math.MaxInt64 }, "load.duration_ms 9223372036854775807 is invalid"},
		{"duration a day", func(r *ttftlabv1.RunProbeRequest) { load(r).DurationMs = day }, ""},
		{"warmup overflow", func(r *ttftlabv1.RunProbeRequest) { load(r).WarmupMs = math.MaxInt64 }, "load.warmup_ms 9223372036854775807 is invalid"},
		{"warmup negative", func(r *ttftlabv1.RunProbeRequest) { load(r).WarmupMs = -1 }, "load.warmup_ms -1 is invalid"},
		{"p99 NaN", func(r *ttftlabv1.RunProbeRequest) { load(r).ClientBoundP99Ms = math.NaN() }, "load.client_bound_p99_ms NaN is invalid: set milliseconds in [0, 3600000]"},
		{"slo ttft NaN", func(r *ttftlabv1.RunProbeRequest) { load(r).SloTtftMs = math.NaN() }, "load.slo_ttft_ms NaN is invalid: set milliseconds in [0, 3600000] (0 leaves it unconstrained)"},
		{"slo ttft +Inf", func(r *ttftlabv1.RunProbeRequest) { load(r).SloTtftMs = math.Inf(1) }, "load.slo_ttft_ms +Inf is invalid"},
		{"slo tpot -Inf", func(r *ttftlabv1.RunProbeRequest) { load(r).SloTpotMs = math.Inf(-1) }, "load.slo_tpot_ms -Inf is invalid"},
		{"slo e2e overflow", func(r *ttftlabv1.RunProbeRequest) { load(r).SloE2EMs = 1e300 }, "load.slo_e2e_ms 1e+300 is invalid"},
		{"slo e2e negative", func(r *ttftlabv1.RunProbeRequest) { load(r).SloE2EMs = -0.5 }, "load.slo_e2e_ms -0.5 is invalid"},
		{"slo over an hour", func(r *ttftlabv1.RunProbeRequest) { load(r).SloTtftMs = hour + 1 }, "load.slo_ttft_ms 3.600001e+06 is invalid"},
		{"slo an hour", func(r *ttftlabv1.RunProbeRequest) {
			l := load(r)
			l.SloTtftMs, l.SloTpotMs, l.SloE2EMs = hour, 0.5, hour
		}, ""},
	}
	client := startAgentServer(t, New(DefaultConfig(), nil))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := protoRequest("http://127.0.0.1:1")
			tt.mutate(req)
			_, err := specFromProto(req)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("specFromProto = %v, want no error", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("specFromProto = %v, want ErrInvalidSpec containing %q", err, tt.want)
			}
			stream, err := client.RunProbe(context.Background(), req)
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("RunProbe = %v, want InvalidArgument containing %q", err, tt.want)
			}
		})
	}
}

// TestServerSendsHeartbeats runs a segment whose requests outlast its
// report interval: heartbeats arrive every HeartbeatPeriod between the
// reports, each message holds exactly one of them, and they stop with the
// stream.
func TestServerSendsHeartbeats(t *testing.T) {
	f := oaitest.NewServer(t, oaitest.StreamTokens(1000, 10*time.Millisecond))
	client := startAgentServer(t, New(DefaultConfig(), nil))
	req := protoRequest(f.URL)
	req.Labels = nil
	req.Requests = 100
	req.Concurrency = 2
	req.IntervalMs = 60_000 // no report for a minute: only heartbeats show life
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	stream, err := client.RunProbe(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	var beats []*ttftlabv1.Heartbeat
	for len(beats) < 4 {
		resp, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv after %d heartbeats: %v", len(beats), err)
		}
		if (resp.GetHeartbeat() == nil) == (resp.GetReport() == nil) {
			t.Fatalf("message %v: want exactly one of report and heartbeat", resp)
		}
		if hb := resp.GetHeartbeat(); hb != nil {
			beats = append(beats, hb)
		}
	}
	elapsed := time.Since(began)
	// Four beats at 500 ms take about 2 s; generous bounds for a loaded CI.
	if elapsed < 1500*time.Millisecond || elapsed > 6*time.Second {
		t.Errorf("4 heartbeats took %s, want about 2 s (one per %s)", elapsed, HeartbeatPeriod)
	}
	for i := 1; i < len(beats); i++ {
		if beats[i].GetUnixNano() <= beats[i-1].GetUnixNano() {
			t.Errorf("heartbeat %d at %d, not after %d", i, beats[i].GetUnixNano(), beats[i-1].GetUnixNano())
		}
	}
	if beats[len(beats)-1].GetInFlight() > 2 {
		t.Errorf("heartbeat in_flight %d, want at most the concurrency 2", beats[len(beats)-1].GetInFlight())
	}
}
