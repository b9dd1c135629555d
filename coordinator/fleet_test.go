package coordinator

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/membership"
)

// fleetGPU is a fake gpunode whose weights load takes diskFactor times the
// fake's 0.6 s, and which counts its engine starts.
type fleetGPU struct {
	fakeGPU
	diskFactor float64
	starts     atomic.Int32
}

func (g *fleetGPU) StartEngine(ctx context.Context, req *pb.StartEngineRequest) (*pb.EngineInfo, error) {
	g.starts.Add(1)
	e, err := g.fakeGPU.StartEngine(ctx, req)
	if err != nil {
		return nil, err
	}
	lw := 0.6 * g.diskFactor
	e.ReadyS = 0.9 + lw
	e.Phases = []*pb.Phase{
		{Name: "bootstrap", StartS: 0, EndS: 0.5, DurationS: 0.5, Source: "log"},
		{Name: "load_weights", StartS: 0.5, EndS: 0.5 + lw, DurationS: lw, Source: "log"},
	}
	return e, nil
}

// fleetDialer dials each gpunode by its address.
type fleetDialer struct {
	gpus  map[string]GPUNode
	agent Agent
}

func (d fleetDialer) GPUNode(_ context.Context, addr string) (GPUNode, io.Closer, error) {
	g, ok := d.gpus[addr]
	if !ok {
		return nil, nil, errors.New("no such gpunode " + addr)
	}
	return g, io.NopCloser(nil), nil
}

func (d fleetDialer) Agent(context.Context, string) (Agent, io.Closer, error) {
	return d.agent, io.NopCloser(nil), nil
}

// newFleetCoordinator returns a coordinator whose cluster has one agent and
// a gpunode per entry of gpus, named by key (its address is name:1).
func newFleetCoordinator(t *testing.T, gpus map[string]GPUNode) *Coordinator {
	t.Helper()
	ms := staticMembers{{Name: "a", Meta: membership.Meta{Role: membership.RoleAgent, GRPCAddr: "a:1"}, State: "alive"}}
	byAddr := map[string]GPUNode{}
	for name, g := range gpus {
		ms = append(ms, membership.Member{Name: name, Meta: membership.Meta{Role: membership.RoleGPUNode, GRPCAddr: name + ":1"}, State: "alive"})
		byAddr[name+":1"] = g
	}
	cfg := DefaultConfig()
	cfg.OutDir = t.TempDir()
	cfg.DiscoveryTimeout = 500 * time.Millisecond
	return New(cfg, ms, fleetDialer{gpus: byAddr, agent: &fakeAgent{ttft: coldWarm}}, nil)
}

