package results

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

func TestJudgeSamples(t *testing.T) {
	f := func(v float64) *float64 { return &v }
	tests := []struct {
		name        string
		successes   uint64
		window, e2e *float64
		marked      []string
		reasons     []string // substrings, in order
	}{
		{name: "enough", successes: 20, window: f(30), e2e: f(6.5)},
		{name: "issue 9: 2 requests in 6 s with E2E 6.5 s", successes: 2, window: f(6), e2e: f(6.5),
			marked: []string{"p50", "p90", "p99"}, reasons: []string{"6.0 s window is shorter than 3 × E2E p50 (19.5 s)", "2 successes, fewer than the 10 p90 and the 20 p99 need"}},
		{name: "too few for p99 only", successes: 19, window: f(60), e2e: f(1), marked: []string{"p99"}, reasons: []string{"19 successes, fewer than the 20 p99 needs"}},
		{name: "too few for p90", successes: 9, window: f(60), e2e: f(1), marked: []string{"p90", "p99"}, reasons: []string{"9 successes"}},
		{name: "window exactly 3 × E2E", successes: 100, window: f(3), e2e: f(1)},
		{name: "window short, many samples", successes: 500, window: f(2), e2e: f(1), marked: []string{"p50", "p90", "p99"}, reasons: []string{"2.0 s window"}},
		{name: "unknown E2E leaves the window rule out", successes: 100, window: f(1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := judgeSamples(tt.successes, tt.window, tt.e2e)
			if !slices.Equal(v.Marked, tt.marked) || v.insufficient() != (len(tt.reasons) > 0) || len(v.Reasons) != len(tt.reasons) {
				t.Fatalf("verdict %+v; want marked %v and reasons %q", v, tt.marked, tt.reasons)
			}
			for i, r := range tt.reasons {
				if !strings.Contains(v.Reasons[i], r) {
					t.Errorf("reason %d %q lacks %q", i, v.Reasons[i], r)
				}
			}
		})
	}
}

