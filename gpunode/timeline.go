package gpunode

import (
	"cmp"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/ttftlab/ttftlab/internal/vllmlog"
)

// Timeline phases the node adds to the log's and the supervisor's.
const (
	PhaseColdPrep      = "cold_prep"       // supervisor: cache eviction before spawn (negative offsets)
	PhaseSpawn         = "spawn"           // supervisor: the process started
	PhasePageCacheFill = "page_cache_fill" // sampler: disk/engine reads rising, Cached rising
	PhaseWeightsOnGPU  = "weights_on_gpu"  // sampler: GPU memory jump
)

// maxRecorded bounds the samples kept for one start: an hour at 10 Hz.
const maxRecorded = 36_000

// recorder keeps every sample from its creation until stop. Its goroutine
// is joined by stop, which may be called more than once.
type recorder struct {
	cancel  func()
	done    chan struct{}
	once    sync.Once
	samples []Sample
}

func newRecorder(s *sampler) *recorder {
	ch, cancel := s.subscribe()
	r := &recorder{cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		for smp := range ch {
			if len(r.samples) < maxRecorded {
				r.samples = append(r.samples, smp)
			}
		}
	}()
	return r
}

// stop ends the recording and returns the samples, oldest first.
func (r *recorder) stop() []Sample {
	r.once.Do(func() {
		r.cancel()
		<-r.done
	})
	return r.samples
}

// timelineInput is what buildTimeline merges.
type timelineInput struct {
	phases   []vllmlog.Phase // log and supervisor phases
	spawn    time.Time
	ready    time.Time
	baseline Sample // the last sample before spawn (zero if none)
	samples  []Sample
	cold     ColdReport
	nvml     bool
	nvmlWhy  string
	log      vllmlog.Result
}

// Thresholds of the sampler phases.
const (
	readThreshold   = 1 << 20   // bytes read in one sample interval that count as loading
	gpuJumpBytes    = 256 << 20 // GPU memory rise that counts as weights arriving
	gpuSettledBytes = 64 << 20  // rise per interval below which GPU memory has settled
)

func gib(b float64) string { return fmt.Sprintf("%.2f GiB", b/(1<<30)) }

// buildTimeline merges the log's phases, the supervisor's milestones and
// the sampler's evidence into one timeline, sorted by start. Offsets are
// from spawn on the monotonic clock.
func buildTimeline(in timelineInput) []vllmlog.Phase {
	var out []vllmlog.Phase
	sup := func(name string, start, end time.Duration, detail string) {
		out = append(out, vllmlog.Phase{Name: name, Start: start, End: end, Duration: end - start, Source: vllmlog.SourceSupervisor, Detail: detail})
	}
	smp := func(name string, start, end time.Duration, detail string) {
		out = append(out, vllmlog.Phase{Name: name, Start: start, End: end, Duration: end - start, Source: vllmlog.SourceSampler, Detail: detail})
	}
	if in.cold.Mode != ColdWarmRestart && in.cold.Mode != "" {
		d := in.cold.Detail()
		sup(PhaseColdPrep, -in.cold.Took, 0, in.cold.Mode+": "+d)
	}
	sup(PhaseSpawn, 0, 0, "")

	readyOff := in.ready.Sub(in.spawn)
	var during []Sample
	for _, s := range in.samples {
		if off := s.Time.Sub(in.spawn); off >= 0 && off <= readyOff {
			during = append(during, s)
		}
	}
	off := func(s Sample) time.Duration { return s.Time.Sub(in.spawn) }

	// Page-cache fill: reads by the engine tree (or, where /proc/<pid>/io
	// is unreadable, by the disks) rising.
	prevEngine, prevDisk, prevCached := uint64(0), in.baseline.DiskReadBytes, in.baseline.PageCacheBytes
	if prevDisk == 0 && len(during) > 0 {
		prevDisk = during[0].DiskReadBytes
	}
	if prevCached == 0 && len(during) > 0 {
		prevCached = during[0].PageCacheBytes
	}
	var first, last *Sample
	var engineRead, diskRead uint64
	startCached := prevCached
	for i := range during {
		s := &during[i]
		de := s.EngineReadBytes - min(s.EngineReadBytes, prevEngine)
		dd := s.DiskReadBytes - min(s.DiskReadBytes, prevDisk)
		if de >= readThreshold || dd >= readThreshold {
			if first == nil {
				first = s
			}
			last = s
		}
		engineRead += de
		diskRead += dd
		prevEngine, prevDisk = s.EngineReadBytes, s.DiskReadBytes
	}
	if first != nil {
		startOff := off(*first) - min(off(*first), sampleGap(during, first))
		smp(PhasePageCacheFill, startOff, off(*last), fmt.Sprintf("engine read %s, disks read %s, page cache %+.2f GiB",
			gib(float64(engineRead)), gib(float64(diskRead)), (float64(last.PageCacheBytes)-float64(startCached))/(1<<30)))
	} else {
		smp(PhasePageCacheFill, 0, 0, "not observed: no disk reads while starting (weights already in the page cache, or no samples)")
	}

	// Weights resident on the GPU: the first jump in GPU memory used.
	switch {
	case !in.nvml:
		why := "no NVML"
		if in.nvmlWhy != "" {
			why += " (" + in.nvmlWhy + ")"
		}
		smp(PhaseWeightsOnGPU, 0, 0, "not observed: "+why)
	default:
		used := func(s Sample) float64 {
			var u uint64
			for _, g := range s.GPUs {
				u += g.MemoryUsedBytes
			}
			return float64(u)
		}
		base := used(in.baseline)
		if len(in.baseline.GPUs) == 0 && len(during) > 0 {
			base = used(during[0])
		}
		target := -1.0
		if in.log.ModelLoadGiB != nil {
			target = 0.9 * *in.log.ModelLoadGiB * (1 << 30)
		}
		var js, je *Sample
		for i := range during {
			s := &during[i]
			rise := used(*s) - base
			if js == nil {
				if rise >= gpuJumpBytes {
					js = s
				}
				continue
			}
			if target > 0 && rise >= target {
				je = s
				break
			}
			if target <= 0 && i > 0 && used(*s)-used(during[i-1]) < gpuSettledBytes {
				je = &during[i-1]
				break
			}
		}
		switch {
		case js == nil:
			smp(PhaseWeightsOnGPU, 0, 0, "not observed: GPU memory did not rise by 256 MiB before ready")
		default:
			if je == nil {
				je = js
			}
			detail := "GPU memory +" + gib(used(*je)-base)
			if in.log.ModelLoadGiB != nil {
				detail += fmt.Sprintf(" (log: model %.2f GiB)", *in.log.ModelLoadGiB)
			}
			startOff := off(*js) - min(off(*js), sampleGap(during, js))
			smp(PhaseWeightsOnGPU, startOff, off(*je), detail)
		}
	}

	out = append(out, in.phases...)
	slices.SortStableFunc(out, func(a, b vllmlog.Phase) int { return cmp.Compare(a.Start, b.Start) })
	return out
}

// sampleGap is the time from the sample before s to s: the change a
// sample shows happened somewhere in that gap.
func sampleGap(samples []Sample, s *Sample) time.Duration {
	for i := range samples {
		if &samples[i] == s && i > 0 {
			return s.Time.Sub(samples[i-1].Time)
		}
	}
	return 0
}
