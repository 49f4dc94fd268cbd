package server

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"slices"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Validity of user certificates IssueUserCertificate signs (admin.proto).
const (
	// DefaultUserCertValidity is the validity of a user certificate when the request gives none.
	DefaultUserCertValidity = 720 * time.Hour
	// MaxUserCertValidity is the longest validity IssueUserCertificate signs.
	MaxUserCertValidity = 8760 * time.Hour
)

// roleOf is the role a user of the trust domain has on the admin port.
func (s *Server) roleOf(user string) string {
	if slices.Contains(s.opts.AdminUsers, user) {
		return RoleAdmin
	}
	return RoleViewer
}

// IssueUserCertificate signs a CSR for a user of the hub's trust domain with the hub's CA, as a
// client certificate, so that an admin can hand hubctl credentials to another operator. The
// user's role follows from the name (--admin-users). Cluster identities are refused: clusters
// join through JoinService, with a token and an approval.
func (s *Server) IssueUserCertificate(ctx context.Context, req *pb.IssueUserCertificateRequest) (*pb.IssueUserCertificateResponse, error) {
	who, err := mustCaller(ctx)
	if err != nil {
		return nil, s.fail(err)
	}
	if s.opts.CA == nil {
		return nil, s.fail(ErrJoinDisabled)
	}
	validity := DefaultUserCertValidity
	var errs []error
	if req.GetValidity() != nil {
		validity = req.GetValidity().AsDuration()
		if validity <= 0 || validity > MaxUserCertValidity {
			errs = append(errs, invalid("validity", "%s outside (0, %s]", validity, MaxUserCertValidity))
		}
	}
	csr, id, err := tlsconfig.ParseCSR(req.GetCsrPem())
	if err = errors.Join(append(errs, err)...); err != nil {
		return nil, s.fail(err)
	}
	if id.TrustDomain != s.opts.TrustDomain || id.Kind != tlsconfig.KindUser {
		return nil, s.fail(denied(codes.PermissionDenied, reasonCSRIdentity,
			"the CSR asks for %s; IssueUserCertificate signs spiffe://%s/%s/<name> only (clusters join through JoinService: hubctl tokens create)",
			id, s.opts.TrustDomain, tlsconfig.KindUser))
	}
	certPEM, err := s.opts.CA.Sign(csr, id, validity)
	if err != nil {
		return nil, s.fail(err)
	}
	notAfter := time.Time{}
	if block, _ := pem.Decode(certPEM); block != nil {
		if cert, err := x509.ParseCertificate(block.Bytes); err == nil {
			notAfter = cert.NotAfter
		}
	}
	role := s.roleOf(id.Name)
	s.metrics.certificates.WithLabelValues(kindUser).Inc()
	s.adminLog.Info("user certificate issued", "identity", id.String(), "role", role, "notAfter", notAfter,
		"publicKeySHA256", publicKeyHash(csr), "by", who.id.String())
	return &pb.IssueUserCertificateResponse{CertificatePem: certPEM, CaBundlePem: s.caBundle(), Role: role}, nil
}
