package join

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// Errors of the join flow and of renewals; the messages wrapping them say more.
var (
	// ErrCAHashMismatch: no CA certificate of the hub's bundle has the pinned hash. The token
	// was not sent.
	ErrCAHashMismatch = errors.New("the hub's CA does not match --hub-ca-hash")
	// ErrTrustDomain: the hub's trust domain is not the spoke's.
	ErrTrustDomain = errors.New("the hub's trust domain differs from --trust-domain")
	// ErrDenied: an admin denied the join request.
	ErrDenied = errors.New("the join request was denied")
	// ErrRefused: the hub refused the request (a bad, expired or foreign token, or a cluster ID
	// the token does not cover).
	ErrRefused = errors.New("the hub refused the join request")
	// ErrBadResponse: the hub answered with something the spoke cannot use: a certificate for
	// another identity or key, not from the bundle, or a bundle that does not verify the hub.
	ErrBadResponse = errors.New("the hub's answer is unusable")
)

// checkIssued checks an issued certificate before it is stored: it must be for keyPEM's key,
// name exactly want, and chain to bundlePEM as a client certificate valid now. It returns the
// leaf.
func checkIssued(certPEM, keyPEM, bundlePEM []byte, want tlsconfig.Identity, now time.Time) (*x509.Certificate, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%w: the certificate is not one for the spoke's key: %w", ErrBadResponse, err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("%w: the certificate: %w", ErrBadResponse, err)
	}
	got, err := tlsconfig.IdentityOf(leaf)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadResponse, err)
	}
	if got != want {
		return nil, fmt.Errorf("%w: the certificate names %s, the spoke asked for %s", ErrBadResponse, got, want)
	}
	roots, err := tlsconfig.NewStaticCAPool(bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("%w: the CA bundle: %w", ErrBadResponse, err)
	}
	opts := x509.VerifyOptions{
		Roots:         roots.Pool(),
		Intermediates: x509.NewCertPool(),
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		CurrentTime:   now,
	}
	for _, der := range pair.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: the certificate chain: %w", ErrBadResponse, err)
		}
		opts.Intermediates.AddCert(c)
	}
	if _, err := leaf.Verify(opts); err != nil {
		return nil, fmt.Errorf("%w: the certificate does not verify with the hub's CA bundle as a client certificate: %w", ErrBadResponse, err)
	}
	return leaf, nil
}

// checkBundle checks that a CA bundle the hub sent verifies the hub that sent it (the peer of
// the call, for serverName): storing a bundle that does not would lock the spoke out.
func checkBundle(bundlePEM []byte, p *peer.Peer, serverName string) error {
	roots, err := tlsconfig.NewStaticCAPool(bundlePEM)
	if err != nil {
		return fmt.Errorf("%w: the CA bundle: %w", ErrBadResponse, err)
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return fmt.Errorf("%w: no TLS peer certificate to check the CA bundle with", ErrBadResponse)
	}
	certs := info.State.PeerCertificates
	opts := x509.VerifyOptions{
		Roots:         roots.Pool(),
		Intermediates: x509.NewCertPool(),
		DNSName:       serverName,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, c := range certs[1:] {
		opts.Intermediates.AddCert(c)
	}
	if _, err := certs[0].Verify(opts); err != nil {
		return fmt.Errorf("%w: the CA bundle does not verify the hub that sent it: %w", ErrBadResponse, err)
	}
	return nil
}
