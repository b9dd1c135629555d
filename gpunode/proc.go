package gpunode

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
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

// parseProcStat parses /proc/<pid>/stat. The command name may hold spaces
// and parentheses, so fields are counted from the last ')'.
func parseProcStat(b []byte) (procStat, error) {
	var s procStat
	open := bytes.IndexByte(b, '(')
	closeIdx := bytes.LastIndexByte(b, ')')
	if open < 0 || closeIdx < open {
		return s, errors.New("no command name")
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b[:open])))
	if err != nil {
		return s, fmt.Errorf("pid: %w", err)
	}
	f := strings.Fields(string(b[closeIdx+1:]))
	// f[0] is field 3 (state); field n is f[n-3].
	if len(f) < 22 {
		return s, fmt.Errorf("%d fields after the command name, want at least 22", len(f))
	}
	num := func(n int) uint64 {
		v, _ := strconv.ParseUint(f[n-3], 10, 64)
		return v
	}
	s.pid = pid
	s.state = f[0][0]
	s.ppid = int(num(4))
	s.pgrp = int(num(5))
	s.ticks = num(14) + num(15)
	s.rss = num(24)
	return s, nil
}

// readAllStats reads /proc/<pid>/stat of every process under root.
// Processes that vanish while it reads are skipped.
func readAllStats(root string) ([]procStat, error) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", root, err)
	}
	out := make([]procStat, 0, len(ents))
	for _, e := range ents {
		name := e.Name()
		if name == "" || name[0] < '0' || name[0] > '9' {
			continue
		}
		b, err := os.ReadFile(filepath.Join(root, name, "stat"))
		if err != nil {
			continue
		}
		s, err := parseProcStat(b)
		if err != nil {
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// cpuTimes is the aggregate "cpu" line of /proc/stat, in ticks.
type cpuTimes struct {
	total, idle uint64
}

func readCPUTimes(root string) (cpuTimes, error) {
	f, err := os.Open(filepath.Join(root, "stat"))
	if err != nil {
		return cpuTimes{}, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || fields[0] != "cpu" {
			continue
		}
		var c cpuTimes
		// user nice system idle iowait irq softirq steal; guest and
		// guest_nice are already counted in user and nice.
		for i, v := range fields[1:min(len(fields), 9)] {
			n, _ := strconv.ParseUint(v, 10, 64)
			c.total += n
			if i == 3 || i == 4 { // idle, iowait
				c.idle += n
			}
		}
		return c, nil
	}
	if err := sc.Err(); err != nil {
		return cpuTimes{}, err
	}
	return cpuTimes{}, errors.New("no cpu line in stat")
}

// memInfo is the part of /proc/meminfo the node reads, in bytes.
type memInfo struct {
	total, available, cached, dirty uint64
}

func readMemInfo(root string) (memInfo, error) {
	f, err := os.Open(filepath.Join(root, "meminfo"))
	if err != nil {
		return memInfo{}, err
	}
	defer f.Close()
	var m memInfo
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		fields := strings.Fields(v)
		if len(fields) == 0 {
			continue
		}
		n, err := strconv.ParseUint(fields[0], 10, 64)
		if err != nil {
			continue
		}
		if len(fields) > 1 && fields[1] == "kB" {
			n *= 1024
		}
		switch k {
		case "MemTotal":
			m.total = n
		case "MemAvailable":
			m.available = n
		case "Cached":
			m.cached = n
		case "Dirty":
			m.dirty = n
		}
	}
	return m, sc.Err()
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

func newHostSampler(root string) *hostSampler {
	return &hostSampler{root: root, pageSize: uint64(os.Getpagesize())}
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

	cpu, err := readCPUTimes(h.root)
	keep(err)
	if err == nil {
		if h.havePrev && cpu.total > h.prevCPU.total {
			dt := float64(cpu.total - h.prevCPU.total)
			di := float64(cpu.idle - min(cpu.idle, h.prevCPU.idle))
			r.hostCPUPercent = max(0, 100*(dt-di)/dt)
		}
		h.prevCPU, h.havePrev = cpu, true
	}

	mem, err := readMemInfo(h.root)
	keep(err)
	r.memAvailableBytes, r.pageCacheBytes, r.dirtyBytes = mem.available, mem.cached, mem.dirty

	disk, err := readDiskReadBytes(h.root)
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
		r.engineReadBytes += readIOReadBytes(h.root, s.pid)
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
			b, err := os.ReadFile(filepath.Join(h.root, strconv.Itoa(pid), "stat"))
			if err != nil {
				complete = false
				break
			}
			s, err := parseProcStat(b)
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
	stats, err := readAllStats(h.root)
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
func readIOReadBytes(root string, pid int) uint64 {
	b, err := os.ReadFile(filepath.Join(root, strconv.Itoa(pid), "io"))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if v, ok := strings.CutPrefix(line, "read_bytes:"); ok {
			n, _ := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			return n
		}
	}
	return 0
}

// readDiskReadBytes sums sectors read (×512, the unit of /proc/diskstats
// whatever the device's sector size) over whole disks, skipping
// partitions, loop, ram, zram and device-mapper/md devices (which would
// count the same reads twice).
func readDiskReadBytes(root string) (uint64, error) {
	b, err := os.ReadFile(filepath.Join(root, "diskstats"))
	if err != nil {
		return 0, err
	}
	var total uint64
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 6 || !isWholeDisk(f[2]) {
			continue
		}
		sectors, err := strconv.ParseUint(f[5], 10, 64)
		if err != nil {
			continue
		}
		total += sectors * 512
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
