package metrics

import (
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/ttftlab/ttftlab/gpunode"
)

// GPUNode exports a gpunode's latest sample and its engine's state at
// scrape time. GPU figures carry dcgm-exporter's names, units and labels
// (gpu, UUID, modelName, Hostname), so dashboards built for dcgm-exporter
// read them; the engine process and the host have ttftlab_ names.
type GPUNode struct {
	reg    *prometheus.Registry
	sample func() (gpunode.Sample, bool)
	status func() gpunode.EngineStatus
	gpus   map[int]gpunode.GPUInfo
	host   string

	gpuDescs                                        []gpuDesc
	nvmlUp, engineState, enginePID, engineUptime    *prometheus.Desc
	engineStarts, engineExits, engineCPU, engineRSS *prometheus.Desc
	hostCPU, memAvailable, pageCache                *prometheus.Desc
}

// gpuDesc is one per-GPU figure.
type gpuDesc struct {
	desc  *prometheus.Desc
	kind  prometheus.ValueType
	value func(gpunode.GPUSample) float64
}

// NewGPUNode returns a gpunode's metrics with their own registry, which
// also holds the Go runtime and process collectors. sample and status are
// read at every scrape (n.LatestSample and n.EngineStatus of a
// *gpunode.Node); info names the GPUs and the host.
func NewGPUNode(info gpunode.Info, sample func() (gpunode.Sample, bool), status func() gpunode.EngineStatus) *GPUNode {
	g := &GPUNode{reg: newRegistry(), sample: sample, status: status, gpus: map[int]gpunode.GPUInfo{}, host: info.Hostname}
	for _, gi := range info.GPUs {
		g.gpus[gi.Index] = gi
	}
	gl := []string{"gpu", "UUID", "modelName", "Hostname"}
	gauge := func(name, help string, v func(gpunode.GPUSample) float64) gpuDesc {
		return gpuDesc{prometheus.NewDesc(name, help, gl, nil), prometheus.GaugeValue, v}
	}
	const mib = 1 << 20
	g.gpuDescs = []gpuDesc{
		gauge("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", func(s gpunode.GPUSample) float64 { return float64(s.GPUUtilPercent) }),
		gauge("DCGM_FI_DEV_MEM_COPY_UTIL", "Memory utilization (in %).", func(s gpunode.GPUSample) float64 { return float64(s.MemUtilPercent) }),
		gauge("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", func(s gpunode.GPUSample) float64 { return float64(s.MemoryUsedBytes) / mib }),
		gauge("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", func(s gpunode.GPUSample) float64 {
			return float64(s.MemoryTotalBytes-min(s.MemoryUsedBytes, s.MemoryTotalBytes)) / mib
		}),
		gauge("DCGM_FI_DEV_FB_TOTAL", "Framebuffer memory total (in MiB).", func(s gpunode.GPUSample) float64 { return float64(s.MemoryTotalBytes) / mib }),
		gauge("DCGM_FI_DEV_POWER_USAGE", "Power draw (in W).", func(s gpunode.GPUSample) float64 { return float64(s.PowerMilliwatts) / 1000 }),
		{prometheus.NewDesc("DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION", "Total energy consumption since boot (in mJ).", gl, nil), prometheus.CounterValue,
			func(s gpunode.GPUSample) float64 { return float64(s.EnergyMillijoules) }},
		gauge("DCGM_FI_DEV_SM_CLOCK", "SM clock frequency (in MHz).", func(s gpunode.GPUSample) float64 { return float64(s.SMClockMHz) }),
		gauge("DCGM_FI_DEV_PCIE_TX_THROUGHPUT", "PCIe transmit throughput (in KB/s), read at 1 Hz.", func(s gpunode.GPUSample) float64 { return float64(s.PCIeTXKBps) }),
		gauge("DCGM_FI_DEV_PCIE_RX_THROUGHPUT", "PCIe receive throughput (in KB/s), read at 1 Hz.", func(s gpunode.GPUSample) float64 { return float64(s.PCIeRXKBps) }),
		gauge("DCGM_FI_DEV_CLOCK_THROTTLE_REASONS", "Clock throttle (clocks event) reasons bitmask, read at 1 Hz.", func(s gpunode.GPUSample) float64 { return float64(s.ThrottleReasons) }),
	}
	g.nvmlUp = prometheus.NewDesc("ttftlab_gpunode_nvml_up", "1 when the latest sample read the GPUs through NVML, 0 when NVML is unavailable.", nil, nil)
	g.engineState = prometheus.NewDesc("ttftlab_engine_state", "1 for the engine's current state (stopped, starting, ready, exited), 0 for the others.", []string{"state"}, nil)
	g.enginePID = prometheus.NewDesc("ttftlab_engine_pid", "The engine process's pid; absent when none runs.", []string{"profile"}, nil)
	g.engineUptime = prometheus.NewDesc("ttftlab_engine_uptime_seconds", "Time since the running engine was spawned; absent when none runs.", []string{"profile"}, nil)
	g.engineStarts = prometheus.NewDesc("ttftlab_engine_starts_total", "Engine spawns since the gpunode started (restarts included).", nil, nil)
	g.engineExits = prometheus.NewDesc("ttftlab_engine_unexpected_exits_total", "Engine exits nobody asked for (crashes, OOM kills) since the gpunode started.", nil, nil)
	g.engineCPU = prometheus.NewDesc("ttftlab_engine_cpu_cores", "CPU use of the engine's process tree since the sample before, in cores; absent when none runs.", nil, nil)
	g.engineRSS = prometheus.NewDesc("ttftlab_engine_rss_bytes", "Resident memory of the engine's process tree; absent when none runs.", nil, nil)
	g.hostCPU = prometheus.NewDesc("ttftlab_host_cpu_ratio", "Whole-host CPU use since the sample before (1 = every core busy).", nil, nil)
	g.memAvailable = prometheus.NewDesc("ttftlab_host_memory_available_bytes", "MemAvailable of /proc/meminfo.", nil, nil)
	g.pageCache = prometheus.NewDesc("ttftlab_host_page_cache_bytes", "Page cache size (Cached of /proc/meminfo).", nil, nil)
	g.reg.MustRegister(g)
	return g
}

