package gpunode

import (
	"syscall"
	"testing"
	"time"
)

// EngineStatus follows the engine: stopped, ready with its pid, exited
// after a kill from outside (counted as an unexpected exit), and a restart
// counts as a start.
func TestEngineStatusFollowsTheEngine(t *testing.T) {
	n := newTestNode(t, nil, "ready")
	exits, cancel := n.SubscribeExits()
	defer cancel()
	want := func(step string, st EngineStatus, state string, starts, exitN uint64, running bool) {
		t.Helper()
		if st.State != state || st.Starts != starts || st.Exits != exitN || (st.PID > 0) != running || (st.Uptime > 0) != running {
			t.Errorf("%s: status %+v, want state %s, %d starts, %d exits, running %v", step, st, state, starts, exitN, running)
		}
	}
	want("before any start", n.EngineStatus(), EngineStopped, 0, 0, false)
	info, err := n.StartEngine(t.Context(), StartSpec{Profile: "ready"})
	if err != nil {
		t.Fatal(err)
	}
	st := n.EngineStatus()
	want("ready", st, EngineReady, 1, 0, true)
	if st.PID != info.PID || st.Profile != "ready" {
		t.Errorf("ready: pid %d profile %q, want %d and ready", st.PID, st.Profile, info.PID)
	}
	if err := syscall.Kill(info.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-exits:
	case <-time.After(10 * time.Second):
		t.Fatal("no exit published within 10 s of SIGKILL")
	}
	want("killed from outside", n.EngineStatus(), EngineExited, 1, 1, false)
	if _, err := n.StartEngine(t.Context(), StartSpec{Profile: "ready"}); err != nil {
		t.Fatal(err)
	}
	want("restarted", n.EngineStatus(), EngineReady, 2, 1, true)
	if _, err := n.StopEngine(t.Context(), 0); err != nil {
		t.Fatal(err)
	}
	want("stopped", n.EngineStatus(), EngineStopped, 2, 1, false)
}
