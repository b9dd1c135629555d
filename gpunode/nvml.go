//go:build cgo

package gpunode

import (
	"log/slog"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVML is the NVML library the node samples GPUs through: nvml.New() or,
// in tests, a go-nvml mock. go-nvml needs cgo; without it NVML is any and
// GPU sampling is off.
type NVML = nvml.Interface

// nvmlReason turns an NVML return code from Init into plain words.
func nvmlReason(ret nvml.Return) string {
	switch ret {
	case nvml.ERROR_LIBRARY_NOT_FOUND:
		return "NVML not available: libnvidia-ml.so.1 not found — no NVIDIA driver on this host"
	case nvml.ERROR_DRIVER_NOT_LOADED:
		return "NVML not available: the NVIDIA kernel driver is not loaded"
	case nvml.ERROR_NO_PERMISSION:
		return "NVML not available: no permission to open the NVIDIA device files"
	case nvml.ERROR_LIB_RM_VERSION_MISMATCH:
		return "NVML not available: the NVIDIA driver and library versions differ; reboot or reload the driver"
	default:
		return "NVML not available: init returned " + ret.Error()
	}
}

// openGPUs initialises NVML (lib, or nvml.New() when lib is nil) and
// enumerates the GPUs. It never fails: an unavailable NVML is reported in
// the result's reason.
func openGPUs(lib NVML, log *slog.Logger) *gpus {
	if lib == nil {
		lib = nvml.New()
	}
	g := &gpus{}
	if ret := lib.Init(); ret != nvml.SUCCESS {
		g.reason = nvmlReason(ret)
		return g
	}
	if v, ret := lib.SystemGetDriverVersion(); ret == nvml.SUCCESS {
		g.driver = v
	}
	g.shutdown = func() { lib.Shutdown() }
	n, ret := lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		g.reason = "NVML available, but counting GPUs failed: " + ret.Error()
		return g
	}
	var devs []nvml.Device
	for i := range n {
		d, ret := lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			log.Warn("NVML device handle failed", "index", i, "err", ret.Error())
			continue
		}
		gi := GPUInfo{Index: i}
		if name, ret := d.GetName(); ret == nvml.SUCCESS {
			gi.Name = name
		}
		if uuid, ret := d.GetUUID(); ret == nvml.SUCCESS {
			gi.UUID = uuid
		}
		if mem, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
			gi.MemoryTotalBytes = mem.Total
		}
		devs = append(devs, d)
		g.info = append(g.info, gi)
	}
	info := g.info
	g.read = func() []GPUSample {
		out := make([]GPUSample, len(devs))
		for i, d := range devs {
			// A field NVML cannot read (not supported on this GPU) stays zero.
			s := GPUSample{Index: info[i].Index}
			if mem, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
				s.MemoryUsedBytes, s.MemoryTotalBytes = mem.Used, mem.Total
			}
			if u, ret := d.GetUtilizationRates(); ret == nvml.SUCCESS {
				s.GPUUtilPercent, s.MemUtilPercent = u.Gpu, u.Memory
			}
			if p, ret := d.GetPowerUsage(); ret == nvml.SUCCESS {
				s.PowerMilliwatts = p
			}
			out[i] = s
		}
		return out
	}
	return g
}
