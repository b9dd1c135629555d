package agent

import (
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/ttftlab/ttftlab/internal/oai/oaitest"
	"github.com/ttftlab/ttftlab/internal/ssebench"
)

// newTLSFake is an https:// SSE fake streaming three tokens, and its
// certificate as PEM.
func newTLSFake(t *testing.T) (*oaitest.Server, []byte) {
	t.Helper()
	srv := oaitest.NewTLSServer(t, oaitest.StreamTokens(3, time.Millisecond))
	return srv, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
}

// TestServerTLSTarget runs a RunProbeRequest against an https:// target:
// the Target's ca_pem and insecure_skip_verify reach the agent's client;
// without them the certificate is refused.
func TestServerTLSTarget(t *testing.T) {
	srv, caPEM := newTLSFake(t)
	otherCert, _, err := ssebench.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		caPEM    []byte
		insecure bool
		wantOK   uint64
	}{
		{name: "ca_pem", caPEM: caPEM, wantOK: 3},
		{name: "insecure_skip_verify", insecure: true, wantOK: 3},
		{name: "system roots", wantOK: 0},
		{name: "another CA", caPEM: otherCert, wantOK: 0},
	}
	client := startAgentServer(t, New(DefaultConfig(), nil))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := protoRequest(srv.URL)
			req.Target.CaPem, req.Target.InsecureSkipVerify = tt.caPEM, tt.insecure
			stream, err := client.RunProbe(t.Context(), req)
			if err != nil {
				t.Fatal(err)
			}
			var ok, failed uint64
			for {
				resp, err := stream.Recv()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("Recv: %v", err)
				}
				ok += resp.GetReport().GetRequestsOk()
				failed += resp.GetReport().GetRequestsFailed()
			}
			if ok != tt.wantOK || ok+failed != 3 {
				t.Errorf("ok %d, failed %d; want %d ok of 3", ok, failed, tt.wantOK)
			}
		})
	}
}

// TestServerRejectsBadCAPEM checks that a bad ca_pem is refused before
// any request, naming the field.
func TestServerRejectsBadCAPEM(t *testing.T) {
	client := startAgentServer(t, New(DefaultConfig(), nil))
	tests := []struct {
		name  string
		caPEM []byte
		want  string
	}{
		{name: "not PEM", caPEM: []byte("not a certificate"), want: "target.ca_pem holds no PEM certificate"},
		{name: "over the cap", caPEM: bytes.Repeat([]byte("x"), MaxCAPEM+1), want: "target.ca_pem is 65537 bytes, over the 65536-byte cap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := protoRequest("https://127.0.0.1:1")
			req.Target.CaPem = tt.caPEM
			stream, err := client.RunProbe(context.Background(), req)
			if err == nil {
				_, err = stream.Recv()
			}
			if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("RunProbe = %v, want InvalidArgument saying %q", err, tt.want)
			}
		})
	}
}

func TestParseCAPEM(t *testing.T) {
	cert, key, err := ssebench.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   []byte
		want string // "" means it parses
	}{
		{name: "one certificate", in: cert},
		{name: "two certificates", in: append(append([]byte{}, cert...), cert...)},
		{name: "empty", in: nil, want: "holds no PEM certificate"},
		{name: "a key", in: key, want: "PEM block: give only CERTIFICATE blocks"},
		{name: "trailing text", in: append(append([]byte{}, cert...), "junk"...), want: "not PEM after the certificates"},
		{name: "bad DER", in: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1, 2}}), want: "certificate 1 does not parse"},
		{name: "over the cap", in: bytes.Repeat([]byte("\n"), MaxCAPEM+1), want: "over the 65536-byte cap"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pool, err := ParseCAPEM(tt.in)
			switch {
			case tt.want == "" && (err != nil || pool == nil):
				t.Errorf("ParseCAPEM = %v, %v; want a pool", pool, err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("ParseCAPEM = %v; want an error saying %q", err, tt.want)
			}
		})
	}
}

// FuzzParseCAPEM feeds ca_pem, which crosses the gRPC boundary, to its
// parser: it must return a pool or an error, never panic, and never accept
// more than MaxCAPEM bytes.
func FuzzParseCAPEM(f *testing.F) {
	cert, key, err := ssebench.SelfSigned()
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range [][]byte{cert, key, nil, []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		pool, err := ParseCAPEM(b)
		if (pool == nil) == (err == nil) {
			t.Fatalf("ParseCAPEM = %v, %v: want exactly one of a pool and an error", pool, err)
		}
		if len(b) > MaxCAPEM && err == nil {
			t.Fatalf("accepted %d bytes", len(b))
		}
	})
}
