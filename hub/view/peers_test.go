package view

import (
	"slices"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pkg/fleet"
)

// TestPeerReportsByOrigin: what a peer replica streamed is merged as if local, stays out of
// what this replica streams to its peers, is removed only by the peer that sent it, and goes
// with that peer.
func TestPeerReportsByOrigin(t *testing.T) {
	m := New()
	now := time.Now()
	m.ReportCapacity("local", []fleet.PoolCapacity{{Pool: chat, QueueDepth: 1}}, nil)
	m.ReportImports("local", []fleet.PoolImportStatus{{Pool: chat, Imported: true}})
	m.ReplaceOrigin("hub-2", []fleet.RemoteCapacity{{ClusterID: "far", Capacity: fleet.PoolCapacity{Pool: chat, QueueDepth: 2}, ReceivedAt: now.Add(-time.Second)}},
		map[string][]fleet.PoolImportStatus{"far": {{Pool: chat, Imported: false, Reason: "NamespaceNotFound"}}})

	snap := m.Since("", 0, nil)
	if len(snap.Capacity) != 2 {
		t.Fatalf("the view holds %d capacity reports, want the local and the peer's", len(snap.Capacity))
	}
	for _, rc := range snap.Capacity {
		if rc.ClusterID == "far" && !rc.ReceivedAt.Equal(now.Add(-time.Second)) {
			t.Errorf("the peer's report was received at %s, want its own receipt time less its age", rc.ReceivedAt)
		}
	}

	local := m.LocalSince("", 0)
	if !local.Snapshot || len(local.Capacity) != 1 || local.Capacity[0].ClusterID != "local" || len(local.Imports) != 1 || local.Imports["local"] == nil {
		t.Fatalf("LocalSince snapshot %+v: want the local spoke's reports alone", local)
	}

	// A removal by another replica than the one that sent the report removes nothing.
	m.MergeCapacity("hub-3", nil, []fleet.CapacityKey{{ClusterID: "far", Pool: chat}})
	if got := len(m.Since("", 0, nil).Capacity); got != 2 {
		t.Fatalf("hub-3 removed hub-2's report: %d left", got)
	}
	// An older report does not replace a newer one.
	m.MergeCapacity("hub-3", []fleet.RemoteCapacity{{ClusterID: "far", Capacity: fleet.PoolCapacity{Pool: chat, QueueDepth: 9}, ReceivedAt: now.Add(-time.Minute)}}, nil)
	for _, rc := range m.Since("", 0, nil).Capacity {
		if rc.ClusterID == "far" && rc.Capacity.QueueDepth != 2 {
			t.Fatalf("an older report replaced a newer one: queue %d", rc.Capacity.QueueDepth)
		}
	}

	// A late removal from the cluster's old session on this replica leaves the report that its
	// newer session on hub-2 sent.
	m.ReportCapacity("far", nil, []fleet.PoolRef{chat})
	if got := len(m.Since("", 0, nil).Capacity); got != 2 {
		t.Fatalf("a local removal dropped the report hub-2 holds: %d left", got)
	}

	seq := local.Seq
	m.DropOrigin("hub-2")
	snap = m.Since("", 0, nil)
	if len(snap.Capacity) != 1 || snap.Capacity[0].ClusterID != "local" {
		t.Fatalf("after hub-2 left the view holds %+v, want the local report alone", snap.Capacity)
	}
	// The peers are told of nothing: hub-2's reports were never this replica's.
	if u := m.LocalSince(m.Incarnation(), seq); len(u.Capacity) != 0 || len(u.Imports) != 0 {
		t.Fatalf("LocalSince after a peer left = %+v, want no local report", u)
	}
}

// TestLocalSinceFollowsLocalReports: deltas of the local spokes' reports for the peers.
func TestLocalSinceFollowsLocalReports(t *testing.T) {
	m := New()
	first := m.LocalSince("", 0)
	m.ReportCapacity("a", []fleet.PoolCapacity{{Pool: chat, QueueDepth: 4}}, nil)
	m.ReportImports("a", []fleet.PoolImportStatus{{Pool: chat, Imported: true}})
	u := m.LocalSince(m.Incarnation(), first.Seq)
	if u.Snapshot || len(u.Capacity) != 1 || u.Capacity[0].Capacity.QueueDepth != 4 || len(u.Imports["a"]) != 1 {
		t.Fatalf("delta %+v", u)
	}
	m.ReportCapacity("a", nil, []fleet.PoolRef{chat})
	u2 := m.LocalSince(m.Incarnation(), u.Seq)
	if !slices.Equal(u2.CapacityRemoved, []fleet.CapacityKey{{ClusterID: "a", Pool: chat}}) {
		t.Fatalf("removal delta %+v", u2)
	}
}

// TestIncompleteMarks: the marks show in every update until each reason is lifted.
func TestIncompleteMarks(t *testing.T) {
	m := New()
	if m.Since("", 0, nil).Incomplete {
		t.Fatal("a new view is marked incomplete")
	}
	wake := m.Changed()
	m.SetIncomplete(IncompleteRegistry, "watch broken")
	select {
	case <-wake:
	default:
		t.Fatal("setting a mark woke no subscriber")
	}
	m.SetIncomplete("peers", "waiting for hub-2")
	if u := m.Since(m.Incarnation(), 0, nil); !u.Incomplete {
		t.Fatal("an update while marked is not incomplete")
	}
	if got := m.Incomplete(); !slices.Equal(got, []string{"waiting for hub-2", "watch broken"}) {
		t.Fatalf("Incomplete() = %q", got)
	}
	m.ClearIncomplete(IncompleteRegistry)
	if !m.Since("", 0, nil).Incomplete {
		t.Fatal("one mark lifted of two, and the view says complete")
	}
	m.ClearIncomplete("peers")
	if m.Since("", 0, nil).Incomplete || m.Incomplete() != nil {
		t.Fatal("every mark lifted, and the view says incomplete")
	}
}
