// Package fleetpb converts between the domain types of pkg/fleet and the spillway.v1 messages. It
// is the one place where both sides of the wire meet, used by the hub's gRPC server, the spoke's
// hub client and hubctl.
package fleetpb

import (
	"math"
	"slices"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spillway-io/spillway/pkg/clock"
	"github.com/spillway-io/spillway/pkg/fleet"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// PoolRef converts a pool reference to its message.
func PoolRef(p fleet.PoolRef) *pb.PoolRef {
	return &pb.PoolRef{Namespace: p.Namespace, Name: p.Name}
}

// PoolRefFrom converts a message to a pool reference; nil gives the zero value.
func PoolRefFrom(p *pb.PoolRef) fleet.PoolRef {
	return fleet.PoolRef{Namespace: p.GetNamespace(), Name: p.GetName()}
}

// ClusterInfo converts cluster information to its message.
func ClusterInfo(c fleet.ClusterInfo) *pb.ClusterInfo {
	return &pb.ClusterInfo{
		ClusterId:      c.ID,
		Region:         c.Region,
		Zone:           c.Zone,
		GatewayAddress: c.GatewayAddress,
		Version:        c.Version,
		ClusterSet:     c.ClusterSet,
		Labels:         c.Labels,
	}
}

// ClusterInfoFrom converts a message to cluster information.
func ClusterInfoFrom(c *pb.ClusterInfo) fleet.ClusterInfo {
	return fleet.ClusterInfo{
		ID:             c.GetClusterId(),
		Region:         c.GetRegion(),
		Zone:           c.GetZone(),
		GatewayAddress: c.GetGatewayAddress(),
		Version:        c.GetVersion(),
		ClusterSet:     c.GetClusterSet(),
		Labels:         c.GetLabels(),
	}
}

// Export converts an export to its message.
func Export(e fleet.Export) *pb.Export {
	return &pb.Export{Pool: PoolRef(e.Pool), TargetPorts: e.TargetPorts, Labels: e.Labels}
}

// ExportFrom converts a message to an export.
func ExportFrom(e *pb.Export) fleet.Export {
	return fleet.Export{Pool: PoolRefFrom(e.GetPool()), TargetPorts: e.GetTargetPorts(), Labels: e.GetLabels()}
}

// Capacity converts a pool's capacity to its message.
func Capacity(c fleet.PoolCapacity) *pb.PoolCapacity {
	m := &pb.PoolCapacity{
		Pool:               PoolRef(c.Pool),
		ReadyEndpoints:     c.ReadyEndpoints,
		TotalEndpoints:     c.TotalEndpoints,
		QueueDepth:         c.QueueDepth,
		RunningRequests:    c.RunningRequests,
		KvCacheUtilization: c.KVCacheUtilization,
		Saturation:         c.Saturation,
		Saturated:          c.Saturated,
		LoraAdapters:       c.LoRAAdapters,
		Models:             c.Models,
		PrefixSketch:       prefixSketch(c.PrefixSketch),
		GpuUtilization:     c.GPUUtilization,
		AdmittedTotal:      c.AdmittedTotal,
		ShedTotal:          c.ShedTotal,
		ObservedAt:         timestamp(c.ObservedAt),
		Spilling:           c.Spilling,
		SpillTarget:        c.SpillTarget,
		SpillTargetRegion:  c.SpillTargetRegion,
		SpilledTotal:       c.SpilledTotal,
		ScrapeFailures:     c.ScrapeFailures,
	}
	for _, e := range c.Endpoints {
		m.Endpoints = append(m.Endpoints, &pb.EndpointCapacity{
			Address:            e.Address,
			QueueDepth:         e.QueueDepth,
			RunningRequests:    e.RunningRequests,
			KvCacheUtilization: e.KVCacheUtilization,
			Ready:              e.Ready,
			ScrapeError:        e.ScrapeError,
			GpuUtilization:     e.GPUUtilization,
		})
	}
	return m
}

// CapacityFrom converts a message to a pool's capacity.
func CapacityFrom(m *pb.PoolCapacity) fleet.PoolCapacity {
	c := fleet.PoolCapacity{
		Pool:               PoolRefFrom(m.GetPool()),
		ReadyEndpoints:     m.GetReadyEndpoints(),
		TotalEndpoints:     m.GetTotalEndpoints(),
		QueueDepth:         m.GetQueueDepth(),
		RunningRequests:    m.GetRunningRequests(),
		KVCacheUtilization: m.GetKvCacheUtilization(),
		Saturation:         m.GetSaturation(),
		Saturated:          m.GetSaturated(),
		LoRAAdapters:       m.GetLoraAdapters(),
		Models:             m.GetModels(),
		PrefixSketch:       prefixSketchFrom(m.GetPrefixSketch()),
		GPUUtilization:     optional(m.GetGpuUtilization(), m != nil && m.GpuUtilization != nil),
		AdmittedTotal:      m.GetAdmittedTotal(),
		ShedTotal:          m.GetShedTotal(),
		ObservedAt:         fromTimestamp(m.GetObservedAt()),
		Spilling:           m.GetSpilling(),
		SpillTarget:        m.GetSpillTarget(),
		SpillTargetRegion:  m.GetSpillTargetRegion(),
		SpilledTotal:       m.GetSpilledTotal(),
		ScrapeFailures:     m.GetScrapeFailures(),
	}
	for _, e := range m.GetEndpoints() {
		c.Endpoints = append(c.Endpoints, fleet.EndpointCapacity{
			Address:            e.GetAddress(),
			QueueDepth:         e.GetQueueDepth(),
			RunningRequests:    e.GetRunningRequests(),
			KVCacheUtilization: e.GetKvCacheUtilization(),
			Ready:              e.GetReady(),
			ScrapeError:        e.GetScrapeError(),
			GPUUtilization:     optional(e.GetGpuUtilization(), e.GpuUtilization != nil),
		})
	}
	return c
}

// ClusterState converts a liveness state to its enum.
func ClusterState(s fleet.ClusterState) pb.ClusterState {
	switch s {
	case fleet.StateAlive:
		return pb.ClusterState_CLUSTER_STATE_ALIVE
	case fleet.StateGone:
		return pb.ClusterState_CLUSTER_STATE_GONE
	}
	return pb.ClusterState_CLUSTER_STATE_UNSPECIFIED
}

// ClusterStateFrom converts an enum to a liveness state.
func ClusterStateFrom(s pb.ClusterState) fleet.ClusterState {
	switch s {
	case pb.ClusterState_CLUSTER_STATE_ALIVE:
		return fleet.StateAlive
	case pb.ClusterState_CLUSTER_STATE_GONE:
		return fleet.StateGone
	}
	return fleet.StateUnknown
}

// Cluster converts a registered cluster to its message.
func Cluster(c fleet.Cluster) *pb.Cluster {
	return &pb.Cluster{
		Info:         ClusterInfo(c.Info),
		State:        ClusterState(c.State),
		RegisteredAt: timestamp(c.RegisteredAt),
		LastSeen:     timestamp(c.LastSeen),
		HubId:        c.HubID,
		Exports:      uint32(c.Exports),
		Cordoned:     c.Cordoned,
	}
}

// ClusterFrom converts a message to a registered cluster.
func ClusterFrom(m *pb.Cluster) fleet.Cluster {
	return fleet.Cluster{
		Info:         ClusterInfoFrom(m.GetInfo()),
		State:        ClusterStateFrom(m.GetState()),
		RegisteredAt: fromTimestamp(m.GetRegisteredAt()),
		LastSeen:     fromTimestamp(m.GetLastSeen()),
		HubID:        m.GetHubId(),
		Exports:      int(m.GetExports()),
		Cordoned:     m.GetCordoned(),
	}
}

// Liveness converts a cluster to the liveness record of a view update.
func Liveness(c fleet.Cluster) *pb.ClusterLiveness {
	return &pb.ClusterLiveness{
		ClusterId:      c.Info.ID,
		Region:         c.Info.Region,
		Zone:           c.Info.Zone,
		GatewayAddress: c.Info.GatewayAddress,
		State:          ClusterState(c.State),
		LastSeen:       timestamp(c.LastSeen),
		Cordoned:       c.Cordoned,
	}
}

// LivenessFrom converts a liveness record to a cluster (without registration time).
func LivenessFrom(m *pb.ClusterLiveness) fleet.Cluster {
	return fleet.Cluster{
		Info: fleet.ClusterInfo{
			ID:             m.GetClusterId(),
			Region:         m.GetRegion(),
			Zone:           m.GetZone(),
			GatewayAddress: m.GetGatewayAddress(),
		},
		State:    ClusterStateFrom(m.GetState()),
		LastSeen: fromTimestamp(m.GetLastSeen()),
		Cordoned: m.GetCordoned(),
	}
}

// Import converts an import to its message.
func Import(i fleet.Import) *pb.Import {
	m := &pb.Import{Pool: PoolRef(i.Pool), ExportingClusters: i.ExportingClusters}
	for _, s := range i.Importers {
		m.Importers = append(m.Importers, &pb.ImportStatus{ClusterId: s.ClusterID, Imported: s.Imported, Reason: s.Reason, Message: s.Message})
	}
	return m
}

// ImportFrom converts a message to an import.
func ImportFrom(m *pb.Import) fleet.Import {
	i := fleet.Import{Pool: PoolRefFrom(m.GetPool()), ExportingClusters: m.GetExportingClusters()}
	for _, s := range m.GetImporters() {
		i.Importers = append(i.Importers, fleet.ImportStatus{ClusterID: s.GetClusterId(), Imported: s.GetImported(), Reason: s.GetReason(), Message: s.GetMessage()})
	}
	return i
}

// PoolImportStatuses converts a spoke's import statuses to their message.
func PoolImportStatuses(states []fleet.PoolImportStatus) *pb.ImportReport {
	m := &pb.ImportReport{Pools: make([]*pb.PoolImportStatus, 0, len(states))}
	for _, s := range states {
		m.Pools = append(m.Pools, &pb.PoolImportStatus{Pool: PoolRef(s.Pool), Imported: s.Imported, Reason: s.Reason, Message: s.Message})
	}
	return m
}

// PoolImportStatusesFrom converts an import report to the spoke's import statuses.
func PoolImportStatusesFrom(m *pb.ImportReport) []fleet.PoolImportStatus {
	out := make([]fleet.PoolImportStatus, 0, len(m.GetPools()))
	for _, s := range m.GetPools() {
		out = append(out, fleet.PoolImportStatus{Pool: PoolRefFrom(s.GetPool()), Imported: s.GetImported(), Reason: s.GetReason(), Message: s.GetMessage()})
	}
	return out
}

// RemoteCapacity converts a received capacity report to its message, with its age by this
// process's clock (clock.Now): RemoteCapacityAt at clock.Now().
func RemoteCapacity(r fleet.RemoteCapacity) *pb.RemoteCapacity {
	return RemoteCapacityAt(r, clock.Now())
}

// RemoteCapacityAt converts a received capacity report to its message as sent at now: age is
// now − ReceivedAt (never negative), the duration that crosses hosts; received_at is the
// sender's clock, for display only. A report with no ReceivedAt has no age.
func RemoteCapacityAt(r fleet.RemoteCapacity, now time.Time) *pb.RemoteCapacity {
	m := &pb.RemoteCapacity{ClusterId: r.ClusterID, Capacity: Capacity(r.Capacity), ReceivedAt: timestamp(r.ReceivedAt)}
	if !r.ReceivedAt.IsZero() {
		m.Age = durationpb.New(max(now.Sub(r.ReceivedAt), 0))
	}
	return m
}

// RemoteCapacityFrom converts a received message to a capacity report, by this process's clock
// (clock.Now): RemoteCapacityFromAt at clock.Now().
func RemoteCapacityFrom(m *pb.RemoteCapacity) fleet.RemoteCapacity {
	return RemoteCapacityFromAt(m, clock.Now())
}

// RemoteCapacityFromAt converts a message received at now to a capacity report. ReceivedAt is
// now − age, on the receiver's clock, so that freshness never compares two hosts' clocks; only
// a message without age (from a sender that does not set it) falls back to its received_at. A
// negative age counts as zero.
func RemoteCapacityFromAt(m *pb.RemoteCapacity, now time.Time) fleet.RemoteCapacity {
	rc := fleet.RemoteCapacity{
		ClusterID:  m.GetClusterId(),
		Capacity:   CapacityFrom(m.GetCapacity()),
		ReceivedAt: fromTimestamp(m.GetReceivedAt()),
	}
	if age := m.GetAge(); age != nil {
		rc.ReceivedAt = now.Add(-max(age.AsDuration(), 0))
	}
	return rc
}

// CapacityKey converts a capacity key to its message.
func CapacityKey(k fleet.CapacityKey) *pb.CapacityKey {
	return &pb.CapacityKey{ClusterId: k.ClusterID, Pool: PoolRef(k.Pool)}
}

// CapacityKeyFrom converts a message to a capacity key.
func CapacityKeyFrom(m *pb.CapacityKey) fleet.CapacityKey {
	return fleet.CapacityKey{ClusterID: m.GetClusterId(), Pool: PoolRefFrom(m.GetPool())}
}

func timestamp(t time.Time) *timestamppb.Timestamp {
	if t.IsZero() {
		return nil
	}
	return timestamppb.New(t)
}

func fromTimestamp(t *timestamppb.Timestamp) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.AsTime()
}

