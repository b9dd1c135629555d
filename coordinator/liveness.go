package coordinator

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

// AgentSilenceLimit is how long an agent's run stream may carry nothing —
// no interval report and no heartbeat — before the coordinator marks the
// agent lost and cancels its stream. Agents send a heartbeat every 500 ms
// (agent.HeartbeatPeriod), so 1.5 s is three missed beats: a frozen agent is
// found within 2 s, which gRPC keepalive (floored at 10 s by grpc-go) cannot
// do.
const AgentSilenceLimit = 1500 * time.Millisecond

// AgentFirstMessageLimit bounds the wait for a run stream's first message
// (the agent's first heartbeat goes out as soon as it accepts the call).
// Until then the stream is still being set up: a connection to dial, the
// call to route, and with dozens of agents starting at once on a busy host
// that alone took longer than AgentSilenceLimit (TestScaleSweep50AgentsE2E).
// A dead agent's call fails at once; this only bounds a stuck set-up.
const AgentFirstMessageLimit = 5 * time.Second

// EngineExitError fails a run whose engine exited on its own.
type EngineExitError struct {
	GPUNode string
	Exit    *pb.EngineExit
}

// exitErrorTailLines is how many log lines the error message quotes; the
// engine_exit event keeps the whole tail.
const exitErrorTailLines = 5

func (e *EngineExitError) Error() string {
	x := e.Exit
	how := fmt.Sprintf("exit code %d", x.GetExitCode())
	if x.GetSignal() != "" {
		how = "killed by " + clipLine(x.GetSignal(), 32)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "engine on gpunode %s exited unexpectedly (%s, pid %d) after %.1f s up", e.GPUNode, how, x.GetPid(),
		float64(x.GetUptimeMs())/1000)
	tail := x.GetLogTail()
	if n := len(tail); n > exitErrorTailLines {
		tail = tail[n-exitErrorTailLines:]
	}
	if len(tail) > 0 {
		b.WriteString("; last log lines: ")
		for i, l := range tail {
			if i > 0 {
				b.WriteString(" | ")
			}
			b.WriteString(clipLine(l, 200))
		}
	}
	return b.String()
}

// GPUNodeLostError fails a run whose gpunode went away.
type GPUNodeLostError struct {
	GPUNode string
	Err     error
}

func (e *GPUNodeLostError) Error() string {
	return fmt.Sprintf("gpunode %s lost: %v", e.GPUNode, e.Err)
}

func (e *GPUNodeLostError) Unwrap() error { return e.Err }

// AgentLostError is what a watched run stream returns when the agent went
// silent for longer than the silence limit.
type AgentLostError struct {
	Agent   string
	Silence time.Duration
}

func (e *AgentLostError) Error() string {
	return fmt.Sprintf("agent %s lost: no report or heartbeat for %s (frozen, or cut off from the coordinator); its stream was cancelled",
		e.Agent, e.Silence)
}

// clipLine keeps one line of untrusted text short and on one line.
func clipLine(s string, n int) string {
	s = strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\n", " ")
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}

// validateProbeResponse checks one message of an agent's run stream, which
// is untrusted: exactly one of report and heartbeat must be set.
func validateProbeResponse(m *pb.RunProbeResponse) error {
	if (m.GetReport() == nil) == (m.GetHeartbeat() == nil) {
		return errors.New("agent sent a run-stream message with neither or both of report and heartbeat: is it another ttftlab version?")
	}
	return nil
}

// validateSamplesResponse checks one message of a gpunode's sample stream.
func validateSamplesResponse(m *pb.StreamSamplesResponse) error {
	if (m.GetSample() == nil) == (m.GetEngineExit() == nil) {
		return errors.New("gpunode sent a sample-stream message with neither or both of sample and engine_exit: is it another ttftlab version?")
	}
	return nil
}

// watchedRun is the delivery of one agent's run stream, as the watchdog
// saw it.
type watchedRun struct {
	Intervals int
	Requests  uint64 // ok + failed, warm-up included
	InFlight  uint32
}

// runWatched runs one segment on ag with a watchdog: a stream silent for
// longer than silence (no report, no heartbeat) is cancelled and the call
// returns an *AgentLostError. onReport is called for each report, in order,
// and never after the agent was declared lost, so a frozen agent that wakes
// up later cannot add to what was recorded. The watchdog's goroutine is
// joined before it returns.
func runWatched(ctx context.Context, ag Agent, agentName string, req *pb.RunProbeRequest, silence time.Duration, onReport func(*pb.IntervalReport) error) (watchedRun, error) {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu       sync.Mutex
		lastSeen = time.Now()
		heard    bool // a first message arrived
		lost     error
		got      watchedRun
	)
	done := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		t := time.NewTicker(max(silence/10, time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-sctx.Done():
				return
			case <-t.C:
				mu.Lock()
				limit := silence
				if !heard {
					limit = max(silence, AgentFirstMessageLimit)
				}
				if quiet := time.Since(lastSeen); quiet > limit && lost == nil {
					lost = &AgentLostError{Agent: agentName, Silence: limit}
					cancel(lost)
				}
				mu.Unlock()
			}
		}
	}()
	err := ag.RunProbe(sctx, req, func(m *pb.RunProbeResponse) error {
		mu.Lock()
		defer mu.Unlock()
		if lost != nil {
			return lost
		}
		lastSeen, heard = time.Now(), true
		rep := m.GetReport()
		if rep == nil {
			return nil // a heartbeat
		}
		got.Intervals++
		got.Requests += rep.GetRequestsOk() + rep.GetRequestsFailed()
		got.InFlight = rep.GetInFlight()
		err := onReport(rep)
		// The time spent recording the report (validation, the event log's
		// fsync, a busy host) is the coordinator's, not the agent's
		// silence: the agent's next message could not be read meanwhile.
		lastSeen = time.Now()
		return err
	})
	close(done)
	<-exited
	mu.Lock()
	defer mu.Unlock()
	if lost != nil {
		return got, lost
	}
	return got, err
}
