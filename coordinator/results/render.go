package results

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
)

// Files a run directory holds.
const (
	EventsFile  = "events.jsonl"
	ResultsFile = "results.json"
	// BaselineReport is the baseline's report; SweepReport is a sweep's.
	BaselineReport = "first_token_latency.md"
)

// Rendered is a run rendered from its events: a baseline's Results or a
// sweep's SweepResults (exactly one is set), and the files written next to
// them, by name.
type Rendered struct {
	Baseline *Results
	Sweep    *SweepResults
	// KVScale is a kvscale restart grid's results (kvscale.go).
	KVScale *KVScaleResults
	Prefix  *PrefixResults
	// Presets is a presets restart grid's results (presets.go).
	Presets *PresetsResults
	// Report is the Markdown report's file name and Files the plots.
	Report string
	Files  map[string][]byte
}

// Render builds a run's results from its events and renders its report,
// its plots and report.html, without touching the disk.
func Render(events []Event) (*Rendered, error) {
	r, err := render(events)
	if err != nil {
		return nil, err
	}
	r.addHTML(events)
	return r, nil
}

// addHTML renders report.html from the report, the plots and the events'
// settings.
func (r *Rendered) addHTML(events []Event) {
	runID, status := r.identity()
	r.Files[HTMLReport] = renderHTML(string(r.Files[r.Report]), r.Files, events, runID, status)
}

// identity returns the rendered run's id and status.
func (r *Rendered) identity() (runID, status string) {
	switch {
	case r.Baseline != nil:
		return r.Baseline.RunID, r.Baseline.Status
	case r.Sweep != nil:
		return r.Sweep.RunID, r.Sweep.Status
	case r.KVScale != nil:
		return r.KVScale.RunID, r.KVScale.Status
	case r.Prefix != nil:
		return r.Prefix.RunID, r.Prefix.Status
	case r.Presets != nil:
		return r.Presets.RunID, r.Presets.Status
	}
	return "", ""
}

func render(events []Event) (*Rendered, error) {
	if isPrefix(events) {
		return renderPrefix(events)
	}
	if isGrid(events) {
		return renderGrid(events)
	}
	if isSweep(events) {
		res, err := BuildSweep(events)
		if err != nil {
			return nil, fmt.Errorf("build sweep results: %w", err)
		}
		return renderSweep(events, res), nil
	}
	res, err := Build(events)
	if err != nil {
		return nil, fmt.Errorf("build results: %w", err)
	}
	out := &Rendered{Baseline: res, Report: BaselineReport, Files: map[string][]byte{}}
	for name, svg := range renderPlots(res) {
		out.Files[name] = []byte(svg)
	}
	if c, ok := baselineTimeline(events, res); ok {
		out.Files[TimelineSVG] = []byte(c.SVG())
	}
	if c, ok := warmCDF(res); ok {
		out.Files[WarmCDFSVG] = []byte(c.SVG())
	}
	out.Files[BaselineReport] = []byte(RenderMarkdown(res))
	return out, nil
}

// renderSweep renders a sweep's report and plots; events need hold only
// the samples and the settings (RenderDir leaves the interval reports out).
func renderSweep(events []Event, res *SweepResults) *Rendered {
	out := &Rendered{Sweep: res, Report: SweepReport, Files: map[string][]byte{}}
	for name, svg := range renderSweepPlots(res) {
		out.Files[name] = []byte(svg)
	}
	if c, ok := sweepTimeline(events, res); ok {
		out.Files[SweepTimelineSVG] = []byte(c.SVG())
	}
	out.Files[SweepReport] = []byte(RenderSweepMarkdown(res))
	return out
}

// WriteJSON writes the results (results.json) as indented JSON.
func (r *Rendered) WriteJSON(w io.Writer) error {
	var v any = r.Baseline
	if r.Sweep != nil {
		v = r.Sweep
	}
	if r.KVScale != nil {
		v = r.KVScale
	}
	if r.Prefix != nil {
		v = r.Prefix
	}
	if r.Presets != nil {
		v = r.Presets
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode %s: %w", ResultsFile, err)
	}
	_, err = w.Write(append(b, '\n'))
	return err
}

