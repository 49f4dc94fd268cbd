package join

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

const trustDomain = "spillway.test"

func clusterID(name string) tlsconfig.Identity {
	return tlsconfig.Identity{TrustDomain: trustDomain, Kind: tlsconfig.KindCluster, Name: name}
}

// fakeHub serves a JoinService over real gRPC with TLS: a serving certificate for 127.0.0.1
// from a test CA, client certificates verified when given, as the hub's spokes' port does. The
// tests script its answers.
type fakeHub struct {
	pb.UnimplementedJoinServiceServer
	t    *testing.T
	CA   *tlsconfig.CA
	Addr string

	mu sync.Mutex
	// discover, join and renew answer the calls; nil: the defaults (the CA's bundle; approve;
	// sign for the caller's identity).
	discover  func(n int) (*pb.DiscoverResponse, error)
	join      func(n int, req *pb.JoinRequest) (*pb.JoinResponse, error)
	renew     func(n int, caller tlsconfig.Identity, req *pb.RenewRequest) (*pb.RenewResponse, error)
	discovers int
	joins     []*pb.JoinRequest
	renews    int
}

func startFakeHub(t *testing.T) *fakeHub {
	t.Helper()
	ca, err := tlsconfig.NewCA("fake hub CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(tlsconfig.Identity{TrustDomain: trustDomain, Kind: tlsconfig.KindUser, Name: "hub"},
		[]string{"localhost"}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tlsconfig.NewStaticKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsconfig.NewStaticCAPool(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeHub{t: t, CA: ca, Addr: l.Addr().String()}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsconfig.ServerConfig(kp, pool, false))))
	pb.RegisterJoinServiceServer(gs, h)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(l) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return h
}

// sign signs a CSR as the hub would, for the identity it asks for.
func (h *fakeHub) sign(csrPEM []byte, validity time.Duration) []byte {
	csr, id, err := tlsconfig.ParseCSR(csrPEM)
	if err != nil {
		h.t.Errorf("fake hub: %v", err)
		return nil
	}
	cert, err := h.CA.Sign(csr, id, validity)
	if err != nil {
		h.t.Errorf("fake hub: %v", err)
	}
	return cert
}

func (h *fakeHub) Discover(context.Context, *pb.DiscoverRequest) (*pb.DiscoverResponse, error) {
	h.mu.Lock()
	n, f := h.discovers, h.discover
	h.discovers++
	h.mu.Unlock()
	if f != nil {
		return f(n)
	}
	return &pb.DiscoverResponse{CaBundlePem: h.CA.CertPEM(), TrustDomain: trustDomain}, nil
}

func (h *fakeHub) Join(_ context.Context, req *pb.JoinRequest) (*pb.JoinResponse, error) {
	h.mu.Lock()
	n, f := len(h.joins), h.join
	h.joins = append(h.joins, req)
	h.mu.Unlock()
	if f != nil {
		return f(n, req)
	}
	return h.approve(req, time.Hour), nil
}

func (h *fakeHub) approve(req *pb.JoinRequest, validity time.Duration) *pb.JoinResponse {
	return &pb.JoinResponse{State: pb.JoinState_JOIN_STATE_APPROVED, CertificatePem: h.sign(req.GetCsrPem(), validity),
		CaBundlePem: h.CA.CertPEM()}
}

func (h *fakeHub) Renew(ctx context.Context, req *pb.RenewRequest) (*pb.RenewResponse, error) {
	caller, cert, ok := tlsconfig.PeerIdentity(ctx)
	if !ok {
		return nil, status.Error(codes.Unauthenticated, "renew needs a client certificate")
	}
	if time.Now().After(cert.NotAfter) { // as the hub checks at every call
		return nil, status.Error(codes.Unauthenticated, "the client certificate expired")
	}
	h.mu.Lock()
	n, f := h.renews, h.renew
	h.renews++
	h.mu.Unlock()
	if f != nil {
		return f(n, caller, req)
	}
	return &pb.RenewResponse{CertificatePem: h.sign(req.GetCsrPem(), time.Hour), CaBundlePem: h.CA.CertPEM()}, nil
}

func (h *fakeHub) calls() (discovers, joins, renews int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.discovers, len(h.joins), h.renews
}

func (h *fakeHub) joinRequests() []*pb.JoinRequest {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]*pb.JoinRequest(nil), h.joins...)
}

// options returns join options for cluster "east" against h, pinned to h's CA.
func (h *fakeHub) options(dir string) Options {
	return Options{
		HubAddress: h.Addr, Token: "abcdef.0123456789abcdef", CAHash: tlsconfig.SPKIHash(h.CA.Certificate()),
		TrustDomain: trustDomain, ClusterID: "east", Dir: dir, MinBackoff: 10 * time.Millisecond, MaxBackoff: 20 * time.Millisecond,
	}
}
