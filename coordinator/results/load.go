package results

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/ttftlab/ttftlab/internal/hdr"
)

// MetricSummary is one metric's digest in milliseconds.
type MetricSummary struct {
	// Count is the number of samples; the JSON leaves it out, as
	// `ttftlab load --json` always has.
	Count uint64  `json:"-"`
	Mean  float64 `json:"mean"`
	P50   float64 `json:"p50"`
	P90   float64 `json:"p90"`
	P95   float64 `json:"p95"`
	P99   float64 `json:"p99"`
	Max   float64 `json:"max"`
}

// LoadSummary is the digest of one merged load run, what `ttftlab load
// --json` prints as one object. A statistic with no samples is nil (null).
type LoadSummary struct {
	// Status is "ok", or "failed" when the error budget ended the run, it
	// was interrupted, or no request succeeded; Reason then says why.
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
	// CutAtDeadline is true when the wall-clock bound (`load --duration`)
	// ended the run with requests still in flight: they are counted as
	// Interrupted, and the status stays "ok" unless something else failed.
	// Note then says so.
	CutAtDeadline bool   `json:"cut_at_deadline"`
	Note          string `json:"note,omitempty"`
	// Requests is the measured attempts sent: Successes + Errors +
	// Interrupted (docs/metrics.md).
	Requests         uint64            `json:"requests"`
	Successes        uint64            `json:"successes"`
	Errors           uint64            `json:"errors"`
	Interrupted      uint64            `json:"interrupted"`
	ErrorsByKind     map[string]uint64 `json:"errors_by_kind"`
	TTFT             *MetricSummary    `json:"ttft_ms"`
	TTFTSched        *MetricSummary    `json:"ttft_sched_ms"`
	ITL              *MetricSummary    `json:"itl_ms"`
	ICL              *MetricSummary    `json:"icl_ms"`
	TPOT             *MetricSummary    `json:"tpot_ms"`
	E2E              *MetricSummary    `json:"e2e_ms"`
	DispatchLag      *MetricSummary    `json:"dispatch_lag_ms"`
	OutputTokens     uint64            `json:"output_tokens"`
	OutputTokensPerS *float64          `json:"output_tokens_per_s"`
	RequestsPerS     *float64          `json:"requests_per_s"`
	ClientBound      bool              `json:"client_bound"`
	// GoodRequests and GoodputPerS are present when SLOs were given.
	GoodRequests   *uint64  `json:"good_requests,omitempty"`
	GoodputPerS    *float64 `json:"goodput_requests_per_s,omitempty"`
	UsageSource    *string  `json:"usage_source"`
	DurationS      *float64 `json:"duration_s"`
	WarmupExcluded uint64   `json:"warmup_excluded"`
	// Transport and FirstTokenClock are the HTTP client and the clock TTFT
	// was taken with (docs/metrics.md); the caller sets them.
	Transport       string `json:"transport"`
	FirstTokenClock string `json:"first_token_clock"`
}

// SummarizeLoad digests the run that m merged. sloSet says whether
// goodput SLOs were given; interrupted, when not nil, is why the run
// stopped before its end. The status is "failed" when the run was
// interrupted, an agent's error budget ended it, or no request succeeded.
func SummarizeLoad(m *Merger, sloSet bool, interrupted error) LoadSummary {
	set := m.Histograms()
	ms := func(name string) *MetricSummary {
		h, ok := set[name]
		if !ok || h.Count() == 0 {
			return nil
		}
		s := h.Summarize()
		return &MetricSummary{Count: uint64(h.Count()), Mean: round3(s.Mean), P50: s.P50, P90: s.P90, P95: s.P95, P99: s.P99, Max: s.Max}
	}
	s := LoadSummary{
		Status:   "ok",
		Requests: m.OK + m.Failed + m.Interrupted, Successes: m.OK, Errors: m.Failed, Interrupted: m.Interrupted, ErrorsByKind: m.ErrorsByKind,
		TTFT: ms(hdr.TTFT), TTFTSched: ms(hdr.TTFTSched), ITL: ms(hdr.ITL), ICL: ms(hdr.ICL),
		TPOT: ms(hdr.TPOT), E2E: ms(hdr.E2E), DispatchLag: ms(hdr.DispatchLag),
		OutputTokens: m.OutputTokens, ClientBound: m.ClientBound, WarmupExcluded: m.WarmupRequests,
	}
	if u := UsageName(m.Usage); u != "" {
		s.UsageSource = &u
	}
	// The agents' measured span; a run that finished no measured request
	// has none, and its rates are null.
	if start, end := m.MeasuredStartNs, m.MeasuredEndNs; start > 0 && end > start {
		d := float64(end-start) / 1e9
		s.DurationS = ptr(round3(d))
		s.RequestsPerS = ptr(round3(float64(m.OK) / d))
		s.OutputTokensPerS = ptr(round3(float64(m.OutputTokens) / d))
		if sloSet {
			s.GoodputPerS = ptr(round3(float64(m.Good) / d))
		}
	}
	if sloSet {
		good := m.Good
		s.GoodRequests = &good
	}
	switch {
	case interrupted != nil:
		s.Status, s.Reason = "failed", fmt.Sprintf("interrupted; the summary covers what was measured: %v", interrupted)
	case len(m.Aborts) > 0:
		s.Status, s.Reason = "failed", "run failed: "+m.Aborts[len(m.Aborts)-1].Reason
	case m.OK == 0:
		s.Status, s.Reason = "failed", fmt.Sprintf("no request succeeded: %d attempts, %d failed (%s)", s.Requests, m.Failed, KindCounts(m.ErrorsByKind))
	}
	return s
}

