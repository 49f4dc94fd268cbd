package server

import (
	"context"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/view"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// ListClusters returns every registered cluster.
func (s *Server) ListClusters(context.Context, *pb.ListClustersRequest) (*pb.ListClustersResponse, error) {
	resp := &pb.ListClustersResponse{}
	for _, c := range s.model.Clusters() {
		resp.Clusters = append(resp.Clusters, fleetpb.Cluster(c))
	}
	return resp, nil
}

// GetCluster returns one cluster.
func (s *Server) GetCluster(_ context.Context, req *pb.GetClusterRequest) (*pb.GetClusterResponse, error) {
	if err := checkName("cluster_id", req.GetClusterId(), 253, false); err != nil {
		return nil, toStatus(err)
	}
	c, ok := s.model.Cluster(req.GetClusterId())
	if !ok {
		return nil, toStatus(registry.ErrNotFound)
	}
	return &pb.GetClusterResponse{Cluster: fleetpb.Cluster(c)}, nil
}

// ListPools returns every exported pool with its members' capacity.
func (s *Server) ListPools(context.Context, *pb.ListPoolsRequest) (*pb.ListPoolsResponse, error) {
	resp := &pb.ListPoolsResponse{}
	for _, p := range s.model.Pools() {
		resp.Pools = append(resp.Pools, poolMessage(p))
	}
	return resp, nil
}

// GetPool returns one exported pool.
func (s *Server) GetPool(_ context.Context, req *pb.GetPoolRequest) (*pb.GetPoolResponse, error) {
	if err := validatePoolRef("pool", req.GetPool()); err != nil {
		return nil, toStatus(err)
	}
	want := fleetpb.PoolRefFrom(req.GetPool())
	for _, p := range s.model.Pools() {
		if p.Pool == want {
			return &pb.GetPoolResponse{Pool: poolMessage(p)}, nil
		}
	}
	return nil, toStatus(registry.ErrNotFound)
}

// ListImports returns every import.
func (s *Server) ListImports(context.Context, *pb.ListImportsRequest) (*pb.ListImportsResponse, error) {
	resp := &pb.ListImportsResponse{}
	for _, i := range s.model.Imports() {
		resp.Imports = append(resp.Imports, fleetpb.Import(i))
	}
	return resp, nil
}

// Watch streams a snapshot of the fleet, then its changes.
func (s *Server) Watch(_ *pb.WatchRequest, stream pb.AdminService_WatchServer) error {
	ctx := stream.Context()
	var inc string
	var seq uint64
	for {
		changed := s.model.Changed()
		u := s.model.Since(inc, seq, nil)
		inc, seq = s.model.Incarnation(), u.Seq
		if !u.Empty() {
			if err := stream.Send(&pb.WatchResponse{Update: viewUpdate(inc, u)}); err != nil {
				return toStatus(err)
			}
			s.metrics.viewUpdates.WithLabelValues(updateKind(u)).Inc()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
	}
}

func poolMessage(p view.Pool) *pb.Pool {
	m := &pb.Pool{Pool: fleetpb.PoolRef(p.Pool)}
	for _, mem := range p.Members {
		pm := &pb.PoolMember{
			ClusterId: mem.Cluster.Info.ID,
			Region:    mem.Cluster.Info.Region,
			State:     fleetpb.ClusterState(mem.Cluster.State),
		}
		if mem.Capacity != nil {
			pm.Capacity = fleetpb.RemoteCapacity(*mem.Capacity)
		}
		m.Members = append(m.Members, pm)
	}
	return m
}
