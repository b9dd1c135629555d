package results

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// fleetEvent encodes one event of a fleet's events.jsonl.
func fleetEvent(t testing.TB, kind string, v any) Event {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return Event{T: 1, Kind: kind, Data: b}
}

// fleetLog is a fleet's events for nodes run in order; ends maps a node to
// its fleet_node_end error ("" is ok; a node missing from ends was started
// but never ended, "-" was never started).
func fleetLog(t testing.TB, nodes []string, ends map[string]string, runErr string) []Event {
	t.Helper()
	evs := []Event{fleetEvent(t, EventFleetStart, FleetStart{RunID: "fleet-test", GPUNodes: nodes, Order: "sequential", Profile: "sim", ColdMode: "warm-restart", WarmRuns: 5, Repeats: 1})}
	for _, n := range nodes {
		e, ok := ends[n]
		if e == "-" {
			continue
		}
		evs = append(evs, fleetEvent(t, EventFleetNodeStart, FleetNode{Node: n}))
		switch {
		case !ok:
		case e == "":
			evs = append(evs, fleetEvent(t, EventFleetNodeEnd, FleetNode{Node: n, Status: StatusOK}))
		default:
			evs = append(evs, fleetEvent(t, EventFleetNodeEnd, FleetNode{Node: n, Status: StatusFailed, Error: e}))
		}
	}
	end := RunEnd{Status: StatusOK}
	if runErr != "" {
		end = RunEnd{Status: StatusFailed, Error: runErr}
	}
	return append(evs, fleetEvent(t, EventRunEnd, end))
}

// nodeVariant describes how a simulated node differs from the baseline
// fixture (a real sim run): every phase scaled by jitter, the weights read
// by disk (slow disk), the warm TTFTs by gpu, and its simulated GPU.
type nodeVariant struct {
	jitter, disk, gpu float64
	gpuName           string
}

// fleetNode returns the baseline fixture's results changed as v says,
// with spawn → ready the sum of its changed phases.
func fleetNode(t *testing.T, v nodeVariant) *Results {
	t.Helper()
	r, err := Render(readFixtureEvents(t, "baseline"))
	if err != nil {
		t.Fatal(err)
	}
	res := r.Baseline
	ready := res.Engine.ReadyS
	orig := slices.Clone(res.Engine.Phases)
	for i, p := range orig {
		d := p.DurationS * v.jitter
		switch p.Name {
		case "load_weights":
			d *= v.disk
		case "load_model":
			lw := orig[slices.IndexFunc(orig, func(p Phase) bool { return p.Name == "load_weights" })].DurationS
			d = (p.DurationS-lw)*v.jitter + lw*v.jitter*v.disk
		}
		if p.Name != "load_model" && p.Name != "init_engine" {
			ready += d - p.DurationS
		}
		res.Engine.Phases[i].DurationS = d
	}
	res.Engine.ReadyS = ready
	res.Rounds[0].ReadyS = ptr(ready)
	for i := range res.Runs {
		if strings.HasPrefix(res.Runs[i].Label, "warm_") {
			res.Runs[i].TTFTS *= v.gpu
		}
	}
	res.Warm = warmStats(res.Runs)
	if i := slices.Index(res.Engine.Argv, "--gpu"); i >= 0 {
		res.Engine.Argv[i+1] = v.gpuName
	}
	return res
}

var normal = nodeVariant{jitter: 1, disk: 1, gpu: 1, gpuName: "h200"}

