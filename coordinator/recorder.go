package coordinator

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/ttftlab/ttftlab/coordinator/results"
	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
	"github.com/ttftlab/ttftlab/internal/hdr"
)

// recorder appends a run's events to its log and passes them on, and owns
// the gpunode sample stream of the run. It is safe for concurrent use.
type recorder struct {
	log    *eventLog
	emit   func(results.Event)
	logger *slog.Logger
	// observer, when set, sees every event but samples, as runID.
	observer Observer
	runID    string

	emitMu     sync.Mutex
	mu         sync.Mutex
	sampleCond chan struct{} // closed and replaced on every sample

	// cancel ends the run's context with the failure as its cause.
	cancel  context.CancelCauseFunc
	failMu  sync.Mutex
	failure error

	// dec decodes the agents' histograms as they arrive (checkInterval),
	// reusing its buffers across reports.
	dec hdr.Decoder

	// sched is the run's entry in the coordinator's scheduler, through
	// which waitForMembers leases its gpunode and agents.
	sched *schedRun
}

// fail records why the run failed and cancels the run, which ends every
// agent's run stream (the agents' lease) at once. The first failure wins.
func (r *recorder) fail(err error) {
	r.failMu.Lock()
	if r.failure != nil {
		r.failMu.Unlock()
		return
	}
	r.failure = err
	r.failMu.Unlock()
	r.logger.Error("run failed", "err", err)
	if r.cancel != nil {
		r.cancel(err)
	}
}

// failed returns the failure fail recorded, or nil.
func (r *recorder) failed() error {
	r.failMu.Lock()
	defer r.failMu.Unlock()
	return r.failure
}

// record appends an event; a disk error is logged and kept by the event
// log, which fails the run when it is closed or rendered.
func (r *recorder) record(kind string, v any) {
	ev, err := r.log.Append(kind, v)
	if err != nil {
		r.logger.Error("event not saved", "kind", kind, "err", err)
	}
	if r.emit != nil && kind != results.EventSample {
		r.emitMu.Lock()
		r.emit(ev)
		r.emitMu.Unlock()
	}
	if r.observer != nil && kind != results.EventSample {
		r.observer.RunEvent(r.runID, kind, v)
	}
	if so, ok := r.observer.(SampleObserver); ok && kind == results.EventSample {
		if s, ok := v.(*pb.HostSample); ok {
			so.RunSample(r.runID, s)
		}
	}
}

func (r *recorder) mark(name string) { r.record(results.EventMark, results.Mark{Name: name}) }

// startSampling streams the gpunode's samples into the log until the
// returned stop function is called; stop waits for the stream to end.
//
// The stream is also the run's news of its gpunode. An engine exit it
// reports is recorded (engine_exit, with the exit status, uptime and log
// tail) and fails the run at once. When the run depends on the gpunode
// (critical: it runs the engine under test), a stream that breaks or ends
// records gpunode_lost and fails the run; otherwise it is a warning.
func (r *recorder) startSampling(ctx context.Context, gn GPUNode, gpuName string, critical bool, interval time.Duration) (stop func()) {
	sctx, cancel := context.WithCancel(ctx)
	r.mu.Lock()
	r.sampleCond = make(chan struct{})
	r.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := gn.StreamSamples(sctx, interval, func(m *pb.StreamSamplesResponse) {
			if ex := m.GetEngineExit(); ex != nil {
				r.record(results.EventEngineExit, results.EngineExit{GPUNode: gpuName, Exit: ex})
				r.fail(&EngineExitError{GPUNode: gpuName, Exit: ex})
				return
			}
			r.record(results.EventSample, m.GetSample())
			r.mu.Lock()
			close(r.sampleCond)
			r.sampleCond = make(chan struct{})
			r.mu.Unlock()
		})
		if sctx.Err() != nil {
			return
		}
		if err == nil {
			err = errors.New("the gpunode closed its sample stream")
		}
		if critical {
			r.gpunodeLost(gpuName, fmt.Errorf("sample stream broke: %w", err))
			return
		}
		r.record(results.EventWarning, results.Warning{Message: "gpunode sample stream ended: " + err.Error()})
	}()
	return func() {
		cancel()
		wg.Wait()
	}
}

// gpunodeLost records a lost gpunode and fails the run.
func (r *recorder) gpunodeLost(name string, err error) {
	if r.failed() != nil {
		return // already failing: the first cause is the one reported
	}
	r.record(results.EventGPUNodeLost, results.GPUNodeLost{GPUNode: name, Error: err.Error()})
	r.fail(&GPUNodeLostError{GPUNode: name, Err: err})
}

// memberPoll is how often watchMember re-reads the membership view besides
// its change signal.
const memberPoll = 200 * time.Millisecond

// watchMember fails the run when memberlist no longer lists the gpunode
// name as alive or suspect, until the returned stop is called; stop waits
// for the watcher to end.
func (r *recorder) watchMember(ctx context.Context, members Members, name string) (stop func()) {
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(memberPoll)
		defer t.Stop()
		for {
			state := "gone from the membership list"
			for _, m := range members.Members() {
				if m.Name == name {
					state = m.State
				}
			}
			if state != "alive" && state != "suspect" {
				if wctx.Err() == nil {
					r.gpunodeLost(name, fmt.Errorf("memberlist marks it %s", state))
				}
				return
			}
			select {
			case <-wctx.Done():
				return
			case <-members.Changes():
			case <-t.C:
			}
		}
	}()
	return func() {
		cancel()
		wg.Wait()
	}
}

// nextSample waits for a sample taken after now, so that a mark is followed
// by a sample that reflects it.
func (r *recorder) nextSample(ctx context.Context, wait time.Duration) {
	r.mu.Lock()
	ch := r.sampleCond
	r.mu.Unlock()
	if ch == nil {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	for i := 0; i < 2; i++ { // two ticks: the first may have been taken before the mark.
		select {
		case <-ch:
		case <-ctx.Done():
			return
		case <-t.C:
			return
		}
		r.mu.Lock()
		ch = r.sampleCond
		r.mu.Unlock()
	}
}

// checkInterval validates a report's histograms as it arrives and records a
// warning event for a bad one, its text starting with prefix; the report
// itself is recorded as received, and the results builders leave its
// histograms out with the same warning. It returns the decoded histograms
// (Set nil for a bad report, Err saying why), so that a caller or an
// observer that merges them live does not decode them twice.
func (r *recorder) checkInterval(prefix string, rep *pb.IntervalReport) *results.Checked {
	set, err := results.ReportHistogramsWith(&r.dec, rep)
	if err != nil {
		r.logger.Warn("interval histograms refused", "agent", rep.GetAgentId(), "seq", rep.GetSeq(), "err", err)
		r.record(results.EventWarning, results.Warning{Message: prefix + results.BadHistogramsWarning(err)})
	}
	return &results.Checked{Set: set, Err: err}
}
