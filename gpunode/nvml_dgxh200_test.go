//go:build cgo

// This test runs go-nvml's own 8×H200 mock (pkg/nvml/mock/dgxh200).

package gpunode

import (
	"log/slog"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh200"
	nvmlserver "github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// mockRest fills in the fields the dgxh200 mock leaves to the test.
func mockRest(dev *nvmlserver.Device) {
	dev.GetTotalEnergyConsumptionFunc = func() (uint64, nvml.Return) { return 123_456, nvml.SUCCESS }
	dev.GetClockInfoFunc = func(nvml.ClockType) (uint32, nvml.Return) { return 1980, nvml.SUCCESS }
	dev.GetCurrentClocksEventReasonsFunc = func() (uint64, nvml.Return) { return 0, nvml.SUCCESS }
	dev.GetComputeRunningProcessesFunc = func() ([]nvml.ProcessInfo, nvml.Return) { return nil, nvml.SUCCESS }
	dev.GetPcieThroughputFunc = func(nvml.PcieUtilCounter) (uint32, nvml.Return) { return 512, nvml.SUCCESS }
}

func TestGPUSamplingDGXH200(t *testing.T) {
	lib := dgxh200.New()
	// The mock implements identity and memory; utilisation and power are
	// left to the test.
	for i, d := range lib.Devices {
		dev := d.(*nvmlserver.Device)
		dev.MemoryInfo.Used = uint64(i+1) << 30
		dev.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) {
			return nvml.Utilization{Gpu: 50, Memory: 20}, nvml.SUCCESS
		}
		dev.GetPowerUsageFunc = func() (uint32, nvml.Return) { return 0, nvml.ERROR_NOT_SUPPORTED }
		mockRest(dev)
	}
	g := openGPUs(lib, slog.New(slog.DiscardHandler))
	defer g.close()
	if !g.available() || len(g.info) != 8 || g.driver != "550.54.15" {
		t.Fatalf("available %v, %d GPUs, driver %q; want 8 H200s on 550.54.15", g.available(), len(g.info), g.driver)
	}
	if g.info[0].Name != "NVIDIA H200 141GB HBM3e" || g.info[0].MemoryTotalBytes != 144384<<20 || g.info[0].UUID == "" {
		t.Errorf("GPU 0 = %+v", g.info[0])
	}
	samples, reason := g.sample()
	if reason != "" || len(samples) != 8 {
		t.Fatalf("%d samples, reason %q", len(samples), reason)
	}
	if s := samples[3]; s.MemoryUsedBytes != 4<<30 || s.GPUUtilPercent != 50 || s.MemUtilPercent != 20 || s.PowerMilliwatts != 0 || s.EnergyMillijoules != 123_456 || s.SMClockMHz != 1980 {
		t.Errorf("GPU 3 sample = %+v", s)
	}
}
