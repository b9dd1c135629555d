package gpunode

import (
	"cmp"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// SimColdStateEnv is the environment variable a sim profile's engine
// (`ttftlab sim`) takes its --cold-state from: the cold mode's name, which
// makes the simulator reset its own simulated page-cache or compile state
// at start. Passing the mode this way keeps the simulator out of the
// gpunode binary; it equals sim.ColdStateEnv (cmd/ttftlab checks).
const SimColdStateEnv = "TTFTLAB_SIM_COLD"

// ErrFailedPrecondition marks a start that cannot be done on this node as
// asked (no weights to evict, drop_caches without root); test with
// errors.Is.
var ErrFailedPrecondition = errors.New("failed precondition")

// ColdReport says what a start did to the caches before it spawned the
// engine, and what it verified.
type ColdReport struct {
	Mode string
	// Files and Bytes are the weight files evicted from the page cache.
	Files int
	Bytes int64
	// ResidentBefore and ResidentAfter are the fraction of those files'
	// pages in the page cache (mincore) before and after eviction; -1
	// where not measured.
	ResidentBefore, ResidentAfter float64
	// DroppedCaches is set when the whole page cache was dropped.
	DroppedCaches bool
	// CompileCacheDir is the fresh compile-cache directory of a
	// cold-compile start.
	CompileCacheDir string
	// Notes are plain-words caveats (tmpfs, simulated state).
	Notes []string
	Took  time.Duration
}

// Detail renders the report for a timeline phase.
func (c ColdReport) Detail() string {
	var parts []string
	if c.Files > 0 {
		parts = append(parts, fmt.Sprintf("evicted %d weight files (%.2f GiB): resident %s → %s (mincore)", c.Files, float64(c.Bytes)/(1<<30), pct(c.ResidentBefore), pct(c.ResidentAfter)))
	}
	if c.DroppedCaches {
		parts = append(parts, "dropped the page cache (drop_caches=1 after sync)")
	}
	if c.CompileCacheDir != "" {
		parts = append(parts, "fresh compile cache "+c.CompileCacheDir)
	}
	parts = append(parts, c.Notes...)
	return strings.Join(parts, "; ")
}

// weightExts are the file name endings of model weights.
var weightExts = []string{".safetensors", ".bin", ".pt", ".pth", ".gguf"}

func isWeightFile(name string) bool {
	return slices.ContainsFunc(weightExts, func(ext string) bool { return strings.HasSuffix(name, ext) })
}

// hubCache returns the Hugging Face hub cache directory for env (KEY=VALUE
// pairs, last wins): HF_HUB_CACHE, else $HF_HOME/hub, else
// $XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub.
func hubCache(env []string) string {
	get := func(k string) string {
		v := ""
		for _, kv := range env {
			if val, ok := strings.CutPrefix(kv, k+"="); ok {
				v = val
			}
		}
		return v
	}
	switch {
	case get("HF_HUB_CACHE") != "":
		return get("HF_HUB_CACHE")
	case get("HUGGINGFACE_HUB_CACHE") != "":
		return get("HUGGINGFACE_HUB_CACHE")
	case get("HF_HOME") != "":
		return filepath.Join(get("HF_HOME"), "hub")
	case get("XDG_CACHE_HOME") != "":
		return filepath.Join(get("XDG_CACHE_HOME"), "huggingface", "hub")
	}
	home := get("HOME")
	if home == "" {
		home, _ = os.UserHomeDir()
	}
	return filepath.Join(home, ".cache", "huggingface", "hub")
}

// WeightFiles finds model's weight files: every weight file in (or one
// level under) a local model directory, or the snapshots of a hub model
// (models--ORG--NAME/snapshots/*/) in the hub cache that env names. Paths
// that lead to the same file (hub snapshots link to blobs) are listed once.
func WeightFiles(model string, env []string) ([]string, error) {
	var candidates []string
	if st, err := os.Stat(model); err == nil && st.IsDir() {
		err := filepath.WalkDir(model, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return nil
			}
			if d.IsDir() && path != model && strings.Count(strings.TrimPrefix(path, model), string(filepath.Separator)) > 1 {
				return filepath.SkipDir
			}
			if !d.IsDir() && isWeightFile(d.Name()) {
				candidates = append(candidates, path)
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("list weights in %s: %w", model, err)
		}
	} else {
		cache := hubCache(env)
		dir := filepath.Join(cache, "models--"+strings.ReplaceAll(model, "/", "--"), "snapshots")
		for _, ext := range weightExts {
			m, _ := filepath.Glob(filepath.Join(dir, "*", "*"+ext))
			candidates = append(candidates, m...)
			m, _ = filepath.Glob(filepath.Join(dir, "*", "*", "*"+ext))
			candidates = append(candidates, m...)
		}
		if len(candidates) == 0 {
			return nil, fmt.Errorf("%w: cold-disk: no weight files for %q under %s (and it is not a local directory); download the model first or set HF_HOME/HF_HUB_CACHE in the profile's env", ErrFailedPrecondition, model, dir)
		}
	}
	seen := map[string]bool{}
	var out []string
	for _, c := range candidates {
		real, err := filepath.EvalSymlinks(c)
		if err != nil {
			continue
		}
		if !seen[real] {
			seen[real] = true
			out = append(out, real)
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: cold-disk: no readable weight files for %q", ErrFailedPrecondition, model)
	}
	slices.Sort(out)
	return out, nil
}

// residencyChunk is how much of a file is mapped at once to count its
// resident pages; a multiple of every page size.
const residencyChunk = 1 << 30

// Residency returns how many of path's pages are in the page cache, and
// how many pages it has, with mincore(2) over a read-only shared mapping.
// Mapping does not fault pages in.
func Residency(path string) (resident, pages int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return 0, 0, err
	}
	size := st.Size()
	ps := int64(os.Getpagesize())
	vec := make([]byte, residencyChunk/ps)
	for off := int64(0); off < size; off += residencyChunk {
		n := min(residencyChunk, size-off)
		b, err := unix.Mmap(int(f.Fd()), off, int(n), unix.PROT_READ, unix.MAP_SHARED)
		if err != nil {
			return 0, 0, fmt.Errorf("mmap %s: %w", path, err)
		}
		np := (n + ps - 1) / ps
		err = mincore(b, vec[:np])
		_ = unix.Munmap(b)
		if err != nil {
			return 0, 0, fmt.Errorf("mincore %s: %w", path, err)
		}
		for _, v := range vec[:np] {
			resident += int64(v & 1)
		}
		pages += np
	}
	return resident, pages, nil
}

// mincore is mincore(2); golang.org/x/sys/unix has no wrapper for it.
func mincore(b, vec []byte) error {
	if len(b) == 0 {
		return nil
	}
	_, _, errno := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)), uintptr(unsafe.Pointer(&vec[0])))
	if errno != 0 {
		return errno
	}
	return nil
}

