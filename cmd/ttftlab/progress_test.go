package main

import (
	"bytes"
	"io"
	"strings"
	"testing"
	"time"
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
