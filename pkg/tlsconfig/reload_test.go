package tlsconfig

import (
	"crypto/x509"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/e2e/testkit"
)

const (
	pollEvery    = 10 * time.Millisecond
	within       = 5 * time.Second
	expiryMetric = "spillway_tls_certificate_expiry_timestamp_seconds"
	reloadFailed = "TLS files changed but could not be reloaded"
)

// TestKeyPairReloads: the server presents the key pair its files hold now. A rewrite with
// garbage is logged and keeps the previous pair; a rewrite with a new pair is presented on the
// next handshake, with the same tls.Config.
func TestKeyPairReloads(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "fleet CA")
	logs := &syncBuffer{}
	certFile, keyFile := issuedFiles(t, ca, hubID, time.Hour, dir, "hub")
	first := certOf(t, certFile)
	kp := newKeyPair(t, certFile, keyFile, KeyPairOptions{Interval: pollEvery, Logger: slog.New(slog.NewTextHandler(logs, nil)), Role: "hub-server"})
	run(t, kp)
	serverCfg := ServerConfig(kp, nil, false)
	clientCfg := ClientConfig(nil, newCAPool(t, bundle(t, dir, ca), CAPoolOptions{}), hubName)
	presents := func(want string) {
		t.Helper()
		r := handshake(t, serverCfg, clientCfg)
		if r.serverErr != nil || r.clientErr != nil {
			t.Fatalf("server: %v; client: %v", r.serverErr, r.clientErr)
		}
		if got := r.client.PeerCertificates[0].SerialNumber.String(); got != want {
			t.Fatalf("the server presented serial %s, want %s", got, want)
		}
	}
	presents(first.SerialNumber.String())

	writeFile(t, certFile, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n"))
	testkit.Eventually(t, within, "the failed reload is logged", testkit.True(func() bool {
		return strings.Contains(logs.String(), reloadFailed)
	}))
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("the failed reload is not a warning:\n%s", logs)
	}
	if !kp.NotAfter().Equal(first.NotAfter) {
		t.Errorf("NotAfter %s after a failed reload, want the previous %s", kp.NotAfter(), first.NotAfter)
	}
	presents(first.SerialNumber.String())

	issuedFiles(t, ca, hubID, 2*time.Hour, dir, "hub")
	second := certOf(t, certFile)
	testkit.Eventually(t, within, "the new key pair is loaded", testkit.True(func() bool {
		return kp.NotAfter().Equal(second.NotAfter)
	}))
	presents(second.SerialNumber.String())
}

// TestCAPoolReloads: a client certificate from a new CA is refused until the server's bundle
// holds that CA, then accepted, then refused again once the CA leaves the bundle, all through
// one tls.Config.
func TestCAPoolReloads(t *testing.T) {
	dir := t.TempDir()
	oldCA, newCA := newTestCA(t, "old CA"), newTestCA(t, "new CA")
	spoke := Identity{TrustDomain: trustDomain, Kind: KindCluster, Name: "us-east-1"}
	clientCAs := newCAPool(t, bundle(t, dir, oldCA), CAPoolOptions{Interval: pollEvery})
	run(t, clientCAs)
	serverCfg := ServerConfig(issuedKeyPair(t, oldCA, hubID, dir, "hub"), clientCAs, true)
	clientCfg := ClientConfig(issuedKeyPair(t, newCA, spoke, dir, "spoke"), newCAPool(t, bundle(t, t.TempDir(), oldCA), CAPoolOptions{}), hubName)

	for _, step := range []struct {
		name     string
		bundle   []*CA
		accepted bool
	}{
		{"old CA only", []*CA{oldCA}, false},
		{"both CAs", []*CA{oldCA, newCA}, true},
		{"old CA again", []*CA{oldCA}, false},
	} {
		t.Run(step.name, func(t *testing.T) {
			if before := clientCAs.Pool(); !before.Equal(poolOf(t, step.bundle)) {
				bundle(t, dir, step.bundle...)
				testkit.Eventually(t, within, "the bundle is reloaded", testkit.True(func() bool { return clientCAs.Pool() != before }))
			}
			r := handshake(t, serverCfg, clientCfg)
			switch {
			case step.accepted && (r.serverErr != nil || r.clientErr != nil):
				t.Fatalf("refused: server: %v; client: %v", r.serverErr, r.clientErr)
			case step.accepted:
				if got, err := IdentityOf(r.server.PeerCertificates[0]); err != nil || got != spoke {
					t.Errorf("IdentityOf the client's certificate = %v, %v; want %v", got, err, spoke)
				}
			case r.serverErr == nil || !strings.Contains(r.serverErr.Error(), "unknown authority"):
				t.Fatalf("server error %v, want a refusal of the unknown authority", r.serverErr)
			}
		})
	}
}

