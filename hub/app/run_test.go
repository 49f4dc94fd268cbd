package app

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// startTimeout bounds a hub's start (its embedded etcd's included) and its stop.
const startTimeout = 60 * time.Second

// callTimeout bounds one call of a test client.
const callTimeout = 10 * time.Second

// testOptions are a hub on loopback ports chosen by the kernel, with its data and PKI in dir.
func testOptions(dir string) *Options {
	o := NewOptions()
	o.GRPCAddress, o.AdminAddress, o.HTTPAddress = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	o.DataDir = filepath.Join(dir, "data")
	o.PKIDir = filepath.Join(dir, "pki")
	o.HubID = "hub-test"
	return o
}

// testHub is a hub run in-process by Run.
type testHub struct {
	t                 *testing.T
	logs              *testkit.LogBuffer
	grpc, admin, http string // the addresses it serves on
	caHash            string // as logged at start
	cancel            context.CancelFunc
	done              chan error
	stopOnce          sync.Once
	stopErr           error
	pkiDir            string
}

// startHub runs a hub with o until the test ends, and waits until it serves.
func startHub(t *testing.T, o *Options) *testHub {
	t.Helper()
	h, err := tryStartHub(t, o)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

// tryStartHub runs a hub with o and returns once it serves, or with the error Run (or Config)
// ended with.
func tryStartHub(t *testing.T, o *Options) (*testHub, error) {
	t.Helper()
	cfg, err := o.Config()
	if err != nil {
		return nil, err
	}
	logs := &testkit.LogBuffer{}
	cfg.Logger = slog.New(slog.NewJSONHandler(logs, nil)).With("hub", cfg.HubID)
	ctx, cancel := context.WithCancel(context.Background())
	h := &testHub{t: t, logs: logs, cancel: cancel, done: make(chan error, 1), pkiDir: o.PKIDir}
	go func() { h.done <- Run(ctx, cfg) }()
	deadline := time.NewTimer(startTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if started := logs.Entries("hub started"); len(started) > 0 {
			h.grpc, h.admin, h.http = started[0]["grpc"].(string), started[0]["admin"].(string), started[0]["http"].(string)
			if ca := logs.Entries("hub CA loaded"); len(ca) > 0 {
				h.caHash, _ = ca[0]["caHash"].(string)
			}
			t.Cleanup(func() {
				if err := h.stop(); err != nil {
					t.Errorf("the hub ended with %v\n%s", err, logs)
				}
			})
			return h, nil
		}
		select {
		case err := <-h.done:
			cancel()
			return nil, err
		case <-deadline.C:
			err := h.stop()
			return nil, fmt.Errorf("the hub did not start within %s (then stopped with %v):\n%s", startTimeout, err, logs)
		case <-tick.C:
		}
	}
}

// stop ends the hub and returns what Run returned.
func (h *testHub) stop() error {
	h.stopOnce.Do(func() {
		h.cancel()
		select {
		case h.stopErr = <-h.done:
		case <-time.After(startTimeout):
			h.stopErr = errors.New("the hub did not stop")
		}
	})
	return h.stopErr
}

// roots is the pool of the hub's CA bundle in its pki dir.
func (h *testHub) roots() *x509.CertPool {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join(h.pkiDir, caCertFile))
	if err != nil {
		h.t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		h.t.Fatal("no certificate in the hub's ca.crt")
	}
	return pool
}

// admin is the key pair hubctl's credentials in the pki dir hold.
func (h *testHub) adminCert() tls.Certificate {
	h.t.Helper()
	dir := filepath.Join(h.pkiDir, HubctlDir)
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, tlsconfig.CertFile), filepath.Join(dir, tlsconfig.KeyFile))
	if err != nil {
		h.t.Fatal(err)
	}
	return pair
}

// tlsCreds verifies the hub with roots and presents certs (none when empty).
func tlsCreds(roots *x509.CertPool, certs ...tls.Certificate) credentials.TransportCredentials {
	return credentials.NewTLS(&tls.Config{RootCAs: roots, Certificates: certs, MinVersion: tls.VersionTLS13})
}

