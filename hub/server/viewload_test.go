package server

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/view"
	"github.com/spillway-io/spillway/pkg/fleet"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// TestNoViewBeforeTheRegistryIsLoaded: with a registry in which cluster a exports chat, and a
// view that has not loaded it yet, a Sync stream's send loop sends no view update (no empty
// snapshot that would make the spoke delete its imports), the admin list calls and Ready answer
// that the registry is not loaded rather than with an empty fleet; once the view follows the
// registry, the stream's first view update is a snapshot holding the import of chat, and the
// admin calls and Ready answer from the loaded view.
func TestNoViewBeforeTheRegistryIsLoaded(t *testing.T) {
	ctx := t.Context()
	cli := startEtcd(t)
	store := registry.New(cli, registry.Options{LeaseTTL: time.Minute})

	chat := fleet.PoolRef{Namespace: "default", Name: "chat"}
	if _, err := store.RegisterCluster(ctx, fleet.ClusterInfo{ID: "a", Region: "r", GatewayAddress: "10.0.0.1:443"}, 0); err != nil {
		t.Fatal(err)
	}
	sess, err := store.OpenSession(ctx, "a", "hub-test", "i1")
	if err != nil {
		t.Fatal(err)
	}
	if err := sess.ApplyExports(ctx, registry.ExportDelta{Seq: 1, ReplaceAll: true,
		Upserts: []fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}}}); err != nil {
		t.Fatal(err)
	}

	model := view.New()
	s := New(store, model, Options{ViewInterval: 20 * time.Millisecond})
	// The trust state is loaded: only the view is missing.
	s.trust.reset(registry.State{HopKeys: []fleet.HopKey{{ID: "k1", Secret: make([]byte, 32)}}})
	st := &recordingStream{views: make(chan sentView, 16)}
	sctx, stop := context.WithCancel(ctx) // ends the send loop, and Follow once it runs
	var wg sync.WaitGroup
	defer func() {
		stop()
		wg.Wait()
	}()
	wg.Go(func() {
		_ = s.sendLoop(sctx, st, &pb.Hello{}, make(chan uint64), make(chan []fleet.PoolRef), nil, func() {}, nil)
	})

	// The stream is open and the view not loaded: nothing may go out, whatever the wait.
	select {
	case v := <-st.views:
		t.Fatalf("a view update went out before the registry was loaded: %v", v.u)
	case <-time.After(300 * time.Millisecond):
	}
	if err := s.Ready(); !errors.Is(err, ErrViewNotLoaded) {
		t.Fatalf("Ready before the view's load = %v, want ErrViewNotLoaded", err)
	}
	notLoaded := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.Unavailable || status.Convert(err).Message() != ErrViewNotLoaded.Error() {
			t.Fatalf("%s before the view's load = %v, want Unavailable %q", what, err, ErrViewNotLoaded)
		}
	}
	_, err = s.ListClusters(ctx, &pb.ListClustersRequest{})
	notLoaded("ListClusters", err)
	_, err = s.ListImports(ctx, &pb.ListImportsRequest{})
	notLoaded("ListImports", err)
	_, err = s.ListPools(ctx, &pb.ListPoolsRequest{})
	notLoaded("ListPools", err)
	_, err = s.GetCluster(ctx, &pb.GetClusterRequest{ClusterId: "a"})
	notLoaded("GetCluster", err)

	followed := time.Now()
	wg.Go(func() { _ = model.Follow(sctx, store, slog.New(slog.DiscardHandler)) })

	first := st.next(t)
	if first.at.Before(followed) {
		t.Fatalf("the first view update went out at %s, before the view followed the registry at %s", first.at, followed)
	}
	imps := first.u.GetImports()
	if !first.u.GetSnapshot() || len(imps) != 1 || imps[0].GetPool().GetName() != "chat" ||
		len(imps[0].GetExportingClusters()) != 1 || imps[0].GetExportingClusters()[0] != "a" {
		t.Fatalf("the first view update = %v, want a snapshot with the import of chat exported by a", first.u)
	}
	testkit.Eventually(t, 10*time.Second, "Ready once the view is loaded", s.Ready)
	resp, err := s.ListImports(ctx, &pb.ListImportsRequest{})
	if err != nil || len(resp.GetImports()) != 1 {
		t.Fatalf("ListImports after the load = %v, %v; want the import of chat", resp, err)
	}
}
