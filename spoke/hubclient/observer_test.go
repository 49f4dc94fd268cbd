package hubclient

import (
	"slices"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

func (h *fakeHub) hello(i int) *pb.Hello {
	h.mu.Lock()
	defer h.mu.Unlock()
	if i >= len(h.hellos) {
		return nil
	}
	return h.hellos[i]
}

func (h *fakeHub) counts() (registers, hellos, afterObserver, deltas, imports, reports int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.registers, len(h.hellos), h.afterObserver, len(h.deltas), len(h.imports), len(h.reportsAt)
}

// An observer's Hello says so and carries the interest; it registers nothing and sends nothing
// after its Hello, whatever the spoke sets. Switching to a full session is prompt (no backoff),
// keeps the view and sends what was set meanwhile; switching back is an observer again.
func TestObserverSessions(t *testing.T) {
	h := startFakeHub(t)
	chat := fleet.PoolRef{Namespace: "default", Name: "chat"}
	c := h.client(t, "east", "east")
	// Any wait of the backoff would exceed the bounds below.
	c.opts.MinBackoff, c.opts.MaxBackoff = 5*time.Second, 10*time.Second
	c.SetObserver(true)
	c.SetExports(exportsOf(chat))
	c.SetCapacity(capacityOf(chat))
	c.SetImportStatus([]fleet.PoolImportStatus{{Pool: chat, Imported: true}})
	c.SetInterest([]fleet.PoolRef{chat})
	run(t, c)
	testkit.Eventually(t, 5*time.Second, "an observer session", testkit.True(func() bool { return c.Connected() && h.hello(0) != nil }))
	hello := h.hello(0)
	if !hello.GetObserver() {
		t.Fatal("the first Hello is not an observer's")
	}
	if got := poolsFrom(hello.GetCapacityInterest()); !slices.Equal(got, []fleet.PoolRef{chat}) {
		t.Errorf("the observer's Hello asks for the capacity of %v, want [chat]", got)
	}
	// The view flows down.
	h.push <- &pb.SyncResponse{Msg: &pb.SyncResponse_View{View: &pb.ViewUpdate{
		Cursor: &pb.ViewCursor{HubIncarnation: "h1", Seq: 7}, Snapshot: true,
		Imports: []*pb.Import{fleetpb.Import(fleet.Import{Pool: chat, ExportingClusters: []string{"west"}})},
	}}}
	testkit.Eventually(t, 5*time.Second, "the view in observer mode", testkit.True(func() bool { return len(c.View().Imports()) == 1 }))

	// The interest changes: a new Hello carries it (an observer sends no Interest message).
	code := fleet.PoolRef{Namespace: "default", Name: "code"}
	c.SetInterest([]fleet.PoolRef{chat, code})
	testkit.Eventually(t, 5*time.Second, "a second observer Hello with the new interest", testkit.True(func() bool {
		hl := h.hello(1)
		return hl != nil && hl.GetObserver() && len(hl.GetCapacityInterest()) == 2
	}))
	if got := h.hello(1).GetViewCursor(); got.GetHubIncarnation() != "h1" || got.GetSeq() != 7 {
		t.Errorf("the new observer Hello resumes the view from %v, want h1/7", got)
	}
	if registers, _, after, deltas, imports, reports := h.counts(); registers != 0 || after != 0 || deltas != 0 || imports != 0 || reports != 0 {
		t.Fatalf("in observer mode the hub saw %d registrations and %d messages after the Hello (%d export deltas, %d import reports, %d capacity reports), want none",
			registers, after, deltas, imports, reports)
	}

	// Leadership gained: a full session at once, with the view kept.
	switched := time.Now()
	c.SetObserver(false)
	testkit.Eventually(t, 2*time.Second, "a full session with the exports, capacity and import reports", testkit.True(func() bool {
		registers, hellos, _, deltas, imports, reports := h.counts()
		return registers == 1 && hellos == 3 && deltas > 0 && imports > 0 && reports > 0 && c.Connected()
	}))
	if took := time.Since(switched); took > 2*time.Second {
		t.Errorf("the full session took %s", took)
	}
	if hl := h.hello(2); hl.GetObserver() || hl.GetViewCursor().GetSeq() != 7 {
		t.Errorf("the full session's Hello: observer %v, cursor %v; want a full one resuming h1/7", hl.GetObserver(), hl.GetViewCursor())
	}
	if len(c.View().Imports()) != 1 {
		t.Error("the view was lost in the switch")
	}
	wantStored(t, h, "the exports set in observer mode", pools(chat))

	// Leadership lost: an observer again, at once.
	c.SetObserver(true)
	testkit.Eventually(t, 2*time.Second, "an observer session again", testkit.True(func() bool {
		hl := h.hello(3)
		return hl != nil && hl.GetObserver() && c.Connected()
	}))
	if !c.Observer() {
		t.Error("Observer() = false after SetObserver(true)")
	}
}
