package gpunode

import (
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestHostSamplerFakeProc(t *testing.T) {
	h := newHostSampler(filepath.Join("testdata", "proc1"))
	t0 := time.Now()
	r1, err := h.sample(t0, 100)
	if err != nil {
		t.Fatalf("first sample: %v", err)
	}
	if r1.memAvailableBytes != 8_000_000*1024 || r1.pageCacheBytes != 4_000_000*1024 {
		t.Errorf("meminfo = %d available, %d cached", r1.memAvailableBytes, r1.pageCacheBytes)
	}
	if r1.engineCPUPercent != 0 || r1.hostCPUPercent != 0 {
		t.Errorf("first sample rates = engine %v host %v, want 0 (no baseline)", r1.engineCPUPercent, r1.hostCPUPercent)
	}
	if r1.dirtyBytes != 2048*1024 {
		t.Errorf("dirty = %d, want %d", r1.dirtyBytes, 2048*1024)
	}
	// nvme0n1 1000 + sda 50 sectors; partitions, loop and dm-0 skipped.
	if want := uint64(1050 * 512); r1.diskReadBytes != want {
		t.Errorf("disk read = %d, want %d", r1.diskReadBytes, want)
	}
	if want := uint64(1 << 20); r1.engineReadBytes != want {
		t.Errorf("engine read = %d, want %d (pid 100 only: 101 has no io file, 200 is not the engine's)", r1.engineReadBytes, want)
	}
	page := uint64(os.Getpagesize())
	if want := (1000 + 500) * page; r1.engineRSSBytes != want {
		t.Errorf("first RSS = %d, want %d (pid 100 and its child 101, not 200)", r1.engineRSSBytes, want)
	}

	h.root = filepath.Join("testdata", "proc2")
	r2, err := h.sample(t0.Add(time.Second), 100)
	if err != nil {
		t.Fatalf("second sample: %v", err)
	}
	// /proc/stat: 1000 ticks passed, 600 of them idle or iowait.
	if !approx(r2.hostCPUPercent, 40) {
		t.Errorf("host CPU = %v%%, want 40%%", r2.hostCPUPercent)
	}
	// 100: +40 ticks, 101: +10, 102 (new grandchild): 10 — 60 ticks in 1 s.
	if !approx(r2.engineCPUPercent, 60) {
		t.Errorf("engine CPU = %v%%, want 60%%", r2.engineCPUPercent)
	}
	if want := uint64(5070 * 512); r2.diskReadBytes != want {
		t.Errorf("second disk read = %d, want %d", r2.diskReadBytes, want)
	}
	if want := uint64(5 << 20); r2.engineReadBytes != want {
		t.Errorf("second engine read = %d, want %d (100 and its grandchild 102)", r2.engineReadBytes, want)
	}
	if want := (1000 + 500 + 100) * page; r2.engineRSSBytes != want {
		t.Errorf("second RSS = %d, want %d", r2.engineRSSBytes, want)
	}

	r3, _ := h.sample(t0.Add(2*time.Second), 0)
	if r3.engineCPUPercent != -1 || r3.engineRSSBytes != 0 {
		t.Errorf("no engine: CPU %v RSS %d, want -1 and 0", r3.engineCPUPercent, r3.engineRSSBytes)
	}
}

func TestHostSamplerMissingProc(t *testing.T) {
	h := newHostSampler(filepath.Join(t.TempDir(), "nope"))
	r, err := h.sample(time.Now(), 1)
	if err == nil {
		t.Errorf("sample of a missing /proc returned no error")
	}
	if r.engineCPUPercent != 0 || r.memAvailableBytes != 0 {
		t.Errorf("sample of a missing /proc = %+v, want zeros", r)
	}
}

func TestReadProcStatOfAWeirdName(t *testing.T) {
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "42"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "42", "stat"), []byte("42 (a (weird) name) R 7 42 42 0 -1 0 0 0 0 0 11 22 0 0 20 0 1 0 5 100 33 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "43"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "43", "stat"), []byte("garbage"), 0o644); err != nil {
		t.Fatal(err)
	}
	stats, err := readAllStats(root)
	if err != nil {
		t.Fatal(err)
	}
	want := []procStat{{pid: 42, state: 'R', ppid: 7, pgrp: 42, ticks: 33, rss: 33}}
	if !slices.Equal(stats, want) {
		t.Errorf("readAllStats = %+v, want %+v (the garbage stat of 43 skipped)", stats, want)
	}
}

func TestIsWholeDisk(t *testing.T) {
	for name, want := range map[string]bool{
		"sda": true, "sda1": false, "vdb": true, "vdb3": false, "xvda": true, "xvda1": false,
		"nvme0n1": true, "nvme0n1p2": false, "nvme10n2": true, "mmcblk0": true, "mmcblk0p1": false,
		"loop0": false, "ram0": false, "zram0": false, "dm-0": false, "md0": false, "sr0": false,
	} {
		if got := isWholeDisk(name); got != want {
			t.Errorf("isWholeDisk(%q) = %v, want %v", name, got, want)
		}
	}
}

func approx(a, b float64) bool { return math.Abs(a-b) < 1e-9 }

func TestSamplerFanOut(t *testing.T) {
	g := &gpus{reason: "NVML not available: test"}
	s := newSampler(slog.New(slog.DiscardHandler), 5*time.Millisecond, newHostSampler(filepath.Join("testdata", "proc1")), g, func() int { return 0 }, time.Now())
	go s.run()

	fast, cancelFast := s.subscribe()
	slow, cancelSlow := s.subscribe()
	defer cancelSlow()

	// The fast reader keeps up: consecutive seqs.
	var prev uint64
	for range 5 {
		smp := <-fast
		if prev != 0 && smp.Seq != prev+1 {
			t.Errorf("fast subscriber: seq %d after %d", smp.Seq, prev)
		}
		prev = smp.Seq
		if smp.NVMLError != "NVML not available: test" || smp.EngineCPUPercent != -1 {
			t.Errorf("sample = %+v", smp)
		}
	}
	cancelFast()
	if _, ok := <-drain(fast); ok {
		t.Errorf("fast channel still open after cancel")
	}

	// The slow reader never read: it has missed samples, so seq jumps.
	deadline := time.Now().Add(5 * time.Second)
	for {
		if last, ok := s.latest(); ok && last.Seq > subscriberBuffer+3 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("sampler did not advance")
		}
		time.Sleep(5 * time.Millisecond)
	}
	var seqs []uint64
	gap := false
	for i := range subscriberBuffer + 1 {
		seqs = append(seqs, (<-slow).Seq)
		if i > 0 && seqs[i] != seqs[i-1]+1 {
			gap = true
		}
	}
	if !gap {
		t.Errorf("slow subscriber saw no gap in seqs %v", seqs)
	}
	s.close()
	if _, ok := <-drain(slow); ok {
		t.Errorf("slow channel still open after close")
	}
	ch, cancel := s.subscribe()
	defer cancel()
	if _, ok := <-ch; ok {
		t.Errorf("subscribe after close returned an open channel")
	}
}

// drain reads ch until it is closed and returns a closed channel then.
func drain(ch <-chan Sample) <-chan Sample {
	for range ch {
	}
	return ch
}
