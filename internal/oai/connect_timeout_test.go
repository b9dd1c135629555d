//go:build linux

package oai

import (
	"context"
	"fmt"
	"net"
	"syscall"
	"testing"
	"time"
)

// fullListener returns the address of a socket that listens with a backlog
// of zero and never accepts: once its queue holds a connection, the kernel
// drops further SYNs, so a connect hangs until the client's timeout.
func fullListener(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the accept queue.
	for i := 0; i < 4; i++ {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err != nil {
			break
		}
		t.Cleanup(func() { c.Close() })
	}
	return addr
}

func TestConnectTimeoutIsItsOwnKind(t *testing.T) {
	addr := fullListener(t)
	c := newClient(t, Config{MaxConns: 1, ConnectTimeout: 150 * time.Millisecond})
	defer c.Close()
	start := time.Now()
	res := c.Do(context.Background(), Request{BaseURL: "http://" + addr, Model: "m", Prompt: "p", MaxTokens: 1, Stream: true})
	if res.Err == nil {
		t.Fatal("request to a full listener succeeded")
	}
	if res.Err.Kind != KindConnectTimeout {
		t.Skipf("this kernel did not hold the SYN (kind %s: %v); connect_timeout cannot be provoked here", res.Err.Kind, res.Err)
	}
	if d := time.Since(start); d < 150*time.Millisecond || d > 2*time.Second {
		t.Errorf("connect timed out after %v, want about the 150 ms connect timeout", d)
	}
}
