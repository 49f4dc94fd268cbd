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
	chain := make([]*x509.Certificate, 0, len(pair.Certificate))
	for _, der := range pair.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("%w: the certificate chain: %w", ErrBadResponse, err)
		}
		chain = append(chain, c)
	}
	got, err := tlsconfig.IdentityOf(chain[0])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadResponse, err)
	}
	if got != want {
		return nil, fmt.Errorf("%w: the certificate names %s, the spoke asked for %s", ErrBadResponse, got, want)
	}
	if err := verifyChain(chain, bundlePEM, x509.ExtKeyUsageClientAuth, "", now); err != nil {
		return nil, fmt.Errorf("%w: the certificate does not verify with the hub's CA bundle as a client certificate: %w", ErrBadResponse, err)
	}
	return chain[0], nil
}

// checkBundle checks that a CA bundle the hub sent verifies the hub that sent it (the peer of
// the call, for serverName): storing a bundle that does not would lock the spoke out.
func checkBundle(bundlePEM []byte, p *peer.Peer, serverName string) error {
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return fmt.Errorf("%w: no TLS peer certificate to check the CA bundle with", ErrBadResponse)
	}
	if err := verifyChain(info.State.PeerCertificates, bundlePEM, x509.ExtKeyUsageServerAuth, serverName, time.Now()); err != nil {
		return fmt.Errorf("%w: the CA bundle does not verify the hub that sent it: %w", ErrBadResponse, err)
	}
	return nil
}

// verifyChain checks that chain[0] chains to the CA certificates of bundlePEM through
// chain[1:], is usable for usage and valid at now, and, when dnsName is not empty, is a
// certificate for dnsName (a DNS name or an IP address).
func verifyChain(chain []*x509.Certificate, bundlePEM []byte, usage x509.ExtKeyUsage, dnsName string, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("no certificate")
	}
	roots, err := tlsconfig.NewStaticCAPool(bundlePEM)
	if err != nil {
		return fmt.Errorf("the CA bundle: %w", err)
	}
	opts := x509.VerifyOptions{
		Roots:         roots.Pool(),
		Intermediates: x509.NewCertPool(),
		DNSName:       dnsName,
		KeyUsages:     []x509.ExtKeyUsage{usage},
		CurrentTime:   now,
	}
	for _, c := range chain[1:] {
		opts.Intermediates.AddCert(c)
	}
	_, err = chain[0].Verify(opts)
	return err
}
