package server_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

var chatRef = fleet.PoolRef{Namespace: "default", Name: "chat"}

// TestRevokeEndsSessionAtOnce: RevokeCluster ends the cluster's live session at once (its export
// stays until the lease lapses, the usual damping), refuses its certificate from then on, denies
// its join request, and with remove deletes its record once its exports are gone.
func TestRevokeEndsSessionAtOnce(t *testing.T) {
	const ttl = 5 * time.Second
	h := startHub(t, hubOptions{ttl: ttl})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// a joins with a token that approves automatically, and exports chat.
	tok := createToken(t, ctx, h, true, time.Hour, "a", "b")
	k := newSpokeKey(t, clusterID("a"))
	joined, err := join(ctx, h, tok.GetToken(), k)
	if err != nil || joined.GetState() != pb.JoinState_JOIN_STATE_APPROVED {
		t.Fatalf("join: %v, %v", joined, err)
	}
	asA := hubtest.KeyPair(joined.GetCertificatePem(), k.key)
	a := pb.NewSyncServiceClient(h.ConnAs(asA))
	if _, err := a.Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "a", Region: "r"}}); err != nil {
		t.Fatal(err)
	}
	st := openSession(t, ctx, a, "a")
	h.register(t, ctx, "b", "")
	b := openSession(t, ctx, h.SyncAs("b"), "b")
	testkit.Eventually(t, 5*time.Second, "both exports in the view", testkit.True(func() bool {
		pools := h.Model.Pools()
		return len(pools) == 1 && len(pools[0].Members) == 2
	}))

	revoked, err := h.Admin().RevokeCluster(ctx, &pb.RevokeClusterRequest{ClusterId: "a"})
	if err != nil {
		t.Fatal(err)
	}
	at := revoked.GetRevokedAt().AsTime()
	wantStatus(t, ended(t, st), codes.PermissionDenied, "certificate of cluster a was revoked at "+at.Format(time.RFC3339))
	// The session ended before its lease could lapse: the export is still there.
	if got := h.exportedBy(t, ctx, "a"); !got[chatRef] {
		t.Fatalf("a's export went with its session (%v): it should outlive it by the lease's TTL", got)
	}
	// The certificate is refused from now on, on the connection it used and on new ones.
	_, err = a.Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "a", Region: "r"}})
	wantStatus(t, err, codes.PermissionDenied, "certificate of cluster a was revoked at")
	again, err := pb.NewSyncServiceClient(h.ConnAs(asA)).Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = again.Send(hello("a"))
	wantStatus(t, ended(t, again), codes.PermissionDenied, "certificate of cluster a was revoked at")
	// Its join request is denied, and the token it joined with, made before the revocation, no
	// longer joins a, with the old key or a new one.
	reqs, err := h.Admin().ListJoinRequests(ctx, &pb.ListJoinRequestsRequest{})
	if r := reqs.GetRequests(); err != nil || len(r) != 1 || r[0].GetState() != pb.JoinState_JOIN_STATE_DENIED || r[0].GetPublicKeySha256() != k.hash {
		t.Fatalf("a's join request after the revocation: %v, %v", r, err)
	}
	for _, key := range []spokeKey{k, newSpokeKey(t, clusterID("a"))} {
		_, err := join(ctx, h, tok.GetToken(), key)
		wantStatus(t, err, codes.PermissionDenied, "predates the revocation of cluster a ("+at.Format(time.RFC3339)+")")
	}
	// Once the lease lapses the export is withdrawn; b and its export are untouched.
	testkit.Eventually(t, ttl+10*time.Second, "a's export withdrawn after its lease", testkit.True(func() bool {
		pools := h.Model.Pools()
		return len(pools) == 1 && len(pools[0].Members) == 1 && pools[0].Members[0].Cluster.Info.ID == "b"
	}))
	if _, err := h.Store.GetCluster(ctx, "a"); err != nil {
		t.Fatalf("a's record went without remove: %v", err)
	}

	// Revoked with remove, b's record goes once its lease has lapsed.
	if _, err := h.Admin().RevokeCluster(ctx, &pb.RevokeClusterRequest{ClusterId: "b", Remove: true}); err != nil {
		t.Fatal(err)
	}
	wantStatus(t, ended(t, b), codes.PermissionDenied, "certificate of cluster b was revoked at")
	if _, err := h.Store.GetCluster(ctx, "b"); err != nil {
		t.Fatalf("b's record went before its lease lapsed: %v", err)
	}
	testkit.Eventually(t, ttl+10*time.Second, "b's record garbage-collected", func() error {
		if _, err := h.Store.GetCluster(ctx, "b"); !errors.Is(err, registry.ErrNotFound) {
			return fmt.Errorf("b's record: %v", err)
		}
		if _, ok := h.Model.Cluster("b"); ok {
			return errors.New("b still in the view")
		}
		return nil
	})
	if got := promtest.Value(t, h.Registry, "spillway_hub_auth_denied_total", "revoked"); got < 4 {
		t.Errorf("spillway_hub_auth_denied_total{reason=revoked} = %v, want at least 4", got)
	}
}

