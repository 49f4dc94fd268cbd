package server

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Discover returns the hub's CA bundle and trust domain. It needs no identity and carries no
// secret: the spoke checks the bundle against the CA hash it was given before it trusts it.
func (s *Server) Discover(context.Context, *pb.DiscoverRequest) (*pb.DiscoverResponse, error) {
	bundle := s.caBundle()
	if len(bundle) == 0 {
		return nil, s.fail(fmt.Errorf("the hub has no CA bundle to hand out: %w", ErrJoinDisabled))
	}
	return &pb.DiscoverResponse{CaBundlePem: bundle, TrustDomain: s.opts.TrustDomain}, nil
}

func (s *Server) caBundle() []byte {
	if s.opts.CABundle == nil {
		return nil
	}
	return s.opts.CABundle()
}

// Join records a join request made with a bootstrap token and a CSR, and answers where it
// stands. The token must be live, its secret right, its scope must name the cluster of the
// CSR's identity, spiffe://<trust-domain>/cluster/<id>, and it must have been created after the
// cluster's revocation, if any. The same token (or another of the cluster) and the same key name
// the same request, so a spoke polls with Join until its request is approved. A request is
// approved by AdminService.ApproveCluster, or at once when the token approves automatically,
// the cluster was never revoked and is not connected: a revoked cluster, or a connected one
// asking for a certificate for another key, always waits for an admin.
func (s *Server) Join(ctx context.Context, req *pb.JoinRequest) (_ *pb.JoinResponse, err error) {
	defer func() {
		if err != nil {
			s.metrics.joins.WithLabelValues(outcomeRefused).Inc()
		}
		err = s.fail(err)
	}()
	if s.opts.CA == nil {
		return nil, ErrJoinDisabled
	}
	tok, err := registry.ParseToken(req.GetToken())
	if err != nil {
		return nil, err
	}
	csr, id, err := tlsconfig.ParseCSR(req.GetCsrPem())
	if err != nil {
		return nil, err
	}
	if err := s.checkCSRIdentity(id); err != nil {
		return nil, err
	}
	rec, err := s.store.CheckToken(ctx, tok)
	if errors.Is(err, registry.ErrTokenInvalid) {
		return nil, denied(codes.Unauthenticated, reasonToken, "bootstrap token %s is unknown, expired or its secret is wrong: ask an admin for a new one (hubctl tokens create)", tok.ID)
	}
	if err != nil {
		return nil, err
	}
	if !rec.Allows(id.Name) {
		return nil, denied(codes.PermissionDenied, reasonTokenScope, "bootstrap token %s may join clusters %s, the CSR names %s", tok.ID, strings.Join(rec.Clusters, ", "), id.Name)
	}
	key := publicKeyHash(csr)
	jr, created, err := s.store.RequestJoin(ctx, registry.JoinRequest{
		Cluster: id.Name, Token: rec, CSRPEM: req.GetCsrPem(), PublicKeySHA256: key, PeerAddress: peerAddress(ctx),
	})
	var predates *registry.TokenRevokedError
	if errors.As(err, &predates) {
		return nil, denied(codes.PermissionDenied, reasonTokenRevoked, "%s", predates.Error())
	}
	if err != nil {
		return nil, err
	}
	log := s.joinLog.With("cluster", id.Name, "token", tok.ID, "publicKeySHA256", key)
	if created {
		s.metrics.joins.WithLabelValues(outcomePending).Inc()
		log.Info("join request recorded", "peer", jr.PeerAddress, "autoApprove", rec.AutoApprove)
	}
	message := ""
	if jr.State == registry.JoinPending {
		message = fmt.Sprintf("waiting for an admin: hubctl clusters approve %s", id.Name)
		if rec.AutoApprove {
			connected := false
			revokedAt := s.revokedAt(id.Name, jr)
			if revokedAt.IsZero() {
				if connected, err = s.connected(ctx, id.Name); err != nil {
					return nil, err
				}
			}
			switch {
			case !revokedAt.IsZero():
				message = fmt.Sprintf("cluster %s was revoked at %s, so the token does not approve this request by itself: an admin must (hubctl clusters approve %s)",
					id.Name, revokedAt.UTC().Format(time.RFC3339), id.Name)
			case connected:
				message = fmt.Sprintf("cluster %s is connected with another certificate, so the token does not approve this request by itself: an admin must (hubctl clusters approve %s)", id.Name, id.Name)
			default:
				jr, err = s.approve(ctx, s.joinLog, id.Name, key, "token "+tok.ID)
				if errors.Is(err, ErrRevokedRecently) {
					return &pb.JoinResponse{State: pb.JoinState_JOIN_STATE_PENDING, ClusterId: id.Name, CaBundlePem: s.caBundle(), Message: err.Error()}, nil
				}
				if err != nil {
					return nil, err
				}
			}
		}
	}
	resp := &pb.JoinResponse{State: joinState(jr.State), ClusterId: id.Name, CaBundlePem: s.caBundle(), Message: message}
	switch jr.State {
	case registry.JoinApproved:
		resp.CertificatePem, resp.Message = jr.CertificatePEM, ""
	case registry.JoinDenied:
		resp.Message = jr.Message
	}
	return resp, nil
}

