package hubclient

import (
	"bytes"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// syncBuffer is a log sink the tests read while the view writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testView is a view on a clock the test moves, with its log and metrics.
type testView struct {
	*View
	now  time.Time
	logs *syncBuffer
	reg  *prometheus.Registry
}

func newTestView(t *testing.T) *testView {
	t.Helper()
	tv := &testView{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), logs: &syncBuffer{}, reg: prometheus.NewRegistry()}
	tv.View = newView(slog.New(slog.NewTextHandler(tv.logs, nil)), newMetrics(tv.reg))
	tv.View.now = func() time.Time { return tv.now }
	t.Cleanup(tv.stop)
	return tv
}

func poolN(i int) fleet.PoolRef {
	return fleet.PoolRef{Namespace: "inference", Name: fmt.Sprintf("pool-%03d", i)}
}

// importsUpdate is a view update carrying the imports of pools from..to-1, exported by east.
func importsUpdate(snapshot, incomplete bool, from, to int) *pb.ViewUpdate {
	u := &pb.ViewUpdate{Snapshot: snapshot, Incomplete: incomplete, Cursor: &pb.ViewCursor{HubIncarnation: "h1"}}
	for i := from; i < to; i++ {
		u.Imports = append(u.Imports, fleetpb.Import(fleet.Import{Pool: poolN(i), ExportingClusters: []string{"east"}}))
	}
	return u
}

func removed(u *pb.ViewUpdate, pools ...int) *pb.ViewUpdate {
	for _, i := range pools {
		u.ImportsRemoved = append(u.ImportsRemoved, fleetpb.PoolRef(poolN(i)))
	}
	return u
}

func (tv *testView) pools() []fleet.PoolRef {
	var out []fleet.PoolRef
	for _, imp := range tv.Imports() {
		out = append(out, imp.Pool)
	}
	return out
}

func (tv *testView) wantImports(t *testing.T, what string, n int) {
	t.Helper()
	if got := len(tv.Imports()); got != n {
		t.Fatalf("%s: the view holds %d imports, want %d", what, got, n)
	}
}

func (tv *testView) held(reason string) float64 {
	return testutil.ToFloat64(tv.metrics.withdrawalsHeld.WithLabelValues(reason))
}

func TestIncompleteUpdatesRemoveNothing(t *testing.T) {
	tv := newTestView(t)
	tv.apply(importsUpdate(true, false, 0, 4))
	tv.apply(&pb.ViewUpdate{Snapshot: true, Cursor: &pb.ViewCursor{HubIncarnation: "h1"},
		Clusters: []*pb.ClusterLiveness{{ClusterId: "east"}, {ClusterId: "west"}}, Imports: importsUpdate(false, false, 0, 4).Imports})

	// An incomplete snapshot with pools 0 and 9 only and cluster east: merged, nothing removed.
	u := importsUpdate(true, true, 0, 1)
	u.Imports = append(u.Imports, importsUpdate(false, false, 9, 10).Imports...)
	u.Clusters = []*pb.ClusterLiveness{{ClusterId: "east"}}
	tv.apply(u)
	if tv.Complete() {
		t.Error("Complete() after an incomplete update = true")
	}
	tv.wantImports(t, "after an incomplete snapshot", 5)
	if got := len(tv.Clusters()); got != 2 {
		t.Errorf("after an incomplete snapshot: %d clusters, want both kept", got)
	}
	// An incomplete delta removing pool 1: kept.
	tv.apply(removed(importsUpdate(false, true, 0, 0), 1))
	tv.wantImports(t, "after an incomplete delta", 5)
	if w, _ := tv.HeldWithdrawals(); w != 3 || tv.held(heldIncomplete) != 3 {
		t.Errorf("waiting withdrawals %d (metric %v), want 3 (pools 1, 2, 3)", w, tv.held(heldIncomplete))
	}
	// Pool 2 comes back in an incomplete update: no longer waiting.
	tv.apply(importsUpdate(false, true, 2, 3))

	// The next complete update (a delta that mentions none of them) carries out what waited.
	tv.apply(importsUpdate(false, false, 0, 0))
	if !tv.Complete() {
		t.Error("Complete() after a complete update = false")
	}
	want := []fleet.PoolRef{poolN(0), poolN(2), poolN(9)}
	if got := tv.pools(); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("after the complete update: imports %v, want %v", got, want)
	}
	if got := len(tv.Clusters()); got != 1 {
		t.Errorf("after the complete update: %d clusters, want west removed", got)
	}
	if w, d := tv.HeldWithdrawals(); w != 0 || d != 0 {
		t.Errorf("held withdrawals %d, %d after the complete update, want none", w, d)
	}
}

