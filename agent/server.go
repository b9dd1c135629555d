package agent

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ttftlabv1 "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/oai"
	"github.com/ttftlab/ttftlab/internal/segment"
)

// server adapts an Agent to the AgentService gRPC service.
type server struct {
	ttftlabv1.UnimplementedAgentServiceServer
	a *Agent
}

var _ ttftlabv1.AgentServiceServer = (*server)(nil)

// NewServer returns the AgentService implementation backed by a. The stream
// is the run's lease: when its context ends, the run stops.
func NewServer(a *Agent) ttftlabv1.AgentServiceServer {
	return &server{a: a}
}

// RunProbe validates the request, runs it and streams each report.
func (s *server) RunProbe(req *ttftlabv1.RunProbeRequest, stream grpc.ServerStreamingServer[ttftlabv1.RunProbeResponse]) error {
	spec, err := specFromProto(req)
	if err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if err := spec.Validate(); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if spec.Generator.Path != "" && s.a.cfg.DatasetDir == "" {
		return status.Errorf(codes.FailedPrecondition,
			"generator.path %q: this agent reads no dataset files over RPC: start it with a dataset directory, or use a synthetic or shared_prefix generator", spec.Generator.Path)
	}
	hb := startHeartbeat(stream.Context(), HeartbeatPeriod, stream.Send)
	err = s.a.Run(stream.Context(), spec, func(r Report) error {
		return hb.send(&ttftlabv1.RunProbeResponse{Report: reportToProto(r)}, r)
	})
	hb.stop()
	return toStatus(err)
}

// HeartbeatPeriod is how often an agent sends a heartbeat on a run stream
// while the segment runs. gRPC keepalive cannot go below 10 s, so this is
// how the coordinator tells a frozen agent from a quiet one within 2 s.
const HeartbeatPeriod = 500 * time.Millisecond

// heartbeat sends a Heartbeat on a run stream every period until stop, and
// serialises those sends with the reports' (a gRPC stream's Send is not
// safe for concurrent use). Its counts are those of the latest report sent
// (completed sums every report, warm-up included), so they lag the load by
// at most one interval; the beat itself is the proof of life. Its
// goroutine is joined by stop.
type heartbeat struct {
	mu        sync.Mutex
	sendFn    func(*ttftlabv1.RunProbeResponse) error
	scheduled uint64
	completed uint64
	inFlight  uint32
	done      chan struct{}
	exited    chan struct{}
}

func startHeartbeat(ctx context.Context, period time.Duration, send func(*ttftlabv1.RunProbeResponse) error) *heartbeat {
	h := &heartbeat{sendFn: send, done: make(chan struct{}), exited: make(chan struct{})}
	go func() {
		defer close(h.exited)
		t := time.NewTicker(period)
		defer t.Stop()
		beat := func(now time.Time) error {
			h.mu.Lock()
			defer h.mu.Unlock()
			return h.sendFn(&ttftlabv1.RunProbeResponse{Heartbeat: &ttftlabv1.Heartbeat{
				UnixNano: now.UnixNano(), Scheduled: h.scheduled, Completed: h.completed, InFlight: h.inFlight,
			}})
		}
		// The first beat goes at once: the coordinator's silence clock runs
		// from its call, connection set-up included, and with 50 agents
		// connecting at once on a busy host a first beat one period later
		// came too late (TestScaleSweep50AgentsE2E in coordinator).
		// A failed send means the stream is gone; the run sees it on its
		// next report.
		if beat(time.Now()) != nil {
			return
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-h.done:
				return
			case now := <-t.C:
				if beat(now) != nil {
					return
				}
			}
		}
	}()
	return h
}

// send sends a report and notes its counts for the next heartbeats.
func (h *heartbeat) send(m *ttftlabv1.RunProbeResponse, r Report) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.scheduled = max(h.scheduled, r.Scheduled)
	h.completed += r.OK + r.Failed // warm-up included: it is load too
	h.inFlight = uint32(max(r.InFlight, 0))
	return h.sendFn(m)
}

// stop ends the heartbeats and waits for their goroutine.
func (h *heartbeat) stop() {
	close(h.done)
	<-h.exited
}

func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err // already a status, for example from stream.Send
	}
	switch {
	case errors.Is(err, ErrInvalidSpec):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrTargetNotAllowed):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// Ranges of the millisecond fields of a RunProbeRequest, checked before
// they become time.Durations: a larger value would overflow one, and NaN or
// ±Inf would pass for another number.
const (
	maxDurationMs = 24 * 60 * 60 * 1000 // timeouts, intervals, durations: a day
	maxObjectMs   = 60 * 60 * 1000      // SLOs and the client-bound p99: an hour
)

// msDuration converts an int64 millisecond field, which must lie in
// [0, maxDurationMs]; zero says what 0 means, for the error.
func msDuration(field string, v int64, zero string) (time.Duration, error) {
	if v < 0 || v > maxDurationMs {
		return 0, fmt.Errorf("%w: %s %d is invalid: set milliseconds in [0, %d] (%s)", ErrInvalidSpec, field, v, int64(maxDurationMs), zero)
	}
	return time.Duration(v) * time.Millisecond, nil
}

