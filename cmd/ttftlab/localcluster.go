package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
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
	// gpunodes is how many gpunodes to start, 0 or 1 meaning one; more
	// make a simulated fleet of different nodes (fleetSimNode).
	gpunodes int
	logger   *slog.Logger
	// httpAddr, when set, serves the live dashboard there (with the
	// cluster's token); its URL is printed to stderr.
	httpAddr string
	stderr   io.Writer
}

// fleetSimNode is the simulated hardware of node i (1-based) of a local
// fleet of more than one gpunode, so that a fleet baseline has something
// to find: node 1 is the reference (the sim's H200 and 1.5 GB/s disk);
// node 2 has a slow disk (0.3 GB/s, a fifth of the reference); node 3 has
// an L40S instead of an H200; any further node is like node 1.
func fleetSimNode(i int) (gpu string, args []string, desc string) {
	switch i {
	case 2:
		return "", []string{"--disk-read-gbps", "0.3"}, "slow disk (0.3 GB/s)"
	case 3:
		return "l40s", nil, "L40S GPU"
	}
	return "", nil, "reference (H200, 1.5 GB/s disk)"
}

// stopCloser calls a stop function on Close.
type stopCloser func()

func (s stopCloser) Close() error { s(); return nil }

// dirCloser removes a directory on Close.
type dirCloser string

func (d dirCloser) Close() error { return os.RemoveAll(string(d)) }

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
	base := node.Config{GRPCAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", GossipKey: node.NewGossipKey(), Fast: true, InProcess: true, Token: token}

	ccfg := coordinator.DefaultConfig()
	ccfg.OutDir = cfg.out
	ccfg.DiscoveryTimeout = 20 * time.Second
	// Every member lives in this process: an agent cannot freeze alone, so
	// a long silence limit only keeps a starved host's own scheduling
	// delays from being taken for frozen agents.
	ccfg.AgentSilence = 10 * time.Second
	if cfg.httpAddr != "" {
		stop, err := startDashboard(cfg.httpAddr, cfg.out, token, nil, &ccfg, cfg.stderr, logger)
		if err != nil {
			return lc, err
		}
		lc.closers = append(lc.closers, stopCloser(stop))
	}
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

	for i := 1; i <= max(cfg.gpunodes, 1); i++ {
		name := fmt.Sprintf("gpunode-%d", i)
		logDir := filepath.Join(cfg.out, "engine-logs")
		tw := simTweaks{args: cfg.simArgs}
		if cfg.gpunodes > 1 {
			// Each node of a fleet is its own machine: its own engine logs,
			// and its own simulated page cache and compile cache, fresh
			// like a machine just booted.
			logDir = filepath.Join(logDir, name)
			var extra []string
			tw.gpu, extra, _ = fleetSimNode(i)
			tw.args = append(slices.Clone(cfg.simArgs), extra...)
			if tw.stateDir, err = os.MkdirTemp("", "ttftlab-sim-"+name+"-"); err != nil {
				return lc, fmt.Errorf("start %s: simulated cache directory: %w", name, err)
			}
			lc.closers = append(lc.closers, dirCloser(tw.stateDir))
		}
		gn, err := newGPUNode(cfg.gpunodeConfig, logDir, tw, logger)
		if err != nil {
			return lc, fmt.Errorf("start %s: %w", name, err)
		}
		lc.closers = append(lc.closers, gn)
		gsc := base
		gsc.Name, gsc.Join = name, join
		gsc.Labels = gpunodeLabels(gn, nil)
		gsvc, err := node.Start(ctx, gsc, membership.RoleGPUNode, func(r node.Registrar) {
			pb.RegisterGPUNodeServiceServer(r, gpunode.NewServer(gn))
		}, logger)
		if err != nil {
			return lc, fmt.Errorf("start %s: %w", name, err)
		}
		lc.closers = append(lc.closers, gsvc)
	}

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
