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