func readFleetJSON(t *testing.T, dir string) results.FleetResults {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, results.FleetJSON))
	if err != nil {
		t.Fatal(err)
	}
	var f results.FleetResults
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestFleetBaselineRunsEveryNodeAndFlagsTheSlowDisk runs the fleet on two
// fake gpunodes, one with a 5× slower weights load: each node's engine is
// started once (the baseline went to the right node), each node has its
// own baseline report, and fleet.md flags the slow node's weights load.
func TestFleetBaselineRunsEveryNodeAndFlagsTheSlowDisk(t *testing.T) {
	fast, slow := &fleetGPU{diskFactor: 1}, &fleetGPU{diskFactor: 5}
	c := newFleetCoordinator(t, map[string]GPUNode{"node-b": slow, "node-a": fast})
	var kinds []string
	res, err := c.RunFleetBaseline(t.Context(), FleetSpec{Baseline: BaselineSpec{WarmRuns: 3, RunID: "fleet"}}, func(ev results.Event) { kinds = append(kinds, ev.Kind) })
	if err != nil {
		t.Fatal(err)
	}
	if fast.starts.Load() != 1 || slow.starts.Load() != 1 {
		t.Errorf("engine starts: node-a %d, node-b %d; want one each", fast.starts.Load(), slow.starts.Load())
	}
	for _, n := range []string{"node-a", "node-b"} {
		if _, err := os.Stat(filepath.Join(res.Dir, "nodes", n, results.BaselineReport)); err != nil {
			t.Errorf("no baseline report for %s: %v", n, err)
		}
	}
	f := readFleetJSON(t, res.Dir)
	if f.Status != results.StatusOK || len(f.Rows) != 2 || f.Rows[0].Node != "node-a" || f.Rows[1].Node != "node-b" {
		t.Fatalf("fleet.json: status %q, rows %+v; want ok, node-a then node-b", f.Status, f.Rows)
	}
	if !f.Rows[1].Cells["load_weights"].Outlier || f.Rows[0].Cells["load_weights"].Outlier {
		t.Errorf("load_weights outliers: node-a %v, node-b %v; want only node-b", f.Rows[0].Cells["load_weights"].Outlier, f.Rows[1].Cells["load_weights"].Outlier)
	}
	md, err := os.ReadFile(filepath.Join(res.Dir, results.FleetReport))
	if err != nil {
		t.Fatal(err)
	}
	if want := "node-b: weights load 3.00 s is 5.0× the faster node (node-a, 0.600 s)"; !strings.Contains(string(md), want) {
		t.Errorf("fleet.md lacks %q:\n%s", want, md)
	}
	if got := strings.Join(kinds, " "); !strings.HasPrefix(got, "fleet_start fleet_node_start run_start") || !strings.HasSuffix(got, "fleet_node_end run_end") {
		t.Errorf("events streamed: %s", got)
	}
}

// TestFleetBaselineKeepsGoingPastAFailedNode checks that a node whose
// engine will not start fails the fleet, naming it, while the nodes after
// it still run and are reported.
func TestFleetBaselineKeepsGoingPastAFailedNode(t *testing.T) {
	bad := &fleetGPU{fakeGPU: fakeGPU{startErr: errors.New("CUDA out of memory")}, diskFactor: 1}
	last := &fleetGPU{diskFactor: 1}
	c := newFleetCoordinator(t, map[string]GPUNode{"n1": &fleetGPU{diskFactor: 1}, "n2": bad, "n3": last})
	res, err := c.RunBaseline(t.Context(), BaselineSpec{WarmRuns: 2, Selection: Selection{All: true}}, nil)
	if err == nil || !strings.Contains(err.Error(), "gpunode n2") || !strings.Contains(err.Error(), "CUDA out of memory") {
		t.Fatalf("err = %v, want the fleet to fail naming gpunode n2 and its cause", err)
	}
	if last.starts.Load() != 1 {
		t.Errorf("n3 started %d times, want 1: the fleet goes on after a failed node", last.starts.Load())
	}
	f := readFleetJSON(t, res.Dir)
	want := map[string]string{"n1": results.StatusOK, "n2": results.StatusFailed, "n3": results.StatusOK}
	for _, r := range f.Rows {
		if r.Status != want[r.Node] {
			t.Errorf("%s: status %q, want %q", r.Node, r.Status, want[r.Node])
		}
	}
	if f.Status != results.StatusFailed {
		t.Errorf("fleet status %q, want failed", f.Status)
	}
}

// TestFleetSpecRefusesBadSelections checks that a fleet refuses a single
// gpunode's name and names the selection when nothing matches it.
func TestFleetSpecRefusesBadSelections(t *testing.T) {
	tests := []struct {
		name string
		sel  Selection
		want string
	}{
		{"one gpunode's name", Selection{GPUNode: "n1"}, `selection.gpunode "n1" names one gpunode: a fleet baseline runs on every gpunode`},
		{"selector matches nothing", Selection{Selector: map[string]string{"gpu": "b200"}}, "no gpunode matches selector gpu=b200"},
		{"agents selector matches nothing", Selection{AgentsSelector: map[string]string{"zone": "x"}}, "no agent matches agents selector zone=x"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newFleetCoordinator(t, map[string]GPUNode{"n1": &fleetGPU{diskFactor: 1}})
			_, err := c.RunFleetBaseline(t.Context(), FleetSpec{Baseline: BaselineSpec{Selection: tt.sel}}, nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
