package results

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Fleet event kinds. A fleet baseline's directory holds its own
// events.jsonl — fleet_start, then per node fleet_node_start and
// fleet_node_end, then run_end — and one complete baseline run directory
// per node under nodes/<name>/, with that node's own events.jsonl and
// reports. DecodeFleet decodes their payloads.
const (
	EventFleetStart     = "fleet_start"      // FleetStart
	EventFleetNodeStart = "fleet_node_start" // FleetNode
	EventFleetNodeEnd   = "fleet_node_end"   // FleetNode
)

// Files of a fleet baseline's directory.
const (
	FleetReport = "fleet.md"
	FleetJSON   = "fleet.json"
	// FleetNodesDir holds one baseline run directory per node.
	FleetNodesDir = "nodes"
)

// Node statuses of a fleet row beyond StatusOK and StatusFailed.
const (
	// NodeNotRun is a node the fleet never reached (the run was cancelled
	// or failed before it).
	NodeNotRun = "not run"
)

// Fleet outlier rules (docs/metrics.md, "Fleet baseline").
const (
	// FleetRobustZ is the robust z above which a node is an outlier, with
	// three nodes or more: z = 0.6745·(x − median)/MAD.
	FleetRobustZ = 3.5
	// FleetMinRatio is how far above the fleet median a value must also be
	// to be flagged by the robust z, so that a tiny MAD (identical
	// simulated nodes) cannot flag a difference of milliseconds.
	FleetMinRatio = 1.2
	// FleetMAD0Ratio is the rule when MAD = 0 (at least half the nodes
	// agree exactly): a value above this multiple of the median is flagged.
	FleetMAD0Ratio = 1.5
	// FleetPairRatio is the rule for two nodes, where MAD is degenerate
	// (both robust z are ±0.6745): the slower is flagged when it takes at
	// least this multiple of the faster.
	FleetPairRatio = 1.5
	// maxFleetNodes bounds a fleet read from disk.
	maxFleetNodes = 1000
)

var fleetNodeRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$`)

// ValidFleetNodeName reports whether name is safe as a directory name
// under nodes/: the fleet names each node's run directory after it.
func ValidFleetNodeName(name string) bool { return fleetNodeRe.MatchString(name) }

// FleetStart is the payload of fleet_start.
type FleetStart struct {
	RunID string `json:"run_id"`
	// GPUNodes are the selected nodes, in the order they run.
	GPUNodes []string `json:"gpunodes"`
	// Order is how the nodes run: "sequential" (one after another).
	Order    string `json:"order"`
	Profile  string `json:"profile"`
	ColdMode string `json:"cold_mode"`
	WarmRuns int    `json:"warm_runs"`
	Repeats  int    `json:"repeats"`
}

// FleetNode is the payload of fleet_node_start and fleet_node_end.
type FleetNode struct {
	Node string `json:"node"`
	// Status and Error are set on fleet_node_end: the node's baseline
	// status (ok or failed) and why it failed.
	Status string `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
}

// DecodeFleet returns a fleet event's typed payload, checked; other kinds
// wrap ErrUnknownKind.
func DecodeFleet(ev Event) (any, error) {
	v, err := decodeFleet(ev)
	if err != nil {
		return nil, fmt.Errorf("%s event: %w", ev.Kind, err)
	}
	return v, nil
}

func decodeFleet(ev Event) (any, error) {
	switch ev.Kind {
	case EventFleetStart:
		s, err := decodeJSON[FleetStart](ev.Data)
		if err != nil {
			return s, err
		}
		if len(s.GPUNodes) == 0 || len(s.GPUNodes) > maxFleetNodes {
			return s, fmt.Errorf("%d gpunodes: a fleet has 1..%d", len(s.GPUNodes), maxFleetNodes)
		}
		seen := map[string]bool{}
		for _, n := range s.GPUNodes {
			if !ValidFleetNodeName(n) {
				return s, fmt.Errorf("gpunode name %q is not a safe directory name", n)
			}
			if seen[n] {
				return s, fmt.Errorf("gpunode %q is listed twice", n)
			}
			seen[n] = true
		}
		return s, nil
	case EventFleetNodeStart, EventFleetNodeEnd:
		n, err := decodeJSON[FleetNode](ev.Data)
		if err != nil {
			return n, err
		}
		if !ValidFleetNodeName(n.Node) {
			return n, fmt.Errorf("gpunode name %q is not a safe directory name", n.Node)
		}
		if ev.Kind == EventFleetNodeEnd && n.Status != StatusOK && n.Status != StatusFailed {
			return n, fmt.Errorf("status %q is neither %s nor %s", n.Status, StatusOK, StatusFailed)
		}
		return n, nil
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownKind, ev.Kind)
}

