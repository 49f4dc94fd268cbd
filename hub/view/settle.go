package view

import "sort"

// Unsettled returns the registered clusters, revoked ones aside, that have no live session, or
// whose session has not stored its first export delta yet: after a start of the hub, those whose
// exports the registry may not hold yet.
func (m *Model) Unsettled() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []string
	for id := range m.state.Clusters {
		if _, revoked := m.state.Revocations[id]; revoked {
			continue
		}
		if sess, ok := m.state.Sessions[id]; !ok || sess.ExportSeq == 0 {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}
