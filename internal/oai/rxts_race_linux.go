//go:build linux && race

package oai

import "syscall"

// raceBuild says whether this is a race-detector build (whose annotations
// allocate).
const raceBuild = true

// raceAcquireIO tells the race detector what a read through the net package
// tells it: that this read happens after the writes to sockets that came
// before it (internal/poll reads through syscall.Read, which does so). A
// read of no bytes is that call, without touching the socket's data.
func raceAcquireIO(fd uintptr) {
	var b [1]byte
	_, _ = syscall.Read(int(fd), b[:0])
}
