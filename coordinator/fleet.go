package coordinator

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	"github.com/ttftlab/ttftlab/internal/membership"
	"github.com/ttftlab/ttftlab/internal/specerr"
)

// FleetSpec configures a fleet baseline: the cold/warm baseline on every
// gpunode its selection matches, one node after another, compared in
// fleet.md.
type FleetSpec struct {
	// Baseline is each node's baseline. Its RunID and OutDir are the
	// fleet's (each node's run is nodes/<gpunode>/ inside it); its Selection
	// picks the nodes: every gpunode, or every one matching Selector, and
	// the agents by AgentsSelector.
	Baseline BaselineSpec
}

func (s FleetSpec) withDefaults() FleetSpec {
	s.Baseline = s.Baseline.withDefaults()
	s.Baseline.Selection.All = true
	return s
}

// Validate checks the spec; each error is a specerr.FieldError.
func (s FleetSpec) Validate() error {
	errs := []error{s.Baseline.Validate()}
	if n := s.Baseline.Selection.GPUNode; n != "" {
		errs = append(errs, specerr.New("selection.gpunode", fmt.Sprintf("%q", n), "names one gpunode: a fleet baseline runs on every gpunode (or every one matching a selector); drop the name"))
	}
	return errors.Join(errs...)
}

// RunFleetBaseline runs the baseline on every selected gpunode, one after
// another: each node's baseline owns that node's engine and one agent, and
// the nodes do not overlap, so that one node's load cannot slow another's
// start where they share a host (as under `ttftlab up`) or the agent. The
// fleet's directory holds its own events.jsonl (fleet_start,
// fleet_node_start and fleet_node_end per node, run_end), each node's
// complete baseline run under nodes/<gpunode>/ — recorded, like any run, as
// it happens, with the node's name as its run id — and fleet.md and
// fleet.json, rendered from those at the end. A node that fails does not
// stop the others; the fleet then fails, naming it.
func (c *Coordinator) RunFleetBaseline(ctx context.Context, spec FleetSpec, emit func(results.Event)) (RunResult, error) {
	spec = spec.withDefaults()
	if err := spec.Validate(); err != nil {
		return RunResult{}, err
	}
	outDir := filepath.Join(c.cfg.OutDir, spec.Baseline.OutDir)
	return c.runLogged(ctx, outDir, &spec.Baseline.RunID, emit, func(ctx context.Context, r *recorder) error {
		return c.fleet(ctx, r, spec, filepath.Join(outDir, spec.Baseline.RunID), emit)
	})
}

func (c *Coordinator) fleet(ctx context.Context, r *recorder, spec FleetSpec, dir string, emit func(results.Event)) error {
	b := spec.Baseline
	nodes, err := c.selectFleet(ctx, b.Selection)
	if err != nil {
		return err
	}
	r.record(results.EventFleetStart, results.FleetStart{RunID: b.RunID, GPUNodes: nodes, Order: "sequential",
		Profile: b.Profile, ColdMode: b.ColdMode, WarmRuns: b.WarmRuns, Repeats: b.Repeats})
	var failed []error
	for _, name := range nodes {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(failed, fmt.Errorf("fleet stopped before gpunode %s: %w", name, context.Cause(ctx)))...)
		}
		r.record(results.EventFleetNodeStart, results.FleetNode{Node: name})
		ns := b
		ns.Selection = Selection{GPUNode: name, AgentsSelector: b.Selection.AgentsSelector}
		ns.OutDir, ns.RunID = "", name
		runID := name
		_, err := c.runLogged(ctx, filepath.Join(dir, results.FleetNodesDir), &runID, emit, func(ctx context.Context, nr *recorder) error {
			return (&baselineRun{recorder: nr, c: c, spec: ns}).run(ctx)
		})
		end := results.FleetNode{Node: name, Status: results.StatusOK}
		if err != nil {
			end.Status, end.Error = results.StatusFailed, err.Error()
			failed = append(failed, fmt.Errorf("gpunode %s: %w", name, err))
		}
		r.record(results.EventFleetNodeEnd, end)
	}
	return errors.Join(failed...)
}

// selectFleet returns the names of the alive gpunodes sel matches, sorted,
// once at least one of them and an agent it may use are in view; after the
// discovery timeout it fails naming the selection and what exists.
func (c *Coordinator) selectFleet(ctx context.Context, sel Selection) ([]string, error) {
	timer := time.NewTimer(c.cfg.DiscoveryTimeout)
	defer timer.Stop()
	poll := time.NewTicker(200 * time.Millisecond)
	defer poll.Stop()
	for {
		ms := c.members.Members()
		gpus := matching(ms, membership.RoleGPUNode, sel.gpuMatches)
		if len(gpus) > 0 && len(matching(ms, membership.RoleAgent, sel.agentMatches)) > 0 {
			all := names(gpus)
			for _, n := range all {
				if !results.ValidFleetNodeName(n) {
					return nil, fmt.Errorf("gpunode %q: its name cannot name a directory of the fleet: restart it with --name using letters, digits, '.', '_' and '-'", n)
				}
			}
			slices.Sort(all)
			return slices.Compact(all), nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			return nil, sel.noMatchError(ms, true, c.cfg.DiscoveryTimeout.String())
		case <-c.members.Changes():
		case <-poll.C:
		}
	}
}
