package view

import (
	"fmt"
	"slices"
	"testing"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
)

var chat = fleet.PoolRef{Namespace: "default", Name: "chat"}

// sessionEvents are the registry events of a session, on hub "h", for each of clusters.
func sessionEvents(clusters ...string) []registry.Event {
	evs := make([]registry.Event, 0, len(clusters))
	for _, c := range clusters {
		evs = append(evs, registry.Event{Kind: registry.KindSession, Cluster: c, Session: registry.SessionRecord{Cluster: c, HubID: "h"}})
	}
	return evs
}

func exportEvent(cluster string, deleted bool) registry.Event {
	return registry.Event{Kind: registry.KindExport, Cluster: cluster, Deleted: deleted, Export: fleet.Export{Pool: chat, TargetPorts: []uint32{8000}}}
}

func TestSinceDeliversChangesOnce(t *testing.T) {
	m := New()
	m.Apply([]registry.Event{
		{Kind: registry.KindCluster, Cluster: "a", ClusterRecord: registry.ClusterRecord{Info: fleet.ClusterInfo{ID: "a", Region: "r"}}},
		{Kind: registry.KindSession, Cluster: "a", Session: registry.SessionRecord{Cluster: "a", HubID: "h"}},
		exportEvent("a", false),
	})
	snap := m.Since("", 0, nil)
	if !snap.Snapshot || len(snap.Imports) != 1 || len(snap.Clusters) != 1 || snap.Clusters[0].State != fleet.StateAlive {
		t.Fatalf("first call must be a snapshot of everything: %+v", snap)
	}
	if u := m.Since(m.Incarnation(), snap.Seq, nil); !u.Empty() {
		t.Fatalf("nothing changed, got %+v", u)
	}

	m.Apply([]registry.Event{exportEvent("b", false), exportEvent("a", true)})
	m.ReportCapacity("b", []fleet.PoolCapacity{{Pool: chat, QueueDepth: 3}}, nil)
	u := m.Since(m.Incarnation(), snap.Seq, func(p fleet.PoolRef) bool { return p == chat })
	if u.Snapshot || len(u.Imports) != 1 || u.Imports[0].ExportingClusters[0] != "b" || len(u.Imports[0].ExportingClusters) != 1 {
		t.Fatalf("import delta %+v: want chat exported by b alone, once", u)
	}
	if len(u.Capacity) != 1 || u.Capacity[0].Capacity.QueueDepth != 3 {
		t.Fatalf("capacity delta %+v", u.Capacity)
	}
	if u2 := m.Since(m.Incarnation(), snap.Seq, func(fleet.PoolRef) bool { return false }); len(u2.Capacity) != 0 {
		t.Fatalf("capacity outside the interest was delivered: %+v", u2.Capacity)
	}

	m.Apply([]registry.Event{exportEvent("b", true)})
	u3 := m.Since(m.Incarnation(), u.Seq, nil)
	if len(u3.ImportsRemoved) != 1 || u3.ImportsRemoved[0] != chat {
		t.Fatalf("last exporter gone: %+v", u3)
	}

	// A session lapsing drops the cluster's capacity and marks it Gone.
	m.Apply([]registry.Event{{Kind: registry.KindSession, Cluster: "b", Deleted: true}})
	m.Apply([]registry.Event{{Kind: registry.KindCluster, Cluster: "b", ClusterRecord: registry.ClusterRecord{Info: fleet.ClusterInfo{ID: "b"}}}})
	u4 := m.Since(m.Incarnation(), u3.Seq, nil)
	if len(u4.CapacityRemoved) != 1 || u4.CapacityRemoved[0].ClusterID != "b" {
		t.Fatalf("capacity of a gone cluster: %+v", u4)
	}
	if c, _ := m.Cluster("b"); c.State != fleet.StateGone {
		t.Fatalf("cluster b state %v", c.State)
	}

	// A cluster deleted from the registry: the delta says so, the shared one too.
	m.Apply([]registry.Event{{Kind: registry.KindCluster, Cluster: "b", Deleted: true}})
	u5 := m.Since(m.Incarnation(), u4.Seq, nil)
	if !slices.Equal(u5.ClustersRemoved, []string{"b"}) || len(u5.Clusters) != 0 {
		t.Fatalf("delta after b's deletion: %+v, want b removed", u5)
	}
	if sh, ok := m.SharedDelta(m.Incarnation(), u4.Seq, u5.Seq, nil); !ok || !slices.Equal(sh.ClustersRemoved, []string{"b"}) {
		t.Fatalf("shared delta after b's deletion: %+v (%v), want b removed", sh, ok)
	}
}

