package app

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// Files of --pki-dir.
const (
	caCertFile = tlsconfig.CAFile // ca.crt
	caKeyFile  = "ca.key"
	// HubctlDir is the directory under --pki-dir of hubctl's admin credentials (ca.crt, tls.crt,
	// tls.key), the layout hubctl's --credentials-dir reads.
	HubctlDir = "hubctl"
)

const (
	// caValidity is the validity of the CA the hub makes in --pki-dir.
	caValidity = 10 * 365 * 24 * time.Hour
	// servingValidity is the validity of the serving certificate the hub issues itself at each
	// start (it never outlives the CA).
	servingValidity = 10 * 365 * 24 * time.Hour
	// hubctlValidity is the validity of the admin credentials made at the first start.
	hubctlValidity = 365 * 24 * time.Hour
)

// servingRole is the role label of the serving certificate's expiry gauge.
const servingRole = "hub-server"

// hubTLS is the TLS material the hub serves with.
type hubTLS struct {
	// ca signs join requests and renewals; nil when the hub has no CA key (the join flow is off).
	ca *tlsconfig.CA
	// caCert is the signing CA's certificate (the first of the bundle), whose SPKI hash spokes pin.
	caCert *x509.Certificate
	// bundle returns the CA bundle spokes are given (Discover, Join, Renew): the CA certificate
	// file as it is now.
	bundle func() []byte
	// serving is the serving key pair of every port; clientCAs verifies client certificates.
	serving   *tlsconfig.KeyPair
	clientCAs *tlsconfig.CAPool
	// servingCAs verifies the other replicas' serving certificates: the CA bundle file.
	servingCAs *tlsconfig.CAPool
	// peer is this replica's client certificate for the other replicas; nil when the hub can
	// neither issue one nor was given one (the replicas then exchange no reports).
	peer *tlsconfig.KeyPair
	// runners reload the files above until their context ends.
	runners []func(context.Context) error
}

// setUpTLS loads or makes the hub's CA, makes hubctl's admin credentials at the first start, and
// loads or issues the serving certificate; it logs the CA's hash for spokes to pin.
func setUpTLS(cfg *Config, reg prometheus.Registerer, log *slog.Logger) (*hubTLS, error) {
	log = log.With("component", "tls")
	t := &hubTLS{}
	bundleFile := cfg.CACertFile
	var err error
	switch {
	case cfg.CACertFile != "" && cfg.CAKeyFile != "":
		t.ca, err = loadCA(cfg.CACertFile, cfg.CAKeyFile)
	case cfg.CACertFile != "":
		t.caCert, err = firstCertificate(cfg.CACertFile)
		if err != nil {
			err = fmt.Errorf("hub CA: %w", err)
		} else if !t.caCert.IsCA {
			err = fmt.Errorf("hub CA %s: the first certificate (%q) is not a CA's", cfg.CACertFile, t.caCert.Subject.CommonName)
		}
	default:
		bundleFile = filepath.Join(cfg.PKIDir, caCertFile)
		t.ca, err = loadOrCreateCA(cfg.PKIDir, log)
	}
	if err != nil {
		return nil, err
	}
	if t.ca != nil {
		t.caCert = t.ca.Certificate()
	}
	initial, err := os.ReadFile(bundleFile)
	if err != nil {
		return nil, fmt.Errorf("hub CA: %w", err)
	}
	t.bundle = func() []byte {
		// Read at each call, so that a CA added to the file for a rotation reaches spokes; a
		// file caught half-written gives the bundle read at start.
		if data, err := os.ReadFile(bundleFile); err == nil {
			if _, err := tlsconfig.NewStaticCAPool(data); err == nil {
				return data
			}
		}
		return initial
	}

	if t.ca != nil && cfg.PKIDir != "" {
		admin := tlsconfig.Identity{TrustDomain: cfg.TrustDomain, Kind: tlsconfig.KindUser, Name: cfg.AdminUsers[0]}
		if err := ensureHubctlCredentials(filepath.Join(cfg.PKIDir, HubctlDir), t.ca, initial, admin, log); err != nil {
			return nil, err
		}
	}

	if cfg.TLSCertFile != "" {
		t.serving, err = tlsconfig.NewKeyPair(cfg.TLSCertFile, cfg.TLSKeyFile, tlsconfig.KeyPairOptions{Logger: log, Registerer: reg, Role: servingRole})
		if err != nil {
			return nil, fmt.Errorf("--tls-cert-file, --tls-key-file: %w", err)
		}
	} else {
		t.serving, err = issueServing(t.ca, cfg.TrustDomain, cfg.TLSSANs)
		if err != nil {
			return nil, err
		}
		if err := t.serving.RegisterExpiry(reg, servingRole); err != nil {
			return nil, err
		}
	}
	clientCAFile := cfg.ClientCAFile
	if clientCAFile == "" {
		clientCAFile = bundleFile
	}
	t.clientCAs, err = tlsconfig.NewCAPool(clientCAFile, tlsconfig.CAPoolOptions{Logger: log})
	if err != nil {
		return nil, fmt.Errorf("client CA bundle: %w", err)
	}
	t.runners = append(t.runners, t.serving.Run, t.clientCAs.Run)
	if t.servingCAs, err = tlsconfig.NewCAPool(bundleFile, tlsconfig.CAPoolOptions{Logger: log}); err != nil {
		return nil, fmt.Errorf("hub CA bundle: %w", err)
	}
	t.runners = append(t.runners, t.servingCAs.Run)
	if err := t.setUpPeer(cfg, reg, log); err != nil {
		return nil, err
	}

	log.Info("hub CA loaded", "caHash", tlsconfig.SPKIHash(t.caCert), "caFile", bundleFile,
		"joinFlow", t.ca != nil, "clientCAFile", clientCAFile, "servingCertificate", servingSource(cfg))
	return t, nil
}

