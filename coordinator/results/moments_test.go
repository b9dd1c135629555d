package results

import (
	"math"
	"strings"
	"testing"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
	"google.golang.org/protobuf/proto"
)

// momentReport is a consistent measured report of ok successes whose TTFT
// and E2E are the given values (ms), with exact moments and prompt-length
// counts, as an agent sends it.
func momentReport(t testing.TB, agent string, seq uint64, ttftMs []float64) *pb.IntervalReport {
	t.Helper()
	rep := &pb.IntervalReport{AgentId: agent, Seq: seq, StartUnixNano: int64(seq+1) * 1e9, EndUnixNano: int64(seq+2) * 1e9,
		RequestsOk: uint64(len(ttftMs)), PromptTokens: 64 * uint64(len(ttftMs)), PromptLenSource: PromptLenTokenize,
		PromptLens: &pb.PromptLenCounts{Tokenize: uint64(len(ttftMs))}}
	for _, name := range []string{hdr.TTFT, hdr.E2E} {
		h := hdr.New()
		mo := &pb.Moments{Metric: name}
		for _, v := range ttftMs {
			if name == hdr.E2E {
				v *= 10
			}
			h.Record(time.Duration(v * float64(time.Millisecond)))
			mo.Count++
			mo.SumMs += v
			mo.SumSqMs += v * v
		}
		b, err := h.Encode()
		if err != nil {
			t.Fatal(err)
		}
		rep.Histograms = append(rep.Histograms, &pb.EncodedHistogram{Metric: name, V2: b})
		rep.Moments = append(rep.Moments, mo)
	}
	return rep
}