// TestFleetGolden renders fleets built from the baseline fixture and
// compares fleet.md and fleet.json with testdata/golden/fleet-*. Run `go
// test ./coordinator/results -run TestFleetGolden -update` to rewrite them.
func TestFleetGolden(t *testing.T) {
	slowDisk := nodeVariant{jitter: 1.01, disk: 4, gpu: 1, gpuName: "h200"}
	tests := []struct {
		name     string
		nodes    map[string]nodeVariant
		order    []string
		ends     map[string]string
		runErr   string
		must     []string
		mustNot  []string
		flagged  map[string][]string // node → metrics flagged
		wantStat string
	}{
		{
			name:  "two-nodes-slow-disk",
			order: []string{"gpunode-1", "gpunode-2"},
			nodes: map[string]nodeVariant{"gpunode-1": normal, "gpunode-2": slowDisk},
			ends:  map[string]string{"gpunode-1": "", "gpunode-2": ""},
			must: []string{"With 2 nodes the MAD outlier test is not meaningful", "gpunode-2: weights load 0.485 s is 4.0× the faster node (gpunode-1, 0.120 s)",
				"and 1.60× the fleet median: disk or page cache."},
			// spawn → ready is 1.4× the faster node here: below the pair
			// threshold, so only the phase is flagged.
			flagged:  map[string][]string{"gpunode-2": {"load_weights"}},
			wantStat: StatusOK,
		},
		{
			name:  "five-nodes",
			order: []string{"gpunode-1", "gpunode-2", "gpunode-3", "gpunode-4", "gpunode-5"},
			nodes: map[string]nodeVariant{
				"gpunode-1": normal,
				"gpunode-2": {jitter: 1.02, disk: 1, gpu: 1.01, gpuName: "h200"},
				"gpunode-3": {jitter: 0.99, disk: 4, gpu: 1, gpuName: "h200"},
				"gpunode-4": {jitter: 1.01, disk: 1, gpu: 0.99, gpuName: "h200"},
				"gpunode-5": {jitter: 1, disk: 1, gpu: 2.5, gpuName: "l4"},
			},
			ends: map[string]string{"gpunode-1": "", "gpunode-2": "", "gpunode-3": "", "gpunode-4": "", "gpunode-5": ""},
			must: []string{"robust z = 0.6745·(x − median)/MAD", "gpunode-3: weights load 0.475 s is 3.92× the fleet median 0.121 s (robust z",
				"the phase that makes it slow is weights load (+0.354 s over its fleet median, 3.92×): disk or page cache.",
				"gpunode-5: warm TTFT 0.042 s is 2.50× the fleet median", "GPU compute (prefill)", "| gpunode-5 | sim l4 | ok |", "0.059 ⚠ |", "is never flagged"},
			// gpunode-5's warm p99 is 2.5× too, but from 5 runs: not flagged.
			flagged:  map[string][]string{"gpunode-3": {"load_weights", "spawn_to_ready"}, "gpunode-5": {"warm_ttft"}},
			wantStat: StatusOK,
		},
		{
			name:     "failed-node",
			order:    []string{"gpunode-1", "gpunode-2", "gpunode-3"},
			nodes:    map[string]nodeVariant{"gpunode-1": normal},
			ends:     map[string]string{"gpunode-1": "", "gpunode-2": "engine on gpunode gpunode-2 exited unexpectedly", "gpunode-3": "-"},
			runErr:   "gpunode-2: engine on gpunode gpunode-2 exited unexpectedly",
			must:     []string{"Status: **failed**", "gpunode-2 failed: engine on gpunode gpunode-2 exited", "| gpunode-2 | n/a | failed | n/a |", "gpunode-3 was not run", "one node: nothing to compare"},
			mustNot:  []string{" ⚑ |"},
			flagged:  map[string][]string{},
			wantStat: StatusFailed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			nodes := map[string]*Results{}
			for n, v := range tt.nodes {
				nodes[n] = fleetNode(t, v)
			}
			f, err := BuildFleet(fleetLog(t, tt.order, tt.ends, tt.runErr), nodes)
			if err != nil {
				t.Fatal(err)
			}
			md := RenderFleetMarkdown(f)
			js, err := json.MarshalIndent(f, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			checkGolden(t, "fleet-"+tt.name+".md", []byte(md))
			checkGolden(t, "fleet-"+tt.name+".json", append(js, '\n'))
			for _, s := range tt.must {
				if !strings.Contains(md, s) {
					t.Errorf("fleet.md lacks %q:\n%s", s, md)
				}
			}
			for _, s := range tt.mustNot {
				if strings.Contains(md, s) {
					t.Errorf("fleet.md has %q:\n%s", s, md)
				}
			}
			if f.Status != tt.wantStat {
				t.Errorf("status %q, want %q", f.Status, tt.wantStat)
			}
			if len(f.Rows) != len(tt.order) {
				t.Fatalf("%d rows, want one per node (%d)", len(f.Rows), len(tt.order))
			}
			for _, r := range f.Rows {
				var got []string
				for k, c := range r.Cells {
					if c.Outlier {
						got = append(got, k)
					}
				}
				slices.Sort(got)
				want := slices.Clone(tt.flagged[r.Node])
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Errorf("%s: flagged %v, want %v", r.Node, got, want)
				}
			}
		})
	}
}

