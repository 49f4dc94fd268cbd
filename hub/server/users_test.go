package server_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/hub/server"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

func userID(name string) tlsconfig.Identity {
	return tlsconfig.Identity{TrustDomain: hubtest.TrustDomain, Kind: tlsconfig.KindUser, Name: name}
}

// TestIssueUserCertificate: an admin gets a certificate for another operator from the hub's CA;
// it names that user alone, for the key of the request, and works on the admin port with the role
// the name has: a viewer reads and is refused writes, a name in --admin-users writes.
func TestIssueUserCertificate(t *testing.T) {
	h := startHub(t, hubOptions{hub: hubtest.Options{AdminUsers: []string{"admin", "carol"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	k := newSpokeKey(t, userID("bob"))
	resp, err := h.Admin().IssueUserCertificate(ctx, &pb.IssueUserCertificateRequest{CsrPem: k.csr, Validity: durationpb.New(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetRole() != server.RoleViewer || string(resp.GetCaBundlePem()) != string(h.CA.CertPEM()) {
		t.Fatalf("role %q, CA bundle %q: want viewer and the hub's CA", resp.GetRole(), resp.GetCaBundlePem())
	}
	cert := checkCertificate(t, h, resp.GetCertificatePem(), userID("bob"), k)
	if d := time.Until(cert.NotAfter); d < 119*time.Minute || d > 2*time.Hour {
		t.Fatalf("the certificate is valid for %s more, want the 2h asked for", d)
	}

	bob := h.AdminAs(hubtest.KeyPair(resp.GetCertificatePem(), k.key))
	who, err := bob.WhoAmI(ctx, &pb.WhoAmIRequest{})
	if err != nil || who.GetIdentity() != userID("bob").String() || who.GetRole() != server.RoleViewer {
		t.Fatalf("WhoAmI with the issued certificate: %v, %v", who, err)
	}
	if _, err := bob.ListClusters(ctx, &pb.ListClustersRequest{}); err != nil {
		t.Fatalf("a viewer reads: %v", err)
	}
	_, err = bob.CreateToken(ctx, &pb.CreateTokenRequest{ClusterIds: []string{"a"}})
	wantStatus(t, err, codes.PermissionDenied, "user bob is a viewer; CreateToken needs the admin role")
	_, err = bob.IssueUserCertificate(ctx, &pb.IssueUserCertificateRequest{CsrPem: newSpokeKey(t, userID("mallory")).csr})
	wantStatus(t, err, codes.PermissionDenied, "user bob is a viewer; IssueUserCertificate needs the admin role")

	// A name in --admin-users gets a certificate that writes.
	kc := newSpokeKey(t, userID("carol"))
	resp, err = h.Admin().IssueUserCertificate(ctx, &pb.IssueUserCertificateRequest{CsrPem: kc.csr})
	if err != nil || resp.GetRole() != server.RoleAdmin {
		t.Fatalf("IssueUserCertificate for carol: %v, %v; want the admin role", resp, err)
	}
	checkCertificate(t, h, resp.GetCertificatePem(), userID("carol"), kc)
	carol := h.AdminAs(hubtest.KeyPair(resp.GetCertificatePem(), kc.key))
	if _, err := carol.RotateHopKey(ctx, &pb.RotateHopKeyRequest{}); err != nil {
		t.Fatalf("an admin's issued certificate writes: %v", err)
	}

	recs := h.logs.find("user certificate issued")
	if len(recs) != 2 {
		t.Fatalf("%d log records of issued certificates, want 2", len(recs))
	}
	if r := recs[0].attrs; r["identity"] != userID("bob").String() || r["role"] != server.RoleViewer || r["by"] != userID("admin").String() || r["publicKeySHA256"] != k.hash {
		t.Fatalf("log record %v: want who issued what", r)
	}
	if got := promtest.Value(t, h.Registry, "spillway_hub_certificates_issued_total", "user"); got != 2 {
		t.Errorf("spillway_hub_certificates_issued_total{kind=user} = %v, want 2", got)
	}
}

// TestIssueUserCertificateRefused: only users of the hub's trust domain, for a validity in
// (0, 8760h], by an admin, on a hub that has its CA key; nothing is issued otherwise.
func TestIssueUserCertificateRefused(t *testing.T) {
	h := startHub(t, hubOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	bob := newSpokeKey(t, userID("bob")).csr

	for _, tc := range []struct {
		name   string
		as     hubtest.Peer
		req    *pb.IssueUserCertificateRequest
		code   codes.Code
		substr []string
	}{
		{"viewer", hubtest.User("alice"), &pb.IssueUserCertificateRequest{CsrPem: bob}, codes.PermissionDenied,
			[]string{"user alice is a viewer; IssueUserCertificate needs the admin role"}},
		{"cluster identity", hubtest.Admin(), &pb.IssueUserCertificateRequest{CsrPem: newSpokeKey(t, clusterID("a")).csr}, codes.PermissionDenied,
			[]string{"the CSR asks for spiffe://spillway.test/cluster/a", "signs spiffe://spillway.test/user/<name> only", "JoinService"}},
		{"other trust domain", hubtest.Admin(), &pb.IssueUserCertificateRequest{CsrPem: newSpokeKey(t, tlsconfig.Identity{TrustDomain: "other.test", Kind: tlsconfig.KindUser, Name: "bob"}).csr},
			codes.PermissionDenied, []string{"the CSR asks for spiffe://other.test/user/bob"}},
		{"too long", hubtest.Admin(), &pb.IssueUserCertificateRequest{CsrPem: bob, Validity: durationpb.New(8761 * time.Hour)}, codes.InvalidArgument,
			[]string{"validity: 8761h0m0s outside (0, 8760h0m0s]"}},
		{"zero", hubtest.Admin(), &pb.IssueUserCertificateRequest{CsrPem: bob, Validity: durationpb.New(0)}, codes.InvalidArgument,
			[]string{"validity: 0s outside (0, 8760h0m0s]"}},
		{"negative", hubtest.Admin(), &pb.IssueUserCertificateRequest{CsrPem: bob, Validity: durationpb.New(-time.Hour)}, codes.InvalidArgument,
			[]string{"validity: -1h0m0s outside"}},
		{"no CSR", hubtest.Admin(), &pb.IssueUserCertificateRequest{}, codes.InvalidArgument, []string{"invalid certificate request"}},
		{"bad CSR and validity", hubtest.Admin(), &pb.IssueUserCertificateRequest{CsrPem: []byte("nonsense"), Validity: durationpb.New(9000 * time.Hour)},
			codes.InvalidArgument, []string{"validity: 9000h0m0s outside", "invalid certificate request"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.AdminAs(tc.as).IssueUserCertificate(ctx, tc.req)
			wantStatus(t, err, tc.code, tc.substr...)
		})
	}
	// The longest validity is accepted (the certificate ends with the CA's).
	if _, err := h.Admin().IssueUserCertificate(ctx, &pb.IssueUserCertificateRequest{CsrPem: bob, Validity: durationpb.New(8760 * time.Hour)}); err != nil {
		t.Fatalf("validity 8760h: %v", err)
	}
	if got := promtest.Value(t, h.Registry, "spillway_hub_certificates_issued_total", "user"); got != 1 {
		t.Errorf("spillway_hub_certificates_issued_total{kind=user} = %v, want 1: only the accepted request", got)
	}

	off := startHub(t, hubOptions{hub: hubtest.Options{NoJoin: true}})
	_, err := off.Admin().IssueUserCertificate(ctx, &pb.IssueUserCertificateRequest{CsrPem: bob})
	wantStatus(t, err, codes.FailedPrecondition, "no CA key")
}
