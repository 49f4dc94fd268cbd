package tlsconfig

import (
	"crypto/x509"
	"encoding/pem"
	"net"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestIssue: a leaf carries its identity as its one URI SAN, the names asked for, both TLS
// usages, a random serial of at most 128 bits, and never outlives its CA.
func TestIssue(t *testing.T) {
	ca := newTestCA(t, "fleet CA")
	id := Identity{TrustDomain: trustDomain, Kind: KindUser, Name: "alice"}
	certPEM, _, err := ca.Issue(id, []string{hubName}, []net.IP{net.IPv6loopback}, 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := IdentityOf(leaf); err != nil || got != id {
		t.Errorf("IdentityOf = %v, %v; want %v", got, err, id)
	}
	if len(leaf.URIs) != 1 || !slices.Equal(leaf.DNSNames, []string{hubName}) || len(leaf.IPAddresses) != 1 || !leaf.IPAddresses[0].Equal(net.IPv6loopback) {
		t.Errorf("SANs %v %v %v", leaf.URIs, leaf.DNSNames, leaf.IPAddresses)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) || leaf.IsCA {
		t.Errorf("ExtKeyUsage %v, IsCA %v; want server and client auth of a leaf", leaf.ExtKeyUsage, leaf.IsCA)
	}
	if n := leaf.SerialNumber; n.Sign() <= 0 || n.BitLen() > 128 {
		t.Errorf("serial %s is not a positive 128-bit number", n)
	}
	caCert, _ := pem.Decode(ca.CertPEM())
	root, err := x509.ParseCertificate(caCert.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.NotAfter.After(root.NotAfter) {
		t.Errorf("the leaf ends %s, after its CA (%s)", leaf.NotAfter, root.NotAfter)
	}
	if err := leaf.CheckSignatureFrom(root); err != nil {
		t.Error(err)
	}
}

func TestCARefuses(t *testing.T) {
	ca, other := newTestCA(t, "fleet CA"), newTestCA(t, "other CA")
	leafPEM, leafKey, err := ca.Issue(hubID, nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		do   func() error
		says string
	}{
		{"a leaf as CA", func() error { _, err := LoadCA(leafPEM, leafKey); return err }, "not a CA's"},
		{"another CA's key", func() error { _, err := LoadCA(ca.CertPEM(), other.KeyPEM()); return err }, "does not match"},
		{"no validity", func() error { _, err := NewCA("x", 0); return err }, "not positive"},
		{"an invalid identity", func() error {
			_, _, err := ca.Issue(Identity{trustDomain, KindCluster, "a/b"}, nil, nil, time.Hour)
			return err
		}, "invalid identity"},
		{"the zero identity", func() error { _, _, err := ca.Issue(Identity{}, nil, nil, time.Hour); return err }, "invalid identity"},
		{"a leaf without validity", func() error { _, _, err := ca.Issue(hubID, nil, nil, -time.Hour); return err }, "not positive"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.do(); err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("error %v, want one saying %q", err, tc.says)
			}
		})
	}
	if loaded, err := LoadCA(ca.CertPEM(), ca.KeyPEM()); err != nil || string(loaded.CertPEM()) != string(ca.CertPEM()) {
		t.Fatalf("LoadCA of the CA's own PEM: %v", err)
	}
}
