package coordinator

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
)

// Limits on reading finished runs back from the coordinator's --out at
// start (loadDoneRuns): how deep run directories may lie (--out/<run>, or
// --out/<out_dir>/<run> with out_dir up to a few levels), how many
// directory entries are looked at, and how much of each results.json is
// read. Beyond them older runs are left out of ListRuns, never an error:
// their files stay on disk.
const (
	historyMaxDepth   = 4
	historyMaxEntries = 20000
	historyMaxBytes   = 64 << 20
)

// runHeader is what ListRuns needs from a run's results.json.
type runHeader struct {
	RunID      string    `json:"run_id"`
	Kind       string    `json:"kind"`
	Status     string    `json:"status"`
	Error      string    `json:"error"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
}

// loadDoneRuns reads the finished runs under dir back for ListRuns, so
// that a restarted coordinator still lists them: every results.json within
// historyMaxDepth levels, validated (a run id, a status, a start, no finish
// before it),
// the newest max by finish time, oldest first as the scheduler keeps them.
// Files that are unreadable or malformed are skipped and logged: they are
// untrusted input and must not stop the coordinator.
func loadDoneRuns(dir string, max int, log *slog.Logger) []RunInfo {
	if dir == "" || max <= 0 {
		return nil
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	var runs []RunInfo
	entries := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == dir {
				return err
			}
			return nil // an unreadable subdirectory: skip it
		}
		if entries++; entries > historyMaxEntries {
			return fs.SkipAll
		}
		rel, _ := filepath.Rel(dir, path)
		depth := strings.Count(rel, string(filepath.Separator)) + 1
		if d.IsDir() {
			if path != dir && depth > historyMaxDepth {
				return fs.SkipDir
			}
			return nil
		}
		if d.Name() != results.ResultsFile || !d.Type().IsRegular() {
			return nil
		}
		info, err := readRunHeader(path)
		if err != nil {
			log.Warn("a finished run is left out of the run list", "file", path, "err", err)
			return nil
		}
		runs = append(runs, info)
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		log.Warn("finished runs could not be read back for the run list", "dir", dir, "err", err)
	}
	// A run cut off before its end has no finish time: its start orders it.
	last := func(r RunInfo) time.Time {
		if r.End.IsZero() {
			return r.Start
		}
		return r.End
	}
	slices.SortStableFunc(runs, func(a, b RunInfo) int { return last(a).Compare(last(b)) })
	if len(runs) > max {
		runs = runs[len(runs)-max:]
	}
	return runs
}

// readRunHeader reads and validates the header of one results.json.
func readRunHeader(path string) (RunInfo, error) {
	f, err := os.Open(path)
	if err != nil {
		return RunInfo{}, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, historyMaxBytes+1))
	if err != nil {
		return RunInfo{}, err
	}
	if len(b) > historyMaxBytes {
		return RunInfo{}, fmt.Errorf("is over %d MiB", historyMaxBytes>>20)
	}
	return parseRunHeader(b)
}

// parseRunHeader decodes and validates the header of a results.json.
func parseRunHeader(b []byte) (RunInfo, error) {
	var h runHeader
	if err := json.Unmarshal(b, &h); err != nil {
		return RunInfo{}, fmt.Errorf("not a results.json: %w", err)
	}
	return h.info()
}

// info checks h and returns it as a finished run.
func (h runHeader) info() (RunInfo, error) {
	switch {
	case h.RunID == "" || len(h.RunID) > 256 || strings.ContainsAny(h.RunID, "\x00\n"):
		return RunInfo{}, fmt.Errorf("run_id %q is empty, too long or holds a control character", h.RunID)
	case h.Status == "" || len(h.Status) > 32:
		return RunInfo{}, fmt.Errorf("status %q is empty or too long", h.Status)
	case h.StartedAt.IsZero():
		return RunInfo{}, errors.New("started_at is missing")
	case !h.FinishedAt.IsZero() && h.FinishedAt.Before(h.StartedAt):
		return RunInfo{}, fmt.Errorf("finished_at %v is before started_at %v", h.FinishedAt, h.StartedAt)
	}
	kind := h.Kind
	if kind == "" {
		kind = "baseline" // baselines' results.json carries no kind
	}
	if len(h.Error) > 4096 {
		h.Error = strings.ToValidUTF8(h.Error[:4096], "") + "…" // never half a character
	}
	return RunInfo{RunID: h.RunID, Experiment: kind, State: RunDone, Queued: h.StartedAt, Start: h.StartedAt, End: h.FinishedAt,
		Status: h.Status, Error: h.Error}, nil
}
