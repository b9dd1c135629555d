package results

import (
	"bytes"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ttftlab/ttftlab/internal/benchjson"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// SaveResultDir is the folder of a sweep's run directory that holds one
// vLLM-format result per level (docs/metrics.md, "vLLM-compatible export").
const SaveResultDir = "save_result"

// ExportOptions choose what a level's vLLM-format result holds, as `ttftlab
// load`'s --metric-percentiles, --percentile-metrics and --result-label.
type ExportOptions struct {
	Percentiles []float64
	Metrics     []string
	// Label is vLLM's label key; empty writes null.
	Label string
}

// Validate says why the options cannot be written from merged levels.
func (o ExportOptions) Validate() error {
	return benchjson.CheckSummaryOptions(benchjson.Options{Percentiles: o.Percentiles, Metrics: o.Metrics})
}

// LevelFile is one sweep level's result in the JSON layout of `vllm bench
// serve --save-result`.
type LevelFile struct {
	// Level is 0-based.
	Level int
	// Name is the file's name: level-<n>-c<concurrency>.json for a closed
	// loop, level-<n>-r<rate>.json for an open one, n 1-based and two
	// digits wide so that the files sort in level order.
	Name string
	Data []byte
}

// SweepExporter turns a sweep's events, fed in the order they were
// recorded (events.jsonl, or the coordinator's event stream), into one
// LevelFile per level as each level ends. The coordinator and the CLI feed
// it the same events, so their files agree. It is not safe for concurrent
// use.
type SweepExporter struct {
	opts  ExportOptions
	start *Event
	// levels are the events of the levels begun and not yet ended.
	levels map[int][]Event
}

// NewSweepExporter returns an exporter, or an error naming the option a
// merged level cannot be written with.
func NewSweepExporter(opts ExportOptions) (*SweepExporter, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	return &SweepExporter{opts: opts, levels: map[int][]Event{}}, nil
}

// Add takes one event. At a level_end it returns that level's file; nil
// otherwise. An event that does not decode is an error, and ignored.
func (x *SweepExporter) Add(ev Event) (*LevelFile, error) {
	switch ev.Kind {
	case EventSweepStart, EventLevelStart, EventSweepInterval, EventAgentLost, EventLevelEnd:
	default:
		return nil, nil
	}
	p, err := Decode(ev)
	if err != nil {
		return nil, err
	}
	switch p := p.(type) {
	case SweepStart:
		x.start = &ev
	case LevelStart:
		x.levels[p.Level] = []Event{ev}
	case SweepInterval:
		if evs, ok := x.levels[p.Level]; ok {
			x.levels[p.Level] = append(evs, ev)
		}
	case AgentLost:
		if evs, ok := x.levels[p.Level]; ok {
			x.levels[p.Level] = append(evs, ev)
		}
	case LevelEnd:
		evs, ok := x.levels[p.Level]
		if !ok || x.start == nil {
			return nil, fmt.Errorf("level %d ended without its sweep_start and level_start: no result written", p.Level+1)
		}
		delete(x.levels, p.Level)
		return x.level(p.Level, append([]Event{*x.start}, evs...))
	}
	return nil, nil
}

// level builds a level's file from its events, through BuildSweep, so the
// file's counts and status are results.json's.
func (x *SweepExporter) level(li int, events []Event) (*LevelFile, error) {
	res, err := BuildSweep(events)
	if err != nil {
		return nil, fmt.Errorf("level %d: %w", li+1, err)
	}
	if len(res.Levels) != 1 {
		return nil, fmt.Errorf("level %d: %d levels in its events, want 1", li+1, len(res.Levels))
	}
	l := &res.Levels[0]
	var buf bytes.Buffer
	if err := LevelExport(&buf, res, l, levelPeaks(events, l), x.opts); err != nil {
		return nil, fmt.Errorf("level %d: %w", li+1, err)
	}
	return &LevelFile{Level: li, Name: LevelFileName(res, l), Data: buf.Bytes()}, nil
}

// LevelFileName is a level's file name (LevelFile.Name).
func LevelFileName(res *SweepResults, l *LevelResult) string {
	v := strconv.FormatFloat(l.Value, 'f', -1, 64)
	if m, ok := loadOf(res.Load); ok && m.GetKind() != "closed" {
		return fmt.Sprintf("level-%02d-r%s.json", l.Level+1, v)
	}
	return fmt.Sprintf("level-%02d-c%s.json", l.Level+1, v)
}

// Peaks are a level's peak output rate and peak concurrency, which vLLM
// computes from every request's timestamps and a sweep reads from the
// agents' interval reports.
type Peaks struct {
	// TokensPerS is the most output tokens streamed in one second: windows
	// of 1 s from the measured start, each report's streamed tokens shared
	// by overlap.
	TokensPerS float64
	// Concurrent is the largest sum over the agents of the requests in
	// flight at the end of a report, each agent's latest report before a
	// window's end.
	Concurrent int
}

// levelPeaks reads Peaks from a level's measured reports.
func levelPeaks(events []Event, l *LevelResult) Peaks {
	var spans []tokenSpan
	type flight struct {
		endNs int64
		n     uint32
	}
	byAgent := map[string][]flight{}
	for _, ev := range events {
		if ev.Kind != EventSweepInterval {
			continue
		}
		p, err := Decode(ev)
		if err != nil {
			continue
		}
		rep := p.(SweepInterval).Report
		if rep.GetWarmup() {
			continue
		}
		if n := rep.GetOutputTokensStreamed(); n > 0 {
			spans = append(spans, tokenSpan{rep.GetStartUnixNano(), rep.GetEndUnixNano(), n})
		}
		byAgent[rep.GetAgentId()] = append(byAgent[rep.GetAgentId()], flight{rep.GetEndUnixNano(), rep.GetInFlight()})
	}
	var pk Peaks
	if l.endNs <= l.startNs {
		return pk
	}
	const sec = int64(time.Second)
	for w0 := l.startNs; w0 < l.endNs; w0 += sec {
		pk.TokensPerS = max(pk.TokensPerS, inWindow(spans, w0, w0+sec))
		w1, sum := min(w0+sec, l.endNs), 0
		for _, fs := range byAgent {
			var latest flight
			for _, f := range fs {
				if f.endNs <= w1 && f.endNs > latest.endNs {
					latest = f
				}
			}
			sum += int(latest.n)
		}
		pk.Concurrent = max(pk.Concurrent, sum)
	}
	return pk
}

// LevelExport writes one level of a sweep as vLLM's `bench serve
// --save-result` JSON: vLLM's keys with vLLM's types, statistics exactly as
// `ttftlab load` computes them (means and standard deviations from the
// agents' exact sums, medians and percentiles from the merged histograms
// at the nearest rank). Where a sweep cannot keep vLLM's meaning the
// ttftlab_sweep_notes key says so (docs/metrics.md).
func LevelExport(w *bytes.Buffer, res *SweepResults, l *LevelResult, pk Peaks, opts ExportOptions) error {
	m := l.merger
	if m == nil {
		return fmt.Errorf("level %d has no merged reports", l.Level+1)
	}
	lm, _ := loadOf(res.Load)
	st := benchjson.Settings{
		Date: time.Unix(0, l.barrierNs), Backend: "openai-chat", Label: opts.Label, ModelID: res.Model,
		NumPrompts: int64(l.Requests), Burstiness: 1,
	}
	if res.API == "completions" {
		st.Backend = "openai"
	}
	if l.PromptLenSource == PromptLenTokenize {
		st.TokenizerID = res.Model
	}
	switch lm.GetKind() {
	case "closed", "":
		st.MaxConcurrency = int(l.Value)
	case "constant":
		st.RequestRate, st.Burstiness, st.MaxConcurrency = l.Value, math.Inf(1), int(lm.GetMaxInFlight())
	case "gamma":
		st.RequestRate, st.Burstiness, st.MaxConcurrency = l.Value, lm.GetBurstiness(), int(lm.GetMaxInFlight())
	default:
		st.RequestRate, st.MaxConcurrency = l.Value, int(lm.GetMaxInFlight())
	}
	status := StatusOK
	if l.Status == "failed" {
		status = StatusFailed
	}
	run := benchjson.Run{
		Good: l.Good, Status: status, Reason: l.Error, Interrupted: l.Interrupted,
		PromptLenSource: l.PromptLenSource, UsageSource: l.UsageSource, ErrorsByKind: l.ErrorsByKind,
		Extra: []benchjson.KV{
			{Key: "ttftlab_run_id", Value: res.RunID},
			{Key: "ttftlab_level", Value: l.Level + 1},
			{Key: "ttftlab_level_value", Value: l.Value},
			{Key: "ttftlab_level_status", Value: l.Status},
			{Key: "ttftlab_agents", Value: l.Agents},
			{Key: "ttftlab_prompt_len_counts", Value: l.PromptLenCounts},
			{Key: "ttftlab_insufficient", Value: l.Insufficient},
			{Key: "ttftlab_sweep_notes", Value: sweepNotes},
		},
	}
	if l.DurationS != nil {
		run.Duration = time.Duration(*l.DurationS * float64(time.Second))
	}
	stat := func(metric string) benchjson.Stat {
		h := m.Histograms()[metric]
		if h == nil {
			h = hdr.New()
		}
		s := benchjson.Stat{Hist: h, Mean: math.NaN(), Std: math.NaN()}
		if mo, ok := m.Moments(metric); ok && int64(mo.Count) == h.Count() {
			s.Mean, s.Std = mo.Mean(), mo.Std()
		}
		return s
	}
	sum := benchjson.Summary{
		Completed: int(l.Successes), Failed: int(l.Errors),
		TotalIn: int64(m.PromptTokens), TotalOut: int64(l.OutputTokens),
		Stats: map[string]benchjson.Stat{
			benchjson.MetricTTFT:  stat(hdr.TTFT),
			benchjson.MetricTPOT:  stat(hdr.TPOT),
			benchjson.MetricITL:   stat(hdr.ICL),
			benchjson.MetricE2EL:  stat(hdr.E2E),
			benchjson.StatTTFTlab: stat(hdr.TTFT),
			benchjson.StatITLlab:  stat(hdr.ITL),
		},
		MaxOutputTokensPerS: pk.TokensPerS,
		MaxConcurrent:       pk.Concurrent,
	}
	return benchjson.WriteSummary(w, benchjson.Options{Percentiles: opts.Percentiles, Metrics: opts.Metrics}, st, run, sum)
}

// sweepNotes says where a sweep level's file departs from vLLM's, in the
// file itself.
var sweepNotes = []string{
	"ttft: first chunk with generated content (vLLM: first chunk, for chat the role chunk)",
	"itl: one value per chunk gap, without the chat role-to-content gap",
	"latencies and queue_times: empty, the per-request values stay on the agents",
	"max_output_tokens_per_s and max_concurrent_requests: from the agents' 1 s interval reports",
}

// SaveLevelFile writes a level's file into dir, creating dir, through a
// temporary file renamed into place and synced.
func SaveLevelFile(dir string, f *LevelFile) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("save result: %w", err)
	}
	return writeFileAtomic(filepath.Join(dir, f.Name), f.Data)
}

