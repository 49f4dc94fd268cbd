package join

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// FuzzCheckIssued feeds the checks of the hub's answer arbitrary certificates and bundles: they
// never panic, and accept only a certificate for the spoke's key and identity from the bundle.
func FuzzCheckIssued(f *testing.F) {
	ca, err := tlsconfig.NewCA("fuzz", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	want := clusterID("east")
	csrPEM, keyPEM, err := tlsconfig.NewCSR(want)
	if err != nil {
		f.Fatal(err)
	}
	csr, _, err := tlsconfig.ParseCSR(csrPEM)
	if err != nil {
		f.Fatal(err)
	}
	good, err := ca.Sign(csr, want, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	other, err := ca.Sign(csr, clusterID("west"), time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, ca.CertPEM())
	f.Add(other, ca.CertPEM())
	f.Add(good, good)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), []byte{})
	f.Fuzz(func(t *testing.T, certPEM, bundlePEM []byte) {
		leaf, err := checkIssued(certPEM, keyPEM, bundlePEM, want, time.Now())
		if err != nil {
			return
		}
		if id, err := tlsconfig.IdentityOf(leaf); err != nil || id != want {
			t.Fatalf("accepted a certificate naming %v (%v)", id, err)
		}
	})
}

// TestVerifyChain: the one chain check of the join flow, for the certificate the hub issues
// (client use, now) and for the hub's own (server use, its name).
func TestVerifyChain(t *testing.T) {
	ca, err := tlsconfig.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsconfig.NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	parse := func(certPEM []byte) []*x509.Certificate {
		block, _ := pem.Decode(certPEM)
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		return []*x509.Certificate{c}
	}
	issue := func(id tlsconfig.Identity, names []string, ips []net.IP) []*x509.Certificate {
		certPEM, _, err := ca.Issue(id, names, ips, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return parse(certPEM)
	}
	cluster := issue(clusterID("east"), nil, nil)
	hub := issue(tlsconfig.Identity{TrustDomain: trustDomain, Kind: tlsconfig.KindUser, Name: "hub"}, []string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)})
	now := time.Now()
	for _, tc := range []struct {
		name   string
		chain  []*x509.Certificate
		bundle []byte
		usage  x509.ExtKeyUsage
		dns    string
		at     time.Time
		want   string // an error's part; empty: valid
	}{
		{name: "a cluster certificate for client use", chain: cluster, bundle: ca.CertPEM(), usage: x509.ExtKeyUsageClientAuth, at: now},
		{name: "the hub's certificate for its name", chain: hub, bundle: ca.CertPEM(), usage: x509.ExtKeyUsageServerAuth, dns: "localhost", at: now},
		{name: "the hub's certificate for its address", chain: hub, bundle: ca.CertPEM(), usage: x509.ExtKeyUsageServerAuth, dns: "127.0.0.1", at: now},
		{name: "the hub's certificate for another name", chain: hub, bundle: ca.CertPEM(), usage: x509.ExtKeyUsageServerAuth, dns: "hub.example", at: now, want: "not hub.example"},
		{name: "another CA's bundle", chain: cluster, bundle: other.CertPEM(), usage: x509.ExtKeyUsageClientAuth, at: now, want: "unknown authority"},
		{name: "expired at the time asked", chain: cluster, bundle: ca.CertPEM(), usage: x509.ExtKeyUsageClientAuth, at: now.Add(2 * time.Hour), want: "expired"},
		{name: "a bundle that is no PEM", chain: cluster, bundle: []byte("nothing"), usage: x509.ExtKeyUsageClientAuth, at: now, want: "the CA bundle"},
		{name: "no certificate", bundle: ca.CertPEM(), usage: x509.ExtKeyUsageClientAuth, at: now, want: "no certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := verifyChain(tc.chain, tc.bundle, tc.usage, tc.dns, tc.at)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("verifyChain() = %v, want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("verifyChain() = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}
