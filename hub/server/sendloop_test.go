package server

import (
	"context"
	"io"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/view"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// sentView is a view update as the hub sent it, with when.
type sentView struct {
	at time.Time
	u  *pb.ViewUpdate
}

// recordingStream is the hub's side of a Sync stream that keeps the view updates sent on it, as
// the spoke reads them off the wire.
type recordingStream struct {
	grpc.ServerStream
	views chan sentView
}

func (r *recordingStream) Send(m *pb.SyncResponse) error {
	b, err := proto.Marshal(m)
	if err != nil {
		return err
	}
	var got pb.SyncResponse
	if err := proto.Unmarshal(b, &got); err != nil {
		return err
	}
	if v := got.GetView(); v != nil {
		r.views <- sentView{at: time.Now(), u: v}
	}
	return nil
}

func (r *recordingStream) Recv() (*pb.SyncRequest, error) { return nil, io.EOF }

func (r *recordingStream) next(t *testing.T) sentView {
	t.Helper()
	select {
	case v := <-r.views:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("no view update within 10 s")
		return sentView{}
	}
}

// startSendLoop runs s's send loop for hello on a recording stream until the test ends.
func startSendLoop(t *testing.T, s *Server, hello *pb.Hello, interest chan []fleet.PoolRef) *recordingStream {
	st := &recordingStream{views: make(chan sentView, 16)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = s.sendLoop(ctx, st, hello, make(chan uint64), interest, nil, func() {}, nil) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return st
}

// TestInterestChangeIsPaced: a change of the stream's interest is answered with a snapshot at
// the next tick of ViewInterval, not at once, and changes in between go out together: at most
// one update per tick, so that a spoke cannot make the hub send snapshots as fast as it sends
// messages.
func TestInterestChangeIsPaced(t *testing.T) {
	const interval = 300 * time.Millisecond
	model := view.New()
	model.Reset(registry.State{})
	s := New(nil, model, Options{ViewInterval: interval})
	tick := func(v sentView) int64 { return int64(v.at.Sub(s.ticks.epoch) / interval) }
	interest := make(chan []fleet.PoolRef, 1)
	st := startSendLoop(t, s, &pb.Hello{}, interest)

	first := st.next(t)
	interest <- []fleet.PoolRef{{Namespace: "default", Name: "chat"}}
	second := st.next(t)
	if tick(second) <= tick(first) || !second.u.GetSnapshot() {
		t.Fatalf("the answer to an interest change came in tick %d, the last update's was %d (snapshot %v); want a snapshot in a later tick", tick(second), tick(first), second.u.GetSnapshot())
	}
	// Changes while an update waits for its tick are answered together.
	for _, p := range []string{"a", "b", "c"} {
		select {
		case <-interest:
		default:
		}
		interest <- []fleet.PoolRef{{Namespace: "default", Name: p}}
	}
	third := st.next(t)
	if tick(third) <= tick(second) {
		t.Fatalf("the next update came in tick %d, the last one's was %d", tick(third), tick(second))
	}
	select {
	case v := <-st.views:
		if tick(v) <= tick(third) {
			t.Fatalf("a fourth update came in tick %d, the third's was %d", tick(v), tick(third))
		}
	case <-time.After(2 * interval):
	}
}

// TestMarkLiftsWithADelta: a stream whose view went out marked incomplete learns that the
// mark lifted from a delta, not a snapshot (the spoke kept what the marked updates would have
// removed); a pool withdrawn meanwhile is in that delta's imports_removed.
func TestMarkLiftsWithADelta(t *testing.T) {
	model := view.New()
	model.Reset(registry.State{})
	model.Apply([]registry.Event{
		{Kind: registry.KindCluster, Cluster: "a", ClusterRecord: registry.ClusterRecord{Info: fleet.ClusterInfo{ID: "a", Region: "r"}}},
		{Kind: registry.KindExport, Cluster: "a", Export: fleet.Export{Pool: fleet.PoolRef{Namespace: "default", Name: "chat"}, TargetPorts: []uint32{8000}}},
	})
	s := New(nil, model, Options{ViewInterval: 20 * time.Millisecond})
	st := startSendLoop(t, s, &pb.Hello{ClusterId: "b"}, make(chan []fleet.PoolRef))
	if first := st.next(t); !first.u.GetSnapshot() || len(first.u.GetImports()) != 1 {
		t.Fatalf("first update: %v, want a snapshot with chat", first.u)
	}
	model.SetIncomplete("test", "a test mark")
	if v := st.next(t); !v.u.GetIncomplete() {
		t.Fatalf("after the mark: %v, want an update marked incomplete", v.u)
	}
	model.Apply([]registry.Event{{Kind: registry.KindExport, Cluster: "a", Deleted: true, Export: fleet.Export{Pool: fleet.PoolRef{Namespace: "default", Name: "chat"}}}})
	if v := st.next(t); !v.u.GetIncomplete() || len(v.u.GetImportsRemoved()) != 1 {
		t.Fatalf("after the withdrawal: %v, want chat removed, marked incomplete", v.u)
	}
	model.ClearIncomplete("test")
	v := st.next(t)
	if v.u.GetIncomplete() {
		t.Fatalf("after the mark lifted: %v, want an update without it", v.u)
	}
	if v.u.GetSnapshot() {
		t.Fatalf("the mark lifted with a snapshot: %v, want a delta", v.u)
	}
}

// TestSnapshotsOfATickAreShared: two streams that need a snapshot in the same tick get the
// same encoding of the fleet (one snapshot built for the tick and interest, the same cursor),
// each with the import states of its own pools only: a's snapshot has chat's states (a
// exports chat, b imports it), b's has none.
func TestSnapshotsOfATickAreShared(t *testing.T) {
	model := view.New()
	model.Reset(registry.State{})
	chat, code := fleet.PoolRef{Namespace: "default", Name: "chat"}, fleet.PoolRef{Namespace: "default", Name: "code"}
	var evs []registry.Event
	for _, c := range []struct {
		id   string
		pool fleet.PoolRef
	}{{"a", chat}, {"b", code}} {
		evs = append(evs,
			registry.Event{Kind: registry.KindCluster, Cluster: c.id, ClusterRecord: registry.ClusterRecord{Info: fleet.ClusterInfo{ID: c.id, Region: "r"}}},
			registry.Event{Kind: registry.KindSession, Cluster: c.id, Session: registry.SessionRecord{Cluster: c.id, HubID: "h"}},
			registry.Event{Kind: registry.KindExport, Cluster: c.id, Export: fleet.Export{Pool: c.pool, TargetPorts: []uint32{8000}}})
	}
	model.Apply(evs)
	model.ReportImports("b", []fleet.PoolImportStatus{{Pool: chat, Imported: true}})
	// A tick long enough for both first updates to fall in it.
	s := New(nil, model, Options{ViewInterval: time.Hour})
	a := startSendLoop(t, s, &pb.Hello{ClusterId: "a"}, make(chan []fleet.PoolRef))
	b := startSendLoop(t, s, &pb.Hello{ClusterId: "b"}, make(chan []fleet.PoolRef))
	ua, ub := a.next(t).u, b.next(t).u
	states := func(u *pb.ViewUpdate) map[string]int {
		out := map[string]int{}
		for _, imp := range u.GetImports() {
			out[imp.GetPool().GetName()] += len(imp.GetImporters())
		}
		return out
	}
	if !ua.GetSnapshot() || !ub.GetSnapshot() || ua.GetCursor().GetSeq() != ub.GetCursor().GetSeq() {
		t.Fatalf("first updates: a %v, b %v; want snapshots at one cursor", ua.GetCursor(), ub.GetCursor())
	}
	if got := states(ua); len(got) != 2 || got["chat"] != 1 || got["code"] != 0 {
		t.Errorf("a's snapshot: import states by pool %v, want chat with b's state and code without", got)
	}
	if got := states(ub); len(got) != 2 || got["chat"] != 0 || got["code"] != 0 {
		t.Errorf("b's snapshot: import states by pool %v, want both pools, neither with states", got)
	}
	s.ticks.mu.Lock()
	n := 0
	for k := range s.ticks.shared {
		if k.snapshot {
			n++
		}
	}
	s.ticks.mu.Unlock()
	if n != 1 {
		t.Errorf("%d snapshots built for the tick, want one for both streams", n)
	}
}

// TestCursorOfAnotherHubStartsAfresh: a spoke that resumes with the cursor of another hub
// incarnation (the hub restarted), further along than this view's, gets a snapshot and then
// every change as it comes, from this view's cursor.
func TestCursorOfAnotherHubStartsAfresh(t *testing.T) {
	const interval = 20 * time.Millisecond
	model := view.New()
	model.Reset(registry.State{})
	s := New(nil, model, Options{ViewInterval: interval})
	chat := fleet.PoolRef{Namespace: "default", Name: "chat"}
	st := startSendLoop(t, s, &pb.Hello{
		ClusterId:        "b",
		ViewCursor:       &pb.ViewCursor{HubIncarnation: "an-earlier-start", Seq: 1 << 40},
		CapacityInterest: []*pb.PoolRef{fleetpb.PoolRef(chat)},
	}, make(chan []fleet.PoolRef))

	if first := st.next(t); !first.u.GetSnapshot() || first.u.GetCursor().GetHubIncarnation() != model.Incarnation() {
		t.Fatalf("first update %v, want a snapshot of this view", first.u)
	}
	for i := range 3 {
		model.ReportCapacity("a", []fleet.PoolCapacity{{Pool: chat, QueueDepth: uint32(i + 1)}}, nil)
		for {
			v := st.next(t)
			if v.u.GetSnapshot() {
				t.Fatalf("another snapshot: %v", v.u)
			}
			if cs := v.u.GetCapacity(); len(cs) == 1 && cs[0].GetCapacity().GetQueueDepth() == uint32(i+1) {
				break
			}
		}
	}
}

// TestChangeAfterTheTickIsSent: every stream of a tick reads the view up to the seq the tick
// took when it began; a change that comes later in the tick goes out at the next one, also to a
// stream that reads the tick after the change (and so waits from a moment after it).
func TestChangeAfterTheTickIsSent(t *testing.T) {
	const interval = 200 * time.Millisecond
	model := view.New()
	model.Reset(registry.State{})
	s := New(nil, model, Options{ViewInterval: interval})
	chat := fleet.PoolRef{Namespace: "default", Name: "chat"}
	st := startSendLoop(t, s, &pb.Hello{ClusterId: "b", CapacityInterest: []*pb.PoolRef{fleetpb.PoolRef(chat)}}, make(chan []fleet.PoolRef))

	st.next(t)
	// The next tick takes its seq now, as the first stream to read it would; the change comes
	// after, and this stream reads that tick after the change.
	s.ticks.at(time.Now().Add(interval))
	model.ReportCapacity("a", []fleet.PoolCapacity{{Pool: chat, QueueDepth: 7}}, nil)
	for {
		v := st.next(t)
		if cs := v.u.GetCapacity(); len(cs) == 1 && cs[0].GetCapacity().GetQueueDepth() == 7 {
			return
		}
	}
}
