package agent

import (
	"context"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/ttftlab/ttftlab/internal/oai"
)

// countingObserver records what an Observer is told.
type countingObserver struct {
	mu       sync.Mutex
	inFlight int
	maxIn    int
	ends     []RequestEnd
}

func (o *countingObserver) RequestStarted() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.inFlight++
	o.maxIn = max(o.maxIn, o.inFlight)
}

func (o *countingObserver) RequestEnded(e RequestEnd) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.inFlight--
	o.ends = append(o.ends, e)
}

// The Observer sees every request start and end, with its dispatch lag,
// in step with the reports: an open loop with requests ten times longer
// than the gap between arrivals has ten in flight at once.
func TestObserverSeesEveryRequest(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFakeEngine(time.Second, 10*time.Millisecond, 3, 0)
		obs := &countingObserver{}
		cfg := DefaultConfig()
		cfg.NewSender = func(oai.Config) (Sender, error) { return f, nil }
		cfg.Observer = obs
		spec := loadSpec(LoadModel{Kind: LoadConstant, Rate: 10, Requests: 10})
		reps, err := collect(t, context.Background(), New(cfg, nil), spec)
		if err != nil {
			t.Fatal(err)
		}
		ok := 0
		for _, r := range reps {
			ok += int(r.OK)
		}
		if len(obs.ends) != 10 || ok != 10 || obs.inFlight != 0 {
			t.Fatalf("observer saw %d ends and %d left in flight; reports count %d successes; want 10, 0 and 10", len(obs.ends), obs.inFlight, ok)
		}
		if obs.maxIn != 10 {
			t.Errorf("observer saw at most %d in flight, want the 10 of an open loop with 1 s requests 100 ms apart", obs.maxIn)
		}
		for _, e := range obs.ends {
			if !e.Sent || e.ErrKind != "" || e.Interrupted || e.DispatchLag != 0 {
				t.Errorf("request end %+v: want a sent success with no lag in virtual time", e)
			}
		}
	})
}
