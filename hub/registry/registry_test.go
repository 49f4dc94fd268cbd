package registry_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/spillway-io/spillway/e2e/testkit"
	hubetcd "github.com/spillway-io/spillway/hub/etcd"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
)

func startEtcd(t *testing.T, dir string) (*hubetcd.Embedded, *clientv3.Client) {
	t.Helper()
	e, err := hubetcd.StartEmbedded(context.Background(), hubetcd.EmbeddedOptions{Dir: dir, ListenAddress: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := hubetcd.Dial([]string{e.Endpoint}, e.ClientTLS)
	if err != nil {
		e.Close()
		t.Fatal(err)
	}
	return e, cli
}

var (
	chat = fleet.PoolRef{Namespace: "default", Name: "chat"}
	code = fleet.PoolRef{Namespace: "default", Name: "code"}
)

func exportOf(p fleet.PoolRef) fleet.Export {
	return fleet.Export{Pool: p, TargetPorts: []uint32{8000}, Labels: map[string]string{"app": p.Name}}
}

func TestSessionLeaseExpiryWithdrawsExports(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	s := registry.New(cli, registry.Options{LeaseTTL: 2 * time.Second})

	if _, err := s.OpenSession(ctx, "a", "hub-0", "inc-1"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("OpenSession of an unregistered cluster: err = %v, want ErrNotFound", err)
	}
	for _, id := range []string{"a", "control"} {
		if _, err := s.PutCluster(ctx, fleet.ClusterInfo{ID: id, Region: "us-east"}); err != nil {
			t.Fatal(err)
		}
	}
	sess, err := s.OpenSession(ctx, "a", "hub-0", "inc-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.ApplyExports(ctx, registry.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []fleet.Export{exportOf(chat), exportOf(code)}}); err != nil {
		t.Fatal(err)
	}
	st, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Exports["a"]) != 2 || st.Sessions["a"].ExportSeq != 1 {
		t.Fatalf("after the first delta: exports %v, session %+v", st.Exports["a"], st.Sessions["a"])
	}
	// A control session of the same TTL, opened after a's and never renewed: its expiry shows
	// that a's lease would have lapsed by then without renewal.
	control, err := s.OpenSession(ctx, "control", "hub-0", "inc-1")
	if err != nil {
		t.Fatal(err)
	}
	if err := control.ApplyExports(ctx, registry.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []fleet.Export{exportOf(chat)}}); err != nil {
		t.Fatal(err)
	}

	// Keep a's lease alive past the control's expiry: a's exports stay.
	kctx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- sess.KeepAlive(kctx) }()
	testkit.Eventually(t, 10*time.Second, "the control session expires", sessionGone(ctx, s, "control"))
	if st, _ := s.Load(ctx); len(st.Exports["a"]) != 2 || st.Sessions["a"].Cluster != "a" {
		t.Fatalf("a withdrawn while its session was kept alive: exports %v, sessions %v", st.Exports["a"], st.Sessions)
	}
	stop()
	if err := <-done; err != nil {
		t.Fatalf("KeepAlive after cancel: %v", err)
	}

	// Without renewal the lease lapses and etcd deletes the session and every export.
	testkit.Eventually(t, 10*time.Second, "a's session and exports deleted after renewal stopped", sessionGone(ctx, s, "a"))
	if st, _ := s.Load(ctx); len(st.Clusters) != 2 {
		t.Fatalf("clusters %v: a cluster record went with its lease; it must stay registered", st.Clusters)
	}
	// A delta on the expired session fails clearly rather than writing lease-less keys.
	err = sess.ApplyExports(ctx, registry.ExportDelta{Seq: 2, Upserts: []fleet.Export{exportOf(chat)}})
	if !errors.Is(err, registry.ErrSessionLost) {
		t.Fatalf("ApplyExports on an expired session: err = %v, want ErrSessionLost", err)
	}
}

