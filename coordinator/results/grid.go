package results

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

// Restart-grid event kinds. A grid run's events.jsonl holds, in order:
// grid_start, then per point grid_point_start, engine_ready and
// grid_point_ready (or, when the engine refused to start, straight
// grid_point_end), the point's levels as a sweep records them (level_start,
// sweep_interval, level_end, with grid-wide level numbers) each followed by
// grid_level_end, and grid_point_end. DecodeGrid decodes their payloads.
const (
	EventGridStart      = "grid_start"       // GridStart
	EventGridPointStart = "grid_point_start" // GridPointInfo
	EventGridPointReady = "grid_point_ready" // GridPointReady
	EventGridLevelEnd   = "grid_level_end"   // LevelObservation
	EventGridPointEnd   = "grid_point_end"   // GridPointEnd
)

// Grid point statuses, as grid_point_end records them.
const (
	// PointOK: the engine started and every level of the point ran.
	PointOK = "ok"
	// PointRefused: the engine did not start with the point's knobs (for
	// example too little KV memory for max_model_len); the grid goes on.
	PointRefused = "refused"
	// PointFailed: the point started but failed part-way.
	PointFailed = "failed"
)

// ExperimentKVScale names the kvscale grid in grid_start.
const ExperimentKVScale = "kvscale"

// maxGridPoints bounds a grid read from disk.
const maxGridPoints = 1000

// GridStart is the payload of grid_start.
type GridStart struct {
	RunID      string          `json:"run_id"`
	Experiment string          `json:"experiment"`
	Profile    string          `json:"profile"`
	API        string          `json:"api"`
	Points     []GridPointInfo `json:"points"`
	// Params is the experiment's own description of the run (for kvscale,
	// KVScaleParams).
	Params json.RawMessage `json:"params,omitempty"`
}

// GridPointInfo names one grid point: the payload of grid_point_start and
// an entry of grid_start. Knobs are the point's engine knobs as protojson.
type GridPointInfo struct {
	Point int             `json:"point"`
	Label string          `json:"label"`
	Knobs json.RawMessage `json:"knobs"`
}

// GridPointReady is the payload of grid_point_ready: the engine's startup
// figures (protojson EngineFigures) and the experiment's plan for the point
// (for kvscale, KVPlan).
type GridPointReady struct {
	Point   int             `json:"point"`
	Figures json.RawMessage `json:"figures"`
	Plan    json.RawMessage `json:"plan,omitempty"`
}

// GridPointEnd is the payload of grid_point_end.
type GridPointEnd struct {
	Point  int    `json:"point"`
	Status string `json:"status"`
	// Error is why the point failed, or the gpunode's account of the
	// engine's refusal to start (its exit status, root cause and log tail).
	Error string `json:"error,omitempty"`
}

// LevelObservation is the payload of grid_level_end: what the engine's
// /metrics said during one level, as the gpunode scraped them. Nil fields
// were not measured (no sample carried the metric).
type LevelObservation struct {
	Point       int      `json:"point"`
	Level       int      `json:"level"`
	Concurrency int      `json:"concurrency"`
	Samples     int      `json:"samples"`
	Preemptions *float64 `json:"preemptions"`
	// WaitingMax is the largest vllm:num_requests_waiting over the level.
	WaitingMax *float64 `json:"waiting_max"`
	// WaitingFrac is the fraction of the samples in the measured window
	// (after the warm-up) with vllm:num_requests_waiting > 0.
	WaitingFrac *float64 `json:"waiting_frac"`
	// QueuedSamples is how many samples of the measured window had a queue.
	QueuedSamples int `json:"queued_samples"`
	// KVUsageMax is the largest vllm:kv_cache_usage_perc (0..1) in the
	// measured window.
	KVUsageMax *float64 `json:"kv_usage_max"`
	// E2EP50Ms is the level's E2E p50 as its reports arrived, when any
	// request finished; a schedule sizes its next level from it.
	E2EP50Ms *float64 `json:"e2e_p50_ms"`
	// WarmupMs is the level's warm-up and WallMs its time from the agents'
	// start to the last report.
	WarmupMs int64 `json:"warmup_ms"`
	WallMs   int64 `json:"wall_ms"`
	// BurstMs is the time from the agents' start to the first sample whose
	// queue was empty again after the opening burst; nil when it never
	// emptied during the level.
	BurstMs *int64 `json:"burst_ms"`
	// Repeat is set on the second run of a step that was inconclusive.
	Repeat bool `json:"repeat,omitempty"`
	// Inconclusive is set on a first run whose measured window had a queue
	// although the opening burst was not seen to empty before the window
	// (or no measured request finished): the queue may be the burst's. The
	// step is run again with a warm-up sized from it, and that second run
	// is judged as it is.
	Inconclusive bool   `json:"inconclusive,omitempty"`
	Error        string `json:"error,omitempty"`
}

