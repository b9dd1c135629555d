package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

// gridCLI holds the flags every restart-grid experiment command (kvscale,
// prefix, presets) shares.
type gridCLI struct {
	cf            coordinatorFlags
	out, runID    string
	agents        int
	quiet         bool
	progress      progressMode
	startupScale  float64
	gpunodeConfig string
}

// gridRun is what differs between the grid experiment commands.
type gridRun struct {
	name   string // the command, for messages: "kvscale"
	report string // the Markdown report printed at the end
	knobs  *pb.EngineKnobs
	// profile is the engine profile, for the in-process banner.
	profile string
	// simArgs are extra flags of the in-process simulator.
	simArgs []string
	// setOutDir sets the request's out_dir (with --coordinator).
	setOutDir func(string)
	// start sends the request and returns its event stream.
	start func(context.Context, pb.CoordinatorServiceClient) (func() (*pb.RunEvent, error), error)
}

// run runs a grid experiment in-process on the embedded defaults, or on a
// running cluster with --coordinator, follows its events, prints its
// report, and fails when results.json says the run failed.
func (g gridCLI) run(ctx context.Context, r gridRun, stdout, stderr io.Writer) error {
	var client pb.CoordinatorServiceClient
	var lc *localCluster
	if g.cf.addr != "" {
		cl, closer, err := g.cf.dial(ctx)
		if err != nil {
			return err
		}
		defer closer.Close()
		client = cl
		outDir := g.out
		if outDir == "results" {
			outDir = "" // the default: the coordinator's own --out
		}
		r.setOutDir(outDir)
	} else {
		logger := newLogger(io.Discard, false)
		if os.Getenv("TTFTLAB_DEBUG") != "" {
			logger = newLogger(stderr, true)
		}
		simArgs := r.simArgs
		if g.startupScale != 1 {
			simArgs = append(simArgs, "--startup-scale", strconv.FormatFloat(g.startupScale, 'g', -1, 64))
		}
		var err error
		lc, err = startLocalCluster(ctx, localClusterConfig{out: g.out, agents: g.agents, gpunodeConfig: g.gpunodeConfig, simArgs: simArgs, logger: logger})
		if err != nil {
			return err
		}
		defer lc.Close()
		client = lc.client
		fmt.Fprintf(stderr, "ttftlab %s: in-process coordinator %s, gpunode, %d agent(s); profile %s, model %s, GPU %s\n",
			r.name, lc.addr, g.agents, r.profile, r.knobs.GetModel(), r.knobs.GetGpu())
	}
	recv, err := r.start(ctx, client)
	if err != nil {
		return fmt.Errorf("start %s: %w", r.name, err)
	}
	var t runTally
	runID := g.runID
	dir, err := followEvents(func() (*pb.RunEvent, error) {
		ev, err := recv()
		if ev.GetKind() == results.EventGridStart {
			var d struct {
				RunID string `json:"run_id"`
			}
			if json.Unmarshal([]byte(ev.GetJson()), &d) == nil {
				runID = d.RunID
			}
		}
		return ev, err
	}, withRunProgress(stderr, g.progress), &t)
	if err != nil {
		if lc != nil && runID != "" {
			// In-process, an interrupted run would exit before the
			// coordinator renders it: stop the cluster, then render what
			// was measured from events.jsonl.
			lc.Close()
			rdir := filepath.Join(g.out, runID)
			if _, rerr := results.RenderDir(rdir); rerr == nil {
				fmt.Fprintf(stderr, "rendered what was measured in %s\n", rdir)
			}
		}
		return fmt.Errorf("%s: %w", r.name, err)
	}
	if err := printReport(stdout, stderr, dir, r.report, g.quiet); err != nil {
		return err
	}
	// A run can end without an error and still have failed a step (no
	// request succeeded): results.json's status says so.
	if b, err := os.ReadFile(filepath.Join(dir, results.ResultsFile)); err == nil {
		var res struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		if json.Unmarshal(b, &res) == nil && res.Status != "ok" {
			return fmt.Errorf("%s %s: %s (results in %s)", r.name, res.Status, res.Error, dir)
		}
	}
	return nil
}
