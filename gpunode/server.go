package gpunode

import (
	"context"
	"errors"
	"io/fs"
	"os/exec"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	ttftlabv1 "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/vllmlog"
)

// server adapts a Node to ttftlabv1.GPUNodeServiceServer: it validates
// input, converts messages and maps errors to status codes.
type server struct {
	ttftlabv1.UnimplementedGPUNodeServiceServer
	node *Node
}

// NewServer returns the gRPC service of n.
func NewServer(n *Node) ttftlabv1.GPUNodeServiceServer {
	return &server{node: n}
}

// maxMillis bounds millisecond fields so that conversion cannot overflow.
const maxMillis = int64(24 * time.Hour / time.Millisecond)

func (s *server) Info(ctx context.Context, _ *ttftlabv1.InfoRequest) (*ttftlabv1.InfoResponse, error) {
	info, err := s.node.Info(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	resp := &ttftlabv1.InfoResponse{
		Hostname:      info.Hostname,
		Os:            info.OS,
		Kernel:        info.Kernel,
		NvmlAvailable: info.NVMLAvailable,
		NvmlError:     info.NVMLError,
		DriverVersion: info.DriverVersion,
		Profiles:      info.Profiles,
		CpuCount:      int32(info.CPUCount),
		MemTotalBytes: info.MemTotalBytes,
	}
	for _, g := range info.GPUs {
		resp.Gpus = append(resp.Gpus, &ttftlabv1.GPUInfo{
			Index:            int32(g.Index),
			Name:             g.Name,
			Uuid:             g.UUID,
			MemoryTotalBytes: g.MemoryTotalBytes,
		})
	}
	return resp, nil
}

func (s *server) StartEngine(ctx context.Context, req *ttftlabv1.StartEngineRequest) (*ttftlabv1.StartEngineResponse, error) {
	if req.GetProfile() == "" {
		return nil, status.Error(codes.InvalidArgument, "profile is empty; name one of the node's profiles (see Info)")
	}
	if ms := req.GetReadyTimeoutMs(); ms < 0 || ms > maxMillis {
		return nil, status.Errorf(codes.InvalidArgument, "ready_timeout_ms %d is out of range; use 0 for the node default, or up to %d", ms, maxMillis)
	}
	knobs, err := knobsFromPB(req.GetKnobs())
	if err != nil {
		return nil, toStatus(err)
	}
	if err := knobs.ValidateSet(); err != nil {
		return nil, toStatus(err)
	}
	info, err := s.node.StartEngine(ctx, StartSpec{
		Profile:      req.GetProfile(),
		Knobs:        knobs,
		ReadyTimeout: time.Duration(req.GetReadyTimeoutMs()) * time.Millisecond,
		ColdMode:     req.GetColdMode(),
		DropCaches:   req.GetDropCaches(),
	})
	if err != nil {
		return nil, toStatus(err)
	}
	return &ttftlabv1.StartEngineResponse{Engine: engineInfoToPB(info)}, nil
}

func (s *server) StopEngine(ctx context.Context, req *ttftlabv1.StopEngineRequest) (*ttftlabv1.StopEngineResponse, error) {
	if ms := req.GetGraceMs(); ms < 0 || ms > maxMillis {
		return nil, status.Errorf(codes.InvalidArgument, "grace_ms %d is out of range; use 0 for the node default, or up to %d", ms, maxMillis)
	}
	res, err := s.node.StopEngine(ctx, time.Duration(req.GetGraceMs())*time.Millisecond)
	if err != nil {
		return nil, toStatus(err)
	}
	return &ttftlabv1.StopEngineResponse{WasRunning: res.WasRunning, ExitStatus: res.ExitStatus}, nil
}

// ResetPrefixCache implements the RPC of the same name.
func (s *server) ResetPrefixCache(ctx context.Context, _ *ttftlabv1.ResetPrefixCacheRequest) (*ttftlabv1.ResetPrefixCacheResponse, error) {
	res, err := s.node.ResetPrefixCache(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &ttftlabv1.ResetPrefixCacheResponse{HttpStatus: int32(res.HTTPStatus), Body: res.Body}, nil
}

// EngineMetrics implements the RPC of the same name.
func (s *server) EngineMetrics(ctx context.Context, _ *ttftlabv1.EngineMetricsRequest) (*ttftlabv1.EngineMetricsResponse, error) {
	m, t, err := s.node.EngineMetrics(ctx)
	if err != nil {
		return nil, toStatus(err)
	}
	return &ttftlabv1.EngineMetricsResponse{UnixNano: t.UnixNano(), Metrics: m}, nil
}

// StreamSamples forwards the node's samples. The node samples at its own
// interval; a longer interval_ms thins the stream to about that period, a
// shorter one gets the node's rate.
func (s *server) StreamSamples(req *ttftlabv1.StreamSamplesRequest, stream grpc.ServerStreamingServer[ttftlabv1.StreamSamplesResponse]) error {
	ms := req.GetIntervalMs()
	if ms < 0 || ms > maxMillis {
		return status.Errorf(codes.InvalidArgument, "interval_ms %d is out of range; use 0 for 100 ms, or up to %d", ms, maxMillis)
	}
	want := time.Duration(ms) * time.Millisecond
	if want == 0 {
		want = 100 * time.Millisecond
	}
	// Accept a sample a little early so that jitter does not halve the rate.
	slack := s.node.SampleInterval() / 2
	ch, cancel := s.node.Subscribe()
	defer cancel()
	exits, cancelExits := s.node.SubscribeExits()
	defer cancelExits()
	ctx := stream.Context()
	var last time.Duration
	var pending map[string]float64
	sent := false
	for {
		select {
		case <-ctx.Done():
			return nil
		case ex := <-exits:
			// Sent at once, ahead of any sample: the coordinator fails the
			// run on it.
			if err := stream.Send(&ttftlabv1.StreamSamplesResponse{EngineExit: exitToPB(ex)}); err != nil {
				return err
			}
		case smp, ok := <-ch:
			if !ok {
				return status.Error(codes.Unavailable, "gpunode is shutting down")
			}
			if sent && smp.Mono-last < want-slack {
				// Keep a skipped sample's /metrics scrape for the next one sent.
				if smp.EngineMetrics != nil {
					pending = smp.EngineMetrics
				}
				continue
			}
			if smp.EngineMetrics == nil && pending != nil {
				smp.EngineMetrics = pending
			}
			pending = nil
			if err := stream.Send(&ttftlabv1.StreamSamplesResponse{Sample: sampleToPB(smp)}); err != nil {
				return err
			}
			last, sent = smp.Mono, true
		}
	}
}

func exitToPB(ex Exit) *ttftlabv1.EngineExit {
	return &ttftlabv1.EngineExit{
		UnixNano: ex.Time.UnixNano(),
		Pid:      int32(ex.PID),
		ExitCode: int32(ex.ExitCode),
		Signal:   ex.Signal,
		Status:   ex.Status,
		LogTail:  ex.LogTail,
		UptimeMs: ex.Uptime.Milliseconds(),
	}
}

func optBool(v ttftlabv1.OptionalBool, field string) (*bool, error) {
	switch v {
	case ttftlabv1.OptionalBool_OPTIONAL_BOOL_UNSPECIFIED:
		return nil, nil
	case ttftlabv1.OptionalBool_OPTIONAL_BOOL_TRUE:
		return new(true), nil
	case ttftlabv1.OptionalBool_OPTIONAL_BOOL_FALSE:
		return new(false), nil
	default:
		return nil, &KnobError{Field: field, Value: v.String(), Fix: "use OPTIONAL_BOOL_TRUE, OPTIONAL_BOOL_FALSE or leave it unset"}
	}
}

func knobsFromPB(k *ttftlabv1.EngineKnobs) (Knobs, error) {
	out := Knobs{
		Model:                k.GetModel(),
		ServedModelName:      k.GetServedModelName(),
		MaxModelLen:          int(k.GetMaxModelLen()),
		GPUMemoryUtilization: k.GetGpuMemoryUtilization(),
		MaxNumSeqs:           int(k.GetMaxNumSeqs()),
		MaxNumBatchedTokens:  int(k.GetMaxNumBatchedTokens()),
		GPU:                  k.GetGpu(),
	}
	var errs []error
	var err error
	out.EnforceEager, err = optBool(k.GetEnforceEager(), "enforce_eager")
	errs = append(errs, err)
	out.EnablePrefixCaching, err = optBool(k.GetEnablePrefixCaching(), "enable_prefix_caching")
	errs = append(errs, err)
	out.EnableChunkedPrefill, err = optBool(k.GetEnableChunkedPrefill(), "enable_chunked_prefill")
	errs = append(errs, err)
	return out, errors.Join(errs...)
}

func engineInfoToPB(e EngineInfo) *ttftlabv1.EngineInfo {
	out := &ttftlabv1.EngineInfo{
		BaseUrl:         e.BaseURL,
		ServedModelName: e.ServedModelName,
		Model:           e.Model,
		Kind:            e.Kind,
		Version:         e.Version,
		Argv:            e.Argv,
		Pid:             int32(e.PID),
		SpawnUnixNano:   e.Spawn.UnixNano(),
		ReadyUnixNano:   e.Ready.UnixNano(),
		ReadyS:          e.ReadyDuration.Seconds(),
		LogTail:         e.LogTail,
		Simulated:       e.Simulated,
	}
	for _, p := range e.Phases {
		out.Phases = append(out.Phases, phaseToPB(p))
	}
	for _, p := range e.Timeline {
		out.Timeline = append(out.Timeline, phaseToPB(p))
	}
	out.ColdMode = e.ColdMode
	out.StartReads = e.Reads.toPB()
	f := e.Figures
	out.Figures = &ttftlabv1.EngineFigures{
		WeightsLoadS:         f.WeightsLoadS,
		ModelLoadGib:         f.ModelLoadGiB,
		ModelLoadS:           f.ModelLoadS,
		CompileS:             f.CompileS,
		GraphCaptureS:        f.GraphCaptureS,
		GraphCaptureGib:      f.GraphCaptureGiB,
		KvCacheTokens:        f.KVCacheTokens,
		MaxConcurrency:       f.MaxConcurrency,
		MaxConcurrencyTokens: f.MaxConcurrencyTokens,
		EngineInitS:          f.EngineInitS,
		FirstToReadyS:        f.FirstToReadyS,
		AvailableKvGib:       f.AvailableKVGiB,
	}
	return out
}

func phaseToPB(p vllmlog.Phase) *ttftlabv1.Phase {
	return &ttftlabv1.Phase{
		Name:      p.Name,
		StartS:    p.Start.Seconds(),
		EndS:      p.End.Seconds(),
		DurationS: p.Duration.Seconds(),
		Source:    p.Source,
		Detail:    p.Detail,
	}
}

func sampleToPB(s Sample) *ttftlabv1.HostSample {
	out := &ttftlabv1.HostSample{
		Seq:               s.Seq,
		UnixNano:          s.Time.UnixNano(),
		MonoNs:            int64(s.Mono),
		NvmlError:         s.NVMLError,
		EngineCpuPercent:  s.EngineCPUPercent,
		EngineRssBytes:    s.EngineRSSBytes,
		HostCpuPercent:    s.HostCPUPercent,
		MemAvailableBytes: s.MemAvailableBytes,
		PageCacheBytes:    s.PageCacheBytes,
		DirtyBytes:        s.DirtyBytes,
		EngineReadBytes:   s.EngineReadBytes,
		DiskReadBytes:     s.DiskReadBytes,
		EngineMetrics:     s.EngineMetrics,
	}
	for _, g := range s.GPUs {
		gs := &ttftlabv1.GPUSample{
			Index:            int32(g.Index),
			MemoryUsedBytes:  g.MemoryUsedBytes,
			MemoryTotalBytes: g.MemoryTotalBytes,
			GpuUtilPercent:   g.GPUUtilPercent,
			MemUtilPercent:   g.MemUtilPercent,
			PowerMw:          g.PowerMilliwatts,
			EnergyMj:         g.EnergyMillijoules,
			SmClockMhz:       g.SMClockMHz,
			PcieTxKbps:       g.PCIeTXKBps,
			PcieRxKbps:       g.PCIeRXKBps,
			ThrottleReasons:  g.ThrottleReasons,
		}
		for _, p := range g.Processes {
			gs.Processes = append(gs.Processes, &ttftlabv1.GPUProcess{Pid: p.PID, UsedMemoryBytes: p.UsedMemoryBytes})
		}
		out.Gpus = append(out.Gpus, gs)
	}
	return out
}

// toStatus maps a domain error to a gRPC status. Engine failures carry the
// exit status and the log tail in the message.
func toStatus(err error) error {
	var (
		knobErr *KnobError
		exitErr *ExitError
		toErr   *ReadyTimeoutError
		portErr *PortInUseError
	)
	switch {
	case err == nil:
		return nil
	case errors.As(err, &knobErr), errors.Is(err, ErrInvalidArgument), errors.Is(err, ErrUnknownProfile):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, ErrNotImplemented):
		return status.Error(codes.Unimplemented, err.Error())
	case errors.As(err, &portErr), errors.Is(err, ErrFailedPrecondition), errors.Is(err, exec.ErrNotFound), errors.Is(err, fs.ErrNotExist), errors.Is(err, fs.ErrPermission):
		// The engine cannot be started here: its port is taken or its
		// executable is missing.
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.As(err, &exitErr):
		return status.Error(codes.Aborted, err.Error())
	case errors.As(err, &toErr):
		return status.Error(codes.DeadlineExceeded, err.Error())
	case errors.Is(err, ErrClosed):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	default:
		return status.Error(codes.Internal, err.Error())
	}
}
