package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/ttftlab/ttftlab/internal/labtls"
)

// runCerts makes a lab CA and a node certificate for mutual TLS.
func runCerts(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("certs", stderr)
	dir := fs.String("dir", "", "directory to write ca.pem, ca-key.pem, node.pem and node-key.pem into")
	hosts := fs.String("hosts", "", "comma-separated host names and IP addresses the nodes are reached at (localhost and 127.0.0.1 are always included)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return errors.New("--dir is required: name the directory for the lab CA and node certificate, e.g. --dir /etc/ttftlab/tls")
	}
	var hs []string
	for _, h := range strings.Split(*hosts, ",") {
		if h = strings.TrimSpace(h); h != "" {
			hs = append(hs, h)
		}
	}
	if err := labtls.Generate(*dir, hs, time.Now()); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote a lab CA and a node certificate to %s; copy ca.pem, node.pem and node-key.pem (not ca-key.pem) to every node and start each with --tls-dir DIR\n", *dir)
	return nil
}
