package view

import (
	"slices"
	"testing"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
)

// TestCordonReachesItsClusters: a region's cordon changes every cluster of the region, and only
// those, for subscribers; a cluster's own cordon outlives its region's being lifted.
func TestCordonReachesItsClusters(t *testing.T) {
	m := New()
	fleetOf(m, map[string]string{"a": "east", "b": "east", "c": "west"})
	snap := m.Since("", 0, nil)
	cordon := func(scope registry.CordonScope, name string, deleted bool) Update {
		t.Helper()
		seq := m.Seq()
		m.Apply([]registry.Event{{Kind: registry.KindCordon, Deleted: deleted, Cordon: registry.Cordon{Scope: scope, Name: name}}})
		return m.Since(m.Incarnation(), seq, nil)
	}
	cordoned := func(u Update) []string {
		var out []string
		for _, c := range u.Clusters {
			if c.Cordoned {
				out = append(out, c.Info.ID)
			}
		}
		slices.Sort(out)
		return out
	}
	changed := func(u Update) []string {
		var out []string
		for _, c := range u.Clusters {
			out = append(out, c.Info.ID)
		}
		slices.Sort(out)
		return out
	}
	if len(cordoned(snap)) != 0 {
		t.Fatalf("cordoned before any cordon: %v", cordoned(snap))
	}

	u := cordon(registry.CordonRegion, "east", false)
	if got := changed(u); !slices.Equal(got, []string{"a", "b"}) || !slices.Equal(cordoned(u), got) {
		t.Fatalf("east cordoned: changed %v, cordoned %v; want a and b, both cordoned", got, cordoned(u))
	}
	u = cordon(registry.CordonCluster, "a", false)
	if got := changed(u); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("a cordoned: changed %v", got)
	}
	u = cordon(registry.CordonRegion, "east", true)
	if got, c := changed(u), cordoned(u); !slices.Equal(got, []string{"a", "b"}) || !slices.Equal(c, []string{"a"}) {
		t.Fatalf("east's cordon lifted: changed %v, cordoned %v; want a and b changed, a still cordoned by its own", got, c)
	}
	for id, want := range map[string]bool{"a": true, "b": false, "c": false} {
		if c, _ := m.Cluster(id); c.Cordoned != want {
			t.Errorf("cluster %s cordoned %v, want %v", id, c.Cordoned, want)
		}
	}
	if u := cordon(registry.CordonRegion, "nowhere", false); len(u.Clusters) != 0 {
		t.Fatalf("a region without clusters changed %v", changed(u))
	}
	// A cluster that registers in a cordoned region is cordoned.
	cordon(registry.CordonRegion, "west", false)
	m.Apply([]registry.Event{{Kind: registry.KindCluster, Cluster: "d", ClusterRecord: registry.ClusterRecord{Info: fleet.ClusterInfo{ID: "d", Region: "west"}}}})
	if c, _ := m.Cluster("d"); !c.Cordoned {
		t.Fatal("d registered in the cordoned region west but is not cordoned")
	}
}
