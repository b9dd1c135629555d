package oai

import "time"

// First-token clocks: where Result.FirstToken's time came from
// (Result.FirstTokenClock), and the values of Config.RxTimestamps.
const (
	// ClockKernelRx is the kernel's receive timestamp of the newest byte
	// of the socket read that brought the first token (h1 on Linux: the
	// time the bytes reached the client's socket, before the client was
	// scheduled to read them).
	ClockKernelRx = "kernel_rx"
	// ClockReadReturn is the time the read that brought the first token
	// returned to user space (h1 elsewhere, or with kernel timestamps off)
	// or the time the transport handed the bytes on (net/http, h2).
	ClockReadReturn = "read_return"
)

// kernelArrival converts a kernel receive timestamp (kernel: CLOCK_REALTIME,
// no monotonic reading) to the monotonic clock of now, read right after the
// read returned: arrival = now − (now_real − kernel_real). It is clamped to
// never be after now (a wall clock stepped back between the two readings)
// and never before floor (a wall clock stepped forward, or bytes that cannot
// have arrived before the request was written); a zero floor sets no lower
// bound.
func kernelArrival(now, kernel, floor time.Time) time.Time {
	lag := now.Sub(kernel) // wall clocks only: kernel has no monotonic reading
	if lag < 0 {
		lag = 0
	}
	at := now.Add(-lag)
	if !floor.IsZero() && at.Before(floor) {
		at = floor
	}
	if at.After(now) {
		at = now
	}
	return at
}
