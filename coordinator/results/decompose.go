package results

import (
	"fmt"
	"math"
	"strings"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

// DecompRow is one line of the cold-start decomposition.
type DecompRow struct {
	Component string   `json:"component"`
	Seconds   *float64 `json:"seconds"`
	// Part marks a row that is inside a row above it, not added to the
	// total; Depth says how deep: 1 inside the nearest row above of depth
	// 0, 2 inside the nearest row above of depth 1. A part never exceeds
	// the row it is inside.
	Part     bool   `json:"part,omitempty"`
	Depth    int    `json:"depth,omitempty"`
	Evidence string `json:"evidence"`
}

// StartReads is the gpunode's attribution of what the engine read while
// starting (see the proto's StartReads). A nil figure was not measured.
type StartReads struct {
	WeightFiles                  int     `json:"weight_files"`
	WeightBytes                  int64   `json:"weight_bytes"`
	WeightFilesNote              string  `json:"weight_files_note,omitempty"`
	ResidentBeforeBytes          *int64  `json:"weight_resident_before_bytes"`
	ResidentAfterBytes           *int64  `json:"weight_resident_after_bytes"`
	LoadPhase                    string  `json:"load_phase,omitempty"`
	LoadStartS                   float64 `json:"load_start_s"`
	LoadEndS                     float64 `json:"load_end_s"`
	BootstrapReadBytes           *int64  `json:"bootstrap_engine_read_bytes"`
	BootstrapPageCacheDeltaBytes *int64  `json:"bootstrap_page_cache_delta_bytes"`
	LoadReadBytes                *int64  `json:"load_engine_read_bytes"`
	LoadDiskReadBytes            *int64  `json:"load_disk_read_bytes"`
	LoadPageCacheDeltaBytes      *int64  `json:"load_page_cache_delta_bytes"`
	WeightsGenerated             string  `json:"weights_generated,omitempty"`
}

// startReads converts the gpunode's figures, which crossed a process
// boundary: a byte count that cannot be (a negative read) is dropped as not
// measured, and so is a window that is not a window.
func startReads(p *pb.StartReads) *StartReads {
	if p == nil {
		return nil
	}
	nonNeg := func(v *int64) *int64 {
		if v == nil || *v < 0 {
			return nil
		}
		return v
	}
	r := &StartReads{
		WeightFiles: int(max(p.GetWeightFiles(), 0)), WeightBytes: max(p.GetWeightBytes(), 0), WeightFilesNote: p.GetWeightFilesNote(),
		ResidentBeforeBytes: nonNeg(p.WeightResidentBeforeBytes), ResidentAfterBytes: nonNeg(p.WeightResidentAfterBytes),
		LoadPhase: p.GetLoadPhase(), LoadStartS: p.GetLoadStartS(), LoadEndS: p.GetLoadEndS(),
		BootstrapReadBytes: nonNeg(p.BootstrapEngineReadBytes), BootstrapPageCacheDeltaBytes: p.BootstrapPageCacheDeltaBytes,
		LoadReadBytes: nonNeg(p.LoadEngineReadBytes), LoadDiskReadBytes: nonNeg(p.LoadDiskReadBytes), LoadPageCacheDeltaBytes: p.LoadPageCacheDeltaBytes,
		WeightsGenerated: p.GetWeightsGenerated(),
	}
	if bad := func(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) || f < 0 }; bad(r.LoadStartS) || bad(r.LoadEndS) || r.LoadEndS < r.LoadStartS {
		r.LoadPhase, r.LoadStartS, r.LoadEndS = "", 0, 0
	}
	return r
}

// readThresholdBytes is the least read that counts as reading: 1 MiB, as
// the gpunode's sampler phases.
const readThresholdBytes = 1 << 20

func gibOf(b int64) string { return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30)) }

func gibOrUnknown(b *int64, signed bool) string {
	if b == nil {
		return "?"
	}
	if signed {
		return fmt.Sprintf("%+.2f GiB", float64(*b)/(1<<30))
	}
	return gibOf(*b)
}

// span is a window of a start, in seconds since spawn.
type span struct{ start, end float64 }

func (w span) len() float64 { return math.Max(w.end-w.start, 0) }

// clip cuts w to the parent span p.
func (w span) clip(p span) span {
	s, e := math.Max(w.start, p.start), math.Min(w.end, p.end)
	if e < s {
		e = s
	}
	return span{s, e}
}

