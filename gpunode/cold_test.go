package gpunode

import (
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ttftlab/ttftlab/internal/vllmlog"
)

// writeWeights writes size random bytes to path and reads them back, so
// that they are in the page cache.
func writeWeights(t *testing.T, path string, size int) {
	t.Helper()
	b := make([]byte, size)
	_, _ = rand.Read(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
}

func TestEvictAndResidency(t *testing.T) {
	dir := t.TempDir()
	if onTmpfs(dir) {
		t.Skipf("%s is on tmpfs: its pages live only in the page cache, so fadvise DONTNEED cannot evict them and mincore reports them resident", dir)
	}
	path := filepath.Join(dir, "model.safetensors")
	writeWeights(t, path, 8<<20)
	res, pages, err := Residency(path)
	if err != nil {
		t.Fatalf("Residency: %v", err)
	}
	if want := int64(8<<20) / int64(os.Getpagesize()); pages != want {
		t.Errorf("pages = %d, want %d", pages, want)
	}
	if res == 0 {
		t.Skipf("a file just written and read shows no resident pages (%d/%d): this filesystem's page cache is not visible to mincore", res, pages)
	}
	rep, err := evictFiles([]string{path})
	if err != nil {
		t.Fatalf("evictFiles: %v", err)
	}
	t.Logf("resident %.3f → %.3f", rep.ResidentBefore, rep.ResidentAfter)
	if rep.ResidentAfter == rep.ResidentBefore && rep.ResidentAfter > 0.5 {
		t.Skipf("fadvise DONTNEED left the file resident (%.2f): this filesystem (overlay or network) ignores it", rep.ResidentAfter)
	}
	if rep.ResidentBefore < 0.9 || rep.ResidentAfter > 0.1 {
		t.Errorf("resident %.2f → %.2f, want about 1 → 0", rep.ResidentBefore, rep.ResidentAfter)
	}
	if rep.Files != 1 || rep.Bytes != 8<<20 {
		t.Errorf("report %+v, want 1 file of 8 MiB", rep)
	}
	if d := rep.Detail(); !strings.Contains(d, "evicted 1 weight files (0.01 GiB): resident ") || !strings.Contains(d, "(mincore)") {
		t.Errorf("Detail = %q", d)
	}
	empty := filepath.Join(dir, "empty.bin")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if r, p, err := Residency(empty); err != nil || r != 0 || p != 0 {
		t.Errorf("Residency(empty) = %d, %d, %v", r, p, err)
	}
}

func TestWeightFiles(t *testing.T) {
	hf := t.TempDir()
	snap := filepath.Join(hf, "hub", "models--Qwen--Qwen2.5-1.5B-Instruct", "snapshots", "abc123")
	blob := filepath.Join(hf, "hub", "models--Qwen--Qwen2.5-1.5B-Instruct", "blobs", "deadbeef")
	writeWeights(t, blob, 4096)
	if err := os.MkdirAll(snap, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(blob, filepath.Join(snap, "model.safetensors")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(snap, "config.json"), []byte("{}"), 0o644); err != nil {
		t.Fatal(err)
	}
	got, err := WeightFiles("Qwen/Qwen2.5-1.5B-Instruct", []string{"HF_HOME=" + hf})
	if err != nil {
		t.Fatalf("WeightFiles: %v", err)
	}
	if len(got) != 1 || got[0] != blob {
		t.Errorf("WeightFiles = %q, want the blob %s", got, blob)
	}
	// HF_HUB_CACHE wins over HF_HOME.
	if _, err := WeightFiles("Qwen/Qwen2.5-1.5B-Instruct", []string{"HF_HOME=" + hf, "HF_HUB_CACHE=" + t.TempDir()}); !errors.Is(err, ErrFailedPrecondition) {
		t.Errorf("WeightFiles with an empty HF_HUB_CACHE = %v, want ErrFailedPrecondition", err)
	}
	local := t.TempDir()
	writeWeights(t, filepath.Join(local, "model-00001-of-00002.safetensors"), 4096)
	writeWeights(t, filepath.Join(local, "sub", "model-00002-of-00002.safetensors"), 4096)
	writeWeights(t, filepath.Join(local, "tokenizer.json"), 10)
	got, err = WeightFiles(local, nil)
	if err != nil || len(got) != 2 {
		t.Errorf("WeightFiles(local dir) = %q, %v; want 2 files", got, err)
	}
}

func TestColdModesOnStart(t *testing.T) {
	hf := t.TempDir()
	snap := filepath.Join(hf, "hub", "models--test--model", "snapshots", "x")
	writeWeights(t, filepath.Join(snap, "model.safetensors"), 1<<20)
	compileRoot := t.TempDir()
	n := newTestNode(t, func(c *Config) {
		p := c.Profiles["ready"]
		p.Env = map[string]string{"HF_HOME": hf}
		c.Profiles["ready"] = p
		c.CompileCacheRoot = compileRoot
	}, "ready")

	info, err := n.StartEngine(t.Context(), StartSpec{Profile: "ready", ColdMode: ColdDisk})
	if err != nil {
		t.Fatalf("cold-disk start: %v", err)
	}
	if info.ColdMode != ColdDisk || info.Cold.Files != 1 {
		t.Errorf("cold report %+v, want cold-disk with 1 file", info.Cold)
	}
	if !hasPhase(info.Timeline, PhaseColdPrep, "cold-disk: evicted 1 weight files") {
		t.Errorf("timeline lacks the cold_prep phase: %+v", info.Timeline)
	}

	info, err = n.StartEngine(t.Context(), StartSpec{Profile: "ready", ColdMode: ColdCompile})
	if err != nil {
		t.Fatalf("cold-compile start: %v", err)
	}
	first := info.Cold.CompileCacheDir
	if !strings.HasPrefix(first, compileRoot) {
		t.Fatalf("compile cache dir %q not under %s", first, compileRoot)
	}
	info, err = n.StartEngine(t.Context(), StartSpec{Profile: "ready", ColdMode: ColdCompile})
	if err != nil {
		t.Fatalf("second cold-compile start: %v", err)
	}
	if info.Cold.CompileCacheDir == first {
		t.Errorf("second cold-compile start reused %s", first)
	}
	if _, err := os.Stat(first); !os.IsNotExist(err) {
		t.Errorf("the previous compile cache %s is still there (%v)", first, err)
	}

	if os.Geteuid() != 0 {
		_, err := n.StartEngine(t.Context(), StartSpec{Profile: "ready", ColdMode: ColdDisk, DropCaches: true})
		if !errors.Is(err, ErrFailedPrecondition) || !strings.Contains(err.Error(), "drop_caches needs root") {
			t.Errorf("drop_caches as uid %d = %v, want it refused", os.Geteuid(), err)
		}
	}
}

func hasPhase(ps []vllmlogPhase, name, detail string) bool {
	for _, p := range ps {
		if p.Name == name && strings.Contains(p.Detail, detail) {
			return true
		}
	}
	return false
}

type vllmlogPhase = vllmlog.Phase

// TestSimProfilesGetTheirColdStateFromTheEnvironment checks that a sim
// profile's start passes its cold mode to the simulator, which resets its
// own simulated caches, and that a warm restart says so explicitly (an
// inherited value must not make it cold).
func TestSimProfilesGetTheirColdStateFromTheEnvironment(t *testing.T) {
	sim := Profile{Name: "sim", Kind: KindSim}
	tests := []struct {
		name    string
		profile Profile
		mode    string
		wantEnv string // "" means no SimColdStateEnv at all
	}{
		{"default", sim, "", SimColdStateEnv + "=warm"},
		{"warm restart", sim, ColdWarmRestart, SimColdStateEnv + "=warm"},
		{"cold disk", sim, ColdDisk, SimColdStateEnv + "=cold-disk"},
		{"cold compile", sim, ColdCompile, SimColdStateEnv + "=cold-compile"},
		{"vllm warm", Profile{Name: "vllm", Kind: KindVLLM}, ColdWarmRestart, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := &Node{}
			rep, env, err := n.prepareCold(StartSpec{ColdMode: tt.mode}, tt.profile, Knobs{Model: "Qwen/Qwen2.5-1.5B-Instruct"}, nil)
			if err != nil {
				t.Fatalf("prepareCold: %v", err)
			}
			var got []string
			for _, kv := range env {
				if strings.HasPrefix(kv, SimColdStateEnv+"=") {
					got = append(got, kv)
				}
			}
			switch {
			case tt.wantEnv == "" && len(got) > 0:
				t.Errorf("env %v, want no %s", got, SimColdStateEnv)
			case tt.wantEnv != "" && (len(got) != 1 || got[0] != tt.wantEnv):
				t.Errorf("env %v, want exactly %s", got, tt.wantEnv)
			}
			if tt.mode == ColdDisk || tt.mode == ColdCompile {
				if len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], tt.wantEnv) {
					t.Errorf("notes %q, want one naming %s", rep.Notes, tt.wantEnv)
				}
			}
		})
	}
}