// levelPromptLens sets a level's prompt-length provenance from its merge.
func levelPromptLens(l *LevelResult, m *Merger) {
	if m.PromptLens != (PromptLenCounts{}) {
		c, n := m.PromptLens, m.PromptTokens
		l.PromptLenCounts, l.PromptLenSource, l.InputTokens = &c, c.Source(), &n
	}
}

// ExportSweepDir rebuilds a sweep's vLLM-format level files from runDir's
// events.jsonl, read one line at a time through a SweepExporter with opts,
// and writes them into dir (runDir's save_result/ when dir is ""). The
// files are those the run wrote as its levels ended, since the exporter sees
// the same events in the same order. It returns the paths written; none,
// and no error, for a run that is not a sweep (a baseline, a restart grid or
// a fleet writes no save_result/).
func ExportSweepDir(runDir, dir string, opts ExportOptions) ([]string, error) {
	exp, err := NewSweepExporter(opts)
	if err != nil {
		return nil, err
	}
	if dir == "" {
		dir = filepath.Join(runDir, SaveResultDir)
	}
	path := filepath.Join(runDir, EventsFile)
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read events: %w", err)
	}
	defer f.Close()
	var files []*LevelFile
	sweep, other := false, false
	err = ScanEvents(f, path, func(ev Event) error {
		switch ev.Kind {
		case EventSweepStart:
			sweep = true
		case EventGridStart, EventFleetStart:
			other = true
		}
		if other {
			return nil
		}
		lf, err := exp.Add(ev)
		if err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if lf != nil {
			files = append(files, lf)
		}
		return nil
	})
	if err != nil || !sweep || other {
		return nil, err
	}
	var written []string
	for _, lf := range files {
		if err := SaveLevelFile(dir, lf); err != nil {
			return written, err
		}
		written = append(written, filepath.Join(dir, lf.Name))
	}
	return written, nil
}
