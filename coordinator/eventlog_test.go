package coordinator

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestEventLogGroupCommit: concurrent appends all reach the file, each
// returns only after a sync that covers it, and one slow fsync serves many
// appends instead of one each.
func TestEventLogGroupCommit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.jsonl")
	l, err := openEventLog(path, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	var syncs atomic.Int64
	var mu sync.Mutex
	syncedLines := 0
	l.sync = func() error {
		syncs.Add(1)
		time.Sleep(5 * time.Millisecond) // a slow disk
		l.mu.Lock()
		w := int(l.written) // lines before this sync began are durable
		l.mu.Unlock()
		mu.Lock()
		syncedLines = w
		mu.Unlock()
		return l.f.Sync()
	}
	const n = 64
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if _, err := l.Append("interval", map[string]int{"i": i}); err != nil {
				t.Errorf("append %d: %v", i, err)
			}
			mu.Lock()
			defer mu.Unlock()
			if syncedLines == 0 {
				t.Errorf("append %d returned before any sync", i)
			}
		})
	}
	wg.Wait()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	evs, err := ReadEvents(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != n {
		t.Fatalf("%d events on disk, want %d", len(evs), n)
	}
	if got := syncs.Load(); got >= n/2 {
		t.Errorf("%d fsyncs for %d concurrent appends: they were not grouped", got, n)
	}
	t.Logf("%d appends, %d fsyncs", n, syncs.Load())
}

// TestEventLogSyncErrorIsSticky: a failed fsync fails the append whose line
// it should have made durable, and every append after it.
func TestEventLogSyncErrorIsSticky(t *testing.T) {
	l, err := openEventLog(filepath.Join(t.TempDir(), "events.jsonl"), time.Now)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	disk := errors.New("EIO")
	l.sync = func() error { return disk }
	if _, err := l.Append("a", 1); !errors.Is(err, disk) {
		t.Fatalf("append with a failing sync: %v, want %v", err, disk)
	}
	l.sync = func() error { return nil }
	if _, err := l.Append("b", 2); !errors.Is(err, disk) {
		t.Fatalf("append after a failed sync: %v, want the first error", err)
	}
	if _, err := os.Stat(l.f.Name()); err != nil {
		t.Fatal(err)
	}
}
