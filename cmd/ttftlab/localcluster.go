package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"time"

	"github.com/ttftlab/ttftlab/agent"
	"github.com/ttftlab/ttftlab/coordinator"
	"github.com/ttftlab/ttftlab/gpunode"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/membership"
	"github.com/ttftlab/ttftlab/internal/node"
)

// localClusterConfig configures an in-process cluster: a coordinator, one
// gpunode and agents, joined over loopback, as `ttftlab up` runs them.
type localClusterConfig struct {
	out           string
	agents        int
	gpunodeConfig string
	simArgs       []string
	logger        *slog.Logger
}

// localCluster is a running in-process cluster and a client of its
// coordinator. Close stops every member and waits for them.
type localCluster struct {
	addr    string
	client  pb.CoordinatorServiceClient
	closers []io.Closer
	once    sync.Once
	err     error
}

// Close stops the members in the reverse order of their start; later calls
// return the first call's result.
func (lc *localCluster) Close() error {
	lc.once.Do(func() {
		var errs []error
		for i := len(lc.closers) - 1; i >= 0; i-- {
			errs = append(errs, lc.closers[i].Close())
		}
		lc.err = errors.Join(errs...)
	})
	return lc.err
}

// startLocalCluster starts a coordinator (writing under cfg.out), a gpunode
// (engine logs in cfg.out/engine-logs) and cfg.agents agents in this
// process, and dials the coordinator through its own gRPC API, as a remote
// CLI would.
func startLocalCluster(ctx context.Context, cfg localClusterConfig) (lc *localCluster, err error) {
	lc = &localCluster{}
	defer func() {
		if err != nil {
			lc.Close()
		}
	}()
	logger := cfg.logger
	token := node.NewToken()
	base := node.Config{GRPCAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", GossipKey: node.NewGossipKey(), Fast: true, Token: token}

	ccfg := coordinator.DefaultConfig()
	ccfg.OutDir = cfg.out
	ccfg.DiscoveryTimeout = 20 * time.Second
	var mem memberView
	csc := base
	csc.Name = "coordinator"
	cs, err := node.Start(ctx, csc, membership.RoleCoordinator, func(r node.Registrar) {
		c := coordinator.New(ccfg, &mem, coordinator.GRPCDialer{Options: csc.DialOptions()}, logger)
		pb.RegisterCoordinatorServiceServer(r, coordinator.NewServer(c))
	}, logger)
	if err != nil {
		return lc, fmt.Errorf("start coordinator: %w", err)
	}
	lc.closers = append(lc.closers, cs)
	mem.set(cs.Members())
	join := cs.Members().Addr()
	lc.addr = cs.Addr()

	gn, err := newGPUNode(cfg.gpunodeConfig, filepath.Join(cfg.out, "engine-logs"), cfg.simArgs, logger)
	if err != nil {
		return lc, fmt.Errorf("start gpunode: %w", err)
	}
	lc.closers = append(lc.closers, gn)
	gsc := base
	gsc.Name, gsc.Join = "gpunode-1", join
	gsc.Labels = gpunodeLabels(gn, nil)
	gsvc, err := node.Start(ctx, gsc, membership.RoleGPUNode, func(r node.Registrar) {
		pb.RegisterGPUNodeServiceServer(r, gpunode.NewServer(gn))
	}, logger)
	if err != nil {
		return lc, fmt.Errorf("start gpunode: %w", err)
	}
	lc.closers = append(lc.closers, gsvc)

	for i := 1; i <= cfg.agents; i++ {
		a := agent.New(agent.DefaultConfig(), logger)
		asc := base
		asc.Name, asc.Join = fmt.Sprintf("agent-%d", i), join
		asc.Labels = agentLabels(nil)
		as, err := node.Start(ctx, asc, membership.RoleAgent, func(r node.Registrar) {
			pb.RegisterAgentServiceServer(r, agent.NewServer(a))
		}, logger)
		if err != nil {
			return lc, fmt.Errorf("start agent %d: %w", i, err)
		}
		lc.closers = append(lc.closers, as)
	}

	cc, err := node.Dial(ctx, cs.Addr(), node.DialOptions{Token: token})
	if err != nil {
		return lc, fmt.Errorf("connect to coordinator: %w", err)
	}
	lc.closers = append(lc.closers, cc)
	lc.client = pb.NewCoordinatorServiceClient(cc)
	return lc, nil
}