// IsGridKind reports whether kind is a grid event's.
func IsGridKind(kind string) bool {
	switch kind {
	case EventGridStart, EventGridPointStart, EventGridPointReady, EventGridLevelEnd, EventGridPointEnd:
		return true
	}
	return false
}

// DecodeGrid returns a grid event's typed payload, checked; other kinds
// wrap ErrUnknownKind.
func DecodeGrid(ev Event) (any, error) {
	v, err := decodeGrid(ev)
	if err != nil {
		return nil, fmt.Errorf("%s event: %w", ev.Kind, err)
	}
	return v, nil
}

func decodeGrid(ev Event) (any, error) {
	point := func(p int) error {
		if p < 0 || p >= maxGridPoints {
			return fmt.Errorf("point %d is out of range 0..%d", p, maxGridPoints-1)
		}
		return nil
	}
	switch ev.Kind {
	case EventGridStart:
		s, err := decodeJSON[GridStart](ev.Data)
		if err == nil && (len(s.Points) == 0 || len(s.Points) > maxGridPoints) {
			err = fmt.Errorf("%d points: a grid has 1..%d", len(s.Points), maxGridPoints)
		}
		if err == nil && s.Experiment == "" {
			err = errors.New("no experiment named")
		}
		return s, err
	case EventGridPointStart:
		p, err := decodeJSON[GridPointInfo](ev.Data)
		if err == nil {
			err = point(p.Point)
		}
		return p, err
	case EventGridPointReady:
		p, err := decodeJSON[GridPointReady](ev.Data)
		if err == nil {
			err = point(p.Point)
		}
		return p, err
	case EventGridLevelEnd:
		o, err := decodeJSON[LevelObservation](ev.Data)
		if err == nil {
			err = errors.Join(point(o.Point), checkLevel(o.Level))
		}
		return o, err
	case EventGridPointEnd:
		p, err := decodeJSON[GridPointEnd](ev.Data)
		if err == nil {
			err = point(p.Point)
		}
		if err == nil && p.Status != PointOK && p.Status != PointRefused && p.Status != PointFailed {
			err = fmt.Errorf("status %q is none of %s, %s, %s", p.Status, PointOK, PointRefused, PointFailed)
		}
		return p, err
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownKind, ev.Kind)
}

// isGrid reports whether a run's events are a restart grid's.
func isGrid(events []Event) bool {
	for _, ev := range events {
		if ev.Kind == EventGridStart {
			return true
		}
	}
	return false
}

// gridExperiment returns the experiment grid_start names, or "" when the
// first grid_start cannot be read (the experiment's builder then reports
// why).
func gridExperiment(events []Event) string {
	for _, ev := range events {
		if ev.Kind != EventGridStart {
			continue
		}
		var d struct {
			Experiment string `json:"experiment"`
		}
		if json.Unmarshal(ev.Data, &d) != nil {
			return ""
		}
		return d.Experiment
	}
	return ""
}