// Evict asks the kernel to drop path's pages from the page cache
// (fdatasync, then posix_fadvise DONTNEED over the whole file). Dirty or
// mapped pages can stay; Residency tells.
func Evict(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	_ = unix.Fdatasync(int(f.Fd())) // dirty pages are not dropped
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("fadvise %s: %w", path, err)
	}
	return nil
}

// onTmpfs reports whether path is on tmpfs, whose pages live only in the
// page cache and cannot be evicted.
func onTmpfs(path string) bool {
	var st unix.Statfs_t
	return unix.Statfs(path, &st) == nil && st.Type == unix.TMPFS_MAGIC
}

// evictFiles evicts files and measures their residency before and after.
func evictFiles(files []string) (ColdReport, error) {
	var r ColdReport
	var resBefore, resAfter, total int64
	for _, f := range files {
		res, pages, err := Residency(f)
		if err != nil {
			return r, err
		}
		st, err := os.Stat(f)
		if err != nil {
			return r, err
		}
		if err := Evict(f); err != nil {
			return r, err
		}
		after, _, err := Residency(f)
		if err != nil {
			return r, err
		}
		resBefore += res
		resAfter += after
		total += pages
		r.Files++
		r.Bytes += st.Size()
		if onTmpfs(f) && !slices.Contains(r.Notes, "weights on tmpfs: their pages cannot leave the page cache") {
			r.Notes = append(r.Notes, "weights on tmpfs: their pages cannot leave the page cache")
		}
	}
	r.ResidentBefore, r.ResidentAfter = -1, -1
	if total > 0 {
		r.ResidentBefore = float64(resBefore) / float64(total)
		r.ResidentAfter = float64(resAfter) / float64(total)
	}
	return r, nil
}

// dropCaches syncs and writes 1 (page cache only) to path, normally
// /proc/sys/vm/drop_caches. It needs root.
func dropCaches(path string) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("%w: drop_caches needs root; gpunode runs as uid %d — leave drop_caches off (cold-disk still evicts the model's own files)", ErrFailedPrecondition, os.Geteuid())
	}
	unix.Sync()
	if err := os.WriteFile(path, []byte("1"), 0); err != nil {
		return fmt.Errorf("drop caches: %w", err)
	}
	return nil
}

