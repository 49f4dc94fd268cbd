package tlsconfig

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
	"time"
)

// CAPoolOptions configure NewCAPool.
type CAPoolOptions struct {
	// Interval is how often Run looks at the file's modification time and size; zero means
	// DefaultInterval (1 s).
	Interval time.Duration
	// Logger receives reload warnings; nil discards them.
	Logger *slog.Logger
}

// CAPool is a set of trusted CA certificates read from a PEM bundle file, reloaded by Run when
// the file changes. Its methods are safe for concurrent use.
type CAPool struct {
	file     string
	current  atomic.Pointer[x509.CertPool]
	reloader *reloader
}

// NewCAPool loads the PEM bundle in file, and fails when it cannot be read or holds no
// certificate.
func NewCAPool(file string, opts CAPoolOptions) (*CAPool, error) {
	p := &CAPool{file: file}
	log := opts.Logger
	if log != nil {
		log = log.With("component", "tls")
	}
	r, err := newReloader([]string{file}, opts.Interval, log, p.load)
	if err != nil {
		return nil, err
	}
	p.reloader = r
	return p, nil
}

func (p *CAPool) load() error {
	data, err := os.ReadFile(p.file)
	if err != nil {
		return fmt.Errorf("tls CA bundle: %w", err)
	}
	pool, err := parseBundle(data)
	if err != nil {
		return fmt.Errorf("tls CA bundle %s: %w", p.file, err)
	}
	p.current.Store(pool)
	return nil
}

// parseBundle reads every CERTIFICATE block of a PEM bundle. Unlike
// x509.CertPool.AppendCertsFromPEM it fails on a block it cannot parse, so that a bundle caught
// half-written does not replace a whole one.
func parseBundle(data []byte) (*x509.CertPool, error) {
	certs, err := parseCerts(data)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}

// parseCerts reads every CERTIFICATE block of a PEM bundle, skipping other blocks; it fails on a
// certificate that does not parse, a truncated block, or no certificate at all.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, cert)
	}
	switch {
	case bytes.Contains(data, []byte("-----BEGIN")):
		return nil, errors.New("a PEM block is incomplete")
	case len(certs) == 0:
		return nil, errors.New("no PEM certificate in it")
	}
	return certs, nil
}

// Run reloads the bundle whenever its file changes, until ctx ends; it then returns nil. A
// reload that fails keeps the previous pool and logs a warning.
func (p *CAPool) Run(ctx context.Context) error { return p.reloader.run(ctx) }

// Pool returns the pool loaded last. It must not be modified.
func (p *CAPool) Pool() *x509.CertPool { return p.current.Load() }
