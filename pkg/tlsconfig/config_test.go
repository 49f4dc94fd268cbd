package tlsconfig

import (
	"crypto/tls"
	"strings"
	"testing"
	"time"
)

// TestServerVerifiesClients: a client certificate from the CA completes the handshake and names
// the client; none, one from another CA and an expired one are refused by the server.
func TestServerVerifiesClients(t *testing.T) {
	dir := t.TempDir()
	ca, other := newTestCA(t, "fleet CA"), newTestCA(t, "other CA")
	expiring, err := LoadCA(ca.CertPEM(), ca.KeyPEM())
	if err != nil {
		t.Fatal(err)
	}
	expiring.now = func() time.Time { return time.Now().Add(-48 * time.Hour) }
	spoke := Identity{TrustDomain: trustDomain, Kind: KindCluster, Name: "eu-west-1"}

	serverKP := issuedKeyPair(t, ca, hubID, dir, "hub")
	fleet := newCAPool(t, bundle(t, dir, ca), CAPoolOptions{})
	clientKP := func(ca *CA, name string) *KeyPair { return issuedKeyPair(t, ca, spoke, dir, name) }

	for _, tc := range []struct {
		name     string
		client   *KeyPair
		optional bool   // the server does not require a client certificate
		refused  string // what the server's error says; empty when the handshake succeeds
	}{
		{name: "certificate from the CA", client: clientKP(ca, "good")},
		{name: "no certificate", refused: "client didn't provide a certificate"},
		{name: "no certificate, optional", optional: true},
		{name: "certificate from another CA", client: clientKP(other, "other"), refused: "unknown authority"},
		{name: "certificate from another CA, optional", client: clientKP(other, "other"), optional: true, refused: "unknown authority"},
		{name: "expired certificate", client: clientKP(expiring, "expired"), refused: "expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := handshake(t, ServerConfig(serverKP, fleet, !tc.optional), ClientConfig(tc.client, fleet, hubName))
			if tc.refused != "" {
				if r.serverErr == nil || !strings.Contains(r.serverErr.Error(), tc.refused) {
					t.Fatalf("server error %v, want one saying %q", r.serverErr, tc.refused)
				}
				if r.clientErr == nil {
					t.Fatal("the client did not see the refusal")
				}
				return
			}
			if r.serverErr != nil || r.clientErr != nil {
				t.Fatalf("server: %v; client: %v", r.serverErr, r.clientErr)
			}
			if r.client.Version != tls.VersionTLS13 {
				t.Errorf("version %x, want TLS 1.3", r.client.Version)
			}
			if tc.client == nil {
				if len(r.server.PeerCertificates) != 0 {
					t.Errorf("the server saw %d client certificates, want none", len(r.server.PeerCertificates))
				}
				return
			}
			got, err := IdentityOf(r.server.PeerCertificates[0])
			if err != nil || got != spoke {
				t.Errorf("IdentityOf the client's certificate = %v, %v; want %v", got, err, spoke)
			}
		})
	}
}

// TestClientVerifiesServer: the client accepts the server only with a certificate from its
// roots, for the name it asked for.
func TestClientVerifiesServer(t *testing.T) {
	dir := t.TempDir()
	ca, other := newTestCA(t, "fleet CA"), newTestCA(t, "other CA")
	serverKP := issuedKeyPair(t, ca, hubID, dir, "hub")
	fleet := newCAPool(t, bundle(t, dir, ca), CAPoolOptions{})
	otherPool := newCAPool(t, bundle(t, t.TempDir(), other), CAPoolOptions{})

	for _, tc := range []struct {
		name       string
		roots      *CAPool
		serverName string
		refused    string // what the client's error says; empty when the handshake succeeds
	}{
		{name: "by DNS name", roots: fleet, serverName: hubName},
		{name: "by IP address", roots: fleet, serverName: "127.0.0.1"},
		{name: "other roots", roots: otherPool, serverName: hubName, refused: "unknown authority"},
		{name: "other name", roots: fleet, serverName: "elsewhere.spillway.test", refused: "not elsewhere.spillway.test"},
		{name: "no name", roots: fleet, refused: "no server name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := handshake(t, ServerConfig(serverKP, nil, false), ClientConfig(nil, tc.roots, tc.serverName))
			if tc.refused != "" {
				if r.clientErr == nil || !strings.Contains(r.clientErr.Error(), tc.refused) {
					t.Fatalf("client error %v, want one saying %q", r.clientErr, tc.refused)
				}
				return
			}
			if r.serverErr != nil || r.clientErr != nil {
				t.Fatalf("server: %v; client: %v", r.serverErr, r.clientErr)
			}
			if got, err := IdentityOf(r.client.PeerCertificates[0]); err != nil || got != hubID {
				t.Errorf("IdentityOf the server's certificate = %v, %v; want %v", got, err, hubID)
			}
		})
	}
}

// TestServerWithoutClientCAsRefusesWhenRequired: requiring a client certificate that nothing
// could verify refuses every client rather than accepting any.
func TestServerWithoutClientCAsRefusesWhenRequired(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "fleet CA")
	serverKP := issuedKeyPair(t, ca, hubID, dir, "hub")
	fleet := newCAPool(t, bundle(t, dir, ca), CAPoolOptions{})
	r := handshake(t, ServerConfig(serverKP, nil, true), ClientConfig(issuedKeyPair(t, ca, Identity{trustDomain, KindCluster, "a"}, dir, "a"), fleet, hubName))
	if r.serverErr == nil || !strings.Contains(r.serverErr.Error(), "no client CA") {
		t.Fatalf("server error %v, want one saying it has no client CA", r.serverErr)
	}
}
