package server

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/spillway-io/spillway/e2e/testkit"
	hubetcd "github.com/spillway-io/spillway/hub/etcd"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/view"
	"github.com/spillway-io/spillway/pkg/fleet"
)

// TestStartGraceWaitsForTheClusters: a hub that starts on a registry whose clusters a and b have
// no live session (their leases lapsed while every hub was down) keeps its view incomplete, so
// that no spoke withdraws their imports, until each has reconnected and stored its exports
// again; then the mark goes. With a cluster that never comes back, the mark goes after the
// grace.
func TestStartGraceWaitsForTheClusters(t *testing.T) {
	ctx := t.Context()
	cli := startEtcd(t)
	come := func(store *registry.Store, id string) { storeChat(t, store, id, "hub-test") }
	start := func(ttl time.Duration) (*registry.Store, *view.Model, chan struct{}, context.CancelFunc) {
		store := registry.New(cli, registry.Options{LeaseTTL: ttl})
		model := view.New()
		s := New(store, model, Options{StartGrace: ttl})
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{}, 2)
		go func() { _ = model.Follow(rctx, store, s.syncLog); done <- struct{}{} }()
		go func() { _ = s.RunStartGrace(rctx); done <- struct{}{} }()
		return store, model, done, cancel
	}
	marked := func(m *view.Model) bool {
		for _, msg := range m.Incomplete() {
			if strings.Contains(msg, "after the hub's start") {
				return true
			}
		}
		return false
	}

	store := registry.New(cli, registry.Options{LeaseTTL: time.Minute})
	for _, id := range []string{"a", "b"} {
		if _, err := store.RegisterCluster(ctx, fleet.ClusterInfo{ID: id, Region: "r"}, 0); err != nil {
			t.Fatal(err)
		}
	}
	store, model, done, stop := start(time.Minute)
	testkit.Eventually(t, 5*time.Second, "the view marked incomplete while a and b are away", holds(func() bool { return marked(model) }))
	come(store, "a")
	testkit.Eventually(t, 5*time.Second, "only b unsettled once a stored its exports", holds(func() bool {
		u := model.Unsettled(nil)
		return len(u) == 1 && u[0] == "b"
	}))
	if !marked(model) {
		t.Fatal("the mark went with b still away")
	}
	come(store, "b")
	testkit.Eventually(t, 5*time.Second, "the mark lifted once every cluster is back", holds(func() bool { return !marked(model) }))
	stop()
	<-done
	<-done

	// c registers and never connects: a hub started now waits for it for the lease TTL only.
	if _, err := store.RegisterCluster(ctx, fleet.ClusterInfo{ID: "c", Region: "r"}, 0); err != nil {
		t.Fatal(err)
	}
	_, model, done, stop = start(2 * time.Second)
	defer func() { stop(); <-done; <-done }()
	testkit.Eventually(t, 5*time.Second, "the view marked incomplete while c is away", holds(func() bool { return marked(model) }))
	began := time.Now()
	testkit.Eventually(t, 10*time.Second, "the mark lifted after the grace", holds(func() bool { return !marked(model) }))
	if waited := time.Since(began); waited > 4*time.Second {
		t.Fatalf("the mark stayed %v, want about the 2 s grace", waited)
	}
}

// TestSessionsOfADeadReplicaAreNotLive: every replica was killed and restarted within the lease
// TTL, so the registry still holds the sessions the dead incarnations opened. The restarted
// replica keeps its view incomplete until each of those spokes has reconnected (a session of
// the live incarnation), not only until the old leases lapse: a spoke that comes back late
// has its exports lapse while no spoke acts on the view.
func TestSessionsOfADeadReplicaAreNotLive(t *testing.T) {
	ctx := t.Context()
	cli := startEtcd(t)
	open := func(store *registry.Store, id string) { storeChat(t, store, id, "hub-1") }
	old := registry.New(cli, registry.Options{LeaseTTL: time.Minute, HubIncarnation: "old"})
	for _, id := range []string{"a", "b"} {
		if _, err := old.RegisterCluster(ctx, fleet.ClusterInfo{ID: id, Region: "r"}, 0); err != nil {
			t.Fatal(err)
		}
		open(old, id)
	}

	// The restarted replica: hub-1 again, a new incarnation, its record registered.
	store := registry.New(cli, registry.Options{LeaseTTL: time.Minute, HubIncarnation: "new"})
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.PutHub(ctx, registry.HubRecord{ID: "hub-1", Address: "127.0.0.1:1", Incarnation: "new"}, lease.ID); err != nil {
		t.Fatal(err)
	}
	model := view.New()
	s := New(store, model, Options{HubID: "hub-1", StartGrace: time.Minute})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{}, 2)
	defer func() { cancel(); <-done; <-done }()
	go func() { _ = model.Follow(rctx, store, s.syncLog); done <- struct{}{} }()
	go func() { _ = s.RunStartGrace(rctx); done <- struct{}{} }()
	marked := func() bool {
		for _, msg := range model.Incomplete() {
			if strings.Contains(msg, "after the hub's start") {
				return true
			}
		}
		return false
	}
	testkit.Eventually(t, 5*time.Second, "the view marked incomplete while a and b hold sessions of the dead incarnation", holds(marked))
	open(store, "a")
	testkit.Eventually(t, 5*time.Second, "only b unsettled once a reconnected", holds(func() bool {
		u := model.Unsettled(map[string]string{"hub-1": "new"})
		return len(u) == 1 && u[0] == "b"
	}))
	if !marked() {
		t.Fatal("the mark went while b's session is the dead incarnation's")
	}
	open(store, "b")
	testkit.Eventually(t, 5*time.Second, "the mark lifted once a and b reconnected", holds(func() bool { return !marked() }))
}

// startEtcd starts an embedded etcd for the test and returns a client of it; both stop when the
// test ends.
func startEtcd(t *testing.T) *clientv3.Client {
	t.Helper()
	e, err := hubetcd.StartEmbedded(t.Context(), hubetcd.EmbeddedOptions{Dir: t.TempDir(), ListenAddress: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	cli, err := hubetcd.Dial([]string{e.Endpoint}, e.ClientTLS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// storeChat opens cluster id's session on store, as replica hubID, and stores its export of
// default/chat.
func storeChat(t *testing.T, store *registry.Store, id, hubID string) {
	t.Helper()
	sess, err := store.OpenSession(t.Context(), id, hubID, "i-"+id)
	if err != nil {
		t.Fatal(err)
	}
	chat := fleet.PoolRef{Namespace: "default", Name: "chat"}
	if err := sess.ApplyExports(t.Context(), registry.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}}}); err != nil {
		t.Fatal(err)
	}
}

// holds turns a condition into an Eventually check.
func holds(cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return errors.New("not yet")
	}
}
