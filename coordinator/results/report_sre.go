package results

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// writeSRE writes the report's "How I'd explain TTFT to an SRE" section:
// the run's own figures, from its decomposition and warm statistics, in an
// on-call engineer's terms. A figure the run lacks reads n/a.
func writeSRE(b *strings.Builder, r *Results) {
	p := func(format string, a ...any) { fmt.Fprintf(b, format, a...) }
	top := map[string]*float64{}
	type part struct {
		name string
		s    float64
	}
	var parts []part
	var fill *float64
	parent := ""
	for _, row := range r.Decomposition {
		if !row.Part {
			parent = row.Component
			top[row.Component] = row.Seconds
			continue
		}
		if parent == "spawn → ready" && row.Depth == 1 && row.Seconds != nil {
			parts = append(parts, part{row.Component, *row.Seconds})
		}
		if row.Depth == 2 && strings.HasPrefix(row.Component, "page-cache fill") && row.Seconds != nil {
			fill = row.Seconds
		}
	}
	slices.SortStableFunc(parts, func(a, b part) int { return cmp.Compare(b.s, a.s) })
	var warm *float64
	if r.Warm != nil && r.Warm.N > 0 {
		warm = &r.Warm.MedianS
	}
	ms := func(v *float64) string {
		if v == nil {
			return "n/a"
		}
		return fmt.Sprintf("%.0f ms", *v*1000)
	}
	s := func(v *float64) string { return fmtPtr(v, "%.2f s") }

	p("## How I'd explain TTFT to an SRE\n\n")
	p("- **What it is.** Time to first token: from the client sending a request to the first generated token arriving. It is what a user waits before text starts to stream; everything after is decode speed.\n")
	p("- **Warm, it is small.** With the model loaded and the runtime warm, TTFT is queueing + prefill + API overhead: %s here (median of the warm runs).\n", ms(warm))
	p("- **After a restart, it is the whole start.** The first user waits for spawn → ready (%s) and then a cold first request (%s); restart → first token was %s.",
		s(top["spawn → ready"]), ms(top["cold TTFT (cold_1)"]), s(top["restart → first token"]))
	if rt, w := top["restart → first token"], warm; rt != nil && w != nil && *w > 0 {
		p(" That is %.0f× a warm TTFT.", *rt / *w)
	}
	p("\n")
	if len(parts) > 0 {
		var names []string
		for _, x := range parts[:min(3, len(parts))] {
			names = append(names, fmt.Sprintf("%s %.2f s", x.name, x.s))
		}
		p("- **Where a restart goes**, largest first: %s", strings.Join(names, "; "))
		if fill != nil {
			p("; reading the weights from disk into the page cache took %.2f s of the load", *fill)
		}
		p(".\n")
	}
	p("- **What to do with it.** Count a restart as that long of lost capacity per replica; keep replicas warm and weights in the page cache (or on fast local disk) to cut the start; mark a replica ready only once it lists the model and has served a first request; alert on TTFT p99 under load, not the mean, and watch vllm:num_requests_waiting, because queueing is what makes a warm TTFT grow.\n\n")
}
