package agent

import (
	"math"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/oai"
)

// TestRecordMetricsSplitsITL: a chunk that carried k tokens (continuous
// usage) gives k ITL values of gap/k each and one ICL value of the gap.
func TestRecordMetricsSplitsITL(t *testing.T) {
	send := time.Now()
	tests := []struct {
		name             string
		marks            []oai.Mark
		wantITL, wantICL int64
		wantMS           float64 // every ITL value
	}{
		{"one token per chunk", []oai.Mark{{At: 10 * time.Millisecond, Tokens: 1}, {At: 30 * time.Millisecond, Tokens: 1}}, 1, 1, 20},
		{"three tokens in one chunk", []oai.Mark{{At: 10 * time.Millisecond, Tokens: 1}, {At: 70 * time.Millisecond, Tokens: 3}}, 3, 1, 20},
		{"zero tokens counts as one", []oai.Mark{{At: 10 * time.Millisecond, Tokens: 1}, {At: 40 * time.Millisecond, Tokens: 0}}, 1, 1, 30},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			last := tt.marks[len(tt.marks)-1].At
			res := oai.Result{Send: send, FirstToken: send.Add(tt.marks[0].At), Last: send.Add(last), Done: send.Add(last),
				OutputTokens: 4, CachedTokens: -1, Marks: tt.marks}
			set, mom := newSet(), newMoments()
			recordMetrics(set, &mom, &res)
			itl, icl := set.Get(hdr.ITL).Summarize(), set.Get(hdr.ICL).Summarize()
			if itl.Count != tt.wantITL || icl.Count != tt.wantICL {
				t.Fatalf("ITL count %d, ICL count %d; want %d and %d", itl.Count, icl.Count, tt.wantITL, tt.wantICL)
			}
			if math.Abs(itl.Max-tt.wantMS) > tt.wantMS*0.002 || math.Abs(itl.Min-tt.wantMS) > tt.wantMS*0.002 {
				t.Errorf("ITL min/max = %v/%v ms, want %v ms", itl.Min, itl.Max, tt.wantMS)
			}
			if set.Get(hdr.TTFT).Count() != 1 || set.Get(hdr.E2E).Count() != 1 || set.Get(hdr.TPOT).Count() != 1 {
				t.Errorf("ttft/e2e/tpot counts = %d/%d/%d, want 1 each", set.Get(hdr.TTFT).Count(), set.Get(hdr.E2E).Count(), set.Get(hdr.TPOT).Count())
			}
			// The moments count what the histograms hold, exactly.
			for i, name := range MomentMetrics {
				if got, want := int64(mom[i].Count), set.Get(name).Count(); got != want || mom[i].Metric != name {
					t.Errorf("moments %q count %d, histogram %s holds %d", mom[i].Metric, got, name, want)
				}
			}
			if m := mom[momITL]; math.Abs(m.Sum-float64(tt.wantITL)*tt.wantMS) > 1e-9 || math.Abs(m.SumSq-float64(tt.wantITL)*tt.wantMS*tt.wantMS) > 1e-6 {
				t.Errorf("ITL moments sum %v sum² %v, want %v and %v", m.Sum, m.SumSq, float64(tt.wantITL)*tt.wantMS, float64(tt.wantITL)*tt.wantMS*tt.wantMS)
			}
			if m, want := mom[momTTFT], float64(tt.marks[0].At)/1e6; m.Sum != want || m.SumSq != want*want {
				t.Errorf("TTFT moments sum %v sum² %v, want %v and %v", m.Sum, m.SumSq, want, want*want)
			}
		})
	}
}

// TestInputLenSource: a request's input length and its source, as vLLM's
// total_input_tokens counts it.
func TestInputLenSource(t *testing.T) {
	tests := []struct {
		name      string
		sized     bool
		usage     int
		promptLen int
		wantN     int
		wantSrc   string
	}{
		{"sized with usage", true, 64, 64, 64, PromptLenTokenize},
		{"sized without usage", true, 0, 64, 64, PromptLenTokenize},
		{"unsized with usage", false, 70, 64, 70, PromptLenUsage},
		{"dataset prompt with usage", true, 70, 0, 70, PromptLenUsage},
		{"no usage: the estimate", false, 0, 61, 61, PromptLenEstimate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &run{}
			if tt.sized {
				r.promptLenSource = PromptLenTokenize
			}
			n, src := r.inputLen(&oai.Result{PromptTokens: tt.usage}, tt.promptLen)
			if n != tt.wantN || src != tt.wantSrc {
				t.Errorf("inputLen = %d, %s; want %d, %s", n, src, tt.wantN, tt.wantSrc)
			}
		})
	}
}
