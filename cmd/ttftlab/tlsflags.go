package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/ttftlab/ttftlab/agent"
)

// tlsFlags are the TLS settings of an https:// target: --ca-file and
// --insecure-skip-verify.
type tlsFlags struct {
	caFile   string
	insecure bool
}

// registerTLSFlags registers --ca-file and --insecure-skip-verify on fs.
func registerTLSFlags(fs *flag.FlagSet) *tlsFlags {
	f := &tlsFlags{}
	fs.StringVar(&f.caFile, "ca-file", "", "PEM file of the CA certificates an https:// --url must chain to (default the system roots)")
	fs.BoolVar(&f.insecure, "insecure-skip-verify", false, "skip the https:// certificate check (a trusted test network only)")
	return f
}

// apply reads --ca-file (at most agent.MaxCAPEM bytes) into t and checks it
// parses; errors name the flag, the file and the fix.
func (f *tlsFlags) apply(t *agent.Target) error {
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
