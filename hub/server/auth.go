package server

import (
	"context"
	"crypto/x509"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Roles on the admin port.
const (
	RoleViewer = "viewer"
	RoleAdmin  = "admin"
)

// access is what a method asks of its caller.
type access int

const (
	accessOpen    access = iota + 1 // anyone who completed the TLS handshake
	accessCluster                   // a cluster identity of the trust domain, not revoked
	accessViewer                    // a user identity of the trust domain
	accessAdmin                     // a user identity of the trust domain named in AdminUsers
	accessHub                       // a hub replica identity of the trust domain (PeerService)
)

const healthPrefix = "/grpc.health.v1.Health/"

// spokeMethods is what the spokes' port serves; any other method is refused.
var spokeMethods = map[string]access{
	pb.SyncService_Register_FullMethodName: accessCluster,
	pb.SyncService_Sync_FullMethodName:     accessCluster,
	pb.JoinService_Renew_FullMethodName:    accessCluster,
	pb.JoinService_Discover_FullMethodName: accessOpen,
	pb.JoinService_Join_FullMethodName:     accessOpen,
}

// adminMethods is what the admin port serves; any other method is refused.
var adminMethods = map[string]access{
	pb.AdminService_ListClusters_FullMethodName:         accessViewer,
	pb.AdminService_GetCluster_FullMethodName:           accessViewer,
	pb.AdminService_ListPools_FullMethodName:            accessViewer,
	pb.AdminService_GetPool_FullMethodName:              accessViewer,
	pb.AdminService_ListImports_FullMethodName:          accessViewer,
	pb.AdminService_ListBudgets_FullMethodName:          accessViewer,
	pb.AdminService_ListHubs_FullMethodName:             accessViewer,
	pb.AdminService_ListEvents_FullMethodName:           accessViewer,
	pb.AdminService_Explain_FullMethodName:              accessViewer,
	pb.AdminService_Watch_FullMethodName:                accessViewer,
	pb.AdminService_WhoAmI_FullMethodName:               accessViewer,
	pb.AdminService_ListJoinRequests_FullMethodName:     accessViewer,
	pb.AdminService_CreateToken_FullMethodName:          accessAdmin,
	pb.AdminService_ApproveCluster_FullMethodName:       accessAdmin,
	pb.AdminService_RevokeCluster_FullMethodName:        accessAdmin,
	pb.AdminService_RotateHopKey_FullMethodName:         accessAdmin,
	pb.AdminService_SetCordon_FullMethodName:            accessAdmin,
	pb.AdminService_IssueUserCertificate_FullMethodName: accessAdmin,
	pb.PeerService_Reports_FullMethodName:               accessHub,
}

// caller is who a call comes from, as the interceptors read it from the verified client
// certificate.
type caller struct {
	id   tlsconfig.Identity
	cert *x509.Certificate
	role string // on the admin port
}

type callerKey struct{}

// callerOf returns the caller the interceptors found; ok is false for a call that needed no
// identity (or a server used without the interceptors).
func callerOf(ctx context.Context) (caller, bool) {
	c, ok := ctx.Value(callerKey{}).(caller)
	return c, ok
}

// mustCaller returns the caller of a call that needs one, and refuses the call when the
// interceptors did not run: a handler never trusts a call it cannot name.
func mustCaller(ctx context.Context) (caller, error) {
	if c, ok := callerOf(ctx); ok {
		return c, nil
	}
	return caller{}, denied(codes.Unauthenticated, reasonNoCertificate, "no verified client certificate: the hub's authorization did not run for this call")
}

// authorize checks the caller of method against table and returns the context handlers see.
func (s *Server) authorize(ctx context.Context, method string, table map[string]access) (context.Context, error) {
	want, ok := table[method]
	if !ok {
		if strings.HasPrefix(method, healthPrefix) {
			return ctx, nil
		}
		return nil, denied(codes.PermissionDenied, reasonMethod, "%s is not served on this port", method)
	}
	if want == accessOpen {
		return ctx, nil
	}
	id, cert, ok := tlsconfig.PeerIdentity(ctx)
	kind := tlsconfig.KindUser
	switch want {
	case accessCluster:
		kind = tlsconfig.KindCluster
	case accessHub:
		kind = tlsconfig.KindHub
	}
	switch {
	case cert == nil:
		return nil, denied(codes.Unauthenticated, reasonNoCertificate,
			"%s needs a client certificate naming spiffe://%s/%s/<name>", method, s.opts.TrustDomain, kind)
	case !ok:
		return nil, denied(codes.Unauthenticated, reasonNoIdentity,
			"the client certificate %q carries no spiffe://%s/%s/<name> identity", cert.Subject.CommonName, s.opts.TrustDomain, kind)
	case id.TrustDomain != s.opts.TrustDomain:
		return nil, denied(codes.PermissionDenied, reasonTrustDomain,
			"certificate names %s, of trust domain %s; this hub's trust domain is %s", id, id.TrustDomain, s.opts.TrustDomain)
	case want == accessCluster && id.Kind != tlsconfig.KindCluster:
		return nil, denied(codes.PermissionDenied, reasonNotCluster,
			"certificate names %s, not a cluster: the spokes' port serves clusters only", id)
	case want == accessHub && id.Kind != tlsconfig.KindHub:
		return nil, denied(codes.PermissionDenied, reasonNotHub,
			"certificate names %s, not a hub replica: only hub replicas call %s", id, method)
	case want != accessCluster && want != accessHub && id.Kind != tlsconfig.KindUser:
		return nil, denied(codes.PermissionDenied, reasonNotUser,
			"certificate names %s, not a user: cluster and hub identities have no role on the admin port", id)
	}
	// The handshake verified the certificate when the connection was made; a connection may
	// outlive it, so every call checks it again.
	if err := checkValidity(id, cert, time.Now()); err != nil {
		return nil, err
	}
	c := caller{id: id, cert: cert}
	switch want {
	case accessHub:
	case accessCluster:
		if err := s.checkRevoked(id.Name, cert); err != nil {
			return nil, err
		}
	default:
		c.role = s.roleOf(id.Name)
		if want == accessAdmin && c.role != RoleAdmin {
			return nil, denied(codes.PermissionDenied, reasonRole,
				"user %s is a viewer; %s needs the admin role (the hub's --admin-users)", id.Name, method[strings.LastIndex(method, "/")+1:])
		}
	}
	return context.WithValue(ctx, callerKey{}, c), nil
}

// checkValidity refuses a certificate outside its validity at now.
func checkValidity(id tlsconfig.Identity, cert *x509.Certificate, now time.Time) error {
	switch {
	case now.After(cert.NotAfter):
		return certificateExpired(id, cert.NotAfter)
	case now.Before(cert.NotBefore):
		return denied(codes.Unauthenticated, reasonNotYetValid,
			"certificate of %s %s is valid only from %s: check the clocks of this hub and of the machine that issued it", id.Kind, id.Name, cert.NotBefore.UTC().Format(time.RFC3339))
	}
	return nil
}

// certificateExpired refuses a call, or ends a session, whose client certificate expired: the
// client connects again with its renewed one.
func certificateExpired(id tlsconfig.Identity, at time.Time) error {
	return denied(codes.Unauthenticated, reasonExpired,
		"certificate of %s %s expired at %s: reconnect with a valid one", id.Kind, id.Name, at.UTC().Format(time.RFC3339))
}

// checkRevoked refuses a certificate of cluster issued up to the cluster's revocation.
func (s *Server) checkRevoked(cluster string, cert *x509.Certificate) error {
	rev, ok, loaded := s.trust.revocation(cluster)
	switch {
	case !loaded:
		return ErrNotReady
	case ok && rev.Refuses(cert.NotBefore):
		return revokedError(cluster, rev.RevokedAt)
	}
	return nil
}

func revokedError(cluster string, at time.Time) error {
	return denied(codes.PermissionDenied, reasonRevoked, "certificate of cluster %s was revoked at %s", cluster, at.Format(time.RFC3339))
}

func (s *Server) unary(table map[string]access) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		ctx, err := s.authorize(ctx, info.FullMethod, table)
		if err != nil {
			return nil, s.fail(err)
		}
		return handler(ctx, req)
	}
}

func (s *Server) stream(table map[string]access) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		ctx, err := s.authorize(ss.Context(), info.FullMethod, table)
		if err != nil {
			return s.fail(err)
		}
		return handler(srv, &authorizedStream{ServerStream: ss, ctx: ctx})
	}
}

// authorizedStream is a stream whose context carries its caller.
type authorizedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (a *authorizedStream) Context() context.Context { return a.ctx }
