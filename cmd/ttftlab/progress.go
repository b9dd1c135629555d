package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

// isTerminal reports whether w is a terminal: a character device, or a
// writer that says so itself (tests' fake terminals).
func isTerminal(w io.Writer) bool {
	if t, ok := w.(interface{ IsTerminal() bool }); ok {
		return t.IsTerminal()
	}
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// progressMode is --progress: auto shows progress when stderr is a
// terminal, on and off force it.
type progressMode string

func (p *progressMode) String() string {
	if p == nil || *p == "" {
		return "auto"
	}
	return string(*p)
}

func (p *progressMode) Set(s string) error {
	switch s {
	case "auto", "on", "off":
		*p = progressMode(s)
		return nil
	case "true", "1":
		*p = "on"
		return nil
	case "false", "0":
		*p = "off"
		return nil
	}
	return fmt.Errorf("%q is not a progress mode: use auto (when stderr is a terminal), on or off", s)
}

// IsBoolFlag lets --progress stand alone for "on".
func (p *progressMode) IsBoolFlag() bool { return true }

// enabled says whether progress goes to stderr.
func (p progressMode) enabled(stderr io.Writer) bool {
	switch p {
	case "on":
		return true
	case "off":
		return false
	}
	return isTerminal(stderr)
}

// progressLine renders one progress line of a run: done of total (or of
// the time bound), the rate, the time left (the sooner of the request and
// the time bound; n/a before any request finished), and the errors.
func progressLine(elapsed time.Duration, done, failed uint64, totalReqs int64, bound time.Duration, inFlight int) string {
	secs := elapsed.Seconds()
	rate := 0.0
	if secs > 0 {
		rate = float64(done) / secs
	}
	of := fmt.Sprintf("%d", done)
	left := time.Duration(-1)
	if totalReqs > 0 {
		of = fmt.Sprintf("%d of %d (%.0f%%)", done, totalReqs, 100*float64(done)/float64(totalReqs))
		if rate > 0 {
			left = time.Duration(float64(max(totalReqs-int64(done), 0)) / rate * float64(time.Second))
		}
	}
	if bound > 0 {
		of += fmt.Sprintf(", %s of %s", elapsed.Round(time.Second), bound)
		if l := max(bound-elapsed, 0); left < 0 || l < left {
			left = l
		}
	}
	leftS := "n/a"
	if left >= 0 {
		leftS = left.Round(time.Second).String()
	}
	return fmt.Sprintf("%6.1fs  %s done  %.1f req/s  %s left  %d errors  %d in flight", secs, of, rate, leftS, failed, inFlight)
}

// runProgress follows an event-driven run (sweep, up, kvscale, prefix,
// presets) and writes a compact progress line to stderr: the grid point
// and level of their totals, the time elapsed, the time left estimated
// from the planned level durations, and the errors so far. It prints when
// a point or level starts and otherwise at most once per every.
type runProgress struct {
	w     io.Writer
	start time.Time
	every time.Duration
	last  time.Time

	// Grid experiments: points in all, the current one (1-based; 0 before
	// the first), and the time the finished points took.
	points, point int
	pointStart    time.Time
	pointsDone    int
	pointsTime    time.Duration
	// Levels of the current sweep or grid point (0: not known yet), the
	// current one (1-based), when it is planned to end and its planned
	// length (warm-up and measured part).
	levels, level int
	levelEnd      time.Time
	levelPlan     time.Duration
	failed        uint64
}

// progressStderr is the stderr of an event-driven run with progress on:
// followEvents feeds it each event. withRunProgress makes one.
type progressStderr struct {
	io.Writer
	p *runProgress
}

// withRunProgress returns stderr itself when mode says no progress, else
// stderr carrying a runProgress that followEvents feeds.
func withRunProgress(stderr io.Writer, mode progressMode) io.Writer {
	if !mode.enabled(stderr) {
		return stderr
	}
	return &progressStderr{Writer: stderr, p: &runProgress{w: stderr, start: time.Now(), every: time.Second}}
}

// IsTerminal passes the wrapped writer's answer on.
func (s *progressStderr) IsTerminal() bool { return isTerminal(s.Writer) }

// runProgressOf returns the runProgress that w carries, or nil.
func runProgressOf(w io.Writer) *runProgress {
	if s, ok := w.(*progressStderr); ok {
		return s.p
	}
	return nil
}

// observe updates the progress from one event (ev decoded as results.Decode
// or DecodeGrid does; unknown payloads are ignored) and prints a line when
// a point or level starts, or every p.every.
func (p *runProgress) observe(payload any, now time.Time, failed uint64) {
	p.failed = failed
	started := false
	switch d := payload.(type) {
	case results.GridStart:
		p.points = len(d.Points)
	case results.GridPointInfo: // grid_point_start
		if p.point > 0 {
			p.pointsDone++
			p.pointsTime += now.Sub(p.pointStart)
		}
		p.point, p.pointStart, p.levels, p.level, p.levelPlan = d.Point+1, now, 0, 0, 0
		started = true
	case results.GridPointReady:
		var plan struct {
			Steps []int `json:"steps"`
		}
		if json.Unmarshal(d.Plan, &plan) == nil && len(plan.Steps) > 0 {
			p.levels = len(plan.Steps)
		}
	case results.SweepStart:
		p.levels, p.level = len(d.Levels), 0
	case results.LevelStart:
		p.level++
		p.levelPlan = time.Duration(d.DurationMs+d.WarmupMs) * time.Millisecond
		p.levelEnd = now.Add(p.levelPlan)
		started = true
	}
	if started || now.Sub(p.last) >= p.every {
		p.last = now
		fmt.Fprintln(p.w, p.line(now))
	}
}

// line renders the progress line at now.
func (p *runProgress) line(now time.Time) string {
	var parts []string
	if p.points > 0 && p.point > 0 {
		parts = append(parts, fmt.Sprintf("point %d of %d", p.point, p.points))
	}
	if p.level > 0 {
		if p.levels > 0 {
			parts = append(parts, fmt.Sprintf("level %d of %d", p.level, p.levels))
		} else {
			parts = append(parts, fmt.Sprintf("level %d", p.level))
		}
	}
	left := "n/a"
	if l, ok := p.left(now); ok {
		left = "≈" + l.Round(time.Second).String()
	}
	parts = append(parts, fmt.Sprintf("%s elapsed", now.Sub(p.start).Round(time.Second)),
		left+" left", fmt.Sprintf("%d errors", p.failed))
	return "progress: " + strings.Join(parts, ", ")
}

// left estimates the time left: the rest of the current level, plus the
// levels after it at the current level's planned length, plus (in a grid)
// the points after this one at the mean time of the finished points (or,
// before one finished, at this point's planned levels). ok is false when
// nothing is planned yet.
func (p *runProgress) left(now time.Time) (time.Duration, bool) {
	if p.level == 0 || p.levels == 0 {
		return 0, false
	}
	d := max(p.levelEnd.Sub(now), 0) + time.Duration(max(p.levels-p.level, 0))*p.levelPlan
	if p.points > 0 {
		perPoint := time.Duration(p.levels) * p.levelPlan
		if p.pointsDone > 0 {
			perPoint = p.pointsTime / time.Duration(p.pointsDone)
		}
		d += time.Duration(max(p.points-p.point, 0)) * perPoint
	}
	return d, true
}

// decodeAny decodes a run event's payload with results.Decode, or
// results.DecodeGrid for grid kinds; nil when neither reads it.
func decodeAny(ev *pb.RunEvent) any {
	rev := results.Event{T: ev.GetUnixNano(), Kind: ev.GetKind(), Data: []byte(ev.GetJson())}
	if results.IsGridKind(ev.GetKind()) {
		v, err := results.DecodeGrid(rev)
		if err != nil {
			return nil
		}
		return v
	}
	v, err := results.Decode(rev)
	if err != nil {
		return nil
	}
	return v
}
