package server_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// spokeKey is a spoke's key and certificate request for an identity.
type spokeKey struct {
	csr, key []byte
	hash     string // hex SHA-256 of the DER SubjectPublicKeyInfo
}

func newSpokeKey(t *testing.T, id tlsconfig.Identity) spokeKey {
	t.Helper()
	csr, key, err := tlsconfig.NewCSR(id)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(csr)
	req, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(req.RawSubjectPublicKeyInfo)
	return spokeKey{csr: csr, key: key, hash: hex.EncodeToString(sum[:])}
}

func clusterID(name string) tlsconfig.Identity {
	return tlsconfig.Identity{TrustDomain: hubtest.TrustDomain, Kind: tlsconfig.KindCluster, Name: name}
}

func createToken(t *testing.T, ctx context.Context, h *testHub, auto bool, ttl time.Duration, clusters ...string) *pb.CreateTokenResponse {
	t.Helper()
	resp, err := h.Admin().CreateToken(ctx, &pb.CreateTokenRequest{ClusterIds: clusters, Ttl: durationpb.New(ttl), AutoApprove: auto})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func join(ctx context.Context, h *testHub, token string, k spokeKey) (*pb.JoinResponse, error) {
	return h.Join().Join(ctx, &pb.JoinRequest{Token: token, CsrPem: k.csr})
}

// checkCertificate checks that certPEM is a client certificate of the hub's CA naming id, for the
// key of k, and returns it.
func checkCertificate(t *testing.T, h *testHub, certPEM []byte, id tlsconfig.Identity, k spokeKey) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(certPEM)
	if block == nil {
		t.Fatalf("no PEM certificate in %q", certPEM)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.CheckSignatureFrom(h.CA.Certificate()); err != nil {
		t.Fatalf("not signed by the hub's CA: %v", err)
	}
	if got, err := tlsconfig.IdentityOf(cert); err != nil || got != id {
		t.Fatalf("certificate identity %v, %v; want %v", got, err, id)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	if hex.EncodeToString(sum[:]) != k.hash {
		t.Fatal("the certificate is not for the key of the request")
	}
	if !slices.Equal(cert.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}) {
		t.Fatalf("ExtKeyUsage %v, want client auth only", cert.ExtKeyUsage)
	}
	return cert
}

// syncWelcome registers cluster with certPEM and keyPEM and opens its Sync stream; it returns the
// Welcome and the hop keys that follow it.
func syncWelcome(t *testing.T, ctx context.Context, h *testHub, cluster string, certPEM, keyPEM []byte) (*pb.Welcome, *pb.HopKeys) {
	t.Helper()
	cli := pb.NewSyncServiceClient(h.ConnAs(hubtest.KeyPair(certPEM, keyPEM)))
	if _, err := cli.Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: cluster, Region: "r"}}); err != nil {
		t.Fatalf("Register with the joined certificate: %v", err)
	}
	st, err := cli.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(hello(cluster)); err != nil {
		t.Fatal(err)
	}
	var welcome *pb.Welcome
	for {
		m, err := st.Recv()
		if err != nil {
			t.Fatalf("Sync with the joined certificate: %v", err)
		}
		if w := m.GetWelcome(); w != nil {
			welcome = w
		}
		if k := m.GetHopKeys(); k != nil {
			if welcome == nil {
				t.Fatal("hop keys before the Welcome")
			}
			return welcome, k
		}
	}
}

