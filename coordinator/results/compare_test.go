package results

import (
	"bytes"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// synthRun builds a load run of one agent whose n requests have TTFT and
// E2E drawn from a log-normal around ttft (E2E = 10 × TTFT), finished over
// span.
func synthRun(t *testing.T, name string, seed uint64, n int, ttft time.Duration, span time.Duration) *CompareRun {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	hs := map[string]*hdr.Histogram{hdr.TTFT: hdr.New(), hdr.E2E: hdr.New()}
	for range n {
		d := time.Duration(float64(ttft) * math.Exp(0.2*rng.NormFloat64()))
		hs[hdr.TTFT].Record(d)
		hs[hdr.E2E].Record(10 * d)
	}
	rep := &pb.IntervalReport{AgentId: "local", Seq: 1, StartUnixNano: 1e18, EndUnixNano: 1e18 + span.Nanoseconds(),
		MeasuredStartUnixNano: 1e18, MeasuredEndUnixNano: 1e18 + span.Nanoseconds(),
		RequestsOk: uint64(n), OutputTokens: uint64(100 * n), Final: true}
	for m, h := range hs {
		b, err := h.Encode()
		if err != nil {
			t.Fatal(err)
		}
		rep.Histograms = append(rep.Histograms, &pb.EncodedHistogram{Metric: m, V2: b})
	}
	l := newCompareLevel("load", 0, 0)
	if err := l.add(rep); err != nil {
		t.Fatal(err)
	}
	return &CompareRun{Name: name, Kind: "load", Levels: []*CompareLevel{l}}
}

func metricOf(t *testing.T, c *Comparison, name string) MetricComparison {
	t.Helper()
	for _, m := range c.Levels[0].Metrics {
		if m.Metric == name {
			return m
		}
	}
	t.Fatalf("no metric %s", name)
	return MetricComparison{}
}

func TestCompareVerdicts(t *testing.T) {
	base := synthRun(t, "a", 1, 2000, 50*time.Millisecond, 20*time.Second)
	tests := []struct {
		name string
		b    *CompareRun
		want map[string]string
	}{
		{name: "same distribution, other draws", b: synthRun(t, "b", 2, 2000, 50*time.Millisecond, 20*time.Second),
			want: map[string]string{"ttft_p50": VerdictNoChange, "ttft_p99": VerdictNoChange, "e2e_p90": VerdictNoChange, "throughput": VerdictNoChange, "tpot_p50": VerdictNoData}},
		{name: "20% slower", b: synthRun(t, "b", 3, 2000, 60*time.Millisecond, 20*time.Second),
			want: map[string]string{"ttft_p50": VerdictWorse, "ttft_p90": VerdictWorse, "e2e_p50": VerdictWorse}},
		{name: "25% faster and more throughput", b: synthRun(t, "b", 4, 2500, 40*time.Millisecond, 20*time.Second),
			want: map[string]string{"ttft_p50": VerdictBetter, "e2e_p99": VerdictBetter, "throughput": VerdictBetter, "output_throughput": VerdictBetter}},
		{name: "3% slower is below the minimum effect", b: synthRun(t, "b", 1, 2000, 51500*time.Microsecond, 20*time.Second),
			want: map[string]string{"ttft_p50": VerdictNoChange}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Compare(base, tt.b, CompareOptions{Seed: 7})
			for name, want := range tt.want {
				m := metricOf(t, c, name)
				if m.Verdict != want {
					t.Errorf("%s: verdict %q (change %v, CI %v..%v), want %q", name, m.Verdict, deref(m.Change), deref(m.CILow), deref(m.CIHigh), want)
				}
			}
		})
	}
}

func deref(p *float64) any {
	if p == nil {
		return nil
	}
	return *p
}

