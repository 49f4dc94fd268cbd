// Package view is the hub's in-memory fleet view: the registry as last read from etcd (clusters,
// sessions, exports), the imports computed from it, and the capacity reports the spokes stream in.
//
// Every change gets a sequence number in a bounded change log. A subscriber (a spoke's sync stream,
// an admin watch) remembers the last sequence number it has seen and asks for what changed since;
// when its position has fallen out of the log, or the view was reloaded, it gets a snapshot. The
// same mechanism resumes a reconnecting spoke without a full replay when it returns to the same hub
// incarnation in time.
//
// A new model is empty and not loaded: it holds the registry only after its first full load
// (Follow's, or a Reset), and Loaded, FirstLoad and WaitLoaded tell when. Nothing may be served
// from it before, since an empty view is not an empty fleet: a spoke that took it for one would
// delete every import it manages.
package view

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/clock"
	"github.com/spillway-io/spillway/pkg/fleet"
)

// DefaultLogSize bounds the change log.
const DefaultLogSize = 1 << 16

type changeKind uint8

const (
	// changeImport is a change of the clusters that export a pool (or its end).
	changeImport changeKind = iota + 1
	changeCluster
	changeCapacity
	// changeImporter is a change of one cluster's import report (for LocalSince; spokes see
	// import reports through changeImportStatus of each pool).
	changeImporter
	// changeImportStatus is a change of one pool's import states (Import.Importers), which
	// only the subscribers that export the pool receive.
	changeImportStatus
)

type change struct {
	seq     uint64
	kind    changeKind
	cluster string
	pool    fleet.PoolRef
}

// Model is the fleet view. It is safe for concurrent use.
type Model struct {
	incarnation string
	logSize     int
	now         func() time.Time

	mu       sync.RWMutex
	state    registry.State
	imports  map[fleet.PoolRef][]string // pool → sorted exporting clusters
	capacity map[fleet.CapacityKey]fleet.RemoteCapacity
	// importers holds what each live cluster last reported of its InferencePoolImports.
	importers map[string]map[fleet.PoolRef]fleet.PoolImportStatus
	// poolStates holds the same by pool: the states of each pool, by cluster.
	poolStates map[fleet.PoolRef]map[string]fleet.PoolImportStatus
	// built holds each pool's import with its states, sorted, as importLocked returns it, until
	// the pool's import or states change (record drops it). Readers under the read lock fill it,
	// so builtMu guards it; the slices it holds are shared and never written.
	builtMu sync.Mutex
	built   map[fleet.PoolRef]fleet.Import
	// capOrigin and importOrigin name the hub replica a report came through: absent for this
	// replica's own spokes, a peer's hub ID for what a peer streamed (Merge*).
	capOrigin    map[fleet.CapacityKey]string
	importOrigin map[string]string
	// incomplete holds why the view cannot vouch that it holds the whole registry and fleet
	// (reason → message); empty when it can.
	incomplete map[string]string
	seq        uint64
	// importChanged holds the seq of the last change of each pool's import or its states.
	importChanged map[fleet.PoolRef]uint64
	log           []change
	logStart      uint64 // seq of log[0]; a cursor below logStart-1 needs a snapshot
	wake          chan struct{}
	// loaded is closed by the first Reset: until then the view holds nothing of the registry, and
	// an empty fleet in it means only that it has not been read yet.
	loaded chan struct{}
	// events are the recent changes an operator asks about (Events).
	events eventLog

	// While Batch runs, ReportCapacity and ReportImports queue reports in pending (pendingMu
	// guards it) and Batch applies them together: a thousand spokes reporting every second
	// would otherwise take the write lock a thousand times a second, each time waiting for
	// every reader to leave, and the registry's changes would queue behind them.
	batching  atomic.Bool
	pendingMu sync.Mutex
	pending   []report
	flushNow  chan struct{}
}

// report is a report of ReportCapacity (imports nil) or ReportImports waiting for Batch.
type report struct {
	cluster string
	caps    []fleet.PoolCapacity
	removed []fleet.PoolRef
	at      time.Time
	imports *[]fleet.PoolImportStatus
}

