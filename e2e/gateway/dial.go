package gateway

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// EPPTLS says how the gateway reaches the Endpoint Picker. The zero value is TLS without
// verifying the EPP's certificate, which is what Envoy-based gateways do with an EPP that serves
// a self-signed certificate (GIE's default, and the spoke's when none is mounted).
type EPPTLS struct {
	// Insecure dials in plaintext, for an EPP started with --epp-secure-serving=false.
	Insecure bool
	// CAFile, when set, is the PEM bundle the EPP's certificate must chain to.
	CAFile string
	// ServerName is the name the EPP's certificate is verified for; the host of the EPP's
	// address when empty.
	ServerName string
	// CertFile and KeyFile, when set, are the client certificate the gateway presents, for an
	// EPP that requires one (--epp-client-ca-file).
	CertFile, KeyFile string
}

// Verified reports whether the EPP's certificate is verified.
func (e EPPTLS) Verified() bool { return !e.Insecure && e.CAFile != "" }

// Validate reports contradictory settings.
func (e EPPTLS) Validate() error {
	var errs []error
	if e.Insecure && (e.CAFile != "" || e.CertFile != "" || e.KeyFile != "" || e.ServerName != "") {
		errs = append(errs, errors.New("plaintext to the EPP takes no CA, server name or client certificate"))
	}
	if (e.CertFile == "") != (e.KeyFile == "") {
		errs = append(errs, errors.New("a client certificate needs both its certificate and its key file"))
	}
	return errors.Join(errs...)
}

// DialEPP returns a client connection to the EPP at addr (host:port).
func DialEPP(addr string, e EPPTLS) (*grpc.ClientConn, error) {
	if err := e.Validate(); err != nil {
		return nil, err
	}
	creds := insecure.NewCredentials()
	if !e.Insecure {
		cfg, err := e.clientConfig(addr)
		if err != nil {
			return nil, err
		}
		creds = credentials.NewTLS(cfg)
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		return nil, fmt.Errorf("EPP %q: %w", addr, err)
	}
	return conn, nil
}

func (e EPPTLS) clientConfig(addr string) (*tls.Config, error) {
	var kp *tlsconfig.KeyPair
	if e.CertFile != "" {
		var err error
		if kp, err = tlsconfig.NewKeyPair(e.CertFile, e.KeyFile, tlsconfig.KeyPairOptions{}); err != nil {
			return nil, fmt.Errorf("the gateway's client certificate: %w", err)
		}
	}
	if e.CAFile == "" {
		// Encrypted, not authenticated: the EPP's certificate is taken as it comes.
		cfg := tlsconfig.ClientConfig(kp, nil, "")
		cfg.InsecureSkipVerify = true
		return cfg, nil
	}
	bundle, err := os.ReadFile(e.CAFile)
	if err != nil {
		return nil, fmt.Errorf("the EPP's CA bundle: %w", err)
	}
	pool, err := tlsconfig.NewStaticCAPool(bundle)
	if err != nil {
		return nil, fmt.Errorf("the EPP's CA bundle %s: %w", e.CAFile, err)
	}
	name := e.ServerName
	if name == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, fmt.Errorf("EPP address %q: %w", addr, err)
		}
		name = host
	}
	return tlsconfig.ClientConfig(kp, pool, name), nil
}