// KVScaleFactors are kvscale's concurrency steps, as multiples of C*. They
// are dense just above C*: with requests of different ages in the cache, a
// closed loop fits one or two more than C* (which assumes every request at
// its largest at once), so the onset shows at C* + 1 or 2.
var KVScaleFactors = [...]float64{0.5, 0.75, 0.9, 1.0, 1.1, 1.2, 1.3, 1.5}

// KVScaleParams is the kvscale part of grid_start.
type KVScaleParams struct {
	MaxModelLens   []int          `json:"max_model_lens"`
	Utilizations   []float64      `json:"gpu_memory_utilizations"`
	MaxNumSeqs     int            `json:"max_num_seqs"`
	OutputLen      int            `json:"output_len"`
	LevelDurationS float64        `json:"level_duration_s"`
	WarmupS        float64        `json:"warmup_s"`
	MaxConcurrency int            `json:"max_concurrency"`
	Factors        []float64      `json:"factors"`
	Predictions    []KVPrediction `json:"predictions"`
}

// KVPrediction is internal/kvcalc's figure for one grid point.
type KVPrediction struct {
	// Source says what the prediction started from: "config+gpu" (the
	// model's config and the simulator's GPU catalogue, vLLM's whole
	// formula), "reported_available_kv" (the engine's logged "Available KV
	// cache memory" with the model's layout), or "" (none possible; Note
	// says why).
	Source         string   `json:"source"`
	Note           string   `json:"note,omitempty"`
	Model          string   `json:"model,omitempty"`
	GPU            string   `json:"gpu,omitempty"`
	AvailableGiB   *float64 `json:"available_kv_gib"`
	NumBlocks      *int     `json:"num_gpu_blocks"`
	KVTokens       *int     `json:"kv_cache_tokens"`
	MaxConcurrency *float64 `json:"max_concurrency"`
	// Refusal is vLLM's startup error when the point should not start.
	Refusal string `json:"refusal,omitempty"`
}

// KVPlan is a started point's workload and its predicted onset.
type KVPlan struct {
	Prediction KVPrediction `json:"prediction"`
	PromptLen  int          `json:"prompt_len"`
	OutputLen  int          `json:"output_len"`
	// BlocksPerRequest is ⌈(P+O−1)/block_size⌉, what one request holds at
	// its end.
	BlocksPerRequest int `json:"blocks_per_request"`
	// NumBlocks is the num_gpu_blocks C* is computed from, and
	// NumBlocksSource whether it is the engine's reported figure or the
	// prediction.
	NumBlocks       *int   `json:"num_gpu_blocks"`
	NumBlocksSource string `json:"num_gpu_blocks_source,omitempty"`
	// CStar = ⌊(num_gpu_blocks − 1) / blocks_per_request⌋ (docs/sim.md §10).
	CStar *int  `json:"c_star"`
	Steps []int `json:"steps"`
	// Capped is set when a step was cut to max_concurrency: an onset may lie
	// above the tested range.
	Capped bool   `json:"capped"`
	Note   string `json:"note,omitempty"`
}

// KVQueueFraction is the share of a step's measured samples with a
// waiting queue that makes it the onset, with at least KVQueueSamples of
// them and, where the engine reports it, the KV cache at least
// KVFullUsage full. Below C*, once the opening burst is admitted, the queue
// is empty in practically every sample; just above C*, requests of
// different ages leave room for one more now and then, so a queue of one or
// two comes and goes (/metrics is scraped about once a second: a step holds
// a handful of samples). A queue while the cache is far from full is
// another limit (the prefill token budget per step), not KV capacity.
const (
	KVQueueFraction = 0.25
	KVQueueSamples  = 2
	KVFullUsage     = 0.9
)

// KVQueued reports whether a level's measured window held a queue that KV
// capacity explains.
func KVQueued(o *LevelObservation) bool {
	return o.WaitingFrac != nil && *o.WaitingFrac >= KVQueueFraction && o.QueuedSamples >= KVQueueSamples &&
		(o.KVUsageMax == nil || *o.KVUsageMax >= KVFullUsage)
}

