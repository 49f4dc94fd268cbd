// Package hubtest runs a real hub inside a test: embedded etcd in a temporary directory, the
// registry, the fleet view, the trust follower (Server.Run) and the gRPC services, served as the
// hub serves them: the spokes' services (SyncService, JoinService, health) over TLS on one
// loopback port, where a client certificate is verified when given, and AdminService over mutual
// TLS on another. A test CA made for the hub issues its serving certificate, the certificates of
// every identity a test connects as (Peer), and signs join requests. Tests of the hub and of its
// clients use it instead of fakes.
package hubtest

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/e2e/testkit"
	hubetcd "github.com/spillway-io/spillway/hub/etcd"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/replica"
	"github.com/spillway-io/spillway/hub/server"
	"github.com/spillway-io/spillway/hub/view"
	"github.com/spillway-io/spillway/pkg/budget"
	"github.com/spillway-io/spillway/pkg/buildinfo"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// TrustDomain is the trust domain of the hubs this package starts.
const TrustDomain = "spillway.test"

// ServerName is the name the hub's serving certificate is issued for (with 127.0.0.1 and ::1).
const ServerName = "localhost"

// Hub is a running in-process hub.
type Hub struct {
	t testing.TB
	o Options
	// Addr is the spokes' port (SyncService, JoinService, health); AdminAddr the admin port;
	// HTTPAddr the HTTP port of a hub process (/metrics, /readyz).
	Addr      string
	AdminAddr string
	HTTPAddr  string
	// ID is the hub's --hub-id (a hub process's).
	ID string
	// CA is the hub's CA: it issued the hub's serving certificate and signs join requests, and
	// the hub trusts the client certificates it issues.
	CA *tlsconfig.CA
	// Model is the hub's fleet view, Server its gRPC services, Store its registry, Registry its
	// metrics.
	Model    *view.Model
	Server   *server.Server
	Store    *registry.Store
	Registry *prometheus.Registry

	spokeTLS, adminTLS *tls.Config
	proc               *localfleet.Proc
	gs, admin          *grpc.Server
	done, adminDone    chan struct{}
}

// Options change the hub a test starts. The zero value is the plain hub of Start.
type Options struct {
	// HubID is the hub's replica ID ("hub-test" when empty).
	HubID string
	// Logger receives the gRPC services' logs (discarded when nil).
	Logger *slog.Logger
	// StreamInterceptor, when set, runs inside the hub's own stream interceptors, on both ports.
	StreamInterceptor grpc.StreamServerInterceptor
	// Admin, when set, wraps the AdminService implementation before it is registered.
	Admin func(*server.Server) pb.AdminServiceServer
	// Limits are the hub's limits (none by default).
	Limits server.Limits
	// AdminUsers are the users with the admin role; nil means server.DefaultAdminUser.
	AdminUsers []string
	// NoJoin starts the hub without a CA key: the join flow is off.
	NoJoin bool
	// ClusterCertValidity is the validity of certificates the join flow issues (server's default
	// when zero).
	ClusterCertValidity time.Duration
	// MinReportInterval is what the hub announces and enforces; 50 ms when zero.
	MinReportInterval time.Duration
	// Budgets, when set, are the fleet's token budgets (server.Options.Budgets), reported
	// every BudgetReportInterval.
	Budgets              *budget.Allocator
	BudgetReportInterval time.Duration
}

// Start starts a hub whose sessions hold leases of ttl; everything stops at the end of the test.
func Start(t testing.TB, ttl time.Duration) *Hub { return StartWith(t, ttl, Options{}) }