// The order-statistic shortcut must give the percentile distribution of
// n values resampled from the histogram: its replicates' quantiles match
// those of direct resampling.
func TestBootstrapShortcutMatchesDirectResampling(t *testing.T) {
	run := synthRun(t, "a", 5, 300, 20*time.Millisecond, 10*time.Second)
	g := run.Levels[0].All
	h := g.Histograms()[hdr.TTFT]
	var values []float64
	h.Buckets(func(_, highUs, count int64) {
		for range count {
			values = append(values, float64(highUs)/1000)
		}
	})
	for _, q := range []struct {
		name string
		q    float64
	}{{"p50", 0.5}, {"p90", 0.9}, {"p99", 0.99}} {
		t.Run(q.name, func(t *testing.T) {
			m := Metric{Name: "ttft_" + q.name, hist: hdr.TTFT, q: q.q}
			s, ok := newSampler(m, g)
			if !ok {
				t.Fatal("no sampler")
			}
			rng := rand.New(rand.NewPCG(1, 2))
			const reps = 4000
			fast, direct := make([]float64, reps), make([]float64, reps)
			k := quantileRank(q.q, int64(len(values)))
			draw := make([]float64, len(values))
			for i := range reps {
				fast[i] = s.draw(rng)
				for j := range draw {
					draw[j] = values[rng.IntN(len(values))]
				}
				slices.Sort(draw)
				direct[i] = draw[k-1]
			}
			slices.Sort(fast)
			slices.Sort(direct)
			for _, p := range []float64{0.025, 0.5, 0.975} {
				i := int(p * reps)
				if math.Abs(fast[i]-direct[i]) > 0.03*direct[i] {
					t.Errorf("quantile %g of the replicates: %.3f ms by the shortcut, %.3f ms by direct resampling", p, fast[i], direct[i])
				}
			}
			if got := s.point; got != h.Summarize().P50 && q.q == 0.5 {
				t.Errorf("point p50 %.3f, the report's p50 %.3f", got, h.Summarize().P50)
			}
		})
	}
}

func TestCompareIsSeeded(t *testing.T) {
	a := synthRun(t, "a", 1, 500, 50*time.Millisecond, 5*time.Second)
	b := synthRun(t, "b", 2, 500, 55*time.Millisecond, 5*time.Second)
	var x, y bytes.Buffer
	if err := CompareJSON(&x, Compare(a, b, CompareOptions{Seed: 3})); err != nil {
		t.Fatal(err)
	}
	if err := CompareJSON(&y, Compare(a, b, CompareOptions{Seed: 3})); err != nil {
		t.Fatal(err)
	}
	if x.String() != y.String() {
		t.Error("equal seeds gave different comparisons")
	}
}

func TestCompareSweepFixtureWithItself(t *testing.T) {
	read := func() *CompareRun {
		f, err := os.Open("testdata/sweep.events.jsonl")
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		r, err := ReadCompareRun(f, "sweep.events.jsonl")
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	a, b := read(), read()
	if len(a.Levels) != 3 || a.Kind != "sweep" {
		t.Fatalf("%d levels of kind %s, want the fixture's 3 sweep levels", len(a.Levels), a.Kind)
	}
	c := Compare(a, b, CompareOptions{Seed: 1})
	rules, err := ParseRules("ttft_p99>+10%,throughput<-5%,e2e_p50>+0%")
	if err != nil {
		t.Fatal(err)
	}
	c.ApplyRules(rules)
	if c.Failed {
		t.Errorf("a run compared with itself failed its rules: %+v", c.Rules)
	}
	for _, l := range c.Levels {
		for _, m := range l.Metrics {
			if m.Verdict != VerdictNoChange && m.Verdict != VerdictNoData {
				t.Errorf("%s %s: %s against itself", l.Level, m.Metric, m.Verdict)
			}
			if m.Change != nil && *m.Change != 0 {
				t.Errorf("%s %s: change %v against itself", l.Level, m.Metric, *m.Change)
			}
		}
	}
	var md, js bytes.Buffer
	if err := CompareMarkdown(&md, c); err != nil {
		t.Fatal(err)
	}
	if err := CompareJSON(&js, c); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"## level 2 (8)", "| ttft_p99 |", "Result: passed."} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("Markdown lacks %q:\n%s", want, md.String())
		}
	}
	var back map[string]any
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatalf("--json output is not JSON: %v", err)
	}
}

