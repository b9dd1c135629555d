package coordinator

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
)

// eventLog appends events to a file and syncs each one, so that nothing
// measured is lost if the coordinator dies. It is safe for concurrent use.
type eventLog struct {
	mu  sync.Mutex
	f   *os.File
	now func() time.Time
	err error
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
	return &eventLog{f: f, now: now}, nil
}

// Append writes one event and syncs it to disk. The first write error is
// kept and returned by every later call, so a failing disk fails the run.
func (l *eventLog) Append(kind string, v any) (results.Event, error) {
	data, err := results.EncodeData(v)
	if err != nil {
		return results.Event{}, fmt.Errorf("encode %s event: %w", kind, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ev := results.Event{T: l.now().UnixNano(), Kind: kind, Data: data}
	if l.err != nil {
		return ev, l.err
	}
	line, err := json.Marshal(ev)
	if err != nil {
		return ev, fmt.Errorf("encode %s event: %w", kind, err)
	}
	line = append(line, '\n')
	if _, err := l.f.Write(line); err != nil {
		l.err = fmt.Errorf("append to event log: %w", err)
		return ev, l.err
	}
	if err := l.f.Sync(); err != nil {
		l.err = fmt.Errorf("sync event log: %w", err)
		return ev, l.err
	}
	return ev, nil
}

func (l *eventLog) Close() error {
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
