package view

import "sort"

// Unsettled returns the registered clusters, revoked ones aside, that have no live session, or
// whose session has not stored its first export delta yet: after a start of the hub, those whose
// exports the registry may not hold yet. A session counts as live while the replica incarnation
// that opened it is among hubs (hub ID → incarnation, the registry of replicas): the session of
// a replica that died keeps its record until its lease lapses, and a spoke that has not found
// another replica by then loses its exports. Records without a hub incarnation count as live.
func (m *Model) Unsettled(hubs map[string]string) []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []string
	for id := range m.state.Clusters {
		if _, revoked := m.state.Revocations[id]; revoked {
			continue
		}
		sess, ok := m.state.Sessions[id]
		if !ok || sess.ExportSeq == 0 || (sess.HubIncarnation != "" && hubs[sess.HubID] != sess.HubIncarnation) {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}
