package metrics

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
	"github.com/ttftlab/ttftlab/internal/membership"
)

// gather returns every family of g by name.
func gather(t *testing.T, g prometheus.Gatherer) map[string]*dto.MetricFamily {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	out := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		out[mf.GetName()] = mf
	}
	return out
}

// series returns the metric of family name whose labels are exactly want
// ("k=v,k=v", sorted by key), or nil.
func series(mfs map[string]*dto.MetricFamily, name, want string) *dto.Metric {
	for _, m := range mfs[name].GetMetric() {
		var ls []string
		for _, l := range m.GetLabel() {
			ls = append(ls, l.GetName()+"="+l.GetValue())
		}
		sort.Strings(ls)
		if strings.Join(ls, ",") == want {
			return m
		}
	}
	return nil
}

// report builds an interval report with ok successes of the given TTFT
// (E2E 10× it) and the given failures by kind.
func report(t *testing.T, agent string, ok int, ttft time.Duration, errs map[string]uint64) *pb.IntervalReport {
	t.Helper()
	rep := &pb.IntervalReport{AgentId: agent, RequestsOk: uint64(ok), ErrorsByKind: errs, OutputTokensStreamed: 100, InFlight: 3}
	for _, n := range errs {
		rep.RequestsFailed += n
	}
	set := hdr.Set{}
	for range ok {
		set.Get(hdr.TTFT).Record(ttft)
		set.Get(hdr.E2E).Record(10 * ttft)
		set.Get(hdr.ITL).Record(ttft / 10)
	}
	for m, h := range set {
		b, err := h.Encode()
		if err != nil {
			t.Fatal(err)
		}
		rep.Histograms = append(rep.Histograms, &pb.EncodedHistogram{Metric: m, V2: b})
	}
	return rep
}

func value(m *dto.Metric) float64 {
	switch {
	case m == nil:
		return -1
	case m.Counter != nil:
		return m.GetCounter().GetValue()
	case m.Gauge != nil:
		return m.GetGauge().GetValue()
	case m.Histogram != nil:
		return float64(m.GetHistogram().GetSampleCount())
	}
	return -1
}

func TestCoordinatorMetricsFollowTheRun(t *testing.T) {
	type event struct {
		kind    string
		payload func(t *testing.T) any
	}
	sweepRep := func(level int, rep func(t *testing.T) *pb.IntervalReport) event {
		return event{results.EventSweepInterval, func(t *testing.T) any { return results.SweepInterval{Level: level, Report: rep(t)} }}
	}
	tests := []struct {
		name   string
		events []event
		// want maps "family{labels}" to the value (a histogram's count); -1
		// means the series must be absent.
		want map[string]float64
	}{
		{
			name: "measured reports feed histograms and counters",
			events: []event{
				{results.EventLevelStart, func(*testing.T) any { return results.LevelStart{Level: 0, Value: 4} }},
				sweepRep(0, func(t *testing.T) *pb.IntervalReport {
					return report(t, "a1", 3, 50*time.Millisecond, map[string]uint64{"http_500": 1})
				}),
				sweepRep(0, func(t *testing.T) *pb.IntervalReport { return report(t, "a2", 2, 70*time.Millisecond, nil) }),
			},
			want: map[string]float64{
				"ttftlab_ttft_seconds{level=1,run=r}":                       5,
				"ttftlab_itl_seconds{level=1,run=r}":                        5,
				"ttftlab_e2e_seconds{level=1,run=r}":                        5,
				"ttftlab_requests_total{level=1,outcome=ok,run=r}":          5,
				"ttftlab_requests_total{level=1,outcome=failed,run=r}":      1,
				"ttftlab_request_errors_total{kind=http_500,level=1,run=r}": 1,
				"ttftlab_output_tokens_total{level=1,run=r}":                200,
				"ttftlab_in_flight{level=1,run=r}":                          6,
				"ttftlab_level_value{level=1,run=r}":                        4,
				"ttftlab_runs{state=running}":                               1,
			},
		},
		{
			name: "warm-up adds tokens only",
			events: []event{sweepRep(0, func(t *testing.T) *pb.IntervalReport {
				rep := report(t, "a1", 3, 50*time.Millisecond, map[string]uint64{"timeout_ttft": 2})
				rep.Warmup = true
				return rep
			})},
			want: map[string]float64{
				"ttftlab_ttft_seconds{level=1,run=r}":                           -1,
				"ttftlab_requests_total{level=1,outcome=ok,run=r}":              0,
				"ttftlab_request_errors_total{kind=timeout_ttft,level=1,run=r}": -1,
				"ttftlab_output_tokens_total{level=1,run=r}":                    100,
			},
		},
		{
			name: "refused histograms are left out, counts kept",
			events: []event{sweepRep(0, func(t *testing.T) *pb.IntervalReport {
				rep := report(t, "a1", 3, 50*time.Millisecond, nil)
				rep.RequestsOk = 2 // e2e holds 3 values: refused
				return rep
			})},
			want: map[string]float64{
				"ttftlab_ttft_seconds{level=1,run=r}":              -1,
				"ttftlab_requests_total{level=1,outcome=ok,run=r}": 2,
			},
		},
		{
			name: "untrusted error kinds are bounded",
			events: []event{sweepRep(0, func(t *testing.T) *pb.IntervalReport {
				errs := map[string]uint64{"Bad Kind\xff": 1, strings.Repeat("x", 41): 1}
				for i := range 40 {
					errs[fmt.Sprintf("kind_%02d", i)] = 1
				}
				return report(t, "a1", 0, 0, errs)
			})},
			want: map[string]float64{
				"ttftlab_requests_total{level=1,outcome=failed,run=r}": 42,
			},
		},
		{
			name:   "baseline reports",
			events: []event{{results.EventInterval, func(t *testing.T) any { return report(t, "a1", 1, 200*time.Millisecond, nil) }}},
			want: map[string]float64{
				"ttftlab_ttft_seconds{level=baseline,run=r}": 1,
			},
		},
		{
			name: "final reports and the run's end clear in-flight",
			events: []event{
				sweepRep(0, func(t *testing.T) *pb.IntervalReport { return report(t, "a1", 1, time.Millisecond, nil) }),
				sweepRep(0, func(t *testing.T) *pb.IntervalReport { return report(t, "a2", 1, time.Millisecond, nil) }),
				sweepRep(0, func(t *testing.T) *pb.IntervalReport {
					rep := report(t, "a1", 1, time.Millisecond, nil)
					rep.Final = true
					return rep
				}),
			},
			want: map[string]float64{
				"ttftlab_in_flight{level=1,run=r}": 3,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCoordinator(CoordinatorOptions{})
			for _, ev := range tt.events {
				c.RunEvent("r", ev.kind, ev.payload(t))
			}
			mfs := gather(t, c.Registry())
			for key, want := range tt.want {
				name, labels, _ := strings.Cut(strings.TrimSuffix(key, "}"), "{")
				if got := value(series(mfs, name, labels)); got != want {
					t.Errorf("%s = %g, want %g", key, got, want)
				}
			}
			if n := len(mfs["ttftlab_request_errors_total"].GetMetric()); n > maxErrorKinds+1 {
				t.Errorf("%d error-kind series, want at most %d", n, maxErrorKinds+1)
			}
		})
	}
}