// revokedAt returns the time cluster was revoked, as the join request read it from etcd or this
// replica knows it (whichever says it was), zero when it never was.
func (s *Server) revokedAt(cluster string, jr registry.JoinRecord) time.Time {
	if rev, ok, _ := s.trust.revocation(cluster); ok && rev.RevokedAt.After(jr.ClusterRevokedAt) {
		return rev.RevokedAt
	}
	return jr.ClusterRevokedAt
}

// connected reports whether cluster has a live session.
func (s *Server) connected(ctx context.Context, cluster string) (bool, error) {
	_, ok, err := s.store.GetSession(ctx, cluster)
	return ok, err
}

// approve approves the pending join request of cluster (holding key, when not empty): the CA
// signs its CSR. log is the logger of the service that approves.
func (s *Server) approve(ctx context.Context, log *slog.Logger, cluster, key, by string) (registry.JoinRecord, error) {
	jr, err := s.store.ApproveJoin(ctx, cluster, key, by, func(r registry.JoinRecord) ([]byte, error) {
		csr, id, err := tlsconfig.ParseCSR(r.CSRPEM)
		if err != nil {
			return nil, err
		}
		return s.sign(csr, id)
	})
	if err != nil {
		return jr, err
	}
	s.metrics.joins.WithLabelValues(outcomeApproved).Inc()
	s.metrics.certificates.WithLabelValues(kindJoin).Inc()
	log.Info("join request approved", "cluster", cluster, "by", by, "publicKeySHA256", jr.PublicKeySHA256)
	return jr, nil
}

// sign issues a cluster certificate for the key of csr. A certificate that would start at or
// before the cluster's revocation (the CA backdates the start a little) would be refused with
// the revoked ones: it is not handed out, and the caller is told when to come back.
func (s *Server) sign(csr *x509.CertificateRequest, id tlsconfig.Identity) ([]byte, error) {
	if s.opts.CA == nil {
		return nil, ErrJoinDisabled
	}
	certPEM, err := s.opts.CA.Sign(csr, id, s.opts.ClusterCertValidity)
	if err != nil {
		return nil, err
	}
	rev, ok, _ := s.trust.revocation(id.Name)
	if !ok {
		return certPEM, nil
	}
	block, _ := pem.Decode(certPEM)
	if block == nil {
		return nil, errors.New("the CA returned no PEM certificate")
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	if rev.Refuses(cert.NotBefore) {
		retry := rev.RevokedAt.Add(time.Since(cert.NotBefore)).Add(time.Second)
		return nil, fmt.Errorf("cluster %s was revoked at %s; retry after %s: %w", id.Name, rev.RevokedAt.Format(time.RFC3339), retry.Format(time.RFC3339), ErrRevokedRecently)
	}
	return certPEM, nil
}

// checkCSRIdentity refuses a CSR for anything but a cluster of the trust domain.
func (s *Server) checkCSRIdentity(id tlsconfig.Identity) error {
	if id.TrustDomain != s.opts.TrustDomain || id.Kind != tlsconfig.KindCluster {
		return denied(codes.PermissionDenied, reasonCSRIdentity, "the CSR asks for %s; this hub signs spiffe://%s/%s/<id> only", id, s.opts.TrustDomain, tlsconfig.KindCluster)
	}
	return nil
}

// Renew issues a new certificate for the caller's own cluster (from its client certificate, not
// revoked: the interceptor checked) for the key of the CSR, whose identity must be the same.
func (s *Server) Renew(ctx context.Context, req *pb.RenewRequest) (*pb.RenewResponse, error) {
	who, err := mustCaller(ctx)
	if err != nil {
		return nil, s.fail(err)
	}
	if s.opts.CA == nil {
		return nil, s.fail(ErrJoinDisabled)
	}
	csr, id, err := tlsconfig.ParseCSR(req.GetCsrPem())
	if err != nil {
		return nil, s.fail(err)
	}
	if id != who.id {
		return nil, s.fail(denied(codes.PermissionDenied, reasonClusterMismatch, "certificate names %s, the CSR names %s: a cluster renews its own certificate only", who.id, id))
	}
	certPEM, err := s.sign(csr, id)
	if err != nil {
		return nil, s.fail(err)
	}
	s.metrics.certificates.WithLabelValues(kindRenew).Inc()
	s.joinLog.Info("cluster certificate renewed", "cluster", id.Name, "publicKeySHA256", publicKeyHash(csr))
	return &pb.RenewResponse{CertificatePem: certPEM, CaBundlePem: s.caBundle()}, nil
}

// publicKeyHash is the hex SHA-256 of a CSR's DER SubjectPublicKeyInfo.
func publicKeyHash(csr *x509.CertificateRequest) string {
	sum := sha256.Sum256(csr.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

func peerAddress(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

func joinState(st registry.JoinState) pb.JoinState {
	switch st {
	case registry.JoinPending:
		return pb.JoinState_JOIN_STATE_PENDING
	case registry.JoinApproved:
		return pb.JoinState_JOIN_STATE_APPROVED
	case registry.JoinDenied:
		return pb.JoinState_JOIN_STATE_DENIED
	}
	return pb.JoinState_JOIN_STATE_UNSPECIFIED
}

func joinInfo(r registry.JoinRecord) *pb.JoinRequestInfo {
	return &pb.JoinRequestInfo{
		ClusterId:       r.Cluster,
		TokenId:         r.TokenID,
		State:           joinState(r.State),
		RequestedAt:     timestamppb.New(r.RequestedAt),
		PublicKeySha256: r.PublicKeySHA256,
		PeerAddress:     r.PeerAddress,
	}
}