func TestCursorOutsideTheLogGetsASnapshot(t *testing.T) {
	m := New()
	m.logSize = 8
	m.Apply([]registry.Event{exportEvent("a", false)})
	old := m.Since("", 0, nil).Seq
	for range 20 {
		m.ReportCapacity("a", []fleet.PoolCapacity{{Pool: chat}}, nil)
	}
	if u := m.Since(m.Incarnation(), old, nil); !u.Snapshot {
		t.Fatal("a cursor that fell out of the log must get a snapshot")
	}
	if u := m.Since("another-hub", m.Since(m.Incarnation(), 0, nil).Seq, nil); !u.Snapshot {
		t.Fatal("a cursor of another incarnation must get a snapshot")
	}
	cur := m.Since(m.Incarnation(), 0, nil).Seq
	m.Reset(registry.State{})
	if u := m.Since(m.Incarnation(), cur, nil); !u.Snapshot || len(u.Imports) != 0 {
		t.Fatalf("after a reload every cursor needs a snapshot: %+v", u)
	}
}

func TestImportReportsReachTheImportAndLeaveWithTheSession(t *testing.T) {
	m := New()
	m.Apply(append(sessionEvents("a", "b"),
		exportEvent("a", false),
	))
	cur := m.Since("", 0, nil).Seq
	m.ReportImports("b", []fleet.PoolImportStatus{{Pool: chat, Reason: "NamespaceNotFound", Message: "namespace default is missing"}})
	m.ReportImports("a", []fleet.PoolImportStatus{{Pool: chat, Imported: true}})
	u := m.Since(m.Incarnation(), cur, nil)
	if len(u.Imports) != 1 {
		t.Fatalf("import reports must change the import once: %+v", u)
	}
	want := []fleet.ImportStatus{{ClusterID: "a", Imported: true}, {ClusterID: "b", Reason: "NamespaceNotFound", Message: "namespace default is missing"}}
	if got := u.Imports[0].Importers; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("importers %+v, want %+v", got, want)
	}
	// The same report again changes nothing.
	m.ReportImports("a", []fleet.PoolImportStatus{{Pool: chat, Imported: true}})
	if u2 := m.Since(m.Incarnation(), u.Seq, nil); !u2.Empty() {
		t.Fatalf("an unchanged report produced %+v", u2)
	}
	// b's session lapses: its report goes with it.
	m.Apply([]registry.Event{{Kind: registry.KindSession, Cluster: "b", Deleted: true}})
	u3 := m.Since(m.Incarnation(), u.Seq, nil)
	if len(u3.Imports) != 1 || len(u3.Imports[0].Importers) != 1 || u3.Imports[0].Importers[0].ClusterID != "a" {
		t.Fatalf("after b's session lapsed: %+v", u3.Imports)
	}
}

// TestImportStatesGoToTheExportersOnly: a spoke's stream receives the import states of the
// pools its cluster exports, the ones it sets the Exported condition from; a change of another
// pool's states sends it nothing, and that pool's import comes to it without states. The admin
// watch (no cluster) receives every state, unless it asks for none.
func TestImportStatesGoToTheExportersOnly(t *testing.T) {
	m := New()
	other := fleet.PoolRef{Namespace: "default", Name: "other"}
	m.Apply(append(sessionEvents("a", "b"),
		exportEvent("a", false),
		registry.Event{Kind: registry.KindExport, Cluster: "b", Export: fleet.Export{Pool: other, TargetPorts: []uint32{8000}}},
	))
	forA, forB, admin := Subscriber{Cluster: "a"}, Subscriber{Cluster: "b"}, Subscriber{}
	curA, curB, curAdmin := m.SinceFor("", 0, forA).Seq, m.SinceFor("", 0, forB).Seq, m.SinceFor("", 0, admin).Seq
	m.ReportImports("b", []fleet.PoolImportStatus{{Pool: chat, Imported: true}})

	if u := m.SinceFor(m.Incarnation(), curA, forA); len(u.Imports) != 1 || len(u.Imports[0].Importers) != 1 {
		t.Fatalf("a exports chat: %+v, want chat with b's state", u.Imports)
	}
	if u := m.SinceFor(m.Incarnation(), curB, forB); !u.Empty() {
		t.Fatalf("b does not export chat, yet received %+v", u)
	}
	if u := m.SinceFor(m.Incarnation(), curAdmin, admin); len(u.Imports) != 1 || len(u.Imports[0].Importers) != 1 {
		t.Fatalf("the admin watch: %+v, want chat with b's state", u.Imports)
	}
	// A watcher of pools asks for no states: neither a's pool nor b's comes with them.
	for _, imp := range m.SinceFor("", 0, Subscriber{NoStates: true}).Imports {
		if len(imp.Importers) != 0 {
			t.Fatalf("a watch without states: %+v", imp)
		}
	}
	snap := m.SinceFor("", 0, forB)
	for _, imp := range snap.Imports {
		if imp.Pool == chat && (len(imp.Importers) != 0 || len(imp.ExportingClusters) != 1) {
			t.Fatalf("b's snapshot of chat: %+v, want its exporter without states", imp)
		}
	}
	// A change of who exports reaches everyone: b starts exporting chat and gets its states.
	m.Apply([]registry.Event{exportEvent("b", false)})
	u := m.SinceFor(m.Incarnation(), snap.Seq, forB)
	if len(u.Imports) != 1 || len(u.Imports[0].ExportingClusters) != 2 || len(u.Imports[0].Importers) != 1 {
		t.Fatalf("b now exports chat: %+v, want both exporters and b's own state", u.Imports)
	}
}

