// Package labtls makes and loads a small lab certificate authority for
// ttftlab's gRPC: one CA, and one certificate per node signed by it, used
// both as server and as client certificate (mutual TLS). It only uses
// crypto/tls and crypto/x509; the gRPC credentials are made by the callers.
package labtls

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"time"
)

// File names inside a TLS directory.
const (
	CAFile      = "ca.pem"
	CAKeyFile   = "ca-key.pem"
	CertFile    = "node.pem"
	CertKeyFile = "node-key.pem"
)

// LabName is a DNS name every node certificate made by Generate carries.
// A client whose own certificate carries it verifies a server against it,
// not against the address it dialled: nodes are dialled at addresses not
// known when the certificates are made (pod IPs on Kubernetes, DHCP
// leases), and every node shares the one node certificate anyway, so the
// dialled name proves nothing more than the lab CA's signature does. The
// .invalid top-level domain never resolves.
const LabName = "node.ttftlab.invalid"

// validity is how long lab certificates last.
const validity = 365 * 24 * time.Hour

// Generate writes a new CA and a node certificate for hosts (names or IP
// addresses; localhost and 127.0.0.1 are always added) into dir. Existing
// files are not overwritten: remove them first to rotate.
func Generate(dir string, hosts []string, now time.Time) error {
	return generate(dir, hosts, now, true)
}

// generate is Generate; withLabName false makes a certificate as older
// versions did, without LabName (kept for the test of that case).
func generate(dir string, hosts []string, now time.Time, withLabName bool) error {
	for _, f := range []string{CAFile, CAKeyFile, CertFile, CertKeyFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err == nil {
			return fmt.Errorf("%s already exists: remove the old certificates from %s to make new ones", filepath.Join(dir, f), dir)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "ttftlab lab CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create CA: %w", err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return err
	}
	nodeKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	nodeTmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "ttftlab node"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	names := []string{"localhost", "127.0.0.1", "::1"}
	if withLabName {
		names = append(names, LabName)
	}
	for _, h := range append(names, hosts...) {
		if h == "" {
			continue
		}
		if ip := net.ParseIP(h); ip != nil {
			nodeTmpl.IPAddresses = append(nodeTmpl.IPAddresses, ip)
		} else {
			nodeTmpl.DNSNames = append(nodeTmpl.DNSNames, h)
		}
	}
	nodeDER, err := x509.CreateCertificate(rand.Reader, nodeTmpl, ca, &nodeKey.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("create node certificate: %w", err)
	}
	if err := writePEM(filepath.Join(dir, CAFile), "CERTIFICATE", caDER, 0o644); err != nil {
		return err
	}
	if err := writeKey(filepath.Join(dir, CAKeyFile), caKey); err != nil {
		return err
	}
	if err := writePEM(filepath.Join(dir, CertFile), "CERTIFICATE", nodeDER, 0o644); err != nil {
		return err
	}
	return writeKey(filepath.Join(dir, CertKeyFile), nodeKey)
}

func serial() *big.Int {
	n, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	return n
}

func writeKey(path string, k *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return err
	}
	return writePEM(path, "EC PRIVATE KEY", der, 0o600)
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	b := pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	if err := os.WriteFile(path, b, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}

// load reads the node certificate and the CA pool of dir.
func load(dir string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, CertKeyFile))
	if err != nil {
		return cert, nil, fmt.Errorf("load the node certificate from %s (make one with `ttftlab certs --dir %s`): %w", dir, dir, err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, CAFile))
	if err != nil {
		return cert, nil, fmt.Errorf("load the CA from %s: %w", dir, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return cert, nil, errors.New(filepath.Join(dir, CAFile) + " holds no PEM certificate")
	}
	return cert, pool, nil
}

// ServerConfig is a mutual-TLS server configuration: it presents the node
// certificate and admits only clients with a certificate from the same CA.
func ServerConfig(dir string) (*tls.Config, error) {
	cert, pool, err := load(dir)
	if err != nil {
		return nil, err
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    pool,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}, nil
}

// ClientConfig presents the node certificate and trusts only the lab CA.
// When the node certificate carries LabName (every certificate Generate
// makes), servers are verified against LabName instead of the dialled
// address (see LabName); certificates of older versions keep the check of
// the dialled address.
func ClientConfig(dir string) (*tls.Config, error) {
	cert, pool, err := load(dir)
	if err != nil {
		return nil, err
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
	}
	if leaf, err := x509.ParseCertificate(cert.Certificate[0]); err == nil && slices.Contains(leaf.DNSNames, LabName) {
		cfg.ServerName = LabName
	}
	return cfg, nil
}
