package server

import (
	"fmt"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/view"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// fanoutModel returns a view with two clusters registered, each exporting pool-0 (and c01
// pool-2 too, then no more), c05's import state of pool-0, the capacity of 20 clusters × 3 pools,
// then one removal, and the seq before and after.
func fanoutModel(t *testing.T) (m *view.Model, from, to uint64) {
	t.Helper()
	m = view.New()
	m.Reset(registry.State{})
	from = m.Seq()
	export := func(id, pool string, deleted bool) registry.Event {
		return registry.Event{Kind: registry.KindExport, Cluster: id, Deleted: deleted, Export: fleet.Export{Pool: fleet.PoolRef{Namespace: "ns", Name: pool}, TargetPorts: []uint32{8000}}}
	}
	for _, id := range []string{"c00", "c01"} {
		m.Apply([]registry.Event{
			{Kind: registry.KindCluster, Cluster: id, ClusterRecord: registry.ClusterRecord{Info: fleet.ClusterInfo{ID: id, Region: "us-east"}}},
			export(id, "pool-0", false),
		})
	}
	m.Apply([]registry.Event{export("c01", "pool-2", false)})
	m.Apply([]registry.Event{export("c01", "pool-2", true)})
	m.ReportImports("c05", []fleet.PoolImportStatus{{Pool: fleet.PoolRef{Namespace: "ns", Name: "pool-0"}, Imported: true}})
	for i := range 20 {
		var caps []fleet.PoolCapacity
		for j := range 3 {
			caps = append(caps, fleet.PoolCapacity{
				Pool:           fleet.PoolRef{Namespace: "ns", Name: fmt.Sprintf("pool-%d", j)},
				ReadyEndpoints: uint32(i), TotalEndpoints: 50, QueueDepth: uint32(j), KVCacheUtilization: 0.25,
				Endpoints: []fleet.EndpointCapacity{{Address: fmt.Sprintf("10.0.%d.%d:8000", i, j), QueueDepth: 2}},
			})
		}
		m.ReportCapacity(fmt.Sprintf("c%02d", i), caps, nil)
	}
	m.ReportCapacity("c03", nil, []fleet.PoolRef{{Namespace: "ns", Name: "pool-1"}})
	return m, from, m.Seq()
}

// TestSharedViewUpdateIsTheUpdate: the shared capacity, encoded once and sent with each
// stream's own part and ages, parses to the same view update as the stream's own encoding,
// whole and in parts.
func TestSharedViewUpdateIsTheUpdate(t *testing.T) {
	m, from, to := fanoutModel(t)
	interest := []fleet.PoolRef{{Namespace: "ns", Name: "pool-0"}, {Namespace: "ns", Name: "pool-1"}}
	ticks := newTicks(m, time.Hour)
	if got := ticks.at(time.Now()); got != to {
		t.Fatalf("tick seq %d, want %d", got, to)
	}
	shared := ticks.capacity(m.Incarnation(), from, to, interestKey(interest), interestOf(interest))
	if !shared.ok || shared.empty() {
		t.Fatalf("no shared capacity: %+v", shared)
	}
	own, ok := m.DeltaFor(m.Incarnation(), from, to, view.Subscriber{Interest: interestOf(interest), Cluster: "c00", OwnOnly: true})
	if !ok || len(own.Imports) != 1 || len(own.Imports[0].Importers) != 1 {
		t.Fatalf("c00's own delta %+v, %v; want pool-0 with c05's import state", own, ok)
	}

	// What the stream's own encoding sends, with every age at now.
	now := time.Now().Add(1500 * time.Millisecond)
	sh, _ := m.SharedDelta(m.Incarnation(), from, to, interestOf(interest))
	if len(sh.Capacity) != 39 || len(sh.CapacityRemoved) != 1 || len(sh.Clusters) != 2 || len(sh.Imports) != 1 || len(sh.ImportsRemoved) != 1 {
		t.Fatalf("shared delta of %d entries, %d removals, %d clusters, %d imports and %d removed, want 39, 1, 2, 1 and 1",
			len(sh.Capacity), len(sh.CapacityRemoved), len(sh.Clusters), len(sh.Imports), len(sh.ImportsRemoved))
	}
	// pool-0 comes once: as the stream's own, with its states, not also as the shared one.
	if sh.Imports[0].Pool != own.Imports[0].Pool {
		t.Fatalf("shared import of %s, own of %s: want the same pool", sh.Imports[0].Pool, own.Imports[0].Pool)
	}
	want := viewUpdate(m.Incarnation(), own)
	for _, p := range sh.ImportsRemoved {
		want.ImportsRemoved = append(want.ImportsRemoved, fleetpb.PoolRef(p))
	}
	for _, cl := range sh.Clusters {
		want.Clusters = append(want.Clusters, fleetpb.Liveness(cl))
	}
	for _, rc := range sh.Capacity {
		want.Capacity = append(want.Capacity, fleetpb.RemoteCapacityAt(rc, now))
	}
	for _, k := range sh.CapacityRemoved {
		want.CapacityRemoved = append(want.CapacityRemoved, fleetpb.CapacityKey(k))
	}

	for _, limit := range []int{fleetpb.ViewPartBytes, 600} {
		parts := sharedViewUpdate(m.Incarnation(), own, shared, now, limit)
		got := &pb.ViewUpdate{}
		for i, p := range parts {
			b, err := proto.Marshal(&pb.SyncResponse{Msg: &pb.SyncResponse_View{View: p}})
			if err != nil {
				t.Fatal(err)
			}
			var parsed pb.SyncResponse
			if err := proto.Unmarshal(b, &parsed); err != nil {
				t.Fatalf("limit %d, part %d: %v", limit, i, err)
			}
			v := parsed.GetView()
			if len(v.ProtoReflect().GetUnknown()) != 0 {
				t.Fatalf("limit %d, part %d: fields the receiver does not know", limit, i)
			}
			if v.GetMore() != (i < len(parts)-1) {
				t.Fatalf("limit %d, part %d of %d: more = %v", limit, i, len(parts), v.GetMore())
			}
			if n := proto.Size(v); n > limit {
				t.Fatalf("limit %d, part %d: %d bytes", limit, i, n)
			}
			proto.Merge(got, v)
		}
		if limit < fleetpb.ViewPartBytes && len(parts) < 3 {
			t.Fatalf("limit %d: %d parts, want several", limit, len(parts))
		}
		got.More = false
		if !proto.Equal(got, want) {
			t.Fatalf("limit %d: the shared update differs from the stream's own:\n got %v\nwant %v", limit, got, want)
		}
	}
}

// TestStreamsOfATickShareTheCapacity: the streams of one tick with the same cursor and interest
// get the capacity encoded once; another interest, another cursor or the next tick, their own.
func TestStreamsOfATickShareTheCapacity(t *testing.T) {
	m, from, to := fanoutModel(t)
	all := []fleet.PoolRef{{Namespace: "ns", Name: "pool-0"}, {Namespace: "ns", Name: "pool-1"}, {Namespace: "ns", Name: "pool-2"}}
	reordered := []fleet.PoolRef{all[2], all[0], all[1], all[0]}
	ticks := newTicks(m, time.Hour)
	ticks.at(time.Now())
	inc := m.Incarnation()
	a := ticks.capacity(inc, from, to, interestKey(all), interestOf(all))
	if b := ticks.capacity(inc, from, to, interestKey(reordered), interestOf(reordered)); b != a {
		t.Error("two streams of the same interest (listed in another order) encoded the capacity twice")
	}
	if b := ticks.capacity(inc, from, to, interestKey(all[:1]), interestOf(all[:1])); b == a || len(b.entries) != 20 {
		t.Errorf("another interest shares the capacity of the first, or has %d entries, want 20", len(b.entries))
	}
	if b := ticks.capacity(inc, from+1, to, interestKey(all), interestOf(all)); b == a {
		t.Error("another cursor shares the capacity of the first")
	}
	m.ReportCapacity("c00", []fleet.PoolCapacity{{Pool: all[0]}}, nil)
	if s := ticks.at(time.Now().Add(time.Hour)); s != to+1 {
		t.Fatalf("next tick's seq %d, want %d", s, to+1)
	}
	if b := ticks.capacity(inc, from, to+1, interestKey(all), interestOf(all)); b == a {
		t.Error("the next tick shares the capacity of the one before")
	}
}

// BenchmarkTickToImporters: one tick of the fan-out at 1,000 spokes of 2 pools reporting every
// second with a 200 ms tick (400 capacity changes a tick), to 200 streams that want every pool:
// each stream's own encoding against the shared one. ns/op is one tick for all 200 streams.
func BenchmarkTickToImporters(b *testing.B) {
	const clusters, pools, streams = 1000, 2, 200
	m := view.New()
	m.Reset(registry.State{})
	var all []fleet.PoolRef
	for i := range clusters {
		for j := range pools {
			all = append(all, fleet.PoolRef{Namespace: fmt.Sprintf("c%04d", i), Name: fmt.Sprintf("pool-%d", j)})
		}
	}
	report := func(i int) {
		c := fmt.Sprintf("c%04d", i%clusters)
		m.ReportCapacity(c, []fleet.PoolCapacity{
			{Pool: all[(i%clusters)*pools], ReadyEndpoints: 50, TotalEndpoints: 50, QueueDepth: uint32(i % 7), KVCacheUtilization: 0.5, Saturation: 0.4},
			{Pool: all[(i%clusters)*pools+1], ReadyEndpoints: 50, TotalEndpoints: 50, QueueDepth: uint32(i % 5), KVCacheUtilization: 0.3, Saturation: 0.2},
		}, nil)
	}
	for i := range clusters {
		report(i)
	}
	interest := interestOf(all)
	key := interestKey(all)
	sub := view.Subscriber{Interest: interest, Cluster: "c0000"}
	send := func(v *pb.ViewUpdate) {
		if _, err := proto.Marshal(&pb.SyncResponse{Msg: &pb.SyncResponse_View{View: v}}); err != nil {
			b.Fatal(err)
		}
	}
	for _, shared := range []bool{false, true} {
		name := "own"
		if shared {
			name = "shared"
		}
		b.Run(name, func(b *testing.B) {
			ticks := newTicks(m, time.Hour)
			next := 0
			for b.Loop() {
				from := m.Seq()
				for range clusters / 5 { // 200 ms of 1,000 reports a second
					report(next)
					next++
				}
				ticks.at(time.Now().Add(time.Duration(next) * time.Hour))
				to := m.Seq()
				now := time.Now()
				for range streams {
					if !shared {
						u := m.SinceFor(m.Incarnation(), from, sub)
						for _, v := range fleetpb.SplitView(viewUpdate(m.Incarnation(), u), fleetpb.ViewPartBytes) {
							send(v)
						}
						continue
					}
					own := sub
					own.OwnOnly = true
					u, _ := m.DeltaFor(m.Incarnation(), from, to, own)
					c := ticks.capacity(m.Incarnation(), from, to, key, interest)
					for _, v := range sharedViewUpdate(m.Incarnation(), u, c, now, fleetpb.ViewPartBytes) {
						send(v)
					}
				}
			}
		})
	}
}
