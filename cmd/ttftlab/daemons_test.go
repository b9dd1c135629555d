package main

import (
	"io"
	"strings"
	"testing"
)

// TestCoordinatorAgentSilenceFlag: --agent-silence outside 1s–5m is refused
// before the coordinator starts, naming the value and the range.
func TestCoordinatorAgentSilenceFlag(t *testing.T) {
	for _, v := range []string{"100ms", "0s", "6m"} {
		err := run(t.Context(), []string{"coordinator", "--agent-silence", v, "--grpc-addr", "127.0.0.1:0", "--gossip-addr", "127.0.0.1:0"}, io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), "--agent-silence") || !strings.Contains(err.Error(), "out of range: give 1s to 5m") {
			t.Errorf("--agent-silence %s: err = %v, want it refused naming the range", v, err)
		}
	}
}
