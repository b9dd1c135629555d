package gpunode

import (
	"fmt"
	"time"

	ttftlabv1 "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/vllmlog"
)

// StartReads attributes what an engine read while it started to a window
// of the start and to a cause. A nil figure was not measured.
type StartReads struct {
	// WeightFiles and WeightBytes are the model's weight files the node
	// found; with none, WeightFilesNote says why.
	WeightFiles     int
	WeightBytes     int64
	WeightFilesNote string
	// ResidentBefore and ResidentAfter are the weight files' bytes in the
	// page cache (mincore) just before spawn and just after ready.
	ResidentBefore, ResidentAfter *int64
	// LoadPhase is the log phase taken as the weight-load window
	// (load_model, else load_weights), from LoadStart to LoadEnd after
	// spawn; empty when the log marks none.
	LoadPhase          string
	LoadStart, LoadEnd time.Duration
	// BootstrapRead and BootstrapPageCache are the engine tree's reads
	// and the change in the page cache from spawn to the load's start:
	// libraries and imports, not weights.
	BootstrapRead, BootstrapPageCache *int64
	// LoadRead, LoadDiskRead and LoadPageCache are the engine tree's
	// reads, the host disks' reads and the change in the page cache
	// inside the weight-load window.
	LoadRead, LoadDiskRead, LoadPageCache *int64
	// WeightsGenerated says why the engine loads no weights from disk
	// ("--load-format dummy"); empty when nothing says so.
	WeightsGenerated string

	// bootstrapSpan and loadSpan are where, inside their windows, the
	// reads were seen (empty when none were).
	bootstrapSpan, loadSpan span
}

type span struct{ start, end time.Duration }

// loadWindow returns the weight-load window the log marks: load_model,
// else load_weights.
func loadWindow(phases []vllmlog.Phase) (start, end time.Duration, ok bool) {
	for _, name := range []string{vllmlog.PhaseLoadModel, vllmlog.PhaseLoadWeights} {
		for _, p := range phases {
			if p.Name == name && p.Source == vllmlog.SourceLog && p.End >= p.Start && p.Start >= 0 {
				return p.Start, p.End, true
			}
		}
	}
	return 0, 0, false
}

// clampSpan cuts [s, e] to the window [ws, we]; a span wholly outside it
// becomes an empty span at the nearer edge.
func clampSpan(s, e, ws, we time.Duration) (time.Duration, time.Duration) {
	s, e = max(s, ws), min(e, we)
	if e < s {
		s = min(s, we)
		e = s
	}
	return s, e
}

// windowReads is what the samples show inside one window.
type windowReads struct {
	engine, disk, cached float64 // bytes; cached is signed
	seen                 span    // where reads of at least readThreshold were seen, clamped
	seenAny              bool    // seen is set
	any                  bool    // a sample interval overlapped the window
}

// attributeReads splits the reads the samples show between the bootstrap
// window (spawn → the load's start) and the weight-load window. A sample
// reports the change since the sample before; a change whose interval
// straddles a window edge is shared in proportion to the overlap, so no
// byte is counted twice or lost.
func attributeReads(in timelineInput) StartReads {
	r := StartReads{
		WeightFiles:      len(in.weights.files),
		WeightBytes:      in.weights.bytes,
		WeightFilesNote:  in.weights.note,
		WeightsGenerated: in.generated,
	}
	if r.WeightFiles > 0 && in.weights.residentBefore >= 0 {
		r.ResidentBefore = new(in.weights.residentBefore)
	}
	if r.WeightFiles > 0 && in.weights.residentAfter >= 0 {
		r.ResidentAfter = new(in.weights.residentAfter)
	}
	ls, le, win := loadWindow(in.phases)
	if !win {
		return r
	}
	r.LoadPhase, r.LoadStart, r.LoadEnd = loadPhaseName(in.phases), ls, le

	readyOff := in.ready.Sub(in.spawn)
	var boot, load windowReads
	prevT := time.Duration(0)
	prevEngine := uint64(0)
	prevDisk, prevCached := in.baseline.DiskReadBytes, in.baseline.PageCacheBytes
	first := true
	for _, s := range in.samples {
		t := s.Time.Sub(in.spawn)
		if t <= 0 {
			// Before spawn: the engine read nothing yet; the host counters
			// are the baseline.
			prevDisk, prevCached = s.DiskReadBytes, s.PageCacheBytes
			continue
		}
		if t > readyOff {
			break
		}
		if first && prevDisk == 0 && prevCached == 0 {
			prevDisk, prevCached = s.DiskReadBytes, s.PageCacheBytes
		}
		first = false
		de := float64(s.EngineReadBytes - min(s.EngineReadBytes, prevEngine))
		dd := float64(s.DiskReadBytes - min(s.DiskReadBytes, prevDisk))
		dc := float64(s.PageCacheBytes) - float64(prevCached)
		boot.add(prevT, t, 0, ls, de, dd, dc)
		load.add(prevT, t, ls, le, de, dd, dc)
		prevT, prevEngine, prevDisk, prevCached = t, s.EngineReadBytes, s.DiskReadBytes, s.PageCacheBytes
	}
	if boot.any {
		r.BootstrapRead, r.BootstrapPageCache = new(int64(boot.engine)), new(int64(boot.cached))
		r.bootstrapSpan = boot.seen
	}
	if load.any {
		r.LoadRead, r.LoadDiskRead, r.LoadPageCache = new(int64(load.engine)), new(int64(load.disk)), new(int64(load.cached))
		r.loadSpan = load.seen
	}
	return r
}

