package faults

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// TrustDomain is the fleet's trust domain (the hub's default).
const TrustDomain = "spillway.local"

// infraTrustDomain names the servers' and gateways' certificates, which identify no cluster or
// hubctl user.
const infraTrustDomain = "infra.spillway.local"

// pki is the fleet's CA and the credentials directories it issued, under dir.
type pki struct {
	dir string
	ca  *tlsconfig.CA
}

func newPKI(dir string) (*pki, error) {
	ca, err := tlsconfig.NewCA("spillway fault suite CA", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	p := &pki{dir: dir, ca: ca}
	if err := p.write(p.caDir(), map[string][]byte{tlsconfig.CAFile: ca.CertPEM(), "ca.key": ca.KeyPEM()}); err != nil {
		return nil, err
	}
	return p, nil
}

// caDir holds ca.crt and ca.key: a hub's --pki-dir starts as a copy of it.
func (p *pki) caDir() string { return filepath.Join(p.dir, "ca") }

// CAFile is the CA certificate every client of the fleet verifies with.
func (p *pki) CAFile() string { return filepath.Join(p.caDir(), tlsconfig.CAFile) }

// issue writes a credentials directory (ca.crt, tls.crt, tls.key) for a user or cluster identity
// with the given IP SANs (localhost and loopback always), and returns it.
func (p *pki) issue(name string, id tlsconfig.Identity, ips ...string) (string, error) {
	dir := filepath.Join(p.dir, name)
	sans := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	for _, ip := range ips {
		parsed := net.ParseIP(ip)
		if parsed == nil {
			return "", fmt.Errorf("faults: SAN %q is no IP address", ip)
		}
		sans = append(sans, parsed)
	}
	certPEM, keyPEM, err := p.ca.Issue(id, []string{"localhost"}, sans, 24*time.Hour)
	if err != nil {
		return "", err
	}
	return dir, p.write(dir, map[string][]byte{tlsconfig.CAFile: p.ca.CertPEM(), tlsconfig.CertFile: certPEM, tlsconfig.KeyFile: keyPEM})
}

// hubPKIDir copies the CA into a new --pki-dir for one hub replica.
func (p *pki) hubPKIDir(name string) (string, error) {
	dir := filepath.Join(p.dir, "pki-"+name)
	return dir, p.write(dir, map[string][]byte{tlsconfig.CAFile: p.ca.CertPEM(), "ca.key": p.ca.KeyPEM()})
}

func (p *pki) write(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

func infra(name string) tlsconfig.Identity {
	return tlsconfig.Identity{TrustDomain: infraTrustDomain, Kind: tlsconfig.KindUser, Name: name}
}

func cluster(id string) tlsconfig.Identity {
	return tlsconfig.Identity{TrustDomain: TrustDomain, Kind: tlsconfig.KindCluster, Name: id}
}

func user(name string) tlsconfig.Identity {
	return tlsconfig.Identity{TrustDomain: TrustDomain, Kind: tlsconfig.KindUser, Name: name}
}