func isFleet(events []Event) bool {
	for _, ev := range events {
		if ev.Kind == EventFleetStart {
			return true
		}
	}
	return false
}

// FleetMetric is one column of the fleet table and its likely cause.
type FleetMetric struct {
	Key   string `json:"key"`
	Label string `json:"label"`
	// Phase marks a cold-start phase: the parts spawn → ready is made of,
	// among which the one that makes a slow start slow is named.
	Phase bool   `json:"phase"`
	Cause string `json:"likely_cause"`
}

// FleetMetrics returns the fleet table's columns, in order, each with the
// likely cause of a node that is slow in it.
func FleetMetrics() []FleetMetric {
	return []FleetMetric{
		{Key: "spawn_to_ready", Label: "spawn → ready", Cause: "the sum of the phases: see the phase that grew"},
		{Key: "bootstrap", Label: "bootstrap", Phase: true, Cause: "host CPU, Python imports, container image or filesystem"},
		{Key: "load_weights", Label: "weights load", Phase: true, Cause: "disk or page cache"},
		{Key: "weights_to_gpu", Label: "weights → GPU", Phase: true, Cause: "PCIe host-to-device copy or model construction (CPU)"},
		{Key: "compile", Label: "torch.compile", Phase: true, Cause: "compile cache or CPU"},
		{Key: "memory_profile_kv_alloc", Label: "KV profiling", Phase: true, Cause: "GPU memory (profile run and KV cache allocation)"},
		{Key: "graph_capture", Label: "CUDA graph capture", Phase: true, Cause: "GPU or driver"},
		{Key: "api_server_start", Label: "API server start", Phase: true, Cause: "host CPU or the API server"},
		{Key: "cold_ttft", Label: "cold TTFT", Cause: "first-request lazy initialisation: GPU, driver or engine warm-up"},
		{Key: "warm_ttft", Label: "warm TTFT", Cause: "GPU compute (prefill) or the path from agent to engine"},
		{Key: "warm_p99", Label: "warm p99", Cause: "contention or jitter on the node"},
	}
}

// FleetCell is one node's value of one metric. Nil values were not
// measured.
type FleetCell struct {
	S *float64 `json:"s"`
	// RatioToMedian is S over the fleet median of the metric; nil when
	// either is missing or the median is 0.
	RatioToMedian *float64 `json:"ratio_to_median"`
	// RobustZ is 0.6745·(S − median)/MAD; nil with fewer than 3 nodes or
	// MAD = 0.
	RobustZ *float64 `json:"robust_z"`
	Outlier bool     `json:"outlier"`
	// Insufficient marks a warm p99 from fewer than MinSuccessesP99 warm
	// runs: it is then close to the maximum, not a tail estimate.
	Insufficient bool `json:"insufficient,omitempty"`
}

// FleetStat is one metric across the fleet.
type FleetStat struct {
	FleetMetric
	// N is how many nodes measured it.
	N       int      `json:"n"`
	MedianS *float64 `json:"median_s"`
	MADS    *float64 `json:"mad_s"`
	// Rule is the outlier rule applied to this metric, in words.
	Rule string `json:"rule"`
}

// FleetRow is one node of the fleet.
type FleetRow struct {
	Node   string `json:"node"`
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
	// GPU is what the node reported (NVML), or the simulated GPU.
	GPU string `json:"gpu"`
	// Dir is the node's baseline run directory, relative to the fleet's.
	Dir   string               `json:"dir"`
	Cells map[string]FleetCell `json:"metrics"`
	// Findings are the node's outliers, in words, with their likely cause.
	Findings []string `json:"findings"`
}

// FleetResults is fleet.json: the fleet baseline, one row per node.
type FleetResults struct {
	Kind     string      `json:"kind"`
	RunID    string      `json:"run_id"`
	Status   string      `json:"status"`
	Error    string      `json:"error,omitempty"`
	Order    string      `json:"order"`
	Profile  string      `json:"profile"`
	ColdMode string      `json:"cold_mode"`
	WarmRuns int         `json:"warm_runs"`
	Method   string      `json:"method"`
	Metrics  []FleetStat `json:"metrics"`
	Rows     []FleetRow  `json:"nodes"`
	// Findings are every node's findings, then the fleet's notes.
	Findings []string `json:"findings"`
}