// sessionGone is a condition for testkit.Eventually: the cluster has neither a session nor exports.
func sessionGone(ctx context.Context, s *registry.Store, cluster string) func() error {
	return func() error {
		st, err := s.Load(ctx)
		if err != nil {
			return err
		}
		if _, ok := st.Sessions[cluster]; ok || len(st.Exports[cluster]) > 0 {
			return fmt.Errorf("session of %s %+v, exports %v", cluster, st.Sessions[cluster], st.Exports[cluster])
		}
		return nil
	}
}

func TestSessionResumeAndReplaceAll(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	s := registry.New(cli, registry.Options{LeaseTTL: 10 * time.Second})
	if _, err := s.PutCluster(ctx, fleet.ClusterInfo{ID: "a", Region: "us-east"}); err != nil {
		t.Fatal(err)
	}
	sess, err := s.OpenSession(ctx, "a", "hub-0", "inc-1")
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []registry.ExportDelta{
		{Seq: 1, ReplaceAll: true, Upserts: []fleet.Export{exportOf(chat)}},
		{Seq: 2, Upserts: []fleet.Export{exportOf(code)}},
		{Seq: 2, Removes: []fleet.PoolRef{chat}}, // a resent delta is ignored
	} {
		if err := sess.ApplyExports(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	if err := sess.ApplyExports(ctx, registry.ExportDelta{Seq: 5, Removes: []fleet.PoolRef{chat}}); !errors.Is(err, registry.ErrInvalid) {
		t.Fatalf("a gap in sequence numbers: err = %v, want ErrInvalid", err)
	}

	// The same incarnation reconnects while the lease lives: it resumes after seq 2.
	again, err := s.OpenSession(ctx, "a", "hub-1", "inc-1")
	if err != nil {
		t.Fatal(err)
	}
	if !again.Resumed || again.AckedSeq != 2 {
		t.Fatalf("resume: Resumed=%v AckedSeq=%d, want true, 2", again.Resumed, again.AckedSeq)
	}
	if st, _ := s.Load(ctx); len(st.Exports["a"]) != 2 || st.Sessions["a"].HubID != "hub-1" {
		t.Fatalf("after resume: exports %v, session %+v", st.Exports["a"], st.Sessions["a"])
	}

	// A restarted spoke (new incarnation) starts over: nothing acked, old exports cleared, and its
	// replace_all is the whole truth.
	fresh, err := s.OpenSession(ctx, "a", "hub-1", "inc-2")
	if err != nil {
		t.Fatal(err)
	}
	if fresh.Resumed || fresh.AckedSeq != 0 {
		t.Fatalf("new incarnation: Resumed=%v AckedSeq=%d", fresh.Resumed, fresh.AckedSeq)
	}
	// The old session's lease now belongs to the new one; the old handle can no longer write.
	if err := sess.ApplyExports(ctx, registry.ExportDelta{Seq: 3, Upserts: []fleet.Export{exportOf(chat)}}); !errors.Is(err, registry.ErrSessionLost) {
		t.Fatalf("write through a taken-over session: err = %v, want ErrSessionLost", err)
	}
	if err := fresh.ApplyExports(ctx, registry.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []fleet.Export{exportOf(code)}}); err != nil {
		t.Fatal(err)
	}
	st, _ := s.Load(ctx)
	if _, ok := st.Exports["a"][code]; !ok || len(st.Exports["a"]) != 1 {
		t.Fatalf("after replace_all: exports %v, want only %v", st.Exports["a"], code)
	}
}

func TestManyExportsSpanTransactions(t *testing.T) {
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
	var ups []fleet.Export
	for i := range 1000 {
		ups = append(ups, exportOf(fleet.PoolRef{Namespace: "ns", Name: "p" + string(rune('a'+i%26)) + time.Duration(i).String()}))
	}
	if err := sess.ApplyExports(ctx, registry.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: ups}); err != nil {
		t.Fatalf("1000 exports in one delta (etcd allows 128 ops per transaction): %v", err)
	}
	st, _ := s.Load(ctx)
	if len(st.Exports["a"]) != 1000 || st.Sessions["a"].ExportSeq != 1 {
		t.Fatalf("stored %d exports, seq %d", len(st.Exports["a"]), st.Sessions["a"].ExportSeq)
	}
}

