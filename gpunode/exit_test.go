package gpunode

import (
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSupervisorReportsUnexpectedExitOnly kills or stops a ready engine in
// the ways a run sees: an exit of its own (here SIGKILL from outside) is
// published with its signal, uptime and log tail; a StopEngine, a restart
// and Close are expected and publish nothing.
func TestSupervisorReportsUnexpectedExitOnly(t *testing.T) {
	tests := []struct {
		name string
		// end ends the engine started as pid.
		end      func(t *testing.T, n *Node, pid int)
		wantExit bool
	}{
		{
			name: "sigkill from outside",
			end: func(t *testing.T, _ *Node, pid int) {
				if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
					t.Fatal(err)
				}
			},
			wantExit: true,
		},
		{
			name: "sigterm from outside",
			end: func(t *testing.T, _ *Node, pid int) {
				if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
					t.Fatal(err)
				}
			},
			wantExit: true,
		},
		{
			name: "StopEngine",
			end: func(t *testing.T, n *Node, _ int) {
				if _, err := n.StopEngine(t.Context(), 0); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "restart",
			end: func(t *testing.T, n *Node, _ int) {
				if _, err := n.StartEngine(t.Context(), StartSpec{Profile: "ready"}); err != nil {
					t.Fatal(err)
				}
			},
		},
		{
			name: "Close",
			end: func(t *testing.T, n *Node, _ int) {
				if err := n.Close(); err != nil {
					t.Fatal(err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			n := newTestNode(t, nil, "ready")
			exits, cancel := n.SubscribeExits()
			defer cancel()
			info, err := n.StartEngine(t.Context(), StartSpec{Profile: "ready"})
			if err != nil {
				t.Fatalf("StartEngine: %v", err)
			}
			ended := time.Now()
			tt.end(t, n, info.PID)
			if !tt.wantExit {
				select {
				case ex := <-exits:
					t.Fatalf("an expected stop was published as an exit: %+v", ex)
				case <-time.After(time.Second):
				}
				return
			}
			select {
			case ex := <-exits:
				if lag := time.Since(ended); lag > 2*time.Second {
					t.Errorf("exit published %s after the kill, want within 2 s", lag)
				}
				if ex.PID != info.PID {
					t.Errorf("exit pid %d, want %d", ex.PID, info.PID)
				}
				want := map[string]string{"sigkill from outside": "SIGKILL", "sigterm from outside": ""}[tt.name]
				if tt.name == "sigkill from outside" && (ex.Signal != want || ex.ExitCode != -1 || !strings.Contains(ex.Status, "killed")) {
					t.Errorf("exit %+v: want signal SIGKILL, exit code -1, status naming the kill", ex)
				}
				if tt.name == "sigterm from outside" && (ex.Signal != "" || ex.ExitCode != 0) {
					// The fake handles SIGTERM and exits 0 on its own.
					t.Errorf("exit %+v: want exit code 0 and no signal (the fake handles SIGTERM)", ex)
				}
				if ex.Uptime <= 0 || ex.Uptime > time.Minute {
					t.Errorf("uptime %s, want the engine's short life", ex.Uptime)
				}
				if !slices.ContainsFunc(ex.LogTail, func(l string) bool { return strings.Contains(l, "Application startup complete.") }) {
					t.Errorf("log tail %q lacks the engine's last lines", ex.LogTail)
				}
				if len(ex.LogTail) > exitTailLines {
					t.Errorf("log tail has %d lines, want at most %d", len(ex.LogTail), exitTailLines)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("no exit published 5 s after the engine died")
			}
			if pid := n.enginePID(); pid != 0 {
				t.Errorf("enginePID() = %d after the exit, want 0", pid)
			}
		})
	}
}
