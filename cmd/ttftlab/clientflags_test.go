package main

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ttftlab/ttftlab/coordinator/results"
	"github.com/ttftlab/ttftlab/internal/oai"
	"github.com/ttftlab/ttftlab/internal/oai/oaitest"
)

// writeCA writes the TLS fake's certificate as a PEM CA file.
func writeCA(t *testing.T, f *fakeOpenAI) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "ca.pem")
	b := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.Certificate().Raw})
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestLoadTLSTarget runs load and probe against an https:// SSE fake: with
// its CA (--ca-file) or --insecure-skip-verify they succeed (the model is
// looked up over TLS too); with the system roots every request fails and
// the error says how to trust the server.
func TestLoadTLSTarget(t *testing.T) {
	f := newFakeOpenAITLS(t)
	ca := writeCA(t, f)
	tests := []struct {
		name    string
		args    []string
		wantErr string
	}{
		{name: "ca file", args: []string{"--ca-file", ca}},
		{name: "skip verify", args: []string{"--insecure-skip-verify"}},
		{name: "system roots", args: []string{"--model", "fake-model"}, wantErr: "trust the server's CA"},
	}
	for _, tt := range tests {
		t.Run("load/"+tt.name, func(t *testing.T) {
			var stdout bytes.Buffer
			args := append([]string{"load", "--url", f.URL, "--requests", "4", "--concurrency", "2", "--max-tokens", "3", "--json"}, tt.args...)
			err := run(t.Context(), args, &stdout, io.Discard)
			var sum results.LoadSummary
			if jerr := json.Unmarshal(stdout.Bytes(), &sum); jerr != nil {
				t.Fatalf("err %v; stdout %q: %v", err, stdout.String(), jerr)
			}
			if tt.wantErr == "" {
				if err != nil || sum.Successes != 4 {
					t.Fatalf("err %v, successes %d: want 4 successes", err, sum.Successes)
				}
				return
			}
			if err == nil || sum.Successes != 0 || sum.ErrorsByKind["other"] != 4 {
				t.Fatalf("err %v, successes %d, errors %v: want 4 failures of kind other", err, sum.Successes, sum.ErrorsByKind)
			}
		})
		t.Run("probe/"+tt.name, func(t *testing.T) {
			var stdout bytes.Buffer
			args := append([]string{"probe", "--url", f.URL, "--max-tokens", "3"}, tt.args...)
			err := run(t.Context(), args, &stdout, io.Discard)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("probe: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(stdout.String()+err.Error(), tt.wantErr) {
				t.Fatalf("err %v, stdout %s: want an error saying %q", err, stdout.String(), tt.wantErr)
			}
		})
	}
}

func TestTLSFlagErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	notPEM := write("not.pem", []byte("hello"))
	key := write("key.pem", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}}))
	big := write("big.pem", bytes.Repeat([]byte("x"), 65<<10))
	tests := []struct {
		name string
		args []string
		want string
	}{
		{name: "missing file", args: []string{"--ca-file", filepath.Join(dir, "nope.pem")}, want: "--ca-file " + filepath.Join(dir, "nope.pem")},
		{name: "not PEM", args: []string{"--ca-file", notPEM}, want: "holds no PEM certificate"},
		{name: "a key", args: []string{"--ca-file", key}, want: `"PRIVATE KEY" PEM block`},
		{name: "too big", args: []string{"--ca-file", big}, want: "over the 65536-byte cap"},
		{name: "both", args: []string{"--ca-file", notPEM, "--insecure-skip-verify"}, want: "drop one"},
		{name: "unknown transport", args: []string{"--http-transport", "h3"}, want: `--http-transport "h3" is unknown: use h1 (the default), h2 or net-http`},
		{name: "unknown clock", args: []string{"--first-token-clock", "tsc"}, want: `--first-token-clock "tsc" is unknown: use kernel (the default) or read-return`},
	}
	for _, tt := range tests {
		for _, cmd := range []string{"load", "probe"} {
			t.Run(cmd+"/"+tt.name, func(t *testing.T) {
				args := append([]string{cmd, "--url", "https://127.0.0.1:1", "--model", "m"}, tt.args...)
				err := run(t.Context(), args, io.Discard, io.Discard)
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("err = %v, want it to say %q", err, tt.want)
				}
			})
		}
	}
}

// TestLoadHTTPTransport runs load and probe against a TLS server that offers
// HTTP/2: --http-transport h2 reaches it over HTTP/2, h1 and net-http over
// HTTP/1.1, and the load's summary names the client and the first-token
// clock it used.
func TestLoadHTTPTransport(t *testing.T) {
	tests := []struct {
		args      []string
		wantProto int
		transport string
		clock     string
	}{
		{args: nil, wantProto: 1, transport: oai.TransportH1, clock: oai.ClockKernelRx},
		{args: []string{"--first-token-clock", "read-return"}, wantProto: 1, transport: oai.TransportH1, clock: oai.ClockReadReturn},
		{args: []string{"--http-transport", "net-http"}, wantProto: 1, transport: oai.TransportNetHTTP, clock: oai.ClockReadReturn},
		{args: []string{"--http-transport", "h2"}, wantProto: 2, transport: oai.TransportH2, clock: oai.ClockReadReturn},
	}
	for _, tt := range tests {
		t.Run(strings.Join(append([]string{"default"}, tt.args...), " "), func(t *testing.T) {
			s := oaitest.NewTLSServer(t, oaitest.StreamTokens(3, 0))
			ca := filepath.Join(t.TempDir(), "ca.pem")
			if err := os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.Certificate().Raw}), 0o644); err != nil {
				t.Fatal(err)
			}
			var stdout bytes.Buffer
			args := append([]string{"load", "--url", s.URL, "--model", "m", "--requests", "4", "--concurrency", "2", "--max-tokens", "3", "--ca-file", ca, "--json"}, tt.args...)
			if err := run(t.Context(), args, &stdout, io.Discard); err != nil {
				t.Fatalf("load %v: %v\n%s", tt.args, err, stdout.String())
			}
			var sum results.LoadSummary
			if err := json.Unmarshal(stdout.Bytes(), &sum); err != nil {
				t.Fatal(err)
			}
			if sum.Successes != 4 || sum.Transport != tt.transport || sum.FirstTokenClock != tt.clock {
				t.Errorf("successes %d, transport %q, clock %q; want 4, %q, %q", sum.Successes, sum.Transport, sum.FirstTokenClock, tt.transport, tt.clock)
			}
			if err := run(t.Context(), append([]string{"probe", "--url", s.URL, "--model", "m", "--max-tokens", "3", "--ca-file", ca}, tt.args...), io.Discard, io.Discard); err != nil {
				t.Fatalf("probe %v: %v", tt.args, err)
			}
			protos := s.Protos()
			if len(protos) == 0 {
				t.Fatal("the server saw no request")
			}
			for i, p := range protos {
				if p != tt.wantProto {
					t.Fatalf("request %d reached the server over HTTP/%d, want HTTP/%d (all: %v)", i, p, tt.wantProto, protos)
				}
			}
		})
	}
}
