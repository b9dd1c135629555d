package coordinator

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Server adapts a Coordinator to the generated CoordinatorService.
type Server struct {
	pb.UnimplementedCoordinatorServiceServer
	c *Coordinator
}

// NewServer returns the gRPC adapter.
func NewServer(c *Coordinator) *Server { return &Server{c: c} }

// ListMembers implements CoordinatorService.
func (s *Server) ListMembers(context.Context, *pb.ListMembersRequest) (*pb.ListMembersResponse, error) {
	resp := &pb.ListMembersResponse{}
	for _, m := range s.c.Members() {
		resp.Members = append(resp.Members, &pb.Member{Name: m.Name, Role: string(m.Role), GrpcAddr: m.GRPCAddr, State: m.State, ProtocolVersion: m.Version, Labels: m.Labels})
	}
	return resp, nil
}

// ListRuns implements CoordinatorService.
func (s *Server) ListRuns(context.Context, *pb.ListRunsRequest) (*pb.ListRunsResponse, error) {
	resp := &pb.ListRunsResponse{}
	for _, r := range s.c.Runs() {
		resp.Runs = append(resp.Runs, RunInfoProto(r))
	}
	return resp, nil
}

// RunBaseline implements CoordinatorService.
func (s *Server) RunBaseline(req *pb.RunBaselineRequest, st grpc.ServerStreamingServer[pb.RunBaselineResponse]) error {
	spec := BaselineSpecFromProto(req)
	if err := spec.withDefaults().Validate(); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	send := func(ev *pb.RunEvent) error { return st.Send(&pb.RunBaselineResponse{Event: ev}) }
	return streamRun(st.Context(), "run", send, func(ctx context.Context, emit func(results.Event)) (RunResult, error) {
		return s.c.RunBaseline(ctx, spec, emit)
	})
}

// RunSweep implements CoordinatorService.
func (s *Server) RunSweep(req *pb.RunSweepRequest, st grpc.ServerStreamingServer[pb.RunSweepResponse]) error {
	spec := SweepSpecFromProto(req)
	if err := spec.withDefaults().Validate(); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	send := func(ev *pb.RunEvent) error { return st.Send(&pb.RunSweepResponse{Event: ev}) }
	return streamRun(st.Context(), "sweep", send, func(ctx context.Context, emit func(results.Event)) (RunResult, error) {
		return s.c.RunSweep(ctx, spec, emit)
	})
}

// RunKVScale implements CoordinatorService.
func (s *Server) RunKVScale(req *pb.RunKVScaleRequest, st grpc.ServerStreamingServer[pb.RunKVScaleResponse]) error {
	spec := KVScaleSpecFromProto(req)
	if err := spec.withDefaults().Validate(); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	send := func(ev *pb.RunEvent) error { return st.Send(&pb.RunKVScaleResponse{Event: ev}) }
	return streamRun(st.Context(), "kvscale", send, func(ctx context.Context, emit func(results.Event)) (RunResult, error) {
		return s.c.RunKVScale(ctx, spec, emit)
	})
}

// RunPrefix implements CoordinatorService.
func (s *Server) RunPrefix(req *pb.RunPrefixRequest, st grpc.ServerStreamingServer[pb.RunPrefixResponse]) error {
	spec := PrefixSpecFromProto(req)
	if err := spec.withDefaults().Validate(); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	send := func(ev *pb.RunEvent) error { return st.Send(&pb.RunPrefixResponse{Event: ev}) }
	return streamRun(st.Context(), "prefix", send, func(ctx context.Context, emit func(results.Event)) (RunResult, error) {
		return s.c.RunPrefix(ctx, spec, emit)
	})
}

// RunPresets implements CoordinatorService.
func (s *Server) RunPresets(req *pb.RunPresetsRequest, st grpc.ServerStreamingServer[pb.RunPresetsResponse]) error {
	spec := PresetsSpecFromProto(req)
	if err := spec.withDefaults().Validate(); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	send := func(ev *pb.RunEvent) error { return st.Send(&pb.RunPresetsResponse{Event: ev}) }
	return streamRun(st.Context(), "presets", send, func(ctx context.Context, emit func(results.Event)) (RunResult, error) {
		return s.c.RunPresets(ctx, spec, emit)
	})
}

// streamRun runs one experiment for a streaming RPC: it forwards every
// event through send, maps the run's error to a status code (Canceled, or
// FailedPrecondition before a results directory exists, else Aborted naming
// the directory), and ends the stream with a "done" event naming it.
func streamRun(ctx context.Context, what string, send func(*pb.RunEvent) error, run func(context.Context, func(results.Event)) (RunResult, error)) error {
	w := newWatcher(send)
	res, err := run(ctx, w.emit)
	w.close()
	if err != nil {
		if errors.Is(err, context.Canceled) {
			return status.Error(codes.Canceled, err.Error())
		}
		if res.Dir == "" {
			return status.Error(codes.FailedPrecondition, err.Error())
		}
		return status.Errorf(codes.Aborted, "%s %s: %v (results so far are in %s)", what, res.RunID, err, res.Dir)
	}
	return send(&pb.RunEvent{RunId: res.RunID, Kind: "done", Message: res.Dir})
}

// watchBuffer is how many events may wait for a slow watcher: a sweep's
// burst of interval reports fits; a watcher further behind misses events
// (all of them are in events.jsonl) rather than stalling the run.
const watchBuffer = 256

// watcher forwards a run's events to one gRPC stream from its own
// goroutine, so that a client that stops reading can never block the
// recording of the run (and through it the agents' report streams).
type watcher struct {
	ch      chan *pb.RunEvent
	dropped atomic.Int64
	done    chan struct{}
	send    func(*pb.RunEvent) error
}

func newWatcher(send func(*pb.RunEvent) error) *watcher {
	w := &watcher{ch: make(chan *pb.RunEvent, watchBuffer), done: make(chan struct{}), send: send}
	go w.loop()
	return w
}

func (w *watcher) loop() {
	defer close(w.done)
	var err error
	for ev := range w.ch {
		if err == nil {
			err = w.send(ev)
		}
	}
	if n := w.dropped.Load(); n > 0 && err == nil {
		msg := fmt.Sprintf("this watcher fell behind and missed %d events; events.jsonl has them all", n)
		_ = w.send(&pb.RunEvent{Kind: results.EventWarning, Json: fmt.Sprintf(`{"message":%q}`, msg)})
	}
}

// emit queues an event without blocking.
func (w *watcher) emit(ev results.Event) {
	select {
	case w.ch <- &pb.RunEvent{UnixNano: ev.T, Kind: ev.Kind, Json: string(ev.Data)}:
	default:
		w.dropped.Add(1)
	}
}

// close waits until the queued events are sent (or the stream failed).
func (w *watcher) close() {
	close(w.ch)
	<-w.done
}
