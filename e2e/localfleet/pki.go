package localfleet

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// TrustDomain is the trust domain of the fleet's identities: the hub's default, which every
// spoke's certificate (spiffe://spillway.local/cluster/<id>) and the admin's
// (spiffe://spillway.local/user/admin) are in.
const TrustDomain = "spillway.local"

// AdminUser is the hubctl user the fleet issues credentials for: in the hub's default
// --admin-users.
const AdminUser = "admin"

// infraTrustDomain names the certificates of the fleet's servers (hub, EPPs) and gateways. They
// identify no cluster and no hubctl user: the hub grants this trust domain nothing, so a serving
// key that leaked could not act as a cluster or an admin.
const infraTrustDomain = "infra.spillway.local"

// Validity of the fleet's CA and of the certificates it issues: longer than any demo runs.
const (
	caValidity   = 30 * 24 * time.Hour
	leafValidity = 7 * 24 * time.Hour
)

// The fleet's files under WorkDir: pki/ is the hub's --pki-dir (the fleet CA's ca.crt and
// ca.key; the hub adds its own hubctl/ there), credentials/<name>/ the credentials directories
// (ca.crt, tls.crt, tls.key) the processes are given.
func (f *Fleet) pkiDir() string { return filepath.Join(f.Opts.WorkDir, "pki") }

func (f *Fleet) credentialsDir(name string) string {
	return filepath.Join(f.Opts.WorkDir, "credentials", name)
}

// CAFile is the fleet CA's certificate: every Spillway port of the fleet presents a certificate it
// issued, and every client of the fleet verifies with it.
func (f *Fleet) CAFile() string { return filepath.Join(f.pkiDir(), tlsconfig.CAFile) }

// HubctlCredentials is the credentials directory of the fleet's admin, for hubctl --credentials-dir.
func (f *Fleet) HubctlCredentials() string { return f.credentialsDir("hubctl") }

// HubctlArgs are hubctl's flags that reach the fleet's hub as its admin.
func (f *Fleet) HubctlArgs() []string {
	return []string{"--hub", f.Opts.HubAdmin, "--credentials-dir", f.HubctlCredentials()}
}

func (f *Fleet) hubServing() string               { return f.credentialsDir("hub") }
func (f *Fleet) spokeCredentials(r Region) string { return f.credentialsDir("cluster-" + r.Cluster) }
func (f *Fleet) eppServing(r Region) string       { return f.credentialsDir("epp-" + r.Cluster) }
func (f *Fleet) gatewayClient(r Region) string    { return f.credentialsDir("gateway-" + r.Cluster) }

// setupPKI loads the fleet CA from the work directory, or creates it there, and issues every
// certificate the fleet's processes present: the hub's serving certificate, one cluster
// certificate per region, each region's EPP serving certificate (which its spoke's HTTP port
// presents too) and gateway client certificate, and the admin's for hubctl.
func (f *Fleet) setupPKI() error {
	ca, err := f.loadOrCreateCA()
	if err != nil {
		return err
	}
	f.ca = ca
	o := f.Opts
	hubNames, hubIPs := sans(o.HubGRPC, o.HubAdmin, o.HubHTTP)
	if err := f.issue(f.hubServing(), infra("hub"), hubNames, hubIPs); err != nil {
		return err
	}
	if err := f.issue(f.HubctlCredentials(), tlsconfig.Identity{TrustDomain: TrustDomain, Kind: tlsconfig.KindUser, Name: AdminUser}, nil, nil); err != nil {
		return err
	}
	for _, r := range o.Regions {
		if err := f.issue(f.spokeCredentials(r), tlsconfig.Identity{TrustDomain: TrustDomain, Kind: tlsconfig.KindCluster, Name: r.Cluster}, nil, nil); err != nil {
			return err
		}
		names, ips := sans(r.EPP, r.SpokeHTTP)
		if err := f.issue(f.eppServing(r), infra("epp-"+r.Cluster), names, ips); err != nil {
			return err
		}
		if err := f.issue(f.gatewayClient(r), infra("gateway-"+r.Cluster), nil, nil); err != nil {
			return err
		}
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Certificate())
	f.roots = pool
	admin, err := tls.LoadX509KeyPair(filepath.Join(f.HubctlCredentials(), tlsconfig.CertFile), filepath.Join(f.HubctlCredentials(), tlsconfig.KeyFile))
	if err != nil {
		return fmt.Errorf("the fleet admin's credentials: %w", err)
	}
	f.admin = admin
	return nil
}

