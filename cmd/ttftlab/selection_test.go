package main

import (
	"context"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/membership"
	"github.com/ttftlab/ttftlab/internal/node"
)

func TestSelectionFlagErrors(t *testing.T) {
	tests := []struct {
		name string
		run  func(context.Context, []string, io.Writer, io.Writer) error
		args []string
		want string
	}{
		// --all-gpunodes is a fleet baseline (coordinator/fleet.go): it gets
		// as far as dialling.
		{"baseline on every gpunode is a fleet", runBaseline, []string{"--all-gpunodes"}, "--coordinator is required"},
		{"baseline name and every gpunode", runBaseline, []string{"--all-gpunodes", "--gpunode", "g1"}, `--gpunode "g1" and all gpunodes were both asked for`},
		{"baseline name and selector", runBaseline, []string{"--gpunode", "g1", "--selector", "gpu=h200"}, `--gpunode "g1" and a gpunode selector were both given`},
		{"baseline bad selector", runBaseline, []string{"--selector", "gpu"}, `label "gpu" is not key=value`},
		{"sweep bad agents selector", runSweep, []string{"--agents-selector", "rack=r 1"}, `value "r 1"`},
		{"sweep on every gpunode", runSweep, []string{"--all-gpunodes"}, "--all-gpunodes is not supported"},
		{"kvscale on every gpunode", runKVScale, []string{"--all-gpunodes"}, "--all-gpunodes is not supported"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run(t.Context(), tt.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestLabelFlag(t *testing.T) {
	l := labelsFlag{}
	for _, s := range []string{"rack=r12", "gpu=custom"} {
		if err := l.Set(s); err != nil {
			t.Fatal(err)
		}
	}
	if got := l.String(); got != "gpu=custom,rack=r12" {
		t.Errorf("labels %q", got)
	}
	for _, bad := range []string{"rack", "rack=r 12", "-x=1"} {
		if err := l.Set(bad); err == nil {
			t.Errorf("--label %q accepted", bad)
		}
	}
}

// fakeRuns is a coordinator that lists fixed members and runs.
type fakeRuns struct {
	pb.UnimplementedCoordinatorServiceServer
}

func (fakeRuns) ListMembers(context.Context, *pb.ListMembersRequest) (*pb.ListMembersResponse, error) {
	return &pb.ListMembersResponse{Members: []*pb.Member{
		{Name: "gpu-a", Role: "gpunode", GrpcAddr: "10.0.0.1:9000", State: "alive", ProtocolVersion: 1, Labels: map[string]string{"host": "a", "gpu": "NVIDIA-H200"}},
		{Name: "agent-1", Role: "agent", GrpcAddr: "10.0.0.2:9000", State: "alive", ProtocolVersion: 1},
	}}, nil
}

func (fakeRuns) ListRuns(context.Context, *pb.ListRunsRequest) (*pb.ListRunsResponse, error) {
	t0 := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano()
	return &pb.ListRunsResponse{Runs: []*pb.RunInfo{
		{RunId: "r-done", Experiment: "baseline", Gpunodes: []string{"gpu-a"}, Agents: []string{"agent-1"}, State: "done",
			QueuedUnixNano: t0, StartUnixNano: t0, EndUnixNano: t0 + int64(time.Minute), Status: "failed", Error: "engine exited\nwith code 1"},
		{RunId: "r-run", Experiment: "sweep", Gpunodes: []string{"gpu-a"}, Agents: []string{"agent-1", "agent-2"}, State: "running", QueuedUnixNano: t0, StartUnixNano: t0},
		{RunId: "r-wait", Experiment: "kvscale", State: "queued", Position: 2, QueuedUnixNano: t0, Selection: &pb.Selection{Gpunode: "gpu-a"}},
	}}, nil
}

func startFakeCoordinator(t *testing.T) string {
	t.Helper()
	s, err := node.Start(t.Context(), node.Config{Name: "c", GRPCAddr: "127.0.0.1:0", GossipAddr: "127.0.0.1:0", Fast: true}, membership.RoleCoordinator, func(r node.Registrar) {
		pb.RegisterCoordinatorServiceServer(r, fakeRuns{})
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s.Addr()
}

func TestRunsAndMembersOutput(t *testing.T) {
	addr := startFakeCoordinator(t)
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	t.Run("runs table", func(t *testing.T) {
		var out strings.Builder
		if err := run(ctx, []string{"runs", "--coordinator", addr}, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		want := [][]string{
			{"RUN", "EXPERIMENT", "GPUNODE", "AGENTS", "STATE", "START", "END", "STATUS"},
			{"r-done", "baseline", "gpu-a", "agent-1", "done", "2025-01-02T03:04:05Z", "2025-01-02T03:05:05Z", "failed:", "engine", "exited"},
			{"r-run", "sweep", "gpu-a", "agent-1,agent-2", "running", "2025-01-02T03:04:05Z", "n/a", "n/a"},
			{"r-wait", "kvscale", "(gpu-a)", "n/a", "queued", "#2", "n/a", "n/a", "n/a"},
		}
		if len(lines) != len(want) {
			t.Fatalf("output:\n%s\nwant %d lines", out.String(), len(want))
		}
		for i, w := range want {
			if got := strings.Fields(lines[i]); strings.Join(got, " ") != strings.Join(w, " ") {
				t.Errorf("line %d = %q, want fields %q", i, lines[i], w)
			}
		}
	})
	t.Run("runs json", func(t *testing.T) {
		var out strings.Builder
		if err := run(ctx, []string{"runs", "--coordinator", addr, "--json"}, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		var got []map[string]any
		if err := json.Unmarshal([]byte(out.String()), &got); err != nil {
			t.Fatalf("not JSON: %v\n%s", err, out.String())
		}
		if len(got) != 3 {
			t.Fatalf("%d runs, want 3", len(got))
		}
		if got[0]["status"] != "failed" || got[0]["error"] != "engine exited\nwith code 1" || got[0]["end"] != "2025-01-02T03:05:05Z" {
			t.Errorf("done run = %v", got[0])
		}
		if got[1]["status"] != nil || got[1]["end"] != nil || got[1]["position"] != nil {
			t.Errorf("running run = %v, want null status, end and position", got[1])
		}
		if got[2]["position"] != float64(2) || got[2]["start"] != nil || len(got[2]["agents"].([]any)) != 0 {
			t.Errorf("queued run = %v, want position 2, null start, no agents", got[2])
		}
	})
	t.Run("members labels", func(t *testing.T) {
		var out strings.Builder
		if err := run(ctx, []string{"members", "--coordinator", addr}, &out, io.Discard); err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(out.String()), "\n")
		if len(lines) != 3 || !strings.HasSuffix(lines[0], "LABELS") ||
			!strings.HasSuffix(lines[1], "gpu=NVIDIA-H200,host=a") || !strings.HasSuffix(lines[2], " -") {
			t.Errorf("members output:\n%s", out.String())
		}
	})
}

func TestDescribeQueueEvents(t *testing.T) {
	tests := []struct {
		name string
		ev   *pb.RunEvent
		want string
	}{
		{"queued behind a run", &pb.RunEvent{Kind: "queued", Json: `{"position":2,"behind":"r1"}`}, "queued: position 2 behind run r1"},
		{"queued for a member", &pb.RunEvent{Kind: "queued", Json: `{"position":1}`}, "queued: position 1"},
		{"bad position from the wire", &pb.RunEvent{Kind: "queued", Json: `{"position":0}`}, "queued (unreadable: queued event: position 0"},
		{"lease", &pb.RunEvent{Kind: "lease", Json: `{"gpunodes":["g1"],"agents":["a1","a2"]}`}, "lease: gpunode g1; agents a1, a2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := describeEvent(tt.ev); !strings.HasPrefix(got, tt.want) {
				t.Errorf("describeEvent = %q, want it to start with %q", got, tt.want)
			}
		})
	}
}

// TestRunsLimitKeepsTheNewestDone checks --limit: the newest done runs
// first, at most the limit, every queued and running run kept, and a
// negative limit refused naming it.
func TestRunsLimitKeepsTheNewestDone(t *testing.T) {
	runs := []*pb.RunInfo{
		{RunId: "old", State: "done", EndUnixNano: 1},
		{RunId: "newest", State: "done", EndUnixNano: 3},
		{RunId: "mid", State: "done", EndUnixNano: 2},
		{RunId: "running", State: "running"},
		{RunId: "waiting", State: "queued", Position: 1},
	}
	var ids []string
	for _, r := range newestDone(runs, 2) {
		ids = append(ids, r.GetRunId())
	}
	if got := strings.Join(ids, ","); got != "newest,mid,running,waiting" {
		t.Errorf("--limit 2 lists %s", got)
	}
	if got := len(newestDone(runs, 0)); got != 5 {
		t.Errorf("--limit 0 lists %d runs, want 5", got)
	}
	err := run(t.Context(), []string{"runs", "--coordinator", "127.0.0.1:1", "--limit", "-1"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--limit -1") {
		t.Errorf("--limit -1: %v, want an error naming it", err)
	}
}