// New returns an empty model with a fresh incarnation.
func New() *Model {
	var b [8]byte
	_, _ = rand.Read(b[:])
	m := &Model{
		incarnation:   hex.EncodeToString(b[:]),
		logSize:       DefaultLogSize,
		now:           clock.Now,
		capacity:      map[fleet.CapacityKey]fleet.RemoteCapacity{},
		importers:     map[string]map[fleet.PoolRef]fleet.PoolImportStatus{},
		poolStates:    map[fleet.PoolRef]map[string]fleet.PoolImportStatus{},
		built:         map[fleet.PoolRef]fleet.Import{},
		capOrigin:     map[fleet.CapacityKey]string{},
		importOrigin:  map[string]string{},
		incomplete:    map[string]string{},
		importChanged: map[fleet.PoolRef]uint64{},
		wake:          make(chan struct{}),
		loaded:        make(chan struct{}),
		flushNow:      make(chan struct{}, 1),
		logStart:      1,
		events:        eventLog{buf: make([]Event, DefaultEventLogSize)},
	}
	m.reset(registry.State{})
	return m
}

// Incarnation identifies this model; cursors from another incarnation need a snapshot.
func (m *Model) Incarnation() string { return m.incarnation }

// Loaded reports whether the view holds a full load of the registry (its first Reset happened).
// Before, the view is empty whatever the registry holds: nothing may be served from it.
func (m *Model) Loaded() bool {
	select {
	case <-m.loaded:
		return true
	default:
		return false
	}
}

// FirstLoad returns a channel that is closed once the view holds its first full load of the
// registry; a Since after that returns the loaded state.
func (m *Model) FirstLoad() <-chan struct{} { return m.loaded }

// WaitLoaded waits until the view holds its first full load of the registry, or ctx ends (then
// it returns ctx's cause).
func (m *Model) WaitLoaded(ctx context.Context) error {
	select {
	case <-m.loaded:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Reset replaces the registry part of the view (after a full load from etcd); the first one
// marks the view loaded. Every subscriber receives a snapshot next.
func (m *Model) Reset(st registry.State) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flushLocked()
	m.reset(st)
	if !m.Loaded() {
		close(m.loaded) // under mu: whoever sees it closed then reads the loaded state
	}
	for k := range m.capacity {
		if _, ok := st.Sessions[k.ClusterID]; !ok {
			m.deleteCapacity(k)
		}
	}
	for id := range m.importers {
		if _, ok := st.Sessions[id]; !ok {
			m.deleteImporter(id)
		}
	}
	m.seq++
	m.log = m.log[:0]
	m.logStart = m.seq + 1
	clear(m.importChanged) // no cursor from before needs them
	m.builtMu.Lock()
	clear(m.built) // the exporters came from the registry, not through record
	m.builtMu.Unlock()
	m.signal()
}

func (m *Model) reset(st registry.State) {
	if st.Clusters == nil {
		st = registry.State{
			Clusters: map[string]registry.ClusterRecord{},
			Sessions: map[string]registry.SessionRecord{},
			Exports:  map[string]map[fleet.PoolRef]fleet.Export{},
		}
	}
	m.state = st
	m.imports = map[fleet.PoolRef][]string{}
	for cluster, exports := range st.Exports {
		for pool := range exports {
			m.imports[pool] = append(m.imports[pool], cluster)
		}
	}
	for _, cs := range m.imports {
		sort.Strings(cs)
	}
}

// Revision returns the etcd revision the view reflects.
func (m *Model) Revision() int64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.state.Revision
}

// Apply applies registry events from a watch, after the reports queued before them.
func (m *Model) Apply(evs []registry.Event) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.flushLocked()
	now := m.now().UTC()
	for _, ev := range evs {
		m.eventOf(ev, now)
		m.state.Apply(ev)
		if ev.Revision > m.state.Revision {
			m.state.Revision = ev.Revision
		}
		switch ev.Kind {
		case registry.KindCluster:
			m.record(change{kind: changeCluster, cluster: ev.Cluster})
		case registry.KindSession:
			m.record(change{kind: changeCluster, cluster: ev.Cluster})
			if ev.Deleted {
				for k := range m.capacity {
					if k.ClusterID == ev.Cluster {
						m.deleteCapacity(k)
						m.record(change{kind: changeCapacity, cluster: k.ClusterID, pool: k.Pool})
					}
				}
				m.dropImporter(ev.Cluster)
			}
		case registry.KindExport:
			pool := ev.Export.Pool
			cs := slices.DeleteFunc(slices.Clone(m.imports[pool]), func(c string) bool { return c == ev.Cluster })
			if !ev.Deleted {
				cs = append(cs, ev.Cluster)
				sort.Strings(cs)
			}
			if len(cs) == 0 {
				delete(m.imports, pool)
			} else {
				m.imports[pool] = cs
			}
			m.record(change{kind: changeImport, pool: pool})
			m.record(change{kind: changeCluster, cluster: ev.Cluster})
		case registry.KindCordon:
			// The clusters it covers change: the cluster, or every one of the region.
			for id, rec := range m.state.Clusters {
				if ev.Cordon.Scope == registry.CordonCluster && id == ev.Cordon.Name ||
					ev.Cordon.Scope == registry.CordonRegion && rec.Info.Region == ev.Cordon.Name {
					m.record(change{kind: changeCluster, cluster: id})
				}
			}
		}
	}
	m.signal()
}

