package e2e

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/server"
	"github.com/spillway-io/spillway/pkg/fleet"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
	"github.com/spillway-io/spillway/spoke/hubclient"
)

// These tests run a real hub (embedded etcd, gRPC on loopback) and real spoke hub clients in one
// process, to look closely at the sync protocol. Each spoke connects over mutual TLS with its
// cluster's certificate from the hub's CA, as a spoke process does.

type spoke struct {
	client *hubclient.Client
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan struct{}
}

func startSpoke(t *testing.T, h *hubtest.Hub, id, region string) *spoke {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	reg := prometheus.NewRegistry()
	c := hubclient.New(hubclient.Options{
		Cluster:    fleet.ClusterInfo{ID: id, Region: region, GatewayAddress: "gateway." + id + ".test:8080"},
		HubAddress: h.Addr, TLS: h.ClientTLS(hubtest.Cluster(id)), MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Registerer: reg, Logger: slog.New(slog.DiscardHandler),
	})
	s := &spoke{client: c, reg: reg, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(s.done); _ = c.Run(ctx) }()
	t.Cleanup(s.stop)
	return s
}

func (s *spoke) stop() {
	s.cancel()
	<-s.done
}

var chat = fleet.PoolRef{Namespace: "default", Name: "chat"}

func importOf(v interface{ Imports() []fleet.Import }, p fleet.PoolRef) []string {
	for _, i := range v.Imports() {
		if i.Pool == p {
			return i.ExportingClusters
		}
	}
	return nil
}

func TestExportReachesEverySpokeWithCapacity(t *testing.T) {
	h := hubtest.Start(t, 5*time.Second)
	a := startSpoke(t, h, "a", "us-east")
	b := startSpoke(t, h, "b", "us-west")
	b.client.SetInterest([]fleet.PoolRef{chat})

	a.client.SetExports([]fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}})
	a.client.SetCapacity([]fleet.PoolCapacity{{Pool: chat, ReadyEndpoints: 3, TotalEndpoints: 3, QueueDepth: 4, Saturation: 0.25}})

	testkit.Eventually(t, 5*time.Second, "b sees a's export and capacity", testkit.True(func() bool {
		caps := b.client.View().Capacity(chat)
		return strings.Join(importOf(b.client.View(), chat), ",") == "a" && len(caps) == 1 &&
			caps[0].ClusterID == "a" && caps[0].Capacity.QueueDepth == 4
	}))
	testkit.Eventually(t, 5*time.Second, "b sees a alive with its gateway", testkit.True(func() bool {
		for _, c := range b.client.View().Clusters() {
			if c.Info.ID == "a" {
				return c.State == fleet.StateAlive && c.Info.GatewayAddress == "gateway.a.test:8080" && c.Info.Region == "us-east"
			}
		}
		return false
	}))

	// b exports the same pool: both are listed, sorted.
	b.client.SetExports([]fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}})
	testkit.Eventually(t, 5*time.Second, "a sees both exporters", testkit.True(func() bool {
		return strings.Join(importOf(a.client.View(), chat), ",") == "a,b"
	}))
	// a never asked for capacity: interest keeps it out of a's view.
	if caps := a.client.View().Capacity(chat); len(caps) != 0 {
		t.Fatalf("a received capacity it did not ask for: %v", caps)
	}

	resp, err := h.Admin().ListPools(context.Background(), &pb.ListPoolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetPools()) != 1 || len(resp.GetPools()[0].GetMembers()) != 2 ||
		resp.GetPools()[0].GetMembers()[0].GetCapacity().GetCapacity().GetQueueDepth() != 4 {
		t.Fatalf("ListPools = %v", resp)
	}

	// Unexport withdraws at once.
	a.client.SetExports(nil)
	testkit.Eventually(t, 5*time.Second, "b sees a's export withdrawn", testkit.True(func() bool {
		return strings.Join(importOf(b.client.View(), chat), ",") == "b"
	}))
}