// TestFleetOutlierRules checks the flag rule for each fleet size on one
// metric: the pair rule, the robust z with its ratio guard, and the MAD = 0
// fallback.
func TestFleetOutlierRules(t *testing.T) {
	tests := []struct {
		name     string
		values   []float64
		flagged  []int
		rule     string
		noZ      bool
		wantMAD0 bool
	}{
		{name: "one node", values: []float64{5}, rule: "one node", noZ: true},
		{name: "pair below threshold", values: []float64{2, 2.9}, rule: "2 nodes", noZ: true},
		{name: "pair at threshold", values: []float64{2, 3}, flagged: []int{1}, rule: "2 nodes", noZ: true},
		{name: "pair, either order", values: []float64{8, 2}, flagged: []int{0}, rule: "2 nodes", noZ: true},
		{name: "MAD applies", values: []float64{2.0, 2.1, 1.9, 2.05, 8}, flagged: []int{4}, rule: "robust z"},
		{name: "fast node is not flagged", values: []float64{2.0, 2.1, 1.9, 2.05, 0.2}, rule: "robust z"},
		{name: "tiny MAD needs a material ratio", values: []float64{1.000, 1.001, 1.002, 1.001, 1.050}, rule: "robust z"},
		{name: "MAD = 0 falls back to the median ratio", values: []float64{2, 2, 2, 3.5}, flagged: []int{3}, rule: "MAD = 0", noZ: true, wantMAD0: true},
		{name: "MAD = 0 below the fallback ratio", values: []float64{2, 2, 2, 2.9}, rule: "MAD = 0", noZ: true, wantMAD0: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := FleetMetric{Key: "load_weights", Label: "weights load", Phase: true, Cause: "disk or page cache"}
			var rows []FleetRow
			for i, v := range tt.values {
				rows = append(rows, FleetRow{Node: string(rune('a' + i)), Cells: map[string]FleetCell{m.Key: {S: ptr(v)}}})
			}
			stats, _ := judgeFleet(rows, []FleetMetric{m})
			if !strings.Contains(stats[0].Rule, tt.rule) {
				t.Errorf("rule %q, want it to name %q", stats[0].Rule, tt.rule)
			}
			var got []int
			for i, r := range rows {
				c := r.Cells[m.Key]
				if c.Outlier {
					got = append(got, i)
				}
				if (c.RobustZ == nil) != tt.noZ {
					t.Errorf("node %d: robust z %v, want nil=%v", i, c.RobustZ, tt.noZ)
				}
				if c.RatioToMedian == nil {
					t.Errorf("node %d: no ratio to the median", i)
				}
			}
			if !slices.Equal(got, tt.flagged) {
				t.Errorf("flagged %v, want %v", got, tt.flagged)
			}
			if tt.wantMAD0 && (stats[0].MADS == nil || *stats[0].MADS != 0) {
				t.Errorf("MAD %v, want 0", stats[0].MADS)
			}
		})
	}
}

