package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// staticOptions are a standalone spoke's options with the static source, listening on
// loopback ports the system picks.
func staticOptions(t *testing.T) *Options {
	t.Helper()
	pools := filepath.Join(t.TempDir(), "pools.yaml")
	if err := os.WriteFile(pools, []byte("pools:\n- {namespace: default, name: chat, targetPorts: [8000], endpoints: [127.0.0.1]}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := NewOptions()
	o.ClusterID, o.Region, o.PoolsFile, o.HubAddress = "east", "us-east", pools, ""
	o.HTTPAddress, o.EPPAddress = "127.0.0.1:0", "127.0.0.1:0"
	o.Log.Level = "error"
	return o
}

// startSpoke runs a spoke of o until the test ends and returns its EPP and HTTP addresses.
func startSpoke(t *testing.T, o *Options) (eppAddr, httpAddr string) {
	t.Helper()
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	s, err := build(cfg)
	t.Cleanup(s.close)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := s.listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx, ls) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("spoke: %v", err)
		}
	})
	return ls.epp.Addr().String(), ls.http.Addr().String()
}

// eppHealth asks the EPP's health service over creds; it returns the presented certificate
// when the connection is TLS.
func eppHealth(t *testing.T, addr string, creds credentials.TransportCredentials) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "readiness"})
	return err
}

func httpGet(url string, cfg *tls.Config) (int, error) {
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 5 * time.Second}
	defer c.CloseIdleConnections()
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// skipVerify is how gateways dial an EPP by default: TLS without verifying its certificate.
func skipVerify() *tls.Config { return &tls.Config{InsecureSkipVerify: true} } //nolint:gosec // a test client

func TestEPPAndHTTPServeTLSByDefault(t *testing.T) {
	eppAddr, httpAddr := startSpoke(t, staticOptions(t))

	if err := eppHealth(t, eppAddr, insecure.NewCredentials()); err == nil {
		t.Error("a plaintext gRPC client reached the EPP")
	}
	var presented []*x509.Certificate
	cfg := skipVerify()
	cfg.VerifyConnection = func(cs tls.ConnectionState) error { presented = cs.PeerCertificates; return nil }
	if err := eppHealth(t, eppAddr, credentials.NewTLS(cfg)); err != nil {
		t.Fatalf("a TLS gRPC client: %v", err)
	}
	// The self-signed certificate is good for the address the EPP serves, for a client that
	// pins it.
	if len(presented) == 0 {
		t.Fatal("the EPP presented no certificate")
	}
	pool := x509.NewCertPool()
	pool.AddCert(presented[0])
	host, _, _ := net.SplitHostPort(eppAddr)
	if _, err := presented[0].Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
		t.Errorf("the self-signed certificate does not verify for %s: %v", host, err)
	}

	if code, err := httpGet("https://"+httpAddr+"/healthz", skipVerify()); err != nil || code != http.StatusOK {
		t.Errorf("GET https://%s/healthz = %d, %v; want 200", httpAddr, code, err)
	}
	if code, err := httpGet("http://"+httpAddr+"/healthz", nil); err == nil && code == http.StatusOK {
		t.Errorf("GET http://%s/healthz = 200 over plaintext", httpAddr)
	}
}

func TestPlaintextOnlyByFlag(t *testing.T) {
	o := staticOptions(t)
	o.Trust.EPPSecureServing, o.Trust.InsecureHTTP = false, true
	eppAddr, httpAddr := startSpoke(t, o)

	if err := eppHealth(t, eppAddr, insecure.NewCredentials()); err != nil {
		t.Errorf("a plaintext gRPC client with --epp-secure-serving=false: %v", err)
	}
	if err := eppHealth(t, eppAddr, credentials.NewTLS(skipVerify())); err == nil {
		t.Error("a TLS client reached a plaintext EPP")
	}
	if code, err := httpGet("http://"+httpAddr+"/healthz", nil); err != nil || code != http.StatusOK {
		t.Errorf("GET http://%s/healthz with --insecure-http = %d, %v; want 200", httpAddr, code, err)
	}
}

func TestEPPWithMountedCertificateRequiresGatewayCertificates(t *testing.T) {
	ca, err := tlsconfig.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serving, gateway := t.TempDir(), t.TempDir()
	for dir, name := range map[string]string{serving: "epp", gateway: "gateway"} {
		certPEM, keyPEM, err := ca.Issue(tlsconfig.Identity{TrustDomain: "spillway.local", Kind: tlsconfig.KindUser, Name: name},
			[]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		for file, data := range map[string][]byte{tlsconfig.CertFile: certPEM, tlsconfig.KeyFile: keyPEM} {
			if err := os.WriteFile(filepath.Join(dir, file), data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	caFile := filepath.Join(t.TempDir(), "ca.crt")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	o := staticOptions(t)
	o.Trust.EPPCertDir, o.Trust.EPPClientCAFile = serving, caFile
	eppAddr, httpAddr := startSpoke(t, o)

	roots, err := tlsconfig.NewStaticCAPool(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	if err := eppHealth(t, eppAddr, credentials.NewTLS(tlsconfig.ClientConfig(nil, roots, "127.0.0.1"))); err == nil {
		t.Error("a gateway without a client certificate reached the EPP that requires one")
	}
	kp, err := tlsconfig.NewKeyPair(filepath.Join(gateway, tlsconfig.CertFile), filepath.Join(gateway, tlsconfig.KeyFile), tlsconfig.KeyPairOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The gateway verifies the mounted certificate with the CA.
	if err := eppHealth(t, eppAddr, credentials.NewTLS(tlsconfig.ClientConfig(kp, roots, "127.0.0.1"))); err != nil {
		t.Errorf("a gateway with a client certificate: %v", err)
	}
	// HTTPS serves the mounted certificate and asks for none.
	if code, err := httpGet("https://"+httpAddr+"/healthz", &tls.Config{RootCAs: roots.Pool()}); err != nil || code != http.StatusOK {
		t.Errorf("GET https://%s/healthz verified with the CA = %d, %v; want 200", httpAddr, code, err)
	}
}
