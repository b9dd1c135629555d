//go:build cgo

package gpunode

import (
	"log/slog"
	"os"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// BenchmarkSampleOnceRealNVML is BenchmarkSampleOnce against this host's
// real driver: run it on a GPU host (it skips where NVML is absent).
func BenchmarkSampleOnceRealNVML(b *testing.B) {
	lib := nvml.New()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		b.Skipf("no NVML on this host: %v", nvml.ErrorString(ret))
	}
	lib.Shutdown()
	g := openGPUs(lib, slog.New(slog.DiscardHandler))
	defer g.close()
	s := newSampler(slog.New(slog.DiscardHandler), 100*time.Millisecond, newHostSampler("/proc"), g, func() int { return os.Getpid() }, time.Now())
	b.ReportAllocs()
	now := time.Now()
	for b.Loop() {
		now = now.Add(100 * time.Millisecond)
		_ = s.sampleOnce(now)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)*10/1e9*100, "%core@10Hz")
}

// BenchmarkNVMLCalls times each NVML call the sampler makes, against the
// real driver, to decide which fields can be read at 10 Hz.
func BenchmarkNVMLCalls(b *testing.B) {
	lib := nvml.New()
	if ret := lib.Init(); ret != nvml.SUCCESS {
		b.Skipf("no NVML on this host: %v", nvml.ErrorString(ret))
	}
	defer lib.Shutdown()
	d, ret := lib.DeviceGetHandleByIndex(0)
	if ret != nvml.SUCCESS {
		b.Skipf("no GPU 0: %v", nvml.ErrorString(ret))
	}
	calls := []struct {
		name string
		fn   func()
	}{
		{"MemoryInfo", func() { d.GetMemoryInfo() }},
		{"MemoryInfo_v2", func() { d.GetMemoryInfo_v2() }},
		{"UtilizationRates", func() { d.GetUtilizationRates() }},
		{"PowerUsage", func() { d.GetPowerUsage() }},
		{"TotalEnergyConsumption", func() { d.GetTotalEnergyConsumption() }},
		{"ClockInfoSM", func() { d.GetClockInfo(nvml.CLOCK_SM) }},
		{"ClocksEventReasons", func() { d.GetCurrentClocksEventReasons() }},
		{"ComputeRunningProcesses", func() { d.GetComputeRunningProcesses() }},
		{"PcieThroughputTX", func() { d.GetPcieThroughput(nvml.PCIE_UTIL_TX_BYTES) }},
	}
	for _, c := range calls {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				c.fn()
			}
		})
	}
}