// ReportCapacity stores capacity reports of a cluster connected to this replica, received now:
// at once, or while Batch runs with the next batch (in the order they came).
func (m *Model) ReportCapacity(cluster string, caps []fleet.PoolCapacity, removed []fleet.PoolRef) {
	m.report(report{cluster: cluster, caps: caps, removed: removed, at: m.now()})
}

// report applies r at once, or queues it for Batch while Batch runs.
func (m *Model) report(r report) {
	if m.batching.Load() {
		m.pendingMu.Lock()
		m.pending = append(m.pending, r)
		m.pendingMu.Unlock()
		select {
		case m.flushNow <- struct{}{}:
		default: // a batch is due already
		}
		if !m.batching.Load() {
			m.flush() // Batch stopped meanwhile: nobody else will
		}
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.applyReport(r)
	m.signal()
}

func (m *Model) applyReport(r report) {
	if r.imports != nil {
		m.setImporter("", r.cluster, *r.imports)
	} else {
		m.reportCapacity(r)
	}
}

// flushLocked applies the queued reports before a change that must come after them (a session
// that ends drops what its cluster reported before). Callers hold mu.
func (m *Model) flushLocked() {
	m.pendingMu.Lock()
	batch := m.pending
	m.pending = nil
	m.pendingMu.Unlock()
	for _, r := range batch {
		m.applyReport(r)
	}
}

// Batch applies the reports ReportCapacity and ReportImports queue until ctx ends, together:
// each batch holds what came while the one before waited for the write lock. Without it
// running, each report is applied at once.
func (m *Model) Batch(ctx context.Context) error {
	m.batching.Store(true)
	defer func() {
		m.batching.Store(false)
		m.flush()
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-m.flushNow:
			m.flush()
		}
	}
}

func (m *Model) flush() {
	m.pendingMu.Lock()
	batch := m.pending
	m.pending = nil
	m.pendingMu.Unlock()
	if len(batch) == 0 {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range batch {
		m.applyReport(r)
	}
	m.signal()
}

func (m *Model) reportCapacity(r report) {
	for _, c := range r.caps {
		k := fleet.CapacityKey{ClusterID: r.cluster, Pool: c.Pool}
		cur, had := m.capacity[k]
		if had && m.capOrigin[k] != "" && cur.ReceivedAt.After(r.at) {
			continue // a newer report through a peer (the cluster moved there) came first
		}
		m.capacityEvent(r.cluster, ptrIf(cur, had), c, r.at)
		m.capacity[k] = fleet.RemoteCapacity{ClusterID: r.cluster, Capacity: c, ReceivedAt: r.at}
		delete(m.capOrigin, k)
		m.record(change{kind: changeCapacity, cluster: r.cluster, pool: c.Pool})
	}
	for _, p := range r.removed {
		k := fleet.CapacityKey{ClusterID: r.cluster, Pool: p}
		if _, peer := m.capOrigin[k]; peer {
			continue // a newer session of the cluster, on another replica, holds it
		}
		if _, ok := m.capacity[k]; ok {
			m.deleteCapacity(k)
			m.record(change{kind: changeCapacity, cluster: r.cluster, pool: p})
		}
	}
}

// MergeCapacity stores capacity reports that the peer replica origin streamed, as if this
// replica's spokes had sent them, with the ReceivedAt each carries (the local receipt time less
// the report's age). A report older than the one held for its key is ignored; a removal removes
// only what origin sent.
func (m *Model) MergeCapacity(origin string, caps []fleet.RemoteCapacity, removed []fleet.CapacityKey) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.mergeCapacity(origin, caps, removed)
	m.signal()
}

func (m *Model) mergeCapacity(origin string, caps []fleet.RemoteCapacity, removed []fleet.CapacityKey) {
	for _, rc := range caps {
		k := fleet.CapacityKey{ClusterID: rc.ClusterID, Pool: rc.Capacity.Pool}
		cur, had := m.capacity[k]
		if had && cur.ReceivedAt.After(rc.ReceivedAt) {
			continue
		}
		m.capacityEvent(rc.ClusterID, ptrIf(cur, had), rc.Capacity, rc.ReceivedAt)
		m.capacity[k] = rc
		m.capOrigin[k] = origin
		m.record(change{kind: changeCapacity, cluster: k.ClusterID, pool: k.Pool})
	}
	for _, k := range removed {
		if _, ok := m.capacity[k]; ok && m.capOrigin[k] == origin {
			m.deleteCapacity(k)
			m.record(change{kind: changeCapacity, cluster: k.ClusterID, pool: k.Pool})
		}
	}
}