// BuildFleet builds the fleet results from the fleet's own events and each
// node's baseline results (by node name; a node missing from nodes has no
// measurements). It is pure: RenderDir reads the files.
func BuildFleet(events []Event, nodes map[string]*Results) (*FleetResults, error) {
	f := &FleetResults{Kind: "fleet", Status: StatusFailed, Metrics: []FleetStat{}, Rows: []FleetRow{}, Findings: []string{}}
	rows := map[string]*FleetRow{}
	var order []string
	started, ended := false, false
	for i, ev := range events {
		if ev.Kind == EventRunEnd {
			v, err := Decode(ev)
			if err != nil {
				return nil, fmt.Errorf("event %d: %w", i+1, err)
			}
			e := v.(RunEnd)
			f.Status, f.Error, ended = e.Status, e.Error, true
			continue
		}
		v, err := DecodeFleet(ev)
		if errors.Is(err, ErrUnknownKind) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("event %d: %w", i+1, err)
		}
		switch v := v.(type) {
		case FleetStart:
			if started {
				return nil, fmt.Errorf("event %d: a second fleet_start", i+1)
			}
			started = true
			f.RunID, f.Order, f.Profile, f.ColdMode, f.WarmRuns = v.RunID, v.Order, v.Profile, v.ColdMode, v.WarmRuns
			for _, n := range v.GPUNodes {
				order = append(order, n)
				rows[n] = &FleetRow{Node: n, Status: NodeNotRun}
			}
		case FleetNode:
			row := rows[v.Node]
			if row == nil {
				return nil, fmt.Errorf("event %d: gpunode %q is not in fleet_start", i+1, v.Node)
			}
			if ev.Kind == EventFleetNodeStart {
				// Until its end is recorded, the node's run was interrupted.
				row.Status, row.Error = StatusFailed, "the fleet run ended while this node ran"
				continue
			}
			row.Status, row.Error = v.Status, v.Error
		}
	}
	if !started {
		return nil, errors.New("no fleet_start event: this is not a fleet baseline's events.jsonl")
	}
	if !ended {
		f.Status, f.Error = StatusFailed, "the fleet run ended without a run_end event (interrupted)"
	}
	metrics := FleetMetrics()
	for _, n := range order {
		row := rows[n]
		row.Dir = filepath.ToSlash(filepath.Join(FleetNodesDir, n))
		row.GPU = "n/a"
		row.Cells = map[string]FleetCell{}
		row.Findings = []string{}
		res := nodes[n]
		if res != nil {
			row.GPU = nodeGPU(res)
		}
		vals, insufficient := fleetValues(res)
		for _, m := range metrics {
			row.Cells[m.Key] = FleetCell{S: vals[m.Key], Insufficient: m.Key == "warm_p99" && insufficient && vals[m.Key] != nil}
		}
		f.Rows = append(f.Rows, *row)
	}
	f.Metrics, f.Method = judgeFleet(f.Rows, metrics)
	f.Findings = fleetFindings(f)
	return f, nil
}

// nodeGPU names the node's GPU: NVML's names, else the simulator's --gpu.
func nodeGPU(r *Results) string {
	if len(r.Node.GPUs) > 0 {
		return strings.Join(r.Node.GPUs, ", ")
	}
	if i := slices.Index(r.Engine.Argv, "--gpu"); i >= 0 && i+1 < len(r.Engine.Argv) {
		return "sim " + r.Engine.Argv[i+1]
	}
	return "n/a"
}