// TestDeltaForStopsAtItsEnd: DeltaFor and SharedDelta give the changes after from up to to,
// none after; OwnOnly gives the imports, with their states, of the pools the subscriber's
// cluster exports, SharedDelta the rest (imports without states); a range the log no longer
// holds, or an empty one, is not ok.
func TestDeltaForStopsAtItsEnd(t *testing.T) {
	m := New()
	m.Reset(registry.State{})
	m.logSize = 8
	inc := m.Incarnation()
	s0 := m.Seq()
	m.ReportCapacity("a", []fleet.PoolCapacity{{Pool: chat, QueueDepth: 1}}, nil)
	s1 := m.Seq()
	m.Apply([]registry.Event{
		{Kind: registry.KindCluster, Cluster: "b", ClusterRecord: registry.ClusterRecord{Info: fleet.ClusterInfo{ID: "b", Region: "r"}}},
		exportEvent("b", false),
	})
	m.ReportCapacity("b", []fleet.PoolCapacity{{Pool: chat, QueueDepth: 2}}, nil)
	s2 := m.Seq()
	exporter := Subscriber{Cluster: "b", OwnOnly: true}
	u, ok := m.DeltaFor(inc, s0, s2, exporter)
	if !ok || len(u.Capacity) != 0 || len(u.Clusters) != 0 || len(u.Imports) != 1 || len(u.Imports[0].Importers) != 0 {
		t.Fatalf("DeltaFor(s0, s2), b's own = %+v, %v; want b's export alone", u, ok)
	}
	m.ReportImports("c", []fleet.PoolImportStatus{{Pool: chat, Imported: true}})
	s3 := m.Seq()
	// chat changed again after s2: b gets it as it is now, and again with the next range.
	if u, ok := m.DeltaFor(inc, s0, s2, exporter); !ok || len(u.Imports) != 1 || len(u.Imports[0].Importers) != 1 {
		t.Fatalf("DeltaFor(s0, s2), b's own, after a later change = %+v, %v; want chat with c's state", u, ok)
	}

	u, ok = m.DeltaFor(inc, s0, s1, Subscriber{})
	if !ok || u.Seq != s1 || len(u.Capacity) != 1 || u.Capacity[0].ClusterID != "a" || len(u.Imports) != 0 {
		t.Fatalf("DeltaFor(s0, s1) = %+v, %v; want a's capacity alone, seq %d", u, ok, s1)
	}
	if u, ok := m.DeltaFor(inc, s1, s1+1, Subscriber{}); !ok || len(u.Clusters) != 1 || len(u.Imports) != 0 {
		t.Fatalf("DeltaFor(s1, s1+1) = %+v, %v; want b's cluster alone", u, ok)
	}
	u, ok = m.DeltaFor(inc, s2, s3, exporter)
	if !ok || len(u.Imports) != 1 || len(u.Imports[0].Importers) != 1 || u.Imports[0].Importers[0].ClusterID != "c" {
		t.Fatalf("DeltaFor(s2, s3), b's own = %+v, %v; want chat with c's import state", u, ok)
	}
	if u, ok := m.DeltaFor(inc, s0, s3, Subscriber{Cluster: "a", OwnOnly: true}); !ok || !u.Empty() {
		t.Fatalf("DeltaFor(s0, s3), a's own = %+v, %v; want nothing (a exports nothing)", u, ok)
	}
	u, ok = m.SharedDelta(inc, s0, s3, func(p fleet.PoolRef) bool { return p == chat })
	if !ok || len(u.Capacity) != 2 || len(u.Clusters) != 1 || len(u.Imports) != 1 || len(u.Imports[0].Importers) != 0 {
		t.Fatalf("SharedDelta(s0, s3) = %+v, %v; want a's and b's capacity, b's cluster and chat without states", u, ok)
	}
	if u, ok := m.SharedDelta(inc, s2, s3, nil); !ok || !u.Empty() {
		t.Fatalf("SharedDelta(s2, s3) = %+v, %v; want nothing (import states are the exporters' own)", u, ok)
	}
	if u, ok := m.SharedDelta(inc, s0, s2, func(fleet.PoolRef) bool { return false }); !ok || len(u.Capacity) != 0 || len(u.Clusters) != 1 {
		t.Fatalf("SharedDelta(s0, s2) of no pool = %+v, %v; want b's cluster and chat's import", u, ok)
	}
	if _, ok := m.DeltaFor(inc, s2, s2, Subscriber{}); ok {
		t.Error("an empty range is ok")
	}
	if _, ok := m.DeltaFor("another", s0, s2, Subscriber{}); ok {
		t.Error("a cursor of another incarnation is ok")
	}
	for i := range 20 {
		m.ReportCapacity("a", []fleet.PoolCapacity{{Pool: chat, QueueDepth: uint32(i)}}, nil)
	}
	if _, ok := m.SharedDelta(inc, s0, m.Seq(), nil); ok {
		t.Error("a range the log no longer holds is ok")
	}
}

