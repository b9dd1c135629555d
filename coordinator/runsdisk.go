package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/ttftlab/ttftlab/coordinator/results"
)

// Bounds of reading finished runs back from the results directory: its
// files are untrusted (anyone who can write under --out can put one there).
const (
	// maxRunDirDepth is how deep under --out a run directory may lie (a
	// client's out_dir adds levels).
	maxRunDirDepth = 4
	// maxScannedDirs bounds the directories visited.
	maxScannedDirs = 10_000
	// runHeadBytes is how much of an events.jsonl is read for the run's
	// kind and lease; runTailBytes how much of its end for run_end.
	runHeadBytes = 1 << 20
	runTailBytes = 256 << 10
	// maxRunNames bounds the gpunodes and agents listed for one run.
	maxRunNames = 256
)

var errStopScan = errors.New("stop")

// DoneRunsOnDisk reads back the runs under outDir, so that `ttftlab runs`
// lists what a previous coordinator ran: every directory (at most
// maxRunDirDepth deep, symbolic links not followed) that holds an
// events.jsonl is one run, whose id is the directory's name. At most limit
// runs are read, the newest first by the events file's modification time;
// a fleet's nodes/ runs are part of the fleet and not listed. A run whose
// events.jsonl cannot be read is left out, its error in skipped.
func DoneRunsOnDisk(outDir string, limit int) (runs []RunInfo, skipped []error) {
	type cand struct {
		dir string
		mod time.Time
	}
	var cands []cand
	visited := 0
	err := filepath.WalkDir(outDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == outDir {
				return err
			}
			skipped = append(skipped, err)
			return fs.SkipDir
		}
		if !d.IsDir() {
			return nil
		}
		if visited++; visited > maxScannedDirs {
			skipped = append(skipped, fmt.Errorf("%s: more than %d directories: later runs are not listed", outDir, maxScannedDirs))
			return fs.SkipAll
		}
		rel, _ := filepath.Rel(outDir, path)
		if rel != "." && strings.Count(rel, string(filepath.Separator))+1 > maxRunDirDepth {
			return fs.SkipDir
		}
		fi, err := os.Lstat(filepath.Join(path, results.EventsFile))
		if err != nil || !fi.Mode().IsRegular() {
			return nil
		}
		if rel != "." {
			cands = append(cands, cand{dir: path, mod: fi.ModTime()})
		}
		return fs.SkipDir // a run's own subdirectories (a fleet's nodes/) are the run's
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		skipped = append(skipped, fmt.Errorf("list runs in %s: %w", outDir, err))
	}
	slices.SortStableFunc(cands, func(a, b cand) int { return b.mod.Compare(a.mod) })
	for _, c := range cands {
		if len(runs) >= limit {
			break
		}
		info, err := readDoneRun(c.dir, c.mod)
		if err != nil {
			skipped = append(skipped, err)
			continue
		}
		runs = append(runs, info)
	}
	return runs, skipped
}

// readDoneRun reads one run's facts from its events.jsonl: the kind and
// the lease from its head, run_end from its tail. Every payload is decoded
// with results.Decode's checks.
func readDoneRun(dir string, mod time.Time) (RunInfo, error) {
	path := filepath.Join(dir, results.EventsFile)
	id := filepath.Base(dir)
	if !utf8.ValidString(id) || len(id) > 200 {
		return RunInfo{}, fmt.Errorf("%s: the directory name is not a run id", dir)
	}
	info := RunInfo{RunID: id, State: RunDone}
	f, err := os.Open(path)
	if err != nil {
		return RunInfo{}, fmt.Errorf("read run: %w", err)
	}
	defer f.Close()
	err = results.ScanEvents(io.LimitReader(f, runHeadBytes), path, func(ev results.Event) error {
		if info.Start.IsZero() && ev.T > 0 {
			info.Start = time.Unix(0, ev.T).UTC()
		}
		switch ev.Kind {
		case results.EventRunStart:
			info.Experiment = "baseline"
		case results.EventSweepStart:
			info.Experiment = "sweep"
		case results.EventGridStart:
			var g struct {
				Experiment string `json:"experiment"`
			}
			if err := json.Unmarshal(ev.Data, &g); err != nil {
				return fmt.Errorf("%s: grid_start: %w", path, err)
			}
			info.Experiment = oneName(g.Experiment)
		case results.EventFleetStart:
			info.Experiment = "fleet"
		case results.EventLease:
			v, err := results.Decode(ev)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			l := v.(results.Lease)
			info.GPUNodes, info.Agents = fileNames(l.GPUNodes), fileNames(l.Agents)
			return errStopScan
		case results.EventInterval, results.EventSweepInterval, results.EventSample:
			return errStopScan // the run's facts come before its data
		}
		return nil
	})
	if err != nil && !errors.Is(err, errStopScan) {
		return RunInfo{}, err
	}
	end, t, err := lastRunEnd(f, path)
	if err != nil {
		return RunInfo{}, err
	}
	if end == nil {
		// The coordinator stopped during the run.
		info.Status, info.End = results.StatusFailed, mod.UTC()
		info.Error = "events.jsonl has no run_end: the run did not finish (the coordinator stopped during it); `ttftlab report` renders what it measured"
		return info, nil
	}
	info.Status, info.Error, info.End = end.Status, end.Error, time.Unix(0, t).UTC()
	return info, nil
}

// lastRunEnd finds the run_end event among the last runTailBytes of an
// events file; nil when there is none.
func lastRunEnd(f *os.File, path string) (*results.RunEnd, int64, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("read run: %w", err)
	}
	off := max(fi.Size()-runTailBytes, 0)
	buf := make([]byte, fi.Size()-off)
	if _, err := f.ReadAt(buf, off); err != nil && !errors.Is(err, io.EOF) {
		return nil, 0, fmt.Errorf("read run: %w", err)
	}
	lines := bytes.Split(buf, []byte("\n"))
	for i := len(lines) - 1; i >= 0; i-- {
		if i == 0 && off > 0 {
			break // cut by the window
		}
		line := bytes.TrimSpace(lines[i])
		if len(line) == 0 {
			continue
		}
		var ev results.Event
		if json.Unmarshal(line, &ev) != nil || ev.Kind != results.EventRunEnd {
			continue // a torn last line, or another event
		}
		v, err := results.Decode(ev)
		if err != nil {
			return nil, 0, fmt.Errorf("%s: %w", path, err)
		}
		e := v.(results.RunEnd)
		return &e, ev.T, nil
	}
	return nil, 0, nil
}

// oneName keeps a name from a file short and on one line.
func oneName(s string) string {
	s = strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return -1
		}
		return r
	}, s)
	if len(s) > 64 {
		s = s[:64]
	}
	return strings.ToValidUTF8(s, "")
}

func fileNames(in []string) []string {
	if len(in) > maxRunNames {
		in = in[:maxRunNames]
	}
	out := make([]string, len(in))
	for i, n := range in {
		out[i] = oneName(n)
	}
	return out
}
