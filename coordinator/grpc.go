package coordinator

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// GRPCDialer implements Dialer over gRPC. Plaintext is used only for
// loopback addresses unless Insecure is set; TLS arrives with `ttftlab certs`.
type GRPCDialer struct {
	// Insecure allows plaintext to non-loopback addresses.
	Insecure bool
	// Token, when set, is sent as a bearer token.
	Token string
	// TLS, when set, secures every connection (mutual TLS with a lab CA).
	TLS *tls.Config
}

var _ Dialer = GRPCDialer{}

func (d GRPCDialer) dial(addr string) (*grpc.ClientConn, error) {
	creds := insecure.NewCredentials()
	if d.TLS != nil {
		creds = credentials.NewTLS(d.TLS)
	} else if err := CheckPlaintext(addr, d.Insecure); err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(creds),
		// Detect a vanished agent or gpunode within ~2 s, even without an RST.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: time.Second, Timeout: time.Second, PermitWithoutStream: true}),
	}
	if d.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(bearer(d.Token)))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", addr, err)
	}
	cc.Connect() // start connecting now, not at the first RPC
	return cc, nil
}

type bearer string

func (b bearer) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer " + string(b)}, nil
}
func (bearer) RequireTransportSecurity() bool { return false }

// GPUNode connects to a gpunode.
func (d GRPCDialer) GPUNode(_ context.Context, addr string) (GPUNode, io.Closer, error) {
	cc, err := d.dial(addr)
	if err != nil {
		return nil, nil, err
	}
	return GPUNodeClient{C: pb.NewGPUNodeServiceClient(cc)}, cc, nil
}

// Agent connects to an agent.
func (d GRPCDialer) Agent(_ context.Context, addr string) (Agent, io.Closer, error) {
	cc, err := d.dial(addr)
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
