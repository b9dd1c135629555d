package coordinator

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Event kinds written to events.jsonl.
const (
	EventRunStart    = "run_start"
	EventMembers     = "members"
	EventNodeInfo    = "node_info"
	EventSample      = "sample"
	EventMark        = "mark"
	EventEngineReady = "engine_ready"
	EventInterval    = "interval"
	EventRunEnd      = "run_end"
	EventWarning     = "warning"
	// EventRound starts one restart round of a baseline (DESIGN step 7).
	EventRound = "round"
)

// roundData is the payload of a round event.
type roundData struct {
	Round int `json:"round"`
}

// Marks name the instants the report's windows are cut at.
const (
	MarkBeforeEngine = "before_engine"
	MarkEngineSpawn  = "engine_spawn"
	MarkColdStart    = "cold_start"
	MarkColdEnd      = "cold_end"
	MarkWarmStart    = "warm_start"
	MarkWarmEnd      = "warm_end"
)

// Event is one line of events.jsonl.
type Event struct {
	// T is the coordinator's wall clock when the event was recorded, in Unix
	// nanoseconds.
	T    int64           `json:"t"`
	Kind string          `json:"kind"`
	Data json.RawMessage `json:"data,omitempty"`
}

// markData is the payload of a mark event.
type markData struct {
	Name string `json:"name"`
}

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

var pjson = protojson.MarshalOptions{UseProtoNames: true}

// encodeData turns a payload into JSON; protobuf messages use protojson.
func encodeData(v any) (json.RawMessage, error) {
	if v == nil {
		return nil, nil
	}
	if m, ok := v.(proto.Message); ok {
		return pjson.Marshal(m)
	}
	return json.Marshal(v)
}

// Append writes one event and syncs it to disk. The first write error is
// kept and returned by every later call, so a failing disk fails the run.
func (l *eventLog) Append(kind string, v any) (Event, error) {
	data, err := encodeData(v)
	if err != nil {
		return Event{}, fmt.Errorf("encode %s event: %w", kind, err)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	ev := Event{T: l.now().UnixNano(), Kind: kind, Data: data}
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

// ReadEvents reads an events.jsonl file. A torn last line (the process died
// mid-write) is skipped; any other bad line is an error naming its number.
func ReadEvents(path string) ([]Event, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	var out []Event
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64*1024), 64*1024*1024)
	lineNo := 0
	var pendingErr error
	for sc.Scan() {
		lineNo++
		if pendingErr != nil {
			return nil, pendingErr
		}
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			pendingErr = fmt.Errorf("%s line %d: %w", path, lineNo, err)
			continue
		}
		out = append(out, ev)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	return out, nil
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