func TestReportMomentsValidated(t *testing.T) {
	ttft := func(rep *pb.IntervalReport) *pb.Moments { return rep.GetMoments()[0] }
	tests := []struct {
		name   string
		change func(*pb.IntervalReport)
		want   string // "" accepts
	}{
		{"consistent", func(*pb.IntervalReport) {}, ""},
		{"older agent without moments or counts", func(r *pb.IntervalReport) { r.Moments, r.PromptLens, r.PromptLenSource = nil, nil, "" }, ""},
		{"count differs from the histogram", func(r *pb.IntervalReport) { ttft(r).Count++ }, "moments of ttft count 4 values but its histogram holds 3"},
		{"NaN sum", func(r *pb.IntervalReport) { ttft(r).SumMs = math.NaN() }, "not finite and non-negative"},
		{"infinite sum of squares", func(r *pb.IntervalReport) { ttft(r).SumSqMs = math.Inf(1) }, "not finite and non-negative"},
		{"negative sum", func(r *pb.IntervalReport) { ttft(r).SumMs = -1 }, "not finite and non-negative"},
		{"sum of squares below sum²/n", func(r *pb.IntervalReport) { ttft(r).SumSqMs = ttft(r).SumMs * ttft(r).SumMs / 3 * 0.99 }, "is below sum²/count"},
		{"sum of squares above n·max²", func(r *pb.IntervalReport) { ttft(r).SumSqMs *= 100 }, "is above count × max²"},
		{"mean outside the histogram", func(r *pb.IntervalReport) { ttft(r).SumMs *= 3; ttft(r).SumSqMs *= 9 }, "lies outside the histogram's"},
		{"unknown metric", func(r *pb.IntervalReport) { r.Moments = append(r.Moments, &pb.Moments{Metric: "ttft_sched"}) }, `moments of unknown metric "ttft_sched"`},
		{"metric twice", func(r *pb.IntervalReport) { r.Moments = append(r.Moments, proto.CloneOf(ttft(r))) }, "moments of ttft sent twice"},
		{"sums over no values", func(r *pb.IntervalReport) { r.Moments = append(r.Moments, &pb.Moments{Metric: hdr.TPOT, SumMs: 5}) }, "sum 5 ms over no values"},
		{"prompt counts do not add up", func(r *pb.IntervalReport) { r.PromptLens.Usage = 1 }, "prompt_lens count 3+1+0 requests but the report counts 3"},
		{"prompt counts that wrap", func(r *pb.IntervalReport) {
			r.PromptLens = &pb.PromptLenCounts{Tokenize: math.MaxUint64, Usage: 4}
		}, "prompt_lens count"},
		{"unknown prompt-length source", func(r *pb.IntervalReport) { r.PromptLenSource = "guess" }, `prompt_len_source "guess" is unknown`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := momentReport(t, "a", 0, []float64{10, 20, 40})
			tt.change(rep)
			_, err := ReportHistograms(rep)
			m := NewMerger()
			added, _ := m.Add(rep)
			if tt.want == "" {
				if err != nil || added != Merged {
					t.Fatalf("refused a good report: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			// Handled like a bad histogram: stats dropped, counts kept.
			if added != Refused || m.OK != 3 || m.Histograms()[hdr.TTFT] != nil {
				t.Errorf("Add = %v, OK %d; want Refused with the counts kept and no histogram merged", added, m.OK)
			}
			if mo, ok := m.Moments(hdr.TTFT); !ok || mo.Count != 0 {
				t.Errorf("moments of a refused report merged: %+v", mo)
			}
			if m.PromptLens != (PromptLenCounts{}) {
				t.Errorf("prompt-length counts of a refused report merged: %+v", m.PromptLens)
			}
		})
	}
}

// TestMergerMomentsExact: sums add across agents and intervals, so the
// merged mean and std are those of every value; an older agent's report
// without moments makes them unknown rather than wrong.
func TestMergerMomentsExact(t *testing.T) {
	a, b := []float64{10, 20, 40}, []float64{15.5, 99.25}
	m := NewMerger()
	for _, rep := range []*pb.IntervalReport{momentReport(t, "a", 0, a), momentReport(t, "b", 0, b)} {
		if added, err := m.Add(rep); added != Merged {
			t.Fatal(err)
		}
	}
	all := append(append([]float64{}, a...), b...)
	var mean, sq float64
	for _, v := range all {
		mean += v / float64(len(all))
	}
	for _, v := range all {
		sq += (v - mean) * (v - mean)
	}
	std := math.Sqrt(sq / float64(len(all)))
	mo, ok := m.Moments(hdr.TTFT)
	if !ok || mo.Count != 5 || math.Abs(mo.Mean()-mean) > 1e-12 || math.Abs(mo.Std()-std) > 1e-9 {
		t.Errorf("merged TTFT moments %+v: mean %v std %v, want 5 values, mean %v std %v", mo, mo.Mean(), mo.Std(), mean, std)
	}
	if m.PromptTokens != 5*64 || m.PromptLens.Source() != PromptLenTokenize {
		t.Errorf("prompt tokens %d, source %q; want 320 and tokenize", m.PromptTokens, m.PromptLens.Source())
	}
	old := momentReport(t, "c", 0, []float64{30})
	old.Moments, old.PromptLens = nil, nil
	old.PromptLenSource = ""
	if added, err := m.Add(old); added != Merged {
		t.Fatal(err)
	}
	if _, ok := m.Moments(hdr.TTFT); ok {
		t.Error("moments known after merging a report that sent none")
	}
}

func TestPromptLenCountsSource(t *testing.T) {
	tests := []struct {
		name       string
		c          PromptLenCounts
		src, shown string
	}{
		{"none", PromptLenCounts{}, "", "n/a"},
		{"one source", PromptLenCounts{Usage: 4}, PromptLenUsage, "usage"},
		{"agents disagree", PromptLenCounts{Tokenize: 120, Estimate: 30}, PromptLenMixed, "mixed (tokenize 120, estimate 30)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.c.Source(); got != tt.src {
				t.Errorf("Source = %q, want %q", got, tt.src)
			}
			if got := tt.c.String(); got != tt.shown {
				t.Errorf("String = %q, want %q", got, tt.shown)
			}
		})
	}
}
