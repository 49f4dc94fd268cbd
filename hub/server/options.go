package server

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/experimental"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/mem"

	"github.com/spillway-io/spillway/pkg/budget"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Defaults of Options.
const (
	DefaultTrustDomain         = "spillway.local"
	DefaultAdminUser           = "admin"
	DefaultClusterCertValidity = 720 * time.Hour
)

// DefaultDeniedExportNamespaces are the namespaces whose pools are never exported unless the
// operator says otherwise: the cluster's own.
func DefaultDeniedExportNamespaces() []string {
	return []string{"kube-system", "kube-public", "kube-node-lease"}
}

// Options configure the services.
type Options struct {
	// HubID names this hub replica, and Version its build (WhoAmI answers both).
	HubID, Version string
	// MinReportInterval is the fastest a spoke may send capacity reports on its stream; the hub
	// announces it in the Welcome and ends a stream that sends faster (after a burst of a few)
	// with ResourceExhausted. Interest changes and import reports are held to the same rate, each
	// after a larger burst. Zero enforces nothing.
	MinReportInterval time.Duration
	// CapacityHeartbeat is how often a spoke resends unchanged capacity.
	CapacityHeartbeat time.Duration
	// StartGrace is the longest the view stays incomplete after the hub's start while registered
	// clusters have not reconnected (RunStartGrace); zero means the session lease TTL plus
	// spokeReconnectWait.
	StartGrace time.Duration
	// ViewInterval is the fastest the hub sends view updates on one stream, whether the fleet
	// view or the stream's interest changed; changes in between are coalesced. Every stream
	// reads the view at the same ticks of it, and the streams of a tick share the encoding of
	// the capacity they all want (fanout.go).
	ViewInterval time.Duration
	Logger       *slog.Logger
	Registerer   prometheus.Registerer

	// TrustDomain is the SPIFFE trust domain of every identity the hub accepts; empty means
	// DefaultTrustDomain.
	TrustDomain string
	// AdminUsers are the user names (spiffe://<trust-domain>/user/<name>) with the admin role on
	// the admin port; every other user of the trust domain is a viewer. nil means
	// [DefaultAdminUser]; an empty, non-nil list makes nobody admin.
	AdminUsers []string
	// CA signs the certificates of the join flow and of renewals; nil turns the join flow off
	// (Join and Renew answer FailedPrecondition, CreateToken too).
	CA *tlsconfig.CA
	// CABundle returns the PEM bundle spokes verify the hub with, which Discover, Join and Renew
	// hand out; nil means the CA's certificate.
	CABundle func() []byte
	// ClusterCertValidity is how long a certificate issued by Join or Renew is valid; zero means
	// DefaultClusterCertValidity.
	ClusterCertValidity time.Duration
	// Limits are the caps on what spokes may store and send.
	Limits Limits
	// Budgets, when set, divide the fleet's token budgets among the spokes (docs/budgets.md):
	// every stream receives the declarations and answers to its usage reports. Nil declares
	// none, and a budget report ends the stream.
	Budgets *budget.Allocator
	// BudgetReportInterval is how often spokes report their budgets' usage;
	// DefaultBudgetReportInterval when zero.
	BudgetReportInterval time.Duration
}

// Limits cap what the spokes may store and send. Zero values mean no cap. The export rules
// (MaxExportsPerCluster and the namespace lists) are also announced in every Welcome
// (ExportPolicy), so that an honest spoke leaves out what would be refused instead of losing its
// session; a stream that sends it anyway still ends.
type Limits struct {
	// MaxClusters is the most clusters the hub registers: Register of a new cluster beyond it
	// fails with ResourceExhausted.
	MaxClusters int
	// MaxExportsPerCluster is the most pools one cluster may export: a delta that would pass it
	// ends the stream with ResourceExhausted and changes nothing.
	MaxExportsPerCluster int
	// MaxConcurrentStreams caps the concurrent streams of one client connection
	// (grpc.MaxConcurrentStreams); further streams wait for one to end.
	MaxConcurrentStreams uint32
	// AllowedExportNamespaces, when not empty, are the only namespaces whose pools may be
	// exported.
	AllowedExportNamespaces []string
	// DeniedExportNamespaces are namespaces whose pools may never be exported (see
	// DefaultDeniedExportNamespaces).
	DeniedExportNamespaces []string
	// MaxSessionOpens is the most spoke sessions the replica opens at once (admit.go);
	// SessionOpenWait is how long a session waits for a slot before it is refused with
	// Unavailable and a retry delay of the same length. Zero means DefaultMaxSessionOpens and
	// DefaultSessionOpenWait.
	MaxSessionOpens int
	SessionOpenWait time.Duration
}

// ExportPolicy is the export policy of the limits, which the hub enforces on every export
// delta and announces in its Welcome.
func (l Limits) ExportPolicy() fleet.ExportPolicy {
	return fleet.ExportPolicy{
		AllowedNamespaces: l.AllowedExportNamespaces,
		DeniedNamespaces:  l.DeniedExportNamespaces,
		MaxExports:        l.MaxExportsPerCluster,
	}
}