// TestDeltaRemovesClusters: a delta's clusters_removed removes those clusters; marked
// incomplete, it removes nothing until the next complete update, as every withdrawal; the
// mark lifting comes as a delta, and a cluster that came back meanwhile stays.
func TestDeltaRemovesClusters(t *testing.T) {
	tv := newTestView(t)
	h1 := &pb.ViewCursor{HubIncarnation: "h1"}
	tv.apply(&pb.ViewUpdate{Snapshot: true, Cursor: h1,
		Clusters: []*pb.ClusterLiveness{{ClusterId: "east"}, {ClusterId: "west"}, {ClusterId: "north"}}})
	clusters := func() []string {
		var out []string
		for _, c := range tv.Clusters() {
			out = append(out, c.Info.ID)
		}
		slices.Sort(out)
		return out
	}
	tv.apply(&pb.ViewUpdate{Cursor: h1, ClustersRemoved: []string{"north"}})
	if got := clusters(); !slices.Equal(got, []string{"east", "west"}) {
		t.Fatalf("after a delta removing north: %v", got)
	}
	tv.apply(&pb.ViewUpdate{Cursor: h1, Incomplete: true, ClustersRemoved: []string{"east", "west"}})
	if got := clusters(); !slices.Equal(got, []string{"east", "west"}) {
		t.Fatalf("after an incomplete delta removing east and west: %v, want both kept", got)
	}
	tv.apply(&pb.ViewUpdate{Cursor: h1, Incomplete: true, Clusters: []*pb.ClusterLiveness{{ClusterId: "west"}}})
	tv.apply(&pb.ViewUpdate{Cursor: h1})
	if got := clusters(); !slices.Equal(got, []string{"west"}) {
		t.Fatalf("after the mark lifted: %v, want west alone (it came back)", got)
	}
}

func TestMassWithdrawalIsHeldForTheDamping(t *testing.T) {
	tv := newTestView(t)
	tv.setDamping(30 * time.Second)
	tv.apply(importsUpdate(true, false, 0, 20))
	changed := tv.Changed()

	// A complete snapshot with 5 of the 20: 15 withdrawals, more than half and more than 5.
	tv.apply(importsUpdate(true, false, 0, 5))
	tv.wantImports(t, "right after the mass withdrawal", 20)
	if _, d := tv.HeldWithdrawals(); d != 15 || tv.held(heldDamping) != 15 {
		t.Errorf("held %d (metric %v), want 15", d, tv.held(heldDamping))
	}
	if !strings.Contains(tv.logs.String(), "withdrawals=15") {
		t.Errorf("no warning with the count of held withdrawals in the log:\n%s", tv.logs)
	}
	select {
	case <-changed:
	default:
		t.Error("the view did not announce the update")
	}

	// Within the damping the hub brings 5 back (the registry reloaded); a delta confirms the
	// withdrawal of pool 19, which does not shorten the damping.
	tv.now = tv.now.Add(10 * time.Second)
	tv.apply(removed(importsUpdate(false, false, 5, 10), 19))
	tv.wantImports(t, "within the damping", 20)
	if _, d := tv.HeldWithdrawals(); d != 10 {
		t.Errorf("held %d within the damping, want 10 (pools 10-19)", d)
	}

	// The damping passes: the 10 still absent go.
	tv.now = tv.now.Add(20 * time.Second)
	tv.release()
	tv.wantImports(t, "after the damping", 10)
	if _, d := tv.HeldWithdrawals(); d != 0 || tv.held(heldDamping) != 0 {
		t.Errorf("held %d (metric %v) after the damping, want none", d, tv.held(heldDamping))
	}
}