// StartWith starts a hub as Start does, changed by o.
func StartWith(t testing.TB, ttl time.Duration, o Options) *Hub {
	t.Helper()
	ca, err := tlsconfig.NewCA("hubtest CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e, err := hubetcd.StartEmbedded(ctx, hubetcd.EmbeddedOptions{Dir: t.TempDir(), ListenAddress: "127.0.0.1:0"})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cli, err := e.Client()
	if err != nil {
		cancel()
		e.Close()
		t.Fatal(err)
	}
	store := registry.New(cli, registry.Options{LeaseTTL: ttl})
	model := view.New()
	h := &Hub{t: t, o: o, CA: ca, Model: model, Store: store, Registry: prometheus.NewRegistry()}
	interval := o.MinReportInterval
	if interval == 0 {
		interval = 50 * time.Millisecond
	}
	if o.HubID == "" {
		o.HubID = "hub-test"
	}
	h.o, h.ID = o, o.HubID
	sopts := server.Options{
		HubID: o.HubID, Version: buildinfo.Get().String(), MinReportInterval: interval, CapacityHeartbeat: max(time.Second, interval),
		ViewInterval: 20 * time.Millisecond, Registerer: h.Registry, Logger: o.Logger,
		TrustDomain: TrustDomain, AdminUsers: o.AdminUsers, ClusterCertValidity: o.ClusterCertValidity,
		Limits: o.Limits, CABundle: ca.CertPEM, Budgets: o.Budgets, BudgetReportInterval: o.BudgetReportInterval,
	}
	if !o.NoJoin {
		sopts.CA = ca
	}
	h.Server = server.New(store, model, sopts)

	followDone, runDone, leadDone, batchDone := make(chan struct{}), make(chan struct{}), make(chan struct{}), make(chan struct{})
	go func() {
		defer close(followDone)
		_ = model.Follow(ctx, store, slog.New(slog.DiscardHandler))
	}()
	go func() {
		defer close(batchDone)
		_ = model.Batch(ctx)
	}()
	go func() {
		defer close(runDone)
		_ = h.Server.Run(ctx)
	}()
	h.serverTLS()
	h.Serve("127.0.0.1:0")
	h.serveAdmin()
	// The one replica registers in hubs/ and leads, as a hub process does.
	elector := replica.New(cli, store, replica.Options{HubID: o.HubID, Incarnation: model.Incarnation(), AdvertiseAddress: h.AdminAddr})
	go func() {
		defer close(leadDone)
		_ = elector.Run(ctx, h.Server.Lead)
	}()
	t.Cleanup(func() {
		h.Stop()
		h.admin.Stop()
		<-h.adminDone
		cancel()
		<-followDone
		<-batchDone
		<-runDone
		<-leadDone
		cli.Close()
		e.Close()
	})
	testkit.Eventually(t, 10*time.Second, "the hub loaded its revocations and hop keys", h.Server.Ready)
	return h
}

func (h *Hub) serverTLS() {
	h.t.Helper()
	certPEM, keyPEM, err := h.CA.Issue(tlsconfig.Identity{TrustDomain: TrustDomain, Kind: tlsconfig.KindUser, Name: "hub-server"},
		[]string{ServerName}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}, 24*time.Hour)
	if err != nil {
		h.t.Fatal(err)
	}
	kp, err := tlsconfig.NewStaticKeyPair(certPEM, keyPEM)
	if err != nil {
		h.t.Fatal(err)
	}
	clientCAs, err := tlsconfig.NewStaticCAPool(h.CA.CertPEM())
	if err != nil {
		h.t.Fatal(err)
	}
	h.spokeTLS = tlsconfig.ServerConfig(kp, clientCAs, false)
	h.adminTLS = tlsconfig.ServerConfig(kp, clientCAs, true)
}

func (h *Hub) grpcServer(cfg *tls.Config, opts []grpc.ServerOption) *grpc.Server {
	opts = append(opts, grpc.Creds(credentials.NewTLS(cfg)))
	if h.o.StreamInterceptor != nil {
		opts = append(opts, grpc.ChainStreamInterceptor(h.o.StreamInterceptor))
	}
	gs := grpc.NewServer(opts...)
	healthpb.RegisterHealthServer(gs, health.NewServer())
	return gs
}

// Serve serves the spokes' port on addr (after Stop, the same address brings it back).
func (h *Hub) Serve(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.Addr = l.Addr().String()
	h.gs = h.grpcServer(h.spokeTLS, h.Server.SpokeServerOptions())
	h.Server.RegisterSpokeServices(h.gs)
	h.done = make(chan struct{})
	go func() {
		defer close(h.done)
		_ = h.gs.Serve(l)
	}()
}