func (m *Model) deleteCapacity(k fleet.CapacityKey) {
	delete(m.capacity, k)
	delete(m.capOrigin, k)
}

// ReportImports replaces what a cluster connected to this replica reported of its
// InferencePoolImports: at once, or while Batch runs with the next batch. Only clusters with a
// live session count: the report is dropped with the session.
func (m *Model) ReportImports(cluster string, states []fleet.PoolImportStatus) {
	m.report(report{cluster: cluster, imports: &states, at: m.now()})
}

// MergeImports replaces a cluster's import report with one the peer replica origin streamed.
func (m *Model) MergeImports(origin, cluster string, states []fleet.PoolImportStatus) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.setImporter(origin, cluster, states)
	m.signal()
}

// EndImports drops the import report of cluster if the peer replica origin sent it: the
// cluster's session on that replica ended.
func (m *Model) EndImports(origin, cluster string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.importers[cluster]; ok && m.importOrigin[cluster] == origin {
		m.dropImporter(cluster)
		m.signal()
	}
}

// ReplaceOrigin replaces everything the peer replica origin streamed with a snapshot of it.
func (m *Model) ReplaceOrigin(origin string, caps []fleet.RemoteCapacity, imports map[string][]fleet.PoolImportStatus) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropOrigin(origin)
	m.mergeCapacity(origin, caps, nil)
	for cluster, states := range imports {
		m.setImporter(origin, cluster, states)
	}
	m.signal()
}

// DropOrigin drops every report the peer replica origin streamed: it left the fleet of replicas.
func (m *Model) DropOrigin(origin string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.dropOrigin(origin)
	m.signal()
}

func (m *Model) dropOrigin(origin string) {
	for k, o := range m.capOrigin {
		if o == origin {
			m.deleteCapacity(k)
			m.record(change{kind: changeCapacity, cluster: k.ClusterID, pool: k.Pool})
		}
	}
	for cluster, o := range m.importOrigin {
		if o == origin {
			m.dropImporter(cluster)
		}
	}
}

func (m *Model) setImporter(origin, cluster string, states []fleet.PoolImportStatus) {
	prev := m.importers[cluster]
	next := make(map[fleet.PoolRef]fleet.PoolImportStatus, len(states))
	for _, st := range states {
		next[st.Pool] = st
		if old, ok := prev[st.Pool]; !ok || old != st {
			m.record(change{kind: changeImportStatus, pool: st.Pool})
		}
	}
	for pool := range prev {
		if _, ok := next[pool]; !ok {
			m.record(change{kind: changeImportStatus, pool: pool})
			m.dropPoolState(pool, cluster)
		}
	}
	for pool, st := range next {
		states := m.poolStates[pool]
		if states == nil {
			states = map[string]fleet.PoolImportStatus{}
			m.poolStates[pool] = states
		}
		states[cluster] = st
	}
	m.importers[cluster] = next
	if origin == "" {
		delete(m.importOrigin, cluster)
	} else {
		m.importOrigin[cluster] = origin
	}
	m.record(change{kind: changeImporter, cluster: cluster})
}

// dropImporter deletes a cluster's import report and records the change.
func (m *Model) dropImporter(cluster string) {
	for pool := range m.importers[cluster] {
		m.record(change{kind: changeImportStatus, pool: pool})
	}
	m.deleteImporter(cluster)
	m.record(change{kind: changeImporter, cluster: cluster})
}

func (m *Model) deleteImporter(cluster string) {
	for pool := range m.importers[cluster] {
		m.dropPoolState(pool, cluster)
	}
	delete(m.importers, cluster)
	delete(m.importOrigin, cluster)
}

func (m *Model) dropPoolState(pool fleet.PoolRef, cluster string) {
	delete(m.poolStates[pool], cluster)
	if len(m.poolStates[pool]) == 0 {
		delete(m.poolStates, pool)
	}
}

// SetIncomplete marks the view incomplete for reason (a short key such as "etcd" or "peers"),
// with a message for logs and /readyz; ClearIncomplete lifts that mark. Every subscriber is
// woken when the marks change.
func (m *Model) SetIncomplete(reason, message string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if cur, ok := m.incomplete[reason]; ok && cur == message {
		return
	}
	m.incomplete[reason] = message
	m.signal()
}

