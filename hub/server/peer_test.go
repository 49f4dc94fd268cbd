package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/server"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// hubList is a registry of replicas the test writes: Hubs reads it, WatchHubs delivers what
// the test sends on events.
type hubList struct {
	mu     sync.Mutex
	hubs   map[string]registry.HubRecord
	events chan []registry.HubEvent
}

func (l *hubList) Hubs(context.Context) (map[string]registry.HubRecord, int64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]registry.HubRecord, len(l.hubs))
	for id, rec := range l.hubs {
		out[id] = rec
	}
	return out, 1, nil
}

func (l *hubList) WatchHubs(ctx context.Context, _ int64, fn func([]registry.HubEvent)) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case evs := <-l.events:
			fn(evs)
		}
	}
}

// dialAs dials replica x's admin port as hub replica id.
func dialAs(t *testing.T, x *hubtest.Hub, id string) func(string) (*grpc.ClientConn, error) {
	tlsCfg := x.ClientTLS(hubtest.HubReplica(id))
	return func(addr string) (*grpc.ClientConn, error) {
		return grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)))
	}
}

// runPeers runs y's RunPeers until the test ends.
func runPeers(t *testing.T, y *hubtest.Hub, o server.PeerOptions) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = y.Server.RunPeers(ctx, o)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
}

// capacityIn returns the queue depth of cluster's chat capacity in h's view, or false.
func capacityIn(h *hubtest.Hub, cluster string) (uint32, time.Time, bool) {
	for _, rc := range h.Model.Since("", 0, nil).Capacity {
		if rc.ClusterID == cluster && rc.Capacity.Pool.Name == chat.GetName() {
			return rc.Capacity.QueueDepth, rc.ReceivedAt, true
		}
	}
	return 0, time.Time{}, false
}

// twoReplicas starts replicas hub-x and hub-y, each on its own etcd, and a session of spoke a
// on hub-x that has reported a queue of 3; list holds both replicas' records.
func twoReplicas(t *testing.T, ctx context.Context) (x, y *testHub, st pb.SyncService_SyncClient, list *hubList) {
	t.Helper()
	x = startHub(t, hubOptions{hub: hubtest.Options{HubID: "hub-x"}})
	y = startHub(t, hubOptions{hub: hubtest.Options{HubID: "hub-y"}})
	x.register(t, ctx, "a", "10.0.0.1:443")
	st = openSession(t, ctx, x.SyncAs("a"), "a")
	if err := st.Send(capacityReport(3)); err != nil {
		t.Fatal(err)
	}
	list = &hubList{hubs: map[string]registry.HubRecord{
		"hub-x": {ID: "hub-x", Address: x.AdminAddr, Incarnation: x.Model.Incarnation()},
		"hub-y": {ID: "hub-y", Address: y.AdminAddr, Incarnation: y.Model.Incarnation()},
	}, events: make(chan []registry.HubEvent)}
	return x, y, st, list
}

// TestPeersExchangeReports: replica y streams replica x's spokes' reports into its own view, as
// fresh as their age says; a report removed at x goes at y; when x leaves the registry of
// replicas its reports go from y's view; y's own spokes' reports are not echoed back.
func TestPeersExchangeReports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	x, y, st, list := twoReplicas(t, ctx)
	if err := st.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Imports{Imports: &pb.ImportReport{Pools: []*pb.PoolImportStatus{{Pool: &pb.PoolRef{Namespace: "default", Name: "chat"}, Imported: true}}}}}); err != nil {
		t.Fatal(err)
	}

	runPeers(t, y.Hub, server.PeerOptions{Hubs: list, Dial: dialAs(t, x.Hub, "hub-y"), FirstSnapshotWait: 10 * time.Second})

	testkit.Eventually(t, 10*time.Second, "a's capacity from hub-x in hub-y's view", func() error {
		q, at, ok := capacityIn(y.Hub, "a")
		if !ok || q != 3 {
			return fmt.Errorf("queue %d, present %v", q, ok)
		}
		if age := time.Since(at); age < 0 || age > 5*time.Second {
			return fmt.Errorf("age %s at hub-y", age)
		}
		return nil
	})
	testkit.Eventually(t, 5*time.Second, "hub-y's view complete once hub-x's snapshot arrived", func() error {
		if inc := y.Model.Incomplete(); inc != nil {
			return fmt.Errorf("incomplete: %v", inc)
		}
		return nil
	})
	// A change at x reaches y.
	if err := st.Send(capacityReport(8)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "a's new capacity at hub-y", func() error {
		if q, _, _ := capacityIn(y.Hub, "a"); q != 8 {
			return fmt.Errorf("queue %d", q)
		}
		return nil
	})
	// Nothing of hub-y's view goes back to hub-x: x's view has a's report from its own spoke.
	if rcs := x.capacityOf("a"); len(rcs) != 1 || rcs[0].QueueDepth != 8 {
		t.Fatalf("hub-x's own view of a: %+v", rcs)
	}

	// hub-x leaves the registry of replicas: its reports go.
	list.events <- []registry.HubEvent{{Deleted: true, Hub: registry.HubRecord{ID: "hub-x"}}}
	testkit.Eventually(t, 5*time.Second, "a's capacity gone from hub-y with hub-x", func() error {
		if _, _, ok := capacityIn(y.Hub, "a"); ok {
			return fmt.Errorf("still there")
		}
		return nil
	})
	if got := len(y.Model.LocalSince("", 0).Capacity); got != 0 {
		t.Fatalf("hub-y counts %d of hub-x's reports as its own", got)
	}
}