func round3(v float64) float64 {
	return float64(int64(v*1000+0.5)) / 1000
}

// KindCounts renders error counts as "kind=n kind=n", most frequent first.
func KindCounts(errs map[string]uint64) string {
	if len(errs) == 0 {
		return "no errors recorded"
	}
	kinds := slices.SortedFunc(maps.Keys(errs), func(a, b string) int {
		if errs[a] != errs[b] {
			return cmp.Compare(errs[b], errs[a])
		}
		return strings.Compare(a, b)
	})
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%s=%d", k, errs[k])
	}
	return strings.Join(parts, " ")
}

// Reporter writes one rendering of a result.
type Reporter func(io.Writer) error

// LoadJSON reports s as one JSON object on one line.
func LoadJSON(s LoadSummary) Reporter {
	return func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetEscapeHTML(false)
		return enc.Encode(s)
	}
}

// LoadRun describes a load run for LoadTable's header.
type LoadRun struct {
	// BaseURL, Model and API name the target.
	BaseURL, Model, API string
	// Load describes the load model, for example "closed loop,
	// concurrency 8".
	Load string
	// SLO describes the goodput objectives; "" when none were given.
	SLO string
	// ClientBoundP99 is the dispatch-lag p99 above which the run is
	// flagged client-bound.
	ClientBoundP99 time.Duration
	// ErrorSamples are examples of failed requests, printed at the end.
	ErrorSamples []string
}

// naOr formats *v, or "n/a" when v is nil.
func naOr[T any](v *T, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}

// LoadTable reports s as `ttftlab load`'s text table. A statistic with no
// samples is n/a.
func LoadTable(s LoadSummary, run LoadRun) Reporter {
	return func(w io.Writer) error {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "============ ttftlab load ============")
		fmt.Fprintf(tw, "Target:\t%s (%s, %s)\n", run.BaseURL, run.Model, run.API)
		fmt.Fprintf(tw, "Load:\t%s\n", run.Load)
		if s.Transport != "" {
			fmt.Fprintf(tw, "Client:\t%s, first-token clock %s\n", s.Transport, s.FirstTokenClock)
		}
		fmt.Fprintf(tw, "Status:\t%s\n", s.Status)
		if s.Reason != "" {
			fmt.Fprintf(tw, "Reason:\t%s\n", s.Reason)
		}
		if s.Note != "" {
			fmt.Fprintf(tw, "Note:\t%s\n", s.Note)
		}
		fmt.Fprintf(tw, "Requests (measured):\t%d\n", s.Requests)
		fmt.Fprintf(tw, "Successes:\t%d\n", s.Successes)
		fmt.Fprintf(tw, "Errors:\t%d\n", s.Errors)
		fmt.Fprintf(tw, "Interrupted:\t%d\n", s.Interrupted)
		for _, k := range slices.Sorted(maps.Keys(s.ErrorsByKind)) {
			fmt.Fprintf(tw, "  %s:\t%d\n", k, s.ErrorsByKind[k])
		}
		fmt.Fprintf(tw, "Warm-up requests excluded:\t%d\n", s.WarmupExcluded)
		fmt.Fprintf(tw, "Duration (s):\t%s\n", naOr(s.DurationS, "%.3f"))
		fmt.Fprintf(tw, "Request throughput (req/s):\t%s\n", naOr(s.RequestsPerS, "%.3f"))
		if s.GoodRequests != nil {
			fmt.Fprintf(tw, "Goodput (req/s meeting %s):\t%s (%d good)\n", run.SLO, naOr(s.GoodputPerS, "%.3f"), *s.GoodRequests)
		}
		fmt.Fprintf(tw, "Output tokens:\t%d\n", s.OutputTokens)
		fmt.Fprintf(tw, "Output throughput (tok/s):\t%s\n", naOr(s.OutputTokensPerS, "%.3f"))
		fmt.Fprintf(tw, "Usage source:\t%s\n", naOr(s.UsageSource, "%s"))
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintln(w)
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "metric (ms)\tcount\tmean\tp50\tp90\tp95\tp99\tmax\t")
		for _, row := range []struct {
			name string
			s    *MetricSummary
		}{{"ttft", s.TTFT}, {"ttft_sched", s.TTFTSched}, {"itl", s.ITL}, {"icl", s.ICL},
			{"tpot", s.TPOT}, {"e2e", s.E2E}, {"dispatch_lag", s.DispatchLag}} {
			if row.s == nil {
				fmt.Fprintf(tw, "%s\t0\tn/a\tn/a\tn/a\tn/a\tn/a\tn/a\t\n", row.name)
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t%.2f\t\n", row.name, row.s.Count,
				row.s.Mean, row.s.P50, row.s.P90, row.s.P95, row.s.P99, row.s.Max)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		if s.ClientBound {
			lag := "n/a"
			if s.DispatchLag != nil {
				lag = fmt.Sprintf("%.2f ms", s.DispatchLag.P99)
			}
			fmt.Fprintf(w, "\nWARNING: client-bound: the dispatch-lag p99 (%s) passed %v, so this client, not the server, delayed requests;\n"+
				"TTFT_sched includes that delay. Lower the load, raise --max-in-flight, or spread it over more agents.\n", lag, run.ClientBoundP99)
		}
		for _, e := range run.ErrorSamples {
			if _, err := fmt.Fprintf(w, "error sample: %s\n", e); err != nil {
				return err
			}
		}
		return nil
	}
}