// ClearIncomplete lifts the mark SetIncomplete set for reason.
func (m *Model) ClearIncomplete(reason string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.incomplete[reason]; !ok {
		return
	}
	delete(m.incomplete, reason)
	m.signal()
}

// IsIncomplete reports whether the view is marked incomplete (Incomplete, without the reasons).
func (m *Model) IsIncomplete() bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.incomplete) > 0
}

// Incomplete returns why the view cannot vouch that it holds the whole registry and fleet, one
// message per reason sorted by reason; nil when it can.
func (m *Model) Incomplete() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.incompleteLocked()
}

func (m *Model) incompleteLocked() []string {
	if len(m.incomplete) == 0 {
		return nil
	}
	reasons := make([]string, 0, len(m.incomplete))
	for r := range m.incomplete {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	out := make([]string, 0, len(reasons))
	for _, r := range reasons {
		out = append(out, m.incomplete[r])
	}
	return out
}

// getsStates reports whether the subscriber receives the import states of a pool that the
// clusters exporting export.
func (sub Subscriber) getsStates(exporting []string) bool {
	if sub.NoStates {
		return false
	}
	if sub.Cluster == "" {
		return true
	}
	_, ok := slices.BinarySearch(exporting, sub.Cluster)
	return ok
}

// importFor returns the import of one exported pool as sub receives it: with its import states
// when sub exports the pool (or receives every state), else without.
func (m *Model) importFor(sub Subscriber, pool fleet.PoolRef, exporting []string) fleet.Import {
	if sub.getsStates(exporting) {
		return m.importLocked(pool, exporting)
	}
	return fleet.Import{Pool: pool, ExportingClusters: slices.Clone(exporting)}
}

// importLocked returns the import of one exported pool with its importers sorted by cluster.
// Its slices are shared: callers do not write them. It is built once per change of the pool's
// exporters or states: a thousand exporters' sessions ask for their pools' imports at every
// change of their states, and snapshots for every pool.
func (m *Model) importLocked(pool fleet.PoolRef, exporting []string) fleet.Import {
	m.builtMu.Lock()
	imp, ok := m.built[pool]
	m.builtMu.Unlock()
	if ok {
		return imp
	}
	imp = fleet.Import{Pool: pool, ExportingClusters: slices.Clone(exporting)}
	states := m.poolStates[pool]
	if len(states) > 0 {
		imp.Importers = make([]fleet.ImportStatus, 0, len(states))
	}
	for id, st := range states {
		imp.Importers = append(imp.Importers, fleet.ImportStatus{ClusterID: id, Imported: st.Imported, Reason: st.Reason, Message: st.Message})
	}
	slices.SortFunc(imp.Importers, func(a, b fleet.ImportStatus) int { return strings.Compare(a.ClusterID, b.ClusterID) })
	m.builtMu.Lock()
	m.built[pool] = imp
	m.builtMu.Unlock()
	return imp
}

// cloneImport returns imp with slices of its own, for callers outside the model.
func cloneImport(imp fleet.Import) fleet.Import {
	imp.ExportingClusters = slices.Clone(imp.ExportingClusters)
	imp.Importers = slices.Clone(imp.Importers)
	return imp
}

func (m *Model) record(c change) {
	m.seq++
	c.seq = m.seq
	if c.kind == changeImport || c.kind == changeImportStatus {
		m.importChanged[c.pool] = c.seq
		m.builtMu.Lock()
		delete(m.built, c.pool)
		m.builtMu.Unlock()
	}
	if len(m.log) >= m.logSize {
		drop := len(m.log) / 2
		m.log = append(m.log[:0], m.log[drop:]...)
		m.logStart = m.log[0].seq
	}
	if len(m.log) == 0 {
		m.logStart = c.seq
	}
	m.log = append(m.log, c)
}

func (m *Model) signal() {
	close(m.wake)
	m.wake = make(chan struct{})
}

// Changed returns a channel that is closed at the next change of the view.
func (m *Model) Changed() <-chan struct{} {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.wake
}

// Update is a change of a subscriber's view: what changed since its cursor, or everything.
type Update struct {
	Seq            uint64
	Snapshot       bool
	Imports        []fleet.Import
	ImportsRemoved []fleet.PoolRef
	Clusters       []fleet.Cluster
	// ClustersRemoved are the clusters no longer registered (deltas only).
	ClustersRemoved []string
	Capacity        []fleet.RemoteCapacity
	CapacityRemoved []fleet.CapacityKey
	// Incomplete is true while the view is marked incomplete (SetIncomplete): a subscriber must
	// remove nothing because of this update.
	Incomplete bool
}

// Empty reports whether the update carries nothing.
func (u Update) Empty() bool {
	return !u.Snapshot && len(u.Imports) == 0 && len(u.ImportsRemoved) == 0 && len(u.Clusters) == 0 &&
		len(u.ClustersRemoved) == 0 && len(u.Capacity) == 0 && len(u.CapacityRemoved) == 0
}

// Interest selects the pools whose capacity a subscriber receives; nil means every pool.
type Interest func(fleet.PoolRef) bool

// Subscriber says what one subscriber receives.
type Subscriber struct {
	// Interest selects the pools whose capacity it receives; nil means every pool.
	Interest Interest
	// Cluster, when set, is the cluster of a spoke's stream: it receives the import states
	// (Import.Importers) of the pools it exports only, the pools whose Exported condition it
	// sets from them; the import of any other pool comes without them. A thousand clusters
	// each reporting on every pool would otherwise send every spoke a million states. Empty:
	// every import with its states (hubctl's Watch), unless NoStates.
	Cluster string
	// NoStates leaves out the import states of every pool (a watcher of pools needs none).
	NoStates bool
	// OwnOnly makes its deltas hold only what is its own (snapshots keep everything): the
	// imports, with their states, of the pools its Cluster exports that changed. It takes the
	// rest, alike for every subscriber of its interest, from SharedDelta, which has every
	// changed import without its states (the subscriber sends its own instead of those of its
	// pools). Without a Cluster it changes nothing.
	OwnOnly bool
}

// Since returns what changed after seq (of this incarnation), or a snapshot when that is no longer
// known, for a subscriber of interest that receives every import state.
func (m *Model) Since(incarnation string, seq uint64, interest Interest) Update {
	return m.SinceFor(incarnation, seq, Subscriber{Interest: interest})
}

// SinceFor returns what changed after seq (of this incarnation) for sub, or a snapshot when
// that is no longer known. The returned update's Seq is the cursor to use next time.
func (m *Model) SinceFor(incarnation string, seq uint64, sub Subscriber) Update {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if incarnation != m.incarnation || seq+1 < m.logStart || seq > m.seq {
		return m.snapshot(sub)
	}
	return m.deltaLocked(seq, m.seq, sub, false)
}

// Holds reports whether a cursor of incarnation at seq can be followed by a delta (else it
// needs a snapshot).
func (m *Model) Holds(incarnation string, seq uint64) bool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return incarnation == m.incarnation && seq+1 >= m.logStart && seq <= m.seq
}

