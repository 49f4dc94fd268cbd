package view

import (
	"fmt"
	"slices"
	"time"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
)

// DefaultEventLogSize bounds the events the view keeps.
const DefaultEventLogSize = 4096

// Event reasons, CamelCase as Kubernetes events name theirs.
const (
	EventRegistered   = "Registered"
	EventConnected    = "Connected"
	EventDisconnected = "Disconnected"
	EventDeleted      = "Deleted"
	EventExported     = "Exported"
	EventWithdrawn    = "Withdrawn"
	EventCordoned     = "Cordoned"
	EventUncordoned   = "Uncordoned"
	EventSpillStarted = "SpillStarted"
	EventSpillStopped = "SpillStopped"
	EventSaturated    = "Saturated"
	EventUnsaturated  = "Unsaturated"
)

// Event is one change of the fleet that an operator asks about: a cluster that registered,
// connected or went, a pool exported or withdrawn, a cordon, a pool that started or stopped
// spilling or saturating. The view keeps the last DefaultEventLogSize; each replica keeps its own
// (the registry's from its watch, the capacity's from the reports it receives or merges), and a
// restarted replica starts with none.
type Event struct {
	Time    time.Time
	Cluster string         // empty for a region's cordon
	Region  string         // the cluster's, or the cordoned region
	Pool    *fleet.PoolRef // set for a pool's events
	Reason  string
	Message string
}

// eventLog is a ring of events, oldest first once read.
type eventLog struct {
	buf  []Event
	next int
	full bool
}

func (l *eventLog) add(e Event) {
	if len(l.buf) == 0 {
		return
	}
	l.buf[l.next] = e
	l.next = (l.next + 1) % len(l.buf)
	if l.next == 0 {
		l.full = true
	}
}

func (l *eventLog) all() []Event {
	if !l.full {
		return slices.Clone(l.buf[:l.next])
	}
	return append(slices.Clone(l.buf[l.next:]), l.buf[:l.next]...)
}

// Events returns the events of a cluster (cluster set), of a pool (pool set), of both, or all,
// oldest first. A cluster's events include its region's cordons.
func (m *Model) Events(cluster string, pool *fleet.PoolRef) []Event {
	m.mu.RLock()
	defer m.mu.RUnlock()
	region := ""
	if rec, ok := m.state.Clusters[cluster]; ok {
		region = rec.Info.Region
	}
	var out []Event
	for _, e := range m.events.all() {
		if cluster != "" && e.Cluster != cluster && !(e.Cluster == "" && e.Region == region && region != "") {
			continue
		}
		if pool != nil && (e.Pool == nil || *e.Pool != *pool) {
			continue
		}
		out = append(out, e)
	}
	return out
}

// eventOf records what a registry event changed, before the state applies it (prev is the state
// before); m.mu is held.
func (m *Model) eventOf(ev registry.Event, now time.Time) {
	region := func(id string) string {
		if ev.Kind == registry.KindCluster && !ev.Deleted {
			return ev.ClusterRecord.Info.Region
		}
		return m.state.Clusters[id].Info.Region
	}
	add := func(reason, msg string, pool *fleet.PoolRef) {
		m.events.add(Event{Time: now, Cluster: ev.Cluster, Region: region(ev.Cluster), Pool: pool, Reason: reason, Message: msg})
	}
	switch ev.Kind {
	case registry.KindCluster:
		_, known := m.state.Clusters[ev.Cluster]
		switch {
		case ev.Deleted && known:
			add(EventDeleted, "the cluster's record was deleted from the registry", nil)
		case !ev.Deleted && !known:
			add(EventRegistered, fmt.Sprintf("registered in region %s", ev.ClusterRecord.Info.Region), nil)
		}
	case registry.KindSession:
		prev, had := m.state.Sessions[ev.Cluster]
		switch {
		case ev.Deleted && had:
			add(EventDisconnected, fmt.Sprintf("its session on hub %s ended (its spoke went, or its lease lapsed)", prev.HubID), nil)
		case !ev.Deleted && (!had || prev.HubID != ev.Session.HubID || prev.SpokeIncarnation != ev.Session.SpokeIncarnation):
			add(EventConnected, fmt.Sprintf("its spoke holds a session on hub %s", ev.Session.HubID), nil)
		}
	case registry.KindExport:
		pool := ev.Export.Pool
		_, had := m.state.Exports[ev.Cluster][pool]
		switch {
		case ev.Deleted && had:
			add(EventWithdrawn, fmt.Sprintf("pool %s is no longer exported", pool), &pool)
		case !ev.Deleted && !had:
			add(EventExported, fmt.Sprintf("pool %s exported", pool), &pool)
		}
	case registry.KindCordon:
		key := registry.CordonKey(ev.Cordon.Scope, ev.Cordon.Name)
		_, had := m.state.Cordons[key]
		e := Event{Time: now, Cluster: ev.Cordon.Name}
		what := "the cluster"
		if ev.Cordon.Scope == registry.CordonRegion {
			e.Cluster, e.Region, what = "", ev.Cordon.Name, "region "+ev.Cordon.Name
		} else {
			e.Region = m.state.Clusters[ev.Cordon.Name].Info.Region
		}
		switch {
		case ev.Deleted && had:
			e.Reason, e.Message = EventUncordoned, what+" is a spill target again"
		case !ev.Deleted && !had:
			e.Reason, e.Message = EventCordoned, fmt.Sprintf("%s is no spill target (cordoned by %s)", what, ev.Cordon.By)
		default:
			return
		}
		m.events.add(e)
	}
}

// capacityEvent records what a new capacity report changed of its pool's spill and saturation
// state; m.mu is held.
func (m *Model) capacityEvent(cluster string, prev *fleet.RemoteCapacity, next fleet.PoolCapacity, now time.Time) {
	was := fleet.PoolCapacity{}
	if prev != nil {
		was = prev.Capacity
	}
	if next.Spilling == was.Spilling && next.Saturated == was.Saturated {
		return // the common case, on every report: nothing to record
	}
	pool := next.Pool
	add := func(reason, msg string) {
		m.events.add(Event{Time: now, Cluster: cluster, Region: m.state.Clusters[cluster].Info.Region, Pool: &pool, Reason: reason, Message: msg})
	}
	switch {
	case next.Spilling && !was.Spilling:
		add(EventSpillStarted, fmt.Sprintf("pool %s spills to %s (%s)", pool, dashIfEmpty(next.SpillTarget), dashIfEmpty(next.SpillTargetRegion)))
	case !next.Spilling && was.Spilling:
		add(EventSpillStopped, fmt.Sprintf("pool %s serves its traffic locally again", pool))
	}
	switch {
	case next.Saturated && !was.Saturated:
		add(EventSaturated, fmt.Sprintf("pool %s saturated (saturation %.2f, %d ready endpoints, queue %d)", pool, next.Saturation, next.ReadyEndpoints, next.QueueDepth))
	case !next.Saturated && was.Saturated:
		add(EventUnsaturated, fmt.Sprintf("pool %s has headroom again (saturation %.2f)", pool, next.Saturation))
	}
}

func dashIfEmpty(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// ptrIf returns &v when ok, else nil.
func ptrIf[T any](v T, ok bool) *T {
	if !ok {
		return nil
	}
	return &v
}