// TestExpiryGauge: the gauge of each key pair is its NotAfter in Unix seconds, and follows a
// reload.
func TestExpiryGauge(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "fleet CA")
	reg := prometheus.NewRegistry()
	certFile, keyFile := issuedFiles(t, ca, hubID, time.Hour, dir, "server")
	server := newKeyPair(t, certFile, keyFile, KeyPairOptions{Interval: pollEvery, Registerer: reg, Role: "hub-server"})
	run(t, server)
	clientCert, clientKey := issuedFiles(t, ca, hubID, 3*time.Hour, dir, "client")
	client := newKeyPair(t, clientCert, clientKey, KeyPairOptions{Registerer: reg, Role: "hub-client"})

	certPEM, keyPEM, err := SelfSigned([]string{"localhost"}, nil, 5*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	static, err := NewStaticKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := static.RegisterExpiry(reg, "self-signed"); err != nil {
		t.Fatal(err)
	}
	if err := static.RegisterExpiry(reg, ""); err == nil {
		t.Error("an expiry gauge without a role was registered")
	}

	for role, kp := range map[string]*KeyPair{"hub-server": server, "hub-client": client, "self-signed": static} {
		if got, want := promtest.Value(t, reg, expiryMetric, role), float64(kp.NotAfter().Unix()); got != want {
			t.Errorf("%s{role=%q} = %v, want %v", expiryMetric, role, got, want)
		}
	}

	issuedFiles(t, ca, hubID, 2*time.Hour, dir, "server")
	want := float64(certOf(t, certFile).NotAfter.Unix())
	testkit.Eventually(t, within, "the gauge follows the reload", func() error {
		if got := promtest.Value(t, reg, expiryMetric, "hub-server"); got != want {
			return fmt.Errorf("%s{role=hub-server} = %v, want %v", expiryMetric, got, want)
		}
		return nil
	})
}

func TestMetricNames(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := issuedFiles(t, newTestCA(t, "fleet CA"), hubID, time.Hour, dir, "hub")
	reg := promtest.NewRegistry()
	newKeyPair(t, certFile, keyFile, KeyPairOptions{Registerer: reg, Role: "hub-server"})
	promtest.CheckGolden(t, reg, "tls", "testdata/metrics.golden")
}

// TestLoadRefuses: key pairs and bundles that cannot be used are refused at construction.
func TestLoadRefuses(t *testing.T) {
	dir := t.TempDir()
	ca := newTestCA(t, "fleet CA")
	certFile, keyFile := issuedFiles(t, ca, hubID, time.Hour, dir, "a")
	_, otherKey := issuedFiles(t, ca, hubID, time.Hour, dir, "b")
	garbage := filepath.Join(dir, "garbage.pem")
	writeFile(t, garbage, []byte("not PEM at all\n"))
	truncated := filepath.Join(dir, "truncated.pem")
	writeFile(t, truncated, append(append([]byte{}, ca.CertPEM()...), ca.CertPEM()[:40]...))
	keyOnly := filepath.Join(dir, "key-only.pem")
	writeFile(t, keyOnly, ca.KeyPEM())
	missing := filepath.Join(dir, "missing.pem")

	for _, tc := range []struct {
		name string
		load func() error
		says string
	}{
		{"missing certificate", func() error { _, err := NewKeyPair(missing, keyFile, KeyPairOptions{}); return err }, "no such file"},
		{"missing key", func() error { _, err := NewKeyPair(certFile, missing, KeyPairOptions{}); return err }, "no such file"},
		{"key of another pair", func() error { _, err := NewKeyPair(certFile, otherKey, KeyPairOptions{}); return err }, "does not match"},
		{"garbage certificate", func() error { _, err := NewKeyPair(garbage, keyFile, KeyPairOptions{}); return err }, "failed to find any PEM data"},
		{"registerer without role", func() error {
			_, err := NewKeyPair(certFile, keyFile, KeyPairOptions{Registerer: prometheus.NewRegistry()})
			return err
		}, "Role is required"},
		{"missing bundle", func() error { _, err := NewCAPool(missing, CAPoolOptions{}); return err }, "no such file"},
		{"bundle without certificates", func() error { _, err := NewCAPool(keyOnly, CAPoolOptions{}); return err }, "no PEM certificate"},
		{"garbage bundle", func() error { _, err := NewCAPool(garbage, CAPoolOptions{}); return err }, "no PEM certificate"},
		{"truncated bundle", func() error { _, err := NewCAPool(truncated, CAPoolOptions{}); return err }, "incomplete"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.load()
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("error %v, want one saying %q", err, tc.says)
			}
		})
	}
}

func poolOf(t *testing.T, cas []*CA) *x509.CertPool {
	t.Helper()
	pool := x509.NewCertPool()
	for _, ca := range cas {
		if !pool.AppendCertsFromPEM(ca.CertPEM()) {
			t.Fatal("no certificate in the CA's PEM")
		}
	}
	return pool
}