// SharedSnapshot returns a snapshot that every subscriber of interest gets alike: its imports
// carry no states, which each exporter takes from OwnImports.
func (m *Model) SharedSnapshot(interest Interest) Update {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.snapshot(Subscriber{Interest: interest, NoStates: true})
}

// OwnImports returns the imports, with their states, of the pools cluster exports, sorted.
func (m *Model) OwnImports(cluster string) []fleet.Import {
	m.mu.RLock()
	defer m.mu.RUnlock()
	var out []fleet.Import
	for p := range m.state.Exports[cluster] {
		if cs, ok := m.imports[p]; ok {
			out = append(out, m.importLocked(p, cs))
		}
	}
	slices.SortFunc(out, func(a, b fleet.Import) int { return a.Pool.Compare(b.Pool) })
	return out
}

// Seq returns the view's change counter: a cursor for SinceFor, an end for DeltaFor.
func (m *Model) Seq() uint64 {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.seq
}

// SeqChanged returns the view's change counter and a channel closed at the next change after
// it: a reader that takes the view up to seq later waits on changed, not on the channel of its
// own moment, which changes after seq may already have replaced.
func (m *Model) SeqChanged() (seq uint64, changed <-chan struct{}) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.seq, m.wake
}

// DeltaFor returns the changes after from up to to (of this incarnation) for sub, with the
// values they have now; ok is false when the log no longer holds them (SinceFor then gives a
// snapshot) or from is not before to. The update's Seq is to.
func (m *Model) DeltaFor(incarnation string, from, to uint64, sub Subscriber) (Update, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.holdsLocked(incarnation, from, to) {
		return Update{}, false
	}
	if sub.OwnOnly && sub.Cluster != "" {
		return m.ownLocked(from, to, sub), true
	}
	return m.deltaLocked(from, to, sub, false), true
}

// ownLocked returns the imports, with their states, of the pools sub's cluster exports that
// changed after from: a look at each of its pools, not a walk through the log. A pool that
// changed after to comes too, as it is now (and again with the next delta): one whose states
// change at every moment would otherwise never come.
func (m *Model) ownLocked(from, to uint64, sub Subscriber) Update {
	u := Update{Seq: to, Incomplete: len(m.incomplete) > 0}
	for p := range m.state.Exports[sub.Cluster] {
		if m.importChanged[p] > from {
			if cs, ok := m.imports[p]; ok {
				u.Imports = append(u.Imports, m.importLocked(p, cs))
			}
		}
	}
	slices.SortFunc(u.Imports, func(a, b fleet.Import) int { return a.Pool.Compare(b.Pool) })
	return u
}