func (h *Hub) serveAdmin() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		h.t.Fatal(err)
	}
	h.AdminAddr = l.Addr().String()
	h.admin = h.grpcServer(h.adminTLS, h.Server.AdminServerOptions())
	var admin pb.AdminServiceServer = h.Server
	if h.o.Admin != nil {
		admin = h.o.Admin(h.Server)
	}
	pb.RegisterAdminServiceServer(h.admin, admin)
	pb.RegisterPeerServiceServer(h.admin, h.Server)
	h.adminDone = make(chan struct{})
	go func() {
		defer close(h.adminDone)
		_ = h.admin.Serve(l)
	}()
}

// Stop cuts every stream of the spokes' port at once, as a network failure or a hub crash would
// (the admin port stays). Idempotent.
func (h *Hub) Stop() {
	h.gs.Stop()
	<-h.done
}

// Peer is who a test connects as: a cluster or user identity of the hub's trust domain with a
// certificate from the hub's CA, or no certificate at all, or one changed by IssuedBy, Expired
// ValidFor or InTrustDomain. Certificates are issued when a connection is made, valid for an hour
// unless ValidFor says otherwise.
type Peer struct {
	kind, name  string
	anonymous   bool
	trustDomain string
	ca          *tlsconfig.CA
	expired     bool
	validity    time.Duration
	certPEM     []byte
	keyPEM      []byte
}

// Cluster is the identity spiffe://<TrustDomain>/cluster/<id>.
func Cluster(id string) Peer { return Peer{kind: tlsconfig.KindCluster, name: id} }

// User is the identity spiffe://<TrustDomain>/user/<name>.
func User(name string) Peer { return Peer{kind: tlsconfig.KindUser, name: name} }

// HubReplica returns the identity of hub replica id (spiffe://<td>/hub/<id>), which
// PeerService answers.
func HubReplica(id string) Peer { return Peer{kind: tlsconfig.KindHub, name: id} }

// Admin is the user the hub makes admin by default.
func Admin() Peer { return User(server.DefaultAdminUser) }

// Anonymous presents no client certificate.
func Anonymous() Peer { return Peer{anonymous: true} }

// KeyPair presents a certificate and key the test holds (one the join flow issued, say).
func KeyPair(certPEM, keyPEM []byte) Peer { return Peer{certPEM: certPEM, keyPEM: keyPEM} }

// IssuedBy makes p's certificate come from ca instead of the hub's CA.
func (p Peer) IssuedBy(ca *tlsconfig.CA) Peer { p.ca = ca; return p }

// Expired makes p's certificate one that expired an hour ago.
func (p Peer) Expired() Peer { p.expired = true; return p }

// ValidFor makes p's certificate valid for d from now (an hour by default).
func (p Peer) ValidFor(d time.Duration) Peer { p.validity = d; return p }

// InTrustDomain names p's identity in another trust domain.
func (p Peer) InTrustDomain(td string) Peer { p.trustDomain = td; return p }

// Identity is p's identity (the zero Identity for Anonymous and KeyPair).
func (p Peer) Identity() tlsconfig.Identity {
	if p.anonymous || p.kind == "" {
		return tlsconfig.Identity{}
	}
	td := p.trustDomain
	if td == "" {
		td = TrustDomain
	}
	return tlsconfig.Identity{TrustDomain: td, Kind: p.kind, Name: p.name}
}

// Credentials issues p's certificate and key as PEM (nil for Anonymous).
func (h *Hub) Credentials(p Peer) (certPEM, keyPEM []byte) {
	h.t.Helper()
	switch {
	case p.anonymous:
		return nil, nil
	case p.certPEM != nil:
		return p.certPEM, p.keyPEM
	}
	ca := p.ca
	if ca == nil {
		ca = h.CA
	}
	var err error
	if p.expired {
		certPEM, keyPEM, err = issueExpired(ca, p.Identity())
	} else {
		validity := p.validity
		if validity == 0 {
			validity = time.Hour
		}
		certPEM, keyPEM, err = ca.Issue(p.Identity(), nil, nil, validity)
	}
	if err != nil {
		h.t.Fatal(err)
	}
	return certPEM, keyPEM
}