// Decompose splits restart-to-first-token into its parts, from the evidence
// the run gathered, never by assumption:
//
//	restart → first token = spawn → ready (the engine's phases, from its log,
//	the samplers and the supervisor) + cold TTFT, and
//	cold TTFT = first-request extra (cold − warm median: lazy runtime
//	initialisation) + warm TTFT (prefill of this prompt + API and streaming
//	overhead) + queueing (zero when the engine reports nothing waiting).
//
// Evidence is attributed to its window and cause: reads before the weight
// load are the bootstrap's (libraries, imports); the page-cache fill counts
// the model's weight files only (mincore), or, where they are unknown, the
// reads inside the weight-load window, as an estimate. A part never exceeds
// the row it is inside; parts that overlap say so. A component with no
// evidence has a nil value and says why.
func Decompose(r *Results) []DecompRow {
	var rows []DecompRow
	phase := func(name string) *Phase {
		for _, src := range [][]Phase{r.Engine.Timeline, r.Engine.Phases} {
			for i := range src {
				if src[i].Name == name {
					return &src[i]
				}
			}
		}
		return nil
	}
	ready := r.Engine.ReadyS
	if ready > 0 {
		rows = append(rows, DecompRow{Component: "spawn → ready", Seconds: ptr(ready), Evidence: "supervisor: process start to /v1/models listing the model"})
	}
	type part struct{ name, label, evidence string }
	parts := []part{
		{"bootstrap", "process start, imports, config", "log: spawn → \"Starting to load model\""},
		{"load_model", "weights: disk/page cache → GPU", "log: \"Model loading took …\""},
		{"compile", "torch.compile", "log: dynamo and compile lines"},
		{"memory_profile_kv_alloc", "memory profile and KV cache allocation", "log: \"GPU KV cache size\""},
		{"graph_capture", "CUDA graph capture", "log: \"Graph capturing finished\""},
		{"api_server_start", "API server start", "log: init done → \"Application startup complete.\""},
	}
	var covered float64
	loadSeen := false
	for _, p := range parts {
		ph := phase(p.name)
		if ph == nil {
			continue
		}
		d := ph.EndS - ph.StartS
		if p.name == "load_model" && ph.DurationS > 0 {
			d = ph.DurationS
		}
		covered += d
		ev := p.evidence
		if ph.Detail != "" {
			ev += " (" + ph.Detail + ")"
		}
		rows = append(rows, DecompRow{Component: p.label, Seconds: ptr(d), Part: true, Depth: 1, Evidence: ev})
		// The parent's window: its span, no longer than the duration it
		// reports.
		win := span{ph.StartS, math.Min(ph.EndS, ph.StartS+d)}
		switch p.name {
		case "bootstrap":
			rows = append(rows, bootstrapReads(r.Engine.Reads, phase, win, 2)...)
		case "load_model":
			loadSeen = true
			rows = append(rows, loadEvidence(r.Engine.Reads, phase, win, 2)...)
		}
	}
	if !loadSeen && ready > 0 {
		// No weight-load phase in the log: the evidence is inside the
		// whole start.
		rows = append(rows, loadEvidence(r.Engine.Reads, phase, span{0, ready}, 1)...)
	}
	if ready > 0 && covered > 0 {
		rest := ready - covered
		ev := "spawn → ready minus the phases above"
		if rest < 0 {
			ev += fmt.Sprintf("; the phases above add up to %.3f s, more than spawn → ready: they overlap", covered)
		}
		rows = append(rows, DecompRow{Component: "readiness polling and unattributed", Seconds: ptr(math.Max(rest, 0)), Part: true, Depth: 1, Evidence: ev})
	}
	cold := runByLabel(r.Runs, "cold_1")
	if cold == nil || cold.Error != "" {
		return clipToParents(rows)
	}
	rows = append(rows, DecompRow{Component: "cold TTFT (cold_1)", Seconds: ptr(cold.TTFTS), Evidence: "agent: first token-bearing chunk − request sent"})
	if w := r.Warm; w != nil {
		rows = append(rows,
			DecompRow{Component: "first-request extra (lazy runtime warm-up)", Seconds: ptr(cold.TTFTS - w.MedianS), Part: true, Depth: 1, Evidence: "cold_1 − warm median"},
			DecompRow{Component: "prefill + API overhead (warm TTFT)", Seconds: ptr(w.MedianS), Part: true, Depth: 1, Evidence: fmt.Sprintf("median of %d warm runs", w.N)})
	}
	q := DecompRow{Component: "queueing", Part: true, Depth: 1}
	switch {
	case r.Sanity.EngineWaitingMax == nil:
		q.Evidence = "not measured: the engine exposed no vllm:num_requests_waiting during cold_1; with one request at a time it is expected to be 0"
	case *r.Sanity.EngineWaitingMax == 0:
		q.Seconds = ptr(0)
		q.Evidence = "engine /metrics: vllm:num_requests_waiting stayed 0 during cold_1"
	default:
		q.Evidence = fmt.Sprintf("engine /metrics: up to %.0f requests waited during cold_1, so part of the cold TTFT is queueing", *r.Sanity.EngineWaitingMax)
	}
	rows = append(rows, q)
	if ready > 0 {
		rows = append(rows, DecompRow{Component: "restart → first token", Seconds: ptr(ready + cold.TTFTS), Evidence: "spawn → ready + cold TTFT"})
	}
	return clipToParents(rows)
}