func TestApplyRules(t *testing.T) {
	a := synthRun(t, "a", 1, 2000, 50*time.Millisecond, 20*time.Second)
	slow := synthRun(t, "b", 3, 2000, 60*time.Millisecond, 20*time.Second)
	same := synthRun(t, "b", 2, 2000, 50*time.Millisecond, 20*time.Second)
	tests := []struct {
		name    string
		b       *CompareRun
		rules   string
		tripped []bool
	}{
		{name: "slower trips latency rules", b: slow, rules: "ttft_p50>+10%,e2e_p99>+10%,throughput<-5%", tripped: []bool{true, true, false}},
		{name: "threshold above the change", b: slow, rules: "ttft_p50>+50%", tripped: []bool{false}},
		{name: "same configuration trips nothing", b: same, rules: "ttft_p50>+0%,ttft_p99>+10%,e2e_p50>+5%,throughput<-5%", tripped: []bool{false, false, false, false}},
		{name: "past the threshold but no significant change", b: slow, rules: "throughput<+50%", tripped: []bool{false}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Compare(a, tt.b, CompareOptions{Seed: 9})
			rules, err := ParseRules(tt.rules)
			if err != nil {
				t.Fatal(err)
			}
			c.ApplyRules(rules)
			any := false
			for i, r := range c.Rules {
				if r.Tripped != tt.tripped[i] {
					t.Errorf("rule %s tripped %v, want %v (%v)", r.Rule, r.Tripped, tt.tripped[i], r.Levels)
				}
				any = any || r.Tripped
			}
			if c.Failed != any {
				t.Errorf("Failed %v with rules tripped %v", c.Failed, any)
			}
		})
	}
}

func TestParseRules(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []Rule
		wantErr string
	}{
		{name: "two rules", in: "ttft_p99>+10%,throughput<-5%", want: []Rule{{"ttft_p99", true, 0.10}, {"throughput", false, -0.05}}},
		{name: "spaces and no sign", in: " e2e_p50 > 7.5% ", want: []Rule{{"e2e_p50", true, 0.075}}},
		{name: "unknown metric", in: "ttft_p95>+10%", wantErr: `metric "ttft_p95" is unknown: use one of ttft_p50`},
		{name: "no operator", in: "ttft_p99=10%", wantErr: "has no > or <"},
		{name: "absolute threshold", in: "ttft_p99>20ms", wantErr: "is not a relative change"},
		{name: "not a number", in: "ttft_p99>+ten%", wantErr: "is not a percentage"},
		{name: "below -100%", in: "throughput<-150%", wantErr: "is not a percentage above -100%"},
		{name: "empty", in: " , ", wantErr: "--fail-on is empty"},
		{name: "NaN", in: "ttft_p50>NaN%", wantErr: "is not a percentage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseRules(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("rules %v, want %v", got, tt.want)
			}
		})
	}
}

func FuzzParseRules(f *testing.F) {
	for _, s := range []string{"ttft_p99>+10%,throughput<-5%", "e2e_p50>5%", "x", ">%", "ttft_p50<-99.9999%", "tpot_p90>1e308%"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rules, err := ParseRules(s)
		if err != nil {
			return
		}
		for _, r := range rules {
			if _, ok := lookupMetric(r.Metric); !ok || math.IsNaN(r.Threshold) || r.Threshold <= -1 {
				t.Fatalf("%q parsed to a bad rule %+v", s, r)
			}
			// A rule's rendering parses back to itself.
			back, err := ParseRules(r.String())
			if err != nil || len(back) != 1 || back[0].Metric != r.Metric || back[0].Greater != r.Greater {
				t.Fatalf("%q → %s → %v, %v", s, r, back, err)
			}
		}
	})
}

