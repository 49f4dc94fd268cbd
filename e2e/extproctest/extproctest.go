// Package extproctest serves an ext_proc server (an Endpoint Picker) over real gRPC on a loopback port
// for tests, and hands back a client connected to it. Everything stops at the end of the test.
//
// By default the exchange is plaintext, which is what unit tests of the EPP's logic want. With
// WithTLS it runs as the spoke serves it: TLS 1.3 with a certificate for 127.0.0.1 issued by a CA
// made for the test, which the client verifies; WithClientCert makes the server require a client
// certificate from that CA, and the client present one.
package extproctest

import (
	"net"
	"testing"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// TrustDomain is the trust domain of the certificates WithTLS issues.
const TrustDomain = "extproctest.local"

type settings struct {
	tls, clientCert bool
}

// Option changes how Serve serves and dials.
type Option func(*settings)

// WithTLS serves over TLS with a certificate the client verifies.
func WithTLS() Option { return func(s *settings) { s.tls = true } }

// WithClientCert (with WithTLS) makes the server require a client certificate, and the client
// present one issued by the same CA: mutual TLS.
func WithClientCert() Option { return func(s *settings) { s.tls, s.clientCert = true, true } }

// Serve serves srv on 127.0.0.1, with the spoke's gRPC server settings, and returns a client of it.
func Serve(t testing.TB, srv extprocv3.ExternalProcessorServer, opts ...Option) extprocv3.ExternalProcessorClient {
	t.Helper()
	var s settings
	for _, o := range opts {
		o(&s)
	}
	serverOpts := epp.GRPCServerOptions(epp.DefaultStreamWorkers)
	dial := grpc.WithTransportCredentials(insecure.NewCredentials())
	if s.tls {
		server, client := credentialsFor(t, s.clientCert)
		serverOpts = append(serverOpts, grpc.Creds(server))
		dial = grpc.WithTransportCredentials(client)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(serverOpts...)
	extprocv3.RegisterExternalProcessorServer(gs, srv)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = gs.Serve(l)
	}()
	conn, err := grpc.NewClient(l.Addr().String(), dial)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		gs.Stop()
		<-done
	})
	return extprocv3.NewExternalProcessorClient(conn)
}

// credentialsFor makes a CA, a serving certificate for 127.0.0.1 and, with clientCert, a client
// certificate, and returns the server's and the client's transport credentials.
func credentialsFor(t testing.TB, clientCert bool) (server, client credentials.TransportCredentials) {
	t.Helper()
	ca, err := tlsconfig.NewCA("extproctest CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsconfig.NewStaticCAPool(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string, ips []net.IP) *tlsconfig.KeyPair {
		certPEM, keyPEM, err := ca.Issue(tlsconfig.Identity{TrustDomain: TrustDomain, Kind: tlsconfig.KindUser, Name: name}, nil, ips, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		kp, err := tlsconfig.NewStaticKeyPair(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return kp
	}
	serverKP := issue("epp", []net.IP{net.IPv4(127, 0, 0, 1)})
	var clientKP *tlsconfig.KeyPair
	var clientCAs *tlsconfig.CAPool
	if clientCert {
		clientKP, clientCAs = issue("gateway", nil), pool
	}
	return credentials.NewTLS(tlsconfig.ServerConfig(serverKP, clientCAs, clientCert)),
		credentials.NewTLS(tlsconfig.ClientConfig(clientKP, pool, "127.0.0.1"))
}