// bootstrapReads is the line for the reads before the weight load:
// libraries and imports, never weights.
func bootstrapReads(rd *StartReads, phase func(string) *Phase, parent span, depth int) []DecompRow {
	if rd == nil || rd.BootstrapReadBytes == nil || rd.LoadPhase == "" {
		return nil
	}
	row := DecompRow{Part: true, Depth: depth}
	if *rd.BootstrapReadBytes < readThresholdBytes {
		row.Component = "bootstrap reads (libraries, imports): none seen"
		row.Evidence = fmt.Sprintf("sampler: the engine read %s between spawn and the weight load", gibOf(*rd.BootstrapReadBytes))
		return []DecompRow{row}
	}
	row.Component = "bootstrap reads (libraries, imports): " + gibOf(*rd.BootstrapReadBytes)
	row.Evidence = fmt.Sprintf("sampler: engine read_bytes between spawn and the weight load (%.3f s), page cache %s; not weights", rd.LoadStartS, gibOrUnknown(rd.BootstrapPageCacheDeltaBytes, true))
	if ph := phase("bootstrap_reads"); ph != nil {
		if w := (span{ph.StartS, ph.EndS}).clip(parent); w.len() > 0 {
			row.Seconds = ptr(w.len())
			row.Evidence += fmt.Sprintf("; reads seen from %.3f s to %.3f s, overlapping the imports' CPU work", w.start, w.end)
		}
	}
	return []DecompRow{row}
}

// loadEvidence is the page-cache fill and the weights arriving in GPU
// memory, both inside parent, the weight-load window.
func loadEvidence(rd *StartReads, phase func(string) *Phase, parent span, depth int) []DecompRow {
	var rows []DecompRow
	within := func(name string) (span, *Phase) {
		ph := phase(name)
		if ph == nil || strings.HasPrefix(ph.Detail, "not observed") || strings.HasPrefix(ph.Detail, "no weight files read") {
			return span{}, ph
		}
		return span{ph.StartS, ph.EndS}.clip(parent), ph
	}
	fillW, fillPh := within("page_cache_fill")
	gpuW, gpuPh := within("weights_on_gpu")
	fill := pageCacheFill(rd, fillW, fillPh, parent)
	fill.Part, fill.Depth = true, depth
	var gpu *DecompRow
	if gpuPh != nil {
		g := DecompRow{Component: "weights arriving in GPU memory", Part: true, Depth: depth, Evidence: "sampler: NVML memory rising inside the load"}
		if strings.HasPrefix(gpuPh.Detail, "not observed") {
			g.Evidence = gpuPh.Detail
		} else {
			if gpuPh.Detail != "" {
				g.Evidence += " (" + gpuPh.Detail + ")"
			}
			if gpuW.len() > 0 {
				g.Seconds = ptr(gpuW.len())
			}
		}
		gpu = &g
	}
	if fill.Seconds != nil && gpu != nil && gpu.Seconds != nil {
		if o := fillW.clip(gpuW).len(); o > 0 {
			note := fmt.Sprintf("; overlaps %s by %.3f s (not additive)", "the other", o)
			fill.Evidence += strings.Replace(note, "the other", "weights arriving in GPU memory", 1)
			gpu.Evidence += strings.Replace(note, "the other", "the page-cache fill", 1)
		}
	}
	if fill.Component != "" {
		rows = append(rows, fill)
	}
	if gpu != nil {
		rows = append(rows, *gpu)
	}
	return rows
}

