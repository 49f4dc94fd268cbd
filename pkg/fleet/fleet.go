// Package fleet holds the domain types that the hub, the spokes and hubctl share: clusters, pool
// references, exports and per-pool capacity. It knows nothing of protobuf, etcd or Kubernetes;
// pkg/fleetpb converts these types to and from the spillway.v1 messages.
package fleet

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"time"
)

// PoolRef names an InferencePool. The same namespace/name is one pool across a ClusterSet.
type PoolRef struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
}

// String returns namespace/name.
func (p PoolRef) String() string { return p.Namespace + "/" + p.Name }

// Compare orders pool references by namespace, then name.
func (p PoolRef) Compare(o PoolRef) int {
	if p.Namespace != o.Namespace {
		if p.Namespace < o.Namespace {
			return -1
		}
		return 1
	}
	switch {
	case p.Name < o.Name:
		return -1
	case p.Name > o.Name:
		return 1
	}
	return 0
}

// ClusterInfo is what a spoke says about its cluster when it registers.
type ClusterInfo struct {
	ID             string `json:"id"`
	Region         string `json:"region"`
	Zone           string `json:"zone,omitempty"`
	GatewayAddress string `json:"gatewayAddress,omitempty"`
	Version        string `json:"version,omitempty"`
	ClusterSet     string `json:"clusterSet,omitempty"`
	// Labels are the operator's labels of the cluster (the spoke's --cluster-labels), for
	// selecting clusters (hubctl get clusters -l).
	Labels map[string]string `json:"labels,omitempty"`
}

// Equal reports whether two clusters' information is the same.
func (c ClusterInfo) Equal(o ClusterInfo) bool {
	return c.ID == o.ID && c.Region == o.Region && c.Zone == o.Zone && c.GatewayAddress == o.GatewayAddress &&
		c.Version == o.Version && c.ClusterSet == o.ClusterSet && maps.Equal(c.Labels, o.Labels)
}