func infra(name string) tlsconfig.Identity {
	return tlsconfig.Identity{TrustDomain: infraTrustDomain, Kind: tlsconfig.KindUser, Name: name}
}

// loadOrCreateCA reads the CA a previous start left in the work directory, or creates one.
func (f *Fleet) loadOrCreateCA() (*tlsconfig.CA, error) {
	certFile, keyFile := f.CAFile(), filepath.Join(f.pkiDir(), "ca.key")
	certPEM, errCert := os.ReadFile(certFile)
	keyPEM, errKey := os.ReadFile(keyFile)
	if errCert == nil && errKey == nil {
		ca, err := tlsconfig.LoadCA(certPEM, keyPEM)
		if err != nil {
			return nil, fmt.Errorf("the fleet CA in %s: %w", f.pkiDir(), err)
		}
		return ca, nil
	}
	for _, err := range []error{errCert, errKey} {
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("the fleet CA: %w", err)
		}
	}
	ca, err := tlsconfig.NewCA("spillway local fleet CA", caValidity)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(f.pkiDir(), 0o700); err != nil {
		return nil, err
	}
	if err := writeFiles(f.pkiDir(), map[string][]byte{"ca.key": ca.KeyPEM(), tlsconfig.CAFile: ca.CertPEM()}); err != nil {
		return nil, fmt.Errorf("the fleet CA: %w", err)
	}
	return ca, nil
}

// issue writes a credentials directory: ca.crt (the fleet CA), tls.crt and tls.key for id with
// the given SANs.
func (f *Fleet) issue(dir string, id tlsconfig.Identity, dnsNames []string, ips []net.IP) error {
	certPEM, keyPEM, err := f.ca.Issue(id, dnsNames, ips, leafValidity)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	if err := writeFiles(dir, map[string][]byte{tlsconfig.CAFile: f.ca.CertPEM(), tlsconfig.CertFile: certPEM, tlsconfig.KeyFile: keyPEM}); err != nil {
		return fmt.Errorf("credentials of %s: %w", id, err)
	}
	return nil
}

// writeFiles writes each file through a temporary file and a rename, so that a process that
// reloads it never reads half of one; keys are readable by their owner only.
func writeFiles(dir string, files map[string][]byte) error {
	for name, data := range files {
		mode := os.FileMode(0o644)
		if filepath.Ext(name) == ".key" {
			mode = 0o600
		}
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, mode); err != nil {
			return err
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			return err
		}
	}
	return nil
}

// sans returns the names a serving certificate needs: localhost, the loopback addresses and the
// host of every address given (an IP address or a DNS name; empty addresses are skipped).
func sans(addrs ...string) (dnsNames []string, ips []net.IP) {
	dnsNames = []string{"localhost"}
	ips = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, a := range addrs {
		if a == "" {
			continue
		}
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			host = a
		}
		if ip := net.ParseIP(host); ip != nil {
			if !slices.ContainsFunc(ips, ip.Equal) {
				ips = append(ips, ip)
			}
		} else if host != "" && !slices.Contains(dnsNames, host) {
			dnsNames = append(dnsNames, host)
		}
	}
	return dnsNames, ips
}

// TLSConfig is the configuration of a client of the fleet's servers: it verifies them with the
// fleet CA and presents no certificate.
func (f *Fleet) TLSConfig() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: f.roots}
}

// HTTPClient reads the fleet's HTTPS ports (the hub's and the spokes' /metrics, /healthz,
// /readyz, /spill), verifying them with the fleet CA.
func (f *Fleet) HTTPClient() *http.Client { return f.httpClient }

// SpokeURL is the HTTPS URL of path on a region's spoke HTTP port.
func (f *Fleet) SpokeURL(r Region, path string) string { return "https://" + r.SpokeHTTP + path }

// HubURL is the HTTPS URL of path on the hub's HTTP port.
func (f *Fleet) HubURL(path string) string { return "https://" + f.Opts.HubHTTP + path }

// DialAdmin connects to the hub's admin port as the fleet's admin (mutual TLS).
func (f *Fleet) DialAdmin() (*grpc.ClientConn, error) {
	cfg := f.TLSConfig()
	cfg.Certificates = []tls.Certificate{f.admin}
	conn, err := grpc.NewClient(f.Opts.HubAdmin, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return nil, fmt.Errorf("hub admin address %q: %w", f.Opts.HubAdmin, err)
	}
	return conn, nil
}