// issueExpired issues a client certificate for id from ca that expired an hour ago.
func issueExpired(ca *tlsconfig.CA, id tlsconfig.Identity) (certPEM, keyPEM []byte, err error) {
	// A key and CSR of the right kind, then the CA's certificate and key by hand: CA.Issue
	// never issues into the past.
	_, keyPEM, err = tlsconfig.NewCSR(id)
	if err != nil {
		return nil, nil, err
	}
	keyBlock, _ := pem.Decode(keyPEM)
	key, err := x509.ParsePKCS8PrivateKey(keyBlock.Bytes)
	if err != nil {
		return nil, nil, err
	}
	caKeyBlock, _ := pem.Decode(ca.KeyPEM())
	caKey, err := x509.ParsePKCS8PrivateKey(caKeyBlock.Bytes)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(now.UnixNano()),
		Subject:      pkix.Name{CommonName: id.Name},
		NotBefore:    now.Add(-2 * time.Hour),
		NotAfter:     now.Add(-time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		URIs:         []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Certificate(), key.(crypto.Signer).Public(), caKey)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}

// CredentialsDir writes p's credentials as a Kubernetes TLS Secret holds them (tlsconfig's
// ca.crt, tls.crt, tls.key; ca.crt is the hub's CA) to a new temporary directory, and returns it.
// For Anonymous only ca.crt is written.
func (h *Hub) CredentialsDir(p Peer) string {
	h.t.Helper()
	dir := h.t.TempDir()
	certPEM, keyPEM := h.Credentials(p)
	files := map[string][]byte{tlsconfig.CAFile: h.CA.CertPEM()}
	if certPEM != nil {
		files[tlsconfig.CertFile], files[tlsconfig.KeyFile] = certPEM, keyPEM
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			h.t.Fatal(err)
		}
	}
	return dir
}

// ClientTLS is the TLS configuration of a client connecting as p: it verifies the hub's serving
// certificate with the hub's CA (for ServerName) and presents p's certificate.
func (h *Hub) ClientTLS(p Peer) *tls.Config {
	h.t.Helper()
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(h.CA.CertPEM())
	cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: ServerName}
	if certPEM, keyPEM := h.Credentials(p); certPEM != nil {
		cert, err := tls.X509KeyPair(certPEM, keyPEM)
		if err != nil {
			h.t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg
}

// DialOptions are the dial options of a client connecting as p (spoke/hubclient's
// Options.DialOptions, say).
func (h *Hub) DialOptions(p Peer) []grpc.DialOption {
	h.t.Helper()
	return []grpc.DialOption{grpc.WithTransportCredentials(credentials.NewTLS(h.ClientTLS(p)))}
}

func (h *Hub) dial(addr string, p Peer, opts []grpc.DialOption) *grpc.ClientConn {
	h.t.Helper()
	conn, err := grpc.NewClient(addr, append(h.DialOptions(p), opts...)...)
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	return conn
}

// ConnAs returns a client connection to the spokes' port as p, closed at the end of the test.
func (h *Hub) ConnAs(p Peer, opts ...grpc.DialOption) *grpc.ClientConn {
	return h.dial(h.Addr, p, opts)
}

// AdminConnAs returns a client connection to the admin port as p, closed at the end of the test.
func (h *Hub) AdminConnAs(p Peer, opts ...grpc.DialOption) *grpc.ClientConn {
	return h.dial(h.AdminAddr, p, opts)
}

// Conn returns a client connection to the spokes' port without a client certificate: enough for
// JoinService's Discover and Join and for health, refused everywhere else.
func (h *Hub) Conn(opts ...grpc.DialOption) *grpc.ClientConn { return h.ConnAs(Anonymous(), opts...) }

// Admin returns an AdminService client of the admin user.
func (h *Hub) Admin() pb.AdminServiceClient { return pb.NewAdminServiceClient(h.AdminConnAs(Admin())) }

// AdminAs returns an AdminService client as p.
func (h *Hub) AdminAs(p Peer) pb.AdminServiceClient {
	return pb.NewAdminServiceClient(h.AdminConnAs(p))
}

// Sync returns a SyncService client without a client certificate (every call is refused).
func (h *Hub) Sync() pb.SyncServiceClient { return pb.NewSyncServiceClient(h.Conn()) }

// SyncAs returns a SyncService client of cluster.
func (h *Hub) SyncAs(cluster string) pb.SyncServiceClient {
	return pb.NewSyncServiceClient(h.ConnAs(Cluster(cluster)))
}

// Join returns a JoinService client without a client certificate.
func (h *Hub) Join() pb.JoinServiceClient { return pb.NewJoinServiceClient(h.Conn()) }