// dial returns a client connection closed at the end of the test.
func dial(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// healthCheck calls grpc.health.v1 once, failing fast when no connection can be made.
func healthCheck(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	resp, err := healthpb.NewHealthClient(dial(t, addr, creds)).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health %s", resp.GetStatus())
	}
	return nil
}

// TestPlaintextGetsNothing: a plaintext gRPC client gets nothing from the spokes' port nor from
// the admin port (the done-when check of the issue: grpc.health.v1 over plaintext fails on the
// hub's 8470), and a plaintext HTTP client nothing from the HTTP port; the same calls over TLS
// succeed, so the refusals are the TLS's.
func TestPlaintextGetsNothing(t *testing.T) {
	h := startHub(t, testOptions(t.TempDir()))
	for _, port := range []struct{ name, addr string }{{"spokes' port", h.grpc}, {"admin port", h.admin}} {
		t.Run(port.name, func(t *testing.T) {
			err := healthCheck(t, port.addr, insecure.NewCredentials())
			if status.Code(err) != codes.Unavailable {
				t.Fatalf("plaintext health check = %v, want Unavailable", err)
			}
		})
	}
	if err := healthCheck(t, h.grpc, tlsCreds(h.roots())); err != nil {
		t.Errorf("TLS health check on the spokes' port: %v", err)
	}
	if err := healthCheck(t, h.admin, tlsCreds(h.roots(), h.adminCert())); err != nil {
		t.Errorf("mTLS health check on the admin port: %v", err)
	}

	plain := &http.Client{Timeout: callTimeout}
	defer plain.CloseIdleConnections()
	if resp, err := plain.Get("http://" + h.http + "/metrics"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == http.StatusOK {
			t.Errorf("plaintext GET /metrics: %s, want a refusal", resp.Status)
		}
	}
	secure := &http.Client{Timeout: callTimeout, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: h.roots(), MinVersion: tls.VersionTLS13}}}
	defer secure.CloseIdleConnections()
	// The hub is ready once it leads and made the first hop key: wait for that over HTTPS.
	testkit.Eventually(t, 10*time.Second, "HTTPS GET /readyz answers 200", func() error {
		resp, err := secure.Get("https://" + h.http + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	})
	for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
		resp, err := secure.Get("https://" + h.http + path)
		if err != nil {
			t.Fatalf("HTTPS GET %s: %v", path, err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || err != nil {
			t.Errorf("HTTPS GET %s: %s, %v", path, resp.Status, err)
		}
		// The serving certificate the hub issued itself at start has its expiry gauge too.
		if want := `spillway_tls_certificate_expiry_timestamp_seconds{role="hub-server"}`; path == "/metrics" && !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no %s", want)
		}
	}
}

// TestInsecureHTTP: --insecure-http serves the HTTP port in plaintext and says so at start; the
// gRPC ports stay TLS.
func TestInsecureHTTP(t *testing.T) {
	o := testOptions(t.TempDir())
	o.InsecureHTTP = true
	h := startHub(t, o)
	c := &http.Client{Timeout: callTimeout}
	defer c.CloseIdleConnections()
	resp, err := c.Get("http://" + h.http + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("plaintext GET /healthz: %s", resp.Status)
	}
	warnings := h.logs.Entries("serving /metrics, /healthz and /readyz in plaintext (--insecure-http)")
	if len(warnings) != 1 || warnings[0]["level"] != "WARN" {
		t.Errorf("want one warning about plaintext HTTP, got %v", warnings)
	}
	if err := healthCheck(t, h.grpc, insecure.NewCredentials()); status.Code(err) != codes.Unavailable {
		t.Errorf("plaintext health check on the spokes' port = %v, want Unavailable", err)
	}
}