func TestKilledSpokeIsWithdrawnAfterItsLease(t *testing.T) {
	const ttl = 2 * time.Second
	h := hubtest.Start(t, ttl)
	a := startSpoke(t, h, "a", "us-east")
	b := startSpoke(t, h, "b", "us-west")
	b.client.SetInterest([]fleet.PoolRef{chat})
	a.client.SetExports([]fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}})
	a.client.SetCapacity([]fleet.PoolCapacity{{Pool: chat, ReadyEndpoints: 1, TotalEndpoints: 1}})
	testkit.Eventually(t, 5*time.Second, "b sees a's export", testkit.True(func() bool { return len(importOf(b.client.View(), chat)) == 1 }))

	a.stop()
	stopped := time.Now()
	// Damping: the export outlives the stream by the lease's TTL, counted from the lease's last
	// renewal. The hub renews every TTL/3, so the withdrawal comes no earlier than 2/3 of the TTL
	// after the stop; a withdrawal at the stream's end would come at once.
	testkit.Eventually(t, ttl+5*time.Second, "a's export withdrawn after the lease", testkit.True(func() bool {
		return len(importOf(b.client.View(), chat)) == 0 && len(b.client.View().Capacity(chat)) == 0
	}))
	if d := time.Since(stopped); d < ttl*2/3 {
		t.Fatalf("withdrawn %s after the spoke stopped, before its %s lease could lapse", d, ttl)
	}
	testkit.Eventually(t, 2*time.Second, "a is Gone", testkit.True(func() bool {
		for _, c := range b.client.View().Clusters() {
			if c.Info.ID == "a" {
				return c.State == fleet.StateGone
			}
		}
		return false
	}))
}

func TestReconnectResumesWithoutReplay(t *testing.T) {
	h := hubtest.Start(t, 10*time.Second)
	a := startSpoke(t, h, "a", "us-east")
	b := startSpoke(t, h, "b", "us-west")
	a.client.SetExports([]fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}})
	testkit.Eventually(t, 5*time.Second, "b sees a's export", testkit.True(func() bool { return len(importOf(b.client.View(), chat)) == 1 }))
	snapshots := func(s *spoke) float64 {
		return promtest.Value(t, s.reg, "spillway_spoke_view_updates_received_total", "snapshot")
	}
	if snapshots(a) != 1 || snapshots(b) != 1 {
		t.Fatalf("snapshots before the break: a=%v b=%v, want 1 each", snapshots(a), snapshots(b))
	}

	// Cut every stream and bring the same hub back on the same address.
	addr := h.Addr
	h.Stop()
	testkit.Eventually(t, 5*time.Second, "spokes notice the break", testkit.True(func() bool { return !a.client.Connected() && !b.client.Connected() }))
	// While the hub is away, the spoke's view stays (static stability) and local changes queue.
	if len(importOf(b.client.View(), chat)) != 1 {
		t.Fatal("b's view lost the import while the hub was away")
	}
	code := fleet.PoolRef{Namespace: "default", Name: "code"}
	a.client.SetExports([]fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}, {Pool: code, TargetPorts: []uint32{8000}}})
	h.Serve(addr)

	testkit.Eventually(t, 10*time.Second, "b sees a's new export after the reconnect", testkit.True(func() bool {
		return len(importOf(b.client.View(), code)) == 1 && len(importOf(b.client.View(), chat)) == 1
	}))
	if snapshots(a) != 1 || snapshots(b) != 1 {
		t.Fatalf("reconnect replayed the view: snapshots a=%v b=%v, want still 1", snapshots(a), snapshots(b))
	}
}

