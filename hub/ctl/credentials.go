package ctl

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// clientCredentials are a user's certificate and the CA bundle that verifies the hub.
type clientCredentials struct {
	dir     string
	keyPair *tlsconfig.KeyPair
	caPool  *tlsconfig.CAPool
	// identity is the certificate's spiffe identity; zero when it names none (the hub will say).
	identity tlsconfig.Identity
}

// loadCredentials reads dir's ca.crt, tls.crt and tls.key once, and refuses a certificate that is
// not valid at now, since the hub would only end the handshake without saying why.
func loadCredentials(dir string, now time.Time) (*clientCredentials, error) {
	var missing []string
	for _, name := range []string{tlsconfig.CAFile, tlsconfig.CertFile, tlsconfig.KeyFile} {
		_, err := os.Stat(filepath.Join(dir, name))
		switch {
		case errors.Is(err, fs.ErrNotExist):
			missing = append(missing, name)
		case err != nil:
			return nil, fmt.Errorf("credentials in %s: %w", dir, err)
		}
	}
	switch len(missing) {
	case 0:
	case 3:
		return nil, fmt.Errorf("no credentials in %s: pass --credentials-dir or set %s (a hub writes admin credentials to <its --pki-dir>/hubctl at its first start)", dir, CredentialsEnv)
	default:
		return nil, fmt.Errorf("incomplete credentials in %s: %s missing; want %s, %s and %s", dir, strings.Join(missing, " and "), tlsconfig.CAFile, tlsconfig.CertFile, tlsconfig.KeyFile)
	}
	// hubctl is short-lived: the key pair and the pool are loaded once and never run.
	kp, pool, err := tlsconfig.LoadDir(dir, tlsconfig.KeyPairOptions{})
	if err != nil {
		return nil, fmt.Errorf("credentials in %s: %w", dir, err)
	}
	leaf := kp.Certificate().Leaf
	switch {
	case now.After(leaf.NotAfter):
		return nil, fmt.Errorf("the certificate in %s expired at %s: get a new one from the hub's admin", filepath.Join(dir, tlsconfig.CertFile), leaf.NotAfter.UTC().Format(time.RFC3339))
	case now.Before(leaf.NotBefore):
		return nil, fmt.Errorf("the certificate in %s is valid only from %s: check this machine's clock", filepath.Join(dir, tlsconfig.CertFile), leaf.NotBefore.UTC().Format(time.RFC3339))
	}
	id, _ := tlsconfig.IdentityOf(leaf) // a certificate without one is the hub's to refuse, with its reason
	return &clientCredentials{dir: dir, keyPair: kp, caPool: pool, identity: id}, nil
}

// clientConfig is the TLS configuration that presents the user's certificate and verifies the hub
// for serverName.
func (c *clientCredentials) clientConfig(serverName string) *tls.Config {
	return tlsconfig.ClientConfig(c.keyPair, c.caPool, serverName)
}

// issuerNote says when the user's certificate does not chain to the CA bundle: with the hub's
// default setup (one CA issues the hub's certificate and verifies clients') the hub will refuse
// it, which the client sees only as a broken connection. Empty when it chains.
func (c *clientCredentials) issuerNote() string {
	cert := c.keyPair.Certificate()
	opts := x509.VerifyOptions{Roots: c.caPool.Pool(), Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, der := range cert.Certificate[1:] {
		if ic, err := x509.ParseCertificate(der); err == nil {
			opts.Intermediates.AddCert(ic)
		}
	}
	if _, err := cert.Leaf.Verify(opts); err != nil {
		return fmt.Sprintf("the certificate in %s is not issued by %s (%v)", filepath.Join(c.dir, tlsconfig.CertFile), filepath.Join(c.dir, tlsconfig.CAFile), err)
	}
	return ""
}

// who names the user in messages: the identity, else the certificate file.
func (c *clientCredentials) who() string {
	if c.identity != (tlsconfig.Identity{}) {
		return c.identity.String()
	}
	return "the certificate in " + filepath.Join(c.dir, tlsconfig.CertFile)
}