// SharedDelta returns what changed after from up to to (of this incarnation) that every
// subscriber of interest gets alike: the imports without their states, the clusters and the
// capacity of the pools of interest, with the values they have now; ok as for DeltaFor.
func (m *Model) SharedDelta(incarnation string, from, to uint64, interest Interest) (Update, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if !m.holdsLocked(incarnation, from, to) {
		return Update{}, false
	}
	return m.deltaLocked(from, to, Subscriber{Interest: interest}, true), true
}

// holdsLocked reports whether the log holds the changes in (from, to] of this incarnation, and
// there are some.
func (m *Model) holdsLocked(incarnation string, from, to uint64) bool {
	return incarnation == m.incarnation && from+1 >= m.logStart && from < to && to <= m.seq
}

// deltaLocked returns the changes in (from, to] for sub; the log holds them. shared leaves out
// the import states (each exporter's own) and gives every import without them.
func (m *Model) deltaLocked(from, to uint64, sub Subscriber, shared bool) Update {
	u := Update{Seq: to, Incomplete: len(m.incomplete) > 0}
	if from >= to {
		return u
	}
	seenImport := map[fleet.PoolRef]bool{}
	seenCluster := map[string]bool{}
	seenCap := map[fleet.CapacityKey]bool{}
	for _, c := range m.log[from+1-m.logStart : to+1-m.logStart] {
		switch c.kind {
		case changeImport, changeImportStatus:
			if seenImport[c.pool] {
				continue
			}
			if shared {
				if c.kind == changeImportStatus {
					continue // states go to each exporter on its own
				}
				seenImport[c.pool] = true
				if cs, ok := m.imports[c.pool]; ok {
					u.Imports = append(u.Imports, fleet.Import{Pool: c.pool, ExportingClusters: slices.Clone(cs)})
				} else {
					u.ImportsRemoved = append(u.ImportsRemoved, c.pool)
				}
				continue
			}
			cs, ok := m.imports[c.pool]
			if c.kind == changeImportStatus && (!ok || !sub.getsStates(cs)) {
				continue // states of a pool this subscriber does not export
			}
			seenImport[c.pool] = true
			if ok {
				u.Imports = append(u.Imports, m.importFor(sub, c.pool, cs))
			} else {
				u.ImportsRemoved = append(u.ImportsRemoved, c.pool)
			}
		case changeCluster:
			if seenCluster[c.cluster] {
				continue
			}
			seenCluster[c.cluster] = true
			if cl, ok := m.cluster(c.cluster); ok {
				u.Clusters = append(u.Clusters, cl)
			} else {
				u.ClustersRemoved = append(u.ClustersRemoved, c.cluster)
			}
		case changeCapacity:
			// The interest first: for most subscribers it rules out most reports, and a lookup
			// in an empty set costs nothing.
			if sub.Interest != nil && !sub.Interest(c.pool) {
				continue
			}
			k := fleet.CapacityKey{ClusterID: c.cluster, Pool: c.pool}
			if seenCap[k] {
				continue
			}
			seenCap[k] = true
			if rc, ok := m.capacity[k]; ok {
				u.Capacity = append(u.Capacity, rc)
			} else {
				u.CapacityRemoved = append(u.CapacityRemoved, k)
			}
		case changeImporter:
		}
	}
	return u
}

func (m *Model) snapshot(sub Subscriber) Update {
	u := Update{Seq: m.seq, Snapshot: true, Incomplete: len(m.incomplete) > 0}
	u.Imports = make([]fleet.Import, 0, len(m.imports))
	for p, cs := range m.imports {
		u.Imports = append(u.Imports, m.importFor(sub, p, cs))
	}
	slices.SortFunc(u.Imports, func(a, b fleet.Import) int { return a.Pool.Compare(b.Pool) })
	u.Clusters = m.clustersLocked()
	for _, rc := range m.capacity {
		if sub.Interest == nil || sub.Interest(rc.Capacity.Pool) {
			u.Capacity = append(u.Capacity, rc)
		}
	}
	sortCapacity(u.Capacity)
	return u
}

