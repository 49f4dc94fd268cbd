package tlsconfig

import (
	"net"
	"strings"
	"testing"
	"time"
)

// TestMatchCAHash: a bundle is trusted only when it holds the CA whose key was pinned; the pool
// it returns verifies that CA's leaves.
func TestMatchCAHash(t *testing.T) {
	hub, other := newTestCA(t, "hub"), newTestCA(t, "other")
	pin := SPKIHash(hub.Certificate())
	if !strings.HasPrefix(pin, "sha256:") || len(pin) != 71 {
		t.Fatalf("hash %q, want sha256:<64 hex>", pin)
	}
	bundle := append(append([]byte{}, other.CertPEM()...), hub.CertPEM()...)
	pool, err := MatchCAHash(bundle, strings.ToUpper(pin[:7])+pin[7:])
	if err == nil {
		t.Fatal("an upper-case prefix was accepted")
	}
	pool, err = MatchCAHash(bundle, pin)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := hub.Issue(Identity{TrustDomain: "td", Kind: KindCluster, Name: "hub"}, []string{"localhost"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := NewStaticKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if r := handshake(t, ServerConfig(kp, nil, false), ClientConfig(nil, pool, "localhost")); r.clientErr != nil {
		t.Fatalf("the pinned bundle does not verify the hub: %v", r.clientErr)
	}

	// A stranger who answers the unverified call with the hub's (public) CA and its own: only
	// the pinned CA is trusted, so the stranger's server is refused.
	rogue := newTestCA(t, "rogue")
	pool, err = MatchCAHash(append(append([]byte{}, hub.CertPEM()...), rogue.CertPEM()...), pin)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err = rogue.Issue(Identity{TrustDomain: "td", Kind: KindCluster, Name: "hub"}, []string{"localhost"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if kp, err = NewStaticKeyPair(certPEM, keyPEM); err != nil {
		t.Fatal(err)
	}
	if r := handshake(t, ServerConfig(kp, nil, false), ClientConfig(nil, pool, "localhost")); r.clientErr == nil {
		t.Fatal("a server of another CA that came in the same bundle as the pinned one was trusted")
	}

	for name, tc := range map[string]struct {
		bundle []byte
		pin    string
		want   string
	}{
		"another CA only": {other.CertPEM(), pin, "pinned hash"},
		"not a hash":      {bundle, "sha256:abc", "want sha256"},
		"md5":             {bundle, "md5:" + pin[7:], "want sha256"},
		"no certificate":  {[]byte("junk"), pin, "no PEM certificate"},
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := MatchCAHash(tc.bundle, tc.pin); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("MatchCAHash: %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// TestSelfSigned: a self-signed serving certificate completes a handshake with a client that
// skips verification (how gateways dial an EPP by default) and verifies when pinned as a root.
func TestSelfSigned(t *testing.T) {
	certPEM, keyPEM, err := SelfSigned([]string{"epp.local"}, []net.IP{net.ParseIP("127.0.0.1")}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := NewStaticKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pinned, err := NewStaticCAPool(certPEM)
	if err != nil {
		t.Fatal(err)
	}
	if r := handshake(t, ServerConfig(kp, nil, false), ClientConfig(nil, pinned, "epp.local")); r.clientErr != nil {
		t.Fatalf("pinned self-signed certificate refused: %v", r.clientErr)
	}
	if r := handshake(t, ServerConfig(kp, nil, false), ClientConfig(nil, pinned, "other.local")); r.clientErr == nil {
		t.Fatal("a self-signed certificate verified for a name it does not carry")
	}
}

// FuzzMatchCAHash: MatchCAHash never panics, and a pool it returns holds exactly one certificate,
// the one whose hash was pinned.
func FuzzMatchCAHash(f *testing.F) {
	ca, err := NewCA("fuzz", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	pin := SPKIHash(ca.Certificate())
	f.Add(ca.CertPEM(), pin)
	f.Add(append(append([]byte{}, ca.CertPEM()...), ca.CertPEM()...), pin)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), pin)
	f.Fuzz(func(t *testing.T, bundle []byte, hash string) {
		pool, err := MatchCAHash(bundle, hash)
		if err != nil {
			return
		}
		certs, err := parseCerts(bundle)
		if err != nil {
			t.Fatalf("accepted a bundle that does not parse: %v", err)
		}
		n := 0
		for _, c := range certs {
			if c.IsCA && SPKIHash(c) == strings.ToLower(hash) {
				n++
			}
		}
		if n == 0 || pool.Pool() == nil {
			t.Fatalf("accepted a bundle without the pinned CA")
		}
	})
}
