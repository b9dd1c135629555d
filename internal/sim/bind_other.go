//go:build !unix

package sim

import (
	"fmt"
	"net"
	"strconv"
)

// boundSocket reserves nothing on platforms without bind-before-listen
// support: the port is only taken when listen is called, and port 0 is only
// resolved then.
type boundSocket struct {
	addr *net.TCPAddr
}

func bindSocket(host string, port int) (*boundSocket, error) {
	ta, err := net.ResolveTCPAddr("tcp", net.JoinHostPort(host, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("resolve --host %q: %w", host, err)
	}
	return &boundSocket{addr: ta}, nil
}

func (b *boundSocket) listen() (net.Listener, error) {
	ln, err := net.Listen("tcp", b.addr.String())
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", b.addr, err)
	}
	b.addr = ln.Addr().(*net.TCPAddr)
	return ln, nil
}

func (b *boundSocket) close() {}
