package agent

import (
	"context"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/internal/oai/oaitest"
)

// Tokens are counted in the interval they arrive in, while their request is
// still streaming: a slow stream spread over several intervals shows up in
// each of them, not only in the one it finishes in.
func TestStreamedTokensCountedPerIntervalWhileInFlight(t *testing.T) {
	tests := []struct {
		name   string
		cancel time.Duration // 0: let the run finish
		tokens int
	}{
		{name: "finished requests", tokens: 12},
		{name: "interrupted request", cancel: 350 * time.Millisecond, tokens: 40},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// One request streams its tokens 40 ms apart across 100 ms intervals.
			srv := oaitest.NewServer(t, oaitest.StreamTokens(tt.tokens, 40*time.Millisecond))
			spec := testSpec(srv.URL)
			spec.Interval = 100 * time.Millisecond
			ctx := context.Background()
			if tt.cancel > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tt.cancel)
				defer cancel()
			}
			reps, _ := collect(t, ctx, New(DefaultConfig(), nil), spec)
			var streamed, completed uint64
			var streamingIntervals int
			for _, r := range reps {
				if r.Warmup {
					t.Fatalf("warm-up report without warm-up: %+v", r)
				}
				streamed += r.OutputTokensStreamed
				completed += r.OutputTokens
				if r.OutputTokensStreamed > 0 && r.OK == 0 {
					streamingIntervals++
				}
				// 100 ms at one token per 40 ms: at most 3, or a few more
				// when a slow tick stretches the interval.
				if max := uint64(r.End.Sub(r.Start)/(40*time.Millisecond)) + 2; r.OutputTokensStreamed > max {
					t.Errorf("report %d over %v counted %d tokens, more than %d could arrive", r.Seq, r.End.Sub(r.Start), r.OutputTokensStreamed, max)
				}
			}
			if streamingIntervals < 2 {
				t.Errorf("%d intervals counted tokens of a request in flight, want ≥ 2 (reports %+v)", streamingIntervals, reps)
			}
			if tt.cancel == 0 {
				if completed != uint64(tt.tokens) || streamed != completed {
					t.Errorf("streamed %d, completed %d tokens; want both %d", streamed, completed, tt.tokens)
				}
				return
			}
			// Interrupted: nothing completed, yet what streamed is counted.
			if completed != 0 || streamed < 4 || streamed >= uint64(tt.tokens) {
				t.Errorf("streamed %d, completed %d tokens; want 4 ≤ streamed < %d and none completed", streamed, completed, tt.tokens)
			}
		})
	}
}