// peerRole is the role label of the peer certificate's expiry gauge.
const peerRole = "hub-peer"

// setUpPeer loads or issues this replica's client certificate for the other replicas.
func (t *hubTLS) setUpPeer(cfg *Config, reg prometheus.Registerer, log *slog.Logger) error {
	var err error
	switch {
	case cfg.PeerCertFile != "":
		t.peer, err = tlsconfig.NewKeyPair(cfg.PeerCertFile, cfg.PeerKeyFile, tlsconfig.KeyPairOptions{Logger: log, Registerer: reg, Role: peerRole})
		if err != nil {
			return fmt.Errorf("--peer-cert-file, --peer-key-file: %w", err)
		}
		t.runners = append(t.runners, t.peer.Run)
		return nil
	case t.ca == nil:
		log.Warn("no peer certificate: this replica reads no other replica's reports; give --peer-cert-file and --peer-key-file when running several replicas with --ca-cert-file and no --ca-key-file")
		return nil
	}
	id := tlsconfig.Identity{TrustDomain: cfg.TrustDomain, Kind: tlsconfig.KindHub, Name: cfg.HubID}
	certPEM, keyPEM, err := t.ca.Issue(id, nil, nil, servingValidity)
	if err != nil {
		return fmt.Errorf("the replica's peer certificate (--hub-id must be a DNS label): %w", err)
	}
	if t.peer, err = tlsconfig.NewStaticKeyPair(certPEM, keyPEM); err != nil {
		return err
	}
	return t.peer.RegisterExpiry(reg, peerRole)
}

func servingSource(cfg *Config) string {
	if cfg.TLSCertFile != "" {
		return cfg.TLSCertFile
	}
	return "issued by the hub CA at start"
}

// loadCA reads a CA certificate (or bundle, the signing CA first) and its key.
func loadCA(certFile, keyFile string) (*tlsconfig.CA, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("hub CA: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("hub CA: %w", err)
	}
	ca, err := tlsconfig.LoadCA(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("hub CA %s, %s: %w", certFile, keyFile, err)
	}
	return ca, nil
}

// firstCertificate reads the first certificate of a PEM file.
func firstCertificate(file string) (*x509.Certificate, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%s: no PEM certificate in it", file)
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		return cert, nil
	}
}

// loadOrCreateCA loads the CA in dir, or makes one there when neither of its files exists.
func loadOrCreateCA(dir string, log *slog.Logger) (*tlsconfig.CA, error) {
	certFile, keyFile := filepath.Join(dir, caCertFile), filepath.Join(dir, caKeyFile)
	certExists, err := exists(certFile)
	if err != nil {
		return nil, err
	}
	keyExists, err := exists(keyFile)
	if err != nil {
		return nil, err
	}
	switch {
	case certExists && keyExists:
		if fi, err := os.Stat(keyFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("the hub CA's key is readable by others than its owner; chmod 600 it", "file", keyFile, "mode", fi.Mode().Perm().String())
		}
		return loadCA(certFile, keyFile)
	case certExists || keyExists:
		present, absent := certFile, keyFile
		if keyExists {
			present, absent = keyFile, certFile
		}
		return nil, fmt.Errorf("--pki-dir %s: %s exists but %s does not; restore it, or remove both to make a new CA (every spoke and hubctl then needs new credentials)", dir, present, absent)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("--pki-dir: %w", err)
	}
	ca, err := tlsconfig.NewCA("spillway hub CA", caValidity)
	if err != nil {
		return nil, err
	}
	// The key first: a start that stops in between finds a key without a certificate and says so,
	// rather than a certificate whose key is lost.
	if err := tlsconfig.WriteFileAtomic(keyFile, ca.KeyPEM(), 0o600); err != nil {
		return nil, fmt.Errorf("--pki-dir: %w", err)
	}
	if err := tlsconfig.WriteFileAtomic(certFile, ca.CertPEM(), 0o644); err != nil {
		return nil, fmt.Errorf("--pki-dir: %w", err)
	}
	log.Info("hub CA created", "dir", dir, "caHash", tlsconfig.SPKIHash(ca.Certificate()))
	return ca, nil
}

