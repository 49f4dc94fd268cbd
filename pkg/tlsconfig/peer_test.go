package tlsconfig

import (
	"context"
	"crypto/tls"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestPeerIdentity: a gRPC handler reads the identity of the certificate its client presented and
// the server verified; none when the client presented no certificate, or when the server only
// asked for one without verifying it (anyone can make a certificate naming any cluster).
func TestPeerIdentity(t *testing.T) {
	ca := newTestCA(t, "hub")
	dir := t.TempDir()
	server := issuedKeyPair(t, ca, Identity{TrustDomain: "td", Kind: KindUser, Name: "hub"}, dir, "server")
	client := issuedKeyPair(t, ca, clusterA, dir, "client")
	pool, err := NewStaticCAPool(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	type seen struct {
		id Identity
		ok bool
	}
	unverified := &tls.Config{MinVersion: tls.VersionTLS13, GetCertificate: server.GetCertificate, ClientAuth: tls.RequestClientCert}
	for _, srv := range []struct {
		name string
		cfg  *tls.Config
		with seen
	}{
		{"ServerConfig", ServerConfig(server, pool, false), seen{clusterA, true}},
		{"a server that does not verify", unverified, seen{}},
	} {
		calls := make(chan seen, 2)
		gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(srv.cfg)),
			grpc.UnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
				id, _, ok := PeerIdentity(ctx)
				calls <- seen{id, ok}
				return h(ctx, req)
			}))
		healthpb.RegisterHealthServer(gs, health.NewServer())
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan struct{})
		go func() { defer close(done); _ = gs.Serve(l) }()

		for _, tc := range []struct {
			name string
			kp   *KeyPair
			want seen
		}{
			{"with a certificate", client, srv.with},
			{"without", nil, seen{}},
		} {
			conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(credentials.NewTLS(ClientConfig(tc.kp, pool, hubName))))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			_, err = healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			cancel()
			conn.Close()
			if err != nil {
				t.Fatalf("%s, %s: %v", srv.name, tc.name, err)
			}
			if got := <-calls; got != tc.want {
				t.Errorf("%s, %s: peer %+v, want %+v", srv.name, tc.name, got, tc.want)
			}
		}
		gs.Stop()
		<-done
	}
	if _, _, ok := PeerIdentity(context.Background()); ok {
		t.Fatal("an identity without a peer")
	}
}