// KVOnset reports whether a level shows the onset: a preemption, or a
// queue KVQueued accepts. An inconclusive level shows the onset only by a
// preemption.
func KVOnset(o *LevelObservation) bool {
	if o == nil {
		return false
	}
	return (o.Preemptions != nil && *o.Preemptions > 0) || (!o.Inconclusive && KVQueued(o))
}

// GridRun is the head of a grid experiment's results.json, the same for
// every experiment: the run, its end and the engine it ran.
type GridRun struct {
	Kind       string    `json:"kind"`
	RunID      string    `json:"run_id"`
	Status     string    `json:"status"`
	Error      string    `json:"error,omitempty"`
	Simulated  bool      `json:"simulated"`
	StartedAt  time.Time `json:"started_at"`
	FinishedAt time.Time `json:"finished_at"`
	Profile    string    `json:"profile"`
	API        string    `json:"api"`
	// StartupScale is the simulator's test-only --startup-scale, when ≠ 1.
	StartupScale float64 `json:"startup_scale,omitempty"`
}

// head returns the GridRun of the walked run, for an experiment named
// kind. The run's status is its own end, not the sweep's verdict: the
// experiment's builder judges its steps.
func (r *gridRun) head(kind string) GridRun {
	return GridRun{Kind: kind, RunID: r.Start.RunID, Status: r.Status, Error: r.Error, Simulated: r.Simulated,
		StartedAt: r.StartedAt, FinishedAt: r.Sweep.FinishedAt, Profile: r.Start.Profile, API: r.Start.API, StartupScale: r.StartupScale}
}

// gridPointState is what every grid builder tracks of a point: its status
// ("not run", "running", then grid_point_end's, or "interrupted" when the
// run ended inside it), the error grid_point_end gave and the engine's
// spawn → ready time.
type gridPointState struct {
	Status string
	Error  string
	ReadyS *float64
}

// copyPoints gives an experiment's points the states walk followed:
// fields returns where a point keeps its status, error and ready time.
func copyPoints[P any](r *gridRun, points []P, fields func(*P) (status, err *string, readyS **float64)) {
	for i, st := range r.Points {
		status, err, readyS := fields(&points[i])
		*status, *err, *readyS = st.Status, st.Error, st.ReadyS
	}
}

// gridRun is what walk reads from a grid's events for every
// experiment: the run's own end, the engine facts, grid_start with each
// point's knobs, the points' states and the sweep the levels were measured
// by.
type gridRun struct {
	// Status and Error are run_end's; "incomplete" when there is none.
	Status, Error string
	Simulated     bool
	// StartupScale is the simulator's --startup-scale when ≠ 1, and Model
	// the last engine_ready's model.
	StartupScale float64
	Model        string
	Start        GridStart
	StartedAt    time.Time
	Knobs        []*pb.EngineKnobs
	Points       []gridPointState
	Sweep        *SweepResults
	// Levels are the sweep's levels by grid-wide level number.
	Levels map[int]LevelResult
}

// gridHandlers are an experiment's parts of walk. Every handler gets
// the event's index (its line is i+1); an error it returns ends the walk
// as it is, so it names the event itself. Nil handlers are skipped.
type gridHandlers struct {
	// Start checks grid_start (its experiment and params) and builds the
	// experiment's points from it; r.Start, r.StartedAt and r.Knobs are set.
	Start func(i int) error
	// PointReady and Level get grid_point_ready and grid_level_end of a
	// point grid_start named.
	PointReady func(i int, d GridPointReady) error
	Level      func(i int, d LevelObservation) error
	// Other gets every event that is neither a grid event, run_end nor
	// engine_ready.
	Other func(i int, ev Event) error
}

