package tlsconfig

import (
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"path/filepath"
	"time"
)

// Files of a credentials directory, as a Kubernetes TLS Secret (cert-manager's) holds them.
const (
	CAFile   = "ca.crt"
	CertFile = "tls.crt"
	KeyFile  = "tls.key"
)

// LoadDir loads the key pair (tls.crt, tls.key) and the CA bundle (ca.crt) of a credentials
// directory; both reload as NewKeyPair and NewCAPool do.
func LoadDir(dir string, opts KeyPairOptions) (*KeyPair, *CAPool, error) {
	kp, err := NewKeyPair(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile), opts)
	if err != nil {
		return nil, nil, err
	}
	pool, err := NewCAPool(filepath.Join(dir, CAFile), CAPoolOptions{Interval: opts.Interval, Logger: opts.Logger})
	if err != nil {
		return nil, nil, err
	}
	return kp, pool, nil
}

// NewStaticKeyPair returns a key pair of PEM bytes, which never reloads: its Run only waits for
// ctx to end.
func NewStaticKeyPair(certPEM, keyPEM []byte) (*KeyPair, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls key pair: %w", err)
	}
	if cert.Leaf == nil {
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("tls key pair: %w", err)
		}
	}
	kp := &KeyPair{reloader: &reloader{}}
	kp.current.Store(&cert)
	return kp, nil
}

// NewStaticCAPool returns the pool of a PEM bundle, which never reloads.
func NewStaticCAPool(bundlePEM []byte) (*CAPool, error) {
	pool, err := parseBundle(bundlePEM)
	if err != nil {
		return nil, fmt.Errorf("tls CA bundle: %w", err)
	}
	p := &CAPool{reloader: &reloader{}}
	p.current.Store(pool)
	return p, nil
}

// SelfSigned creates a key (ECDSA P-256) and a self-signed server certificate for dnsNames and
// ips, valid for validity from now: what a serving port presents when no certificate is
// mounted, as GIE's EPP does.
func SelfSigned(dnsNames []string, ips []net.IP, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	ca, err := NewCA("spillway-self-signed", validity+backdate)
	if err != nil {
		return nil, nil, err
	}
	// A self-signed leaf: the CA's own certificate re-issued with the server's names. Clients
	// that verify it pin it (it is its own root); most dial it without verification.
	tmpl := *ca.cert
	tmpl.Subject = pkix.Name{CommonName: "spillway"}
	tmpl.DNSNames, tmpl.IPAddresses = dnsNames, ips
	tmpl.IsCA, tmpl.MaxPathLenZero = false, false
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	tmpl.NotAfter = ca.now().Add(validity)
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, ca.signer.Public(), ca.signer)
	if err != nil {
		return nil, nil, fmt.Errorf("self-signed certificate: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), ca.keyPEM, nil
}
