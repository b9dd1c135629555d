package coordinator

import (
	"fmt"
	"math"
	"strings"
)

// DecompRow is one line of the cold-start decomposition.
type DecompRow struct {
	Component string   `json:"component"`
	Seconds   *float64 `json:"seconds"`
	// Part marks a row that is inside the row above it, not added to the total.
	Part     bool   `json:"part,omitempty"`
	Evidence string `json:"evidence"`
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
// A component with no evidence has a nil value and says why.
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
	span := func(p *Phase) *float64 {
		if p == nil {
			return nil
		}
		return ptr(p.EndS - p.StartS)
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
	for _, p := range parts {
		ph := phase(p.name)
		if ph == nil {
			continue
		}
		d := span(ph)
		if p.name == "load_model" && ph.DurationS > 0 {
			d = ptr(ph.DurationS)
		}
		covered += *d
		ev := p.evidence
		if ph.Detail != "" {
			ev += " (" + ph.Detail + ")"
		}
		rows = append(rows, DecompRow{Component: p.label, Seconds: d, Part: true, Evidence: ev})
	}
	// Sampler evidence overlaps the load; a span the samplers did not see
	// is reported as such, not as zero.
	for _, sp := range []struct{ name, label, evidence string }{
		{"weights_on_gpu", "weights arriving in GPU memory (within the load)", "sampler: NVML memory rising"},
		{"page_cache_fill", "page-cache fill (within the load)", "sampler: disk reads and Cached rising"},
	} {
		ph := phase(sp.name)
		if ph == nil {
			continue
		}
		row := DecompRow{Component: sp.label, Seconds: span(ph), Part: true, Evidence: sp.evidence}
		if strings.HasPrefix(ph.Detail, "not observed") {
			row.Seconds, row.Evidence = nil, ph.Detail
		} else if ph.Detail != "" {
			row.Evidence += " (" + ph.Detail + ")"
		}
		rows = append(rows, row)
	}
	if ready > 0 && covered > 0 {
		rest := ready - covered
		rows = append(rows, DecompRow{Component: "readiness polling and unattributed", Seconds: ptr(math.Max(rest, 0)), Part: true, Evidence: "spawn → ready minus the phases above"})
	}
	cold := runByLabel(r.Runs, "cold_1")
	if cold == nil || cold.Error != "" {
		return rows
	}
	rows = append(rows, DecompRow{Component: "cold TTFT (cold_1)", Seconds: ptr(cold.TTFTS), Evidence: "agent: first token-bearing chunk − request sent"})
	if w := r.Warm; w != nil {
		rows = append(rows,
			DecompRow{Component: "first-request extra (lazy runtime warm-up)", Seconds: ptr(cold.TTFTS - w.MedianS), Part: true, Evidence: "cold_1 − warm median"},
			DecompRow{Component: "prefill + API overhead (warm TTFT)", Seconds: ptr(w.MedianS), Part: true, Evidence: fmt.Sprintf("median of %d warm runs", w.N)})
	}
	q := DecompRow{Component: "queueing", Part: true}
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
	return rows
}
