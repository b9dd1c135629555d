package results

import (
	"fmt"
	"math"
	"strings"

	"github.com/ttftlab/ttftlab/internal/plot"
)

func fmtPtr(v *float64, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}

// RenderMarkdown renders first_token_latency.md, following the sections of
// the user's template: Server Config, Single-Run Measurements, Warm-Run
// Variance, Sanity Metrics and Observations, plus the cold-start phases.
func RenderMarkdown(r *Results) string {
	var b strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&b, format, a...) }
	p("# First-token latency: cold vs warm\n\n")
	if r.Simulated {
		p("> **Simulated engine.** These numbers come from `ttftlab sim`, a performance model of vLLM on the named GPU, not from a real GPU. Point ttftlab at a real vLLM server to measure one.\n\n")
	}
	if r.Engine.StartupScale != 0 {
		p("> **Test run: startup durations scaled by %g** (`--startup-scale`), so the phase times and spawn → ready below are not realistic.\n\n", r.Engine.StartupScale)
	}
	p("Run `%s`, status **%s**", r.RunID, r.Status)
	if !r.StartedAt.IsZero() {
		p(", started %s", r.StartedAt.Format("2006-01-02 15:04:05 UTC"))
	}
	p(".\n\n")
	if r.Error != "" {
		p("**The run failed:** %s\n\n", sanitizeOneLine(r.Error))
	}

	p("## Server Config\n\n")
	p("| item | value |\n|---|---|\n")
	p("| MODEL | `%s` (served as `%s`) |\n", r.Engine.Model, r.Engine.ServedModelName)
	p("| engine | %s, version %s |\n", orNA(r.Engine.Kind), orNA(r.Engine.Version))
	p("| engine flags | `%s` |\n", sanitizeOneLine(strings.Join(r.Engine.Argv, " ")))
	gpus := "none visible"
	if len(r.Node.GPUs) > 0 {
		gpus = strings.Join(r.Node.GPUs, "; ")
	}
	if !r.Node.NVMLAvailable {
		gpus += " (" + orNA(r.Node.NVMLError) + ")"
	} else if r.Node.Driver != "" {
		gpus += ", driver " + r.Node.Driver
	}
	p("| GPU | %s |\n", sanitizeOneLine(gpus))
	p("| OS / kernel | %s / %s |\n", orNA(r.Node.OS), orNA(r.Node.Kernel))
	p("| host | %s, %d CPUs |\n", orNA(r.Node.Hostname), r.Node.CPUs)
	p("| API / max_tokens | %s / %d |\n", r.Spec.API, r.Spec.MaxTokens)
	p("| restart mode | %s |\n", r.Spec.ColdMode)
	ready := "n/a (the engine never became ready)"
	if r.Engine.ReadyS > 0 {
		ready = fmt.Sprintf("%.2f s", r.Engine.ReadyS)
	}
	p("| spawn → ready | %s |\n\n", ready)

	if len(r.Engine.Phases) > 0 {
		p("### Cold-start phases\n\n")
		p("| phase | start_s | end_s | duration_s | source | detail |\n|---|---:|---:|---:|---|---|\n")
		for _, ph := range r.Engine.Phases {
			p("| %s | %.2f | %.2f | %.2f | %s | %s |\n", ph.Name, ph.StartS, ph.EndS, ph.DurationS, ph.Source, sanitizeOneLine(ph.Detail))
		}
		p("\n![Cold-start phases](%s)\n\n", PhasesSVG)
	}
	if r.Sanity.Samples > 0 {
		p("![Cold-start timeline: GPU, CPU, page cache and disk reads](%s)\n\n", TimelineSVG)
	}

	if len(r.Decomposition) > 0 {
		p("### Restart to first token, decomposed\n\n")
		p("%s\n", RenderDecomposition(r.Decomposition))
	}

	if s := r.ColdSpread; s != nil {
		p("### Cold start over %d of %d restarts\n\n", s.N, len(r.Rounds))
		p("| round | spawn → ready s | cold TTFT s | warm median TTFT s | restart → first token s |\n|---|---:|---:|---:|---:|\n")
		for _, rr := range r.Rounds {
			p("| %d | %s | %s | %s | %s |\n", rr.Round, fmtPtr(rr.ReadyS, "%.3f"), fmtPtr(rr.ColdTTFTS, "%.4f"), fmtPtr(rr.WarmMedianS, "%.4f"), fmtPtr(rr.RestartToFirstTokenS, "%.3f"))
		}
		p("| **min / median / max** | %.3f / %.3f / %.3f | %.4f / %.4f / %.4f | | %.3f / %.3f / %.3f |\n\n",
			s.ReadyMinS, s.ReadyMedianS, s.ReadyMaxS, s.ColdTTFTMinS, s.ColdTTFTMedianS, s.ColdTTFTMaxS,
			s.RestartToFirstMinS, s.RestartToFirstMedS, s.RestartToFirstMaxS)
	}

	p("## Single-Run Measurements (Cold vs Warm)\n\n")
	p("| run | ttft_s | e2e_s | tokens | notes |\n|---|---:|---:|---:|---|\n")
	for _, label := range []string{"cold_1", "warm_1"} {
		run := runByLabel(r.Runs, label)
		if run == nil {
			p("| %s | n/a | n/a | n/a | not run |\n", label)
			continue
		}
		p("| %s | %s |\n", label, runCells(run))
	}
	p("\n")

	p("## Warm-Run Variance (steady state)\n\n")
	p("Prompt (%s API, max_tokens %d):\n\n> %s\n\n", r.Spec.API, r.Spec.MaxTokens, sanitizeOneLine(r.Spec.Prompt))
	p("| run | ttft_s | e2e_s | tokens | notes |\n|---|---:|---:|---:|---|\n")
	for _, run := range r.Runs {
		if !strings.HasPrefix(run.Label, "warm_") {
			continue
		}
		p("| %s | %s |\n", strings.TrimPrefix(run.Label, "warm_"), runCells(&run))
	}
	p("\n")
	if w := r.Warm; w != nil {
		p("| statistic | ttft_s |\n|---|---:|\n")
		p("| min | %.4f |\n| median | %.4f |\n| max | %.4f |\n| mean ± stddev | %.4f ± %s |\n\n", w.MinS, w.MedianS, w.MaxS, w.MeanS, fmtPtr(w.StddevS, "%.4f"))
		p("![TTFT per run](%s)\n\n![Warm TTFT distribution](%s)\n\n", RunsSVG, WarmCDFSVG)
	} else {
		p("No successful warm run.\n\n")
	}

	p("## Sanity Metrics\n\n")
	s := r.Sanity
	p("| metric | value |\n|---|---|\n")
	gpuVal := func(v *float64, format string) string {
		if v == nil {
			return "not measured: " + strings.TrimPrefix(orNA(s.GPUNote), "not measured: ")
		}
		return fmt.Sprintf(format, *v)
	}
	p("| GPU memory before server start | %s |\n", gpuVal(s.GPUMemBeforeMiB, "%.0f MiB"))
	p("| GPU memory after cold request | %s |\n", gpuVal(s.GPUMemAfterColdMiB, "%.0f MiB"))
	if s.GPUUtilWarmPct != nil {
		p("| GPU utilisation during warm probes | %.0f%% mean, %.0f%% max |\n", *s.GPUUtilWarmPct, *s.GPUUtilWarmMaxPct)
	} else {
		p("| GPU utilisation during warm probes | %s |\n", gpuVal(nil, ""))
	}
	p("| engine CPU, cold request | %s |\n", fmtPtr(s.CPUColdPct, "%.0f%%"))
	p("| engine CPU, warm requests | %s |\n", fmtPtr(s.CPUWarmPct, "%.0f%%"))
	p("\nCPU: %s. Samples taken: %d.\n\n", s.CPUNote, s.Samples)

	if len(r.Histograms) > 0 {
		p("### Merged agent histograms (ms)\n\n")
		p("| metric | count | mean | p50 | p90 | p99 | max |\n|---|---:|---:|---:|---:|---:|---:|\n")
		marked := false
		for _, m := range []string{"ttft", "e2e", "itl", "icl", "tpot"} {
			h, ok := r.Histograms[m]
			if !ok || h.Count == 0 {
				p("| %s | 0 | n/a | n/a | n/a | n/a | n/a |\n", m)
				continue
			}
			v := judgeSamples(uint64(h.Count), nil, nil)
			warn := func(pc string) string {
				if v.marks(pc) {
					marked = true
					return " ⚠"
				}
				return ""
			}
			p("| %s | %d | %.2f | %.2f | %.2f%s | %.2f%s | %.2f |\n", m, h.Count, h.Mean, h.P50, h.P90, warn("p90"), h.P99, warn("p99"), h.Max)
		}
		p("\n")
		if marked {
			p("⚠ insufficient: fewer than %d values (p90) or %d (p99); see Observations.\n\n", MinSuccessesP90, MinSuccessesP99)
		}
	}

	writeSRE(&b, r)
	p("## Observations\n\n")
	if len(r.Observations) == 0 {
		p("- Nothing to observe: no request completed.\n")
	}
	for _, o := range r.Observations {
		p("- %s\n", o)
	}
	for _, w := range r.Warnings {
		p("- Warning: %s\n", w)
	}
	return b.String()
}

