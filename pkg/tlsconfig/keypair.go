package tlsconfig

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// KeyPairOptions configure NewKeyPair.
type KeyPairOptions struct {
	// Interval is how often Run looks at the files' modification time and size; zero means
	// DefaultInterval (1 s).
	Interval time.Duration
	// Logger receives reload warnings; nil discards them.
	Logger *slog.Logger
	// Registerer, when not nil, gets the gauge spillway_tls_certificate_expiry_timestamp_seconds
	// of this key pair; nil registers nothing.
	Registerer prometheus.Registerer
	// Role is the gauge's role label, such as "hub-server" or "spoke-client"; required with a
	// Registerer, unused without.
	Role string
}

// KeyPair is a certificate and its private key read from PEM files, reloaded by Run when the
// files change. Its methods are safe for concurrent use.
type KeyPair struct {
	certFile, keyFile string
	current           atomic.Pointer[tls.Certificate]
	reloader          *reloader
}

// NewKeyPair loads the certificate chain in certFile and the private key in keyFile, and fails
// when either cannot be read or they do not match.
func NewKeyPair(certFile, keyFile string, opts KeyPairOptions) (*KeyPair, error) {
	if opts.Registerer != nil && opts.Role == "" {
		return nil, errors.New("tls key pair: a Role is required to register the expiry gauge")
	}
	kp := &KeyPair{certFile: certFile, keyFile: keyFile}
	log := opts.Logger
	if log != nil {
		log = log.With("component", "tls", "role", opts.Role)
	}
	r, err := newReloader([]string{certFile, keyFile}, opts.Interval, log, kp.load)
	if err != nil {
		return nil, err
	}
	kp.reloader = r
	if opts.Registerer != nil {
		if err := kp.RegisterExpiry(opts.Registerer, opts.Role); err != nil {
			return nil, err
		}
	}
	return kp, nil
}

// RegisterExpiry registers the gauge spillway_tls_certificate_expiry_timestamp_seconds of the key
// pair, under role: NewKeyPair does it with KeyPairOptions.Registerer; a static key pair (made at
// start, say) needs it too, for an alert before it expires.
func (kp *KeyPair) RegisterExpiry(reg prometheus.Registerer, role string) error {
	if role == "" {
		return errors.New("tls key pair: a Role is required to register the expiry gauge")
	}
	if err := reg.Register(newExpiryGauge(role, kp.NotAfter)); err != nil {
		return fmt.Errorf("tls key pair %s: registering the expiry gauge: %w", role, err)
	}
	return nil
}

func (kp *KeyPair) load() error {
	cert, err := tls.LoadX509KeyPair(kp.certFile, kp.keyFile)
	if err != nil {
		return fmt.Errorf("tls key pair %s, %s: %w", kp.certFile, kp.keyFile, err)
	}
	if cert.Leaf == nil { // GODEBUG x509keypairleaf=0
		if cert.Leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("tls key pair %s: %w", kp.certFile, err)
		}
	}
	kp.current.Store(&cert)
	return nil
}

// Run reloads the key pair whenever its files change, until ctx ends; it then returns nil. A
// reload that fails keeps the previous key pair and logs a warning.
func (kp *KeyPair) Run(ctx context.Context) error { return kp.reloader.run(ctx) }

// Certificate returns the key pair loaded last.
func (kp *KeyPair) Certificate() *tls.Certificate { return kp.current.Load() }

// GetCertificate serves as tls.Config.GetCertificate: it presents the key pair loaded last.
func (kp *KeyPair) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return kp.current.Load(), nil
}

// GetClientCertificate serves as tls.Config.GetClientCertificate: it presents the key pair loaded
// last, whatever CAs the server asks for.
func (kp *KeyPair) GetClientCertificate(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
	return kp.current.Load(), nil
}

// NotAfter is when the certificate loaded last stops being valid.
func (kp *KeyPair) NotAfter() time.Time { return kp.current.Load().Leaf.NotAfter }
