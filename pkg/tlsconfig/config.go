package tlsconfig

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// ServerConfig returns the configuration of a TLS 1.3 server presenting kp, which must not be
// nil.
//
// With clientCAs, the server asks for a client certificate and crypto/tls verifies it (for client
// authentication) against the pool clientCAs holds at that handshake: a CA added to or removed
// from the bundle file takes effect on the next connection. Session tickets are off, so every
// connection is verified in full. The verified chain is in the connection's VerifiedChains,
// where PeerIdentity reads who the client is. Without requireClientCert a client may present no
// certificate.
//
// Without clientCAs no client certificate is asked for, and requireClientCert refuses every
// client, since none could be verified.
func ServerConfig(kp *KeyPair, clientCAs *CAPool, requireClientCert bool) *tls.Config {
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS13,
		GetCertificate: kp.GetCertificate,
	}
	switch {
	case clientCAs == nil && requireClientCert:
		cfg.ClientAuth = tls.RequireAnyClientCert
		cfg.VerifyConnection = func(tls.ConnectionState) error {
			return errors.New("tls: a client certificate is required but the server has no client CA to verify it")
		}
	case clientCAs == nil:
		cfg.ClientAuth = tls.NoClientCert
	default:
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if requireClientCert {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
		cfg.SessionTicketsDisabled = true
		// Each handshake runs on cfg as it is then (a caller may still change, say, MinVersion
		// after this returns) with the bundle loaded last.
		cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
			c := cfg.Clone()
			c.GetConfigForClient = nil
			c.ClientCAs = clientCAs.Pool()
			return c, nil
		}
	}
	return cfg
}

// ClientConfig returns the configuration of a TLS 1.3 client presenting kp, or no certificate
// when kp is nil.
//
// With rootCAs, the server's certificate is verified, at every handshake including resumed
// sessions, against the pool rootCAs holds at that moment and for serverName (a DNS name or an
// IP address; empty means the name the connection was dialed with, and then dialing an IP
// address fails: give the name). Without rootCAs it is verified against the system's roots for
// serverName, as the standard library does.
func ClientConfig(kp *KeyPair, rootCAs *CAPool, serverName string) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		ServerName: serverName,
	}
	if kp != nil {
		cfg.GetClientCertificate = kp.GetClientCertificate
	}
	if rootCAs != nil {
		// The standard library would verify against a pool fixed in the Config; it is told not
		// to, and VerifyConnection, which runs at every handshake, verifies against the current
		// one instead.
		cfg.InsecureSkipVerify = true
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			name := serverName
			if name == "" {
				name = cs.ServerName
			}
			if name == "" {
				return errors.New("tls: no server name to verify the server's certificate for; give ClientConfig one")
			}
			return verify(cs.PeerCertificates, rootCAs.Pool(), name, x509.ExtKeyUsageServerAuth)
		}
	}
	return cfg
}

// verify checks that certs[0] chains to roots through certs[1:], is valid now, is usable for
// usage and, when name is not empty, is a certificate for name.
func verify(certs []*x509.Certificate, roots *x509.CertPool, name string, usage x509.ExtKeyUsage) error {
	if len(certs) == 0 {
		return errors.New("tls: the peer presented no certificate")
	}
	opts := x509.VerifyOptions{
		Roots:         roots,
		Intermediates: x509.NewCertPool(),
		DNSName:       name,
		KeyUsages:     []x509.ExtKeyUsage{usage},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return fmt.Errorf("tls: verifying the peer's certificate: %w", err)
	}
	return nil
}