func TestFewWithdrawalsAreNotHeld(t *testing.T) {
	for _, tc := range []struct {
		name     string
		imports  int
		withdraw int
		held     bool
	}{
		{"half of the view", 20, 10, false},
		{"more than half, but only five", 8, 5, false},
		{"more than half and six", 8, 6, true},
		{"every import of a small view", 3, 3, false},
		{"a few of many", 1000, 40, false},
		{"all of many", 1000, 1000, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tv := newTestView(t)
			tv.apply(importsUpdate(true, false, 0, tc.imports))
			tv.apply(importsUpdate(true, false, 0, tc.imports-tc.withdraw))
			want := tc.imports - tc.withdraw
			if tc.held {
				want = tc.imports
			}
			tv.wantImports(t, "after the snapshot", want)
		})
	}
}

// Withdrawals that come while others are held count with them: a view emptied in steps is held
// as one emptied at once.
func TestWithdrawalsInStepsAreHeldTogether(t *testing.T) {
	tv := newTestView(t)
	tv.apply(importsUpdate(true, false, 0, 20))
	tv.apply(importsUpdate(true, false, 0, 8)) // 12 of 20: held
	tv.apply(importsUpdate(true, false, 0, 4)) // 4 more, 16 in all
	tv.wantImports(t, "after two steps", 20)
	if _, d := tv.HeldWithdrawals(); d != 16 {
		t.Errorf("held %d, want 16", d)
	}
}

// A held withdrawal whose damping passes while the hub's view is incomplete waits for a
// complete update.
func TestHeldWithdrawalWaitsForACompleteView(t *testing.T) {
	tv := newTestView(t)
	tv.setDamping(time.Second)
	tv.apply(importsUpdate(true, false, 0, 10))
	tv.apply(importsUpdate(true, false, 0, 0))
	tv.apply(importsUpdate(false, true, 0, 0))
	tv.now = tv.now.Add(2 * time.Second)
	tv.mu.Lock()
	tv.timer.Stop() // the timer armed when the withdrawals were held: this test fires it itself
	tv.timer = nil
	tv.mu.Unlock()
	tv.release()
	tv.wantImports(t, "after the damping, the view incomplete", 10)
	// A release while the view is incomplete arms no timer (one due at once would fire again
	// and again until a complete update).
	tv.mu.Lock()
	armed := tv.timer != nil && tv.timer.Stop()
	tv.mu.Unlock()
	if armed {
		t.Error("a release while the view is incomplete armed the timer again")
	}
	tv.apply(importsUpdate(false, false, 0, 0))
	tv.wantImports(t, "at the next complete update", 0)
}

// The damping's timer carries out the held withdrawals without another update.
func TestHeldWithdrawalsTakeEffectOnTheirOwn(t *testing.T) {
	tv := newTestView(t)
	tv.View.now = time.Now
	tv.setDamping(200 * time.Millisecond)
	tv.apply(importsUpdate(true, false, 0, 10))
	tv.apply(importsUpdate(true, false, 0, 2))
	tv.wantImports(t, "right after", 10)
	testkit.Eventually(t, 5*time.Second, "the held withdrawals carried out", testkit.True(func() bool { return len(tv.Imports()) == 2 }))
}

func TestDampingIsTheLeaseTTLAtMostAMinute(t *testing.T) {
	for _, tc := range []struct{ ttl, want time.Duration }{
		{0, time.Minute}, {3 * time.Second, 3 * time.Second}, {10 * time.Minute, time.Minute},
	} {
		tv := newTestView(t)
		tv.setDamping(tc.ttl)
		if tv.damping != tc.want {
			t.Errorf("lease TTL %s: damping %s, want %s", tc.ttl, tv.damping, tc.want)
		}
	}
}

