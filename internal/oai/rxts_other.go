//go:build !linux

package oai

import (
	"errors"
	"net"
)

// rxReader is unavailable off Linux: every read is stamped in user space.
type rxReader struct{}

// rxSupported reports whether this platform can take kernel receive
// timestamps at all.
const rxSupported = false

// newRxReader returns nil: no kernel receive timestamps here.
func newRxReader(net.Conn) *rxReader { return nil }

// read is never called: newRxReader returns nil.
func (*rxReader) read([]byte) (n int, sec, nsec int64, stamped bool, err error) {
	return 0, 0, 0, false, errors.New("oai: kernel receive timestamps are not supported on this platform")
}
