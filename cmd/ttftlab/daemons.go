package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/ttftlab/ttftlab/agent"
	"github.com/ttftlab/ttftlab/coordinator"
	"github.com/ttftlab/ttftlab/coordinator/results"
	"github.com/ttftlab/ttftlab/gpunode"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/membership"
	"github.com/ttftlab/ttftlab/internal/metrics"
	"github.com/ttftlab/ttftlab/internal/node"
	"github.com/ttftlab/ttftlab/internal/sim"
)

func newLogger(w io.Writer, verbose bool) *slog.Logger {
	level := slog.LevelInfo
	if verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// serveUntilDone blocks until ctx ends or the gRPC server fails.
func serveUntilDone(ctx context.Context, s *node.Server, logger *slog.Logger) error {
	logger.Info("serving", "name", s.Name(), "grpc", s.Addr(), "gossip", s.Members().Addr())
	return s.Wait(ctx)
}

func runCoordinator(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("coordinator", stderr)
	var sc node.Config
	sc.RegisterFlags(fs, membership.RoleCoordinator)
	out := fs.String("out", "results", "directory for results/<run>/")
	verbose := fs.Bool("v", false, "debug logging")
	metricsAddr := metricsAddrFlag(fs)
	httpAddr := httpAddrFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkMetricsAddr(*metricsAddr); err != nil {
		return err
	}
	if err := sc.Load(); err != nil {
		return err
	}
	logger := newLogger(stderr, *verbose)
	cfg := coordinator.DefaultConfig()
	cfg.OutDir = *out
	if *httpAddr != "" {
		stop, err := startDashboard(*httpAddr, *out, sc.Token, sc.ServerTLS, &cfg, stderr, logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	var c *coordinator.Coordinator
	var mem memberView
	if *metricsAddr != "" {
		obs := metrics.NewCoordinator(metrics.CoordinatorOptions{Members: mem.Members})
		cfg.Observer = coordinator.Observers(cfg.Observer, obs)
		stop, err := serveMetrics(ctx, *metricsAddr, obs.Registry(), logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	s, err := node.Start(ctx, sc, membership.RoleCoordinator, func(r node.Registrar) {
		c = coordinator.New(cfg, &mem, coordinator.GRPCDialer{Options: sc.DialOptions()}, logger)
		pb.RegisterCoordinatorServiceServer(r, coordinator.NewServer(c))
	}, logger)
	if err != nil {
		return err
	}
	mem.set(s.Members())
	return serveUntilDone(ctx, s, logger)
}

// memberView defers to a membership node set after the gRPC server starts.
// It is safe for concurrent use: RPCs may read it while the node joins.
type memberView struct {
	n atomic.Pointer[membership.Node]
}

func (m *memberView) set(n *membership.Node) { m.n.Store(n) }

func (m *memberView) Members() []membership.Member {
	n := m.n.Load()
	if n == nil {
		return nil
	}
	return n.Members()
}

func (m *memberView) Changes() <-chan struct{} {
	n := m.n.Load()
	if n == nil {
		return nil
	}
	return n.Changes()
}

func runAgent(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("agent", stderr)
	var sc node.Config
	sc.RegisterFlags(fs, membership.RoleAgent)
	verbose := fs.Bool("v", false, "debug logging")
	var allow listFlag
	fs.Var(&allow, "allow-target", "also allow load on this host (repeatable); by default an agent loads only loopback and the hosts of the cluster's gpunodes")
	labels := labelsFlag{}
	fs.Var(labels, "label", "announce the label `k=v` (repeatable), for runs' --agents-selector; host is set from the host name")
	metricsAddr := metricsAddrFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkMetricsAddr(*metricsAddr); err != nil {
		return err
	}
	if err := sc.Load(); err != nil {
		return err
	}
	sc.Labels = agentLabels(labels)
	logger := newLogger(stderr, *verbose)
	var mem memberView
	cfg := agent.DefaultConfig()
	cfg.CheckTarget = targetPolicy(&mem, allow)
	if *metricsAddr != "" {
		obs := metrics.NewAgent()
		cfg.Observer = obs
		stop, err := serveMetrics(ctx, *metricsAddr, obs.Registry(), logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	a := agent.New(cfg, logger)
	s, err := node.Start(ctx, sc, membership.RoleAgent, func(r node.Registrar) {
		pb.RegisterAgentServiceServer(r, agent.NewServer(a))
	}, logger)
	if err != nil {
		return err
	}
	mem.set(s.Members())
	return serveUntilDone(ctx, s, logger)
}

func runGPUNode(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("gpunode", stderr)
	var sc node.Config
	sc.RegisterFlags(fs, membership.RoleGPUNode)
	logDir := fs.String("log-dir", "", "directory for engine logs (default: none kept on disk)")
	config := fs.String("config", "", "YAML `file` of engine profiles (default: the built-in sim and vllm profiles)")
	verbose := fs.Bool("v", false, "debug logging")
	labels := labelsFlag{}
	fs.Var(labels, "label", "announce the label `k=v` (repeatable), for runs' --selector; gpu, gpus, gpumem, driver and host are detected (NVML, or the sim profile's GPU) and a --label of the same key replaces them")
	metricsAddr := metricsAddrFlag(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if err := checkMetricsAddr(*metricsAddr); err != nil {
		return err
	}
	if err := sc.Load(); err != nil {
		return err
	}
	logger := newLogger(stderr, *verbose)
	n, err := newGPUNode(*config, *logDir, simTweaks{}, logger)
	if err != nil {
		return err
	}
	defer n.Close()
	if *metricsAddr != "" {
		info, err := n.Info(ctx)
		if err != nil {
			return err
		}
		stop, err := serveMetrics(ctx, *metricsAddr, metrics.NewGPUNode(info, n.LatestSample, n.EngineStatus).Registry(), logger)
		if err != nil {
			return err
		}
		defer stop()
	}
	sc.Labels = gpunodeLabels(n, labels)
	s, err := node.Start(ctx, sc, membership.RoleGPUNode, func(r node.Registrar) {
		pb.RegisterGPUNodeServiceServer(r, gpunode.NewServer(n))
	}, logger)
	if err != nil {
		return err
	}
	return serveUntilDone(ctx, s, logger)
}

// simTweaks configure the built-in sim profile of an in-process gpunode:
// extra arguments, its simulated GPU and its own state directory (empty
// keeps the profile's).
type simTweaks struct {
	args     []string
	gpu      string
	stateDir string
}

// newGPUNode builds a gpunode with the profiles of configPath, or the
// built-in sim and vllm profiles when it is empty; sim profiles re-execute
// this binary. tw holds local changes to the built-in sim profile.
func newGPUNode(configPath, logDir string, tw simTweaks, logger *slog.Logger) (*gpunode.Node, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable for the sim profile: %w", err)
	}
	cfg := gpunode.DefaultConfig()
	if configPath != "" {
		if cfg.Profiles, err = gpunode.LoadFile(configPath, exe); err != nil {
			return nil, err
		}
	} else {
		cfg.Profiles = gpunode.BuiltinProfiles(exe)
		p := cfg.Profiles["sim"]
		if len(tw.args) > 0 {
			p.Command = append(append([]string(nil), p.Command...), tw.args...)
		}
		if tw.gpu != "" {
			p.Defaults.GPU = tw.gpu
		}
		if tw.stateDir != "" {
			p.StateDir = tw.stateDir
		}
		cfg.Profiles["sim"] = p
	}
	cfg.LogDir = logDir
	cfg.SampleInterval = 100 * time.Millisecond
	cfg.SimGPUMemoryGiB = func(name string) (float64, bool) {
		g, err := sim.LookupGPU(name)
		return g.TotalGiB, err == nil
	}
	return gpunode.New(cfg, logger)
}

// gpunodeLabels are a gpunode's announced labels: what it detected, with
// the operator's --label flags on top.
func gpunodeLabels(n *gpunode.Node, operator map[string]string) map[string]string {
	l := n.Labels()
	maps.Copy(l, operator)
	return l
}

// agentLabels are an agent's announced labels: its host, with the
// operator's --label flags on top.
func agentLabels(operator map[string]string) map[string]string {
	l := map[string]string{}
	if h, _ := os.Hostname(); membership.SanitizeLabelValue(h) != "" {
		l[membership.LabelHost] = membership.SanitizeLabelValue(h)
	}
	maps.Copy(l, operator)
	return l
}

func runReport(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("report", stderr)
	var ef sweepExportFlags
	ef.register(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("report takes one run directory (results/<run>), got %d arguments", fs.NArg())
	}
	dir := fs.Arg(0)
	set := setFlags(fs)
	if ef.detailed {
		return errors.New("--save-detailed cannot be rebuilt: the per-request arrays (ttfts, itls, input_lens, ...) never reach events.jsonl, which holds the agents' histograms and exact sums; leave it out")
	}
	if ef.dir == "" {
		for _, name := range []string{"metric-percentiles", "percentile-metrics", "result-label"} {
			if set[name] {
				return fmt.Errorf("--%s shapes the --save-result files: add --save-result DIR", name)
			}
		}
	}
	opts, err := ef.options()
	if err != nil {
		return err
	}
	if _, err := results.RenderDir(dir); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "rendered results.json and the reports in %s\n", dir)
	// A sweep's run directory always holds save_result/ with vLLM's
	// default options, as the coordinator wrote it; a client's
	// --save-result copy (its own options, on its own disk) is not
	// recorded in the run, so it is rebuilt only when asked, here.
	written, err := results.ExportSweepDir(dir, "", results.ExportOptions{})
	if err != nil {
		return fmt.Errorf("rebuild %s: %w", results.SaveResultDir, err)
	}
	if len(written) > 0 {
		fmt.Fprintf(stdout, "rebuilt %d vLLM --save-result files (default options) in %s\n", len(written), filepath.Join(dir, results.SaveResultDir))
	}
	if ef.dir != "" {
		w, err := results.ExportSweepDir(dir, ef.dir, opts)
		if err != nil {
			return fmt.Errorf("--save-result: %w", err)
		}
		if len(w) == 0 {
			return fmt.Errorf("--save-result %s: %s is not a sweep's run (no sweep_start, or a restart grid or fleet): only sweeps have vLLM --save-result files; ttftlab load writes its own at the end of the run", ef.dir, dir)
		}
		fmt.Fprintf(stdout, "wrote %d vLLM --save-result files in %s\n", len(w), ef.dir)
	}
	return nil
}

// listFlag collects a repeated string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// targetPolicy is an agent's allow-list: loopback, the hosts of the alive
// gpunodes (the engines they announce run there), and the hosts given with
// --allow-target. Anything else is refused, so that an agent cannot be
// pointed at someone else's server.
func targetPolicy(members interface{ Members() []membership.Member }, allow []string) func(string) error {
	return func(baseURL string) error {
		u, err := url.Parse(baseURL)
		if err != nil || u.Hostname() == "" {
			return fmt.Errorf("target %q is not a URL with a host", baseURL)
		}
		host := u.Hostname()
		if host == "localhost" {
			return nil
		}
		if ip := net.ParseIP(host); ip != nil && ip.IsLoopback() {
			return nil
		}
		for _, a := range allow {
			if strings.EqualFold(a, host) {
				return nil
			}
		}
		for _, m := range membership.ByRole(members.Members(), membership.RoleGPUNode) {
			if h, _, err := net.SplitHostPort(m.GRPCAddr); err == nil && strings.EqualFold(h, host) {
				return nil
			}
		}
		return fmt.Errorf("target host %s is neither loopback nor a gpunode of this cluster: start the agent with --allow-target %s to allow it", host, host)
	}
}
