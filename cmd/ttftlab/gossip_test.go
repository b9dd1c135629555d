package main

import (
	"slices"
	"strings"
	"testing"
)

func TestParseJoin(t *testing.T) {
	tests := []struct {
		name    string
		join    string
		want    []string
		wantErr string // a substring of the error; empty means none
	}{
		{name: "empty", join: ""},
		{name: "blank", join: "  "},
		{name: "one", join: "10.0.0.5:7946", want: []string{"10.0.0.5:7946"}},
		{name: "several with spaces", join: "10.0.0.5:7946, coord.lab:7946", want: []string{"10.0.0.5:7946", "coord.lab:7946"}},
		{name: "ipv6", join: "[::1]:7946", want: []string{"[::1]:7946"}},
		{name: "no port", join: "10.0.0.5", wantErr: `"10.0.0.5" is not a gossip address host:port`},
		{name: "empty entry", join: "10.0.0.5:7946,,", wantErr: `"" is not a gossip address`},
		{name: "no host", join: ":7946", wantErr: `":7946" is not a gossip address`},
		{name: "port zero", join: "10.0.0.5:0", wantErr: `has port "0": use 1..65535`},
		{name: "port not a number", join: "10.0.0.5:gossip", wantErr: `has port "gossip"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseJoin(tt.join)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("parseJoin(%q) = %v, %v; want an error containing %q", tt.join, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("parseJoin(%q) = %v, %v; want %v", tt.join, got, err, tt.want)
			}
		})
	}
}
