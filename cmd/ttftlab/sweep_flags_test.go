package main

import (
	"flag"
	"io"
	"strings"
	"testing"
)

// A duration the user gives is pinned; the default one is a minimum the
// coordinator may lengthen, up to the max-duration flag.
func TestSweepDurationPinnedOrAuto(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		wantAuto bool
		wantMs   int64
		wantMax  int64
		wantErr  string
	}{
		{name: "default is auto", wantAuto: true, wantMs: 5000, wantMax: 180_000},
		{name: "given is pinned", args: []string{"--level-duration", "2s"}, wantMs: 2000, wantMax: 180_000},
		{name: "given equal to the default is still pinned", args: []string{"--level-duration", "5s"}, wantMs: 5000, wantMax: 180_000},
		{name: "cap", args: []string{"--level-max-duration", "30s"}, wantAuto: true, wantMs: 5000, wantMax: 30_000},
		{name: "cap below the duration", args: []string{"--level-max-duration", "1s"}, wantErr: "--level-max-duration 1s is shorter than the level duration"},
		{name: "bad duration", args: []string{"--level-duration", "5"}, wantErr: `"5" is not a duration`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := flag.NewFlagSet("sweep", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var sf sweepFlags
			sf.register(fs, "levels", "1,2", io.Discard)
			err := fs.Parse(tt.args)
			if err == nil {
				req, rerr := sf.request()
				err = rerr
				if err == nil && (req.GetAutoDuration() != tt.wantAuto || req.GetLoad().GetDurationMs() != tt.wantMs || req.GetMaxDurationMs() != tt.wantMax) {
					t.Errorf("auto %v duration %d ms max %d ms; want %v %d %d", req.GetAutoDuration(), req.GetLoad().GetDurationMs(), req.GetMaxDurationMs(), tt.wantAuto, tt.wantMs, tt.wantMax)
				}
			}
			if tt.wantErr == "" && err != nil {
				t.Fatal(err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}
