package gateway_test

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/epp/scheduler"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// pki is a CA with its certificate written to dir/ca.crt, which issues certificates into dir.
type pki struct {
	ca  *tlsconfig.CA
	dir string
}

func newPKI(t *testing.T, name string) pki {
	t.Helper()
	ca, err := tlsconfig.NewCA(name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	p := pki{ca: ca, dir: t.TempDir()}
	if err := os.WriteFile(filepath.Join(p.dir, "ca.crt"), ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func (p pki) caFile() string { return filepath.Join(p.dir, "ca.crt") }

// issue writes name.crt and name.key for 127.0.0.1 and returns their paths.
func (p pki) issue(t *testing.T, name string) (certFile, keyFile string) {
	t.Helper()
	certPEM, keyPEM, err := p.ca.Issue(tlsconfig.Identity{TrustDomain: "test.local", Kind: tlsconfig.KindUser, Name: name},
		nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(p.dir, name+".crt"), filepath.Join(p.dir, name+".key")
	if err := os.WriteFile(certFile, certPEM, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, keyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// serveTLSEPP serves a real EPP over TLS with a certificate of p; with clientCAs the EPP requires
// a client certificate from them. It returns the EPP's address.
func serveTLSEPP(t *testing.T, p pki, clientCAs *pki) string {
	t.Helper()
	certFile, keyFile := p.issue(t, "epp")
	kp, err := tlsconfig.NewKeyPair(certFile, keyFile, tlsconfig.KeyPairOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var caPool *tlsconfig.CAPool
	if clientCAs != nil {
		b, err := os.ReadFile(clientCAs.caFile())
		if err != nil {
			t.Fatal(err)
		}
		if caPool, err = tlsconfig.NewStaticCAPool(b); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := epp.New(epp.Options{Pool: pool, Settings: epp.DefaultSettings(), Datastore: fixed{{Endpoint: scheduler.Endpoint{Address: "127.0.0.1:1"}, Ready: true}}})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(append(epp.GRPCServerOptions(0), grpc.Creds(credentials.NewTLS(tlsconfig.ServerConfig(kp, caPool, clientCAs != nil))))...)
	extprocv3.RegisterExternalProcessorServer(gs, srv)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(l) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return l.Addr().String()
}

// route asks the EPP at addr, dialed as e says, to route one request: nil when it picked an
// endpoint.
func route(t *testing.T, addr string, e gateway.EPPTLS) error {
	t.Helper()
	conn, err := gateway.DialEPP(addr, e)
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := &gateway.Client{EPP: extprocv3.NewExternalProcessorClient(conn)}
	call, d, err := c.Request(ctx, []gateway.Header{{":method", "POST"}, {":path", "/v1/completions"}},
		[]byte(`{"model":"m","prompt":"p","max_tokens":1}`), nil)
	if err != nil {
		return err
	}
	call.Close()
	if len(d.Destinations) == 0 {
		t.Fatalf("the EPP routed nowhere: %+v", d)
	}
	return nil
}

func TestDialEPP(t *testing.T) {
	fleetCA, otherCA, gatewayCA := newPKI(t, "fleet"), newPKI(t, "other"), newPKI(t, "gateways")
	addr := serveTLSEPP(t, fleetCA, nil)
	mtlsAddr := serveTLSEPP(t, fleetCA, &gatewayCA)
	clientCert, clientKey := gatewayCA.issue(t, "gateway")
	strangerCert, strangerKey := otherCA.issue(t, "stranger")

	for _, tc := range []struct {
		name string
		addr string
		e    gateway.EPPTLS
		err  string // empty: routed
	}{
		{"verified with the EPP's CA", addr, gateway.EPPTLS{CAFile: fleetCA.caFile()}, ""},
		{"encrypted, unverified (the default)", addr, gateway.EPPTLS{}, ""},
		{"verified against another CA", addr, gateway.EPPTLS{CAFile: otherCA.caFile()}, "certificate signed by unknown authority"},
		{"verified for a name the certificate lacks", addr, gateway.EPPTLS{CAFile: fleetCA.caFile(), ServerName: "epp.example.com"}, "not valid for any names"},
		{"plaintext to a TLS EPP", addr, gateway.EPPTLS{Insecure: true}, "Unavailable"},
		{"no client certificate where one is required", mtlsAddr, gateway.EPPTLS{CAFile: fleetCA.caFile()}, "Unavailable"},
		{"a client certificate from another CA", mtlsAddr, gateway.EPPTLS{CAFile: fleetCA.caFile(), CertFile: strangerCert, KeyFile: strangerKey}, "Unavailable"},
		{"mutual TLS", mtlsAddr, gateway.EPPTLS{CAFile: fleetCA.caFile(), CertFile: clientCert, KeyFile: clientKey}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := route(t, tc.addr, tc.e)
			switch {
			case tc.err == "" && err != nil:
				t.Fatalf("want routed, got %v", err)
			case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
				t.Fatalf("want an error containing %q, got %v", tc.err, err)
			}
		})
	}
}

func TestDialEPPRefusesContradictions(t *testing.T) {
	for _, e := range []gateway.EPPTLS{
		{Insecure: true, CAFile: "ca.crt"},
		{Insecure: true, CertFile: "tls.crt", KeyFile: "tls.key"},
		{CertFile: "tls.crt"},
	} {
		if _, err := gateway.DialEPP("127.0.0.1:9002", e); err == nil {
			t.Errorf("%+v: want refused", e)
		}
	}
	if _, err := gateway.DialEPP("127.0.0.1:9002", gateway.EPPTLS{CAFile: filepath.Join(t.TempDir(), "missing.crt")}); err == nil || !strings.Contains(err.Error(), "missing.crt") {
		t.Errorf("a missing CA file: %v, want an error naming it", err)
	}
}
