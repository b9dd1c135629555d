package coordinator

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
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

// TestEventLineMatchesJSONMarshal: the hand-built event line is the JSON
// json.Marshal makes of the event (up to the whitespace protojson may put
// in Data, which json.Marshal would have compacted), on one line, and reads
// back as the same event.
func TestEventLineMatchesJSONMarshal(t *testing.T) {
	rep := &pb.IntervalReport{RunId: "r", AgentId: "agent-1", Seq: 3, RequestsOk: 2,
		Histograms: []*pb.EncodedHistogram{{Metric: hdr.TTFT, V2: []byte("HISTFAAAAB94nJNpmSzMwMDAzgABzFCaEUzOmNZgvwEiAAA2NwL5")}}}
	tests := []struct {
		name string
		kind string
		v    any
	}{
		{"interval report", results.EventSweepInterval, results.SweepInterval{Level: 2, Report: rep}},
		{"mark", results.EventMark, results.Mark{Name: "ready"}},
		{"warning with quotes and newlines", results.EventWarning, results.Warning{Message: "a \"bad\"\nline\u2028<tag>&"}},
		{"kind that needs escaping", "we\"ird\n\u00e9", results.Mark{Name: "x"}},
		{"no data", results.EventMark, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, err := results.EncodeData(tc.v)
			if err != nil {
				t.Fatal(err)
			}
			ev := results.Event{T: 1_700_000_000_123_456_789, Kind: tc.kind, Data: data}
			line, err := appendEventLine(nil, ev)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.IndexByte(line, '\n') != len(line)-1 {
				t.Fatalf("line %q is not one line ending in a newline", line)
			}
			want, err := json.Marshal(ev)
			if err != nil {
				t.Fatal(err)
			}
			var got bytes.Buffer
			if err := json.Compact(&got, line[:len(line)-1]); err != nil {
				t.Fatalf("line %q is not JSON: %v", line, err)
			}
			if got.String() != string(want) {
				t.Errorf("line\n%s\nwant\n%s", got.String(), want)
			}
			back, err := results.ReadEvents(bytes.NewReader(line), "line")
			if err != nil {
				t.Fatal(err)
			}
			if len(back) != 1 || back[0].T != ev.T || back[0].Kind != ev.Kind {
				t.Fatalf("read back %+v, want %+v", back, ev)
			}
		})
	}
}
