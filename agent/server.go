package agent

import (
	"context"
	"errors"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ttftlabv1 "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
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
	spec := specFromProto(req)
	if err := spec.Validate(); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	err := s.a.Run(stream.Context(), spec, func(r Report) error {
		return stream.Send(&ttftlabv1.RunProbeResponse{Report: reportToProto(r)})
	})
	return toStatus(err)
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

func specFromProto(req *ttftlabv1.RunProbeRequest) Spec {
	t, w := req.GetTarget(), req.GetWorkload()
	spec := Spec{
		RunID:   req.GetRunId(),
		AgentID: req.GetAgentId(),
		Target: Target{
			BaseURL: t.GetBaseUrl(),
			Model:   t.GetModel(),
			API:     t.GetApi(),
		},
		Workload: Workload{
			Prompt:      w.GetPrompt(),
			MaxTokens:   int(w.GetMaxTokens()),
			IgnoreEOS:   w.GetIgnoreEos(),
			Temperature: w.GetTemperature(),
		},
		Concurrency: int(req.GetConcurrency()),
		Requests:    int(req.GetRequests()),
		Labels:      req.GetLabels(),
		Interval:    time.Duration(req.GetIntervalMs()) * time.Millisecond,
		Timeout:     time.Duration(req.GetTimeoutMs()) * time.Millisecond,
	}
	if ns := req.GetStartUnixNano(); ns != 0 {
		spec.Start = time.Unix(0, ns)
	}
	return spec
}

func reportToProto(r Report) *ttftlabv1.IntervalReport {
	p := &ttftlabv1.IntervalReport{
		RunId:          r.RunID,
		AgentId:        r.AgentID,
		Seq:            r.Seq,
		StartUnixNano:  unixNano(r.Start),
		EndUnixNano:    unixNano(r.End),
		RequestsOk:     r.OK,
		RequestsFailed: r.Failed,
		OutputTokens:   r.OutputTokens,
		ErrorsByKind:   r.ErrorsByKind,
		ErrorSamples:   validUTF8(r.ErrorSamples),
		Final:          r.Final,
		InFlight:       uint32(max(r.InFlight, 0)),
	}
	for _, h := range r.Histograms {
		p.Histograms = append(p.Histograms, &ttftlabv1.EncodedHistogram{Metric: h.Metric, V2: h.V2})
	}
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
