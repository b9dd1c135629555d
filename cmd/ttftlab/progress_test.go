package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
)

// fakeTTY is a stderr that says it is a terminal.
type fakeTTY struct{ bytes.Buffer }

func (*fakeTTY) IsTerminal() bool { return true }

func TestProgressLine(t *testing.T) {
	tests := []struct {
		name      string
		elapsed   time.Duration
		done, bad uint64
		total     int64
		bound     time.Duration
		want      []string
	}{
		{name: "requests", elapsed: 10 * time.Second, done: 50, bad: 2, total: 200,
			want: []string{"50 of 200 (25%) done", "5.0 req/s", "30s left", "2 errors"}},
		{name: "duration", elapsed: 4 * time.Second, done: 40, bound: 10 * time.Second,
			want: []string{"40, 4s of 10s done", "10.0 req/s", "6s left"}},
		{name: "the sooner bound", elapsed: 4 * time.Second, done: 4, total: 100, bound: 10 * time.Second,
			want: []string{"6s left"}},
		{name: "nothing done yet", elapsed: time.Second, total: 100, want: []string{"0 of 100 (0%) done", "n/a left"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := progressLine(tt.elapsed, tt.done, tt.bad, tt.total, tt.bound, 3)
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("%q lacks %q", got, w)
				}
			}
		})
	}
}

// TestLoadProgress checks that progress reaches stderr when it is a
// terminal, also under --json, and not when it is a pipe unless
// --progress is given.
func TestLoadProgress(t *testing.T) {
	url := startSim(t)
	tests := []struct {
		name   string
		tty    bool
		args   []string
		wantOn bool
	}{
		{name: "terminal, --json", tty: true, args: []string{"--json"}, wantOn: true},
		{name: "terminal, table", tty: true, wantOn: true},
		{name: "pipe", tty: false, args: []string{"--json"}},
		{name: "pipe with --progress", tty: false, args: []string{"--json", "--progress"}, wantOn: true},
		{name: "terminal with --progress=off", tty: true, args: []string{"--progress=off"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr io.Writer
			tty, pipe := &fakeTTY{}, &bytes.Buffer{}
			stderr = pipe
			if tt.tty {
				stderr = tty
			}
			args := append([]string{"load", "--url", url, "--requests", "30", "--concurrency", "2", "--output-len", "20", "--interval", "100ms"}, tt.args...)
			if err := run(t.Context(), args, io.Discard, stderr); err != nil {
				t.Fatal(err)
			}
			out := tty.String() + pipe.String()
			on := strings.Contains(out, " of 30 (")
			if on != tt.wantOn {
				t.Errorf("progress shown %v, want %v; stderr:\n%s", on, tt.wantOn, out)
			}
		})
	}
}

// TestRunProgress feeds a sweep's and a grid's events to runProgress and
// checks its lines: level i of n, point p of P, elapsed, the estimate from
// the planned level durations, the errors.
func TestRunProgress(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	type step struct {
		at      float64
		payload any
		failed  uint64
	}
	tests := []struct {
		name  string
		steps []step
		want  []string // the last line must contain each
		lines int
	}{
		{name: "sweep, second of four levels", steps: []step{
			{0, results.SweepStart{Levels: []float64{1, 2, 4, 8}}, 0},
			{1, results.LevelStart{Level: 0, DurationMs: 5000, WarmupMs: 1000}, 0},
			{7, results.LevelStart{Level: 1, DurationMs: 5000, WarmupMs: 1000}, 2},
			{9, results.SweepInterval{Level: 1}, 3},
		}, want: []string{"level 2 of 4", "9s elapsed", "≈16s left", "3 errors"}, lines: 4},
		{name: "events within a second print once", steps: []step{
			{0, results.SweepStart{Levels: []float64{1}}, 0},
			{0.1, results.LevelStart{DurationMs: 2000}, 0},
			{0.5, results.SweepInterval{}, 0},
			{0.9, results.SweepInterval{}, 0},
		}, want: []string{"level 1 of 1", "≈2s left"}, lines: 2},
		{name: "grid, second of three points", steps: []step{
			{0, results.GridStart{Points: make([]results.GridPointInfo, 3)}, 0},
			{0, results.GridPointInfo{Point: 0}, 0},
			{20, results.GridPointInfo{Point: 1}, 0},
			{21, results.GridPointReady{Point: 1, Plan: []byte(`{"steps":[1,2]}`)}, 0},
			{22, results.LevelStart{DurationMs: 4000}, 1},
		}, want: []string{"point 2 of 3", "level 1 of 2", "22s elapsed", "≈28s left", "1 errors"}, lines: 5},
		{name: "nothing planned yet", steps: []step{
			{0, results.SweepStart{Levels: []float64{1, 2}}, 0},
		}, want: []string{"0s elapsed", "n/a left", "0 errors"}, lines: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			p := &runProgress{w: &buf, start: t0, every: time.Second}
			for _, s := range tt.steps {
				p.observe(s.payload, at(s.at), s.failed)
			}
			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if len(lines) != tt.lines {
				t.Errorf("%d lines, want %d:\n%s", len(lines), tt.lines, buf.String())
			}
			last := lines[len(lines)-1]
			for _, w := range tt.want {
				if !strings.Contains(last, w) {
					t.Errorf("%q lacks %q", last, w)
				}
			}
		})
	}
}

func TestWithRunProgress(t *testing.T) {
	tests := []struct {
		name   string
		tty    bool
		mode   progressMode
		wantOn bool
	}{
		{name: "terminal", tty: true, wantOn: true},
		{name: "pipe", tty: false},
		{name: "pipe with --progress", mode: "on", wantOn: true},
		{name: "terminal with --progress=off", tty: true, mode: "off"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var w io.Writer = &bytes.Buffer{}
			if tt.tty {
				w = &fakeTTY{}
			}
			if on := runProgressOf(withRunProgress(w, tt.mode)) != nil; on != tt.wantOn {
				t.Errorf("progress on %v, want %v", on, tt.wantOn)
			}
		})
	}
}
