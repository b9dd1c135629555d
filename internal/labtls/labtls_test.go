package labtls

import (
	"crypto/tls"
	"io"
	"strings"
	"testing"
	"time"
)

// handshake runs a TLS handshake between a server and a client config.
func handshake(t *testing.T, srv, cli *tls.Config, serverName string) error {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srv)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(io.Discard, c)
	}()
	cfg := cli.Clone()
	if cfg.ServerName == "" { // as gRPC does: the dialled host, unless the config names one
		cfg.ServerName = serverName
	}
	c, err := tls.Dial("tcp", ln.Addr().String(), cfg)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := c.Write([]byte("x")); err != nil {
		return err
	}
	// With TLS 1.3 the server's verdict on the client certificate arrives
	// after the handshake: a read sees it.
	_, err = c.Read(make([]byte, 1))
	if err != nil && !strings.Contains(err.Error(), "i/o timeout") {
		return err
	}
	return nil
}

func TestMutualTLSWithinOneCA(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	now := time.Now()
	if err := Generate(a, []string{"gpu-1.lab", "10.0.0.7"}, now); err != nil {
		t.Fatal(err)
	}
	if err := Generate(b, nil, now); err != nil {
		t.Fatal(err)
	}
	srvA, _ := ServerConfig(a)
	cliA, _ := ClientConfig(a)
	cliB, _ := ClientConfig(b)
	if err := handshake(t, srvA, cliA, "gpu-1.lab"); err != nil {
		t.Errorf("same CA: %v", err)
	}
	if err := handshake(t, srvA, cliA, "127.0.0.1"); err != nil {
		t.Errorf("same CA by IP: %v", err)
	}
	// Nodes are dialled at addresses the certificate cannot know (pod
	// IPs): the lab name, not the address, is checked.
	if cliA.ServerName != LabName {
		t.Errorf("client ServerName %q, want the lab name %q", cliA.ServerName, LabName)
	}
	if err := handshake(t, srvA, cliA, "10.244.3.17"); err != nil {
		t.Errorf("same CA dialled at an address outside the certificate: %v", err)
	}
	if err := handshake(t, srvA, cliB, "localhost"); err == nil {
		t.Error("a client from another CA was accepted")
	}
	// A client that trusts this server but presents another CA's
	// certificate: only the server's own check can refuse it.
	foreign := cliA.Clone()
	foreign.Certificates = cliB.Certificates
	if err := handshake(t, srvA, foreign, "localhost"); err == nil {
		t.Error("a client certificate from another CA was accepted by the server")
	}
	noCert := cliA.Clone()
	noCert.Certificates = nil
	if err := handshake(t, srvA, noCert, "localhost"); err == nil {
		t.Error("a client without a certificate was accepted")
	}
	if err := Generate(a, nil, now); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("regenerating over existing files: %v", err)
	}
	if _, err := ServerConfig(t.TempDir()); err == nil || !strings.Contains(err.Error(), "ttftlab certs") {
		t.Errorf("missing certificates: %v, want the fix named", err)
	}
}

// TestOlderCertificatesCheckTheDialledAddress: a certificate made before
// LabName existed keeps the check of the dialled address.
func TestOlderCertificatesCheckTheDialledAddress(t *testing.T) {
	dir := t.TempDir()
	if err := generate(dir, []string{"gpu-1.lab"}, time.Now(), false); err != nil {
		t.Fatal(err)
	}
	srv, err := ServerConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := ClientConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	if cli.ServerName != "" {
		t.Fatalf("client ServerName %q for a certificate without the lab name, want empty", cli.ServerName)
	}
	if err := handshake(t, srv, cli, "gpu-1.lab"); err != nil {
		t.Errorf("listed host: %v", err)
	}
	if err := handshake(t, srv, cli, "other.lab"); err == nil {
		t.Error("a host name outside an older certificate was accepted")
	}
}