func TestReadCompareRunRefusesOtherFiles(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{name: "empty", in: "\n\n", wantErr: "empty: no run was recorded"},
		{name: "not JSON", in: "hello\n", wantErr: "is not JSON"},
		{name: "other JSON", in: `{"a":1}` + "\n", wantErr: `neither "kind"`},
		{name: "baseline", in: `{"t":1,"kind":"run_start","data":{"run_id":"x","profile":"sim","warm_runs":1,"repeats":1,"api":"chat"}}` + "\n", wantErr: "is a cold/warm baseline"},
		{name: "load file without intervals", in: `{"type":"summary","summary":{}}` + "\n", wantErr: "holds no interval report"},
		{name: "bad level", in: `{"t":1,"kind":"level_start","data":{"level":-3,"value":1}}` + "\n", wantErr: "level"},
		{name: "bad report", in: `{"type":"interval","report":{"OK":"many"}}` + "\n", wantErr: "line 1: interval report"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ReadCompareRun(strings.NewReader(tt.in), "RUN")
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "RUN") {
				t.Errorf("err = %v, want one naming RUN and saying %q", err, tt.wantErr)
			}
		})
	}
}

func FuzzReadCompareRun(f *testing.F) {
	if b, err := os.ReadFile("testdata/sweep.events.jsonl"); err == nil {
		f.Add(b[:min(len(b), 8192)])
	}
	f.Add([]byte(`{"type":"interval","report":{"AgentID":"a","OK":1,"Histograms":[{"Metric":"e2e","V2":"AAAA"}]}}`))
	f.Add([]byte(`{"t":1,"kind":"sweep_interval","data":{"level":0,"report":{"agentId":"a","requestsOk":"1"}}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := ReadCompareRun(bytes.NewReader(b), "fuzz")
		if err != nil {
			return
		}
		c := Compare(a, a, CompareOptions{Bootstrap: 100, Seed: 1})
		if err := CompareMarkdown(&bytes.Buffer{}, c); err != nil {
			t.Fatal(err)
		}
		if err := CompareJSON(&bytes.Buffer{}, c); err != nil {
			t.Fatal(err)
		}
	})
}

// TestReadCompareRunLoadFormats reads both forms of a `ttftlab load --out`
// interval line: the snake_case one with hdr_v2 and the earlier Go-named
// one.
func TestReadCompareRunLoadFormats(t *testing.T) {
	h := hdr.New()
	for i := 1; i <= 10; i++ {
		h.Record(time.Duration(i) * time.Millisecond)
	}
	v2, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	b64, _ := json.Marshal(v2)
	tests := []struct {
		name, line string
	}{
		{"snake_case", `{"type":"interval","report":{"run_id":"r","agent_id":"local","seq":1,"start":"2026-01-01T00:00:00Z","end":"2026-01-01T00:00:01Z","ok":10,"output_tokens":100,"hdr_v2":{"e2e":"` + string(v2) + `","ttft":"` + string(v2) + `"}}}`},
		{"Go names", `{"type":"interval","report":{"RunID":"r","AgentID":"local","Seq":1,"Start":"2026-01-01T00:00:00Z","End":"2026-01-01T00:00:01Z","OK":10,"OutputTokens":100,"Histograms":[{"Metric":"e2e","V2":` + string(b64) + `},{"Metric":"ttft","V2":` + string(b64) + `}]}}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ReadCompareRun(strings.NewReader(tt.line+"\n"+`{"type":"summary","summary":{}}`+"\n"), "RUN")
			if err != nil {
				t.Fatal(err)
			}
			l := r.Levels[0]
			if l.All.OK != 10 || l.All.OutputTokens != 100 || l.Agents["local"] == nil {
				t.Fatalf("ok %d tokens %d agents %v", l.All.OK, l.All.OutputTokens, l.Agents)
			}
			if got := l.All.Histograms()[hdr.TTFT].Count(); got != 10 {
				t.Errorf("ttft holds %d values, want 10", got)
			}
		})
	}
}
