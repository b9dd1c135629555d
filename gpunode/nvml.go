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
	slow := newSlowPoller(devs, slowInterval)
	go slow.run()
	g.shutdown = func() {
		slow.close()
		lib.Shutdown()
	}
	g.read = func() []GPUSample {
		out := make([]GPUSample, len(devs))
		for i, d := range devs {
			s := readDevice(d)
			s.Index = info[i].Index
			f := slow.get(i)
			s.PCIeTXKBps, s.PCIeRXKBps, s.ThrottleReasons, s.EnergyMillijoules = f.tx, f.rx, f.throttle, f.energy
			s.Processes = append([]GPUProcess(nil), f.processes...)
			out[i] = s
		}
		return out
	}
	return g
}

// readDevice reads one GPU's fast fields, the ones sampled at the full
// rate. A field NVML cannot read (not supported on this GPU) stays zero.
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
	if c, ret := d.GetClockInfo(nvml.CLOCK_SM); ret == nvml.SUCCESS {
		s.SMClockMHz = c
	}
	return s
}

// slowFields are the fields read at 1 Hz by the poller: the energy
// counter, PCIe throughput,
// throttle reasons and the compute processes.
type slowFields struct {
	energy    uint64
	tx, rx    uint32
	throttle  uint64
	processes []GPUProcess
}

// readSlow reads one GPU's slow fields.
func readSlow(d nvml.Device) slowFields {
	var f slowFields
	// The energy counter is cumulative, so 1 Hz loses nothing; on a real
	// H200 one read takes about 4 ms.
	if e, ret := d.GetTotalEnergyConsumption(); ret == nvml.SUCCESS {
		f.energy = e
	}
	if tx, ret := d.GetPcieThroughput(nvml.PCIE_UTIL_TX_BYTES); ret == nvml.SUCCESS {
		f.tx = tx
	}
	if rx, ret := d.GetPcieThroughput(nvml.PCIE_UTIL_RX_BYTES); ret == nvml.SUCCESS {
		f.rx = rx
	}
	// The clocks-event name replaced the throttle one in driver 535;
	// older drivers only know the latter.
	if r, ret := d.GetCurrentClocksEventReasons(); ret == nvml.SUCCESS {
		f.throttle = r
	} else if r, ret := d.GetCurrentClocksThrottleReasons(); ret == nvml.SUCCESS {
		f.throttle = r
	}
	if ps, ret := d.GetComputeRunningProcesses(); ret == nvml.SUCCESS {
		for _, p := range ps {
			f.processes = append(f.processes, GPUProcess{PID: p.Pid, UsedMemoryBytes: p.UsedGpuMemory})
		}
	}
	return f
}

// slowInterval is how often the slow fields are read. Each
// nvmlDeviceGetPcieThroughput call samples for about 20 ms and
// nvmlDeviceGetTotalEnergyConsumption takes about 4 ms on a real H200
// (BenchmarkNVMLCalls), against 2–20 µs for each fast field, so reading
// them inline at 10 Hz would cost several per cent of a core.
const slowInterval = time.Second

// slowPoller reads the slow fields of every GPU on its own goroutine and
// keeps the latest values. The first pass runs before newSlowPoller
// returns, so the first sample already carries them; run is started by
// openGPUs and close joins it.
type slowPoller struct {
	devs     []nvml.Device
	interval time.Duration

	mu     sync.Mutex
	fields []slowFields

	stop chan struct{}
	done chan struct{}
}

func newSlowPoller(devs []nvml.Device, interval time.Duration) *slowPoller {
	p := &slowPoller{
		devs: devs, interval: interval, fields: make([]slowFields, len(devs)),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	p.poll()
	return p
}

func (p *slowPoller) poll() {
	for i, d := range p.devs {
		f := readSlow(d)
		p.mu.Lock()
		p.fields[i] = f
		p.mu.Unlock()
	}
}

func (p *slowPoller) run() {
	defer close(p.done)
	t := time.NewTicker(p.interval)
	defer t.Stop()
	for {
		select {
		case <-p.stop:
			return
		case <-t.C:
			p.poll()
		}
	}
}

func (p *slowPoller) get(i int) slowFields {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fields[i]
}

func (p *slowPoller) close() {
	close(p.stop)
	<-p.done
}
