package coordinator

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// badEncodings are histograms a broken agent could send; the results
// package's tests run the whole set against the builders.
func badEncodings(t *testing.T) map[string][]byte {
	t.Helper()
	h := hdr.New()
	h.Record(time.Millisecond)
	good, err := h.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"garbage":   []byte("\x00\xffnot a histogram at all"),
		"truncated": good[:len(good)/2],
	}
}

// corruptingAgent is a fakeAgent whose TTFT histogram of every report is
// replaced by bad bytes on the way out.
type corruptingAgent struct {
	fakeAgent
	bad []byte
}

func (a *corruptingAgent) RunProbe(ctx context.Context, req *pb.RunProbeRequest, fn func(*pb.RunProbeResponse) error) error {
	return a.fakeAgent.RunProbe(ctx, req, func(resp *pb.RunProbeResponse) error {
		for _, h := range resp.GetReport().GetHistograms() {
			if h.GetMetric() == hdr.TTFT {
				h.V2 = a.bad
			}
		}
		return fn(resp)
	})
}

func TestBaselineRecordsAWarningForABadHistogramAndGoesOn(t *testing.T) {
	for name, bad := range badEncodings(t) {
		t.Run(name, func(t *testing.T) {
			c := newTestCoordinator(t, &fakeGPU{}, &corruptingAgent{fakeAgent: fakeAgent{ttft: coldWarm}, bad: bad})
			res, err := c.RunBaseline(context.Background(), BaselineSpec{WarmRuns: 2, RunID: "bad"}, nil)
			if err != nil {
				t.Fatalf("RunBaseline: %v; want the run to go on without the bad histograms", err)
			}
			if res.Results.Status != "ok" || len(res.Results.Runs) != 3 {
				t.Errorf("status %q with %d runs, want ok with cold_1 and 2 warm runs", res.Results.Status, len(res.Results.Runs))
			}
			events, err := ReadEvents(filepath.Join(res.Dir, "events.jsonl"))
			if err != nil {
				t.Fatal(err)
			}
			var warned int
			for _, ev := range events {
				if ev.Kind == results.EventWarning && strings.Contains(string(ev.Data), `histograms refused: ttft: decode histogram`) && strings.Contains(string(ev.Data), `interval 1`) {
					warned++
				}
			}
			if warned != 2 { // one per probe: cold_1, then the warm runs
				t.Errorf("%d warning events for bad histograms, want 2", warned)
			}
			if n := len(res.Results.Warnings); n != 2 {
				t.Errorf("results carry %d warnings, want the 2 recorded, not repeated: %q", n, res.Results.Warnings)
			}
			if _, ok := res.Results.Histograms[hdr.TTFT]; ok {
				t.Errorf("a TTFT histogram was merged from refused reports")
			}
		})
	}
}
