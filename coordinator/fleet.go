package coordinator

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	"github.com/ttftlab/ttftlab/internal/membership"
	"github.com/ttftlab/ttftlab/internal/specerr"
)

// maxFleetNodes bounds a fleet baseline's selection.
const maxFleetNodes = 1000

// FleetSpec configures a fleet baseline: the cold/warm baseline on each
// selected gpunode, one node after another, compared in fleet.md.
type FleetSpec struct {
	// Baseline is each node's baseline; its RunID and OutDir are the
	// fleet's, and each node's run is nodes/<gpunode>/ inside it.
	Baseline BaselineSpec
	// GPUNodes names the gpunodes to run on, in order; the run waits for
	// each to be alive. Empty means every gpunode alive when the run starts,
	// by name.
	GPUNodes []string
}

func (s FleetSpec) withDefaults() FleetSpec {
	s.Baseline = s.Baseline.withDefaults()
	return s
}

// Validate checks the spec; each error is a specerr.FieldError.
func (s FleetSpec) Validate() error {
	errs := []error{s.Baseline.Validate()}
	if s.Baseline.GPUNode != "" {
		errs = append(errs, specerr.New("gpunode", fmt.Sprintf("%q", s.Baseline.GPUNode), "is a single-node choice: a fleet baseline selects its nodes with gpunodes"))
	}
	if len(s.GPUNodes) > maxFleetNodes {
		errs = append(errs, specerr.New("gpunodes", len(s.GPUNodes), "is too many: select at most %d gpunodes", maxFleetNodes))
	}
	seen := map[string]bool{}
	for _, n := range s.GPUNodes {
		switch {
		case !results.ValidFleetNodeName(n):
			errs = append(errs, specerr.New("gpunodes", fmt.Sprintf("%q", n), "is not a gpunode name: use the names `ttftlab members` lists (letters, digits, '.', '_' and '-')"))
		case seen[n]:
			errs = append(errs, specerr.New("gpunodes", fmt.Sprintf("%q", n), "is listed twice: name each gpunode once"))
		}
		seen[n] = true
	}
	return errors.Join(errs...)
}

// RunFleetBaseline runs the baseline on every selected gpunode, one after
// another (each owns its node's engine; the nodes do not overlap, so one
// node's load cannot slow another's start). The fleet's directory holds
// its own events.jsonl (fleet_start, fleet_node_start/end per node,
// run_end), each node's complete baseline run under nodes/<gpunode>/ —
// recorded, like any run, as it happens — and fleet.md and fleet.json,
// rendered from those at the end. A node that fails does not stop the
// others; the fleet then fails, naming it.
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
	nodes, err := c.selectFleet(ctx, spec.GPUNodes)
	if err != nil {
		return err
	}
	b := spec.Baseline
	r.record(results.EventFleetStart, results.FleetStart{RunID: b.RunID, GPUNodes: nodes, Order: "sequential",
		Profile: b.Profile, ColdMode: b.ColdMode, WarmRuns: b.WarmRuns, Repeats: b.Repeats})
	var failed []error
	for _, name := range nodes {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(failed, fmt.Errorf("fleet stopped before gpunode %s: %w", name, context.Cause(ctx)))...)
		}
		r.record(results.EventFleetNodeStart, results.FleetNode{Node: name})
		ns := b
		ns.GPUNode, ns.OutDir, ns.RunID = name, "", name
		runID := name
		_, err := c.logRun(ctx, filepath.Join(dir, results.FleetNodesDir), &runID, emit, func(ctx context.Context, nr *recorder) error {
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

// selectFleet returns the named gpunodes once all are alive, or every
// alive gpunode (by name) when none is named; it needs an agent too.
func (c *Coordinator) selectFleet(ctx context.Context, names []string) ([]string, error) {
	if _, _, err := c.waitForMembers(ctx, true); err != nil {
		return nil, err
	}
	if len(names) == 0 {
		var all []string
		for _, m := range membership.ByRole(c.members.Members(), membership.RoleGPUNode) {
			if !results.ValidFleetNodeName(m.Name) {
				return nil, fmt.Errorf("gpunode %q: its name cannot name a directory: restart it with --name using letters, digits, '.', '_' and '-'", m.Name)
			}
			all = append(all, m.Name)
		}
		slices.Sort(all)
		return slices.Compact(all), nil
	}
	for _, n := range names {
		if _, err := c.waitForGPUNode(ctx, n); err != nil {
			return nil, err
		}
	}
	return names, nil
}

// waitForGPUNode waits until the gpunode called name is alive.
func (c *Coordinator) waitForGPUNode(ctx context.Context, name string) (membership.Member, error) {
	timer := time.NewTimer(c.cfg.DiscoveryTimeout)
	defer timer.Stop()
	poll := time.NewTicker(200 * time.Millisecond)
	defer poll.Stop()
	for {
		gpus := membership.ByRole(c.members.Members(), membership.RoleGPUNode)
		for _, m := range gpus {
			if m.Name == name {
				return m, nil
			}
		}
		select {
		case <-ctx.Done():
			return membership.Member{}, ctx.Err()
		case <-timer.C:
			var have []string
			for _, m := range gpus {
				have = append(have, m.Name)
			}
			return membership.Member{}, fmt.Errorf("gpunode %q did not appear in %s; the cluster has [%s]: check the name with `ttftlab members`",
				name, c.cfg.DiscoveryTimeout, strings.Join(have, ", "))
		case <-c.members.Changes():
		case <-poll.C:
		}
	}
}