// fleetValues reads a node's figures, in seconds, from its baseline: round
// 1's spawn → ready and cold TTFT, the engine's log phases, the warm
// median, and the nearest-rank p99 of the warm runs (insufficient below
// MinSuccessesP99 runs).
func fleetValues(r *Results) (map[string]*float64, bool) {
	out := map[string]*float64{}
	if r == nil {
		return out, false
	}
	pos := func(v float64) *float64 {
		if v > 0 && !math.IsNaN(v) && !math.IsInf(v, 0) {
			return ptr(v)
		}
		return nil
	}
	if r.Engine.ReadyS > 0 {
		out["spawn_to_ready"] = pos(r.Engine.ReadyS)
	}
	if len(r.Rounds) > 0 && r.Rounds[0].ReadyS != nil {
		out["spawn_to_ready"] = pos(*r.Rounds[0].ReadyS)
	}
	phase := map[string]float64{}
	for _, p := range r.Engine.Phases {
		if _, dup := phase[p.Name]; !dup && p.DurationS >= 0 {
			phase[p.Name] = p.DurationS
		}
	}
	for _, k := range []string{"bootstrap", "load_weights", "compile", "memory_profile_kv_alloc", "graph_capture", "api_server_start"} {
		if v, ok := phase[k]; ok {
			out[k] = ptr(v)
		}
	}
	lm, okM := phase["load_model"]
	lw, okW := phase["load_weights"]
	if okM && okW && lm >= lw {
		out["weights_to_gpu"] = ptr(lm - lw)
	}
	if run := runByLabel(r.Runs, "cold_1"); run != nil && run.Error == "" {
		out["cold_ttft"] = pos(run.TTFTS)
	}
	if r.Warm != nil && r.Warm.N > 0 {
		out["warm_ttft"] = pos(r.Warm.MedianS)
	}
	var warm []float64
	for _, run := range r.Runs {
		if strings.HasPrefix(run.Label, "warm_") && run.Error == "" {
			warm = append(warm, run.TTFTS)
		}
	}
	if len(warm) > 0 {
		sort.Float64s(warm)
		rank := int(math.Ceil(0.99*float64(len(warm)))) - 1
		out["warm_p99"] = pos(warm[max(rank, 0)])
	}
	return out, len(warm) < MinSuccessesP99
}

// judgeFleet computes each metric's median and MAD across the nodes that
// measured it, fills the rows' ratios, robust z and outlier marks, and
// returns the metrics and the method in words.
func judgeFleet(rows []FleetRow, metrics []FleetMetric) ([]FleetStat, string) {
	stats := make([]FleetStat, 0, len(metrics))
	for _, m := range metrics {
		st := FleetStat{FleetMetric: m}
		var xs []float64
		for _, r := range rows {
			if v := r.Cells[m.Key].S; v != nil {
				xs = append(xs, *v)
			}
		}
		st.N = len(xs)
		if st.N == 0 {
			st.Rule = "not measured on any node"
			stats = append(stats, st)
			continue
		}
		med := median(xs)
		st.MedianS = ptr(med)
		var mad float64
		if st.N >= 3 {
			dev := make([]float64, len(xs))
			for i, x := range xs {
				dev[i] = math.Abs(x - med)
			}
			mad = median(dev)
			st.MADS = ptr(mad)
		}
		fastest := slices.Min(xs)
		switch {
		case st.N == 1:
			st.Rule = "one node: nothing to compare"
		case st.N == 2:
			st.Rule = fmt.Sprintf("2 nodes: MAD is degenerate; flagged at ≥ %.1f× the faster node", FleetPairRatio)
		case mad > 0:
			st.Rule = fmt.Sprintf("robust z > %.1f and ≥ %.1f× the median", FleetRobustZ, FleetMinRatio)
		default:
			st.Rule = fmt.Sprintf("MAD = 0: flagged above %.1f× the median", FleetMAD0Ratio)
		}
		for i := range rows {
			c := rows[i].Cells[m.Key]
			if c.S == nil {
				continue
			}
			x := *c.S
			if med > 0 {
				c.RatioToMedian = ptr(x / med)
			}
			switch {
			case st.N == 2:
				c.Outlier = fastest > 0 && x >= FleetPairRatio*fastest
			case st.N >= 3 && mad > 0:
				z := 0.6745 * (x - med) / mad
				c.RobustZ = ptr(z)
				c.Outlier = z > FleetRobustZ && med > 0 && x >= FleetMinRatio*med
			case st.N >= 3:
				c.Outlier = med > 0 && x > FleetMAD0Ratio*med
			}
			// A p99 of a few runs is their maximum: one jittery request.
			c.Outlier = c.Outlier && !c.Insufficient
			rows[i].Cells[m.Key] = c
		}
		stats = append(stats, st)
	}
	n := len(rows)
	var method string
	switch {
	case n >= 3:
		method = fmt.Sprintf("Outliers are slow nodes by the median absolute deviation across the fleet: robust z = 0.6745·(x − median)/MAD, flagged above %.1f when the value is also at least %.1f× the fleet median; where MAD = 0 (half the nodes or more agree exactly) a value above %.1f× the median is flagged instead. Fast nodes are not flagged.",
			FleetRobustZ, FleetMinRatio, FleetMAD0Ratio)
	case n == 2:
		method = fmt.Sprintf("With 2 nodes the MAD outlier test is not meaningful (MAD is half the difference, so both robust z are ±0.6745): the slower node is flagged where it takes at least %.1f× the faster one. Ratios to the fleet median (here the mean of the two) are reported as well.", FleetPairRatio)
	default:
		method = "With 1 node there is no fleet to compare against: no outlier test; ratios to the median are 1."
	}
	if n > 1 {
		method += fmt.Sprintf(" A warm p99 from fewer than %d warm runs (⚠) is about their maximum, one request, and is never flagged.", MinSuccessesP99)
	}
	return stats, method
}