// msObjective converts a float millisecond field, which must be finite and
// lie in [0, maxObjectMs]; zero says what 0 means, for the error.
func msObjective(field string, v float64, zero string) (time.Duration, error) {
	if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 || v > maxObjectMs {
		return 0, fmt.Errorf("%w: %s %v is invalid: set milliseconds in [0, %d] (%s)", ErrInvalidSpec, field, v, int64(maxObjectMs), zero)
	}
	return time.Duration(v * float64(time.Millisecond)), nil
}

// specFromProto converts a request. It fails only on fields that cannot be
// represented (a malformed segment or extra body, a millisecond field out of
// range); Spec.Validate checks the rest. Errors name the field and the fix.
func specFromProto(req *ttftlabv1.RunProbeRequest) (Spec, error) {
	t, w := req.GetTarget(), req.GetWorkload()
	var msErr error
	ms := func(field string, v int64, zero string) time.Duration {
		d, err := msDuration(field, v, zero)
		if msErr == nil {
			msErr = err
		}
		return d
	}
	obj := func(field string, v float64, zero string) time.Duration {
		d, err := msObjective(field, v, zero)
		if msErr == nil {
			msErr = err
		}
		return d
	}
	spec := Spec{
		RunID:   req.GetRunId(),
		AgentID: req.GetAgentId(),
		Target: Target{
			BaseURL: t.GetBaseUrl(),
			Model:   t.GetModel(),
			API:     t.GetApi(),
			APIKey:  t.GetApiKey(),
			Headers: t.GetHeaders(),
			// Validate parses and caps ca_pem.
			CAPEM:              t.GetCaPem(),
			InsecureSkipVerify: t.GetInsecureSkipVerify(),
			Transport:          t.GetTransport(),
			FirstTokenClock:    t.GetFirstTokenClock(),
		},
		Workload: Workload{
			Prompt:      w.GetPrompt(),
			MaxTokens:   int(w.GetMaxTokens()),
			IgnoreEOS:   w.GetIgnoreEos(),
			Temperature: w.GetTemperature(),
		},
		Concurrency:    int(req.GetConcurrency()),
		Requests:       int(req.GetRequests()),
		Labels:         req.GetLabels(),
		Records:        req.GetRecords(),
		Interval:       ms("interval_ms", req.GetIntervalMs(), "0 means the default"),
		Timeout:        ms("timeout_ms", req.GetTimeoutMs(), "0 means the default"),
		TTFTTimeout:    ms("ttft_timeout_ms", req.GetTtftTimeoutMs(), "0 means the default"),
		ConnectTimeout: ms("connect_timeout_ms", req.GetConnectTimeoutMs(), "0 means the default"),
	}
	if msErr != nil {
		return Spec{}, msErr
	}
	if len(spec.Target.Headers) == 0 {
		spec.Target.Headers = nil
	}
	if ns := req.GetStartUnixNano(); ns != 0 {
		spec.Start = time.Unix(0, ns)
	}
	if eb := w.GetExtraBodyJson(); eb != "" {
		m, err := ParseExtraBody(eb)
		if err != nil {
			return Spec{}, fmt.Errorf("workload.extra_body_json: %w", err)
		}
		spec.Workload.ExtraBody = m
	}
	if l := req.GetLoad(); l != nil {
		spec.Load = LoadModel{
			Kind:           l.GetKind(),
			Concurrency:    int(l.GetConcurrency()),
			Rate:           l.GetRate(),
			StartRate:      l.GetStartRate(),
			Burstiness:     l.GetBurstiness(),
			Duration:       ms("load.duration_ms", l.GetDurationMs(), "0 means no time bound"),
			Requests:       l.GetRequests(),
			Warmup:         ms("load.warmup_ms", l.GetWarmupMs(), "0 means no time-based warm-up"),
			WarmupRequests: l.GetWarmupRequests(),
			MaxInFlight:    int(l.GetMaxInFlight()),
			Seed:           l.GetSeed(),
			ClientBoundP99: obj("load.client_bound_p99_ms", l.GetClientBoundP99Ms(), "0 means "+DefaultClientBoundP99.String()),
			SLO: SLO{
				TTFT: obj("load.slo_ttft_ms", l.GetSloTtftMs(), "0 leaves it unconstrained"),
				TPOT: obj("load.slo_tpot_ms", l.GetSloTpotMs(), "0 leaves it unconstrained"),
				E2E:  obj("load.slo_e2e_ms", l.GetSloE2EMs(), "0 leaves it unconstrained"),
			},
			MaxErrorRate: l.GetMaxErrorRate(),
			ErrorWindow:  ms("load.error_window_ms", l.GetErrorWindowMs(), "0 means the default"),
		}
		if msErr != nil {
			return Spec{}, msErr
		}
		if spec.Load.Kind == "" {
			return Spec{}, fmt.Errorf("%w: load.kind is empty: use %q, %q, %q, %q or %q", ErrInvalidSpec, LoadClosed, LoadConstant, LoadPoisson, LoadGamma, LoadRamp)
		}
	}
	if sg := req.GetSegment(); sg != nil && (sg.GetStart() != "" || sg.GetEnd() != "") {
		seg, err := segment.Parse(sg.GetStart(), sg.GetEnd())
		if err != nil {
			return Spec{}, fmt.Errorf("%w: segment: %w: give 0 ≤ start < end ≤ 1, for example start \"1/3\" end \"2/3\"", ErrInvalidSpec, err)
		}
		spec.Segment = seg
	}
	if g := req.GetGenerator(); g != nil {
		dist := func(d *ttftlabv1.LengthDist) LengthDist {
			if d == nil {
				return LengthDist{}
			}
			return LengthDist{Kind: d.GetKind(), Mean: d.GetMean(), Min: d.GetMin(), Max: d.GetMax(), Stddev: d.GetStddev()}
		}
		spec.Generator = WorkloadGen{
			Kind:           g.GetKind(),
			InputLen:       dist(g.GetInputLen()),
			OutputLen:      dist(g.GetOutputLen()),
			PrefixLen:      int(g.GetPrefixLen()),
			NumPrefixes:    int(g.GetNumPrefixes()),
			UniqueFraction: g.GetUniqueFraction(),
			SuffixSeed:     g.GetSuffixSeed(),
			Path:           g.GetPath(),
			Seed:           g.GetSeed(),
		}
	}
	return spec, nil
}