// TestJoinWithApproval: a token made by an admin, a CSR, a pending request the admin sees and
// approves, the certificate that then serves for Register and Sync, and its renewal.
func TestJoinWithApproval(t *testing.T) {
	h := startHub(t, hubOptions{hub: hubtest.Options{ClusterCertValidity: 2 * time.Hour}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tok := createToken(t, ctx, h, false, time.Hour, "a")
	if want := tlsconfig.SPKIHash(h.CA.Certificate()); tok.GetCaCertHash() != want {
		t.Fatalf("ca_cert_hash %s, want %s", tok.GetCaCertHash(), want)
	}
	if d := time.Until(tok.GetExpiresAt().AsTime()); d < 59*time.Minute || d > time.Hour {
		t.Fatalf("the token expires in %s, want an hour", d)
	}
	tokenID, _, _ := strings.Cut(tok.GetToken(), ".")

	// Discover needs no certificate; its bundle matches the hash the admin hands out.
	disc, err := h.Join().Discover(ctx, &pb.DiscoverRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tlsconfig.MatchCAHash(disc.GetCaBundlePem(), tok.GetCaCertHash()); err != nil || disc.GetTrustDomain() != hubtest.TrustDomain {
		t.Fatalf("Discover: trust domain %q, pin: %v", disc.GetTrustDomain(), err)
	}

	k := newSpokeKey(t, clusterID("a"))
	for range 2 { // asked twice: the same request
		resp, err := join(ctx, h, tok.GetToken(), k)
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetState() != pb.JoinState_JOIN_STATE_PENDING || resp.GetCertificatePem() != nil || !strings.Contains(resp.GetMessage(), "hubctl clusters approve a") {
			t.Fatalf("Join before approval: %v", resp)
		}
	}
	// The token is reused with another key while the request is pending: refused, unchanged.
	_, err = join(ctx, h, tok.GetToken(), newSpokeKey(t, clusterID("a")))
	wantStatus(t, err, codes.FailedPrecondition, "cluster a has a pending join request for another key (sha256 "+k.hash)

	reqs, err := h.AdminAs(hubtest.User("viewer")).ListJoinRequests(ctx, &pb.ListJoinRequestsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if r := reqs.GetRequests(); len(r) != 1 || r[0].GetClusterId() != "a" || r[0].GetTokenId() != tokenID || r[0].GetState() != pb.JoinState_JOIN_STATE_PENDING ||
		r[0].GetPublicKeySha256() != k.hash || !strings.HasPrefix(r[0].GetPeerAddress(), "127.0.0.1:") {
		t.Fatalf("join requests: %v", r)
	}

	approved, err := h.Admin().ApproveCluster(ctx, &pb.ApproveClusterRequest{ClusterId: "a"})
	if err != nil || approved.GetRequest().GetState() != pb.JoinState_JOIN_STATE_APPROVED || approved.GetRequest().GetPublicKeySha256() != k.hash {
		t.Fatalf("ApproveCluster: %v, %v", approved, err)
	}
	_, err = h.Admin().ApproveCluster(ctx, &pb.ApproveClusterRequest{ClusterId: "a"})
	wantStatus(t, err, codes.FailedPrecondition, "approved already")
	_, err = h.Admin().ApproveCluster(ctx, &pb.ApproveClusterRequest{ClusterId: "nobody"})
	wantStatus(t, err, codes.NotFound, "no join request of cluster \"nobody\"")

	resp, err := join(ctx, h, tok.GetToken(), k)
	if err != nil || resp.GetState() != pb.JoinState_JOIN_STATE_APPROVED || resp.GetClusterId() != "a" || string(resp.GetCaBundlePem()) != string(h.CA.CertPEM()) {
		t.Fatalf("Join after approval: %v, %v", resp, err)
	}
	cert := checkCertificate(t, h, resp.GetCertificatePem(), clusterID("a"), k)
	if d := cert.NotAfter.Sub(time.Now()); d < 119*time.Minute || d > 2*time.Hour {
		t.Fatalf("the certificate is valid for %s more, want the hub's 2h", d)
	}
	welcome, keys := syncWelcome(t, ctx, h, "a", resp.GetCertificatePem(), k.key)
	if welcome.GetClusterId() != "a" || len(keys.GetKeys()) != 1 || len(keys.GetKeys()[0].GetSecret()) != 32 {
		t.Fatalf("Welcome %v, hop keys %d", welcome, len(keys.GetKeys()))
	}

	// Renew: the cluster's own identity, for a new key.
	renewer := pb.NewJoinServiceClient(h.ConnAs(hubtest.KeyPair(resp.GetCertificatePem(), k.key)))
	k2 := newSpokeKey(t, clusterID("a"))
	renewed, err := renewer.Renew(ctx, &pb.RenewRequest{CsrPem: k2.csr})
	if err != nil {
		t.Fatal(err)
	}
	checkCertificate(t, h, renewed.GetCertificatePem(), clusterID("a"), k2)
	_, err = renewer.Renew(ctx, &pb.RenewRequest{CsrPem: newSpokeKey(t, clusterID("b")).csr})
	wantStatus(t, err, codes.PermissionDenied, "certificate names spiffe://spillway.test/cluster/a, the CSR names spiffe://spillway.test/cluster/b")
	_, err = h.Join().Renew(ctx, &pb.RenewRequest{CsrPem: k2.csr})
	wantStatus(t, err, codes.Unauthenticated, "needs a client certificate")

	for _, m := range []struct {
		name, label string
		want        float64
	}{
		{"spillway_hub_join_requests_total", "pending", 1},
		{"spillway_hub_join_requests_total", "approved", 1},
		{"spillway_hub_join_requests_total", "refused", 1},
		{"spillway_hub_certificates_issued_total", "join", 1},
		{"spillway_hub_certificates_issued_total", "renew", 1},
	} {
		if got := promtest.Value(t, h.Registry, m.name, m.label); got != m.want {
			t.Errorf("%s{%s} = %v, want %v", m.name, m.label, got, m.want)
		}
	}
}

// TestJoinAutoApprove: a token that approves automatically gets the certificate at once, unless
// the cluster is connected: a second key for a live cluster waits for an admin.
func TestJoinAutoApprove(t *testing.T) {
	h := startHub(t, hubOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tok := createToken(t, ctx, h, true, time.Hour, "c", "d")
	k := newSpokeKey(t, clusterID("c"))
	resp, err := join(ctx, h, tok.GetToken(), k)
	if err != nil || resp.GetState() != pb.JoinState_JOIN_STATE_APPROVED {
		t.Fatalf("Join with an auto-approving token: %v, %v", resp, err)
	}
	checkCertificate(t, h, resp.GetCertificatePem(), clusterID("c"), k)
	syncWelcome(t, ctx, h, "c", resp.GetCertificatePem(), k.key)
	testkit.Eventually(t, 5*time.Second, "c alive in the view", testkit.True(func() bool {
		c, ok := h.Model.Cluster("c")
		return ok && c.State == fleet.StateAlive
	}))

	again, err := join(ctx, h, tok.GetToken(), newSpokeKey(t, clusterID("c")))
	if err != nil || again.GetState() != pb.JoinState_JOIN_STATE_PENDING || again.GetCertificatePem() != nil ||
		!strings.Contains(again.GetMessage(), "cluster c is connected with another certificate") {
		t.Fatalf("a second key for the connected cluster: %v, %v", again, err)
	}
}

// TestJoinRefusals: a token that is malformed, unknown, wrong, expired or scoped to another
// cluster, and a CSR that is malformed or asks for another kind of identity, are refused with a
// status that says why; a hub without a CA key refuses the join flow.
func TestJoinRefusals(t *testing.T) {
	h := startHub(t, hubOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tok := createToken(t, ctx, h, true, time.Hour, "a")
	id, _, _ := strings.Cut(tok.GetToken(), ".")
	ka := newSpokeKey(t, clusterID("a"))
	for _, tc := range []struct {
		name  string
		token string
		csr   []byte
		code  codes.Code
		says  string
	}{
		{"a malformed token", "not-a-token", ka.csr, codes.InvalidArgument, "bootstrap token: 11 characters, want 23"},
		{"an unknown token", "zzzzzz.0123456789abcdef", ka.csr, codes.Unauthenticated, "bootstrap token zzzzzz is unknown, expired or its secret is wrong"},
		{"a wrong secret", id + ".0123456789abcdef", ka.csr, codes.Unauthenticated, "bootstrap token " + id + " is unknown, expired or its secret is wrong"},
		{"another cluster", tok.GetToken(), newSpokeKey(t, clusterID("b")).csr, codes.PermissionDenied, "bootstrap token " + id + " may join clusters a, the CSR names b"},
		{"a user identity", tok.GetToken(), newSpokeKey(t, tlsconfig.Identity{TrustDomain: hubtest.TrustDomain, Kind: tlsconfig.KindUser, Name: "a"}).csr,
			codes.PermissionDenied, "the CSR asks for spiffe://spillway.test/user/a; this hub signs spiffe://spillway.test/cluster/<id> only"},
		{"another trust domain", tok.GetToken(), newSpokeKey(t, tlsconfig.Identity{TrustDomain: "evil.test", Kind: tlsconfig.KindCluster, Name: "a"}).csr,
			codes.PermissionDenied, "the CSR asks for spiffe://evil.test/cluster/a"},
		{"a malformed CSR", tok.GetToken(), []byte("-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"), codes.InvalidArgument, "invalid certificate request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.Join().Join(ctx, &pb.JoinRequest{Token: tc.token, CsrPem: tc.csr})
			wantStatus(t, err, tc.code, tc.says)
		})
	}
	if reqs, err := h.Admin().ListJoinRequests(ctx, &pb.ListJoinRequestsRequest{}); err != nil || len(reqs.GetRequests()) != 0 {
		t.Fatalf("join requests after the refusals: %v, %v", reqs, err)
	}
	if got := promtest.Value(t, h.Registry, "spillway_hub_join_requests_total", "refused"); got != 7 {
		t.Errorf("spillway_hub_join_requests_total{refused} = %v, want 7", got)
	}

	// A token is refused from its expiry on.
	short := createToken(t, ctx, h, true, time.Second, "a")
	testkit.Eventually(t, 10*time.Second, "the one-second token is refused", func() error {
		_, err := join(ctx, h, short.GetToken(), ka)
		if st, ok := status.FromError(err); ok && st.Code() == codes.Unauthenticated && strings.Contains(st.Message(), "unknown, expired") {
			return nil
		}
		return errors.New("still accepted")
	})

	_, err := h.Admin().CreateToken(ctx, &pb.CreateTokenRequest{ClusterIds: []string{"a.b", "Bad"}, Ttl: durationpb.New(48 * time.Hour)})
	wantStatus(t, err, codes.InvalidArgument, "cluster_ids[0]", "cluster_ids[1]", "ttl: 48h0m0s outside (0, 24h0m0s]")

	off := startHub(t, hubOptions{hub: hubtest.Options{NoJoin: true}})
	_, err = off.Join().Join(ctx, &pb.JoinRequest{Token: tok.GetToken(), CsrPem: ka.csr})
	wantStatus(t, err, codes.FailedPrecondition, "join flow disabled")
	_, err = off.Admin().CreateToken(ctx, &pb.CreateTokenRequest{ClusterIds: []string{"a"}})
	wantStatus(t, err, codes.FailedPrecondition, "join flow disabled")
}

// TestJoinAfterRevocation: once a cluster is revoked, no token made before the revocation joins
// it again, whether it approves automatically or not and whatever the key; a token made after
// the revocation joins, but never approves by itself: an admin approves, and the certificate
// then works.
func TestJoinAfterRevocation(t *testing.T) {
	h := startHub(t, hubOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	manual := createToken(t, ctx, h, false, time.Hour, "a")
	auto := createToken(t, ctx, h, true, time.Hour, "a", "b")
	revoked, err := h.Admin().RevokeCluster(ctx, &pb.RevokeClusterRequest{ClusterId: "a"})
	if err != nil {
		t.Fatal(err)
	}
	at := revoked.GetRevokedAt().AsTime().Format(time.RFC3339)
	for _, tok := range []*pb.CreateTokenResponse{manual, auto} {
		id, _, _ := strings.Cut(tok.GetToken(), ".")
		_, err := join(ctx, h, tok.GetToken(), newSpokeKey(t, clusterID("a")))
		wantStatus(t, err, codes.PermissionDenied, "bootstrap token "+id+" (created ",
			") predates the revocation of cluster a ("+at+"): ask an admin for a new token (hubctl tokens create --cluster a)")
	}
	// b, in the auto-approving token's scope, was never revoked: it joins at once.
	kb := newSpokeKey(t, clusterID("b"))
	if resp, err := join(ctx, h, auto.GetToken(), kb); err != nil || resp.GetState() != pb.JoinState_JOIN_STATE_APPROVED {
		t.Fatalf("b joins with the auto-approving token: %v, %v", resp, err)
	}
	reqs, err := h.Admin().ListJoinRequests(ctx, &pb.ListJoinRequestsRequest{})
	if r := reqs.GetRequests(); err != nil || len(r) != 1 || r[0].GetClusterId() != "b" {
		t.Fatalf("join requests: %v, %v; want b's only", r, err)
	}
	if got := promtest.Value(t, h.Registry, "spillway_hub_auth_denied_total", "token_revoked"); got != 2 {
		t.Errorf("spillway_hub_auth_denied_total{reason=token_revoked} = %v, want 2", got)
	}

	// c was revoked two minutes ago (by a replica whose clock says so, so that a certificate
	// issued now starts after the revocation): a token made now joins, but waits for an admin.
	rev, err := h.Store.WithClock(func() time.Time { return time.Now().Add(-2 * time.Minute) }).Revoke(ctx, "c", false, "another replica")
	if err != nil {
		t.Fatal(err)
	}
	fresh := createToken(t, ctx, h, true, time.Hour, "c")
	kc := newSpokeKey(t, clusterID("c"))
	for range 2 {
		resp, err := join(ctx, h, fresh.GetToken(), kc)
		if err != nil || resp.GetState() != pb.JoinState_JOIN_STATE_PENDING || resp.GetCertificatePem() != nil ||
			!strings.Contains(resp.GetMessage(), "cluster c was revoked at "+rev.RevokedAt.Format(time.RFC3339)+", so the token does not approve this request by itself: an admin must (hubctl clusters approve c)") {
			t.Fatalf("c joins after its revocation with an auto-approving token: %v, %v", resp, err)
		}
	}
	approved, err := h.Admin().ApproveCluster(ctx, &pb.ApproveClusterRequest{ClusterId: "c"})
	if err != nil || approved.GetRequest().GetPublicKeySha256() != kc.hash {
		t.Fatalf("ApproveCluster c: %v, %v", approved, err)
	}
	resp, err := join(ctx, h, fresh.GetToken(), kc)
	if err != nil || resp.GetState() != pb.JoinState_JOIN_STATE_APPROVED {
		t.Fatalf("c after the admin's approval: %v, %v", resp, err)
	}
	checkCertificate(t, h, resp.GetCertificatePem(), clusterID("c"), kc)
	syncWelcome(t, ctx, h, "c", resp.GetCertificatePem(), kc.key)
}

// TestApproveNamesTheKey: an approval that names a key approves only a request holding that
// key, and says which key the request holds when it does not.
func TestApproveNamesTheKey(t *testing.T) {
	h := startHub(t, hubOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	tok := createToken(t, ctx, h, false, time.Hour, "a")
	k := newSpokeKey(t, clusterID("a"))
	if _, err := join(ctx, h, tok.GetToken(), k); err != nil {
		t.Fatal(err)
	}
	seen := newSpokeKey(t, clusterID("a")).hash // the key of a request the admin saw, replaced since
	_, err := h.Admin().ApproveCluster(ctx, &pb.ApproveClusterRequest{ClusterId: "a", PublicKeySha256: seen})
	wantStatus(t, err, codes.FailedPrecondition, "the join request of cluster a holds public key sha256 "+k.hash, "not "+seen)
	_, err = h.Admin().ApproveCluster(ctx, &pb.ApproveClusterRequest{ClusterId: "a", PublicKeySha256: strings.ToUpper(k.hash)})
	wantStatus(t, err, codes.InvalidArgument, "public_key_sha256", "is not lower-case hex")
	_, err = h.Admin().ApproveCluster(ctx, &pb.ApproveClusterRequest{ClusterId: "a", PublicKeySha256: k.hash[:16]})
	wantStatus(t, err, codes.InvalidArgument, "public_key_sha256: 16 characters, want the 64 hex digits")
	if resp, err := join(ctx, h, tok.GetToken(), k); err != nil || resp.GetState() != pb.JoinState_JOIN_STATE_PENDING {
		t.Fatalf("a after the refused approvals: %v, %v; want still pending", resp, err)
	}
	approved, err := h.Admin().ApproveCluster(ctx, &pb.ApproveClusterRequest{ClusterId: "a", PublicKeySha256: k.hash})
	if err != nil || approved.GetRequest().GetState() != pb.JoinState_JOIN_STATE_APPROVED || approved.GetRequest().GetPublicKeySha256() != k.hash {
		t.Fatalf("ApproveCluster with the request's key: %v, %v", approved, err)
	}
}