// fleetFindings states each node's outliers and, for a slow start, the
// phase that makes it slow; then the failed nodes.
func fleetFindings(f *FleetResults) []string {
	stat := map[string]FleetStat{}
	for _, s := range f.Metrics {
		stat[s.Key] = s
	}
	fastestOther := func(key, node string) (string, float64) {
		name, best := "", math.Inf(1)
		for _, r := range f.Rows {
			if v := r.Cells[key].S; v != nil && r.Node != node && *v < best {
				name, best = r.Node, *v
			}
		}
		return name, best
	}
	var all []string
	for i := range f.Rows {
		row := &f.Rows[i]
		for _, m := range FleetMetrics() {
			c := row.Cells[m.Key]
			if !c.Outlier {
				continue
			}
			st := stat[m.Key]
			var s string
			switch {
			case st.N == 2:
				other, v := fastestOther(m.Key, row.Node)
				s = fmt.Sprintf("%s: %s %s is %.1f× the faster node (%s, %s) and %s the fleet median",
					row.Node, m.Label, fmtSecs(*c.S), *c.S/v, other, fmtSecs(v), fmtRatio(c.RatioToMedian))
			case c.RobustZ != nil:
				s = fmt.Sprintf("%s: %s %s is %s the fleet median %s (robust z %.1f)",
					row.Node, m.Label, fmtSecs(*c.S), fmtRatio(c.RatioToMedian), fmtSecs(*st.MedianS), *c.RobustZ)
			default:
				s = fmt.Sprintf("%s: %s %s is %s the fleet median %s (MAD = 0)",
					row.Node, m.Label, fmtSecs(*c.S), fmtRatio(c.RatioToMedian), fmtSecs(*st.MedianS))
			}
			if m.Key == "spawn_to_ready" {
				if p, extra, ok := slowestPhase(row, stat); ok {
					s += fmt.Sprintf("; the phase that makes it slow is %s (+%s over its fleet median, %s): %s", p.Label, fmtSecs(extra), fmtRatio(row.Cells[p.Key].RatioToMedian), p.Cause)
				} else {
					s += "; no single phase accounts for it"
				}
			} else {
				s += ": " + m.Cause
			}
			row.Findings = append(row.Findings, s+".")
		}
		all = append(all, row.Findings...)
	}
	if len(all) == 0 && len(f.Rows) > 1 {
		all = append(all, "No node is an outlier by the rule above.")
	}
	for _, r := range f.Rows {
		switch r.Status {
		case StatusFailed:
			all = append(all, fmt.Sprintf("%s failed: %s; its values measured before that are shown, the rest are n/a.", r.Node, sanitizeOneLine(r.Error)))
		case NodeNotRun:
			all = append(all, fmt.Sprintf("%s was not run: the fleet run ended before it.", r.Node))
		}
	}
	return all
}

// slowestPhase is the phase with the largest excess over its fleet median
// in row, if any exceeds it.
func slowestPhase(row *FleetRow, stat map[string]FleetStat) (FleetMetric, float64, bool) {
	var best FleetMetric
	extra := 0.0
	for _, m := range FleetMetrics() {
		c, st := row.Cells[m.Key], stat[m.Key]
		if !m.Phase || c.S == nil || st.MedianS == nil {
			continue
		}
		if d := *c.S - *st.MedianS; d > extra {
			best, extra = m, d
		}
	}
	return best, extra, extra > 0
}

func fmtSecs(v float64) string {
	if v < 1 {
		return fmt.Sprintf("%.3f s", v)
	}
	return fmt.Sprintf("%.2f s", v)
}

func fmtRatio(r *float64) string {
	if r == nil {
		return "n/a ×"
	}
	return fmt.Sprintf("%.2f×", *r)
}

