package metrics

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/agent"
	"github.com/ttftlab/ttftlab/gpunode"
)

func TestAgentMetrics(t *testing.T) {
	a := NewAgent()
	for range 3 {
		a.RequestStarted()
	}
	a.RequestEnded(agent.RequestEnd{Sent: true, DispatchLag: 2 * time.Millisecond})
	a.RequestEnded(agent.RequestEnd{Warmup: true, ErrKind: "http_503", Sent: true})
	for i := range 40 { // more kinds than the bound
		a.RequestStarted()
		a.RequestEnded(agent.RequestEnd{ErrKind: fmt.Sprintf("http_%d", 400+i)})
	}
	a.RequestStarted()
	a.RequestEnded(agent.RequestEnd{ErrKind: "Not A Kind"})
	mfs := gather(t, a.Registry())
	for key, want := range map[string]float64{
		"ttftlab_agent_in_flight":                                     1,
		"ttftlab_agent_requests_total{outcome=ok,phase=measured}":     1,
		"ttftlab_agent_requests_total{outcome=failed,phase=warmup}":   1,
		"ttftlab_agent_requests_total{outcome=failed,phase=measured}": 41,
		"ttftlab_agent_request_errors_total{kind=http_503}":           1,
		"ttftlab_agent_dispatch_lag_seconds":                          2,
	} {
		name, labels, _ := strings.Cut(strings.TrimSuffix(key, "}"), "{")
		if got := value(series(mfs, name, labels)); got != want {
			t.Errorf("%s = %g, want %g", key, got, want)
		}
	}
	if n := len(mfs["ttftlab_agent_request_errors_total"].GetMetric()); n != maxErrorKinds+1 {
		t.Errorf("%d error-kind series, want %d kinds and other", n, maxErrorKinds)
	}
	if h := series(mfs, "ttftlab_agent_dispatch_lag_seconds", "").GetHistogram(); h.Schema == nil {
		t.Error("dispatch lag is not a native histogram")
	}
}

func TestGPUNodeMetrics(t *testing.T) {
	info := gpunode.Info{Hostname: "node\xff1", GPUs: []gpunode.GPUInfo{{Index: 0, Name: "NVIDIA H200", UUID: "GPU-a"}}}
	tests := []struct {
		name   string
		sample gpunode.Sample
		ok     bool
		status gpunode.EngineStatus
		want   map[string]float64 // -1: absent
	}{
		{
			name: "engine ready on one GPU",
			sample: gpunode.Sample{GPUs: []gpunode.GPUSample{{Index: 0, GPUUtilPercent: 87, MemoryUsedBytes: 100 << 20, MemoryTotalBytes: 1000 << 20,
				PowerMilliwatts: 350_500, EnergyMillijoules: 9000}}, EngineCPUPercent: 150, EngineRSSBytes: 1 << 30, HostCPUPercent: 25},
			ok:     true,
			status: gpunode.EngineStatus{State: gpunode.EngineReady, Profile: "sim", PID: 4242, Uptime: 3 * time.Second, Starts: 2, Exits: 1},
			want: map[string]float64{
				"DCGM_FI_DEV_GPU_UTIL{Hostname=node?1,UUID=GPU-a,gpu=0,modelName=NVIDIA H200}":                 87,
				"DCGM_FI_DEV_FB_USED{Hostname=node?1,UUID=GPU-a,gpu=0,modelName=NVIDIA H200}":                  100,
				"DCGM_FI_DEV_FB_FREE{Hostname=node?1,UUID=GPU-a,gpu=0,modelName=NVIDIA H200}":                  900,
				"DCGM_FI_DEV_POWER_USAGE{Hostname=node?1,UUID=GPU-a,gpu=0,modelName=NVIDIA H200}":              350.5,
				"DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION{Hostname=node?1,UUID=GPU-a,gpu=0,modelName=NVIDIA H200}": 9000,
				"ttftlab_gpunode_nvml_up":                    1,
				"ttftlab_engine_state{state=ready}":          1,
				"ttftlab_engine_state{state=stopped}":        0,
				"ttftlab_engine_pid{profile=sim}":            4242,
				"ttftlab_engine_uptime_seconds{profile=sim}": 3,
				"ttftlab_engine_starts_total":                2,
				"ttftlab_engine_unexpected_exits_total":      1,
				"ttftlab_engine_cpu_cores":                   1.5,
				"ttftlab_engine_rss_bytes":                   1 << 30,
				"ttftlab_host_cpu_ratio":                     0.25,
			},
		},
		{
			name:   "no NVML, no engine",
			sample: gpunode.Sample{NVMLError: "NVML not available", EngineCPUPercent: -1},
			ok:     true,
			status: gpunode.EngineStatus{State: gpunode.EngineStopped},
			want: map[string]float64{
				"ttftlab_gpunode_nvml_up":             0,
				"ttftlab_engine_state{state=stopped}": 1,
				"ttftlab_engine_pid{profile=}":        -1,
				"ttftlab_engine_cpu_cores":            -1,
			},
		},
		{
			name:   "no sample yet",
			status: gpunode.EngineStatus{State: gpunode.EngineStarting, PID: 7, Profile: "vllm"},
			want: map[string]float64{
				"ttftlab_gpunode_nvml_up":              -1,
				"ttftlab_engine_state{state=starting}": 1,
				"ttftlab_engine_pid{profile=vllm}":     7,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewGPUNode(info, func() (gpunode.Sample, bool) { return tt.sample, tt.ok }, func() gpunode.EngineStatus { return tt.status })
			mfs := gather(t, g.Registry())
			for key, want := range tt.want {
				name, labels, _ := strings.Cut(strings.TrimSuffix(key, "}"), "{")
				if got := value(series(mfs, name, labels)); got != want {
					t.Errorf("%s = %g, want %g", key, got, want)
				}
			}
		})
	}
}

func TestServe(t *testing.T) {
	t.Run("bad addresses name the value and the fix", func(t *testing.T) {
		for _, addr := range []string{"nonsense", "127.0.0.1:http", "127.0.0.1:70000", ":"} {
			_, err := Serve(context.Background(), addr, NewAgent().Registry(), nil)
			if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "127.0.0.1:9090") {
				t.Errorf("Serve(%q) = %v, want an error naming the value and an example", addr, err)
			}
		}
	})
	t.Run("GET /metrics only, and Close ends it", func(t *testing.T) {
		a := NewAgent()
		a.RequestStarted()
		s, err := Serve(context.Background(), "127.0.0.1:0", a.Registry(), nil)
		if err != nil {
			t.Fatal(err)
		}
		base := "http://" + s.Addr()
		resp, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "ttftlab_agent_in_flight 1") {
			t.Errorf("GET /metrics: %s, body without ttftlab_agent_in_flight 1:\n%.500s", resp.Status, body)
		}
		for _, req := range []struct{ method, path string }{{http.MethodPost, "/metrics"}, {http.MethodGet, "/debug/pprof/"}, {http.MethodGet, "/"}} {
			r, _ := http.NewRequest(req.method, base+req.path, nil)
			resp, err := http.DefaultClient.Do(r)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Errorf("%s %s answered 200, want a refusal", req.method, req.path)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := http.Get(base + "/metrics"); err == nil {
			t.Error("the listener still answers after Close")
		}
	})
}
