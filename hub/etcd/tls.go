package etcd

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// TLSDir is the directory under the embedded etcd's data directory that holds the TLS files of
// the current start.
const TLSDir = "tls"

// embeddedValidity is how long the embedded etcd's throwaway certificates are valid; a new CA
// replaces them at each start.
const embeddedValidity = 10 * 365 * 24 * time.Hour

// embeddedTrustDomain names the throwaway CA's identities. They matter to no one: the CA is
// trusted by the embedded etcd and the hub's client to it alone, and is not the hub's CA.
const embeddedTrustDomain = "embedded-etcd.spillway.invalid"

// embeddedFiles are the paths of the TLS files of one start of the embedded etcd.
type embeddedFiles struct {
	ca, serverCert, serverKey, clientCert, clientKey string
}

// serverInfo is the etcd server's TLS, for both the client and the peer port: its certificate,
// and client certificates required and verified against the throwaway CA.
func (f embeddedFiles) serverInfo() transport.TLSInfo {
	return transport.TLSInfo{
		CertFile:       f.serverCert,
		KeyFile:        f.serverKey,
		TrustedCAFile:  f.ca,
		ClientCertAuth: true,
		MinVersion:     tls.VersionTLS13,
	}
}

// clientInfo is the hub's TLS to the embedded etcd.
func (f embeddedFiles) clientInfo() transport.TLSInfo {
	return transport.TLSInfo{
		CertFile:      f.clientCert,
		KeyFile:       f.clientKey,
		TrustedCAFile: f.ca,
		MinVersion:    tls.VersionTLS13,
	}
}

// writeEmbeddedTLS makes a new CA, a server certificate for the loopback names and a client
// certificate, and writes them to dir/tls (mode 0700; keys 0600), replacing what an earlier start
// left. The CA's key is not kept: nothing else will ever be issued by it.
func writeEmbeddedTLS(dir string) (embeddedFiles, error) {
	tlsDir := filepath.Join(dir, TLSDir)
	if err := os.RemoveAll(tlsDir); err != nil {
		return embeddedFiles{}, fmt.Errorf("embedded etcd TLS: %w", err)
	}
	if err := os.MkdirAll(tlsDir, 0o700); err != nil {
		return embeddedFiles{}, fmt.Errorf("embedded etcd TLS: %w", err)
	}
	ca, err := tlsconfig.NewCA("spillway embedded etcd CA", embeddedValidity)
	if err != nil {
		return embeddedFiles{}, fmt.Errorf("embedded etcd TLS: %w", err)
	}
	serverCert, serverKey, err := ca.Issue(
		tlsconfig.Identity{TrustDomain: embeddedTrustDomain, Kind: tlsconfig.KindCluster, Name: "etcd"},
		[]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, embeddedValidity)
	if err != nil {
		return embeddedFiles{}, fmt.Errorf("embedded etcd TLS: %w", err)
	}
	clientCert, clientKey, err := ca.Issue(
		tlsconfig.Identity{TrustDomain: embeddedTrustDomain, Kind: tlsconfig.KindUser, Name: "hub"},
		nil, nil, embeddedValidity)
	if err != nil {
		return embeddedFiles{}, fmt.Errorf("embedded etcd TLS: %w", err)
	}
	f := embeddedFiles{
		ca:         filepath.Join(tlsDir, "ca.crt"),
		serverCert: filepath.Join(tlsDir, "server.crt"),
		serverKey:  filepath.Join(tlsDir, "server.key"),
		clientCert: filepath.Join(tlsDir, "client.crt"),
		clientKey:  filepath.Join(tlsDir, "client.key"),
	}
	for _, w := range []struct {
		path string
		data []byte
		mode os.FileMode
	}{
		{f.ca, ca.CertPEM(), 0o644},
		{f.serverCert, serverCert, 0o644},
		{f.serverKey, serverKey, 0o600},
		{f.clientCert, clientCert, 0o644},
		{f.clientKey, clientKey, 0o600},
	} {
		if err := os.WriteFile(w.path, w.data, w.mode); err != nil {
			return embeddedFiles{}, fmt.Errorf("embedded etcd TLS: %w", err)
		}
	}
	return f, nil
}

// ClientTLS are the files of the hub's TLS to an external etcd, named as etcdctl names them.
type ClientTLS struct {
	// CACert is the bundle that verifies the etcd servers (--etcd-cacert); empty: the system's
	// roots.
	CACert string
	// Cert and Key are the hub's client certificate and its key (--etcd-cert, --etcd-key); both
	// or neither.
	Cert, Key string
}

// Empty reports whether no file is set: the endpoints' schemes alone decide (https with the
// system's roots and no client certificate, or http).
func (c ClientTLS) Empty() bool { return c == ClientTLS{} }

// Validate checks that the files come as etcd needs them: the certificate and the key together.
func (c ClientTLS) Validate() error {
	if (c.Cert == "") != (c.Key == "") {
		return errors.New("--etcd-cert and --etcd-key go together: give both or neither")
	}
	return nil
}

// Config reads the files into the client configuration; nil when Empty. The key pair is read
// again at each connection, so a rotated certificate is used without a restart.
func (c ClientTLS) Config() (*tls.Config, error) {
	if c.Empty() {
		return nil, nil
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.CACert != "" {
		// etcd's reader takes a file without certificates for an empty pool, which refuses
		// every server later with a less helpful error.
		data, err := os.ReadFile(c.CACert)
		if err == nil {
			_, err = tlsconfig.NewStaticCAPool(data)
		}
		if err != nil {
			return nil, fmt.Errorf("--etcd-cacert %q: %w", c.CACert, err)
		}
	}
	info := transport.TLSInfo{CertFile: c.Cert, KeyFile: c.Key, TrustedCAFile: c.CACert, MinVersion: tls.VersionTLS12}
	cfg, err := info.ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("etcd client TLS (--etcd-cacert %q, --etcd-cert %q, --etcd-key %q): %w", c.CACert, c.Cert, c.Key, err)
	}
	return cfg, nil
}
