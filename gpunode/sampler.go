package gpunode

import (
	"log/slog"
	"sync"
	"time"
)

// GPUInfo describes one GPU as NVML sees it.
type GPUInfo struct {
	Index            int
	Name             string
	UUID             string
	MemoryTotalBytes uint64
}

// GPUSample is one GPU's state at one instant.
type GPUSample struct {
	Index            int
	MemoryUsedBytes  uint64
	MemoryTotalBytes uint64
	GPUUtilPercent   uint32
	MemUtilPercent   uint32
	PowerMilliwatts  uint32
	// EnergyMillijoules is the GPU's energy counter since the driver
	// loaded (Volta and later).
	EnergyMillijoules uint64
	SMClockMHz        uint32
	// PCIeTXKBps and PCIeRXKBps are PCIe throughput in KB/s. NVML samples
	// them over 20 ms per call, so they are read at most once a second, off
	// the sampling path, and carried between readings.
	PCIeTXKBps uint32
	PCIeRXKBps uint32
	// ThrottleReasons is NVML's clocks-event (throttle) reason bitmask.
	ThrottleReasons uint64
	// Processes are the compute processes on the GPU.
	Processes []GPUProcess
}

// GPUProcess is one compute process on a GPU.
type GPUProcess struct {
	PID             uint32
	UsedMemoryBytes uint64
}

// Sample is one sample of the GPUs, the host and the engine process tree.
type Sample struct {
	// Seq counts samples from 1; a subscriber that sees a gap missed
	// samples because it was slow.
	Seq uint64
	// Time is the wall-clock time of the sample; it also carries Go's
	// monotonic reading, so Time.Sub between samples is monotonic.
	Time time.Time
	// Mono is the node's monotonic clock: time since the node started.
	Mono time.Duration
	GPUs []GPUSample
	// NVMLError says why the GPUs could not be sampled, or is empty.
	NVMLError string
	// EngineCPUPercent is the engine process tree's CPU use since the last
	// sample (100 = one core), or -1 when no engine runs.
	EngineCPUPercent float64
	EngineRSSBytes   uint64
	// HostCPUPercent is whole-host CPU use since the last sample (100 =
	// all cores busy).
	HostCPUPercent    float64
	MemAvailableBytes uint64
	PageCacheBytes    uint64
	DirtyBytes        uint64
	// EngineReadBytes is read_bytes of /proc/<pid>/io summed over the
	// engine's process tree; DiskReadBytes is the host's cumulative bytes
	// read from whole disks (/proc/diskstats).
	EngineReadBytes uint64
	DiskReadBytes   uint64
	// EngineMetrics are the engine's /metrics figures (see keptMetrics),
	// set on the first sample after each scrape (1 Hz) and nil otherwise.
	EngineMetrics map[string]float64
}

// gpus is the node's view of the GPUs. When NVML is unavailable, reason
// says why in plain words and sample reports it. It is built by openGPUs
// (nvml.go with cgo, nvml_nocgo.go without).
type gpus struct {
	info   []GPUInfo
	driver string
	reason string
	// read samples every GPU; nil when NVML is unavailable.
	read     func() []GPUSample
	shutdown func()
}

// available reports whether NVML was initialised.
func (g *gpus) available() bool { return g.read != nil }

// sample reads every GPU.
func (g *gpus) sample() ([]GPUSample, string) {
	if g.read == nil {
		return nil, g.reason
	}
	return g.read(), g.reason
}

func (g *gpus) close() {
	if g.shutdown != nil {
		g.shutdown()
	}
}

// subscriberBuffer is the depth of each subscriber's channel: about 1.6 s
// of samples at the default 100 ms interval, enough to ride out a gRPC
// send stall without loss. A slower subscriber loses samples instead of
// slowing the sampler.
const subscriberBuffer = 16

// sampler takes a Sample every interval and fans it out to subscribers.
// Its goroutine is started by start and joined by close.
type sampler struct {
	log       *slog.Logger
	interval  time.Duration
	host      *hostSampler
	gpus      *gpus
	enginePID func() int
	start     time.Time
	// metrics scrapes the engine's /metrics on its own goroutine; nil
	// means no scraping.
	metrics *scraper

	mu     sync.Mutex
	subs   map[uint64]chan Sample
	nextID uint64
	closed bool
	last   Sample
	seq    uint64

	stop chan struct{}
	done chan struct{}
}

func newSampler(log *slog.Logger, interval time.Duration, host *hostSampler, g *gpus, enginePID func() int, start time.Time) *sampler {
	return &sampler{
		log:       log,
		interval:  interval,
		host:      host,
		gpus:      g,
		enginePID: enginePID,
		start:     start,
		subs:      map[uint64]chan Sample{},
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
}

func (s *sampler) run() {
	defer close(s.done)
	if s.metrics != nil {
		go s.metrics.run()
		defer s.metrics.close()
	}
	t := time.NewTicker(s.interval)
	defer t.Stop()
	warned := false
	for {
		now := time.Now()
		smp := s.take(now, &warned)
		s.publish(smp)
		select {
		case <-s.stop:
			return
		case <-t.C:
		}
	}
}

func (s *sampler) take(now time.Time, warned *bool) Sample {
	hr, err := s.host.sample(now, s.enginePID())
	if err != nil && !*warned {
		s.log.Warn("host sampling incomplete", "err", err)
		*warned = true
	}
	gs, reason := s.gpus.sample()
	var em map[string]float64
	if s.metrics != nil {
		em = s.metrics.take()
	}
	return Sample{
		Time:              now,
		Mono:              now.Sub(s.start),
		GPUs:              gs,
		NVMLError:         reason,
		EngineCPUPercent:  hr.engineCPUPercent,
		EngineRSSBytes:    hr.engineRSSBytes,
		HostCPUPercent:    hr.hostCPUPercent,
		MemAvailableBytes: hr.memAvailableBytes,
		PageCacheBytes:    hr.pageCacheBytes,
		DirtyBytes:        hr.dirtyBytes,
		EngineReadBytes:   hr.engineReadBytes,
		DiskReadBytes:     hr.diskReadBytes,
		EngineMetrics:     em,
	}
}

// sampleOnce takes one full sample: host, engine tree, GPUs and any new
// /metrics scrape. The sampler goroutine calls it at each tick.
func (s *sampler) sampleOnce(now time.Time) Sample {
	warned := true
	return s.take(now, &warned)
}

// publish numbers smp and sends it to every subscriber without blocking.
func (s *sampler) publish(smp Sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	smp.Seq = s.seq
	s.last = smp
	for _, ch := range s.subs {
		select {
		case ch <- smp:
		default: // slow subscriber: it sees a gap in Seq
		}
	}
}

// latest returns the most recent sample, if any.
func (s *sampler) latest() (Sample, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last, s.seq > 0
}

// subscribe returns a channel of samples and a cancel function that
// closes it. The channel is closed as well when the sampler closes.
func (s *sampler) subscribe() (<-chan Sample, func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan Sample, subscriberBuffer)
	if s.closed {
		close(ch)
		return ch, func() {}
	}
	id := s.nextID
	s.nextID++
	s.subs[id] = ch
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			s.mu.Lock()
			defer s.mu.Unlock()
			if c, ok := s.subs[id]; ok {
				delete(s.subs, id)
				close(c)
			}
		})
	}
}

// close stops the goroutine, waits for it, and closes every subscription.
func (s *sampler) close() {
	close(s.stop)
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for id, ch := range s.subs {
		delete(s.subs, id)
		close(ch)
	}
}
