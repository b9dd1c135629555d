package main

import (
	"context"
	"errors"
	"flag"
	"github.com/ttftlab/ttftlab/coordinator/results"
	"io"
	"math"
	"strings"
	"testing"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestSweepFlagErrors checks that every bad value is refused with the flag's
// name, the coordinator's SweepSpec rules among them.
func TestSweepFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string
	}{
		{"no levels", []string{"--levels", ""}, "--levels is empty"},
		{"bad level", []string{"--levels", "1,x"}, `level "x" is not a number`},
		{"zero level", []string{"--levels", "0"}, "--levels 0 is invalid"},
		{"fractional concurrency", []string{"--levels", "1.5"}, "--levels 1.5 is invalid"},
		{"concurrency over the cap", []string{"--levels", "1,200000"}, "--levels 200000 is over the concurrency limit of 100000"},
		{"unknown load", []string{"--arrival", "zigzag"}, `--arrival "zigzag" is unknown`},
		{"gamma without burstiness", []string{"--arrival", "gamma"}, "--burstiness 0 is invalid for gamma arrivals"},
		{"burstiness without gamma", []string{"--burstiness", "0.5"}, `--burstiness 0.5 is set for load kind "closed"`},
		{"no bound", []string{"--level-duration", "0s"}, "--level-duration has no bound"},
		{"negative warm-up", []string{"--warmup", "-1s"}, "--warmup -1s is negative"},
		{"negative requests", []string{"--requests", "-1"}, "--requests -1 is negative"},
		{"zero input len", []string{"--input-len", "0"}, "--input-len 0 is invalid"},
		{"zero output len", []string{"--output-len", "0"}, "--output-len 0 is invalid"},
		{"unknown agent loss", []string{"--agent-loss", "panic"}, `--agent-loss "panic" is unknown`},
		{"negative max agents", []string{"--max-agents", "-1"}, "--max-agents -1 is negative"},
		{"bad goodput", []string{"--goodput", "itl:5"}, `metric "itl" is unknown`},
		{"deprecated name, canonical error", []string{"--levels-input-len", "0"}, "--input-len 0 is invalid"},
		{"unknown api", []string{"--api", "responses"}, `--api "responses" is unknown`},
		{"unsafe run id", []string{"--run-id", "../x"}, `--run-id "../x" is not a safe directory name`},
		{"out dir escapes", []string{"--out", "/etc"}, `--out "/etc" must be a relative path`},
		{"short error window", []string{"--error-window", "10ms"}, "--error-window 10ms is invalid"},
		{"stray argument", []string{"x"}, `unexpected argument "x"`},
		{"save-detailed", []string{"--save-detailed"}, "--save-detailed is not available on a sweep: the per-request arrays"},
		{"percentiles without a directory", []string{"--metric-percentiles", "50"}, "--metric-percentiles shapes the --save-result files: add --save-result DIR"},
		{"queue times from merged levels", []string{"--save-result", "unused", "--percentile-metrics", "ttft,client_queue_time"}, `percentile metric "client_queue_time" needs every request's queue time`},
		{"bad percentile", []string{"--save-result", "unused", "--metric-percentiles", "101"}, `--metric-percentiles: percentile "101" is invalid`},
		{"save-result is a file", []string{"--save-result", "remote_test.go"}, "--save-result remote_test.go is a file: a sweep writes one file per level, give a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runSweep(context.Background(), tt.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("runSweep = %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestSweepBudgetFlags(t *testing.T) {
	tests := []struct {
		args       []string
		wantRate   float64
		wantWindow int64
		wantErr    string
	}{
		{nil, 0.5, 5000, ""},
		{[]string{"--max-error-rate", "off", "--error-window", "10s"}, -1, 10000, ""},
		{[]string{"--max-error-rate", "1"}, -1, 5000, ""},
		{[]string{"--max-error-rate", "0.2"}, 0.2, 5000, ""},
		{[]string{"--max-error-rate", "-0.1"}, 0, 0, `-max-error-rate: "-0.1" is not a fraction`},
		{[]string{"--error-window", "2h"}, 0, 0, "--error-window 2h0m0s is invalid"},
		{[]string{"--error-window", "1ms"}, 0, 0, "--error-window 1ms is invalid"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			fs := flag.NewFlagSet("sweep", flag.ContinueOnError)
			fs.SetOutput(io.Discard)
			var sf sweepFlags
			sf.register(fs, "levels", "1,2", io.Discard)
			var req *pb.RunSweepRequest
			err := fs.Parse(tt.args)
			if err == nil {
				req, err = sf.request()
			}
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("request = %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := req.GetLoad(); math.Abs(got.GetMaxErrorRate()-tt.wantRate) > 1e-12 || got.GetErrorWindowMs() != tt.wantWindow {
				t.Errorf("max_error_rate %v error_window_ms %d, want %v %d", got.GetMaxErrorRate(), got.GetErrorWindowMs(), tt.wantRate, tt.wantWindow)
			}
		})
	}
}

// sweepEvents renders a sweep's progress events: one level_start and one
// measured report per (level, ok, failed).
func sweepEvents(t *testing.T, levels ...[2]uint64) []*pb.RunEvent {
	t.Helper()
	var evs []*pb.RunEvent
	for i, l := range levels {
		evs = append(evs, &pb.RunEvent{Kind: results.EventLevelStart, Json: `{"level":` + string(rune('0'+i)) + `,"value":` + string(rune('1'+i)) + `,"agents":["a"]}`})
		rep, err := protojson.Marshal(&pb.IntervalReport{AgentId: "a", RequestsOk: l[0], RequestsFailed: l[1], Final: true})
		if err != nil {
			t.Fatal(err)
		}
		evs = append(evs, &pb.RunEvent{Kind: results.EventSweepInterval, Json: `{"level":` + string(rune('0'+i)) + `,"report":` + string(rep) + `}`})
	}
	return append(evs, &pb.RunEvent{Kind: "done", Message: "/tmp/run"})
}

func TestRunTally(t *testing.T) {
	tests := []struct {
		name    string
		events  []*pb.RunEvent
		wantErr string // sweepFailure; "" for none
	}{
		{"every level had a success", sweepEvents(t, [2]uint64{3, 0}, [2]uint64{1, 9}), ""},
		{"a level without a success fails the sweep", sweepEvents(t, [2]uint64{3, 0}, [2]uint64{0, 7}), "level 2 (2) had no successful request (7 failed)"},
		{"no level ran", []*pb.RunEvent{{Kind: "done", Message: "/tmp/run"}}, "no level ran"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			i := 0
			var tally runTally
			dir, err := followEvents(func() (*pb.RunEvent, error) {
				if i == len(tt.events) {
					return nil, io.EOF
				}
				i++
				return tt.events[i-1], nil
			}, io.Discard, &tally)
			if err != nil || dir != "/tmp/run" {
				t.Fatalf("followEvents = %q, %v", dir, err)
			}
			got := tally.sweepFailure()
			if tt.wantErr == "" && got != "" || !strings.Contains(got, tt.wantErr) {
				t.Errorf("sweepFailure = %q, want %q", got, tt.wantErr)
			}
		})
	}
	t.Run("a stream error is returned", func(t *testing.T) {
		boom := errors.New("boom")
		if _, err := followEvents(func() (*pb.RunEvent, error) { return nil, boom }, io.Discard, &runTally{}); !errors.Is(err, boom) {
			t.Errorf("followEvents = %v, want boom", err)
		}
	})
}
