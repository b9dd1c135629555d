package results

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// Event kinds written to events.jsonl. Each has one payload type, which
// Decode returns.
const (
	EventRunStart    = "run_start"    // RunStart
	EventMembers     = "members"      // Members
	EventNodeInfo    = "node_info"    // *pb.InfoResponse
	EventSample      = "sample"       // *pb.HostSample
	EventMark        = "mark"         // Mark
	EventEngineReady = "engine_ready" // *pb.EngineInfo
	EventInterval    = "interval"     // *pb.IntervalReport
	EventRunEnd      = "run_end"      // RunEnd
	EventWarning     = "warning"      // Warning
	// EventRound starts one restart round of a baseline (DESIGN step 7).
	EventRound = "round" // Round

	// EventEngineExit records the gpunode's report of an engine that exited
	// on its own, with its exit code or signal, uptime and log tail.
	EventEngineExit = "engine_exit" // EngineExit
	// EventGPUNodeLost records a gpunode whose sample stream broke, or that
	// memberlist marked dead, during a run that depends on it.
	EventGPUNodeLost = "gpunode_lost" // GPUNodeLost

	EventSweepStart    = "sweep_start"    // SweepStart
	EventLevelStart    = "level_start"    // LevelStart
	EventSweepInterval = "sweep_interval" // SweepInterval
	EventAgentLost     = "agent_lost"     // AgentLost
	EventLevelEnd      = "level_end"      // LevelEnd
	// EventTargetVersion records an external target's GET /version answer.
	EventTargetVersion = "target_version" // TargetVersion

	// EventQueued records that the run waits for a gpunode or agents that
	// other runs hold, and its place in the queue; one per change.
	EventQueued = "queued" // Queued
	// EventLease records what the run got from the scheduler: the gpunodes
	// and agents no other run uses until it ends.
	EventLease = "lease" // Lease
)

// Queued is the payload of a queued event.
type Queued struct {
	// Position is the run's place in its queue; 1 is next.
	Position int `json:"position"`
	// Behind is the run it waits for.
	Behind string `json:"behind,omitempty"`
}

