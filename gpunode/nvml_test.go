//go:build cgo

package gpunode

import (
	"fmt"
	"log/slog"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
	"github.com/google/go-cmp/cmp"
)

// noGPU is an NVML whose library cannot be loaded, so that tests do not
// depend on the machine's driver.
func noGPU() NVML {
	return &mock.Interface{
		InitFunc: func() nvml.Return { return nvml.ERROR_LIBRARY_NOT_FOUND },
	}
}

const h200Bytes = 144384 << 20

// fakeH200s is an 8×H200 machine built from go-nvml's generated mocks, in
// the shape of mock/dgxh200 (which needs github.com/google/uuid, not yet in
// go.sum; see nvml_dgxh200_test.go). GPU i uses i GiB and i % 100 percent.
func fakeH200s(shutdowns *int) *mock.Interface {
	devs := make([]nvml.Device, 8)
	for i := range devs {
		devs[i] = &mock.Device{
			GetNameFunc: func() (string, nvml.Return) { return "NVIDIA H200 141GB HBM3e", nvml.SUCCESS },
			GetUUIDFunc: func() (string, nvml.Return) { return fmt.Sprintf("GPU-%08d", i), nvml.SUCCESS },
			GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
				used := uint64(i) << 30
				return nvml.Memory{Total: h200Bytes, Used: used, Free: h200Bytes - used}, nvml.SUCCESS
			},
			GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) {
				return nvml.Utilization{Gpu: uint32(i * 10), Memory: uint32(i * 5)}, nvml.SUCCESS
			},
			GetPowerUsageFunc: func() (uint32, nvml.Return) {
				if i == 7 {
					return 0, nvml.ERROR_NOT_SUPPORTED
				}
				return uint32(100_000 + i*1000), nvml.SUCCESS
			},
			GetTotalEnergyConsumptionFunc: func() (uint64, nvml.Return) { return uint64(1_000_000 * (i + 1)), nvml.SUCCESS },
			GetClockInfoFunc: func(c nvml.ClockType) (uint32, nvml.Return) {
				if c != nvml.CLOCK_SM {
					return 0, nvml.ERROR_INVALID_ARGUMENT
				}
				return 1980, nvml.SUCCESS
			},
			GetCurrentClocksEventReasonsFunc: func() (uint64, nvml.Return) {
				if i == 7 { // an old driver: only the throttle name
					return 0, nvml.ERROR_FUNCTION_NOT_FOUND
				}
				return 0x4, nvml.SUCCESS // SW power cap
			},
			GetCurrentClocksThrottleReasonsFunc: func() (uint64, nvml.Return) { return 0x1, nvml.SUCCESS },
			GetComputeRunningProcessesFunc: func() ([]nvml.ProcessInfo, nvml.Return) {
				if i != 2 {
					return nil, nvml.SUCCESS
				}
				return []nvml.ProcessInfo{{Pid: 4242, UsedGpuMemory: 2 << 30}}, nvml.SUCCESS
			},
			GetPcieThroughputFunc: func(c nvml.PcieUtilCounter) (uint32, nvml.Return) {
				if c == nvml.PCIE_UTIL_TX_BYTES {
					return uint32(1000 + i), nvml.SUCCESS
				}
				return uint32(2000 + i), nvml.SUCCESS
			},
		}
	}
	return &mock.Interface{
		InitFunc:                   func() nvml.Return { return nvml.SUCCESS },
		ShutdownFunc:               func() nvml.Return { *shutdowns++; return nvml.SUCCESS },
		SystemGetDriverVersionFunc: func() (string, nvml.Return) { return "550.54.15", nvml.SUCCESS },
		DeviceGetCountFunc:         func() (int, nvml.Return) { return len(devs), nvml.SUCCESS },
		DeviceGetHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if i < 0 || i >= len(devs) {
				return nil, nvml.ERROR_INVALID_ARGUMENT
			}
			return devs[i], nvml.SUCCESS
		},
	}
}

