package localfleet

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

func readCert(t *testing.T, dir string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, tlsconfig.CertFile))
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("no PEM in %s", dir)
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// verifies reports whether cert chains to roots for usage and, when name is not empty, names it.
func verifies(cert *x509.Certificate, roots *x509.CertPool, name string, usage x509.ExtKeyUsage) error {
	_, err := cert.Verify(x509.VerifyOptions{Roots: roots, DNSName: name, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

func TestPKI(t *testing.T) {
	o := Options{BinDir: "bin", WorkDir: t.TempDir(), HubGRPC: "10.77.0.1:8470", HubAdmin: "10.77.0.1:8472", HubHTTP: "hub.example:8471",
		Regions: []Region{{Name: "east", Cluster: "east-1", EPP: "127.0.1.254:9002", SpokeHTTP: "127.0.0.1:8481"}}}
	f := &Fleet{Opts: o}
	if err := f.setupPKI(); err != nil {
		t.Fatal(err)
	}
	r := o.Regions[0]

	// The hub's serving certificate names every address it is dialed at, and no fleet identity.
	hub := readCert(t, f.hubServing())
	for _, name := range []string{"10.77.0.1", "127.0.0.1", "localhost", "hub.example"} {
		if err := verifies(hub, f.roots, name, x509.ExtKeyUsageServerAuth); err != nil {
			t.Errorf("hub certificate for %s: %v", name, err)
		}
	}
	if err := verifies(hub, f.roots, "10.77.0.2", x509.ExtKeyUsageServerAuth); err == nil {
		t.Error("hub certificate valid for 10.77.0.2, an address it was not issued for")
	}
	if id, err := tlsconfig.IdentityOf(hub); err != nil || id.TrustDomain == TrustDomain {
		t.Errorf("hub certificate identity %v (%v): want one outside the fleet's trust domain", id, err)
	}

	// The EPP's (and the spoke's HTTP port's) serving certificate.
	epp := readCert(t, f.eppServing(r))
	for _, name := range []string{"127.0.1.254", "127.0.0.1"} {
		if err := verifies(epp, f.roots, name, x509.ExtKeyUsageServerAuth); err != nil {
			t.Errorf("EPP certificate for %s: %v", name, err)
		}
	}

	// Client identities: the cluster and the admin, in the fleet's trust domain.
	for dir, want := range map[string]tlsconfig.Identity{
		f.spokeCredentials(r): {TrustDomain: TrustDomain, Kind: tlsconfig.KindCluster, Name: "east-1"},
		f.HubctlCredentials(): {TrustDomain: TrustDomain, Kind: tlsconfig.KindUser, Name: AdminUser},
		f.gatewayClient(r):    {TrustDomain: infraTrustDomain, Kind: tlsconfig.KindUser, Name: "gateway-east-1"},
	} {
		c := readCert(t, dir)
		if id, err := tlsconfig.IdentityOf(c); err != nil || id != want {
			t.Errorf("%s: identity %v (%v), want %v", dir, id, err, want)
		}
		if err := verifies(c, f.roots, "", x509.ExtKeyUsageClientAuth); err != nil {
			t.Errorf("%s: %v", dir, err)
		}
		ca, err := os.ReadFile(filepath.Join(dir, tlsconfig.CAFile))
		if err != nil || !bytes.Equal(ca, f.ca.CertPEM()) {
			t.Errorf("%s: ca.crt is not the fleet CA (%v)", dir, err)
		}
		if st, err := os.Stat(filepath.Join(dir, tlsconfig.KeyFile)); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: key file %v (%v), want mode 0600", dir, st.Mode(), err)
		}
	}

	// The hub's --pki-dir holds the CA's key, for signing join requests.
	keyPEM, err := os.ReadFile(filepath.Join(f.pkiDir(), "ca.key"))
	if err != nil || !bytes.Equal(keyPEM, f.ca.KeyPEM()) {
		t.Fatalf("pki dir's ca.key: %v", err)
	}

	// A second start in the same work directory keeps the CA: what the first issued still verifies.
	again := &Fleet{Opts: o}
	if err := again.setupPKI(); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.ca.CertPEM(), f.ca.CertPEM()) {
		t.Fatal("a second start made a new CA")
	}
	if err := verifies(hub, again.roots, "10.77.0.1", x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatalf("the first start's hub certificate after the second: %v", err)
	}
}

func TestOptionsRequireTheHubsAddresses(t *testing.T) {
	err := Options{BinDir: "bin", WorkDir: t.TempDir(), HubGRPC: "127.0.0.1:8470", HubHTTP: "127.0.0.1:8471"}.validate()
	if err == nil || err.Error() != "localfleet: HubAdmin is required" {
		t.Fatalf("options without the admin address: %v", err)
	}
}
