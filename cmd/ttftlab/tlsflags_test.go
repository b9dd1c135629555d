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
