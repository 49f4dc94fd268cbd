package tlsconfig

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"strings"
	"testing"
	"time"
)

var clusterA = Identity{TrustDomain: "spillway.test", Kind: KindCluster, Name: "eu-west-1"}

// TestCSRRoundTrip: a request made by NewCSR parses back to its identity, and Sign turns it into
// a client-only certificate from the CA carrying that identity alone, whatever else the request
// asked for, for the request's key.
func TestCSRRoundTrip(t *testing.T) {
	ca := newTestCA(t, "hub")
	csrPEM, keyPEM, err := NewCSR(clusterA)
	if err != nil {
		t.Fatal(err)
	}
	csr, id, err := ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	if id != clusterA {
		t.Fatalf("identity %+v, want %+v", id, clusterA)
	}
	certPEM, err := ca.Sign(csr, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := NewStaticKeyPair(certPEM, keyPEM) // the key matches the certificate
	if err != nil {
		t.Fatal(err)
	}
	leaf := kp.Certificate().Leaf
	if got, err := IdentityOf(leaf); err != nil || got != clusterA {
		t.Fatalf("issued identity %+v, %v", got, err)
	}
	if len(leaf.ExtKeyUsage) != 1 || leaf.ExtKeyUsage[0] != x509.ExtKeyUsageClientAuth {
		t.Fatalf("extended key usage %v, want client auth only", leaf.ExtKeyUsage)
	}
	if err := verify([]*x509.Certificate{leaf}, poolOf(t, []*CA{ca}), "", x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatal(err)
	}
	if leaf.NotAfter.Sub(time.Now()) > time.Hour+time.Second {
		t.Fatalf("valid until %s, want about an hour", leaf.NotAfter)
	}

	// A request that also asks for DNS and IP names, and to be a server, gets none of it.
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	greedy := mustCSR(t, key, &x509.CertificateRequest{URIs: []*url.URL{clusterA.URL()}, DNSNames: []string{"hub.example"},
		IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}})
	csr, id, err = ParseCSR(greedy)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, err = ca.Sign(csr, id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(certPEM)
	cert, _ := x509.ParseCertificate(block.Bytes)
	if len(cert.DNSNames)+len(cert.IPAddresses) != 0 || len(cert.URIs) != 1 {
		t.Fatalf("issued SANs DNS %v IP %v URI %v, want the identity only", cert.DNSNames, cert.IPAddresses, cert.URIs)
	}
}

func mustCSR(t testing.TB, key any, tmpl *x509.CertificateRequest) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})
}

// TestParseCSRRejects: requests that must not be signed are refused with a reason.
func TestParseCSRRejects(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	weak, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	good := mustCSR(t, key, &x509.CertificateRequest{URIs: []*url.URL{clusterA.URL()}})
	other, _ := url.Parse("spiffe://spillway.test/cluster/b")
	notSpiffe, _ := url.Parse("https://example.com/cluster/a")
	tampered := bytes.Clone(good)
	block, _ := pem.Decode(tampered)
	block.Bytes[len(block.Bytes)-3] ^= 0xff
	for name, tc := range map[string]struct {
		in   []byte
		want string
	}{
		"empty":         {nil, "no PEM block"},
		"not PEM":       {[]byte("hello"), "no PEM block"},
		"a certificate": {bytes.Replace(good, []byte("CERTIFICATE REQUEST"), []byte("CERTIFICATE"), 2), "want CERTIFICATE REQUEST"},
		"two blocks":    {append(bytes.Clone(good), good...), "data after the PEM block"},
		"bad signature": {pem.EncodeToMemory(block), ""},
		"no URI":        {mustCSR(t, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "a"}}), "0 URI SANs"},
		"two URIs":      {mustCSR(t, key, &x509.CertificateRequest{URIs: []*url.URL{clusterA.URL(), other}}), "2 URI SANs"},
		"not spiffe":    {mustCSR(t, key, &x509.CertificateRequest{URIs: []*url.URL{notSpiffe}}), "spiffe"},
		"e-mail SAN":    {mustCSR(t, key, &x509.CertificateRequest{URIs: []*url.URL{clusterA.URL()}, EmailAddresses: []string{"a@b.c"}}), "e-mail"},
		"weak curve":    {mustCSR(t, weak, &x509.CertificateRequest{URIs: []*url.URL{clusterA.URL()}}), "P-224"},
		"too large":     {bytes.Repeat([]byte("A"), MaxCSRBytes+1), "at most"},
	} {
		t.Run(name, func(t *testing.T) {
			_, _, err := ParseCSR(tc.in)
			if !errors.Is(err, ErrInvalidCSR) {
				t.Fatalf("ParseCSR: %v, want an ErrInvalidCSR", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

// FuzzParseCSR: ParseCSR never panics, every refusal wraps ErrInvalidCSR, and what it accepts
// names a valid identity that Sign can issue for.
func FuzzParseCSR(f *testing.F) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	good := mustCSR(f, key, &x509.CertificateRequest{URIs: []*url.URL{clusterA.URL()}})
	f.Add(good)
	f.Add(mustCSR(f, key, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "x"}}))
	f.Add([]byte("-----BEGIN CERTIFICATE REQUEST-----\n-----END CERTIFICATE REQUEST-----\n"))
	f.Add([]byte{})
	ca, err := NewCA("fuzz", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		csr, id, err := ParseCSR(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidCSR) {
				t.Fatalf("error %v does not wrap ErrInvalidCSR", err)
			}
			return
		}
		if _, err := ca.Sign(csr, id, time.Minute); err != nil {
			t.Fatalf("accepted request for %s cannot be signed: %v", id, err)
		}
	})
}