// HopKeys converts the fleet's hop keys, first the signing one, to their message.
func HopKeys(keys []fleet.HopKey) *pb.HopKeys {
	m := &pb.HopKeys{Keys: make([]*pb.HopKey, 0, len(keys))}
	for _, k := range keys {
		m.Keys = append(m.Keys, &pb.HopKey{Id: k.ID, Secret: slices.Clone(k.Secret)})
	}
	return m
}

// HopKeysFrom converts a message to the fleet's hop keys, in its order (the first signs). The
// secrets are copies; nil gives none.
func HopKeysFrom(m *pb.HopKeys) []fleet.HopKey {
	keys := make([]fleet.HopKey, 0, len(m.GetKeys()))
	for _, k := range m.GetKeys() {
		keys = append(keys, fleet.HopKey{ID: k.GetId(), Secret: slices.Clone(k.GetSecret())})
	}
	return keys
}

// SetExportPolicy writes the hub's export policy into a Welcome. A MaxExports beyond the field's
// range is sent as its largest value; a negative one as zero (no limit).
func SetExportPolicy(w *pb.Welcome, p fleet.ExportPolicy) {
	w.AllowedExportNamespaces = slices.Clone(p.AllowedNamespaces)
	w.DeniedExportNamespaces = slices.Clone(p.DeniedNamespaces)
	w.MaxExports = uint32(min(max(int64(p.MaxExports), 0), math.MaxUint32))
}