// Registry returns the registry to serve.
func (g *GPUNode) Registry() *prometheus.Registry { return g.reg }

// Describe sends the descriptors of every metric Collect sends.
func (g *GPUNode) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range g.gpuDescs {
		ch <- d.desc
	}
	for _, d := range []*prometheus.Desc{g.nvmlUp, g.engineState, g.enginePID, g.engineUptime, g.engineStarts, g.engineExits,
		g.engineCPU, g.engineRSS, g.hostCPU, g.memAvailable, g.pageCache} {
		ch <- d
	}
}

// Collect reads the latest sample and the engine's status.
func (g *GPUNode) Collect(ch chan<- prometheus.Metric) {
	st := g.status()
	for _, s := range []string{gpunode.EngineStopped, gpunode.EngineStarting, gpunode.EngineReady, gpunode.EngineExited} {
		v := 0.0
		if st.State == s {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(g.engineState, prometheus.GaugeValue, v, s)
	}
	if st.PID > 0 {
		ch <- prometheus.MustNewConstMetric(g.enginePID, prometheus.GaugeValue, float64(st.PID), st.Profile)
		ch <- prometheus.MustNewConstMetric(g.engineUptime, prometheus.GaugeValue, st.Uptime.Seconds(), st.Profile)
	}
	ch <- prometheus.MustNewConstMetric(g.engineStarts, prometheus.CounterValue, float64(st.Starts))
	ch <- prometheus.MustNewConstMetric(g.engineExits, prometheus.CounterValue, float64(st.Exits))

	smp, ok := g.sample()
	if !ok {
		return
	}
	up := 0.0
	if smp.NVMLError == "" && len(smp.GPUs) > 0 {
		up = 1
	}
	ch <- prometheus.MustNewConstMetric(g.nvmlUp, prometheus.GaugeValue, up)
	for _, s := range smp.GPUs {
		gi := g.gpus[s.Index]
		// NVML's strings reach label values: a label must be valid UTF-8.
		labels := []string{strconv.Itoa(s.Index), strings.ToValidUTF8(gi.UUID, "?"), strings.ToValidUTF8(gi.Name, "?"), strings.ToValidUTF8(g.host, "?")}
		for _, d := range g.gpuDescs {
			ch <- prometheus.MustNewConstMetric(d.desc, d.kind, d.value(s), labels...)
		}
	}
	if smp.EngineCPUPercent >= 0 && st.PID > 0 {
		ch <- prometheus.MustNewConstMetric(g.engineCPU, prometheus.GaugeValue, smp.EngineCPUPercent/100)
		ch <- prometheus.MustNewConstMetric(g.engineRSS, prometheus.GaugeValue, float64(smp.EngineRSSBytes))
	}
	ch <- prometheus.MustNewConstMetric(g.hostCPU, prometheus.GaugeValue, smp.HostCPUPercent/100)
	ch <- prometheus.MustNewConstMetric(g.memAvailable, prometheus.GaugeValue, float64(smp.MemAvailableBytes))
	ch <- prometheus.MustNewConstMetric(g.pageCache, prometheus.GaugeValue, float64(smp.PageCacheBytes))
}
