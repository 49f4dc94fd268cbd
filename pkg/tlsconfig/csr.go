package tlsconfig

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"time"
)

// MaxCSRBytes bounds the PEM of a certificate request ParseCSR reads.
const MaxCSRBytes = 16 << 10

// ErrInvalidCSR is wrapped by every error of ParseCSR.
var ErrInvalidCSR = errors.New("invalid certificate request")

// NewCSR creates a key (ECDSA P-256) and a certificate request for it naming id as its one URI
// SAN. It returns both as PEM.
func NewCSR(id Identity) (csrPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if csrPEM, err = CSRFor(id, key); err != nil {
		return nil, nil, err
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return nil, nil, err
	}
	return csrPEM, keyPEM, nil
}

// CSRFor makes the PEM certificate request of an existing key naming id as its one URI SAN: a
// join that resumes with the key it stored asks for the same key again.
func CSRFor(id Identity, key crypto.Signer) ([]byte, error) {
	if err := id.validate(); err != nil {
		return nil, err
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: id.Name},
		URIs:    []*url.URL{id.URL()},
	}, key)
	if err != nil {
		return nil, fmt.Errorf("certificate request for %s: %w", id, err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// ParseCSR reads a PEM certificate request from outside: exactly one CERTIFICATE REQUEST block
// and nothing else, a valid self-signature, exactly one URI SAN that is an Identity, no e-mail
// SAN, and a key of ECDSA P-256/P-384 or RSA of 2048 to 4096 bits. What else the request asks
// for (DNS or IP SANs, extensions) is ignored by Sign.
func ParseCSR(csrPEM []byte) (*x509.CertificateRequest, Identity, error) {
	fail := func(format string, args ...any) (*x509.CertificateRequest, Identity, error) {
		return nil, Identity{}, fmt.Errorf("%w: %s", ErrInvalidCSR, fmt.Sprintf(format, args...))
	}
	if len(csrPEM) > MaxCSRBytes {
		return fail("%d bytes, at most %d allowed", len(csrPEM), MaxCSRBytes)
	}
	block, rest := pem.Decode(csrPEM)
	switch {
	case block == nil:
		return fail("no PEM block")
	case block.Type != "CERTIFICATE REQUEST":
		return fail("PEM block %q, want CERTIFICATE REQUEST", block.Type)
	case len(pemTrim(rest)) > 0:
		return fail("data after the PEM block")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return fail("%v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return fail("signature: %v", err)
	}
	switch k := csr.PublicKey.(type) {
	case *ecdsa.PublicKey:
		if k.Curve != elliptic.P256() && k.Curve != elliptic.P384() {
			return fail("ECDSA key on %s, want P-256 or P-384", k.Curve.Params().Name)
		}
	case *rsa.PublicKey:
		if n := k.N.BitLen(); n < 2048 || n > 4096 {
			return fail("RSA key of %d bits, want 2048 to 4096", n)
		}
	default:
		return fail("key type %T, want ECDSA or RSA", csr.PublicKey)
	}
	if len(csr.EmailAddresses) > 0 {
		return fail("e-mail SANs are not allowed")
	}
	if len(csr.URIs) != 1 {
		return fail("%d URI SANs, want exactly one spiffe identity", len(csr.URIs))
	}
	id, err := ParseIdentity(csr.URIs[0].String())
	if err != nil {
		return fail("%v", err)
	}
	return csr, id, nil
}

// pemTrim drops the white space pem.Decode leaves after the last block.
func pemTrim(b []byte) []byte {
	for len(b) > 0 && (b[0] == '\n' || b[0] == '\r' || b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

// Sign issues a client certificate for the key of csr, naming id as its one URI SAN and nothing
// else, valid for validity from now (it must be positive; the certificate ends with the CA's if
// that is sooner). The caller has checked that the holder of csr may be id.
func (ca *CA) Sign(csr *x509.CertificateRequest, id Identity, validity time.Duration) (certPEM []byte, err error) {
	return ca.sign(csr.PublicKey, id, validity, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil)
}

// Certificate returns the CA's certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }
