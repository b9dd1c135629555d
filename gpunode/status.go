package gpunode

import "time"

// Engine states, as EngineStatus reports them.
const (
	EngineStopped  = "stopped"  // no engine
	EngineStarting = "starting" // spawned, not ready yet
	EngineReady    = "ready"    // answering /v1/models
	EngineExited   = "exited"   // the process ended and was not restarted
)

// EngineStatus is the engine's state at one instant, for live metrics.
type EngineStatus struct {
	// State is EngineStopped, EngineStarting, EngineReady or EngineExited.
	State   string
	Profile string
	// PID is the engine's pid, 0 when none runs.
	PID int
	// Uptime is the time since the spawn while the process runs, else 0.
	Uptime time.Duration
	// Starts counts engine spawns since the node started; Exits counts the
	// engine's unexpected exits (not asked for by a stop or a restart).
	Starts, Exits uint64
}

// EngineStatus returns the engine's state. It does not block on a start.
func (n *Node) EngineStatus() EngineStatus {
	st := EngineStatus{State: EngineStopped, Starts: n.starts.Load(), Exits: n.exits.Load()}
	n.mu.Lock()
	defer n.mu.Unlock()
	e := n.eng
	if e == nil {
		return st
	}
	st.Profile = e.profile.Name
	switch {
	case e.proc.hasExited():
		st.State = EngineExited
	case e.ready:
		st.State = EngineReady
	default:
		st.State = EngineStarting
	}
	if st.State != EngineExited {
		st.PID = e.proc.pid
		st.Uptime = time.Since(e.proc.spawn)
	}
	return st
}