// RenderDir rebuilds results.json, the report and its plots from a run
// directory's events.jsonl. It is what `ttftlab report DIR` runs, and what
// a run ends with. It returns a baseline's Results (nil for a sweep).
// A panic while rendering (a malformed events.jsonl that slipped past the
// checks) is turned into an error, so one bad file cannot stop a daemon.
//
// A fleet baseline's directory (fleet.go) renders every node's run under
// nodes/ and then fleet.json and fleet.md; it returns nil Results.
func RenderDir(dir string) (res *Results, err error) {
	return renderDir(dir, true)
}

// renderDir is RenderDir; a fleet is rendered only where allowFleet, so
// that a node directory cannot lead back into a fleet.
func renderDir(dir string, allowFleet bool) (res *Results, err error) {
	defer recoverRender(dir, &res, &err)
	events, sweep, err := scanRun(filepath.Join(dir, EventsFile))
	if err != nil {
		return nil, err
	}
	if isFleet(events) {
		if !allowFleet {
			return nil, fmt.Errorf("%s: a fleet baseline inside a fleet's nodes/ directory: render it on its own", dir)
		}
		return nil, renderFleetDir(dir, events)
	}
	var r *Rendered
	if sweep != nil {
		res, err := sweep.finish()
		if err != nil {
			return nil, fmt.Errorf("%s: build sweep results: %w", dir, err)
		}
		r = renderSweep(events, res)
		r.addHTML(events)
	} else if r, err = Render(events); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	var js strings.Builder
	if err := r.WriteJSON(&js); err != nil {
		return nil, err
	}
	if err := writeFileAtomic(filepath.Join(dir, ResultsFile), []byte(js.String())); err != nil {
		return r.Baseline, err
	}
	// The report last, so that a reader who sees it sees the rest.
	for name, b := range r.Files {
		if name == r.Report {
			continue
		}
		if err := writeFileAtomic(filepath.Join(dir, name), b); err != nil {
			return r.Baseline, err
		}
	}
	if err := writeFileAtomic(filepath.Join(dir, r.Report), r.Files[r.Report]); err != nil {
		return r.Baseline, err
	}
	return r.Baseline, nil
}

// scanRun reads a run's events.jsonl one line at a time. A sweep's events
// go to a sweepBuilder as they are read and its interval reports are not
// kept: the builder keeps each level's merged histograms instead, so a long
// sweep or one of many agents renders in memory that grows with its levels
// and samples, not with its reports. It returns the events kept and the
// builder; for any other run (a baseline, a restart grid, a fleet, whose
// reports are few) it returns every event and a nil builder.
func scanRun(path string) ([]Event, *sweepBuilder, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("read events: %w", err)
	}
	defer f.Close()
	var kept []Event
	b := newSweepBuilder()
	other, dropped := false, false
	err = ScanEvents(f, path, func(ev Event) error {
		switch ev.Kind {
		case EventGridStart, EventFleetStart:
			other = true
		}
		if !other {
			b.add(ev)
		}
		if ev.Kind == EventSweepInterval && !other {
			dropped = true
			return nil
		}
		kept = append(kept, ev)
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	if !other && isSweep(kept) {
		return kept, b, nil
	}
	if !dropped {
		return kept, nil, nil
	}
	// Not a sweep after all (a grid's sweep intervals came before its
	// grid_start, or a stray sweep_interval): read it whole.
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, nil, fmt.Errorf("read events: %w", err)
	}
	kept, err = ReadEvents(f, path)
	return kept, nil, err
}

// ResultFileMode is the mode of result files: readable by all, as results
// are meant to be shared (keys and tokens stay 0600).
const ResultFileMode = 0o644

// writeFileAtomic writes via a temporary file and a rename, so a reader
// never sees half a report. The file is ResultFileMode: os.CreateTemp
// makes its files 0600, which would hide the results from everyone else.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(ResultFileMode); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
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

// recoverRender turns a panic during RenderDir into an error naming the run
// directory and the panic value, and logs the stack.
func recoverRender(dir string, res **Results, err *error) {
	p := recover()
	if p == nil {
		return
	}
	slog.Error("rendering a run panicked", "dir", dir, "panic", p, "stack", string(debug.Stack()))
	*res = nil
	*err = fmt.Errorf("render %s: internal error while reading events.jsonl (%v); the events file is kept, please report this with it", dir, p)
}

// sanitizeOneLine keeps a string on one line for tables.
func sanitizeOneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ")
	return strings.ReplaceAll(s, "|", "\\|")
}
