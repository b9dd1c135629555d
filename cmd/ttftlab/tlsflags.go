package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ttftlab/ttftlab/agent"
	"github.com/ttftlab/ttftlab/internal/oai"
)

// tlsFlags are the client settings of a target: the TLS settings of an
// https:// target (--ca-file, --insecure-skip-verify), the HTTP transport
// (--http-transport) and the first-token clock (--first-token-clock).
type tlsFlags struct {
	caFile    string
	insecure  bool
	transport string
	clock     string
}

// transportNames map --http-transport's spellings to oai's transports.
var transportNames = map[string]string{
	"h1": oai.TransportH1, "net-http": oai.TransportNetHTTP, "net/http": oai.TransportNetHTTP, "h2": oai.TransportH2,
}

// clockNames map --first-token-clock's spellings to oai's clocks.
var clockNames = map[string]string{
	"kernel": oai.ClockKernelRx, "kernel-rx": oai.ClockKernelRx, oai.ClockKernelRx: oai.ClockKernelRx,
	"read-return": oai.ClockReadReturn, oai.ClockReadReturn: oai.ClockReadReturn,
}

// registerTLSFlags registers --ca-file, --insecure-skip-verify,
// --http-transport and --first-token-clock on fs.
func registerTLSFlags(fs *flag.FlagSet) *tlsFlags {
	f := &tlsFlags{}
	fs.StringVar(&f.caFile, "ca-file", "", "PEM file of the CA certificates an https:// --url must chain to (default the system roots)")
	fs.BoolVar(&f.insecure, "insecure-skip-verify", false, "skip the https:// certificate check (a trusted test network only)")
	fs.StringVar(&f.transport, "http-transport", "h1", "HTTP client: h1 (ttftlab's own HTTP/1.1 client), net-http (Go's, HTTP/1.1) or h2 (Go's with HTTP/2, negotiated on https://; for gateways that speak only HTTP/2)")
	fs.StringVar(&f.clock, "first-token-clock", "", "clock of the first-token (and every arrival) stamp: kernel (the kernel's receive time of the bytes; h1's default, Linux) or read-return (the time the read returned; always so on net-http and h2)")
	return f
}

// applyClient sets t's transport and first-token clock from
// --http-transport and --first-token-clock; errors name the flag, the
// value and the choices.
func (f *tlsFlags) applyClient(t *agent.Target) error {
	tr, ok := transportNames[f.transport]
	if !ok {
		return fmt.Errorf("--http-transport %q is unknown: use h1 (the default), net-http or h2", f.transport)
	}
	clock := ""
	if f.clock != "" {
		if clock, ok = clockNames[f.clock]; !ok {
			return fmt.Errorf("--first-token-clock %q is unknown: use kernel (the kernel's receive time, h1's default) or read-return (the time the read returned)", f.clock)
		}
		if clock == oai.ClockKernelRx && tr != oai.TransportH1 {
			return fmt.Errorf("--first-token-clock %s needs --http-transport h1: %s stamps reads when they return; use --first-token-clock read-return or leave it out", f.clock, f.transport)
		}
	}
	t.Transport, t.FirstTokenClock = tr, clock
	return nil
}

// apply sets t's client settings (applyClient) and reads --ca-file (at
// most agent.MaxCAPEM bytes) into t and checks it parses; errors name the
// flag, the file and the fix.
func (f *tlsFlags) apply(t *agent.Target) error {
	if err := f.applyClient(t); err != nil {
		return err
	}
	t.InsecureSkipVerify = f.insecure
	if f.caFile == "" {
		return nil
	}
	if f.insecure {
		return errors.New("--ca-file and --insecure-skip-verify are both set: skipping verification ignores the CA; drop one")
	}
	pemBytes, err := readCapped(f.caFile, agent.MaxCAPEM)
	if err != nil {
		return fmt.Errorf("--ca-file %s: %w", f.caFile, err)
	}
	if _, err := agent.ParseCAPEM(pemBytes); err != nil {
		return fmt.Errorf("--ca-file %s %w", f.caFile, err)
	}
	t.CAPEM = pemBytes
	return nil
}

// readCapped reads a file of at most limit bytes; a larger one is an error
// that names the cap.
func readCapped(path string, limit int64) ([]byte, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer fh.Close()
	b, err := io.ReadAll(io.LimitReader(fh, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("is over the %d-byte cap: give only the CA certificates the target's chain needs", limit)
	}
	return b, nil
}
