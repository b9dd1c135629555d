package gpunode

import (
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
	"time"

	"github.com/prometheus/procfs"
	"github.com/prometheus/procfs/blockdevice"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat times. It is 100 on
// every Linux architecture Go supports.
const clockTicks = 100

// procStat is the part of /proc/<pid>/stat the node reads.
type procStat struct {
	pid   int
	state byte
	ppid  int
	pgrp  int
	ticks uint64 // utime + stime
	rss   uint64 // pages
}

// fromProcfs keeps the fields the node reads of a parsed /proc/<pid>/stat.
func fromProcfs(p procfs.ProcStat) procStat {
	s := procStat{pid: p.PID, ppid: p.PPID, pgrp: p.PGRP, ticks: uint64(p.UTime) + uint64(p.STime), rss: uint64(max(p.RSS, 0))}
	if p.State != "" {
		s.state = p.State[0]
	}
	return s
}

// readProcStat reads /proc/<pid>/stat of one process.
func readProcStat(fs procfs.FS, pid int) (procStat, error) {
	p, err := fs.Proc(pid)
	if err != nil {
		return procStat{}, err
	}
	st, err := p.Stat()
	if err != nil {
		return procStat{}, err
	}
	return fromProcfs(st), nil
}

// readAllStats reads /proc/<pid>/stat of every process under root.
// Processes that vanish while it reads are skipped.
func readAllStats(root string) ([]procStat, error) {
	fs, err := procfs.NewFS(root)
	if err != nil {
		return nil, err
	}
	return allStats(fs)
}

// allStats is readAllStats on an opened proc filesystem.
func allStats(fs procfs.FS) ([]procStat, error) {
	procs, err := fs.AllProcs()
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	out := make([]procStat, 0, len(procs))
	for _, p := range procs {
		st, err := p.Stat()
		if err != nil {
			continue
		}
		out = append(out, fromProcfs(st))
	}
	return out, nil
}

// cpuTimes is the aggregate "cpu" line of /proc/stat, in ticks.
type cpuTimes struct {
	total, idle uint64
}

func readCPUTimes(fs procfs.FS) (cpuTimes, error) {
	st, err := fs.Stat()
	if err != nil {
		return cpuTimes{}, err
	}
	// procfs gives seconds (ticks / USER_HZ); back to whole ticks, so that
	// differences are exact. guest and guest_nice are already counted in
	// user and nice.
	ticks := func(secs float64) uint64 { return uint64(math.Round(secs * clockTicks)) }
	c := st.CPUTotal
	idle := ticks(c.Idle) + ticks(c.Iowait)
	total := idle + ticks(c.User) + ticks(c.Nice) + ticks(c.System) + ticks(c.IRQ) + ticks(c.SoftIRQ) + ticks(c.Steal)
	if total == 0 {
		return cpuTimes{}, errors.New("no cpu line in stat")
	}
	return cpuTimes{total: total, idle: idle}, nil
}

// memInfo is the part of /proc/meminfo the node reads, in bytes.
type memInfo struct {
	total, available, cached, dirty uint64
}

// readMemInfo reads root/meminfo.
func readMemInfo(root string) (memInfo, error) {
	fs, err := procfs.NewFS(root)
	if err != nil {
		return memInfo{}, err
	}
	return memInfoOf(fs)
}

// memInfoOf is readMemInfo on an opened proc filesystem.
func memInfoOf(fs procfs.FS) (memInfo, error) {
	m, err := fs.Meminfo()
	if err != nil {
		return memInfo{}, err
	}
	v := func(p *uint64) uint64 {
		if p == nil {
			return 0
		}
		return *p
	}
	return memInfo{total: v(m.MemTotalBytes), available: v(m.MemAvailableBytes), cached: v(m.CachedBytes), dirty: v(m.DirtyBytes)}, nil
}

// hostReading is one reading of the host and the engine process tree.
type hostReading struct {
	hostCPUPercent    float64
	engineCPUPercent  float64 // -1 when no engine runs
	engineRSSBytes    uint64
	memAvailableBytes uint64
	pageCacheBytes    uint64
	dirtyBytes        uint64
	// engineReadBytes is read_bytes of /proc/<pid>/io summed over the
	// engine tree (processes that exited take their count with them).
	engineReadBytes uint64
	// diskReadBytes is the host's cumulative bytes read from whole disks.
	diskReadBytes uint64
}

// hostSampler turns successive /proc readings into rates. It is not safe
// for concurrent use; the sampler goroutine owns it.
type hostSampler struct {
	root     string
	opened   string // the root fs and disks were opened at
	fs       procfs.FS
	disks    blockdevice.FS
	fsErr    error // why root cannot be read, returned by every sample
	pageSize uint64

	prevCPU   cpuTimes
	havePrev  bool
	prevAt    time.Time
	prevRoot  int            // the engine pid of the previous reading
	prevTicks map[int]uint64 // engine tree ticks by pid

	// tree caches the engine tree's pids between full scans of every
	// process, which are the expensive part of a sample; new children
	// are found at the next scan, at most treeRescan later.
	tree     []int
	treeRoot int
	treeScan time.Time
}

// treeRescan is how often the whole process table is scanned for new
// members of the engine tree; between scans only known members are read.
const treeRescan = time.Second

// newHostSampler reads the proc filesystem mounted at root ("/proc", or a
// fixture in tests).
func newHostSampler(root string) *hostSampler {
	return &hostSampler{root: root, pageSize: uint64(os.Getpagesize())}
}

// open opens the proc filesystem at h.root, unless it is open already.
func (h *hostSampler) open() error {
	if h.opened == h.root && h.fsErr == nil {
		return nil
	}
	h.opened = h.root
	h.fs, h.fsErr = procfs.NewFS(h.root)
	if h.fsErr == nil {
		// Only /proc/diskstats is read; blockdevice wants a sysfs root as
		// well, which it does not touch for that.
		h.disks, h.fsErr = blockdevice.NewFS(h.root, h.root)
	}
	return h.fsErr
}

// sample reads the host, and the process tree under enginePID when it is
// positive. Errors leave the affected fields zero; the first is returned
// for logging.
func (h *hostSampler) sample(now time.Time, enginePID int) (hostReading, error) {
	var r hostReading
	var firstErr error
	keep := func(err error) {
		if err != nil && firstErr == nil {
			firstErr = err
		}
	}

	if err := h.open(); err != nil {
		r.engineCPUPercent = -1
		if enginePID > 0 {
			r.engineCPUPercent = 0
		}
		return r, fmt.Errorf("read %s: %w", h.root, err)
	}
	cpu, err := readCPUTimes(h.fs)
	keep(err)
	if err == nil {
		if h.havePrev && cpu.total > h.prevCPU.total {
			dt := float64(cpu.total - h.prevCPU.total)
			di := float64(cpu.idle - min(cpu.idle, h.prevCPU.idle))
			r.hostCPUPercent = max(0, 100*(dt-di)/dt)
		}
		h.prevCPU, h.havePrev = cpu, true
	}

	mem, err := memInfoOf(h.fs)
	keep(err)
	r.memAvailableBytes, r.pageCacheBytes, r.dirtyBytes = mem.available, mem.cached, mem.dirty

	disk, err := readDiskReadBytes(h.disks)
	keep(err)
	r.diskReadBytes = disk

	r.engineCPUPercent = -1
	if enginePID <= 0 {
		h.prevRoot, h.prevTicks = 0, nil
		h.prevAt = now
		return r, firstErr
	}
	tree, err := h.engineStats(now, enginePID)
	keep(err)
	ticks := make(map[int]uint64, len(tree))
	var delta uint64
	for _, s := range tree {
		ticks[s.pid] = s.ticks
		r.engineRSSBytes += s.rss * h.pageSize
		r.engineReadBytes += readIOReadBytes(h.fs, s.pid)
		if prev, ok := h.prevTicks[s.pid]; ok {
			delta += s.ticks - min(s.ticks, prev)
		} else if h.prevRoot == enginePID {
			// Born since the last reading: all its time is new.
			delta += s.ticks
		}
	}
	r.engineCPUPercent = 0
	if h.prevRoot == enginePID && now.After(h.prevAt) {
		secs := now.Sub(h.prevAt).Seconds()
		r.engineCPUPercent = 100 * float64(delta) / clockTicks / secs
	}
	h.prevRoot, h.prevTicks, h.prevAt = enginePID, ticks, now
	return r, firstErr
}

// engineStats reads the engine tree: every known member's stat, or, at
// most every treeRescan (or when the engine changed or a member vanished),
// a full scan of the process table.
func (h *hostSampler) engineStats(now time.Time, enginePID int) ([]procStat, error) {
	if h.treeRoot == enginePID && now.Sub(h.treeScan) < treeRescan && len(h.tree) > 0 {
		out := make([]procStat, 0, len(h.tree))
		complete := true
		for _, pid := range h.tree {
			s, err := readProcStat(h.fs, pid)
			if err != nil {
				complete = false
				break
			}
			out = append(out, s)
		}
		if complete {
			return out, nil
		}
	}
	stats, err := allStats(h.fs)
	tree := engineTree(stats, enginePID)
	h.tree = h.tree[:0]
	for _, s := range tree {
		h.tree = append(h.tree, s.pid)
	}
	h.treeRoot, h.treeScan = enginePID, now
	return tree, err
}

// engineTree returns the engine's processes: root, every process below
// it, and every other member of its process group (a worker whose parent
// died is reparented away from the tree but stays in the group).
func engineTree(stats []procStat, root int) []procStat {
	tree := descendants(stats, root)
	in := make(map[int]bool, len(tree))
	for _, s := range tree {
		in[s.pid] = true
	}
	for _, s := range stats {
		if s.pgrp == root && !in[s.pid] {
			tree = append(tree, s)
		}
	}
	return tree
}

// readIOReadBytes returns read_bytes of /proc/<pid>/io (bytes this
// process caused to be fetched from storage), or 0 when it cannot be read
// (the process is gone, or belongs to another user).
func readIOReadBytes(fs procfs.FS, pid int) uint64 {
	p, err := fs.Proc(pid)
	if err != nil {
		return 0
	}
	io, err := p.IO()
	if err != nil {
		return 0
	}
	return io.ReadBytes
}

// readDiskReadBytes sums sectors read (×512, the unit of /proc/diskstats
// whatever the device's sector size) over whole disks, skipping
// partitions, loop, ram, zram and device-mapper/md devices (which would
// count the same reads twice).
func readDiskReadBytes(fs blockdevice.FS) (uint64, error) {
	stats, err := fs.ProcDiskstats()
	if err != nil {
		return 0, err
	}
	var total uint64
	for _, d := range stats {
		if d.DeviceName == "" || !isWholeDisk(d.DeviceName) {
			continue
		}
		total += d.ReadSectors * 512
	}
	return total, nil
}

// isWholeDisk reports whether a /proc/diskstats device name is a whole
// physical disk rather than a partition or a virtual device.
func isWholeDisk(name string) bool {
	for _, p := range []string{"loop", "ram", "zram", "dm-", "md", "sr", "fd", "nbd"} {
		if strings.HasPrefix(name, p) {
			return false
		}
	}
	last := name[len(name)-1]
	isDigit := last >= '0' && last <= '9'
	switch {
	case strings.HasPrefix(name, "nvme"), strings.HasPrefix(name, "mmcblk"):
		// nvme0n1 is a disk, nvme0n1p1 a partition; mmcblk0 vs mmcblk0p1.
		return !strings.Contains(name[4:], "p")
	case strings.HasPrefix(name, "sd"), strings.HasPrefix(name, "vd"), strings.HasPrefix(name, "xvd"), strings.HasPrefix(name, "hd"):
		return !isDigit
	}
	return !isDigit
}

// descendants returns root and every process below it.
func descendants(stats []procStat, root int) []procStat {
	children := make(map[int][]int, len(stats))
	byPID := make(map[int]procStat, len(stats))
	for _, s := range stats {
		children[s.ppid] = append(children[s.ppid], s.pid)
		byPID[s.pid] = s
	}
	var out []procStat
	queue := []int{root}
	seen := map[int]bool{}
	for len(queue) > 0 {
		pid := queue[0]
		queue = queue[1:]
		if seen[pid] {
			continue
		}
		seen[pid] = true
		if s, ok := byPID[pid]; ok {
			out = append(out, s)
		}
		queue = append(queue, children[pid]...)
	}
	return out
}