// TestPeersIncompleteUntilFirstSnapshot: a replica listed in hubs/ that cannot be reached keeps
// the view incomplete for FirstSnapshotWait, no longer.
func TestPeersIncompleteUntilFirstSnapshot(t *testing.T) {
	y := startHub(t, hubOptions{hub: hubtest.Options{HubID: "hub-y"}})
	list := &hubList{hubs: map[string]registry.HubRecord{
		"hub-gone": {ID: "hub-gone", Address: "127.0.0.1:1", Incarnation: "1"},
	}, events: make(chan []registry.HubEvent)}
	start := time.Now()
	runPeers(t, y.Hub, server.PeerOptions{Hubs: list, Dial: dialAs(t, y.Hub, "hub-y"), FirstSnapshotWait: time.Second})
	testkit.Eventually(t, 2*time.Second, "hub-y's view marked incomplete while waiting for hub-gone", func() error {
		if y.Model.Incomplete() == nil {
			return fmt.Errorf("not marked")
		}
		return nil
	})
	testkit.Eventually(t, 5*time.Second, "hub-y's view complete once the wait passed", func() error {
		if inc := y.Model.Incomplete(); inc != nil {
			return fmt.Errorf("incomplete: %v", inc)
		}
		return nil
	})
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("the view stopped waiting after %s, before FirstSnapshotWait", waited)
	}

	// A view update sent meanwhile is marked; the one after the mark is lifted is a delta
	// without it (the spoke kept what the marked ones would have removed).
	y.Model.SetIncomplete("test", "marked by the test")
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	y.register(t, ctx, "a", "10.0.0.1:443")
	st, err := y.SyncAs("a").Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(hello("a")); err != nil {
		t.Fatal(err)
	}
	view := func() *pb.ViewUpdate {
		for {
			resp, err := st.Recv()
			if err != nil {
				t.Fatal(err)
			}
			if v := resp.GetView(); v != nil {
				return v
			}
		}
	}
	if v := view(); !v.GetIncomplete() {
		t.Fatalf("a view update while marked: %v", v)
	}
	y.Model.ClearIncomplete("test")
	for {
		v := view()
		if !v.GetIncomplete() {
			if v.GetSnapshot() {
				t.Fatalf("the first update after the mark was lifted is a snapshot: %v, want a delta", v)
			}
			break
		}
	}
}

// TestReportsNeedsHubIdentity: PeerService answers hub replicas of the trust domain only, and
// refuses a replica calling itself.
func TestReportsNeedsHubIdentity(t *testing.T) {
	x := startHub(t, hubOptions{hub: hubtest.Options{HubID: "hub-x"}})
	for _, tc := range []struct {
		peer hubtest.Peer
		code codes.Code
	}{
		{hubtest.Admin(), codes.PermissionDenied},
		{hubtest.Cluster("a"), codes.PermissionDenied},
		{hubtest.HubReplica("hub-z").InTrustDomain("other.test"), codes.PermissionDenied},
		{hubtest.HubReplica("hub-x"), codes.InvalidArgument},
		{hubtest.HubReplica("hub-z"), codes.OK},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		stream, err := pb.NewPeerServiceClient(x.AdminConnAs(tc.peer)).Reports(ctx, &pb.ReportsRequest{HubId: tc.peer.Identity().Name})
		var m *pb.ReportsResponse
		if err == nil {
			m, err = stream.Recv()
		}
		cancel()
		if status.Code(err) != tc.code {
			t.Errorf("Reports as %s: %v, want %s", tc.peer.Identity(), err, tc.code)
		}
		if tc.code == codes.OK && (!m.GetSnapshot() || m.GetHubId() != "hub-x" || m.GetHubIncarnation() != x.Model.Incarnation()) {
			t.Errorf("first batch %v: want a snapshot from hub-x's incarnation", m)
		}
	}
}

// cuttable dials with dial until cut, closing the connections it made; then it refuses until
// mended.
type cuttable struct {
	dial  func(string) (*grpc.ClientConn, error)
	mu    sync.Mutex
	cut   bool
	conns []*grpc.ClientConn
}

func (c *cuttable) Dial(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cut {
		return nil, fmt.Errorf("cut")
	}
	conn, err := c.dial(addr)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

func (c *cuttable) set(cut bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cut = cut
	if cut {
		for _, conn := range c.conns {
			conn.Close()
		}
		c.conns = nil
	}
}

// TestPeerBrokenStreamDropsReports: while replica x stays listed in hubs/ but its stream to y is
// broken (a partition between replicas), y keeps x's spokes' reports for DropAfter, not less,
// then drops them; x's next snapshot brings them back.
func TestPeerBrokenStreamDropsReports(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	x, y, _, list := twoReplicas(t, ctx)
	link := &cuttable{dial: dialAs(t, x.Hub, "hub-y")}
	const dropAfter = 2 * time.Second
	runPeers(t, y.Hub, server.PeerOptions{Hubs: list, Dial: link.Dial, FirstSnapshotWait: 10 * time.Second, DropAfter: dropAfter})
	present := func(want bool) func() error {
		return func() error {
			if _, _, ok := capacityIn(y.Hub, "a"); ok != want {
				return fmt.Errorf("a's capacity in hub-y's view: %v", ok)
			}
			return nil
		}
	}
	testkit.Eventually(t, 10*time.Second, "a's capacity from hub-x in hub-y's view", present(true))

	cut := time.Now()
	link.set(true)
	testkit.Eventually(t, dropAfter+5*time.Second, "a's capacity dropped at hub-y while the stream is broken", present(false))
	if held := time.Since(cut); held < dropAfter {
		t.Fatalf("hub-x's reports dropped %v after the stream broke: want them kept %v", held, dropAfter)
	}
	link.set(false)
	testkit.Eventually(t, 10*time.Second, "a's capacity back at hub-y with hub-x's next snapshot", present(true))
}
