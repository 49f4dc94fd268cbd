package registry_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
)

func joinReq(tok registry.TokenRecord, key string) registry.JoinRequest {
	return registry.JoinRequest{Cluster: "a", Token: tok, CSRPEM: []byte("csr of " + key), PublicKeySHA256: key, PeerAddress: "127.0.0.1:1"}
}

func TestJoinRequests(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	s := registry.New(cli, registry.Options{LeaseTTL: 10 * time.Second})
	check := func(tok registry.Token) registry.TokenRecord {
		t.Helper()
		rec, err := s.CheckToken(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	tok1, _, err := s.CreateToken(ctx, registry.TokenSpec{Clusters: []string{"a"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	tok2, _, err := s.CreateToken(ctx, registry.TokenSpec{Clusters: []string{"a"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t1, t2 := check(tok1), check(tok2)

	first, created, err := s.RequestJoin(ctx, joinReq(t1, "k1"))
	if err != nil || !created || first.State != registry.JoinPending || first.TokenID != tok1.ID {
		t.Fatalf("first request: %+v, %v", first, err)
	}
	// The same key asks again, with the same token or another one: the same request.
	again, created, err := s.RequestJoin(ctx, joinReq(t1, "k1"))
	if err != nil || created || !again.RequestedAt.Equal(first.RequestedAt) || again.State != registry.JoinPending {
		t.Fatalf("the same request again: %+v, %v", again, err)
	}
	moved, created, err := s.RequestJoin(ctx, joinReq(t2, "k1"))
	if err != nil || created || moved.TokenID != tok2.ID || !moved.RequestedAt.Equal(first.RequestedAt) {
		t.Fatalf("the same key with another token: %+v, %v", moved, err)
	}
	// Another key while one is pending is refused, and changes nothing.
	if _, _, err := s.RequestJoin(ctx, joinReq(t1, "k2")); !errors.Is(err, registry.ErrJoinConflict) {
		t.Fatalf("another key while pending: %v, want ErrJoinConflict", err)
	}
	if got, _ := s.GetJoin(ctx, "a"); got.PublicKeySHA256 != "k1" || got.State != registry.JoinPending {
		t.Fatalf("after the refused request: %+v", got)
	}

	// Approval signs the pending request's CSR, once.
	var signed [][]byte
	sign := func(r registry.JoinRecord) ([]byte, error) {
		signed = append(signed, r.CSRPEM)
		return []byte("cert for " + r.PublicKeySHA256), nil
	}
	if _, err := s.ApproveJoin(ctx, "a", "k2", "admin", sign); !errors.Is(err, registry.ErrJoinConflict) {
		t.Fatalf("approval of another key: %v, want ErrJoinConflict", err)
	}
	approved, err := s.ApproveJoin(ctx, "a", "", "admin", sign)
	if err != nil || approved.State != registry.JoinApproved || string(approved.CertificatePEM) != "cert for k1" || approved.DecidedBy != "admin" {
		t.Fatalf("approval: %+v, %v", approved, err)
	}
	if _, err := s.ApproveJoin(ctx, "a", "", "admin", sign); !errors.Is(err, registry.ErrNotPending) {
		t.Fatalf("second approval: %v, want ErrNotPending", err)
	}
	if len(signed) != 1 || !bytes.Equal(signed[0], []byte("csr of k1")) {
		t.Fatalf("signed %q, want the CSR of k1 once", signed)
	}
	if got, _, err := s.RequestJoin(ctx, joinReq(t1, "k1")); err != nil || string(got.CertificatePEM) != "cert for k1" {
		t.Fatalf("polling after the approval: %+v, %v", got, err)
	}

	// Denied: the same key is told so; another key starts a new request.
	if err := s.DenyJoin(ctx, "a", "admin", "cluster a was revoked"); err != nil {
		t.Fatal(err)
	}
	denied, _, err := s.RequestJoin(ctx, joinReq(t1, "k1"))
	if err != nil || denied.State != registry.JoinDenied || denied.CertificatePEM != nil || denied.Message != "cluster a was revoked" {
		t.Fatalf("the denied key again: %+v, %v", denied, err)
	}
	fresh, created, err := s.RequestJoin(ctx, joinReq(t1, "k3"))
	if err != nil || !created || fresh.State != registry.JoinPending || fresh.PublicKeySHA256 != "k3" {
		t.Fatalf("a new key after the denial: %+v, %v", fresh, err)
	}
	list, err := s.ListJoins(ctx)
	if err != nil || len(list) != 1 || list[0].PublicKeySHA256 != "k3" {
		t.Fatalf("ListJoins: %+v, %v", list, err)
	}
	if _, err := s.ApproveJoin(ctx, "nobody", "", "admin", sign); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("approval without a request: %v, want ErrNotFound", err)
	}
}

func TestJoinRequestGoesWithItsToken(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	s := registry.New(cli, registry.Options{LeaseTTL: 10 * time.Second})
	tok, _, err := s.CreateToken(ctx, registry.TokenSpec{Clusters: []string{"a"}, TTL: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	rec, err := s.CheckToken(ctx, tok)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RequestJoin(ctx, joinReq(rec, "k1")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the request vanishes with its token", func() error {
		if _, err := s.GetJoin(ctx, "a"); !errors.Is(err, registry.ErrNotFound) {
			return fmt.Errorf("GetJoin: %v", err)
		}
		return nil
	})
	// A request made with the token's record after the lease went is refused.
	if _, _, err := s.RequestJoin(ctx, joinReq(rec, "k1")); !errors.Is(err, registry.ErrTokenInvalid) {
		t.Fatalf("a request under an expired token's lease: %v, want ErrTokenInvalid", err)
	}
}

// TestJoinAfterRevocation: a token created at or before a cluster's revocation no longer joins
// it, with any key, and leaves no request behind; a token created after it does, and the
// request carries the revocation.
func TestJoinAfterRevocation(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	clock := at
	var mu sync.Mutex
	s := registry.New(cli, registry.Options{LeaseTTL: 10 * time.Second}).WithClock(func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		return clock
	})
	setClock := func(t time.Time) { mu.Lock(); clock = t; mu.Unlock() }
	token := func() registry.TokenRecord {
		t.Helper()
		tok, _, err := s.CreateToken(ctx, registry.TokenSpec{Clusters: []string{"a", "b"}, TTL: time.Hour, AutoApprove: true})
		if err != nil {
			t.Fatal(err)
		}
		rec, err := s.CheckToken(ctx, tok)
		if err != nil {
			t.Fatal(err)
		}
		return rec
	}
	before := token()
	if _, _, err := s.RequestJoin(ctx, joinReq(before, "k1")); err != nil {
		t.Fatal(err)
	}
	setClock(at.Add(time.Minute))
	same := token() // created at the very time of the revocation
	rev, err := s.Revoke(ctx, "a", false, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if !rev.RefusesToken(before) || !rev.RefusesToken(same) {
		t.Fatal("RefusesToken accepts a token created at or before the revocation")
	}
	if err := s.DenyJoin(ctx, "a", "admin", "revoked"); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]registry.TokenRecord{"before": before, "at the same time": same} {
		for _, key := range []string{"k1", "k2"} {
			_, _, err := s.RequestJoin(ctx, joinReq(tok, key))
			var te *registry.TokenRevokedError
			if !errors.As(err, &te) || !errors.Is(err, registry.ErrTokenRevoked) || te.Cluster != "a" || !te.RevokedAt.Equal(rev.RevokedAt) ||
				!strings.Contains(err.Error(), "predates the revocation of cluster a (2030-01-02T03:05:05Z): ask an admin for a new token") {
				t.Fatalf("a token made %s the revocation, key %s: %v, want a TokenRevokedError", name, key, err)
			}
		}
	}
	if jr, err := s.GetJoin(ctx, "a"); err != nil || jr.State != registry.JoinDenied || jr.PublicKeySHA256 != "k1" {
		t.Fatalf("a's request after the refusals: %+v, %v; want k1 denied", jr, err)
	}
	// The same token still joins another cluster of its scope.
	other := joinReq(same, "k3")
	other.Cluster = "b"
	if jr, created, err := s.RequestJoin(ctx, other); err != nil || !created || !jr.ClusterRevokedAt.IsZero() {
		t.Fatalf("b with a token older than a's revocation: %+v, %v", jr, err)
	}

	setClock(at.Add(time.Minute + time.Millisecond))
	after := token()
	jr, created, err := s.RequestJoin(ctx, joinReq(after, "k2"))
	if err != nil || !created || jr.State != registry.JoinPending || !jr.ClusterRevokedAt.Equal(rev.RevokedAt) {
		t.Fatalf("a token made after the revocation: %+v, %v; want a pending request that carries the revocation", jr, err)
	}
	if stored, err := s.GetJoin(ctx, "a"); err != nil || !stored.ClusterRevokedAt.Equal(rev.RevokedAt) {
		t.Fatalf("stored request: %+v, %v", stored, err)
	}
}

func TestClusterLimit(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	s := registry.New(cli, registry.Options{LeaseTTL: 10 * time.Second})
	for _, id := range []string{"a", "b"} {
		if _, err := s.RegisterCluster(ctx, fleet.ClusterInfo{ID: id, Region: "r"}, 2); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.RegisterCluster(ctx, fleet.ClusterInfo{ID: "c", Region: "r"}, 2)
	var lim *registry.LimitError
	if !errors.As(err, &lim) || lim.Limit != registry.LimitClusters || lim.Max != 2 || lim.Cluster != "c" || !errors.Is(err, registry.ErrLimit) {
		t.Fatalf("a third cluster: %v, want a LimitError of clusters", err)
	}
	if _, err := s.GetCluster(ctx, "c"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("the refused cluster was stored: %v", err)
	}
	// A registered cluster updates its record at the limit.
	if rec, err := s.RegisterCluster(ctx, fleet.ClusterInfo{ID: "a", Region: "r2"}, 2); err != nil || rec.Info.Region != "r2" {
		t.Fatalf("an update at the limit: %+v, %v", rec, err)
	}
}

func TestExportLimitAndExportSet(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	s := registry.New(cli, registry.Options{LeaseTTL: 10 * time.Second})
	if _, err := s.PutCluster(ctx, fleet.ClusterInfo{ID: "a", Region: "r"}); err != nil {
		t.Fatal(err)
	}
	sess, err := s.OpenSession(ctx, "a", "h", "i")
	if err != nil {
		t.Fatal(err)
	}
	sess.MaxExports = 2
	chat2 := fleet.PoolRef{Namespace: "default", Name: "chat2"}
	isLimit := func(err error) bool {
		var lim *registry.LimitError
		return errors.As(err, &lim) && lim.Limit == registry.LimitExportsPerCluster && lim.Max == 2
	}
	if err := sess.ApplyExports(ctx, registry.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []fleet.Export{exportOf(chat), exportOf(code), exportOf(chat2)}}); !isLimit(err) {
		t.Fatalf("three exports at a limit of two: %v", err)
	}
	if st, _ := s.Load(ctx); len(st.Exports["a"]) != 0 || sess.AckedSeq != 0 {
		t.Fatalf("the refused delta stored %v (acked %d)", st.Exports["a"], sess.AckedSeq)
	}
	for _, d := range []registry.ExportDelta{
		{Seq: 1, ReplaceAll: true, Upserts: []fleet.Export{exportOf(chat), exportOf(code)}},
		{Seq: 2, Upserts: []fleet.Export{exportOf(chat2)}, Removes: []fleet.PoolRef{code}}, // still two
	} {
		if err := sess.ApplyExports(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := sess.ApplyExports(ctx, registry.ExportDelta{Seq: 3, Upserts: []fleet.Export{exportOf(code)}}); !isLimit(err) {
		t.Fatalf("a third export by a delta: %v", err)
	}
	if !sess.Exported(chat) || !sess.Exported(chat2) || sess.Exported(code) || sess.ExportCount() != 2 {
		t.Fatalf("export set: chat %v chat2 %v code %v, count %d", sess.Exported(chat), sess.Exported(chat2), sess.Exported(code), sess.ExportCount())
	}
	// A replayed delta changes nothing, the set included.
	if err := sess.ApplyExports(ctx, registry.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []fleet.Export{exportOf(code)}}); err != nil {
		t.Fatal(err)
	}
	if st, _ := s.Load(ctx); len(st.Exports["a"]) != 2 || sess.Exported(code) {
		t.Fatalf("a replayed delta changed the exports: %v", st.Exports["a"])
	}
	// A resumed session starts from what is stored.
	again, err := s.OpenSession(ctx, "a", "h", "i")
	if err != nil {
		t.Fatal(err)
	}
	if !again.Resumed || !again.Exported(chat) || !again.Exported(chat2) || again.ExportCount() != 2 {
		t.Fatalf("resumed export set: %d pools, resumed %v", again.ExportCount(), again.Resumed)
	}
	// A new incarnation keeps what is stored until its replace_all delta replaces it.
	fresh, err := s.OpenSession(ctx, "a", "h2", "i2")
	if err != nil {
		t.Fatal(err)
	}
	if rec, ok, err := s.GetSession(ctx, "a"); err != nil || !ok || rec.HubID != "h2" || rec.SpokeIncarnation != "i2" {
		t.Fatalf("GetSession: %+v, %v, %v", rec, ok, err)
	}
	if _, ok, err := s.GetSession(ctx, "nobody"); err != nil || ok {
		t.Fatalf("GetSession of a cluster without one: %v, %v", ok, err)
	}
	if fresh.Resumed || fresh.AckedSeq != 0 || fresh.ExportCount() != 2 {
		t.Fatalf("a new incarnation: resumed %v, acked %d, %d exports; want a fresh sequence over the 2 stored", fresh.Resumed, fresh.AckedSeq, fresh.ExportCount())
	}
	if err := fresh.ApplyExports(ctx, registry.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []fleet.Export{exportOf(chat)}}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Exports["a"]) != 1 || fresh.Exported(chat2) || !fresh.Exported(chat) {
		t.Fatalf("after the new incarnation's replace_all: stored %v", st.Exports["a"])
	}
}

func TestRevokeAndCollectRemoved(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	s := registry.New(cli, registry.Options{LeaseTTL: 2 * time.Second})
	for _, id := range []string{"a", "b"} {
		if _, err := s.PutCluster(ctx, fleet.ClusterInfo{ID: id, Region: "r"}); err != nil {
			t.Fatal(err)
		}
	}
	sess, err := s.OpenSession(ctx, "a", "h", "i")
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.ApplyExports(ctx, registry.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []fleet.Export{exportOf(chat)}}); err != nil {
		t.Fatal(err)
	}
	revA, err := s.Revoke(ctx, "a", true, "admin")
	if err != nil {
		t.Fatal(err)
	}
	if !revA.Refuses(revA.RevokedAt) || !revA.Refuses(revA.RevokedAt.Add(-time.Hour)) || revA.Refuses(revA.RevokedAt.Add(time.Second)) {
		t.Fatalf("Refuses around %s is wrong", revA.RevokedAt)
	}
	// b is revoked with remove too, but registers again afterwards (a newer certificate): kept.
	revB, err := s.Revoke(ctx, "b", true, "admin")
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the clock moves past b's revocation", testkit.True(func() bool { return time.Now().After(revB.RevokedAt) }))
	if _, err := s.PutCluster(ctx, fleet.ClusterInfo{ID: "b", Region: "r"}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Revocations["a"]; !got.RevokedAt.Equal(revA.RevokedAt) || !got.Remove || got.Cluster != "a" {
		t.Fatalf("loaded revocation of a: %+v", got)
	}
	// While a's session and export live, its record stays.
	if done, err := s.CollectRemoved(ctx, revA); err != nil || done {
		t.Fatalf("CollectRemoved with a live session: %v, %v", done, err)
	}
	testkit.Eventually(t, 10*time.Second, "a's lease lapses", sessionGone(ctx, s, "a"))
	if done, err := s.CollectRemoved(ctx, revA); err != nil || !done {
		t.Fatalf("CollectRemoved after the lease: %v, %v", done, err)
	}
	if done, err := s.CollectRemoved(ctx, revB); err != nil || done {
		t.Fatalf("CollectRemoved of b, registered again since: %v, %v", done, err)
	}
	st, _ = s.Load(ctx)
	if _, ok := st.Clusters["a"]; ok {
		t.Fatal("a's record is still there")
	}
	if _, ok := st.Clusters["b"]; !ok {
		t.Fatal("b's record was deleted")
	}
	if _, ok := st.Revocations["a"]; !ok {
		t.Fatal("a's revocation went with its record: its certificates would be accepted again")
	}
}

func TestHopKeys(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	s := registry.New(cli, registry.Options{LeaseTTL: 10 * time.Second})

	// Replicas starting together agree on one first key.
	var wg sync.WaitGroup
	got := make([][]fleet.HopKey, 4)
	errs := make([]error, 4)
	for i := range got {
		wg.Add(1)
		go func() { defer wg.Done(); got[i], errs[i] = s.EnsureHopKeys(ctx) }()
	}
	wg.Wait()
	for i := range got {
		if errs[i] != nil || len(got[i]) != 1 || got[i][0].ID != got[0][0].ID || !bytes.Equal(got[i][0].Secret, got[0][0].Secret) {
			t.Fatalf("EnsureHopKeys %d: %v, %v; first: %v", i, got[i], errs[i], got[0])
		}
	}
	if len(got[0][0].Secret) != 32 {
		t.Fatalf("secret of %d bytes, want 32", len(got[0][0].Secret))
	}
	first := got[0][0]
	r1, err := s.RotateHopKey(ctx)
	if err != nil || len(r1) != 2 || r1[1].ID != first.ID || r1[0].ID == first.ID {
		t.Fatalf("first rotation: %v, %v", r1, err)
	}
	r2, err := s.RotateHopKey(ctx)
	if err != nil || len(r2) != 2 || r2[1].ID != r1[0].ID {
		t.Fatalf("second rotation: %v, %v; want the new key, then %s", r2, err, r1[0].ID)
	}
	if ensured, err := s.EnsureHopKeys(ctx); err != nil || len(ensured) != 2 || ensured[0].ID != r2[0].ID {
		t.Fatalf("EnsureHopKeys after rotations: %v, %v", ensured, err)
	}
	st, err := s.Load(ctx)
	if err != nil || len(st.HopKeys) != 2 || st.HopKeys[0].ID != r2[0].ID {
		t.Fatalf("loaded hop keys: %v, %v", st.HopKeys, err)
	}
}

// TestWatchDeliversTrustChanges: revocations and hop keys arrive through Watch; tokens and join
// requests never do.
func TestWatchDeliversTrustChanges(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	s := registry.New(cli, registry.Options{LeaseTTL: 10 * time.Second})
	st, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan registry.Event, 16)
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		_ = s.Watch(ctx, st.Revision, func(evs []registry.Event) {
			for _, ev := range evs {
				select {
				case got <- ev:
				case <-ctx.Done():
					return
				}
			}
		})
	}()
	defer func() { cancel(); <-watching }()
	tok, _, err := s.CreateToken(ctx, registry.TokenSpec{Clusters: []string{"a"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := s.CheckToken(ctx, tok)
	if _, _, err := s.RequestJoin(ctx, joinReq(rec, "k")); err != nil {
		t.Fatal(err)
	}
	rev, err := s.Revoke(ctx, "a", false, "admin")
	if err != nil {
		t.Fatal(err)
	}
	keys, err := s.EnsureHopKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var sawRevocation bool
	timeout := time.After(5 * time.Second)
	for {
		select {
		case ev := <-got:
			switch ev.Kind {
			case registry.KindRevocation:
				if ev.Cluster != "a" || !ev.Revocation.RevokedAt.Equal(rev.RevokedAt) {
					t.Fatalf("revocation event %+v", ev)
				}
				sawRevocation = true
			case registry.KindHopKeys:
				if !sawRevocation || len(ev.HopKeys) != 1 || ev.HopKeys[0].ID != keys[0].ID {
					t.Fatalf("hop keys event %+v (revocation seen before: %v)", ev, sawRevocation)
				}
				return
			default:
				t.Fatalf("an event of a token or join request was delivered: %+v", ev)
			}
		case <-timeout:
			t.Fatal("trust events not delivered")
		}
	}
}
