package registry_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/registry"
)

// TestCordons: a cluster's and a region's cordon are stored, loaded and followed by a watch, and
// lifted; a cordon of no scope or no name is refused and writes nothing.
func TestCordons(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	s := registry.New(cli, registry.Options{LeaseTTL: 2 * time.Second})
	st, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}

	var mu sync.Mutex
	watched := st
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- s.Watch(wctx, st.Revision, func(evs []registry.Event) {
			mu.Lock()
			defer mu.Unlock()
			for _, ev := range evs {
				watched.Apply(ev)
			}
		})
	}()
	defer func() { cancel(); <-done }()

	if err := s.SetCordon(ctx, registry.CordonCluster, "us-west-1", true, "spiffe://spillway.local/user/admin"); err != nil {
		t.Fatal(err)
	}
	if err := s.SetCordon(ctx, registry.CordonRegion, "eu-west", true, "spiffe://spillway.local/user/admin"); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		scope registry.CordonScope
		name  string
	}{{"zones", "a"}, {registry.CordonCluster, ""}} {
		if err := s.SetCordon(ctx, bad.scope, bad.name, true, "x"); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("cordon of %s %q: %v, want ErrInvalid", bad.scope, bad.name, err)
		}
	}
	loaded, err := s.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := loaded.Cordons[registry.CordonKey(registry.CordonCluster, "us-west-1")]
	if len(loaded.Cordons) != 2 || c.By != "spiffe://spillway.local/user/admin" || c.At.IsZero() || c.Name != "us-west-1" {
		t.Fatalf("loaded cordons %+v", loaded.Cordons)
	}
	for _, tc := range []struct {
		cluster, region string
		want            bool
	}{{"us-west-1", "us-west", true}, {"us-west-2", "us-west", false}, {"eu-west-7", "eu-west", true}, {"x", "", false}} {
		if got := loaded.Cordoned(tc.cluster, tc.region); got != tc.want {
			t.Errorf("Cordoned(%s, %s) = %v, want %v", tc.cluster, tc.region, got, tc.want)
		}
	}
	testkit.Eventually(t, 5*time.Second, "the watch follows both cordons", func() error {
		mu.Lock()
		defer mu.Unlock()
		if !watched.Cordoned("us-west-1", "us-west") || !watched.Cordoned("eu-west-7", "eu-west") {
			return errors.New("not yet")
		}
		return nil
	})

	if err := s.SetCordon(ctx, registry.CordonRegion, "eu-west", false, "x"); err != nil {
		t.Fatal(err)
	}
	if loaded, _ = s.Load(ctx); loaded.Cordoned("eu-west-7", "eu-west") || !loaded.Cordoned("us-west-1", "us-west") {
		t.Fatalf("after lifting eu-west's cordon: %+v", loaded.Cordons)
	}
	testkit.Eventually(t, 5*time.Second, "the watch follows the lifted cordon", func() error {
		mu.Lock()
		defer mu.Unlock()
		if watched.Cordoned("eu-west-7", "eu-west") {
			return errors.New("eu-west still cordoned")
		}
		return nil
	})
}