// A run's series stay for the retention after it ends, then go; the
// finished-runs counter keeps the count.
func TestCoordinatorDropsEndedRunsAfterRetention(t *testing.T) {
	now := time.Unix(1000, 0)
	c := NewCoordinator(CoordinatorOptions{Retention: time.Minute, Now: func() time.Time { return now }})
	c.RunEvent("r", results.EventSweepInterval, results.SweepInterval{Level: 0, Report: report(t, "a", 2, time.Millisecond, nil)})
	c.RunEvent("r", results.EventRunEnd, results.RunEnd{Status: results.StatusFailed, Error: "engine exited"})
	steps := []struct {
		name      string
		after     time.Duration
		histogram float64
		failed    float64
		finished  float64
	}{
		{name: "just ended", after: 0, histogram: 2, failed: 1, finished: 1},
		{name: "within the retention", after: 59 * time.Second, histogram: 2, failed: 1, finished: 1},
		{name: "past the retention", after: 61 * time.Second, histogram: -1, failed: 0, finished: 1},
	}
	for _, s := range steps {
		t.Run(s.name, func(t *testing.T) {
			now = time.Unix(1000, 0).Add(s.after)
			mfs := gather(t, c.Registry())
			if got := value(series(mfs, "ttftlab_ttft_seconds", "level=1,run=r")); got != s.histogram {
				t.Errorf("TTFT series count %g, want %g", got, s.histogram)
			}
			if got := value(series(mfs, "ttftlab_runs", "state=failed")); got != s.failed {
				t.Errorf("ttftlab_runs{state=failed} %g, want %g", got, s.failed)
			}
			if got := value(series(mfs, "ttftlab_runs_finished_total", "status=failed")); got != s.finished {
				t.Errorf("ttftlab_runs_finished_total{status=failed} %g, want %g", got, s.finished)
			}
		})
	}
}

func TestCoordinatorQueueAndMembers(t *testing.T) {
	ms := []membership.Member{
		{Name: "g", Meta: membership.Meta{Role: membership.RoleGPUNode}, State: "alive"},
		{Name: "a1", Meta: membership.Meta{Role: membership.RoleAgent}, State: "alive"},
		{Name: "a2", Meta: membership.Meta{Role: membership.RoleAgent}, State: "suspect"},
		{Name: "a3", Meta: membership.Meta{Role: membership.RoleAgent}, State: "alive"},
	}
	c := NewCoordinator(CoordinatorOptions{Members: func() []membership.Member { return ms }})
	for _, id := range []string{"q1", "q2", "q3", "started"} {
		c.RunEvent(id, results.EventQueued, results.Queued{Position: 1})
	}
	c.RunEvent("q2", results.EventQueued, results.Queued{Position: 2}) // a new place: still queued
	c.RunEvent("started", results.EventLease, results.Lease{})
	mfs := gather(t, c.Registry())
	for key, want := range map[string]float64{
		"ttftlab_queue_depth":                       3,
		"ttftlab_members{role=agent,state=alive}":   2,
		"ttftlab_members{role=agent,state=suspect}": 1,
		"ttftlab_members{role=gpunode,state=alive}": 1,
	} {
		name, labels, _ := strings.Cut(strings.TrimSuffix(key, "}"), "{")
		if got := value(series(mfs, name, labels)); got != want {
			t.Errorf("%s = %g, want %g", key, got, want)
		}
	}
}