func TestRestartKeepsState(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	e, cli := startEtcd(t, dir)
	s := registry.New(cli, registry.Options{LeaseTTL: 30 * time.Second})
	if _, err := s.PutCluster(ctx, fleet.ClusterInfo{ID: "a", Region: "us-east", GatewayAddress: "10.0.0.1:80"}); err != nil {
		t.Fatal(err)
	}
	sess, err := s.OpenSession(ctx, "a", "h", "inc")
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.ApplyExports(ctx, registry.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []fleet.Export{exportOf(chat)}}); err != nil {
		t.Fatal(err)
	}
	first, _ := s.GetCluster(ctx, "a")
	cli.Close()
	e.Close()

	e2, cli2 := startEtcd(t, dir)
	defer e2.Close()
	defer cli2.Close()
	s2 := registry.New(cli2, registry.Options{LeaseTTL: 30 * time.Second})
	st, err := s2.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Clusters["a"].Info.GatewayAddress != "10.0.0.1:80" || len(st.Exports["a"]) != 1 {
		t.Fatalf("after restart: clusters %v exports %v", st.Clusters, st.Exports)
	}
	// The same spoke incarnation resumes its session across the hub restart (the lease lives on).
	sess2, err := s2.OpenSession(ctx, "a", "h", "inc")
	if err != nil {
		t.Fatal(err)
	}
	if !sess2.Resumed || sess2.AckedSeq != 1 {
		t.Fatalf("resume after restart: Resumed=%v AckedSeq=%d", sess2.Resumed, sess2.AckedSeq)
	}
	// Re-registering keeps the first registration time.
	rec, err := s2.PutCluster(ctx, fleet.ClusterInfo{ID: "a", Region: "us-east"})
	if err != nil {
		t.Fatal(err)
	}
	if !rec.RegisteredAt.Equal(first.RegisteredAt) {
		t.Fatalf("RegisteredAt moved from %v to %v", first.RegisteredAt, rec.RegisteredAt)
	}
}

func TestWatchDeliversChanges(t *testing.T) {
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
	if _, err := s.PutCluster(ctx, fleet.ClusterInfo{ID: "a", Region: "r"}); err != nil {
		t.Fatal(err)
	}
	// Junk under the prefix is skipped, not fatal.
	if _, err := cli.Put(ctx, registry.DefaultPrefix+"clusters/b", "{not json"); err != nil {
		t.Fatal(err)
	}
	sess, err := s.OpenSession(ctx, "a", "h", "i")
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.ApplyExports(ctx, registry.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []fleet.Export{exportOf(chat)}}); err != nil {
		t.Fatal(err)
	}
	var sawExport bool
	timeout := time.After(5 * time.Second)
	for !sawExport {
		select {
		case ev := <-got:
			if ev.Kind == registry.KindCluster && ev.Cluster == "b" {
				t.Fatal("a record that does not decode was delivered")
			}
			if ev.Kind == registry.KindExport && ev.Export.Pool == chat && ev.Export.TargetPorts[0] == 8000 {
				sawExport = true
			}
		case <-timeout:
			t.Fatal("export event not delivered")
		}
	}
}