// walk is the one walk over a restart grid's events that the grid
// experiments' builders share: it checks the grid events' order (one
// grid_start, first) and their points, follows each point from "not run"
// to its end, gives each engine_ready's ready time to the point it started
// for, and hands the experiment's parts to h.
// newGridRun builds the sweep a grid's levels were measured by (its
// lossless merge of the agents' histograms, BuildSweep); walk reads the
// rest.
func newGridRun(events []Event) (*gridRun, error) {
	sw, err := BuildSweep(events)
	if err != nil {
		return nil, err
	}
	r := &gridRun{Status: "incomplete", Sweep: sw, Levels: map[int]LevelResult{}}
	for _, l := range sw.Levels {
		r.Levels[l.Level] = l
	}
	return r, nil
}

func (r *gridRun) walk(events []Event, h gridHandlers) error {
	checkPoint := func(i, p int) error {
		if p < 0 || p >= len(r.Points) {
			return fmt.Errorf("event %d: grid point %d is not in grid_start's %d points", i+1, p, len(r.Points))
		}
		return nil
	}
	started := false
	for i, ev := range events {
		switch ev.Kind {
		case EventRunEnd:
			v, err := Decode(ev)
			if err != nil {
				return err
			}
			e := v.(RunEnd)
			r.Status, r.Error = e.Status, e.Error
			continue
		case EventEngineReady:
			var e pb.EngineInfo
			if err := pjsonIn.Unmarshal(ev.Data, &e); err != nil {
				return fmt.Errorf("event %d (engine_ready): %w", i+1, err)
			}
			r.Simulated = r.Simulated || e.GetSimulated()
			if s := startupScale(e.GetArgv()); s != 0 {
				r.StartupScale = s
			}
			r.Model = e.GetModel()
			// The point it belongs to is the last one started.
			for j := len(r.Points) - 1; j >= 0; j-- {
				if r.Points[j].Status == "running" {
					r.Points[j].ReadyS = ptr(e.GetReadyS())
					break
				}
			}
			continue
		}
		if !IsGridKind(ev.Kind) {
			if h.Other != nil {
				if err := h.Other(i, ev); err != nil {
					return err
				}
			}
			continue
		}
		v, err := DecodeGrid(ev)
		if err != nil {
			return fmt.Errorf("event %d: %w", i+1, err)
		}
		if _, ok := v.(GridStart); !ok && !started {
			return fmt.Errorf("event %d: %s before grid_start", i+1, ev.Kind)
		}
		switch d := v.(type) {
		case GridStart:
			if started {
				return fmt.Errorf("event %d: a second grid_start", i+1)
			}
			started = true
			r.Start, r.StartedAt = d, time.Unix(0, ev.T).UTC()
			for j, p := range d.Points {
				k := &pb.EngineKnobs{}
				if !isNull(p.Knobs) {
					if err := pjsonIn.Unmarshal(p.Knobs, k); err != nil {
						return fmt.Errorf("event %d: point %d knobs: %w", i+1, j, err)
					}
				}
				r.Knobs = append(r.Knobs, k)
			}
			if h.Start != nil {
				if err := h.Start(i); err != nil {
					return err
				}
			}
			r.Points = make([]gridPointState, len(d.Points))
			for j := range r.Points {
				r.Points[j].Status = "not run"
			}
		case GridPointInfo:
			err = checkPoint(i, d.Point)
			if err == nil {
				r.Points[d.Point].Status = "running"
			}
		case GridPointReady:
			err = checkPoint(i, d.Point)
			if err == nil && h.PointReady != nil {
				err = h.PointReady(i, d)
			}
		case LevelObservation:
			err = checkPoint(i, d.Point)
			if err == nil && h.Level != nil {
				err = h.Level(i, d)
			}
		case GridPointEnd:
			err = checkPoint(i, d.Point)
			if err == nil {
				r.Points[d.Point].Status, r.Points[d.Point].Error = d.Status, d.Error
			}
		}
		if err != nil {
			return err
		}
	}
	if !started {
		return errors.New("no grid_start event: this is not a grid run")
	}
	for j := range r.Points {
		if r.Points[j].Status == "running" {
			r.Points[j].Status = "interrupted" // the run ended inside this point
		}
	}
	return nil
}
