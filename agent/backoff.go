package agent

import (
	"time"

	"github.com/ttftlab/ttftlab/internal/oai"
)

// Backoff bounds for a closed-loop worker whose requests fail before any
// response: the first wait is at least backoffBase, none is longer than
// backoffMax.
const (
	backoffBase = 10 * time.Millisecond
	backoffMax  = time.Second
)

// Backoff is exponential backoff with decorrelated jitter (as in the AWS
// architecture blog's "Exponential Backoff And Jitter"): each wait is drawn
// uniformly from [Base, 3·previous wait], capped at Max, so waits grow about
// threefold per failure while workers that failed together spread apart.
// Reset starts over at Base. A Backoff is a pure function of its random
// source: with a fixed source it returns a fixed sequence. It is not safe
// for concurrent use; each worker owns one.
type Backoff struct {
	// Base is the shortest wait and the first wait's lower bound.
	Base time.Duration
	// Max caps every wait.
	Max time.Duration
	// Rand returns a uniform value in [0, 1).
	Rand func() float64

	prev time.Duration
}

// Next returns the wait before the next attempt after one more failure.
func (b *Backoff) Next() time.Duration {
	if b.prev < b.Base {
		b.prev = b.Base
	}
	hi := min(3*b.prev, b.Max)
	u := b.Rand()
	if u < 0 || u >= 1 || u != u {
		u = 0
	}
	d := b.Base + time.Duration(u*float64(hi-b.Base))
	d = min(max(d, b.Base), b.Max)
	b.prev = d
	return d
}

// Reset forgets past failures: the next wait starts again from Base.
func (b *Backoff) Reset() { b.prev = 0 }

// failedBeforeResponse reports whether res failed before any response
// header arrived (connect refused or timed out, reset, an unsendable
// request): the failures a closed-loop worker backs off after. A request
// the run itself cancelled does not count.
func failedBeforeResponse(res *oai.Result) bool {
	return res.Err != nil && res.Header.IsZero() && res.Err.Kind != oai.KindCanceled
}