// TestAdminPortNeedsAClientCertificate: over TLS without a client certificate the spokes' port
// answers health and Discover (which need no identity) but not Register, and does not serve the
// AdminService; the admin port refuses the connection without a certificate and with one of
// another CA, and takes hubctl's credentials made in the pki dir as the admin user.
func TestAdminPortNeedsAClientCertificate(t *testing.T) {
	h := startHub(t, testOptions(t.TempDir()))
	roots := h.roots()
	if err := healthCheck(t, h.grpc, tlsCreds(roots)); err != nil {
		t.Errorf("health on the spokes' port without a client certificate: %v", err)
	}
	if err := healthCheck(t, h.admin, tlsCreds(roots)); status.Code(err) != codes.Unavailable {
		t.Errorf("health on the admin port without a client certificate = %v, want Unavailable", err)
	}
	// What refuses it is the handshake: the server's alert, read on a raw TLS connection (gRPC
	// may see its write fail first).
	if err := readAfterHandshake(h.admin, &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13}); err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("a TLS connection to the admin port without a client certificate: %v, want the alert certificate required", err)
	}

	other, err := tlsconfig.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := other.Issue(tlsconfig.Identity{TrustDomain: "spillway.local", Kind: tlsconfig.KindUser, Name: "admin"}, nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	strangerCreds := credentials.NewTLS(&tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS13,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &stranger, nil }})
	if err := healthCheck(t, h.admin, strangerCreds); status.Code(err) != codes.Unavailable {
		t.Errorf("health on the admin port with a certificate of another CA = %v, want Unavailable", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	spokes := dial(t, h.grpc, tlsCreds(roots))
	disc, err := pb.NewJoinServiceClient(spokes).Discover(ctx, &pb.DiscoverRequest{})
	if err != nil {
		t.Fatalf("Discover without a client certificate: %v", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(h.pkiDir, caCertFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(disc.GetCaBundlePem(), caPEM) || disc.GetTrustDomain() != "spillway.local" {
		t.Errorf("Discover = bundle %q, trust domain %q; want the hub's ca.crt and spillway.local", disc.GetCaBundlePem(), disc.GetTrustDomain())
	}
	if _, err := pb.NewSyncServiceClient(spokes).Register(ctx, &pb.RegisterRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Register without a client certificate = %v, want Unauthenticated", err)
	}
	if _, err := pb.NewAdminServiceClient(spokes).ListClusters(ctx, &pb.ListClustersRequest{}); status.Code(err) == codes.OK {
		t.Error("ListClusters on the spokes' port succeeded: the AdminService must not be served there")
	}

	admin := dial(t, h.admin, tlsCreds(roots, h.adminCert()))
	who, err := pb.NewAdminServiceClient(admin).WhoAmI(ctx, &pb.WhoAmIRequest{})
	if err != nil || who.GetIdentity() != "spiffe://spillway.local/user/admin" || who.GetRole() != "admin" {
		t.Errorf("WhoAmI with hubctl's credentials = %v, %v; want spiffe://spillway.local/user/admin, admin", who, err)
	}
	if _, err := pb.NewAdminServiceClient(admin).ListClusters(ctx, &pb.ListClustersRequest{}); err != nil {
		t.Errorf("ListClusters with hubctl's credentials: %v", err)
	}
}

// TestPKIDirIsMadeOnceAndReused: the first start makes the CA and hubctl's credentials with
// private files; the CA hash logged is the CA's; a restart keeps every file and presents a new
// serving certificate from the same CA.
func TestPKIDirIsMadeOnceAndReused(t *testing.T) {
	dir := t.TempDir()
	o := testOptions(dir)
	first := startHub(t, o)
	servedFirst := servingCertificate(t, first.grpc, &tls.Config{RootCAs: first.roots(), MinVersion: tls.VersionTLS13})
	if err := first.stop(); err != nil {
		t.Fatal(err)
	}

	files := map[string]os.FileMode{
		"":                           0o700 | os.ModeDir,
		caKeyFile:                    0o600,
		caCertFile:                   0o644,
		HubctlDir:                    0o700 | os.ModeDir,
		HubctlDir + "/" + "tls.key":  0o600,
		HubctlDir + "/" + "tls.crt":  0o644,
		HubctlDir + "/" + caCertFile: 0o644,
	}
	contents := map[string][]byte{}
	for name, mode := range files {
		path := filepath.Join(o.PKIDir, name)
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != mode {
			t.Errorf("%s: mode %s, want %s", path, fi.Mode(), mode)
		}
		if !fi.IsDir() {
			contents[name], _ = os.ReadFile(path)
		}
	}
	caCert := parseCert(t, contents[caCertFile])
	if got, want := first.caHash, tlsconfig.SPKIHash(caCert); got != want {
		t.Errorf("logged CA hash %q, want the CA's %q", got, want)
	}
	if !bytes.Equal(contents[HubctlDir+"/"+caCertFile], contents[caCertFile]) {
		t.Error("hubctl's ca.crt is not the hub's CA")
	}
	adminCert := parseCert(t, contents[HubctlDir+"/tls.crt"])
	if id, err := tlsconfig.IdentityOf(adminCert); err != nil || id.String() != "spiffe://spillway.local/user/admin" {
		t.Errorf("hubctl's identity %v, %v; want spiffe://spillway.local/user/admin", id, err)
	}
	if err := adminCert.CheckSignatureFrom(caCert); err != nil {
		t.Errorf("hubctl's certificate is not the CA's: %v", err)
	}
	if len(first.logs.Entries("hub CA created")) != 1 || len(first.logs.Entries("hubctl admin credentials created")) != 1 {
		t.Errorf("the first start does not say it made the CA and hubctl's credentials:\n%s", first.logs)
	}

	second := startHub(t, o)
	for name, before := range contents {
		after, err := os.ReadFile(filepath.Join(o.PKIDir, name))
		if err != nil || !bytes.Equal(before, after) {
			t.Errorf("%s changed at the restart (%v)", name, err)
		}
	}
	if second.caHash != first.caHash {
		t.Errorf("CA hash %q after the restart, want %q", second.caHash, first.caHash)
	}
	if n := len(second.logs.Entries("hub CA created")) + len(second.logs.Entries("hubctl admin credentials created")); n != 0 {
		t.Errorf("the restart made new credentials:\n%s", second.logs)
	}
	servedSecond := servingCertificate(t, second.grpc, &tls.Config{RootCAs: second.roots(), MinVersion: tls.VersionTLS13})
	if servedSecond.SerialNumber.Cmp(servedFirst.SerialNumber) == 0 {
		t.Error("the restart presents the first start's serving certificate, want one issued at this start")
	}
	if err := healthCheck(t, second.admin, tlsCreds(second.roots(), second.adminCert())); err != nil {
		t.Errorf("hubctl's credentials after the restart: %v", err)
	}
}

// readAfterHandshake completes a TLS handshake with addr and reads: the server's verdict on the
// client's certificate comes after the client's side of a TLS 1.3 handshake is done. A server
// that accepted the connection waits for the client's first bytes; the read times out then and
// the result is nil.
func readAfterHandshake(addr string, cfg *tls.Config) error {
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(time.Second))
	_, err = conn.Read(make([]byte, 1))
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return nil
	}
	return err
}

func parseCert(t *testing.T, data []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatal("no PEM block")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

// servingCertificate is the certificate a hub port presents, verified as cfg says.
func servingCertificate(t *testing.T, addr string, cfg *tls.Config) *x509.Certificate {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0]
}

// TestServingCertificateIssuedAtStart: the certificate the hub issues itself names the loopback
// addresses, localhost, the host name and every --tls-san, and carries an identity the trust
// domain grants nothing.
func TestServingCertificateIssuedAtStart(t *testing.T) {
	o := testOptions(t.TempDir())
	o.TLSSANs = []string{"hub.example.com", "192.0.2.7"}
	h := startHub(t, o)
	cert := servingCertificate(t, h.http, &tls.Config{RootCAs: h.roots(), MinVersion: tls.VersionTLS13})
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"localhost", "127.0.0.1", "::1", "hub.example.com", "192.0.2.7", host} {
		if err := cert.VerifyHostname(name); err != nil {
			t.Errorf("the serving certificate is not valid for %s: %v", name, err)
		}
	}
	id, err := tlsconfig.IdentityOf(cert)
	if err != nil || id.TrustDomain == o.TrustDomain {
		t.Errorf("the serving certificate's identity %v (%v) is in the fleet's trust domain %s", id, err, o.TrustDomain)
	}
}

// TestMountedCertificatesAndExternalCA: with --ca-cert-file and --ca-key-file the hub uses that
// CA (its hash is logged; nothing is made in --pki-dir but hubctl's credentials); a mounted
// --tls-cert-file is presented and reloaded when rewritten; --client-ca-file decides which
// client certificates the admin port accepts.
func TestMountedCertificatesAndExternalCA(t *testing.T) {
	dir := t.TempDir()
	fleetCA, err := tlsconfig.NewCA("fleet CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clientCA, err := tlsconfig.NewCA("client CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	issueServing := func() {
		certPEM, keyPEM, err := fleetCA.Issue(servingIdentity("spillway.local"), []string{"localhost"}, nil, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		// The key first: a reload between the two writes fails and keeps the previous pair.
		write("hub.key", keyPEM)
		write("hub.crt", certPEM)
	}
	issueServing()
	o := testOptions(dir)
	o.CACertFile, o.CAKeyFile = write("fleet-ca.crt", fleetCA.CertPEM()), write("fleet-ca.key", fleetCA.KeyPEM())
	o.TLSCertFile, o.TLSKeyFile = filepath.Join(dir, "hub.crt"), filepath.Join(dir, "hub.key")
	o.ClientCAFile = write("client-ca.crt", clientCA.CertPEM())
	h := startHub(t, o)

	if want := tlsconfig.SPKIHash(fleetCA.Certificate()); h.caHash != want {
		t.Errorf("logged CA hash %q, want the --ca-cert-file's %q", h.caHash, want)
	}
	if _, err := os.Stat(filepath.Join(o.PKIDir, caKeyFile)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a CA key was made in --pki-dir although --ca-key-file is set (%v)", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(fleetCA.Certificate())
	verifyAs := func(name string) *tls.Config {
		return &tls.Config{RootCAs: roots, ServerName: name, MinVersion: tls.VersionTLS13}
	}
	first := servingCertificate(t, h.grpc, verifyAs("localhost"))
	issueServing()
	testkit.Eventually(t, 10*time.Second, "the rewritten serving certificate is presented", func() error {
		if got := servingCertificate(t, h.grpc, verifyAs("localhost")); got.SerialNumber.Cmp(first.SerialNumber) == 0 {
			return errors.New("still the first certificate")
		}
		return nil
	})

	// hubctl's credentials are from the fleet CA, which --client-ca-file does not hold.
	hubctl := h.adminCert()
	creds := func(c tls.Certificate) credentials.TransportCredentials {
		cfg := verifyAs("localhost")
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &c, nil }
		return credentials.NewTLS(cfg)
	}
	if err := healthCheck(t, h.admin, creds(hubctl)); status.Code(err) != codes.Unavailable {
		t.Errorf("a certificate of a CA not in --client-ca-file = %v, want Unavailable", err)
	}
	certPEM, keyPEM, err := clientCA.Issue(tlsconfig.Identity{TrustDomain: "spillway.local", Kind: tlsconfig.KindUser, Name: "admin"}, nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	user, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := healthCheck(t, h.admin, creds(user)); err != nil {
		t.Errorf("a certificate of --client-ca-file's CA: %v", err)
	}
}

// TestCAWithoutKey: with --ca-cert-file alone the hub serves its mounted certificate, hands
// spokes the bundle file, logs the signing CA's hash, has the join flow off and makes no hubctl
// credentials (it has nothing to sign them with).
func TestCAWithoutKey(t *testing.T) {
	dir := t.TempDir()
	ca, err := tlsconfig.NewCA("fleet CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := tlsconfig.NewCA("next fleet CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(servingIdentity("spillway.local"), []string{"localhost"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	bundle := append(append([]byte{}, ca.CertPEM()...), other.CertPEM()...)
	o := testOptions(dir)
	o.CACertFile = filepath.Join(dir, "bundle.crt")
	o.TLSCertFile, o.TLSKeyFile = filepath.Join(dir, "hub.crt"), filepath.Join(dir, "hub.key")
	for path, data := range map[string][]byte{o.CACertFile: bundle, o.TLSCertFile: certPEM, o.TLSKeyFile: keyPEM} {
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	h := startHub(t, o)
	if want := tlsconfig.SPKIHash(ca.Certificate()); h.caHash != want {
		t.Errorf("logged CA hash %q, want the first certificate's of the bundle %q", h.caHash, want)
	}
	if loaded := h.logs.Entries("hub CA loaded"); len(loaded) != 1 || loaded[0]["joinFlow"] != false {
		t.Errorf("the start does not say the join flow is off: %v", loaded)
	}
	if _, err := os.Stat(o.PKIDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("--pki-dir was made without a CA key to issue hubctl's credentials (%v)", err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	creds := credentials.NewTLS(&tls.Config{RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS13})
	ctx, cancel := context.WithTimeout(context.Background(), callTimeout)
	defer cancel()
	disc, err := pb.NewJoinServiceClient(dial(t, h.grpc, creds)).Discover(ctx, &pb.DiscoverRequest{})
	if err != nil || !bytes.Equal(disc.GetCaBundlePem(), bundle) {
		t.Errorf("Discover = %v, %v; want the --ca-cert-file bundle", disc, err)
	}
}

// TestPKIRefusals: a pki dir or CA files the hub cannot use stop it at start, saying what to do,
// and it overwrites nothing.
func TestPKIRefusals(t *testing.T) {
	leafCA, err := tlsconfig.NewCA("fleet CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leafPEM, _, err := leafCA.Issue(servingIdentity("spillway.local"), []string{"localhost"}, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		files map[string][]byte // relative to the test's directory, made before the start
		set   func(o *Options, dir string)
		says  string
	}{
		{"a CA key without its certificate", map[string][]byte{"pki/ca.key": leafCA.KeyPEM()}, nil,
			"ca.key exists but " + "DIR/pki/ca.crt does not; restore it, or remove both"},
		{"a CA certificate without its key", map[string][]byte{"pki/ca.crt": leafCA.CertPEM()}, nil,
			"ca.crt exists but DIR/pki/ca.key does not"},
		{"half of hubctl's credentials", map[string][]byte{"pki/hubctl/tls.crt": leafPEM}, nil,
			"only [tls.crt] of [ca.crt tls.crt tls.key] are there; remove the directory"},
		{"a leaf as the CA", map[string][]byte{"leaf.crt": leafPEM, "hub.crt": leafPEM}, func(o *Options, dir string) {
			o.CACertFile = filepath.Join(dir, "leaf.crt")
			o.TLSCertFile, o.TLSKeyFile = filepath.Join(dir, "hub.crt"), filepath.Join(dir, "hub.key")
		}, "is not a CA's"},
		{"a CA key that is another's", map[string][]byte{"ca.crt": leafCA.CertPEM(), "ca.key": mustNewCA(t).KeyPEM()}, func(o *Options, dir string) {
			o.CACertFile, o.CAKeyFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
		}, "private key does not match public key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for name, data := range tc.files {
				path := filepath.Join(dir, name)
				if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, data, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			o := testOptions(dir)
			if tc.set != nil {
				tc.set(o, dir)
			}
			_, err := tryStartHub(t, o)
			if says := strings.ReplaceAll(tc.says, "DIR", dir); err == nil || !strings.Contains(err.Error(), says) {
				t.Fatalf("the hub ended with %v, want an error saying %q", err, says)
			}
			for name, data := range tc.files {
				if got, _ := os.ReadFile(filepath.Join(dir, name)); !bytes.Equal(got, data) {
					t.Errorf("%s was changed", name)
				}
			}
		})
	}
}

func mustNewCA(t *testing.T) *tlsconfig.CA {
	t.Helper()
	ca, err := tlsconfig.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}