func loadPhaseName(phases []vllmlog.Phase) string {
	for _, name := range []string{vllmlog.PhaseLoadModel, vllmlog.PhaseLoadWeights} {
		for _, p := range phases {
			if p.Name == name && p.Source == vllmlog.SourceLog {
				return name
			}
		}
	}
	return ""
}

// add counts the share of one sample interval (from, to] that lies in
// the window (ws, we].
func (w *windowReads) add(from, to, ws, we time.Duration, engine, disk, cached float64) {
	lo, hi := max(from, ws), min(to, we)
	if hi <= lo || to <= from {
		return
	}
	w.any = true
	f := float64(hi-lo) / float64(to-from)
	w.engine += f * engine
	w.disk += f * disk
	w.cached += f * cached
	if engine >= readThreshold || (engine == 0 && disk >= readThreshold) {
		if !w.seenAny {
			w.seen.start, w.seenAny = lo, true
		}
		w.seen.end = hi
	}
}

// pageCacheFill is the page_cache_fill phase: the weight files entering
// the page cache, inside the weight-load window (or, with weight files
// known and no window, spawn → ready).
func (r StartReads) pageCacheFill() (start, end time.Duration, detail string) {
	files := ""
	if r.WeightFiles > 0 {
		files = fmt.Sprintf("%d weight files, %s", r.WeightFiles, gib(float64(r.WeightBytes)))
	}
	inLoad := func() string {
		if r.LoadRead == nil {
			return ""
		}
		return fmt.Sprintf("; in the %s window the engine read %s, the disks %s, page cache %s", r.LoadPhase, gib(float64(*r.LoadRead)), gib(float64(*r.LoadDiskRead)), signedGiB(r.LoadPageCache))
	}
	switch {
	case r.WeightsGenerated != "":
		return r.LoadStart, r.LoadStart, "no weight files read: " + r.WeightsGenerated
	case r.WeightFiles > 0 && r.ResidentBefore != nil && r.ResidentAfter != nil:
		filled := *r.ResidentAfter - *r.ResidentBefore
		mc := fmt.Sprintf("mincore over %s: resident %s before spawn → %s after ready", files, gib(float64(*r.ResidentBefore)), gib(float64(*r.ResidentAfter)))
		if filled < readThreshold {
			return r.LoadStart, r.LoadStart, "not observed: the weight files were already in the page cache (" + mc + ")" + inLoad()
		}
		s, e := r.loadSpan.start, r.loadSpan.end
		if r.LoadPhase == "" {
			// No window in the log: the fill happened somewhere in the start.
			return 0, 0, fmt.Sprintf("weight files +%s into the page cache (%s); the log marks no weight-load phase, so its duration is unknown", gib(float64(filled)), mc)
		}
		if e <= s {
			s, e = r.LoadStart, r.LoadStart
		}
		return s, e, fmt.Sprintf("weight files +%s into the page cache (%s)%s", gib(float64(filled)), mc, inLoad())
	case r.WeightFiles > 0:
		return r.LoadStart, r.LoadStart, "not observed: the weight files' residency could not be measured (mincore)" + inLoad()
	case r.LoadPhase == "":
		return 0, 0, "not observed: no weight files known" + r.why() + " and the log marks no weight-load phase"
	case r.LoadRead == nil:
		return r.LoadStart, r.LoadStart, "not observed: no samples inside the " + r.LoadPhase + " window"
	case *r.LoadRead < readThreshold && *r.LoadDiskRead < readThreshold:
		return r.LoadStart, r.LoadStart, "no weight files read: no weight files known" + r.why() + " and no reads inside the " + r.LoadPhase + " window" + inLoad()
	}
	s, e := r.loadSpan.start, r.loadSpan.end
	if e <= s {
		s, e = r.LoadStart, r.LoadStart
	}
	return s, e, "estimate from the " + r.LoadPhase + " window, weight files unknown" + r.why() + inLoad()
}

// why is the reason no weight files are known, in parentheses, or "".
func (r StartReads) why() string {
	if r.WeightFilesNote == "" {
		return ""
	}
	return " (" + r.WeightFilesNote + ")"
}

// signedGiB formats a signed byte count, or "?" when unknown.
func signedGiB(b *int64) string {
	if b == nil {
		return "?"
	}
	return fmt.Sprintf("%+.2f GiB", float64(*b)/(1<<30))
}

// toPB converts the reads for EngineInfo.
func (r StartReads) toPB() *ttftlabv1.StartReads {
	return &ttftlabv1.StartReads{
		WeightFiles:                  int32(r.WeightFiles),
		WeightBytes:                  r.WeightBytes,
		WeightFilesNote:              r.WeightFilesNote,
		WeightResidentBeforeBytes:    r.ResidentBefore,
		WeightResidentAfterBytes:     r.ResidentAfter,
		LoadPhase:                    r.LoadPhase,
		LoadStartS:                   r.LoadStart.Seconds(),
		LoadEndS:                     r.LoadEnd.Seconds(),
		BootstrapEngineReadBytes:     r.BootstrapRead,
		BootstrapPageCacheDeltaBytes: r.BootstrapPageCache,
		LoadEngineReadBytes:          r.LoadRead,
		LoadDiskReadBytes:            r.LoadDiskRead,
		LoadPageCacheDeltaBytes:      r.LoadPageCache,
		WeightsGenerated:             r.WeightsGenerated,
	}
}
