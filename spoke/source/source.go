// Package source tells the spoke which pools its cluster has and which endpoints serve them. Two
// sources sit behind one interface: Kubernetes (InferencePools and the Pods they select) and a
// static YAML file, the default for the demo and for clusters without Kubernetes.
package source

import (
	"context"
	"slices"

	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

// Pool is one local pool.
type Pool struct {
	Ref         fleet.PoolRef
	TargetPorts []uint32
	Labels      map[string]string
	// Export is true when the pool is exported to the ClusterSet.
	Export    bool
	Endpoints []Endpoint
	// EndpointPicker names the Service of the pool's EPP and EndpointPickerPort its port
	// (GIE's spec.endpointPickerRef); empty and 0 when the pool names none.
	EndpointPicker     string
	EndpointPickerPort uint32
}

// Endpoint is one model-server address of a pool.
type Endpoint struct {
	// Address is ip:port.
	Address string
	Engine  modelmetrics.Engine
	// Models the endpoint serves; empty means every model the pool serves.
	Models []string
	// Pod is the endpoint's Pod, namespace/name, with the Kubernetes source; a DCGM exporter
	// attributes GPUs to it.
	Pod string
}

// Source is where the spoke learns its pools.
type Source interface {
	// Run keeps the pools current until ctx ends.
	Run(ctx context.Context) error
	// Pools returns the current pools, sorted by reference.
	Pools() []Pool
	// Changed returns a channel closed at the next change of Pools.
	Changed() <-chan struct{}
}

// Exports returns the exports of the exported pools.
func Exports(pools []Pool) []fleet.Export {
	var out []fleet.Export
	for _, p := range pools {
		if p.Export {
			out = append(out, fleet.Export{Pool: p.Ref, TargetPorts: slices.Clone(p.TargetPorts), Labels: p.Labels})
		}
	}
	return out
}
