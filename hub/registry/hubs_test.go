package registry_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/registry"
)

// TestHubsAndLeader: the replica whose record shares the lease of the election's oldest campaign
// leads; a replica restarted under the same ID (a new record under a new lease) does not, while
// its dead predecessor's campaign still holds the election; once that lease is gone, the next
// campaign's replica leads.
func TestHubsAndLeader(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	store := registry.New(cli, registry.Options{})

	campaigns := func() int64 {
		t.Helper()
		resp, err := cli.Get(ctx, store.ElectionPrefix()+"/", clientv3.WithPrefix(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	// campaign registers id under a new session and campaigns with it.
	campaign := func(id string) *concurrency.Session {
		t.Helper()
		sess, err := concurrency.NewSession(cli, concurrency.WithTTL(60))
		if err != nil {
			t.Fatal(err)
		}
		if err := store.PutHub(ctx, registry.HubRecord{ID: id, Address: id + ":8472", Incarnation: id}, sess.Lease()); err != nil {
			t.Fatal(err)
		}
		el := concurrency.NewElection(sess, store.ElectionPrefix())
		// Only the first campaign returns at once; the others wait behind it, their keys
		// written first: wait for the key, so that the campaigns are in the order of the calls.
		before := campaigns()
		go func() { _ = el.Campaign(sess.Ctx(), id) }()
		testkit.Eventually(t, 5*time.Second, id+"'s campaign key", func() error {
			if n := campaigns(); n != before+1 {
				return fmt.Errorf("%d campaign keys, want %d", n, before+1)
			}
			return nil
		})
		t.Cleanup(func() { _ = sess.Close() })
		return sess
	}
	check := func(wantHubs int, wantLeader string) {
		t.Helper()
		// A waiting campaign writes its key asynchronously: read until it is there.
		testkit.Eventually(t, 5*time.Second, fmt.Sprintf("%d hubs, leader %q", wantHubs, wantLeader), func() error {
			hubs, leader, err := store.HubsAndLeader(ctx)
			if err != nil {
				return err
			}
			if len(hubs) != wantHubs || leader != wantLeader {
				return fmt.Errorf("hubs %v, leader %q", hubs, leader)
			}
			return nil
		})
	}

	check(0, "")
	a := campaign("hub-a")
	check(1, "hub-a")
	campaign("hub-b")
	check(2, "hub-a")

	// hub-a restarts under its ID: its new record replaces the old, under a new lease, while the
	// old campaign still holds the election.
	campaign("hub-a")
	check(2, "")
	// The old session's lease goes: hub-b's campaign is now the oldest.
	if _, err := cli.Revoke(ctx, a.Lease()); err != nil {
		t.Fatal(err)
	}
	check(2, "hub-b")
}
