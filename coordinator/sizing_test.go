package coordinator

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

func TestSizeLevel(t *testing.T) {
	tests := []struct {
		name    string
		base    time.Duration
		max     time.Duration
		closed  bool
		next    float64
		prevE2E time.Duration
		want    time.Duration
		why     string
	}{
		{name: "first level keeps the default", base: 5 * time.Second, max: time.Minute, closed: true, next: 1, want: 5 * time.Second, why: "no earlier level"},
		{name: "short E2E keeps the default", base: 5 * time.Second, max: time.Minute, closed: true, next: 8, prevE2E: 100 * time.Millisecond, want: 5 * time.Second},
		// 3 × 1.5 × 6.5 s = 29.25 s; 20 completions at 4 workers of 9.75 s each: 48.75 s.
		{name: "issue 9: E2E 6.5 s, c=4", base: 6 * time.Second, max: 3 * time.Minute, closed: true, next: 4, prevE2E: 6500 * time.Millisecond,
			want: 48800 * time.Millisecond, why: "20 successes ≈ 48.8 s"},
		// At c=32 the count needs 6.1 s; the window rule needs 29.3 s.
		{name: "many workers: the window rule decides", base: 6 * time.Second, max: 3 * time.Minute, closed: true, next: 32, prevE2E: 6500 * time.Millisecond,
			want: 29300 * time.Millisecond, why: "= 29.3s"},
		{name: "capped", base: 2 * time.Second, max: 20 * time.Second, closed: true, next: 4, prevE2E: 6500 * time.Millisecond,
			want: 20 * time.Second, why: "capped at the maximum 20s"},
		// Open loop at 0.5 req/s: 20 completions take 40 s.
		{name: "open loop counts arrivals", base: 5 * time.Second, max: time.Minute, next: 0.5, prevE2E: time.Second, want: 40 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, why := sizeLevel(tt.base, tt.max, tt.closed, tt.next, tt.prevE2E, "level 1")
			if got != tt.want || !strings.Contains(why, tt.why) {
				t.Errorf("sizeLevel = %v (%s), want %v and a reason with %q", got, why, tt.want, tt.why)
			}
		})
	}
}

// A level whose requests outlast its window counts the tokens that arrived
// inside the window, in flight or not, and warm-up requests' tokens too:
// the window [barrier+warm-up, +duration] holds 3 s of 100 tokens/s.
// An unpinned sweep sizes each level after the first from the E2E the
// level before measured, and level_start says so; a pinned one does not.
func TestSweepSizesUnpinnedLevelsFromTheLevelBefore(t *testing.T) {
	tests := []struct {
		name     string
		auto     bool
		want     []int64 // duration_ms per level
		wantWhy  string
		maxDur   time.Duration
		wantErrS string
	}{
		// sweepAgent's E2E is 20 ms × concurrency: 1 s at c=50, so level 2
		// gets max(1 s, 3 × 1.5 × 1 s, 20 × 1.5 s / 60) = 4.5 s.
		{name: "pinned", want: []int64{1000, 1000}, wantWhy: "pinned at 1s"},
		{name: "auto", auto: true, maxDur: time.Minute, want: []int64{1000, 4500}, wantWhy: "3 × 1.5 × E2E p50 1.00 s of level 1"},
		{name: "auto, capped", auto: true, maxDur: 2 * time.Second, want: []int64{1000, 2000}, wantWhy: "capped at the maximum 2s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := &sweepAgent{intervals: 1, perInterval: 3}
			c := sweepCoordinator(t, map[string]Agent{"a": a})
			res, err := c.RunSweep(context.Background(), SweepSpec{RunID: "auto", Levels: []float64{50, 60}, AutoDuration: tt.auto, MaxDuration: tt.maxDur,
				Load: &pb.LoadModel{Kind: "closed", DurationMs: 1000}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			var got []int64
			for _, r := range a.reqs {
				got = append(got, r.GetLoad().GetDurationMs())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("agents were asked for %v ms, want %v", got, tt.want)
			}
			b, _ := os.ReadFile(filepath.Join(res.Dir, "events.jsonl"))
			if !strings.Contains(string(b), tt.wantWhy) {
				t.Errorf("level_start does not say %q:\n%s", tt.wantWhy, b)
			}
		})
	}
	c := sweepCoordinator(t, map[string]Agent{"a": &sweepAgent{}})
	_, err := c.RunSweep(context.Background(), SweepSpec{Levels: []float64{1}, AutoDuration: true, MaxDuration: time.Second, Load: &pb.LoadModel{Kind: "closed", DurationMs: 5000}}, nil)
	if err == nil || !strings.Contains(err.Error(), "max_duration 1s is shorter than the level duration 5s") {
		t.Errorf("err = %v, want the cap below the duration named", err)
	}
}