// exportDenied says why pools of namespace ns may not be exported, or "" when they may.
func (l Limits) exportDenied(ns string) string { return l.ExportPolicy().NamespaceRefusal(ns) }

func (o Options) complete() Options {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.TrustDomain == "" {
		o.TrustDomain = DefaultTrustDomain
	}
	if o.AdminUsers == nil {
		o.AdminUsers = []string{DefaultAdminUser}
	}
	if o.ClusterCertValidity <= 0 {
		o.ClusterCertValidity = DefaultClusterCertValidity
	}
	if o.Limits.MaxSessionOpens <= 0 {
		o.Limits.MaxSessionOpens = DefaultMaxSessionOpens
	}
	if o.Limits.SessionOpenWait <= 0 {
		o.Limits.SessionOpenWait = DefaultSessionOpenWait
	}
	if o.CABundle == nil && o.CA != nil {
		ca := o.CA
		o.CABundle = ca.CertPEM
	}
	return o
}

// GRPCOptions are the hub's gRPC server options every port shares: the message size limit,
// keepalive that matches the spokes' (a ping every 10 s; clients may ping every 5 s, also
// between streams), and the buffer pool. SpokeServerOptions and AdminServerOptions include them.
//
// The keepalive's timeout is also the connection's TCP_USER_TIMEOUT (gRPC sets both): how long
// a segment may stay unacknowledged before the connection is given up. 10 s rides out the
// retransmissions of a link that loses a third of its packets (at 5 s, a session broke about
// every half minute there, and a reconnection over the same link could outlast the session's
// lease), and still ends the session of a spoke cut off from the hub well within a minute:
// the hub sends it view updates, unacknowledged from the cut on.
func GRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageBytes),
		experimental.BufferPool(bufferPool),
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 10 * time.Second, Timeout: 10 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}
}

// bufferPool holds the buffers gRPC encodes messages into: one tier per power of two from
// 256 bytes to 2 MiB. gRPC's default pool has none between 32 KiB and 1 MiB, and each view
// update of 33 KiB took (and cleared) a 1 MiB buffer: at 1,000 spokes that was an eighth of the
// hub's CPU.
var bufferPool = func() mem.BufferPool {
	var exps []uint8
	for e := uint8(8); e <= 21; e++ {
		exps = append(exps, e)
	}
	p, err := mem.NewBinaryTieredBufferPool(exps...)
	if err != nil {
		panic(err) // the exponents above are valid
	}
	return p
}()

func (s *Server) serverOptions(unary grpc.UnaryServerInterceptor, stream grpc.StreamServerInterceptor) []grpc.ServerOption {
	opts := GRPCOptions()
	if n := s.opts.Limits.MaxConcurrentStreams; n > 0 {
		opts = append(opts, grpc.MaxConcurrentStreams(n))
	}
	// The panic recovery is outermost, so that a panic in the authorization is recovered too.
	return append(opts,
		grpc.ChainUnaryInterceptor(s.recoverUnary, unary),
		grpc.ChainStreamInterceptor(s.recoverStream, stream),
	)
}

// SpokeServerOptions are every server option of the spokes' port (the one to give
// grpc.NewServer, besides the transport credentials): GRPCOptions, MaxConcurrentStreams, the
// panic recovery and the authorization of the spokes' port. Sync, Register and Renew need a
// verified client certificate, within its validity at each call (a connection may outlive it),
// naming a cluster of the trust domain that is not revoked;
// Discover, Join and grpc.health.v1 need none; any other method is refused.
func (s *Server) SpokeServerOptions() []grpc.ServerOption {
	return s.serverOptions(s.unary(spokeMethods), s.stream(spokeMethods))
}

// AdminServerOptions are every server option of the admin port: GRPCOptions,
// MaxConcurrentStreams, the panic recovery and the roles: every AdminService method needs a
// verified client certificate, within its validity at each call, naming a user of the trust
// domain; CreateToken, ApproveCluster,
// RevokeCluster and RotateHopKey need the admin role. grpc.health.v1 needs no identity.
func (s *Server) AdminServerOptions() []grpc.ServerOption {
	return s.serverOptions(s.unary(adminMethods), s.stream(adminMethods))
}

// RegisterSpokeServices registers the spokes' services on gs: SyncService and JoinService.
func (s *Server) RegisterSpokeServices(gs grpc.ServiceRegistrar) {
	pb.RegisterSyncServiceServer(gs, s)
	pb.RegisterJoinServiceServer(gs, s)
}

// RegisterAdminServices registers AdminService and PeerService on gs.
func (s *Server) RegisterAdminServices(gs grpc.ServiceRegistrar) {
	pb.RegisterAdminServiceServer(gs, s)
	pb.RegisterPeerServiceServer(gs, s)
}