// ensureHubctlCredentials writes hubctl's credentials for admin into dir when none are there;
// it leaves existing ones alone and warns when they have expired.
func ensureHubctlCredentials(dir string, ca *tlsconfig.CA, bundle []byte, admin tlsconfig.Identity, log *slog.Logger) error {
	files := []string{tlsconfig.CAFile, tlsconfig.CertFile, tlsconfig.KeyFile}
	var present []string
	for _, f := range files {
		ok, err := exists(filepath.Join(dir, f))
		if err != nil {
			return err
		}
		if ok {
			present = append(present, f)
		}
	}
	switch len(present) {
	case len(files):
		cert, err := firstCertificate(filepath.Join(dir, tlsconfig.CertFile))
		if err != nil {
			return fmt.Errorf("hubctl credentials in %s: %w", dir, err)
		}
		if time.Now().After(cert.NotAfter) {
			log.Warn("hubctl's admin credentials have expired; remove the directory to have new ones issued at the next start", "dir", dir, "notAfter", cert.NotAfter)
		}
		return nil
	case 0:
	default:
		return fmt.Errorf("hubctl credentials in %s: only %v of %v are there; remove the directory to have new ones issued", dir, present, files)
	}
	certPEM, keyPEM, err := ca.Issue(admin, nil, nil, hubctlValidity)
	if err != nil {
		return fmt.Errorf("hubctl credentials: %w", err)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("hubctl credentials: %w", err)
	}
	for _, w := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{tlsconfig.CAFile, bundle, 0o644},
		{tlsconfig.KeyFile, keyPEM, 0o600},
		{tlsconfig.CertFile, certPEM, 0o644},
	} {
		if err := tlsconfig.WriteFileAtomic(filepath.Join(dir, w.name), w.data, w.mode); err != nil {
			return fmt.Errorf("hubctl credentials: %w", err)
		}
	}
	log.Info("hubctl admin credentials created", "dir", dir, "identity", admin.String())
	return nil
}

// servingIdentity is the URI SAN of the serving certificate the hub issues itself: a trust domain
// of its own, which the hub grants nothing, so that the certificate can act neither as a cluster
// nor as a hubctl user.
func servingIdentity(trustDomain string) tlsconfig.Identity {
	return tlsconfig.Identity{TrustDomain: "infra." + trustDomain, Kind: tlsconfig.KindUser, Name: "hub"}
}

// issueServing issues a serving certificate for localhost, 127.0.0.1, ::1, the host name and
// sans. Its key never leaves the process.
func issueServing(ca *tlsconfig.CA, trustDomain string, sans []string) (*tlsconfig.KeyPair, error) {
	if ca == nil {
		return nil, errors.New("the hub has no CA key to issue its serving certificate: give --tls-cert-file and --tls-key-file")
	}
	names, ips := servingNames(sans)
	certPEM, keyPEM, err := ca.Issue(servingIdentity(trustDomain), names, ips, servingValidity)
	if err != nil {
		return nil, fmt.Errorf("the hub's serving certificate: %w", err)
	}
	return tlsconfig.NewStaticKeyPair(certPEM, keyPEM)
}

// servingNames are the SANs of the serving certificate the hub issues itself.
func servingNames(sans []string) (names []string, ips []net.IP) {
	names = []string{"localhost"}
	ips = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	if h, err := os.Hostname(); err == nil && h != "localhost" && len(validation.IsDNS1123Subdomain(h)) == 0 {
		names = append(names, h)
	}
	for _, san := range sans {
		if ip := net.ParseIP(san); ip != nil {
			ips = append(ips, ip)
		} else {
			names = append(names, san)
		}
	}
	return names, ips
}

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, err
	}
}
