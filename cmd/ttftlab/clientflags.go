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

// clientFlags are the client settings of a target: the TLS settings of an
// https:// target (--ca-file, --insecure-skip-verify), the HTTP transport
// (--http-transport) and the first-token clock (--first-token-clock).
type clientFlags struct {
	caFile    string
	insecure  bool
	transport string
	clock     string
}

// httpTransports maps --http-transport's values to oai's transports.
var httpTransports = map[string]string{
	"h1": oai.TransportH1, "net-http": oai.TransportNetHTTP, oai.TransportNetHTTP: oai.TransportNetHTTP, "h2": oai.TransportH2,
}

// firstTokenClocks maps --first-token-clock's values to oai's clocks.
var firstTokenClocks = map[string]string{
	"kernel": oai.ClockKernelRx, oai.ClockKernelRx: oai.ClockKernelRx,
	"read-return": oai.ClockReadReturn, oai.ClockReadReturn: oai.ClockReadReturn,
}

// registerClientFlags registers --ca-file, --insecure-skip-verify,
// --http-transport and --first-token-clock on fs.
func registerClientFlags(fs *flag.FlagSet) *clientFlags {
	f := &clientFlags{}
	fs.StringVar(&f.caFile, "ca-file", "", "PEM file of the CA certificates an https:// --url must chain to (default the system roots)")
	fs.BoolVar(&f.insecure, "insecure-skip-verify", false, "skip the https:// certificate check (a trusted test network only)")
	fs.StringVar(&f.transport, "http-transport", "h1", "HTTP client: h1 (ttftlab's HTTP/1.1 client, plain or TLS; lowest overhead), h2 (HTTP/2 by ALPN on https://, for gateways that serve streams over HTTP/2) or net-http (Go's HTTP/1.1 client, a reference)")
	fs.StringVar(&f.clock, "first-token-clock", "kernel", "where h1 takes a chunk's arrival time: kernel (the kernel's receive timestamp where Linux gives one, so the client's own scheduling is not in TTFT) or read-return (when the socket read returns); net-http and h2 always stamp when bytes are handed on")
	return f
}

// apply sets t's client settings from the flags and reads --ca-file (at
// most agent.MaxCAPEM bytes), checking it parses; errors name the flag, the
// value and the fix.
func (f *clientFlags) apply(t *agent.Target) error {
	tr, ok := httpTransports[f.transport]
	if !ok {
		return fmt.Errorf("--http-transport %q is unknown: use h1 (the default), h2 or net-http", f.transport)
	}
	clock, ok := firstTokenClocks[f.clock]
	if !ok {
		return fmt.Errorf("--first-token-clock %q is unknown: use kernel (the default) or read-return", f.clock)
	}
	t.Transport, t.FirstTokenClock = tr, clock
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
