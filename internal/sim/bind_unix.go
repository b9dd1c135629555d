//go:build unix

package sim

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"syscall"
)

// boundSocket is a TCP socket that is bound but not yet listening, as vLLM
// 0.6.2+ holds its port during startup: the port is taken (a second server
// fails at once) yet connections are refused until listen.
type boundSocket struct {
	fd   int
	addr *net.TCPAddr
}

// bindSocket binds host:port without listening. SO_REUSEADDR is set as
// vLLM does; SO_REUSEPORT is not, so two simulators cannot share a port.
func bindSocket(host string, port int) (*boundSocket, error) {
	ta, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("resolve --host %q: %w", host, err)
	}
	ip := ta.IP
	if ip == nil {
		ip = net.IPv4zero
	}
	var (
		family int
		sa     syscall.Sockaddr
	)
	if ip4 := ip.To4(); ip4 != nil {
		family = syscall.AF_INET
		s := &syscall.SockaddrInet4{Port: port}
		copy(s.Addr[:], ip4)
		sa = s
	} else {
		family = syscall.AF_INET6
		s := &syscall.SockaddrInet6{Port: port}
		copy(s.Addr[:], ip.To16())
		sa = s
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM, 0)
	if err != nil {
		return nil, fmt.Errorf("socket: %w", err)
	}
	syscall.CloseOnExec(fd)
	if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("setsockopt SO_REUSEADDR: %w", err)
	}
	if err := syscall.Bind(fd, sa); err != nil {
		syscall.Close(fd)
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("OSError: [Errno %d] Address already in use: %w", int(syscall.EADDRINUSE), err)
		}
		return nil, fmt.Errorf("bind %s: %w", ta, err)
	}
	got, err := syscall.Getsockname(fd)
	if err != nil {
		syscall.Close(fd)
		return nil, fmt.Errorf("getsockname: %w", err)
	}
	switch s := got.(type) {
	case *syscall.SockaddrInet4:
		port = s.Port
	case *syscall.SockaddrInet6:
		port = s.Port
	}
	return &boundSocket{fd: fd, addr: &net.TCPAddr{IP: ip, Port: port, Zone: ta.Zone}}, nil
}

// listen starts listening and hands the socket to a net.Listener; the
// boundSocket must not be used afterwards.
func (b *boundSocket) listen() (net.Listener, error) {
	if err := syscall.Listen(b.fd, syscall.SOMAXCONN); err != nil {
		b.close()
		return nil, fmt.Errorf("listen %s: %w", b.addr, err)
	}
	f := os.NewFile(uintptr(b.fd), "ttftlab-sim-listener")
	b.fd = -1
	defer f.Close()
	ln, err := net.FileListener(f)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", b.addr, err)
	}
	return ln, nil
}

// close releases the socket if listen has not taken it.
func (b *boundSocket) close() {
	if b.fd >= 0 {
		syscall.Close(b.fd)
		b.fd = -1
	}
}