func TestSweepThroughputCountsStreamedTokensInsideTheWindow(t *testing.T) {
	t0 := time.Unix(1000, 0)
	sec := func(s float64) int64 { return t0.Add(time.Duration(s * float64(time.Second))).UnixNano() }
	rep := func(seq uint64, from, to float64, streamed, okN uint64, warm bool) Event {
		set := hdr.Set{}
		for range okN {
			set.Get(hdr.TTFT).Record(10 * time.Millisecond)
			set.Get(hdr.E2E).Record(4 * time.Second)
		}
		r := &pb.IntervalReport{AgentId: "a", Seq: seq, StartUnixNano: sec(from), EndUnixNano: sec(to), Warmup: warm,
			OutputTokensStreamed: streamed, RequestsOk: okN, OutputTokens: okN * 400, Final: seq == 7}
		if !warm {
			r.MeasuredStartUnixNano, r.MeasuredEndUnixNano = sec(1), sec(to)
		}
		for m, h := range set {
			b, _ := h.Encode()
			r.Histograms = append(r.Histograms, &pb.EncodedHistogram{Metric: m, V2: b})
		}
		data, _ := json.Marshal(SweepInterval{Level: 0, Report: r})
		return Event{Kind: EventSweepInterval, Data: data}
	}
	lvl, _ := json.Marshal(LevelStart{Level: 0, Value: 4, Agents: []string{"a"}, StartNs: sec(0), DurationMs: 3000, WarmupMs: 1000})
	evs := []Event{{Kind: EventLevelStart, Data: lvl},
		rep(0, 0, 1, 100, 0, true),    // warm-up only, outside the window
		rep(1, 1, 2, 60, 0, true),     // warm-up requests streaming inside it
		rep(2, 1, 2, 40, 0, false),    // measured requests streaming
		rep(3, 2, 3, 100, 0, false),   // nothing finished yet
		rep(4, 3, 4.5, 150, 0, false), // straddles the end: 2/3 inside
		rep(5, 4.5, 6, 150, 2, false), // after the window
		rep(7, 6, 7, 0, 1, false),
	}
	sr, err := BuildSweep(evs)
	if err != nil {
		t.Fatal(err)
	}
	l := sr.Levels[0]
	if l.ThroughputBasis != "streamed" || l.WindowS == nil || *l.WindowS != 3 || l.TokensPerS == nil || *l.TokensPerS != 100 {
		t.Errorf("basis %q window %s s, %s tok/s; want streamed, 3 s, 100 tok/s", l.ThroughputBasis, fmtPtr(l.WindowS, "%g"), fmtPtr(l.TokensPerS, "%g"))
	}
	// Completed tokens stay as they were, for the per-request statistics.
	if l.OutputTokens != 1200 || l.Successes != 3 {
		t.Errorf("output tokens %d of %d successes, want 1200 of 3", l.OutputTokens, l.Successes)
	}
	// 3 successes in a 3 s window with E2E 4 s: every percentile is marked.
	if !l.Insufficient || !slices.Equal(l.InsufficientFor, []string{"p50", "p90", "p99"}) || l.NeedWindowS == nil || *l.NeedWindowS < 12 {
		t.Errorf("insufficient %v for %v (need %s s), want all percentiles and a 12 s window", l.Insufficient, l.InsufficientFor, fmtPtr(l.NeedWindowS, "%g"))
	}
	obs := strings.Join(sr.Observations, "\n")
	for _, want := range []string{"c=4 has too few samples", "3 successes in a 3.0 s window with E2E p50 4.0 s", "a window of at least 12.0 s (3 × E2E p50) and 20 successes are needed for p99 (at the measured 1.00 successes/s, 20 take about 20 s)"} {
		if !strings.Contains(obs, want) {
			t.Errorf("observations lack %q:\n%s", want, obs)
		}
	}
	md := RenderSweepMarkdown(sr)
	for _, want := range []string{"insufficient ⚠", "10.0 [0, ∞) ⚠", "⚠ insufficient: fewer than 10 successes", "∞: too few values"} {
		if !strings.Contains(md, want) {
			t.Errorf("sweep.md lacks %q:\n%s", want, md)
		}
	}
	b, _ := json.Marshal(l)
	for _, want := range []string{`"ttft_p50_ci":[null,null]`, `"insufficient":true`, `"window_s":3`, `"throughput_basis":"streamed"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("results.json level lacks %s:\n%s", want, b)
		}
	}
}

func TestSweepTTFTConfidenceIntervals(t *testing.T) {
	h := hdr.New()
	for i := 1; i <= 20; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	ci := quantileCI(h, 0.5)
	// n = 20: ranks 6 and 15.
	if ci == nil || ci[0] == nil || ci[1] == nil || *ci[0] < 6 || *ci[0] > 6.01 || *ci[1] < 15 || *ci[1] > 15.02 {
		t.Fatalf("median CI %s, want [6, 15]", fmtCI(ci))
	}
	if got := fmtCI(quantileCI(h, 0.99)); !strings.HasSuffix(got, ", ∞)") {
		t.Errorf("p99 of 20 values: %q, want unbounded above", got)
	}
	big := hdr.New()
	for range CIMaxN {
		big.Record(time.Millisecond)
	}
	if ci := quantileCI(big, 0.5); ci != nil {
		t.Errorf("CI %s at n = %d, want none", fmtCI(ci), CIMaxN)
	}
}

func TestBaselineWarmRunsMarkedInsufficient(t *testing.T) {
	runs := func(n int) []Run {
		var out []Run
		for i := range n {
			out = append(out, Run{Label: "warm_" + string(rune('a'+i)), TTFTS: 0.01})
		}
		return out
	}
	tests := []struct {
		name   string
		n      int
		marked []string
	}{
		{"five warm runs", 5, []string{"p90", "p99"}},
		{"fifteen warm runs", 15, []string{"p99"}},
		{"twenty warm runs", 20, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := warmStats(runs(tt.n))
			if w.Insufficient != (tt.marked != nil) || !slices.Equal(w.InsufficientFor, tt.marked) {
				t.Errorf("insufficient %v for %v, want %v", w.Insufficient, w.InsufficientFor, tt.marked)
			}
			h := hdr.New()
			for range tt.n {
				h.Record(10 * time.Millisecond)
			}
			md := RenderMarkdown(&Results{Runs: runs(tt.n), Warm: w, Histograms: map[string]hdr.Summary{hdr.TTFT: h.Summarize()}})
			if got := strings.Contains(md, " ⚠ |"); got != (tt.marked != nil) {
				t.Errorf("merged histogram table marked %v, want %v:\n%s", got, tt.marked != nil, md)
			}
		})
	}
}

// TestInsufficientObservationWindowLongEnough: a level whose window met the
// 3 × E2E rule but collected too few successes is not told its window was
// short; it is told how long one would have collected 20 at its rate.
func TestInsufficientObservationWindowLongEnough(t *testing.T) {
	w, need := 5.0, 2.7
	l := LevelResult{Successes: 5, WindowS: &w, NeedWindowS: &need, Metrics: map[string]hdr.Summary{hdr.E2E: {Count: 5, P50: 900}}}
	got := insufficientObservation("c=1", l)
	want := "c=1 has too few samples for the percentiles marked ⚠: 5 successes in a 5.0 s window with E2E p50 0.9 s; 20 successes are needed for p99 (at the measured 1.00 successes/s, 20 take about 20 s)"
	if !strings.HasPrefix(got, want) {
		t.Errorf("observation\n%s\nwant it to start\n%s", got, want)
	}
}