// Lease is the payload of a lease event.
type Lease struct {
	GPUNodes []string `json:"gpunodes"`
	Agents   []string `json:"agents"`
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

// RunStart is the payload of a run_start event: the baseline as requested.
type RunStart struct {
	RunID     string `json:"run_id"`
	Profile   string `json:"profile"`
	Prompt    string `json:"prompt"`
	MaxTokens int    `json:"max_tokens"`
	WarmRuns  int    `json:"warm_runs"`
	Repeats   int    `json:"repeats"`
	API       string `json:"api"`
	ColdMode  string `json:"cold_mode"`
	// Knobs are the engine knobs as JSON, copied into results.json as sent.
	Knobs json.RawMessage `json:"knobs"`
}

// Member is one cluster member of a members event.
type Member struct {
	Name     string `json:"Name"`
	Addr     string `json:"Addr"`
	Role     string `json:"r"`
	GRPCAddr string `json:"a"`
	State    string `json:"State"`
}

// Members is the payload of a members event: the cluster at the start.
type Members []Member

// Mark is the payload of a mark event.
type Mark struct {
	Name string `json:"name"`
}

// Round is the payload of a round event.
type Round struct {
	Round int `json:"round"`
}

// Warning is the payload of a warning event.
type Warning struct {
	Message string `json:"message"`
}

// Run statuses of a run_end event.
const (
	StatusOK     = "ok"
	StatusFailed = "failed"
)

// RunEnd is the payload of a run_end event.
type RunEnd struct {
	Status string `json:"status"`
	Error  string `json:"error,omitempty"`
}

// EngineExit is the payload of an engine_exit event.
type EngineExit struct {
	GPUNode string
	Exit    *pb.EngineExit
}

type engineExitJSON struct {
	GPUNode string          `json:"gpunode"`
	Exit    json.RawMessage `json:"exit"`
}

// MarshalJSON writes the exit as protojson.
func (e EngineExit) MarshalJSON() ([]byte, error) {
	b, err := protoRaw(e.Exit)
	if err != nil {
		return nil, err
	}
	return json.Marshal(engineExitJSON{GPUNode: e.GPUNode, Exit: b})
}

// UnmarshalJSON reads the exit with protojson.
func (e *EngineExit) UnmarshalJSON(b []byte) error {
	var w engineExitJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	e.GPUNode, e.Exit = w.GPUNode, nil
	if isNull(w.Exit) {
		return nil
	}
	e.Exit = &pb.EngineExit{}
	return pjsonIn.Unmarshal(w.Exit, e.Exit)
}

// GPUNodeLost is the payload of a gpunode_lost event.
type GPUNodeLost struct {
	GPUNode string `json:"gpunode"`
	Error   string `json:"error"`
}

// SweepStart is the payload of the sweep_start event. The load, workload
// and generator are protojson, copied into results.json as recorded.
type SweepStart struct {
	RunID     string          `json:"run_id"`
	BaseURL   string          `json:"base_url,omitempty"`
	Model     string          `json:"model,omitempty"`
	API       string          `json:"api"`
	Levels    []float64       `json:"levels"`
	Load      json.RawMessage `json:"load"`
	Workload  json.RawMessage `json:"workload"`
	Generator json.RawMessage `json:"generator,omitempty"`
	AgentLoss string          `json:"agent_loss"`
	// Transport and FirstTokenClock are the agents' HTTP client and
	// first-token clock (agent.Target.EffectiveClient); absent in runs
	// recorded before they were.
	Transport       string `json:"transport,omitempty"`
	FirstTokenClock string `json:"first_token_clock,omitempty"`
}

// LevelStart is the payload of a level_start event.
type LevelStart struct {
	// Level is 0-based.
	Level   int      `json:"level"`
	Value   float64  `json:"value"`
	Agents  []string `json:"agents"`
	StartNs int64    `json:"start_unix_nano"`
	// DurationMs and WarmupMs are the level's measured duration and its
	// warm-up; DurationReason says how the duration was chosen (pinned, or
	// sized from the level before).
	DurationMs     int64  `json:"duration_ms,omitempty"`
	WarmupMs       int64  `json:"warmup_ms,omitempty"`
	DurationReason string `json:"duration_reason,omitempty"`
}

// SweepInterval is the payload of a sweep_interval event: one agent's
// interval report for one level.
type SweepInterval struct {
	Level  int
	Report *pb.IntervalReport
	// Checked, when set, is the report's histograms as the recorder
	// decoded and checked them on arrival, so that an observer that merges
	// the report (the dashboard) does not decode it again. It is not
	// written to events.jsonl.
	Checked *Checked
}

type sweepIntervalJSON struct {
	Level  int             `json:"level"`
	Report json.RawMessage `json:"report"`
}

// MarshalJSON writes the report as protojson.
func (s SweepInterval) MarshalJSON() ([]byte, error) {
	b, err := protoRaw(s.Report)
	if err != nil {
		return nil, err
	}
	return json.Marshal(sweepIntervalJSON{Level: s.Level, Report: b})
}

// UnmarshalJSON reads the report with protojson.
func (s *SweepInterval) UnmarshalJSON(b []byte) error {
	var w sweepIntervalJSON
	if err := json.Unmarshal(b, &w); err != nil {
		return err
	}
	s.Level, s.Report = w.Level, nil
	if isNull(w.Report) {
		return nil
	}
	s.Report = &pb.IntervalReport{}
	return pjsonIn.Unmarshal(w.Report, s.Report)
}

// AgentLost is the payload of an agent_lost event.
type AgentLost struct {
	Level     int    `json:"level"`
	Agent     string `json:"agent"`
	Error     string `json:"error"`
	Intervals int    `json:"intervals_received"`
	// Requests is the requests finished (ok + failed, warm-up included) in
	// the intervals received.
	Requests uint64 `json:"requests_received"`
	InFlight uint32 `json:"in_flight_at_loss"`
}

// LevelEnd is the payload of a level_end event.
type LevelEnd struct {
	Level int `json:"level"`
}

// TargetVersion is the payload of a target_version event; Version is ""
// when the target did not say.
type TargetVersion struct {
	Version string `json:"version"`
}

// ErrUnknownKind is returned by Decode for an event kind it does not know;
// readers skip such events, so that a newer log still renders.
var ErrUnknownKind = errors.New("unknown event kind")

// maxLevel bounds a sweep's level index, so a hostile log cannot make a
// reader allocate per level.
const maxLevel = 10_000

var pjsonIn = protojson.UnmarshalOptions{DiscardUnknown: true}

// Decode returns an event's typed payload, checked: the type is the one the
// kind's constant names (a pointer for protobuf messages, a value
// otherwise). The data crossed a process boundary (an agent's report, a
// file on disk), so a payload that cannot be what its kind says is an error
// naming the kind and the reason; an unknown kind wraps ErrUnknownKind.
func Decode(ev Event) (any, error) {
	v, err := decode(ev)
	if err != nil {
		return nil, fmt.Errorf("%s event: %w", ev.Kind, err)
	}
	return v, nil
}

func decode(ev Event) (any, error) {
	switch ev.Kind {
	case EventRunStart:
		return decodeJSON[RunStart](ev.Data)
	case EventMembers:
		return decodeJSON[Members](ev.Data)
	case EventNodeInfo:
		return decodeProto[pb.InfoResponse](ev.Data)
	case EventSample:
		return decodeProto[pb.HostSample](ev.Data)
	case EventMark:
		m, err := decodeJSON[Mark](ev.Data)
		if err == nil && m.Name == "" {
			err = errors.New("mark has no name")
		}
		return m, err
	case EventEngineReady:
		return decodeProto[pb.EngineInfo](ev.Data)
	case EventInterval:
		return decodeProto[pb.IntervalReport](ev.Data)
	case EventRunEnd:
		e, err := decodeJSON[RunEnd](ev.Data)
		if err == nil && e.Status != StatusOK && e.Status != StatusFailed {
			err = fmt.Errorf("status %q is neither %s nor %s", e.Status, StatusOK, StatusFailed)
		}
		return e, err
	case EventWarning:
		return decodeJSON[Warning](ev.Data)
	case EventRound:
		r, err := decodeJSON[Round](ev.Data)
		if err == nil && (r.Round < 1 || r.Round > 1000) {
			err = fmt.Errorf("round %d is out of range 1..1000", r.Round)
		}
		return r, err
	case EventEngineExit:
		e, err := decodeJSON[EngineExit](ev.Data)
		if err == nil && e.Exit == nil {
			err = errors.New("no exit status")
		}
		return e, err
	case EventGPUNodeLost:
		return decodeJSON[GPUNodeLost](ev.Data)
	case EventSweepStart:
		s, err := decodeJSON[SweepStart](ev.Data)
		if err != nil {
			return s, err
		}
		if !isNull(s.Load) {
			if err := pjsonIn.Unmarshal(s.Load, &pb.LoadModel{}); err != nil {
				return s, fmt.Errorf("load: %w", err)
			}
		}
		return s, nil
	case EventLevelStart:
		l, err := decodeJSON[LevelStart](ev.Data)
		if err == nil {
			err = checkLevel(l.Level)
		}
		return l, err
	case EventSweepInterval:
		s, err := decodeJSON[SweepInterval](ev.Data)
		if err == nil && s.Report == nil {
			err = errors.New("no report")
		}
		if err == nil {
			err = checkLevel(s.Level)
		}
		return s, err
	case EventAgentLost:
		a, err := decodeJSON[AgentLost](ev.Data)
		if err == nil {
			err = checkLevel(a.Level)
		}
		return a, err
	case EventLevelEnd:
		l, err := decodeJSON[LevelEnd](ev.Data)
		if err == nil {
			err = checkLevel(l.Level)
		}
		return l, err
	case EventTargetVersion:
		return decodeJSON[TargetVersion](ev.Data)
	case EventQueued:
		q, err := decodeJSON[Queued](ev.Data)
		if err == nil && q.Position < 1 {
			err = fmt.Errorf("position %d: a queued run is at position 1 or later", q.Position)
		}
		return q, err
	case EventLease:
		return decodeJSON[Lease](ev.Data)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownKind, ev.Kind)
}

func checkLevel(l int) error {
	if l < 0 || l >= maxLevel {
		return fmt.Errorf("level %d is out of range 0..%d", l, maxLevel-1)
	}
	return nil
}

func decodeJSON[T any](b []byte) (T, error) {
	var v T
	if isNull(b) {
		return v, errors.New("no data")
	}
	err := json.Unmarshal(b, &v)
	return v, err
}

func decodeProto[T any, P interface {
	*T
	proto.Message
}](b []byte) (*T, error) {
	if isNull(b) {
		return nil, errors.New("no data")
	}
	m := P(new(T))
	if err := pjsonIn.Unmarshal(b, m); err != nil {
		return nil, err
	}
	return m, nil
}

func isNull(b []byte) bool {
	s := strings.TrimSpace(string(b))
	return s == "" || s == "null"
}

var pjson = protojson.MarshalOptions{UseProtoNames: true}

func protoRaw(m proto.Message) (json.RawMessage, error) {
	if m == nil || !m.ProtoReflect().IsValid() {
		return json.RawMessage("null"), nil
	}
	return pjson.Marshal(m)
}

// ProtoJSON returns a message's protojson, or nil for a nil message or one
// that does not encode.
func ProtoJSON(m proto.Message) json.RawMessage {
	if m == nil || !m.ProtoReflect().IsValid() {
		return nil
	}
	b, err := pjson.Marshal(m)
	if err != nil {
		return nil
	}
	return b
}

// EncodeData turns a payload into an event's data; protobuf messages use
// protojson.
func EncodeData(v any) (json.RawMessage, error) {
	if v == nil {
		return nil, nil
	}
	if m, ok := v.(proto.Message); ok {
		return pjson.Marshal(m)
	}
	return json.Marshal(v)
}

// MaxEventLine is the longest events.jsonl line a reader accepts: an
// interval report with every histogram at full size is far below it.
const MaxEventLine = 64 << 20

// ReadEvents reads events.jsonl from r. A torn last line (the process died
// mid-write) is skipped; any other bad line is an error naming its number.
// name names the source in errors.
func ReadEvents(r io.Reader, name string) ([]Event, error) {
	var out []Event
	err := ScanEvents(r, name, func(ev Event) error {
		out = append(out, ev)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ScanEvents reads events.jsonl from r one line at a time and calls fn with
// each event, so that a reader keeps only what it needs; fn's error stops
// the scan and is returned. The checks are ReadEvents': a line longer than
// MaxEventLine is an error, a torn last line is skipped, any other bad line
// is an error naming its number (fn has then seen the lines before it).
// The event's Data is its own copy; fn may keep it.
func ScanEvents(r io.Reader, name string, fn func(Event) error) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), MaxEventLine)
	lineNo := 0
	var pendingErr error
	for sc.Scan() {
		lineNo++
		if pendingErr != nil {
			return pendingErr
		}
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ev Event
		if err := json.Unmarshal(line, &ev); err != nil {
			pendingErr = fmt.Errorf("%s line %d: %w", name, lineNo, err)
			continue
		}
		if err := fn(ev); err != nil {
			return err
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return fmt.Errorf("%s line %d is longer than %d MiB, the most an event may be: not an events.jsonl ttftlab wrote", name, lineNo+1, MaxEventLine>>20)
		}
		return fmt.Errorf("read events: %w", err)
	}
	return nil
}
