package coordinator

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/node"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// GRPCDialer implements Dialer over gRPC, through node.Dial: plaintext
// only to loopback addresses unless Options.Insecure is set, the bearer
// token with every call, and mutual TLS when Options.TLS is set.
type GRPCDialer struct {
	Options node.DialOptions
}

var _ Dialer = GRPCDialer{}

// GPUNode connects to a gpunode.
func (d GRPCDialer) GPUNode(ctx context.Context, addr string) (GPUNode, io.Closer, error) {
	cc, err := node.Dial(ctx, addr, d.Options)
	if err != nil {
		return nil, nil, err
	}
	return GPUNodeClient{C: pb.NewGPUNodeServiceClient(cc)}, cc, nil
}

// Agent connects to an agent.
func (d GRPCDialer) Agent(ctx context.Context, addr string) (Agent, io.Closer, error) {
	cc, err := node.Dial(ctx, addr, d.Options)
	if err != nil {
		return nil, nil, err
	}
	return AgentClient{C: pb.NewAgentServiceClient(cc)}, cc, nil
}

// GPUNodeClient adapts the generated client to GPUNode.
type GPUNodeClient struct{ C pb.GPUNodeServiceClient }

// Info implements GPUNode.
func (g GPUNodeClient) Info(ctx context.Context) (*pb.InfoResponse, error) {
	return g.C.Info(ctx, &pb.InfoRequest{})
}

// StartEngine implements GPUNode.
func (g GPUNodeClient) StartEngine(ctx context.Context, req *pb.StartEngineRequest) (*pb.EngineInfo, error) {
	resp, err := g.C.StartEngine(ctx, req)
	if err != nil {
		return nil, err
	}
	return resp.GetEngine(), nil
}

// StopEngine implements GPUNode.
func (g GPUNodeClient) StopEngine(ctx context.Context, req *pb.StopEngineRequest) (*pb.StopEngineResponse, error) {
	return g.C.StopEngine(ctx, req)
}

// ResetPrefixCache implements PrefixCacheNode.
func (g GPUNodeClient) ResetPrefixCache(ctx context.Context) (*pb.ResetPrefixCacheResponse, error) {
	return g.C.ResetPrefixCache(ctx, &pb.ResetPrefixCacheRequest{})
}

// EngineMetrics implements PrefixCacheNode.
func (g GPUNodeClient) EngineMetrics(ctx context.Context) (map[string]float64, error) {
	resp, err := g.C.EngineMetrics(ctx, &pb.EngineMetricsRequest{})
	if err != nil {
		return nil, err
	}
	return resp.GetMetrics(), nil
}

// StreamSamples implements GPUNode.
func (g GPUNodeClient) StreamSamples(ctx context.Context, interval time.Duration, fn func(*pb.StreamSamplesResponse)) error {
	st, err := g.C.StreamSamples(ctx, &pb.StreamSamplesRequest{IntervalMs: interval.Milliseconds()})
	if err != nil {
		return err
	}
	for {
		m, err := st.Recv()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if err := validateSamplesResponse(m); err != nil {
			return err
		}
		fn(m)
	}
}

// AgentClient adapts the generated client to Agent.
type AgentClient struct{ C pb.AgentServiceClient }

// RunProbe implements Agent.
func (a AgentClient) RunProbe(ctx context.Context, req *pb.RunProbeRequest, fn func(*pb.RunProbeResponse) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the agent's lease if we stop reading early.
	st, err := a.C.RunProbe(ctx, req)
	if err != nil {
		return rejection(err)
	}
	sawFinal := false
	for {
		m, err := st.Recv()
		if err != nil {
			err = rejection(err)
			if errors.Is(err, io.EOF) {
				if !sawFinal {
					return errors.New("agent closed the stream without a final report")
				}
				return nil
			}
			return err
		}
		if err := validateProbeResponse(m); err != nil {
			return err
		}
		sawFinal = sawFinal || m.GetReport().GetFinal()
		if err := fn(m); err != nil {
			return err
		}
	}
}

// rejection marks an agent's refusal of a plan, as opposed to a lost agent.
func rejection(err error) error {
	switch status.Code(err) {
	case codes.InvalidArgument, codes.PermissionDenied, codes.FailedPrecondition, codes.Unimplemented, codes.Unauthenticated:
		return fmt.Errorf("%w: %v", ErrAgentRejected, status.Convert(err).Message())
	}
	return err
}
