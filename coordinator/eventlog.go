package coordinator

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
)

// eventLog appends events to a file and syncs each one before Append
// returns, so that nothing measured is lost if the coordinator dies. It is
// safe for concurrent use, and commits in groups: an Append that finds its
// line already covered by another caller's fsync returns without one of its
// own, so 200 agents reporting at once cost a few fsyncs, not 200.
type eventLog struct {
	mu      sync.Mutex // guards f's writes, written and err
	f       *os.File
	now     func() time.Time
	err     error
	written uint64 // lines written

	syncMu sync.Mutex // one fsync at a time; guards synced
	synced uint64     // lines known to be on disk
	sync   func() error
}

func openEventLog(path string, now func() time.Time) (*eventLog, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND|os.O_EXCL, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open event log: %w", err)
	}
	// The new file's directory entry must survive a crash too.
	if err := syncDir(filepath.Dir(path)); err != nil {
		f.Close()
		return nil, fmt.Errorf("open event log: %w", err)
	}
	return &eventLog{f: f, now: now, sync: f.Sync}, nil
}

// Append writes one event and returns once it is synced to disk. The first
// write or sync error is kept and returned by every later call, so a
// failing disk fails the run.
func (l *eventLog) Append(kind string, v any) (results.Event, error) {
	data, err := results.EncodeData(v)
	if err != nil {
		return results.Event{}, fmt.Errorf("encode %s event: %w", kind, err)
	}
	l.mu.Lock()
	ev := results.Event{T: l.now().UnixNano(), Kind: kind, Data: data}
	if l.err != nil {
		err := l.err
		l.mu.Unlock()
		return ev, err
	}
	line, err := appendEventLine(make([]byte, 0, len(data)+len(kind)+64), ev)
	if err != nil {
		l.mu.Unlock()
		return ev, fmt.Errorf("encode %s event: %w", kind, err)
	}
	if _, err := l.f.Write(line); err != nil {
		l.err = fmt.Errorf("append to event log: %w", err)
		l.mu.Unlock()
		return ev, l.err
	}
	l.written++
	mine := l.written
	l.mu.Unlock()
	return ev, l.syncThrough(mine)
}

// syncThrough returns once the first n lines are on disk, syncing the file
// itself unless another caller's sync already covered them.
func (l *eventLog) syncThrough(n uint64) error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	target, err := l.written, l.err
	l.mu.Unlock()
	if err != nil {
		return err
	}
	if l.synced >= n {
		return nil
	}
	if err := l.sync(); err != nil {
		l.mu.Lock()
		if l.err == nil {
			l.err = fmt.Errorf("sync event log: %w", err)
		}
		err = l.err
		l.mu.Unlock()
		return err
	}
	l.synced = target
	return nil
}

// appendEventLine appends ev as one line of events.jsonl, the JSON object
// json.Marshal makes of a results.Event followed by a newline, without
// json.Marshal's pass that re-validates and compacts ev.Data: Data comes
// from results.EncodeData (encoding/json or protojson output, valid JSON
// without newlines), and an interval report's is 4 KB, 200 times a second.
func appendEventLine(line []byte, ev results.Event) ([]byte, error) {
	kind, err := json.Marshal(ev.Kind)
	if err != nil {
		return nil, err
	}
	line = append(line, `{"t":`...)
	line = strconv.AppendInt(line, ev.T, 10)
	line = append(line, `,"kind":`...)
	line = append(line, kind...)
	if len(ev.Data) > 0 { // omitempty
		line = append(line, `,"data":`...)
		line = append(line, ev.Data...)
	}
	return append(line, "}\n"...), nil
}

func (l *eventLog) Close() error {
	l.syncMu.Lock()
	defer l.syncMu.Unlock()
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.f.Close()
}

// ReadEvents reads an events.jsonl file; see results.ReadEvents.
func ReadEvents(path string) ([]results.Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer f.Close()
	return results.ReadEvents(f, path)
}

// syncDir fsyncs a directory, making the entries created or renamed in it
// durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