// TestRevocationByAnotherReplica: a revocation written by another hub replica ends the session on
// this one, through Run's watch.
func TestRevocationByAnotherReplica(t *testing.T) {
	h := startHub(t, hubOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.register(t, ctx, "a", "")
	st := openSession(t, ctx, h.SyncAs("a"), "a")
	rev, err := h.Store.Revoke(ctx, "a", false, "another replica")
	if err != nil {
		t.Fatal(err)
	}
	wantStatus(t, ended(t, st), codes.PermissionDenied, "certificate of cluster a was revoked at "+rev.RevokedAt.Format(time.RFC3339))
	// A certificate the CA issues now starts a minute back (for clock skew), at or before the
	// revocation: it is refused too.
	_, err = h.SyncAs("a").Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "a", Region: "r"}})
	wantStatus(t, err, codes.PermissionDenied, "certificate of cluster a was revoked at")
}

// TestHopKeysFollowRotation: a session gets the fleet's hop keys right after its Welcome, and the
// new keys whenever they rotate, here or on another replica: the new key first, the previous one
// kept.
func TestHopKeysFollowRotation(t *testing.T) {
	h := startHub(t, hubOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.register(t, ctx, "a", "")
	s := startSession(t, ctx, h, "a")
	welcome := s.next(t, "the Welcome", func(m *pb.SyncResponse) bool { return m.GetWelcome() != nil })
	if welcome.GetWelcome().GetClusterId() != "a" {
		t.Fatalf("Welcome names %q, want a", welcome.GetWelcome().GetClusterId())
	}
	first := s.next(t, "the hop keys", func(m *pb.SyncResponse) bool { return m.GetHopKeys() != nil }).GetHopKeys().GetKeys()
	if len(first) != 1 || len(first[0].GetSecret()) != 32 {
		t.Fatalf("hop keys after the Welcome: %v", first)
	}
	rotated, err := h.Admin().RotateHopKey(ctx, &pb.RotateHopKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	keys := s.next(t, "the rotated keys", func(m *pb.SyncResponse) bool { return m.GetHopKeys() != nil }).GetHopKeys().GetKeys()
	if len(keys) != 2 || keys[0].GetId() != rotated.GetKeyId() || keys[1].GetId() != first[0].GetId() {
		t.Fatalf("keys after the rotation: %v; want %s then %s", keys, rotated.GetKeyId(), first[0].GetId())
	}
	byOther, err := h.Store.RotateHopKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	keys = s.next(t, "the keys another replica rotated", func(m *pb.SyncResponse) bool { return m.GetHopKeys() != nil }).GetHopKeys().GetKeys()
	if len(keys) != 2 || keys[0].GetId() != byOther[0].ID || keys[1].GetId() != rotated.GetKeyId() {
		t.Fatalf("keys after another replica's rotation: %v", keys)
	}
}

// TestSessionEndsWithItsCertificate: a stream lasts no longer than the certificate it was opened
// with.
func TestSessionEndsWithItsCertificate(t *testing.T) {
	h := startHub(t, hubOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.register(t, ctx, "a", "")
	short := pb.NewSyncServiceClient(h.ConnAs(hubtest.Cluster("a").ValidFor(3 * time.Second)))
	st := openSession(t, ctx, short, "a")
	wantStatus(t, ended(t, st), codes.Unauthenticated, "certificate of cluster a expired at")
}

// TestExpiredCertificateOnOpenConnection: a connection made with a certificate outlives it, but
// none of its calls do: once the certificate expired, Register, Renew, a new Sync stream and the
// admin port's calls answer Unauthenticated on that same connection.
func TestExpiredCertificateOnOpenConnection(t *testing.T) {
	h := startHub(t, hubOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	conn := h.ConnAs(hubtest.Cluster("a").ValidFor(3 * time.Second))
	sync, joins := pb.NewSyncServiceClient(conn), pb.NewJoinServiceClient(conn)
	admin := h.AdminAs(hubtest.User("alice").ValidFor(3 * time.Second))
	register := func() error {
		_, err := sync.Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "a", Region: "r"}})
		return err
	}
	renew := func() error {
		_, err := joins.Renew(ctx, &pb.RenewRequest{CsrPem: newSpokeKey(t, clusterID("a")).csr})
		return err
	}
	whoami := func() error {
		_, err := admin.WhoAmI(ctx, &pb.WhoAmIRequest{})
		return err
	}
	// While the certificates are valid, everything works.
	for name, call := range map[string]func() error{"Register": register, "Renew": renew, "WhoAmI": whoami} {
		if err := call(); err != nil {
			t.Fatalf("%s with a valid certificate: %v", name, err)
		}
	}
	for _, c := range []struct {
		name, says string
		call       func() error
	}{
		{"Register", "certificate of cluster a expired at ", register},
		{"Renew", "certificate of cluster a expired at ", renew},
		{"WhoAmI", "certificate of user alice expired at ", whoami},
		{"Sync", "certificate of cluster a expired at ", func() error {
			st, err := sync.Sync(ctx)
			if err != nil {
				return err
			}
			_ = st.Send(hello("a"))
			return ended(t, st)
		}},
	} {
		// Unavailable would mean a new connection, whose handshake refused the certificate: the
		// call must be refused on the connection it was allowed on.
		testkit.Eventually(t, 20*time.Second, c.name+" refused on the open connection", func() error {
			err := c.call()
			if st, ok := status.FromError(err); ok && st.Code() == codes.Unauthenticated && strings.Contains(st.Message(), c.says) {
				return nil
			}
			return fmt.Errorf("%s: %v", c.name, err)
		})
	}
	if got := promtest.Value(t, h.Registry, "spillway_hub_auth_denied_total", "expired"); got < 4 {
		t.Errorf("spillway_hub_auth_denied_total{reason=expired} = %v, want at least 4", got)
	}
}