// prepareCold puts the caches in the state spec.ColdMode asks for, before
// the engine is spawned, and returns the extra environment the engine must
// get: for cold-compile a fresh compile-cache directory, and for a sim
// profile the mode itself (SimColdStateEnv), since the simulator resets its
// own simulated caches.
func (n *Node) prepareCold(spec StartSpec, prof Profile, k Knobs, env []string) (ColdReport, []string, error) {
	start := time.Now()
	rep := ColdReport{Mode: spec.ColdMode, ResidentBefore: -1, ResidentAfter: -1}
	var extraEnv []string
	if prof.Kind == KindSim {
		// Always set, so that a value the gpunode inherited cannot make a
		// warm restart cold.
		mode := cmp.Or(spec.ColdMode, ColdWarmRestart)
		extraEnv = []string{SimColdStateEnv + "=" + simColdState(mode)}
	}
	switch spec.ColdMode {
	case "", ColdWarmRestart:
		rep.Mode = ColdWarmRestart
	case ColdDisk:
		if prof.Kind == KindSim {
			rep.Notes = append(rep.Notes, "the sim evicts its simulated page cache of "+k.Model+" at start ("+extraEnv[0]+")")
			break
		}
		files, err := WeightFiles(k.Model, env)
		if err != nil {
			return rep, nil, err
		}
		r, err := evictFiles(files)
		if err != nil {
			return rep, nil, fmt.Errorf("cold-disk: %w", err)
		}
		r.Mode = rep.Mode
		rep = r
		if spec.DropCaches {
			if err := dropCaches(n.cfg.DropCachesPath); err != nil {
				return rep, nil, err
			}
			rep.DroppedCaches = true
		}
	case ColdCompile:
		if prof.Kind == KindSim {
			rep.Notes = append(rep.Notes, "the sim empties its simulated compile cache of "+k.Model+" at start ("+extraEnv[0]+")")
			break
		}
		if err := os.MkdirAll(n.cfg.CompileCacheRoot, 0o755); err != nil {
			return rep, nil, fmt.Errorf("cold-compile: %w", err)
		}
		dir, err := os.MkdirTemp(n.cfg.CompileCacheRoot, "start-")
		if err != nil {
			return rep, nil, fmt.Errorf("cold-compile: %w", err)
		}
		n.setColdDir(dir)
		rep.CompileCacheDir = dir
		// vLLM keeps torch.compile artifacts under VLLM_CACHE_ROOT; Inductor
		// and Triton have caches of their own, which are fresh as well.
		extraEnv = []string{
			"VLLM_CACHE_ROOT=" + dir,
			"TORCHINDUCTOR_CACHE_DIR=" + filepath.Join(dir, "inductor"),
			"TRITON_CACHE_DIR=" + filepath.Join(dir, "triton"),
		}
	}
	if spec.DropCaches && spec.ColdMode != ColdDisk {
		return rep, nil, fmt.Errorf("%w: drop_caches is for cold_mode %q only", ErrInvalidArgument, ColdDisk)
	}
	rep.Took = time.Since(start)
	return rep, extraEnv, nil
}

// simColdState maps a cold mode to the sim's --cold-state value.
func simColdState(mode string) string {
	if mode == ColdWarmRestart {
		return "warm"
	}
	return mode
}

// setColdDir records the current cold-compile directory and removes the
// previous one: only one fresh cache is kept on disk.
func (n *Node) setColdDir(dir string) {
	n.mu.Lock()
	prev := n.coldDir
	n.coldDir = dir
	n.mu.Unlock()
	if prev != "" && prev != dir {
		if err := os.RemoveAll(prev); err != nil {
			n.log.Warn("remove old compile cache", "dir", prev, "err", err)
		}
	}
}

// pct formats a fraction as a percentage, or "?" when unknown.
func pct(f float64) string {
	if f < 0 {
		return "?"
	}
	return strconv.FormatFloat(100*f, 'f', 1, 64) + "%"
}

// weightSet is the model's weight files as the node found them before a
// spawn, with their page-cache residency then and after ready.
type weightSet struct {
	files []string
	bytes int64
	// note says why no weight files are known; empty when some are.
	note string
	// residentBefore and residentAfter are the files' bytes in the page
	// cache (mincore); -1 where not measured.
	residentBefore, residentAfter int64
}

// findWeights looks for model's weight files and measures how much of them
// the page cache holds now. A model whose files cannot be found is not an
// error here: the set says why, and the timeline falls back to the
// weight-load window.
func findWeights(kind, model string, env []string) weightSet {
	w := weightSet{residentBefore: -1, residentAfter: -1}
	if kind == KindSim {
		w.note = "simulated engine: its weights and page cache are simulated"
		return w
	}
	files, err := WeightFiles(model, env)
	if err != nil {
		w.note = "no weight files found for " + model + ": " + err.Error()
		return w
	}
	for _, f := range files {
		st, err := os.Stat(f)
		if err != nil {
			continue
		}
		w.files = append(w.files, f)
		w.bytes += st.Size()
	}
	if len(w.files) == 0 {
		w.note = "no readable weight files for " + model
		return w
	}
	w.residentBefore = residentBytes(w.files)
	return w
}

// residentBytes returns how many bytes of files the page cache holds
// (mincore), or -1 when any file cannot be measured.
func residentBytes(files []string) int64 {
	ps := int64(os.Getpagesize())
	var total int64
	for _, f := range files {
		res, _, err := Residency(f)
		if err != nil {
			return -1
		}
		st, err := os.Stat(f)
		if err != nil {
			return -1
		}
		total += min(res*ps, st.Size())
	}
	return total
}

// generatedWeights says why an engine started with argv loads no weights
// from disk, or returns "" when nothing in argv says so.
func generatedWeights(argv []string) string {
	for i, a := range argv {
		v, ok := strings.CutPrefix(a, "--load-format=")
		if !ok && a == "--load-format" && i+1 < len(argv) {
			v, ok = argv[i+1], true
		}
		if ok && v == "dummy" {
			return "--load-format dummy: the engine fills its weights with random values"
		}
	}
	return ""
}