// usageToProto maps a usage source to the proto enum.
func usageToProto(u string) ttftlabv1.UsageSource {
	switch u {
	case oai.UsageCounted:
		return ttftlabv1.UsageSource_USAGE_SOURCE_COUNTED
	case oai.UsageFinal:
		return ttftlabv1.UsageSource_USAGE_SOURCE_FINAL
	case oai.UsageContinuous:
		return ttftlabv1.UsageSource_USAGE_SOURCE_CONTINUOUS
	}
	return ttftlabv1.UsageSource_USAGE_SOURCE_UNSPECIFIED
}

func reportToProto(r Report) *ttftlabv1.IntervalReport {
	p := &ttftlabv1.IntervalReport{
		RunId:                 r.RunID,
		AgentId:               r.AgentID,
		Seq:                   r.Seq,
		StartUnixNano:         unixNano(r.Start),
		EndUnixNano:           unixNano(r.End),
		RequestsOk:            r.OK,
		RequestsFailed:        r.Failed,
		RequestsGood:          r.Good,
		MeasuredStartUnixNano: unixNano(r.MeasuredStart),
		MeasuredEndUnixNano:   unixNano(r.MeasuredEnd),
		OutputTokens:          r.OutputTokens,
		OutputTokensStreamed:  r.OutputTokensStreamed,
		CachedTokens:          r.CachedTokens,
		CachedRequests:        r.CachedRequests,
		CachedPromptTokens:    r.CachedPromptTokens,
		ErrorsByKind:          r.ErrorsByKind,
		ErrorSamples:          validUTF8(r.ErrorSamples),
		Final:                 r.Final,
		InFlight:              uint32(max(r.InFlight, 0)),
		ClientBound:           r.ClientBound,
		Usage:                 usageToProto(r.UsageSource),
		Scheduled:             r.Scheduled,
		Warmup:                r.Warmup,
		RequestsInterrupted:   r.Interrupted,
		AbortReason:           strings.ToValidUTF8(r.AbortReason, "\uFFFD"),
	}
	for _, h := range r.Histograms {
		p.Histograms = append(p.Histograms, &ttftlabv1.EncodedHistogram{Metric: h.Metric, V2: h.V2})
	}
	for _, m := range r.Moments {
		p.Moments = append(p.Moments, &ttftlabv1.Moments{Metric: m.Metric, Count: m.Count, SumMs: m.Sum, SumSqMs: m.SumSq})
	}
	p.PromptTokens = r.PromptTokens
	p.PromptLenSource = r.PromptLenSource
	p.PromptLens = &ttftlabv1.PromptLenCounts{Tokenize: r.PromptLens.Tokenize, Usage: r.PromptLens.Usage, Estimate: r.PromptLens.Estimate}
	for _, rec := range r.Records {
		p.Requests = append(p.Requests, &ttftlabv1.RequestRecord{
			Label:         rec.Label,
			SendUnixNano:  unixNano(rec.Send),
			TtftS:         rec.TTFT.Seconds(),
			E2ES:          rec.E2E.Seconds(),
			OutputTokens:  uint32(max(rec.OutputTokens, 0)),
			PromptTokens:  uint32(max(rec.PromptTokens, 0)),
			Error:         strings.ToValidUTF8(rec.Err, "\uFFFD"),
			OutputPreview: strings.ToValidUTF8(rec.Preview, "\uFFFD"),
			Chunks:        uint32(max(rec.Chunks, 0)),
			FirstByteS:    rec.FirstByte.Seconds(),
			FirstChunkS:   rec.FirstChunk.Seconds(),
		})
	}
	return p
}

// validUTF8 makes strings safe for proto string fields, which refuse
// invalid UTF-8; a server's bytes must never break the report stream.
func validUTF8(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = strings.ToValidUTF8(s, "\uFFFD")
	}
	return out
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}
