package view

import (
	"fmt"
	"slices"
	"testing"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
)

func reasons(evs []Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.Cluster + ":" + e.Reason
	}
	return out
}

// TestEvents: the registry's changes and the capacity reports' spill and saturation changes are
// recorded once each, a cluster's events include its region's cordons, a pool's only its own, and
// the log keeps the newest when it is full.
func TestEvents(t *testing.T) {
	m := New()
	m.Reset(registry.State{}) // loaded: an empty fleet
	fleetOf(m, map[string]string{"a": "east"})
	fleetOf(m, map[string]string{"b": "west"})
	spilling := fleet.PoolCapacity{Pool: chat, Spilling: true, SpillTarget: "b", SpillTargetRegion: "west"}
	m.ReportCapacity("a", []fleet.PoolCapacity{spilling}, nil)
	m.ReportCapacity("a", []fleet.PoolCapacity{spilling}, nil) // no change: no event
	m.ReportCapacity("a", []fleet.PoolCapacity{{Pool: chat}}, nil)
	m.Apply([]registry.Event{{Kind: registry.KindCordon, Cordon: registry.Cordon{Scope: registry.CordonRegion, Name: "east", By: "admin"}}})
	m.Apply([]registry.Event{exportEvent("a", true), {Kind: registry.KindSession, Cluster: "a", Deleted: true}})
	m.Apply([]registry.Event{exportEvent("a", true)}) // already withdrawn: no event

	if got, want := reasons(m.Events("a", nil)), []string{"a:Registered", "a:Connected", "a:Exported", "a:SpillStarted", "a:SpillStopped",
		":Cordoned", "a:Withdrawn", "a:Disconnected"}; !slices.Equal(got, want) {
		t.Fatalf("a's events %v, want %v", got, want)
	}
	if got, want := reasons(m.Events("", &chat)), []string{"a:Exported", "b:Exported", "a:SpillStarted", "a:SpillStopped", "a:Withdrawn"}; !slices.Equal(got, want) {
		t.Fatalf("chat's events %v, want %v", got, want)
	}
	if got := reasons(m.Events("b", nil)); slices.Contains(got, ":Cordoned") {
		t.Fatalf("b, in west, got east's cordon: %v", got)
	}
	if e := m.Events("a", nil)[3]; e.Message != "pool default/chat spills to b (west)" || e.Region != "east" {
		t.Fatalf("spill event %+v", e)
	}

	// A full log keeps the newest events.
	small := New()
	small.events = eventLog{buf: make([]Event, 3)}
	for i := range 5 {
		small.Apply([]registry.Event{{Kind: registry.KindCluster, Cluster: fmt.Sprint("c", i), ClusterRecord: registry.ClusterRecord{Info: fleet.ClusterInfo{ID: fmt.Sprint("c", i)}}}})
	}
	if got, want := reasons(small.Events("", nil)), []string{"c2:Registered", "c3:Registered", "c4:Registered"}; !slices.Equal(got, want) {
		t.Fatalf("a full log holds %v, want %v", got, want)
	}
}
