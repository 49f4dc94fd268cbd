package etcd

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// TestMain fails the package's tests when a goroutine of the embedded etcd or a client outlives
// them.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// checkTimeout bounds a Check expected to fail: the client retries until then.
const checkTimeout = 3 * time.Second

func startEmbedded(t *testing.T, dir string) *Embedded {
	t.Helper()
	e, err := StartEmbedded(context.Background(), EmbeddedOptions{Dir: dir, ListenAddress: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

func dial(t *testing.T, endpoint string, cfg *tls.Config) *clientv3.Client {
	t.Helper()
	cli, err := Dial([]string{endpoint}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// TestEmbeddedServesMutualTLSOnly: the hub's client (this start's client certificate) reads and
// writes; a plaintext client, a TLS client without a certificate and one with a certificate of
// another CA get nothing. Every listener is on loopback.
func TestEmbeddedServesMutualTLSOnly(t *testing.T) {
	dir := t.TempDir()
	e := startEmbedded(t, dir)
	if !strings.HasPrefix(e.Endpoint, "https://127.0.0.1:") {
		t.Fatalf("endpoint %s, want https on 127.0.0.1", e.Endpoint)
	}
	for _, l := range append(append([]net.Listener{}, e.etcd.Clients...), peerListeners(e)...) {
		if ip := l.Addr().(*net.TCPAddr).IP; !ip.IsLoopback() {
			t.Errorf("a listener is bound to %s, want loopback", l.Addr())
		}
	}
	if len(e.etcd.Peers) == 0 {
		t.Fatal("no peer listener")
	}

	cli, err := e.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx := context.Background()
	if _, err := cli.Put(ctx, "k", "v"); err != nil {
		t.Fatalf("the hub's client: %v", err)
	}
	if err := Check(ctx, cli, e.ClientTLS, 10*time.Second); err != nil {
		t.Fatal(err)
	}

	caPEM, err := os.ReadFile(filepath.Join(dir, TLSDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	other, err := tlsconfig.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherCert, otherKey, err := other.Issue(tlsconfig.Identity{TrustDomain: embeddedTrustDomain, Kind: tlsconfig.KindUser, Name: "hub"}, nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	otherPair, err := tls.X509KeyPair(otherCert, otherKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		endpoint string
		cfg      *tls.Config
		says     string
	}{
		{"plaintext", "http://" + strings.TrimPrefix(e.Endpoint, "https://"), nil, "plaintext connection"},
		{"TLS without a client certificate", e.Endpoint, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}, "tls: certificate required"},
		{"a client certificate of another CA", e.Endpoint, &tls.Config{
			RootCAs: roots, MinVersion: tls.VersionTLS13,
			// Presented whatever CAs the server names, as a client that does not know better would.
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &otherPair, nil },
		}, "tls: unknown certificate authority"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Check(ctx, dial(t, tc.endpoint, tc.cfg), tc.cfg, checkTimeout)
			if !errors.Is(err, ErrUnreachable) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Check = %v, want %v saying %q", err, ErrUnreachable, tc.says)
			}
		})
	}
}

func peerListeners(e *Embedded) []net.Listener {
	var ls []net.Listener
	for _, p := range e.etcd.Peers {
		ls = append(ls, p.Listener)
	}
	return ls
}

// TestEmbeddedTLSFiles: keys are readable by their owner alone, in a directory only the owner
// enters, and each start replaces the CA; the data outlives it.
func TestEmbeddedTLSFiles(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	e := startEmbedded(t, dir)
	cli, err := e.Client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Put(ctx, "kept", "yes"); err != nil {
		t.Fatal(err)
	}
	cli.Close()
	tlsDir := filepath.Join(dir, TLSDir)
	first, err := os.ReadFile(filepath.Join(tlsDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	modes := map[string]os.FileMode{"": 0o700 | os.ModeDir, "server.key": 0o600, "client.key": 0o600, "ca.crt": 0o644}
	for name, want := range modes {
		fi, err := os.Stat(filepath.Join(tlsDir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s: mode %s, want %s", filepath.Join(tlsDir, name), fi.Mode(), want)
		}
	}
	entries, err := os.ReadDir(tlsDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, en := range entries {
		if strings.Contains(en.Name(), "ca.key") {
			t.Errorf("the throwaway CA's key is kept in %s", en.Name())
		}
	}
	e.Close()

	e2 := startEmbedded(t, dir)
	second, err := os.ReadFile(filepath.Join(tlsDir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(first, second) {
		t.Error("the second start kept the first start's CA")
	}
	cli2, err := e2.Client()
	if err != nil {
		t.Fatal(err)
	}
	defer cli2.Close()
	resp, err := cli2.Get(ctx, "kept")
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Kvs) != 1 || string(resp.Kvs[0].Value) != "yes" {
		t.Errorf("after a restart the key holds %v, want yes", resp.Kvs)
	}
}

// TestEmbeddedQuota: the quota given is the one etcd runs with.
func TestEmbeddedQuota(t *testing.T) {
	e, err := StartEmbedded(context.Background(), EmbeddedOptions{Dir: t.TempDir(), ListenAddress: "127.0.0.1:0", QuotaBytes: 100 << 20})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if got := e.etcd.Config().QuotaBackendBytes; got != 100<<20 {
		t.Errorf("QuotaBackendBytes = %d, want %d", got, 100<<20)
	}
}

func TestStartEmbeddedRefuses(t *testing.T) {
	for _, tc := range []struct {
		listen, says string
	}{
		{"0.0.0.0:0", "want a loopback address"},
		{"10.1.2.3:2379", "want a loopback address"},
		{"127.0.0.1", "missing port"},
	} {
		t.Run(tc.listen, func(t *testing.T) {
			_, err := StartEmbedded(context.Background(), EmbeddedOptions{Dir: t.TempDir(), ListenAddress: tc.listen})
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("StartEmbedded(%q) = %v, want an error saying %q", tc.listen, err, tc.says)
			}
		})
	}
}

func TestDefaultQuotaBytes(t *testing.T) {
	for _, tc := range []struct{ volume, want int64 }{
		{1 << 30, 1 << 30 / 5 * 4},
		{10 << 30, 2 << 30},
		{5 << 30 / 2, 2 << 30},
		{2 << 30, 2 << 30 / 5 * 4},
	} {
		if got := DefaultQuotaBytes(tc.volume); got != tc.want {
			t.Errorf("DefaultQuotaBytes(%d) = %d, want %d", tc.volume, got, tc.want)
		}
	}
}

// TestVolumeBytes: a directory not made yet is on its parent's volume.
func TestVolumeBytes(t *testing.T) {
	dir := t.TempDir()
	got, err := VolumeBytes(dir)
	if err != nil || got <= 0 {
		t.Fatalf("VolumeBytes(%s) = %d, %v", dir, got, err)
	}
	if missing, err := VolumeBytes(filepath.Join(dir, "not", "yet")); err != nil || missing != got {
		t.Errorf("VolumeBytes of a missing directory = %d, %v; want its parent's %d", missing, err, got)
	}
}

func TestClientTLSRefuses(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "missing.pem")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not PEM\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		c    ClientTLS
		says string
	}{
		{"certificate without key", ClientTLS{Cert: garbage}, "--etcd-cert and --etcd-key go together"},
		{"key without certificate", ClientTLS{Key: garbage}, "--etcd-cert and --etcd-key go together"},
		{"missing CA", ClientTLS{CACert: missing}, "no such file"},
		{"missing key pair", ClientTLS{Cert: missing, Key: missing}, "no such file"},
		{"garbage CA", ClientTLS{CACert: garbage}, "--etcd-cacert"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.c.Config()
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Config() = %v, want an error saying %q", err, tc.says)
			}
		})
	}
	if cfg, err := (ClientTLS{}).Config(); cfg != nil || err != nil {
		t.Errorf("Config() of no files = %v, %v; want nil, nil", cfg, err)
	}
}