func orNA(s string) string {
	if s == "" {
		return "n/a"
	}
	return s
}

// runCells renders a run's ttft_s, e2e_s, tokens and notes cells; a failed
// run has no latencies, so they read n/a rather than 0.
func runCells(r *Run) string {
	if r.Error != "" {
		return "n/a | n/a | n/a | " + runNote(r)
	}
	return fmt.Sprintf("%.4f | %.4f | %d | %s", r.TTFTS, r.E2ES, r.OutputTokens, runNote(r))
}

func runNote(r *Run) string {
	if r.Error != "" {
		return "error: " + sanitizeOneLine(r.Error)
	}
	return fmt.Sprintf("first byte %.4f s, prompt %d tokens", r.FirstByteS, r.PromptTokens)
}

// The plots written next to the report.
const (
	RunsSVG   = "ttft_runs.svg"
	PhasesSVG = "startup_phases.svg"
)

// renderPlots returns the SVG files of a run, by name.
func renderPlots(r *Results) map[string]string {
	out := map[string]string{}
	var bars []plot.Bar
	for _, run := range r.Runs {
		v := run.TTFTS * 1000
		if run.Error != "" {
			v = math.NaN()
		}
		bars = append(bars, plot.Bar{Label: run.Label, Value: v, Highlight: strings.Contains(run.Label, "cold_"), Note: "failed: no TTFT"})
	}
	if len(bars) > 0 {
		out[RunsSVG] = plot.Bars("TTFT per run (cold in red)", " ms", bars)
	}
	src := r.Engine.Timeline
	if len(src) == 0 {
		src = r.Engine.Phases
	}
	var spans []plot.Span
	for _, ph := range src {
		spans = append(spans, plot.Span{Label: ph.Name, Start: ph.StartS, End: ph.EndS, Group: ph.Source, NotMeasured: notObserved(ph), Detail: ph.Detail})
	}
	if len(spans) > 0 {
		out[PhasesSVG] = plot.Gantt("Engine cold start: spawn to ready", spans)
	}
	return out
}
