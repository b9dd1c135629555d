package coordinator

import (
	"context"
	"log/slog"
	"sync"
	"time"

	pb "github.com/ttftlab/ttftlab/internal/gen/ttftlab/v1"
)

// recorder appends a run's events to its log and passes them on, and owns
// the gpunode sample stream of the run. It is safe for concurrent use.
type recorder struct {
	log    *eventLog
	emit   func(Event)
	logger *slog.Logger

	emitMu     sync.Mutex
	mu         sync.Mutex
	sampleCond chan struct{} // closed and replaced on every sample
}

// record appends an event; a disk error is logged and kept by the event
// log, which fails the run when it is closed or rendered.
func (r *recorder) record(kind string, v any) {
	ev, err := r.log.Append(kind, v)
	if err != nil {
		r.logger.Error("event not saved", "kind", kind, "err", err)
	}
	if r.emit != nil && kind != EventSample {
		r.emitMu.Lock()
		r.emit(ev)
		r.emitMu.Unlock()
	}
}

func (r *recorder) mark(name string) { r.record(EventMark, markData{Name: name}) }

// startSampling streams the gpunode's samples into the log until the
// returned stop function is called; stop waits for the stream to end.
func (r *recorder) startSampling(ctx context.Context, gn GPUNode, interval time.Duration) (stop func()) {
	sctx, cancel := context.WithCancel(ctx)
	r.mu.Lock()
	r.sampleCond = make(chan struct{})
	r.mu.Unlock()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		err := gn.StreamSamples(sctx, interval, func(s *pb.HostSample) {
			r.record(EventSample, s)
			r.mu.Lock()
			close(r.sampleCond)
			r.sampleCond = make(chan struct{})
			r.mu.Unlock()
		})
		if err != nil && sctx.Err() == nil {
			r.record(EventWarning, map[string]string{"message": "gpunode sample stream ended: " + err.Error()})
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
