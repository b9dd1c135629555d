//go:build linux

package oai

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rxReader reads a TCP socket with recvmsg and returns, with the bytes, the
// kernel's receive timestamp of the newest of them: SO_TIMESTAMPNS is set on
// the socket, and TCP hands that time back in an SCM_TIMESTAMPNS control
// message (tcp_recv_timestamp, Linux 4.13 and later). The time is
// CLOCK_REALTIME; kernelArrival converts it to the monotonic clock.
//
// Reads go through syscall.RawConn.Read, so the runtime's poller does the
// waiting and the connection's deadlines (h1's cancellation) apply as for
// net.Conn.Read. Everything a read needs lives in the rxReader, and the
// callback is bound once, so that a read allocates nothing. Only the
// connection's reading goroutine uses it.
type rxReader struct {
	conn net.Conn
	rc   syscall.RawConn
	fn   func(fd uintptr) bool // r.recv, bound once

	msg unix.Msghdr
	iov unix.Iovec
	oob [64]byte

	// Results of the last recv.
	n         int
	sec, nsec int64
	stamped   bool
	err       error
}

// rxSupported reports whether this platform can take kernel receive
// timestamps at all.
const rxSupported = true

// newRxReader enables receive timestamps on nc, which must be a TCP
// connection; it returns nil when nc is not one or the kernel refuses the
// option, and the caller then stamps reads in user space.
func newRxReader(nc net.Conn) *rxReader {
	tc, ok := nc.(*net.TCPConn)
	if !ok {
		return nil
	}
	if unsafe.Sizeof(unix.Timespec{}) != 16 {
		return nil // 32-bit timespec: parseRxCmsg reads 64-bit fields only
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil || serr != nil {
		return nil
	}
	r := &rxReader{conn: nc, rc: rc}
	r.fn = r.recv
	return r
}

// read reads into p; stamped says whether the kernel returned a receive
// timestamp (sec, nsec: CLOCK_REALTIME) for the bytes. Errors are reported
// as net.Conn.Read reports them (a *net.OpError "read", io.EOF at the end).
func (r *rxReader) read(p []byte) (n int, sec, nsec int64, stamped bool, err error) {
	if len(p) == 0 {
		return 0, 0, 0, false, nil
	}
	r.iov.Base = &p[0]
	r.iov.SetLen(len(p))
	r.n, r.stamped, r.err = 0, false, nil
	rerr := r.rc.Read(r.fn)
	r.iov.Base = nil // keep no reference to p
	if rerr != nil {
		// RawConn reports "raw-read" around the poller's error (deadline
		// exceeded, connection closed): report it as a read, as
		// net.Conn.Read does.
		var oe *net.OpError
		if errors.As(rerr, &oe) {
			rerr = oe.Err
		}
		return 0, 0, 0, false, r.opError(rerr)
	}
	if r.err != nil {
		return 0, 0, 0, false, r.opError(r.err)
	}
	if r.n == 0 {
		return 0, 0, 0, false, io.EOF
	}
	return r.n, r.sec, r.nsec, r.stamped, nil
}

func (r *rxReader) opError(err error) error {
	return &net.OpError{Op: "read", Net: "tcp", Source: r.conn.LocalAddr(), Addr: r.conn.RemoteAddr(), Err: err}
}

// recv is the RawConn.Read callback: one recvmsg, or false to wait for the
// socket to become readable.
func (r *rxReader) recv(fd uintptr) bool {
	r.msg.Iov = &r.iov
	r.msg.SetIovlen(1)
	r.msg.Control = &r.oob[0]
	r.msg.SetControllen(len(r.oob))
	r.msg.Flags = 0
	for {
		n, _, errno := unix.Syscall(unix.SYS_RECVMSG, fd, uintptr(unsafe.Pointer(&r.msg)), uintptr(unix.MSG_CMSG_CLOEXEC))
		switch errno {
		case 0:
		case unix.EINTR:
			continue
		case unix.EAGAIN:
			return false
		default:
			r.err = os.NewSyscallError("recvmsg", errno)
			return true
		}
		r.n = int(n)
		raceAcquireIO(fd)
		if cl := int(r.msg.Controllen); cl > 0 && cl <= len(r.oob) {
			r.sec, r.nsec, r.stamped = parseRxCmsg(r.oob[:cl])
		}
		return true
	}
}

// parseRxCmsg finds a receive timestamp (SCM_TIMESTAMPNS, old or new
// layout: two 64-bit fields on 64-bit platforms) in recvmsg's control
// bytes. The bytes are checked before they are read: a header whose length
// runs past the buffer ends the scan, and a timestamp that is zero or whose
// nanoseconds are out of range is no timestamp.
func parseRxCmsg(oob []byte) (sec, nsec int64, ok bool) {
	const lenSize = unix.SizeofCmsghdr - 8 // size_t cmsg_len
	hdr := unix.CmsgSpace(0)
	ne := binary.NativeEndian
	for len(oob) >= hdr {
		var l uint64
		if lenSize == 8 {
			l = ne.Uint64(oob)
		} else {
			l = uint64(ne.Uint32(oob))
		}
		level := int32(ne.Uint32(oob[lenSize:]))
		typ := int32(ne.Uint32(oob[lenSize+4:]))
		if l < uint64(hdr) || l > uint64(len(oob)) {
			return 0, 0, false
		}
		data := oob[hdr:l]
		if level == unix.SOL_SOCKET && (typ == unix.SCM_TIMESTAMPNS || typ == unix.SO_TIMESTAMPNS_NEW) && len(data) >= 16 {
			s, ns := int64(ne.Uint64(data)), int64(ne.Uint64(data[8:]))
			if (s > 0 || ns > 0) && s >= 0 && ns >= 0 && ns < 1e9 {
				sec, nsec, ok = s, ns, true
			}
		}
		step := unix.CmsgSpace(int(l) - hdr)
		if step > len(oob) {
			break
		}
		oob = oob[step:]
	}
	return sec, nsec, ok
}
