package agent

import "time"

// Observer watches an agent's requests live, for example to export them as
// metrics (internal/metrics). Its methods are called from the request
// goroutines of every run, concurrently: they must be safe for concurrent
// use and must not block.
type Observer interface {
	// RequestStarted is called when a request is handed to the sender.
	RequestStarted()
	// RequestEnded is called once for each started request when it ends.
	RequestEnded(RequestEnd)
}

// RequestEnd is how one request ended.
type RequestEnd struct {
	// Warmup marks a warm-up request.
	Warmup bool
	// Interrupted marks a request cut off by the run's end (neither a
	// success nor an error).
	Interrupted bool
	// ErrKind is the error kind of a failed request ("" for a success).
	ErrKind string
	// Sent says whether the request reached the client (DispatchLag is set).
	Sent bool
	// DispatchLag is t_send − t_sched.
	DispatchLag time.Duration
}