// pageCacheFill is the page-cache fill line: the model's weight files
// entering the page cache. w is the fill's span inside parent, from the
// timeline.
func pageCacheFill(rd *StartReads, w span, ph *Phase, parent span) DecompRow {
	row := DecompRow{}
	seconds := func() *float64 {
		if w.len() > 0 {
			return ptr(w.len())
		}
		return nil
	}
	loadWin := func() string {
		if rd.LoadReadBytes == nil {
			return "no samples inside the load window"
		}
		return fmt.Sprintf("inside the %s window (%.3f–%.3f s) the engine read %s, the disks %s, page cache %s", rd.LoadPhase, rd.LoadStartS, rd.LoadEndS,
			gibOf(*rd.LoadReadBytes), gibOrUnknown(rd.LoadDiskReadBytes, false), gibOrUnknown(rd.LoadPageCacheDeltaBytes, true))
	}
	why := ""
	if rd != nil && rd.WeightFilesNote != "" {
		why = " (" + rd.WeightFilesNote + ")"
	}
	switch {
	case rd == nil && ph == nil:
		return row
	case rd == nil:
		// A node that attributed nothing: the sampler's span, inside the load.
		row.Component = "page-cache fill (cause not attributed)"
		row.Evidence = "sampler: disk reads and Cached rising; the gpunode sent no weight-file evidence, so these reads may not be weights"
		if strings.HasPrefix(ph.Detail, "not observed") {
			row.Evidence = ph.Detail
		} else {
			row.Seconds = seconds()
			if ph.Detail != "" {
				row.Evidence += " (" + ph.Detail + ")"
			}
			if raw := ph.EndS - ph.StartS; raw > w.len()+1e-9 {
				row.Evidence += fmt.Sprintf("; the sampler's span %.3f–%.3f s was cut to the load window %.3f–%.3f s", ph.StartS, ph.EndS, parent.start, parent.end)
			}
		}
	case rd.WeightsGenerated != "":
		row.Component = "page-cache fill: no weight files read"
		row.Evidence = "the engine loads no weights from disk: " + rd.WeightsGenerated
	case rd.WeightFiles > 0 && rd.ResidentBeforeBytes != nil && rd.ResidentAfterBytes != nil:
		filled := *rd.ResidentAfterBytes - *rd.ResidentBeforeBytes
		mc := fmt.Sprintf("mincore over %d weight files (%s): %s resident before spawn → %s after ready", rd.WeightFiles, gibOf(rd.WeightBytes), gibOf(*rd.ResidentBeforeBytes), gibOf(*rd.ResidentAfterBytes))
		if filled < readThresholdBytes {
			row.Component = "page-cache fill: not needed (weight files already cached)"
			row.Evidence = mc
			break
		}
		row.Component = "page-cache fill (weight files, +" + gibOf(filled) + ")"
		row.Seconds = seconds()
		row.Evidence = mc + "; " + loadWin()
		if row.Seconds == nil {
			row.Evidence += "; no reads seen inside the load window, so its duration is unknown"
		}
	case rd.WeightFiles > 0:
		row.Component = "page-cache fill (weight files)"
		row.Evidence = fmt.Sprintf("%d weight files (%s) found, but their residency was not measured; %s", rd.WeightFiles, gibOf(rd.WeightBytes), loadWin())
	case rd.LoadPhase == "":
		row.Component = "page-cache fill: not attributable"
		row.Evidence = "no weight files known" + why + " and the log marks no weight-load phase, so reads cannot be told from the bootstrap's"
	case rd.LoadReadBytes == nil:
		row.Component = "page-cache fill: not observed"
		row.Evidence = "no weight files known" + why + " and " + loadWin()
	case *rd.LoadReadBytes < readThresholdBytes && (rd.LoadDiskReadBytes == nil || *rd.LoadDiskReadBytes < readThresholdBytes):
		row.Component = "page-cache fill: no weight files read"
		row.Evidence = "no weight files known" + why + " and no reads inside the weight load: " + loadWin()
	default:
		row.Component = "page-cache fill (estimate from the load window)"
		row.Seconds = seconds()
		row.Evidence = "weight files unknown" + why + "; an estimate from the window, not from the files: " + loadWin()
	}
	return row
}

// clipToParents holds the decomposition's rule: no part exceeds the row it
// is inside (the nearest row above of lower depth). A part that would is
// cut to its parent and says what was measured.
func clipToParents(rows []DecompRow) []DecompRow {
	for i := range rows {
		d := rows[i].Depth
		if d == 0 || rows[i].Seconds == nil {
			continue
		}
		for j := i - 1; j >= 0; j-- {
			if rows[j].Depth >= d {
				continue
			}
			if p := rows[j].Seconds; p != nil && *rows[i].Seconds > *p+1e-9 {
				rows[i].Evidence += fmt.Sprintf("; measured %.3f s, more than the %.3f s of %q it is part of, so cut to it", *rows[i].Seconds, *p, rows[j].Component)
				rows[i].Seconds = ptr(*p)
			}
			break
		}
	}
	return rows
}

// RenderDecomposition renders the rows as a Markdown table, parts indented
// under the row they are inside.
func RenderDecomposition(rows []DecompRow) string {
	var b strings.Builder
	b.WriteString("| component | seconds | evidence |\n|---|---:|---|\n")
	for _, d := range rows {
		name := "**" + d.Component + "**"
		if depth := max(d.Depth, boolInt(d.Part)); depth > 0 {
			name = strings.Repeat("&nbsp;&nbsp;", depth) + "↳ " + d.Component
		}
		fmt.Fprintf(&b, "| %s | %s | %s |\n", sanitizeOneLine(name), fmtPtr(d.Seconds, "%.3f"), sanitizeOneLine(d.Evidence))
	}
	return b.String()
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}
