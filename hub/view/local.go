package view

import (
	"github.com/spillway-io/spillway/pkg/fleet"
)

// LocalUpdate is what changed of the reports of this replica's own spokes, for the other
// replicas (PeerService): their capacity and import reports, without what peers streamed here.
type LocalUpdate struct {
	Seq      uint64
	Snapshot bool
	Capacity []fleet.RemoteCapacity
	// CapacityRemoved are keys whose local report is gone (removed, lapsed, or now held from a
	// peer); a receiver removes them only if it holds them from this replica.
	CapacityRemoved []fleet.CapacityKey
	// Imports are clusters' import reports, each replacing the cluster's previous one.
	Imports map[string][]fleet.PoolImportStatus
	// ImportsEnded are clusters whose local import report is gone.
	ImportsEnded []string
}

// Empty reports whether the update carries nothing.
func (u LocalUpdate) Empty() bool {
	return !u.Snapshot && len(u.Capacity) == 0 && len(u.CapacityRemoved) == 0 && len(u.Imports) == 0 && len(u.ImportsEnded) == 0
}

// LocalSince is Since for the reports of this replica's own spokes: what changed after seq (of
// this incarnation), or a snapshot of them when that is no longer known.
func (m *Model) LocalSince(incarnation string, seq uint64) LocalUpdate {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if incarnation != m.incarnation || seq+1 < m.logStart || seq > m.seq {
		u := LocalUpdate{Seq: m.seq, Snapshot: true, Imports: map[string][]fleet.PoolImportStatus{}}
		for k, rc := range m.capacity {
			if _, peer := m.capOrigin[k]; !peer {
				u.Capacity = append(u.Capacity, rc)
			}
		}
		sortCapacity(u.Capacity)
		for cluster := range m.importers {
			if _, peer := m.importOrigin[cluster]; !peer {
				u.Imports[cluster] = m.importerLocked(cluster)
			}
		}
		return u
	}
	u := LocalUpdate{Seq: m.seq}
	start := int(seq + 1 - m.logStart)
	if start >= len(m.log) {
		return u
	}
	seenCap := map[fleet.CapacityKey]bool{}
	seenImp := map[string]bool{}
	for _, c := range m.log[start:] {
		switch c.kind {
		case changeCapacity:
			k := fleet.CapacityKey{ClusterID: c.cluster, Pool: c.pool}
			if seenCap[k] {
				continue
			}
			seenCap[k] = true
			_, peer := m.capOrigin[k]
			if rc, ok := m.capacity[k]; ok && !peer {
				u.Capacity = append(u.Capacity, rc)
			} else {
				u.CapacityRemoved = append(u.CapacityRemoved, k)
			}
		case changeImporter:
			if seenImp[c.cluster] {
				continue
			}
			seenImp[c.cluster] = true
			_, peer := m.importOrigin[c.cluster]
			if _, ok := m.importers[c.cluster]; ok && !peer {
				if u.Imports == nil {
					u.Imports = map[string][]fleet.PoolImportStatus{}
				}
				u.Imports[c.cluster] = m.importerLocked(c.cluster)
			} else {
				u.ImportsEnded = append(u.ImportsEnded, c.cluster)
			}
		}
	}
	return u
}

func (m *Model) importerLocked(cluster string) []fleet.PoolImportStatus {
	out := make([]fleet.PoolImportStatus, 0, len(m.importers[cluster]))
	for _, st := range m.importers[cluster] {
		out = append(out, st)
	}
	return out
}