func (m *Model) cluster(id string) (fleet.Cluster, bool) {
	rec, ok := m.state.Clusters[id]
	if !ok {
		return fleet.Cluster{}, false
	}
	c := fleet.Cluster{
		Info:         rec.Info,
		State:        fleet.StateGone,
		RegisteredAt: rec.RegisteredAt,
		LastSeen:     rec.LastSeen,
		Exports:      len(m.state.Exports[id]),
		Cordoned:     m.state.Cordoned(id, rec.Info.Region),
	}
	if s, ok := m.state.Sessions[id]; ok {
		c.State = fleet.StateAlive
		c.HubID = s.HubID
		c.LastSeen = m.now().UTC()
	}
	return c, true
}

// Cluster returns one cluster.
func (m *Model) Cluster(id string) (fleet.Cluster, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.cluster(id)
}

// Clusters returns every registered cluster, sorted by ID.
func (m *Model) Clusters() []fleet.Cluster {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.clustersLocked()
}

func (m *Model) clustersLocked() []fleet.Cluster {
	out := make([]fleet.Cluster, 0, len(m.state.Clusters))
	for id := range m.state.Clusters {
		c, _ := m.cluster(id)
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b fleet.Cluster) int { return strings.Compare(a.Info.ID, b.Info.ID) })
	return out
}

// Imports returns every import, sorted by pool.
func (m *Model) Imports() []fleet.Import {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return m.importsLocked()
}

func (m *Model) importsLocked() []fleet.Import {
	out := make([]fleet.Import, 0, len(m.imports))
	for p, cs := range m.imports {
		out = append(out, cloneImport(m.importLocked(p, cs)))
	}
	slices.SortFunc(out, func(a, b fleet.Import) int { return a.Pool.Compare(b.Pool) })
	return out
}

// PoolMember is one cluster's share of a pool.
type PoolMember struct {
	Cluster  fleet.Cluster
	Capacity *fleet.RemoteCapacity
	// Labels are the pool's labels in the cluster (its export's).
	Labels map[string]string
}

// Pool is one exported pool across the fleet.
type Pool struct {
	Pool    fleet.PoolRef
	Members []PoolMember
}

// Pools returns every exported pool with its members' capacity, sorted by pool then cluster.
func (m *Model) Pools() []Pool {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]Pool, 0, len(m.imports))
	for p, cs := range m.imports {
		out = append(out, m.poolLocked(p, cs))
	}
	slices.SortFunc(out, func(a, b Pool) int { return a.Pool.Compare(b.Pool) })
	return out
}

// PoolRefs returns every exported pool's reference, sorted: the keys of Pool and Import, for
// listing the fleet page by page.
func (m *Model) PoolRefs() []fleet.PoolRef {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]fleet.PoolRef, 0, len(m.imports))
	for p := range m.imports {
		out = append(out, p)
	}
	slices.SortFunc(out, fleet.PoolRef.Compare)
	return out
}

// Pool returns one exported pool with its members' capacity.
func (m *Model) Pool(p fleet.PoolRef) (Pool, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	cs, ok := m.imports[p]
	if !ok {
		return Pool{}, false
	}
	return m.poolLocked(p, cs), true
}

// Import returns the import of one exported pool.
func (m *Model) Import(p fleet.PoolRef) (fleet.Import, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	cs, ok := m.imports[p]
	if !ok {
		return fleet.Import{}, false
	}
	return cloneImport(m.importLocked(p, cs)), true
}

// ClusterIDs returns every registered cluster's ID, sorted: the keys of Cluster.
func (m *Model) ClusterIDs() []string {
	m.mu.RLock()
	defer m.mu.RUnlock()
	out := make([]string, 0, len(m.state.Clusters))
	for id := range m.state.Clusters {
		out = append(out, id)
	}
	slices.Sort(out)
	return out
}

func (m *Model) poolLocked(p fleet.PoolRef, exporting []string) Pool {
	pool := Pool{Pool: p}
	for _, id := range exporting {
		c, _ := m.cluster(id)
		if c.Info.ID == "" {
			c.Info.ID = id
		}
		mem := PoolMember{Cluster: c, Labels: m.state.Exports[id][p].Labels}
		if rc, ok := m.capacity[fleet.CapacityKey{ClusterID: id, Pool: p}]; ok {
			mem.Capacity = &rc
		}
		pool.Members = append(pool.Members, mem)
	}
	return pool
}

func sortCapacity(cs []fleet.RemoteCapacity) {
	slices.SortFunc(cs, func(a, b fleet.RemoteCapacity) int {
		if c := a.Capacity.Pool.Compare(b.Capacity.Pool); c != 0 {
			return c
		}
		if a.ClusterID < b.ClusterID {
			return -1
		} else if a.ClusterID > b.ClusterID {
			return 1
		}
		return 0
	})
}