func TestGPUSamplingThroughNVML(t *testing.T) {
	var shutdowns int
	g := openGPUs(fakeH200s(&shutdowns), slog.New(slog.DiscardHandler))
	if !g.available() || g.reason != "" {
		t.Fatalf("available = %v, reason %q; want available", g.available(), g.reason)
	}
	if g.driver != "550.54.15" {
		t.Errorf("driver = %q", g.driver)
	}
	if len(g.info) != 8 {
		t.Fatalf("%d GPUs, want 8", len(g.info))
	}
	if diff := cmp.Diff(GPUInfo{Index: 3, Name: "NVIDIA H200 141GB HBM3e", UUID: "GPU-00000003", MemoryTotalBytes: h200Bytes}, g.info[3]); diff != "" {
		t.Errorf("GPU 3 info (-want +got):\n%s", diff)
	}
	// PCIe is read off the sampling path; wait for the poller's first pass.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if tx, _ := g.read()[7].PCIeTXKBps, 0; tx != 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	samples, reason := g.sample()
	if reason != "" || len(samples) != 8 {
		t.Fatalf("sample: %d samples, reason %q", len(samples), reason)
	}
	want := GPUSample{Index: 2, MemoryUsedBytes: 2 << 30, MemoryTotalBytes: h200Bytes, GPUUtilPercent: 20, MemUtilPercent: 10, PowerMilliwatts: 102_000,
		EnergyMillijoules: 3_000_000, SMClockMHz: 1980, PCIeTXKBps: 1002, PCIeRXKBps: 2002, ThrottleReasons: 0x4,
		Processes: []GPUProcess{{PID: 4242, UsedMemoryBytes: 2 << 30}}}
	if diff := cmp.Diff(want, samples[2]); diff != "" {
		t.Errorf("GPU 2 sample (-want +got):\n%s", diff)
	}
	if samples[7].PowerMilliwatts != 0 || samples[7].GPUUtilPercent != 70 {
		t.Errorf("GPU 7 (power not supported) = %+v, want power 0, the rest read", samples[7])
	}
	if samples[7].ThrottleReasons != 0x1 {
		t.Errorf("GPU 7 throttle reasons = %#x, want the older API's 0x1", samples[7].ThrottleReasons)
	}
	g.close()
	if shutdowns != 1 {
		t.Errorf("Shutdown called %d times, want 1", shutdowns)
	}
}

func TestNodeWithFakeGPUs(t *testing.T) {
	var shutdowns int
	n := newTestNode(t, func(c *Config) { c.NVML = fakeH200s(&shutdowns) }, "ready")
	info, err := n.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !info.NVMLAvailable || info.NVMLError != "" || len(info.GPUs) != 8 || info.DriverVersion != "550.54.15" {
		t.Errorf("Info = %+v, want 8 GPUs with NVML available", info)
	}
	ch, cancel := n.Subscribe()
	defer cancel()
	s := <-ch
	if len(s.GPUs) != 8 || s.NVMLError != "" {
		t.Errorf("sample has %d GPUs, NVML error %q; want 8 and none", len(s.GPUs), s.NVMLError)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if shutdowns != 1 {
		t.Errorf("Shutdown called %d times, want 1", shutdowns)
	}
}

// TestNoNVMLOnThisHost takes the real path: nvml.New() on a machine that
// may have no NVIDIA driver.
func TestNoNVMLOnThisHost(t *testing.T) {
	n := newTestNode(t, func(c *Config) { c.NVML = nil }, "ready")
	info, err := n.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.NVMLAvailable {
		t.Skipf("NVML is available here (driver %s, %d GPUs); the no-driver path is not reachable", info.DriverVersion, len(info.GPUs))
	}
	const want = "NVML not available: libnvidia-ml.so.1 not found — no NVIDIA driver on this host"
	if info.NVMLError != want {
		t.Errorf("NVMLError = %q, want %q", info.NVMLError, want)
	}
	ch, cancel := n.Subscribe()
	defer cancel()
	s := <-ch
	if s.NVMLError != want || len(s.GPUs) != 0 {
		t.Errorf("sample NVML error %q, %d GPUs; want %q and none", s.NVMLError, len(s.GPUs), want)
	}
	if s.MemAvailableBytes == 0 {
		t.Errorf("host not sampled without NVML")
	}
}

func TestNVMLReasons(t *testing.T) {
	for ret, want := range map[nvml.Return]string{
		nvml.ERROR_LIBRARY_NOT_FOUND: "NVML not available: libnvidia-ml.so.1 not found — no NVIDIA driver on this host",
		nvml.ERROR_DRIVER_NOT_LOADED: "NVML not available: the NVIDIA kernel driver is not loaded",
		nvml.ERROR_UNKNOWN:           "NVML not available: init returned ERROR_UNKNOWN",
	} {
		if got := nvmlReason(ret); got != want {
			t.Errorf("nvmlReason(%d) = %q, want %q", ret, got, want)
		}
	}
}

// benchNVML is the 8×H200 mock for BenchmarkSampleOnce.
func benchNVML() NVML {
	var shutdowns int
	return fakeH200s(&shutdowns)
}
