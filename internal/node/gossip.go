package node

import (
	"fmt"
	"net"
	"strconv"
	"strings"
)

// parseGossipAddr splits --gossip-addr into host and port, and refuses a
// non-loopback address without a gossip key.
func parseGossipAddr(addr string, haveKey bool) (string, int, error) {
	host, portStr, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("--gossip-addr %q is not host:port: %w", addr, err)
	}
	if !haveKey && !isLoopback(host) {
		return "", 0, fmt.Errorf("--gossip-addr %s is not loopback: give every member the same --gossip-key-file, or anyone who reaches it could join as a gpunode or agent", addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("--gossip-addr %q: port must be 0..65535", addr)
	}
	return host, port, nil
}

// ParseJoin splits --join into gossip addresses, each host:port.
func ParseJoin(join string) ([]string, error) {
	if strings.TrimSpace(join) == "" {
		return nil, nil
	}
	var out []string
	for _, a := range strings.Split(join, ",") {
		a = strings.TrimSpace(a)
		host, portStr, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			return nil, fmt.Errorf("--join %q: %q is not a gossip address host:port: give the coordinator's --gossip-addr, e.g. --join 10.0.0.5:7946", join, a)
		}
		if p, err := strconv.Atoi(portStr); err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("--join %q: %q has port %q: use 1..65535", join, a, portStr)
		}
		out = append(out, a)
	}
	return out, nil
}