// RenderFleetMarkdown renders fleet.md.
func RenderFleetMarkdown(f *FleetResults) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	metrics := FleetMetrics()
	p("# Fleet cold-start baseline\n\n")
	p("Run `%s`, %d gpunode(s). Status: **%s**.\n\n", f.RunID, len(f.Rows), f.Status)
	p("Settings:\n\n%s\n", renderSettings([]Setting{
		{"gpunodes run", orNA(f.Order)}, {"profile", orNA(f.Profile)}, {"cold mode", orNA(f.ColdMode)},
		{"warm runs per node", fmt.Sprint(f.WarmRuns)},
	}))
	if f.Status != StatusOK && f.Error != "" {
		p("**The fleet run failed:** %s\n\n", sanitizeOneLine(f.Error))
	}
	header := func(first string) {
		p("| %s |", first)
		for _, m := range metrics {
			p(" %s |", m.Label)
		}
		p("\n|---|")
		for range metrics {
			p("---:|")
		}
		p("\n")
	}
	p("## Nodes (seconds; ⚑ outlier)\n\n")
	p("| node | GPU | status |")
	for _, m := range metrics {
		p(" %s |", m.Label)
	}
	p("\n|---|---|---|")
	for range metrics {
		p("---:|")
	}
	p("\n")
	for _, r := range f.Rows {
		p("| %s | %s | %s |", r.Node, sanitizeOneLine(r.GPU), r.Status)
		for _, m := range metrics {
			c := r.Cells[m.Key]
			cell := "n/a"
			if c.S != nil {
				cell = fmt.Sprintf("%.3f", *c.S)
				if c.Insufficient {
					cell += " ⚠"
				}
				if c.Outlier {
					cell += " ⚑"
				}
			}
			p(" %s |", cell)
		}
		p("\n")
	}
	if slices.ContainsFunc(f.Rows, func(r FleetRow) bool { return r.Cells["warm_p99"].Insufficient }) {
		p("\n⚠ warm p99 from fewer than %d warm runs: it is about the maximum, not a tail estimate (raise --warm-runs).\n", MinSuccessesP99)
	}
	p("\n### Ratio to the fleet median\n\n")
	header("node")
	for _, r := range f.Rows {
		p("| %s |", r.Node)
		for _, m := range metrics {
			c := r.Cells[m.Key]
			cell := "n/a"
			if c.RatioToMedian != nil {
				cell = fmt.Sprintf("%.2f×", *c.RatioToMedian)
			}
			p(" %s |", cell)
		}
		p("\n")
	}
	p("\n## Outliers\n\n%s\n\n", f.Method)
	for _, s := range f.Findings {
		p("- %s\n", s)
	}
	p("\n## Phase → likely cause\n\n")
	p("| metric | likely cause when slow | nodes | fleet median (s) | MAD (s) | rule |\n|---|---|---:|---:|---:|---|\n")
	for _, s := range f.Metrics {
		p("| %s | %s | %d | %s | %s | %s |\n", s.Label, s.Cause, s.N, fmtPtr(s.MedianS, "%.3f"), fmtPtr(s.MADS, "%.3f"), s.Rule)
	}
	p("\nEach node's own report: ")
	for i, r := range f.Rows {
		if i > 0 {
			p(", ")
		}
		p("[%s](%s/%s)", r.Node, r.Dir, BaselineReport)
	}
	p(".\n")
	return b.String()
}

// renderFleetDir re-renders every node's baseline under nodes/<name>/
// from its own events.jsonl, then fleet.json and fleet.md from the fleet's
// events and the nodes' results. A node whose directory cannot be rendered
// has no measurements in the fleet (its row says why); the fleet still
// renders.
func renderFleetDir(dir string, events []Event) error {
	nodes := map[string]*Results{}
	var errs []error
	var names []string
	for _, ev := range events {
		if ev.Kind != EventFleetStart {
			continue
		}
		v, err := DecodeFleet(ev)
		if err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
		names = v.(FleetStart).GPUNodes
		break
	}
	for _, n := range names {
		nd := filepath.Join(dir, FleetNodesDir, n)
		if _, err := os.Stat(filepath.Join(nd, EventsFile)); err != nil {
			continue // not run
		}
		res, err := renderDir(nd, false)
		if err != nil {
			errs = append(errs, fmt.Errorf("gpunode %s: %w", n, err))
		}
		if res != nil {
			nodes[n] = res
		}
	}
	f, err := BuildFleet(events, nodes)
	if err != nil {
		return fmt.Errorf("%s: %w", dir, err)
	}
	js, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", FleetJSON, err)
	}
	if err := writeFileAtomic(filepath.Join(dir, FleetJSON), append(js, '\n')); err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, FleetReport), []byte(RenderFleetMarkdown(f))); err != nil {
		return err
	}
	return errors.Join(errs...)
}
