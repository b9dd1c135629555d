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
	PhaseColdPrep       = "cold_prep"       // supervisor: cache eviction before spawn (negative offsets)
	PhaseSpawn          = "spawn"           // supervisor: the process started
	PhasePageCacheFill  = "page_cache_fill" // sampler and mincore: the weight files entering the page cache, inside the weight load
	PhaseBootstrapReads = "bootstrap_reads" // sampler: reads before the weight load (libraries, imports)
	PhaseWeightsOnGPU   = "weights_on_gpu"  // sampler: GPU memory jump
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
	// weights are the model's weight files and their page-cache residency
	// before spawn and after ready; generated says why the engine loads no
	// weights from disk, or is empty.
	weights   weightSet
	generated string
}

// Thresholds of the sampler phases.
const (
	readThreshold   = 1 << 20   // bytes read in one sample interval that count as loading
	gpuJumpBytes    = 256 << 20 // GPU memory rise that counts as weights arriving
	gpuSettledBytes = 64 << 20  // rise per interval below which GPU memory has settled
)

func gib(b float64) string { return fmt.Sprintf("%.2f GiB", b/(1<<30)) }

// buildTimeline merges the log's phases, the supervisor's milestones and
// the sampler's evidence into one timeline, sorted by start, and returns
// the reads it attributed to the bootstrap and weight-load windows.
// Offsets are from spawn on the monotonic clock.
func buildTimeline(in timelineInput) ([]vllmlog.Phase, StartReads) {
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

	// Reads: attributed to the bootstrap window (libraries, imports) and to
	// the weight-load window, never to the whole start.
	reads := attributeReads(in)
	if reads.BootstrapRead != nil && reads.LoadPhase != "" {
		w := reads.bootstrapSpan
		detail := fmt.Sprintf("libraries and imports before the weight load: engine read %s, page cache %s", gib(float64(*reads.BootstrapRead)), signedGiB(reads.BootstrapPageCache))
		if w.end <= w.start {
			detail = "not observed: no reads before the weight load; " + detail
		}
		smp(PhaseBootstrapReads, w.start, w.end, detail)
	}
	fs, fe, fd := reads.pageCacheFill()
	smp(PhasePageCacheFill, fs, fe, fd)

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
		// With a weight-load window, the jump is looked for inside it (a
		// CUDA context created during the bootstrap is not weights).
		ls, le, win := loadWindow(in.phases)
		var cand []Sample
		base := used(in.baseline)
		if len(in.baseline.GPUs) == 0 && len(during) > 0 {
			base = used(during[0])
		}
		for i, s := range during {
			switch {
			case !win:
				cand = append(cand, s)
			case off(s) <= ls:
				base = used(s)
			case off(s) <= le || (i > 0 && off(during[i-1]) <= le):
				// The first sample after the window's end still shows
				// what arrived inside it.
				cand = append(cand, s)
			}
		}
		target := -1.0
		if in.log.ModelLoadGiB != nil {
			target = 0.9 * *in.log.ModelLoadGiB * (1 << 30)
		}
		var js, je *Sample
		for i := range cand {
			s := &cand[i]
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
			if target <= 0 && i > 0 && used(*s)-used(cand[i-1]) < gpuSettledBytes {
				je = &cand[i-1]
				break
			}
		}
		switch {
		case js == nil:
			where := "before ready"
			if win {
				where = "inside the weight load"
			}
			smp(PhaseWeightsOnGPU, 0, 0, "not observed: GPU memory did not rise by 256 MiB "+where)
		default:
			if je == nil {
				je = js
			}
			detail := "GPU memory +" + gib(used(*je)-base)
			if in.log.ModelLoadGiB != nil {
				detail += fmt.Sprintf(" (log: model %.2f GiB)", *in.log.ModelLoadGiB)
			}
			startOff, endOff := off(*js)-min(off(*js), sampleGap(during, js.Time)), off(*je)
			if win {
				startOff, endOff = clampSpan(startOff, endOff, ls, le)
			}
			smp(PhaseWeightsOnGPU, startOff, endOff, detail)
		}
	}

	out = append(out, in.phases...)
	slices.SortStableFunc(out, func(a, b vllmlog.Phase) int { return cmp.Compare(a.Start, b.Start) })
	return out, reads
}

// sampleGap is the time from the sample before the one taken at t to it:
// the change a sample shows happened somewhere in that gap.
func sampleGap(samples []Sample, t time.Time) time.Duration {
	for i := range samples {
		if samples[i].Time.Equal(t) && i > 0 {
			return t.Sub(samples[i-1].Time)
		}
	}
	return 0
}