// A hub whose clock is 10 s off either way: the report's age decides its freshness, the hub's
// received_at never does.
func TestCapacityFreshnessOnTheSpokesClock(t *testing.T) {
	for _, skew := range []time.Duration{10 * time.Second, -10 * time.Second} {
		tv := newTestView(t)
		hubNow := tv.now.Add(skew)
		const age = 300 * time.Millisecond
		pool := poolN(1)
		tv.apply(&pb.ViewUpdate{Snapshot: true, Cursor: &pb.ViewCursor{HubIncarnation: "h1"}, Capacity: []*pb.RemoteCapacity{{
			ClusterId:  "east",
			Capacity:   fleetpb.Capacity(fleet.PoolCapacity{Pool: pool, ReadyEndpoints: 1}),
			ReceivedAt: timestamppb.New(hubNow.Add(-age)),
			Age:        durationpb.New(age),
		}, {
			// A hub that sends no age: received now, whatever its clock says.
			ClusterId:  "west",
			Capacity:   fleetpb.Capacity(fleet.PoolCapacity{Pool: pool, ReadyEndpoints: 1}),
			ReceivedAt: timestamppb.New(hubNow.Add(-time.Hour)),
		}}})
		caps := tv.Capacity(pool)
		if len(caps) != 2 {
			t.Fatalf("skew %s: %d reports, want 2", skew, len(caps))
		}
		if got := tv.now.Sub(caps[0].ReceivedAt); got != age {
			t.Errorf("skew %s: east's report is %s old on the spoke's clock, want %s", skew, got, age)
		}
		if got := tv.now.Sub(caps[1].ReceivedAt); got != 0 {
			t.Errorf("skew %s: west's report without age is %s old, want 0", skew, got)
		}
	}
}

// TestIncompleteUpdatesDropNoExporter: an incomplete update that gives a pool fewer exporting
// clusters than the view holds (the hub has not heard from the others yet) keeps them all; the
// next complete update sets the list it carries, or, for a pool it does not mention, the last
// list the incomplete updates gave.
func TestIncompleteUpdatesDropNoExporter(t *testing.T) {
	tv := newTestView(t)
	exporters := func(pool int, clusters ...string) *pb.Import {
		return fleetpb.Import(fleet.Import{Pool: poolN(pool), ExportingClusters: clusters})
	}
	tv.apply(&pb.ViewUpdate{Snapshot: true, Cursor: &pb.ViewCursor{HubIncarnation: "h1"},
		Imports: []*pb.Import{exporters(0, "east", "eu", "west"), exporters(1, "east", "west")}})
	tv.apply(&pb.ViewUpdate{Snapshot: true, Incomplete: true, Cursor: &pb.ViewCursor{HubIncarnation: "h2"},
		Imports: []*pb.Import{exporters(0, "west"), exporters(1, "west")}})
	want := func(what string, pool int, clusters ...string) {
		t.Helper()
		for _, imp := range tv.Imports() {
			if imp.Pool == poolN(pool) {
				if fmt.Sprint(imp.ExportingClusters) != fmt.Sprint(clusters) {
					t.Errorf("%s: pool %d exported by %v, want %v", what, pool, imp.ExportingClusters, clusters)
				}
				return
			}
		}
		t.Errorf("%s: pool %d missing", what, pool)
	}
	want("after the incomplete snapshot", 0, "east", "eu", "west")
	want("after the incomplete snapshot", 1, "east", "west")
	// east comes back while the view is still incomplete: still nobody dropped.
	tv.apply(&pb.ViewUpdate{Incomplete: true, Cursor: &pb.ViewCursor{HubIncarnation: "h2", Seq: 1},
		Imports: []*pb.Import{exporters(0, "east", "west")}})
	want("after east came back", 0, "east", "eu", "west")
	// The complete update carries pool 0 (eu is really gone) and not pool 1, whose last list
	// (west alone) takes effect.
	tv.apply(&pb.ViewUpdate{Cursor: &pb.ViewCursor{HubIncarnation: "h2", Seq: 2},
		Imports: []*pb.Import{exporters(0, "east", "west")}})
	want("after the complete update", 0, "east", "west")
	want("after the complete update", 1, "west")
}

