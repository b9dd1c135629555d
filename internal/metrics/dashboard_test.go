package metrics

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ttftlab/ttftlab/agent"
	"github.com/ttftlab/ttftlab/coordinator/results"
	"github.com/ttftlab/ttftlab/gpunode"
	"github.com/ttftlab/ttftlab/internal/membership"
)

const dashboardPath = "../../deploy/grafana/ttftlab.json"

// PromQL pieces that are not metric names.
var (
	promStringRe   = regexp.MustCompile(`"(?:[^"\\]|\\.)*"`)
	promMatchersRe = regexp.MustCompile(`\{[^{}]*\}`)
	promRangeRe    = regexp.MustCompile(`\[[^\[\]]*\]`)
	promNumberRe   = regexp.MustCompile(`\b\d+(?:\.\d+)?(?:[eE][+-]?\d+)?(?:ms|s|m|h|d|w|y)?\b`)
	promGroupRe    = regexp.MustCompile(`\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)`)
	promIdentRe    = regexp.MustCompile(`[A-Za-z_:][A-Za-z0-9_:]*(\s*\()?`)
	promKeywords   = []string{"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless", "offset", "inf", "nan"}
)

// metricNames returns the metric names a PromQL expression selects: the
// identifiers left once strings, label matchers, ranges, grouping clauses,
// numbers and durations, function calls and keywords are taken out.
func metricNames(expr string) []string {
	e := promStringRe.ReplaceAllString(expr, `""`)
	e = promMatchersRe.ReplaceAllString(e, " ")
	e = promRangeRe.ReplaceAllString(e, " ")
	e = promGroupRe.ReplaceAllString(e, " ")
	e = promNumberRe.ReplaceAllString(e, " ")
	var out []string
	for _, m := range promIdentRe.FindAllStringSubmatch(e, -1) {
		name := m[0]
		if m[1] != "" || slices.Contains(promKeywords, strings.ToLower(name)) {
			continue // a function call, or a keyword
		}
		if !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}

func TestMetricNames(t *testing.T) {
	tests := []struct {
		name string
		expr string
		want []string
	}{
		{name: "quantile of a native histogram", expr: `histogram_quantile(0.99, sum by (run, level) (rate(ttftlab_ttft_seconds{run=~"$run"}[$__rate_interval])))`, want: []string{"ttftlab_ttft_seconds"}},
		{name: "arithmetic on two metrics", expr: `DCGM_FI_DEV_FB_USED / (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE) * 100`, want: []string{"DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"}},
		{name: "matcher values and label names are not metrics", expr: `sum without (kind) (x_total{outcome="ok", kind!~"http_.*"} offset 5m) * 1e3`, want: []string{"x_total"}},
		{name: "binary operators with grouping", expr: `a_total / on (run) group_left (level) b_total and bool c`, want: []string{"a_total", "b_total", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := metricNames(tt.expr); !slices.Equal(got, tt.want) {
				t.Errorf("metricNames(%q) = %q, want %q", tt.expr, got, tt.want)
			}
		})
	}
}

// exported gathers the three registries, each fed enough to show every
// family it has, and returns the names a query may use: each family's name
// and, for a histogram, its classic series' names.
func exported(t *testing.T) map[string]bool {
	t.Helper()
	coord := NewCoordinator(CoordinatorOptions{Members: func() []membership.Member {
		return []membership.Member{{Name: "a", Meta: membership.Meta{Role: membership.RoleAgent}, State: "alive"}}
	}})
	coord.RunEvent("r", results.EventLevelStart, results.LevelStart{Level: 0, Value: 2})
	coord.RunEvent("r", results.EventSweepInterval, results.SweepInterval{Level: 0, Report: report(t, "a", 2, 30*time.Millisecond, map[string]uint64{"http_503": 1})})

	ag := NewAgent()
	ag.RequestStarted()
	ag.RequestEnded(agent.RequestEnd{ErrKind: "connect_refused", Sent: true, DispatchLag: time.Millisecond})

	info := gpunode.Info{Hostname: "h", GPUs: []gpunode.GPUInfo{{Index: 0, Name: "NVIDIA H200", UUID: "GPU-1"}}}
	gn := NewGPUNode(info,
		func() (gpunode.Sample, bool) {
			return gpunode.Sample{GPUs: []gpunode.GPUSample{{Index: 0, GPUUtilPercent: 50}}, EngineCPUPercent: 120}, true
		},
		func() gpunode.EngineStatus {
			return gpunode.EngineStatus{State: gpunode.EngineReady, PID: 42, Profile: "sim", Starts: 1}
		})

	names := map[string]bool{}
	for _, reg := range []*prometheus.Registry{coord.Registry(), ag.Registry(), gn.Registry()} {
		for name, mf := range gather(t, reg) {
			names[name] = true
			if mf.GetType().String() == "HISTOGRAM" {
				for _, s := range []string{"_bucket", "_sum", "_count"} {
					names[name+s] = true
				}
			}
		}
	}
	return names
}

// Every metric the shipped Grafana dashboard queries is exported by the
// coordinator's, an agent's or the gpunode's registry.
func TestDashboardQueriesExportedMetrics(t *testing.T) {
	b, err := os.ReadFile(filepath.FromSlash(dashboardPath))
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	have := exported(t)
	used := map[string]bool{}
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for _, tg := range p.Targets {
			names := metricNames(tg.Expr)
			if len(names) == 0 {
				t.Errorf("panel %q: query %q selects no metric", p.Title, tg.Expr)
			}
			for _, n := range names {
				used[n] = true
				if !have[n] {
					t.Errorf("panel %q queries %s, which no registry exports (query %q)", p.Title, n, tg.Expr)
				}
			}
		}
	}
	for _, must := range []string{"ttftlab_ttft_seconds", "ttftlab_requests_total", "ttftlab_request_errors_total", "ttftlab_agent_in_flight", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED"} {
		if !used[must] {
			t.Errorf("the dashboard does not query %s", must)
		}
	}
}