// TestRefusedExportsAreLeftOutAndTheSessionStays: an honest spoke whose operator marks a pool in
// a namespace the hub denies, then more pools than the hub's per-cluster cap, keeps its session.
// It leaves out what the hub's Welcome says it would refuse (and says so); its other exports and
// their capacity reach the other clusters, and the hub refuses nothing.
func TestRefusedExportsAreLeftOutAndTheSessionStays(t *testing.T) {
	h := hubtest.StartWith(t, 5*time.Second, hubtest.Options{Limits: server.Limits{
		DeniedExportNamespaces: server.DefaultDeniedExportNamespaces(),
		MaxExportsPerCluster:   2,
	}})
	a := startSpoke(t, h, "a", "us-east")
	b := startSpoke(t, h, "b", "us-west")
	denied := fleet.PoolRef{Namespace: "kube-system", Name: "chat"}
	code := fleet.PoolRef{Namespace: "default", Name: "code"}
	zed := fleet.PoolRef{Namespace: "default", Name: "zed"}
	b.client.SetInterest([]fleet.PoolRef{chat, code, denied, zed})
	exports := func(ps ...fleet.PoolRef) {
		var es []fleet.Export
		var caps []fleet.PoolCapacity
		for _, p := range ps {
			es = append(es, fleet.Export{Pool: p, TargetPorts: []uint32{8000}})
			caps = append(caps, fleet.PoolCapacity{Pool: p, ReadyEndpoints: 1, TotalEndpoints: 1, QueueDepth: 2})
		}
		a.client.SetExports(es)
		a.client.SetCapacity(caps)
	}
	refused := func(p fleet.PoolRef, rule string) func() error {
		return testkit.True(func() bool { return a.client.RefusedExports()[p].Rule == rule })
	}

	exports(chat, denied)
	testkit.Eventually(t, 10*time.Second, "b sees a's chat export with its capacity", testkit.True(func() bool {
		return strings.Join(importOf(b.client.View(), chat), ",") == "a" && len(b.client.View().Capacity(chat)) == 1
	}))
	testkit.Eventually(t, 5*time.Second, "a says why kube-system/chat is left out", refused(denied, fleet.RuleNamespace))
	if msg := a.client.RefusedExports()[denied].Message; !strings.Contains(msg, "namespace kube-system is denied for exports by the hub") {
		t.Errorf("the refusal says %q", msg)
	}

	// Beyond the cap: the first two pools in namespace/name order are exported, zed is left out.
	exports(chat, denied, zed, code)
	testkit.Eventually(t, 10*time.Second, "b sees a's code export", testkit.True(func() bool {
		return strings.Join(importOf(b.client.View(), code), ",") == "a" && len(b.client.View().Capacity(code)) == 1
	}))
	testkit.Eventually(t, 5*time.Second, "a says why default/zed is left out", refused(zed, fleet.RuleExportLimit))

	for _, p := range []fleet.PoolRef{denied, zed} {
		if got := importOf(b.client.View(), p); len(got) != 0 || len(b.client.View().Capacity(p)) != 0 {
			t.Errorf("b's view holds %s (exported by %v), which a left out", p, got)
		}
	}
	if !a.client.Connected() {
		t.Error("a lost its session")
	}
	if n := promtest.Value(t, a.reg, "spillway_spoke_hub_reconnects_total"); n != 0 {
		t.Errorf("a reconnected %v times: the hub ended its session", n)
	}
	for rule, want := range map[string]float64{fleet.RuleNamespace: 1, fleet.RuleExportLimit: 1} {
		if n := promtest.Value(t, a.reg, "spillway_spoke_exports_left_out", rule); n != want {
			t.Errorf("spillway_spoke_exports_left_out{rule=%s} = %v, want %v", rule, n, want)
		}
	}
	if n := promtest.Value(t, h.Registry, "spillway_hub_auth_denied_total", "namespace"); n != 0 {
		t.Errorf("the hub refused %v exports for their namespace", n)
	}
	if n := promtest.Value(t, h.Registry, "spillway_hub_limit_exceeded_total", "exports_per_cluster"); n != 0 {
		t.Errorf("the hub refused %v deltas for the export cap", n)
	}
}
