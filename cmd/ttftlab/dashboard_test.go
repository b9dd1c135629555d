package main

import (
	"context"
	"io"
	"strings"
	"testing"
)

// TestHTTPFlagRefusesAnOpenDashboard checks that --http off loopback with
// neither --token-file nor --tls-dir is refused before anything starts.
func TestHTTPFlagRefusesAnOpenDashboard(t *testing.T) {
	tests := []struct {
		name string
		run  func(context.Context, []string, io.Writer, io.Writer) error
		args []string
		want string
	}{
		{name: "coordinator on all addresses", run: runCoordinator, args: []string{"--http", "0.0.0.0:0", "--gossip-addr", "127.0.0.1:0"}, want: "not a loopback address"},
		{name: "coordinator with a bad address", run: runCoordinator, args: []string{"--http", "8080", "--gossip-addr", "127.0.0.1:0"}, want: "not host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run(context.Background(), tt.args, io.Discard, io.Discard)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err %v, want one saying %q", err, tt.want)
			}
		})
	}
}