// TestMassShrinkIsHeldWithTheWithdrawals: a cluster that vanishes from the hub's registry
// vanishes from every import it exported. The imports it alone exported are withdrawn, and
// those others export too are shrunk: the guard holds both, so the shared import keeps the
// cluster for the damping; then both take effect. A lone shrink takes effect at once.
func TestMassShrinkIsHeldWithTheWithdrawals(t *testing.T) {
	tv := newTestView(t)
	tv.setDamping(30 * time.Second)
	shared := func(clusters ...string) *pb.Import {
		return fleetpb.Import(fleet.Import{Pool: poolN(100), ExportingClusters: clusters})
	}
	u := importsUpdate(true, false, 0, 20) // pools 0-19 exported by east alone
	u.Imports = append(u.Imports, shared("east", "eu", "west"))
	tv.apply(u)
	exporters := func() string {
		for _, imp := range tv.Imports() {
			if imp.Pool == poolN(100) {
				return fmt.Sprint(imp.ExportingClusters)
			}
		}
		return "missing"
	}

	// east vanishes: 20 withdrawals and one shrink, held together.
	tv.apply(&pb.ViewUpdate{Snapshot: true, Cursor: &pb.ViewCursor{HubIncarnation: "h"}, Imports: []*pb.Import{shared("eu", "west")}})
	tv.wantImports(t, "right after east vanished", 21)
	if got := exporters(); got != "[east eu west]" {
		t.Fatalf("the shared pool is exported by %s right after east vanished, want east kept for the damping", got)
	}
	if _, d := tv.HeldWithdrawals(); d != 21 || tv.held(heldDamping) != 21 {
		t.Fatalf("held %d (metric %v), want 21", d, tv.held(heldDamping))
	}

	// The damping passes: east goes from everything.
	tv.now = tv.now.Add(30 * time.Second)
	tv.release()
	tv.wantImports(t, "after the damping", 1)
	if got := exporters(); got != "[eu west]" {
		t.Fatalf("the shared pool is exported by %s after the damping, want [eu west]", got)
	}
	if _, d := tv.HeldWithdrawals(); d != 0 {
		t.Fatalf("held %d after the damping", d)
	}

	// A lone shrink is ordinary churn: at once.
	tv.apply(&pb.ViewUpdate{Cursor: &pb.ViewCursor{HubIncarnation: "h", Seq: 1}, Imports: []*pb.Import{shared("west")}})
	if got := exporters(); got != "[west]" {
		t.Fatalf("after a lone shrink the shared pool is exported by %s, want [west]", got)
	}
}

// TestWithdrawnAfterAnIncompleteShrink: a pool whose exporter list an incomplete update shrank
// (the union kept, the list waiting) and that a complete update then withdraws is gone, and
// nothing else appears in its place.
func TestWithdrawnAfterAnIncompleteShrink(t *testing.T) {
	tv := newTestView(t)
	exporters := func(pool int, clusters ...string) *pb.Import {
		return fleetpb.Import(fleet.Import{Pool: poolN(pool), ExportingClusters: clusters})
	}
	tv.apply(&pb.ViewUpdate{Snapshot: true, Cursor: &pb.ViewCursor{HubIncarnation: "h"},
		Imports: []*pb.Import{exporters(0, "east", "west"), exporters(1, "east")}})
	tv.apply(&pb.ViewUpdate{Incomplete: true, Cursor: &pb.ViewCursor{HubIncarnation: "h", Seq: 1},
		Imports: []*pb.Import{exporters(0, "west")}})
	tv.apply(&pb.ViewUpdate{Snapshot: true, Cursor: &pb.ViewCursor{HubIncarnation: "h", Seq: 2},
		Imports: []*pb.Import{exporters(1, "east")}})
	got := tv.Imports()
	if len(got) != 1 || got[0].Pool != poolN(1) {
		t.Fatalf("imports %+v, want pool 1 alone", got)
	}
	if _, d := tv.HeldWithdrawals(); d != 0 {
		t.Fatalf("held %d", d)
	}
}