// TestRenderFleetDir renders a fleet directory from disk as `ttftlab
// report DIR` does: each node's reports are re-rendered under nodes/, and
// fleet.md has one row per node; a node directory that is itself a fleet
// is refused rather than followed.
func TestRenderFleetDir(t *testing.T) {
	fixture, err := os.ReadFile(filepath.Join("testdata", "baseline.events.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	writeEvents := func(t *testing.T, dir string, evs []Event) {
		t.Helper()
		var b bytes.Buffer
		for _, ev := range evs {
			line, err := json.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			b.Write(append(line, '\n'))
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, EventsFile), b.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("renders every node and the fleet", func(t *testing.T) {
		dir := t.TempDir()
		nodes := []string{"gpunode-1", "gpunode-2"}
		writeEvents(t, dir, fleetLog(t, nodes, map[string]string{"gpunode-1": "", "gpunode-2": ""}, ""))
		for _, n := range nodes {
			nd := filepath.Join(dir, FleetNodesDir, n)
			if err := os.MkdirAll(nd, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(nd, EventsFile), fixture, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		res, err := RenderDir(dir)
		if err != nil || res != nil {
			t.Fatalf("RenderDir = %v, %v; want nil results and no error", res, err)
		}
		md, err := os.ReadFile(filepath.Join(dir, FleetReport))
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range nodes {
			if !strings.Contains(string(md), "| "+n+" | sim h200 | ok | 0.9") {
				t.Errorf("fleet.md has no measured row for %s:\n%s", n, md)
			}
			if _, err := os.Stat(filepath.Join(dir, FleetNodesDir, n, BaselineReport)); err != nil {
				t.Errorf("node report not rendered: %v", err)
			}
		}
		var f FleetResults
		b, err := os.ReadFile(filepath.Join(dir, FleetJSON))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &f); err != nil || len(f.Rows) != 2 || f.Kind != "fleet" {
			t.Fatalf("fleet.json: %v, %d rows, kind %q", err, len(f.Rows), f.Kind)
		}
	})
	t.Run("a fleet inside nodes/ is refused", func(t *testing.T) {
		dir := t.TempDir()
		writeEvents(t, dir, fleetLog(t, []string{"loop"}, map[string]string{"loop": ""}, ""))
		writeEvents(t, filepath.Join(dir, FleetNodesDir, "loop"), fleetLog(t, []string{"loop"}, map[string]string{"loop": ""}, ""))
		_, err := RenderDir(dir)
		if err == nil || !strings.Contains(err.Error(), "a fleet baseline inside a fleet's nodes/ directory") {
			t.Fatalf("RenderDir = %v, want the nested fleet refused", err)
		}
		md, rerr := os.ReadFile(filepath.Join(dir, FleetReport))
		if rerr != nil || !strings.Contains(string(md), "| loop | n/a | ok | n/a |") {
			t.Errorf("fleet.md (%v) should still render, the node unmeasured:\n%s", rerr, md)
		}
	})
}

// TestDecodeFleetRefuses checks that fleet events from disk are validated
// before use: unsafe node names (they become directory names), duplicate
// nodes and unknown statuses are errors naming the value.
func TestDecodeFleetRefuses(t *testing.T) {
	tests := []struct {
		name string
		ev   Event
		want string
	}{
		{"path in a node name", Event{Kind: EventFleetNodeStart, Data: []byte(`{"node":"../etc"}`)}, `"../etc" is not a safe directory name`},
		{"empty fleet", Event{Kind: EventFleetStart, Data: []byte(`{"gpunodes":[]}`)}, "0 gpunodes"},
		{"duplicate node", Event{Kind: EventFleetStart, Data: []byte(`{"gpunodes":["a","a"]}`)}, `"a" is listed twice`},
		{"unknown status", Event{Kind: EventFleetNodeEnd, Data: []byte(`{"node":"a","status":"great"}`)}, `status "great"`},
		{"no data", Event{Kind: EventFleetStart}, "no data"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeFleet(tt.ev)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("DecodeFleet = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

// FuzzBuildFleet builds fleets from arbitrary event logs: any error is
// fine, a panic is not, and a built fleet renders.
func FuzzBuildFleet(f *testing.F) {
	var b bytes.Buffer
	for _, ev := range fleetLog(f, []string{"gpunode-1", "gpunode-2"}, map[string]string{"gpunode-1": "", "gpunode-2": "boom"}, "x") {
		line, _ := json.Marshal(ev)
		b.Write(append(line, '\n'))
	}
	f.Add(b.Bytes())
	f.Add([]byte(`{"t":1,"kind":"fleet_start","data":{"gpunodes":["a"]}}` + "\n" + `{"t":2,"kind":"fleet_node_end","data":{"node":"a","status":"ok"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		evs, err := ReadEvents(bytes.NewReader(data), "fuzz")
		if err != nil {
			return
		}
		fl, err := BuildFleet(evs, map[string]*Results{"gpunode-1": {Engine: EngineFacts{ReadyS: 1}}})
		if err != nil {
			return
		}
		_ = RenderFleetMarkdown(fl)
	})
}
