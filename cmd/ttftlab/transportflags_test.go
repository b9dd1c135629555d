package main

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/ttftlab/ttftlab/internal/oai"
	"github.com/ttftlab/ttftlab/internal/oai/oaitest"
)

// TestProbeRecordsClient: probe's JSON line names the transport it used
// and the clock its first token was stamped with, and the request reached
// an https:// server offering HTTP/2 over the protocol the flag chose.
func TestProbeRecordsClient(t *testing.T) {
	s := oaitest.NewTLSServer(t, oaitest.StreamTokens(3, 0))
	ca := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args           []string
		wantProto      int
		wantTr         string
		wantClockOneOf []string
	}{
		// kernel_rx where the kernel stamps the read, read_return where not.
		{nil, 1, oai.TransportH1, []string{oai.ClockKernelRx, oai.ClockReadReturn}},
		{[]string{"--first-token-clock", "read-return"}, 1, oai.TransportH1, []string{oai.ClockReadReturn}},
		{[]string{"--http-transport", "h2"}, 2, oai.TransportH2, []string{oai.ClockReadReturn}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(append([]string{"default"}, tt.args...), " "), func(t *testing.T) {
			before := len(s.Protos())
			var stdout bytes.Buffer
			args := append([]string{"probe", "--url", s.URL, "--ca-file", ca, "--model", "m", "--max-tokens", "3"}, tt.args...)
			if err := run(t.Context(), args, &stdout, io.Discard); err != nil {
				t.Fatalf("probe: %v", err)
			}
			var out probeOutput
			if err := json.Unmarshal(stdout.Bytes(), &out); err != nil {
				t.Fatalf("probe output %q: %v", stdout.String(), err)
			}
			if seen := s.Protos()[before:]; !slices.Equal(seen, []int{tt.wantProto}) {
				t.Errorf("server saw protocol majors %v, want one HTTP/%d request", seen, tt.wantProto)
			}
			if out.Transport != tt.wantTr || !slices.Contains(tt.wantClockOneOf, out.FirstTokenClock) {
				t.Errorf("probe says transport %q, clock %q; want %q and one of %v", out.Transport, out.FirstTokenClock, tt.wantTr, tt.wantClockOneOf)
			}
		})
	}
}

// TestSweepClientFlagErrors: sweep refuses bad --http-transport and
// --first-token-clock values naming the value and the choices, before it
// dials a coordinator (load and probe: TestTLSFlagErrors).
func TestSweepClientFlagErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--http-transport", "http2"}, `--http-transport "http2" is unknown: use h1 (the default), h2 or net-http`},
		{[]string{"--first-token-clock", "wall"}, `--first-token-clock "wall" is unknown: use kernel (the default) or read-return`},
	}
	for _, tt := range tests {
		args := append([]string{"sweep", "--base-url", "https://127.0.0.1:1", "--model", "m", "--levels", "1"}, tt.args...)
		if err := run(t.Context(), args, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("sweep %v: err = %v, want it to say %q", tt.args, err, tt.want)
		}
	}
}

// TestClientFlagsInHelp: load, probe and sweep list both flags and their
// values in --help.
func TestClientFlagsInHelp(t *testing.T) {
	for _, cmd := range []string{"load", "probe", "sweep"} {
		var out bytes.Buffer
		if err := run(t.Context(), []string{cmd, "--help"}, &out, &out); err != nil && !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("%s --help: %v", cmd, err)
		}
		for _, want := range []string{"-http-transport", "-first-token-clock", "net-http", "read-return"} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("ttftlab %s --help does not mention %s:\n%s", cmd, want, out.String())
			}
		}
	}
}