// Export is one pool exported by one cluster.
type Export struct {
	Pool        PoolRef           `json:"pool"`
	TargetPorts []uint32          `json:"targetPorts"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// Equal reports whether two exports carry the same content.
func (e Export) Equal(o Export) bool {
	if e.Pool != o.Pool || !slices.Equal(e.TargetPorts, o.TargetPorts) || len(e.Labels) != len(o.Labels) {
		return false
	}
	for k, v := range e.Labels {
		if ov, ok := o.Labels[k]; !ok || ov != v {
			return false
		}
	}
	return true
}

// EndpointCapacity is one endpoint's load, for Endpoint Mode consumers.
type EndpointCapacity struct {
	Address            string  `json:"address"`
	QueueDepth         uint32  `json:"queueDepth"`
	RunningRequests    uint32  `json:"runningRequests"`
	KVCacheUtilization float64 `json:"kvCacheUtilization"`
	Ready              bool    `json:"ready"`
	// ScrapeError is the kind of the endpoint's last scrape failure; empty when it succeeded.
	ScrapeError string `json:"scrapeError,omitempty"`
	// GPUUtilization is the utilisation, 0..1, of the GPUs a DCGM exporter attributes to the
	// endpoint's Pod; nil when none does.
	GPUUtilization *float64 `json:"gpuUtilization,omitempty"`
}

// PoolCapacity aggregates one cluster's endpoints of one pool.
type PoolCapacity struct {
	Pool               PoolRef  `json:"pool"`
	ReadyEndpoints     uint32   `json:"readyEndpoints"`
	TotalEndpoints     uint32   `json:"totalEndpoints"`
	QueueDepth         uint32   `json:"queueDepth"`
	RunningRequests    uint32   `json:"runningRequests"`
	KVCacheUtilization float64  `json:"kvCacheUtilization"`
	Saturation         float64  `json:"saturation"`
	Saturated          bool     `json:"saturated"`
	LoRAAdapters       []string `json:"loraAdapters,omitempty"`
	// Models the pool's ready endpoints serve (base models; adapters are in LoRAAdapters).
	Models []string `json:"models,omitempty"`
	// PrefixSketch summarises the prompt prefixes the pool holds (cache-aware spill); nil when
	// the reporting spoke sends none.
	PrefixSketch *PrefixSketch `json:"prefixSketch,omitempty"`
	// GPUUtilization is the mean GPU utilisation of the ready endpoints that have one; nil when
	// none has.
	GPUUtilization *float64           `json:"gpuUtilization,omitempty"`
	AdmittedTotal  uint64             `json:"admittedTotal"`
	ShedTotal      uint64             `json:"shedTotal"`
	ObservedAt     time.Time          `json:"observedAt"`
	Endpoints      []EndpointCapacity `json:"endpoints,omitempty"`
	// Spill state of the pool at the reporting cluster.
	Spilling          bool   `json:"spilling,omitempty"`
	SpillTarget       string `json:"spillTarget,omitempty"`
	SpillTargetRegion string `json:"spillTargetRegion,omitempty"`
	SpilledTotal      uint64 `json:"spilledTotal,omitempty"`
	// ScrapeFailures counts the endpoints whose last scrape failed, by the kind of failure.
	ScrapeFailures map[string]uint32 `json:"scrapeFailures,omitempty"`
}

// PrefixSketch is a Bloom filter of a sample of a pool's recent prompt-prefix block hashes
// (pkg/epp/prefix.Sketch has the details).
type PrefixSketch struct {
	Bloom         []byte `json:"bloom"`
	HashFunctions uint32 `json:"hashFunctions"`
	Sample        uint32 `json:"sample"`
	BlockBytes    uint32 `json:"blockBytes"`
	Entries       uint32 `json:"entries"`
}

// Equal reports whether two sketches (either nil) are the same.
func (s *PrefixSketch) Equal(o *PrefixSketch) bool {
	if s == nil || o == nil {
		return s == o
	}
	return s.HashFunctions == o.HashFunctions && s.Sample == o.Sample && s.BlockBytes == o.BlockBytes &&
		s.Entries == o.Entries && bytes.Equal(s.Bloom, o.Bloom)
}

// equalPtr reports whether two optional values are both absent, or both present and equal.
func equalPtr[T comparable](a, b *T) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// Equal reports whether two endpoints' capacities are the same.
func (e EndpointCapacity) Equal(o EndpointCapacity) bool {
	return e.Address == o.Address && e.QueueDepth == o.QueueDepth && e.RunningRequests == o.RunningRequests &&
		e.KVCacheUtilization == o.KVCacheUtilization && e.Ready == o.Ready && e.ScrapeError == o.ScrapeError &&
		equalPtr(e.GPUUtilization, o.GPUUtilization)
}

// SameLoad reports whether two aggregates describe the same load, ignoring when they were observed
// and the monotonic counters. A spoke uses it to send a report only when something changed.
func (c PoolCapacity) SameLoad(o PoolCapacity) bool {
	return c.Pool == o.Pool && c.ReadyEndpoints == o.ReadyEndpoints && c.TotalEndpoints == o.TotalEndpoints &&
		c.QueueDepth == o.QueueDepth && c.RunningRequests == o.RunningRequests &&
		c.KVCacheUtilization == o.KVCacheUtilization && c.Saturation == o.Saturation &&
		c.Saturated == o.Saturated && slices.Equal(c.LoRAAdapters, o.LoRAAdapters) &&
		slices.Equal(c.Models, o.Models) && c.PrefixSketch.Equal(o.PrefixSketch) && equalPtr(c.GPUUtilization, o.GPUUtilization) &&
		c.Spilling == o.Spilling && c.SpillTarget == o.SpillTarget && c.SpillTargetRegion == o.SpillTargetRegion &&
		slices.EqualFunc(c.Endpoints, o.Endpoints, EndpointCapacity.Equal) && maps.Equal(c.ScrapeFailures, o.ScrapeFailures)
}

// ClusterState is a cluster's liveness as the hub sees it.
type ClusterState int

const (
	// StateUnknown is the zero value.
	StateUnknown ClusterState = iota
	// StateAlive means the cluster's spoke holds a live session.
	StateAlive
	// StateGone means the cluster is registered but its session lease has lapsed.
	StateGone
)

func (s ClusterState) String() string {
	switch s {
	case StateAlive:
		return "Alive"
	case StateGone:
		return "Gone"
	}
	return "Unknown"
}

// Cluster is a registered cluster with its liveness.
type Cluster struct {
	Info         ClusterInfo
	State        ClusterState
	RegisteredAt time.Time
	LastSeen     time.Time
	HubID        string
	Exports      int
	// Cordoned is set while the cluster, or its region, is cordoned: no spoke spills to it.
	Cordoned bool
}

// Import lists the clusters exporting one pool, and what each live cluster reported of its
// InferencePoolImport for it.
type Import struct {
	Pool              PoolRef
	ExportingClusters []string
	Importers         []ImportStatus
}

// ImportStatus is one cluster's InferencePoolImport for one pool.
type ImportStatus struct {
	ClusterID string `json:"clusterId"`
	// Imported is true when the cluster's InferencePoolImport lists every exporting cluster.
	Imported bool `json:"imported"`
	// Reason (CamelCase) and Message say why not.
	Reason  string `json:"reason,omitempty"`
	Message string `json:"message,omitempty"`
}

// PoolImportStatus is what a spoke reports of its InferencePoolImport for one pool.
type PoolImportStatus struct {
	Pool     PoolRef
	Imported bool
	Reason   string
	Message  string
}

// RemoteCapacity is one cluster's capacity for one pool with the time the hub received it.
type RemoteCapacity struct {
	ClusterID  string
	Capacity   PoolCapacity
	ReceivedAt time.Time
}

// CapacityKey identifies one cluster's capacity report for one pool.
type CapacityKey struct {
	ClusterID string
	Pool      PoolRef
}

func (k CapacityKey) String() string { return fmt.Sprintf("%s@%s", k.Pool, k.ClusterID) }

// HopKey is one key of the fleet's hop-marker key set, which the hub hands to every spoke on the
// sync stream. The first key of a set signs new markers; every key of the set verifies them, so a
// rotation adds a key before the old one leaves.
type HopKey struct {
	// ID names the key in a marker's kid field.
	ID string
	// Secret is the HMAC-SHA256 key.
	Secret []byte
}