// TestReplaceAllWithdrawsAfterItsUpserts: a replace_all delta larger than one transaction stores
// every upsert before it withdraws anything, so that a hub that dies between its transactions
// leaves importers the old exports and part of the new, never fewer than both share.
func TestReplaceAllWithdrawsAfterItsUpserts(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	s := registry.New(cli, registry.Options{LeaseTTL: 5 * time.Second})
	if _, err := s.PutCluster(ctx, fleet.ClusterInfo{ID: "a", Region: "r"}); err != nil {
		t.Fatal(err)
	}
	old, err := s.OpenSession(ctx, "a", "h", "i1")
	if err != nil {
		t.Fatal(err)
	}
	gone := fleet.PoolRef{Namespace: "default", Name: "gone"}
	if err := old.ApplyExports(ctx, registry.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []fleet.Export{exportOf(chat), exportOf(gone)}}); err != nil {
		t.Fatal(err)
	}
	// A new incarnation of the spoke resends 250 pools (three transactions) without "gone".
	sess, err := s.OpenSession(ctx, "a", "h", "i2")
	if err != nil {
		t.Fatal(err)
	}
	ups := []fleet.Export{exportOf(chat)}
	for i := range 249 {
		ups = append(ups, exportOf(fleet.PoolRef{Namespace: "default", Name: fmt.Sprintf("p%03d", i)}))
	}
	start, err := cli.Get(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.ApplyExports(ctx, registry.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: ups}); err != nil {
		t.Fatal(err)
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var lastPut, firstDelete int64
	n := 0
	for resp := range cli.Watch(wctx, registry.DefaultPrefix+"exports/", clientv3.WithPrefix(), clientv3.WithRev(start.Header.Revision+1)) {
		for _, ev := range resp.Events {
			n++
			switch ev.Type {
			case clientv3.EventTypePut:
				lastPut = max(lastPut, ev.Kv.ModRevision)
			case clientv3.EventTypeDelete:
				if firstDelete == 0 {
					firstDelete = ev.Kv.ModRevision
				}
				if string(ev.Kv.Key) != registry.DefaultPrefix+"exports/a/default/gone" {
					t.Fatalf("deleted %s, which the new set holds", ev.Kv.Key)
				}
			}
		}
		if n >= len(ups)+1 {
			cancel()
		}
	}
	if firstDelete == 0 || firstDelete < lastPut {
		t.Fatalf("the withdrawal is at revision %d, the last upsert at %d: want the withdrawal after every upsert", firstDelete, lastPut)
	}
	if sess.Exported(gone) || sess.ExportCount() != len(ups) {
		t.Fatalf("session holds %d exports (gone: %v), want %d", sess.ExportCount(), sess.Exported(gone), len(ups))
	}
}

// TestUnchangedRegistrationWritesNothing: a cluster registering again as it is (every spoke
// connection does) leaves the registry's revision where it was; a change is written, and keeps
// the first registration time.
func TestUnchangedRegistrationWritesNothing(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	s := registry.New(cli, registry.Options{LeaseTTL: 2 * time.Second})
	info := fleet.ClusterInfo{ID: "a", Region: "us-east", GatewayAddress: "10.0.0.1:443"}
	first, err := s.RegisterCluster(ctx, info, 10)
	if err != nil {
		t.Fatal(err)
	}
	rev := func() int64 {
		t.Helper()
		resp, err := cli.Get(ctx, "health")
		if err != nil {
			t.Fatal(err)
		}
		return resp.Header.Revision
	}
	before := rev()
	again, err := s.RegisterCluster(ctx, info, 10)
	if err != nil {
		t.Fatal(err)
	}
	if after := rev(); after != before {
		t.Errorf("an unchanged registration moved the revision from %d to %d", before, after)
	}
	if !again.Info.Equal(info) || !again.RegisteredAt.Equal(first.RegisteredAt) {
		t.Errorf("unchanged registration answered %+v, want the record of the first", again)
	}
	info.Zone = "us-east-1a"
	changed, err := s.RegisterCluster(ctx, info, 10)
	if err != nil {
		t.Fatal(err)
	}
	if after := rev(); after == before {
		t.Error("a changed registration was not written")
	}
	if !changed.Info.Equal(info) || !changed.RegisteredAt.Equal(first.RegisteredAt) {
		t.Errorf("changed registration answered %+v, want the new info and the first registration time", changed)
	}
}
