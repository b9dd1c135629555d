//go:build cgo

package gpunode

import (
	"log/slog"
	"sync"
	"time"

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
	pcie := newPCIePoller(devs, pcieInterval)
	go pcie.run()
	g.shutdown = func() {
		pcie.close()
		lib.Shutdown()
	}
	g.read = func() []GPUSample {
		out := make([]GPUSample, len(devs))
		for i, d := range devs {
			s := readDevice(d)
			s.Index = info[i].Index
			s.PCIeTXKBps, s.PCIeRXKBps = pcie.get(i)
			out[i] = s
		}
		return out
	}
	return g
}

// readDevice reads one GPU's fast fields. A field NVML cannot read (not
// supported on this GPU) stays zero.
func readDevice(d nvml.Device) GPUSample {
	var s GPUSample
	if mem, ret := d.GetMemoryInfo(); ret == nvml.SUCCESS {
		s.MemoryUsedBytes, s.MemoryTotalBytes = mem.Used, mem.Total
	}
	if u, ret := d.GetUtilizationRates(); ret == nvml.SUCCESS {
		s.GPUUtilPercent, s.MemUtilPercent = u.Gpu, u.Memory
	}
	if p, ret := d.GetPowerUsage(); ret == nvml.SUCCESS {
		s.PowerMilliwatts = p
	}
	if e, ret := d.GetTotalEnergyConsumption(); ret == nvml.SUCCESS {
		s.EnergyMillijoules = e
	}
	if c, ret := d.GetClockInfo(nvml.CLOCK_SM); ret == nvml.SUCCESS {
		s.SMClockMHz = c
	}
	// The clocks-event name replaced the throttle one in driver 535;
	// older drivers only know the latter.
	if r, ret := d.GetCurrentClocksEventReasons(); ret == nvml.SUCCESS {
		s.ThrottleReasons = r
	} else if r, ret := d.GetCurrentClocksThrottleReasons(); ret == nvml.SUCCESS {
		s.ThrottleReasons = r
	}
	if ps, ret := d.GetComputeRunningProcesses(); ret == nvml.SUCCESS {
		for _, p := range ps {
			s.Processes = append(s.Processes, GPUProcess{PID: p.Pid, UsedMemoryBytes: p.UsedGpuMemory})
		}
	}
	return s
}

// pcieInterval is how often PCIe throughput is read. Each
// nvmlDeviceGetPcieThroughput call samples for about 20 ms, so reading it
// inline at 10 Hz on 8 GPUs would take longer than the sampling period.
const pcieInterval = time.Second

// pciePoller reads PCIe TX/RX of every GPU on its own goroutine and keeps
// the latest values. run is started by openGPUs and close joins it.
type pciePoller struct {
	devs     []nvml.Device
	interval time.Duration

	mu     sync.Mutex
	tx, rx []uint32

	stop chan struct{}
	done chan struct{}
}

func newPCIePoller(devs []nvml.Device, interval time.Duration) *pciePoller {
	return &pciePoller{
		devs: devs, interval: interval,
		tx: make([]uint32, len(devs)), rx: make([]uint32, len(devs)),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
}

func (p *pciePoller) run() {
	defer close(p.done)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		for i, d := range p.devs {
			tx, rtx := d.GetPcieThroughput(nvml.PCIE_UTIL_TX_BYTES)
			rx, rrx := d.GetPcieThroughput(nvml.PCIE_UTIL_RX_BYTES)
			p.mu.Lock()
			if rtx == nvml.SUCCESS {
				p.tx[i] = tx
			}
			if rrx == nvml.SUCCESS {
				p.rx[i] = rx
			}
			p.mu.Unlock()
		}
		select {
		case <-p.stop:
			return
		case <-t.C:
		}
	}
}

func (p *pciePoller) get(i int) (tx, rx uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tx[i], p.rx[i]
}

func (p *pciePoller) close() {
	close(p.stop)
	<-p.done
}
