package hubclient

import (
	"slices"
	"strings"
	"sync"

	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// View is the spoke's copy of the fleet view. It outlives hub sessions: while the hub is away the
// spoke keeps routing on it (consumers judge capacity freshness by its receive time).
type View struct {
	mu       sync.RWMutex
	inc      string
	seq      uint64
	imports  map[fleet.PoolRef]fleet.Import
	clusters map[string]fleet.Cluster
	capacity map[fleet.CapacityKey]fleet.RemoteCapacity
	changed  chan struct{}
}

func newView() *View {
	return &View{
		imports:  map[fleet.PoolRef]fleet.Import{},
		clusters: map[string]fleet.Cluster{},
		capacity: map[fleet.CapacityKey]fleet.RemoteCapacity{},
		changed:  make(chan struct{}),
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

// apply applies one update from the hub.
func (v *View) apply(u *pb.ViewUpdate) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if u.GetSnapshot() {
		v.imports = map[fleet.PoolRef]fleet.Import{}
		v.clusters = map[string]fleet.Cluster{}
		v.capacity = map[fleet.CapacityKey]fleet.RemoteCapacity{}
	}
	for _, i := range u.GetImports() {
		imp := fleetpb.ImportFrom(i)
		v.imports[imp.Pool] = imp
	}
	for _, p := range u.GetImportsRemoved() {
		delete(v.imports, fleetpb.PoolRefFrom(p))
	}
	for _, c := range u.GetClusters() {
		cl := fleetpb.LivenessFrom(c)
		v.clusters[cl.Info.ID] = cl
	}
	for _, c := range u.GetCapacity() {
		rc := fleetpb.RemoteCapacityFrom(c)
		v.capacity[fleet.CapacityKey{ClusterID: rc.ClusterID, Pool: rc.Capacity.Pool}] = rc
	}
	for _, k := range u.GetCapacityRemoved() {
		delete(v.capacity, fleetpb.CapacityKeyFrom(k))
	}
	v.inc, v.seq = u.GetCursor().GetHubIncarnation(), u.GetCursor().GetSeq()
	close(v.changed)
	v.changed = make(chan struct{})
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

// Capacity returns the remote capacity reports of one pool, sorted by cluster.
func (v *View) Capacity(pool fleet.PoolRef) []fleet.RemoteCapacity {
	v.mu.RLock()
	defer v.mu.RUnlock()
	var out []fleet.RemoteCapacity
	for k, rc := range v.capacity {
		if k.Pool == pool {
			out = append(out, rc)
		}
	}
	slices.SortFunc(out, func(a, b fleet.RemoteCapacity) int {
		if a.ClusterID < b.ClusterID {
			return -1
		} else if a.ClusterID > b.ClusterID {
			return 1
		}
		return 0
	})
	return out
}
