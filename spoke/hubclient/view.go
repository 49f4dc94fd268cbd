package hubclient

import (
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spillway-io/spillway/pkg/clock"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

const (
	// maxDamping bounds how long the mass-deletion guard holds withdrawals.
	maxDamping = time.Minute
	// guardMinimum is the most imports one update may withdraw at once without the guard,
	// however small the view: a handful of pools going together is ordinary churn.
	guardMinimum = 5
)

// View is the spoke's copy of the fleet view. It outlives hub sessions: while the hub is away the
// spoke keeps routing on it (consumers judge capacity freshness by its receive time).
//
// Safety. The view removes an import (and with it, the spoke's InferencePoolImport) only when
// the hub can vouch for it:
//
//   - An update marked incomplete (the hub replica's registry watch is broken, or it has not heard
//     from every other replica yet) adds and changes what it carries and removes nothing: a
//     snapshot marked incomplete is merged into the view, not put in its place. What it would have
//     removed (imports, clusters, capacity) waits for the next complete update, which removes it
//     unless it brought it back.
//   - A complete update that would withdraw more than half of the view's imports, and more than
//     guardMinimum, is the mark of a hub that lost part of its registry (a restart before its
//     load, a bug), not of the fleet: those withdrawals are held for a damping period (the
//     Welcome's lease TTL, at most a minute) before they take effect. Dropping a cluster from an
//     import that others export too counts as a withdrawal and is held alike (the import keeps
//     the cluster meanwhile): a cluster lost from the registry is lost from every import. An update that brings a
//     held pool back cancels its withdrawal; a later update that confirms it does not shorten the
//     damping (a hub that lost its registry confirms its own loss), so a held withdrawal takes
//     effect when its damping has passed, if the view is then complete (else at the next
//     complete update). Withdrawals that come while others are held count with them, so a view
//     emptied over several updates is held alike. spillway_spoke_import_withdrawals_held shows
//     both kinds of held withdrawals, and the guard logs a warning with the count.
//
// Freshness: the capacity reports' receive time is on the spoke's clock, the time this view
// received them less their age as the hub sent it (RemoteCapacity.age); a hub timestamp is
// never compared with the spoke's clock. A report without an age (a hub older than the field)
// counts as received when the view received it.
type View struct {
	mu       sync.RWMutex
	inc      string
	seq      uint64
	imports  map[fleet.PoolRef]fleet.Import
	clusters map[string]fleet.Cluster
	capacity map[fleet.CapacityKey]fleet.RemoteCapacity
	changed  chan struct{}
	// incomplete is the mark of the last update applied.
	incomplete bool
	// waitImports, waitClusters and waitCapacity are what incomplete updates would have
	// removed: the next complete update removes them (unless it brought them back).
	waitImports  map[fleet.PoolRef]struct{}
	waitClusters map[string]struct{}
	waitCapacity map[fleet.CapacityKey]struct{}
	// waitExporters are the exporter lists incomplete updates gave pools, whose clusters they
	// would have dropped: the view keeps the union until the next complete update, which sets
	// the list it carries or, for a pool it does not mention, the last one waiting.
	waitExporters map[fleet.PoolRef][]string
	// held are the import withdrawals the mass-deletion guard holds, with when each takes effect.
	held map[fleet.PoolRef]time.Time
	// heldExporters are the exporter lists that drop clusters which the guard holds (the view
	// keeps the union meanwhile), with when each takes effect: a cluster that vanished from the
	// hub's registry vanishes from every import it exported, and the imports that others export
	// too are shrunk, not withdrawn.
	heldExporters map[fleet.PoolRef]heldList
	damping       time.Duration
	timer         *time.Timer
	// stopped is set by stop: no timer is armed after it.
	stopped bool

	now     func() time.Time
	log     *slog.Logger
	metrics *metrics
}

// heldList is an exporter list the guard holds, and when it takes effect.
type heldList struct {
	exporters []string
	until     time.Time
}

func newView(log *slog.Logger, m *metrics) *View {
	return &View{
		imports:       map[fleet.PoolRef]fleet.Import{},
		clusters:      map[string]fleet.Cluster{},
		capacity:      map[fleet.CapacityKey]fleet.RemoteCapacity{},
		changed:       make(chan struct{}),
		waitImports:   map[fleet.PoolRef]struct{}{},
		waitClusters:  map[string]struct{}{},
		waitCapacity:  map[fleet.CapacityKey]struct{}{},
		waitExporters: map[fleet.PoolRef][]string{},
		held:          map[fleet.PoolRef]time.Time{},
		heldExporters: map[fleet.PoolRef]heldList{},
		damping:       maxDamping,
		now:           clock.Now,
		log:           log,
		metrics:       m,
	}
}

func (v *View) cursor() *pb.ViewCursor {
	v.mu.RLock()
	defer v.mu.RUnlock()
	if v.inc == "" {
		return nil
	}
	return &pb.ViewCursor{HubIncarnation: v.inc, Seq: v.seq}
}

// setDamping sets how long the guard holds withdrawals: the Welcome's lease TTL, at most
// maxDamping (maxDamping when the hub announced none).
func (v *View) setDamping(leaseTTL time.Duration) {
	d := maxDamping
	if leaseTTL > 0 {
		d = min(leaseTTL, maxDamping)
	}
	v.mu.Lock()
	v.damping = d
	v.mu.Unlock()
}

// Complete reports whether the last update the view applied was complete (true before the first).
func (v *View) Complete() bool {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return !v.incomplete
}

// apply applies one update from the hub.
func (v *View) apply(u *pb.ViewUpdate) {
	v.mu.Lock()
	defer v.mu.Unlock()
	now := v.now()
	complete := !u.GetIncomplete()

	// What the update removes: a snapshot, what the view holds and it does not.
	var goneImports []fleet.PoolRef
	var goneClusters []string
	var goneCapacity []fleet.CapacityKey
	if u.GetSnapshot() {
		imports := map[fleet.PoolRef]bool{}
		for _, i := range u.GetImports() {
			imports[fleetpb.PoolRefFrom(i.GetPool())] = true
		}
		for p := range v.imports {
			if !imports[p] {
				goneImports = append(goneImports, p)
			}
		}
		clusters := map[string]bool{}
		for _, c := range u.GetClusters() {
			clusters[c.GetClusterId()] = true
		}
		for id := range v.clusters {
			if !clusters[id] {
				goneClusters = append(goneClusters, id)
			}
		}
		capacity := map[fleet.CapacityKey]bool{}
		for _, c := range u.GetCapacity() {
			capacity[fleet.CapacityKey{ClusterID: c.GetClusterId(), Pool: fleetpb.PoolRefFrom(c.GetCapacity().GetPool())}] = true
		}
		for k := range v.capacity {
			if !capacity[k] {
				goneCapacity = append(goneCapacity, k)
			}
		}
	} else {
		for _, p := range u.GetImportsRemoved() {
			goneImports = append(goneImports, fleetpb.PoolRefFrom(p))
		}
		for _, k := range u.GetCapacityRemoved() {
			goneCapacity = append(goneCapacity, fleetpb.CapacityKeyFrom(k))
		}
		goneClusters = append(goneClusters, u.GetClustersRemoved()...)
	}

	// What it adds or changes, which cancels any withdrawal waiting or held.
	shrunk := map[fleet.PoolRef][]string{}
	for _, i := range u.GetImports() {
		imp := fleetpb.ImportFrom(i)
		delete(v.waitExporters, imp.Pool)
		if old, ok := v.imports[imp.Pool]; ok {
			if merged := unionSorted(old.ExportingClusters, imp.ExportingClusters); len(merged) > len(imp.ExportingClusters) {
				// It drops an exporter. An incomplete update never does: an importer must not
				// lose a cluster it spills to because the hub has not heard from it yet. A
				// complete one does through the guard (removeComplete). The union stays
				// meanwhile.
				if complete {
					shrunk[imp.Pool] = imp.ExportingClusters
				} else {
					v.waitExporters[imp.Pool] = imp.ExportingClusters
				}
				imp.ExportingClusters = merged
			} else {
				delete(v.heldExporters, imp.Pool)
			}
		}
		v.imports[imp.Pool] = imp
		delete(v.waitImports, imp.Pool)
		delete(v.held, imp.Pool)
	}
	for _, c := range u.GetClusters() {
		cl := fleetpb.LivenessFrom(c)
		v.clusters[cl.Info.ID] = cl
		delete(v.waitClusters, cl.Info.ID)
	}
	for _, c := range u.GetCapacity() {
		// Freshness on this clock: received now, less how old the report already was; never
		// the hub's received_at, which is on the hub's clock.
		rc := fleetpb.RemoteCapacityFromAt(c, now)
		if c.GetAge() == nil {
			rc.ReceivedAt = now
		}
		k := fleet.CapacityKey{ClusterID: rc.ClusterID, Pool: rc.Capacity.Pool}
		v.capacity[k] = rc
		delete(v.waitCapacity, k)
	}

	v.incomplete = !complete
	if complete {
		v.removeComplete(goneImports, goneClusters, goneCapacity, shrunk, now)
		v.schedule(now)
	} else {
		v.wait(goneImports, goneClusters, goneCapacity)
	}
	v.inc, v.seq = u.GetCursor().GetHubIncarnation(), u.GetCursor().GetSeq()
	v.setHeldMetrics()
	close(v.changed)
	v.changed = make(chan struct{})
}

// unionSorted returns the sorted union of two lists of cluster IDs.
func unionSorted(a, b []string) []string {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// wait records what an incomplete update would have removed, for the next complete one.
func (v *View) wait(imports []fleet.PoolRef, clusters []string, capacity []fleet.CapacityKey) {
	for _, p := range imports {
		if _, ok := v.imports[p]; ok {
			v.waitImports[p] = struct{}{}
		}
	}
	for _, id := range clusters {
		if _, ok := v.clusters[id]; ok {
			v.waitClusters[id] = struct{}{}
		}
	}
	for _, k := range capacity {
		if _, ok := v.capacity[k]; ok {
			v.waitCapacity[k] = struct{}{}
		}
	}
	if len(imports) > 0 {
		v.log.Info("the hub's view is incomplete: its withdrawals wait for a complete one", "withdrawals", len(imports), "waiting", len(v.waitImports))
	}
}

// removeComplete removes what a complete update removes, with what incomplete ones left waiting;
// import withdrawals and exporter lists that drop clusters (shrunk, the list each pool gets) go
// through the guard.
func (v *View) removeComplete(imports []fleet.PoolRef, clusters []string, capacity []fleet.CapacityKey, shrunk map[fleet.PoolRef][]string, now time.Time) {
	for id := range v.waitClusters {
		clusters = append(clusters, id)
	}
	for k := range v.waitCapacity {
		capacity = append(capacity, k)
	}
	for p := range v.waitImports {
		imports = append(imports, p)
	}
	for p, exporters := range v.waitExporters {
		if _, ok := v.imports[p]; ok {
			shrunk[p] = exporters
		}
	}
	clear(v.waitClusters)
	clear(v.waitCapacity)
	clear(v.waitImports)
	clear(v.waitExporters)
	for _, id := range clusters {
		delete(v.clusters, id)
	}
	for _, k := range capacity {
		delete(v.capacity, k)
	}
	withdrawn := map[fleet.PoolRef]struct{}{}
	for _, p := range imports {
		if _, ok := v.imports[p]; !ok {
			continue
		}
		if _, ok := v.held[p]; ok {
			continue // held already: its damping runs on
		}
		withdrawn[p] = struct{}{}
	}
	// A pool withdrawn is not shrunk too.
	for p := range withdrawn {
		delete(shrunk, p)
	}
	heldShrinks := 0
	for p := range v.heldExporters {
		_, renewed := shrunk[p]
		_, heldToo := v.held[p]
		if !renewed && !heldToo {
			heldShrinks++
		}
	}
	n := len(withdrawn) + len(v.held) + len(shrunk) + heldShrinks
	if len(withdrawn)+len(shrunk) > 0 && n > guardMinimum && 2*n > len(v.imports) {
		until := now.Add(v.damping)
		for p := range withdrawn {
			v.held[p] = until
		}
		for p, exporters := range shrunk {
			if h, ok := v.heldExporters[p]; ok {
				// Held already: its damping runs on, whatever list the update brings.
				v.heldExporters[p] = heldList{exporters: exporters, until: h.until}
			} else {
				v.heldExporters[p] = heldList{exporters: exporters, until: until}
			}
		}
		v.log.Warn("the hub's view withdraws most imports at once; holding the withdrawals for the damping period",
			"withdrawals", len(withdrawn), "shrunk", len(shrunk), "held", len(v.held)+len(v.heldExporters), "imports", len(v.imports), "damping", v.damping)
		v.schedule(now)
	} else {
		for p := range withdrawn {
			delete(v.imports, p)
			delete(v.heldExporters, p)
		}
		for p, exporters := range shrunk {
			if imp, ok := v.imports[p]; ok {
				imp.ExportingClusters = exporters
				v.imports[p] = imp
			}
			delete(v.heldExporters, p)
		}
	}
	v.releaseExpired(now)
}

// releaseExpired carries out the held withdrawals whose damping has passed, if the view is
// complete. v.mu is held.
func (v *View) releaseExpired(now time.Time) int {
	if v.incomplete {
		return 0
	}
	n := 0
	for p, until := range v.held {
		if !now.Before(until) {
			delete(v.held, p)
			delete(v.imports, p)
			delete(v.heldExporters, p)
			n++
		}
	}
	for p, h := range v.heldExporters {
		if !now.Before(h.until) {
			delete(v.heldExporters, p)
			if imp, ok := v.imports[p]; ok {
				imp.ExportingClusters = h.exporters
				v.imports[p] = imp
			}
			n++
		}
	}
	if n > 0 {
		v.log.Warn("held import withdrawals took effect after the damping period", "withdrawals", n, "stillHeld", len(v.held)+len(v.heldExporters))
	}
	return n
}

// schedule arms the timer for the earliest held withdrawal. v.mu is held.
func (v *View) schedule(now time.Time) {
	if len(v.held)+len(v.heldExporters) == 0 || v.stopped {
		return
	}
	dues := slices.Collect(maps.Values(v.held))
	for _, h := range v.heldExporters {
		dues = append(dues, h.until)
	}
	next := slices.MinFunc(dues, time.Time.Compare)
	d := max(next.Sub(now), 0)
	if v.timer != nil {
		v.timer.Stop()
	}
	v.timer = time.AfterFunc(d, v.release)
}

// release runs when the damping of a held withdrawal may have passed. While the view is
// incomplete it arms nothing: the next complete update carries out what is due and arms the
// timer for the rest.
func (v *View) release() {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.stopped || v.incomplete {
		return
	}
	now := v.now()
	if v.releaseExpired(now) > 0 {
		v.setHeldMetrics()
		close(v.changed)
		v.changed = make(chan struct{})
	}
	v.schedule(now)
}

// stop stops the damping timer (the held withdrawals stay held).
func (v *View) stop() {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.stopped = true
	if v.timer != nil {
		v.timer.Stop()
	}
}

// setHeldMetrics sets spillway_spoke_import_withdrawals_held. v.mu is held.
func (v *View) setHeldMetrics() {
	v.metrics.withdrawalsHeld.WithLabelValues(heldIncomplete).Set(float64(len(v.waitImports)))
	v.metrics.withdrawalsHeld.WithLabelValues(heldDamping).Set(float64(len(v.held) + len(v.heldExporters)))
}

// HeldWithdrawals returns how many imports the view keeps though the hub withdrew them, waiting
// for a complete update, and how many withdrawals the mass-deletion guard holds (imports, and
// exporter lists that drop clusters).
func (v *View) HeldWithdrawals() (waiting, damping int) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return len(v.waitImports), len(v.held) + len(v.heldExporters)
}

// Changed returns a channel closed at the next change.
func (v *View) Changed() <-chan struct{} {
	v.mu.RLock()
	defer v.mu.RUnlock()
	return v.changed
}

// Imports returns every pool exported in the fleet with its exporting clusters, sorted by pool.
func (v *View) Imports() []fleet.Import {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]fleet.Import, 0, len(v.imports))
	for _, imp := range v.imports {
		imp.ExportingClusters = slices.Clone(imp.ExportingClusters)
		imp.Importers = slices.Clone(imp.Importers)
		out = append(out, imp)
	}
	slices.SortFunc(out, func(a, b fleet.Import) int { return a.Pool.Compare(b.Pool) })
	return out
}

// Clusters returns the clusters of the fleet, sorted by ID.
func (v *View) Clusters() []fleet.Cluster {
	v.mu.RLock()
	defer v.mu.RUnlock()
	out := make([]fleet.Cluster, 0, len(v.clusters))
	for _, c := range v.clusters {
		out = append(out, c)
	}
	slices.SortFunc(out, func(a, b fleet.Cluster) int { return strings.Compare(a.Info.ID, b.Info.ID) })
	return out
}

// Capacity returns the remote capacity reports of one pool, sorted by cluster. Their ReceivedAt
// is on this process's clock (clock.Now), the report's age already taken off.
func (v *View) Capacity(pool fleet.PoolRef) []fleet.RemoteCapacity {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []fleet.RemoteCapacity
	for k, rc := range v.capacity {
		if k.Pool == pool {
			out = append(out, rc)
		}
	}
	slices.SortFunc(out, func(a, b fleet.RemoteCapacity) int { return strings.Compare(a.ClusterID, b.ClusterID) })
	return out
}