// ExportPolicyFrom reads the export policy a Welcome announces; a Welcome without one (nil, or
// from a hub that does not announce it) gives the zero policy, which refuses nothing.
func ExportPolicyFrom(w *pb.Welcome) fleet.ExportPolicy {
	return fleet.ExportPolicy{
		AllowedNamespaces: slices.Clone(w.GetAllowedExportNamespaces()),
		DeniedNamespaces:  slices.Clone(w.GetDeniedExportNamespaces()),
		MaxExports:        int(min(uint64(w.GetMaxExports()), math.MaxInt)),
	}
}

func prefixSketch(s *fleet.PrefixSketch) *pb.PrefixSketch {
	if s == nil {
		return nil
	}
	return &pb.PrefixSketch{Bloom: s.Bloom, HashFunctions: s.HashFunctions, Sample: s.Sample, BlockBytes: s.BlockBytes, Entries: s.Entries}
}

func prefixSketchFrom(m *pb.PrefixSketch) *fleet.PrefixSketch {
	if m == nil {
		return nil
	}
	return &fleet.PrefixSketch{Bloom: m.GetBloom(), HashFunctions: m.GetHashFunctions(), Sample: m.GetSample(), BlockBytes: m.GetBlockBytes(), Entries: m.GetEntries()}
}

// optional returns a copy of v when set, else nil.
func optional(v float64, set bool) *float64 {
	if !set {
		return nil
	}
	return &v
}