// TestImportIsBuiltAfresh: the import of a pool, with its states, is built once and kept until
// it changes; every way it can change shows at the next read, and a reader's copy is its own.
func TestImportIsBuiltAfresh(t *testing.T) {
	m := New()
	m.Apply(append(sessionEvents("a", "b"),
		exportEvent("a", false),
	))
	// describe says what Import(chat) holds: its exporters, then each importer and its state.
	describe := func() string {
		imp, ok := m.Import(chat)
		if !ok {
			return "none"
		}
		s := fmt.Sprint(imp.ExportingClusters)
		for _, st := range imp.Importers {
			s += fmt.Sprintf(" %s:%v", st.ClusterID, st.Imported)
		}
		return s
	}
	steps := []struct {
		name string
		do   func()
		want string
	}{
		{"nothing reported", func() {}, "[a]"},
		{"b imports", func() { m.ReportImports("b", []fleet.PoolImportStatus{{Pool: chat, Imported: true}}) }, "[a] b:true"},
		{"b's state changes", func() { m.ReportImports("b", []fleet.PoolImportStatus{{Pool: chat, Reason: "Conflict"}}) }, "[a] b:false"},
		{"a peer's cluster imports", func() { m.MergeImports("hub-2", "c", []fleet.PoolImportStatus{{Pool: chat, Imported: true}}) }, "[a] b:false c:true"},
		{"b exports too", func() { m.Apply([]registry.Event{exportEvent("b", false)}) }, "[a b] b:false c:true"},
		{"b's report leaves the pool out", func() { m.ReportImports("b", nil) }, "[a b] c:true"},
		{"c's session on the peer ends", func() { m.EndImports("hub-2", "c") }, "[a b]"},
		{"a imports, then its session lapses", func() {
			m.ReportImports("a", []fleet.PoolImportStatus{{Pool: chat, Imported: true}})
			if got := describe(); got != "[a b] a:true" {
				t.Errorf("after a imports: %s", got)
			}
			m.Apply([]registry.Event{{Kind: registry.KindSession, Cluster: "a", Deleted: true}})
		}, "[a b]"},
		{"the registry reloads without b's export", func() {
			m.Reset(registry.State{
				Clusters: map[string]registry.ClusterRecord{"a": {}, "b": {}},
				Sessions: map[string]registry.SessionRecord{"b": {Cluster: "b", HubID: "h"}},
				Exports:  map[string]map[fleet.PoolRef]fleet.Export{"a": {chat: {Pool: chat}}},
			})
		}, "[a]"},
	}
	for _, st := range steps {
		st.do()
		if got := describe(); got != st.want {
			t.Fatalf("%s: import %s, want %s", st.name, got, st.want)
		}
	}
	m.ReportImports("b", []fleet.PoolImportStatus{{Pool: chat, Imported: true}})
	imp, _ := m.Import(chat)
	imp.ExportingClusters[0], imp.Importers[0].Imported = "x", false
	if got := describe(); got != "[a] b:true" {
		t.Fatalf("a reader's copy wrote the model's: %s", got)
	}
}
