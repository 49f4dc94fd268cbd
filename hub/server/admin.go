package server

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/view"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// viewLoaded returns ErrViewNotLoaded until the fleet view holds the registry.
func (s *Server) viewLoaded() error {
	if !s.model.Loaded() {
		return ErrViewNotLoaded
	}
	return nil
}

// ListClusters returns the registered clusters, a page at a time.
func (s *Server) ListClusters(_ context.Context, req *pb.ListClustersRequest) (*pb.ListClustersResponse, error) {
	if err := s.viewLoaded(); err != nil {
		return nil, s.fail(err)
	}
	cs, next, err := listPage(req, s.model.ClusterIDs(), func(id string) string { return id },
		func(id string) (*pb.Cluster, bool) {
			c, ok := s.model.Cluster(id)
			return fleetpb.Cluster(c), ok
		})
	if err != nil {
		return nil, s.fail(err)
	}
	return &pb.ListClustersResponse{Clusters: cs, NextPageToken: next}, nil
}

// ListHubs returns the hub replicas registered in etcd, by hub ID, and which one leads.
func (s *Server) ListHubs(ctx context.Context, _ *pb.ListHubsRequest) (*pb.ListHubsResponse, error) {
	hubs, leader, err := s.store.HubsAndLeader(ctx)
	if err != nil {
		return nil, s.fail(err)
	}
	resp := &pb.ListHubsResponse{AnsweredBy: s.opts.HubID}
	for _, h := range hubs {
		r := &pb.HubReplica{HubId: h.ID, AdminAddress: h.Address, Incarnation: h.Incarnation, Leader: h.ID == leader}
		if !h.StartedAt.IsZero() {
			r.StartedAt = timestamppb.New(h.StartedAt)
		}
		resp.Hubs = append(resp.Hubs, r)
	}
	slices.SortFunc(resp.Hubs, func(a, b *pb.HubReplica) int { return strings.Compare(a.GetHubId(), b.GetHubId()) })
	return resp, nil
}

// GetCluster returns one cluster.
func (s *Server) GetCluster(_ context.Context, req *pb.GetClusterRequest) (*pb.GetClusterResponse, error) {
	if err := checkName("cluster_id", req.GetClusterId(), 253, false); err != nil {
		return nil, s.fail(err)
	}
	if err := s.viewLoaded(); err != nil {
		return nil, s.fail(err)
	}
	c, ok := s.model.Cluster(req.GetClusterId())
	if !ok {
		return nil, s.fail(fmt.Errorf("cluster %s: %w", req.GetClusterId(), registry.ErrNotFound))
	}
	return &pb.GetClusterResponse{Cluster: fleetpb.Cluster(c), Gossip: s.gossipState(c.Info.ID)}, nil
}

// Gossip is the replica's gossip member, as GetCluster reads it.
type Gossip interface {
	// Dead reports whether the member was seen and is now dead or gone.
	Dead(name string) bool
	// Alive returns the names of the members alive now.
	Alive() []string
}

// SetGossip gives the replica its gossip member: GetCluster then says what gossip knows of the
// cluster. Spokes join gossip under their cluster ID.
func (s *Server) SetGossip(g Gossip) { s.gossip.Store(&g) }

// gossipState is the cluster's liveness by gossip: alive, dead or unknown; "" without gossip.
func (s *Server) gossipState(cluster string) string {
	g := s.gossip.Load()
	switch {
	case g == nil:
		return ""
	case slices.Contains((*g).Alive(), cluster):
		return "alive"
	case (*g).Dead(cluster):
		return "dead"
	}
	return "unknown"
}

// ListPools returns the exported pools with their members' capacity, a page at a time.
func (s *Server) ListPools(_ context.Context, req *pb.ListPoolsRequest) (*pb.ListPoolsResponse, error) {
	if err := s.viewLoaded(); err != nil {
		return nil, s.fail(err)
	}
	ps, next, err := listPage(req, s.model.PoolRefs(), poolKeyOrder, func(p fleet.PoolRef) (*pb.Pool, bool) {
		pool, ok := s.model.Pool(p)
		return poolMessage(pool), ok
	})
	if err != nil {
		return nil, s.fail(err)
	}
	return &pb.ListPoolsResponse{Pools: ps, NextPageToken: next}, nil
}

// GetPool returns one exported pool.
func (s *Server) GetPool(_ context.Context, req *pb.GetPoolRequest) (*pb.GetPoolResponse, error) {
	if err := validatePoolRef("pool", req.GetPool()); err != nil {
		return nil, s.fail(err)
	}
	if err := s.viewLoaded(); err != nil {
		return nil, s.fail(err)
	}
	ref := fleetpb.PoolRefFrom(req.GetPool())
	p, ok := s.model.Pool(ref)
	if !ok {
		return nil, s.fail(fmt.Errorf("pool %s is exported by no cluster: %w", ref, registry.ErrNotFound))
	}
	return &pb.GetPoolResponse{Pool: poolMessage(p)}, nil
}

// ListImports returns the imports, a page at a time.
func (s *Server) ListImports(_ context.Context, req *pb.ListImportsRequest) (*pb.ListImportsResponse, error) {
	if err := s.viewLoaded(); err != nil {
		return nil, s.fail(err)
	}
	is, next, err := listPage(req, s.model.PoolRefs(), poolKeyOrder, func(p fleet.PoolRef) (*pb.Import, bool) {
		i, ok := s.model.Import(p)
		return fleetpb.Import(i), ok
	})
	if err != nil {
		return nil, s.fail(err)
	}
	return &pb.ListImportsResponse{Imports: is, NextPageToken: next}, nil
}

// Watch streams a snapshot of the fleet, then its changes, at least ViewInterval apart (what
// changes meanwhile goes out together). The snapshot waits for the view's first load of the
// registry, at most viewLoadWait (then the watch ends with Unavailable).
func (s *Server) Watch(req *pb.WatchRequest, stream pb.AdminService_WatchServer) error {
	ctx := stream.Context()
	wait, cancel := context.WithTimeoutCause(ctx, viewLoadWait, ErrViewNotLoaded)
	err := s.model.WaitLoaded(wait)
	cancel()
	switch {
	case ctx.Err() != nil:
		return nil
	case err != nil:
		return s.fail(err)
	}
	var inc string
	var seq uint64
	sub := view.Subscriber{NoStates: req.GetWithoutImportStates()}
	incomplete := false // the mark of the last update sent
	for {
		changed := s.model.Changed()
		u := s.model.SinceFor(inc, seq, sub)
		if incomplete && !u.Incomplete {
			u = s.model.SinceFor("", 0, sub) // complete again: a snapshot says what is gone
		}
		inc, seq = s.model.Incarnation(), u.Seq
		if !u.Empty() || u.Incomplete != incomplete {
			if err := sendView(viewUpdate(inc, u), func(v *pb.ViewUpdate) error {
				return stream.Send(&pb.WatchResponse{Update: v})
			}); err != nil {
				return s.fail(err)
			}
			s.metrics.viewUpdates.WithLabelValues(updateKind(u)).Inc()
			incomplete = u.Incomplete
		}
		select {
		case <-ctx.Done():
			return nil
		case <-changed:
		}
		if err := sleepCtx(ctx, s.opts.ViewInterval); err != nil {
			return nil
		}
	}
}

// sleepCtx waits d, or until ctx ends (then it returns ctx's error).
func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// poolKeyOrder names a pool in the order of fleet.PoolRef.Compare (namespace, then name), for
// page tokens: no DNS label holds a NUL.
func poolKeyOrder(p fleet.PoolRef) string { return p.Namespace + "\x00" + p.Name }

func poolMessage(p view.Pool) *pb.Pool {
	m := &pb.Pool{Pool: fleetpb.PoolRef(p.Pool)}
	for _, mem := range p.Members {
		pm := &pb.PoolMember{
			ClusterId: mem.Cluster.Info.ID,
			Region:    mem.Cluster.Info.Region,
			State:     fleetpb.ClusterState(mem.Cluster.State),
			Labels:    mem.Labels,
		}
		if mem.Capacity != nil {
			pm.Capacity = fleetpb.RemoteCapacity(*mem.Capacity)
		}
		m.Members = append(m.Members, pm)
	}
	return m
}

// WhoAmI returns the caller's identity and role.
func (s *Server) WhoAmI(ctx context.Context, _ *pb.WhoAmIRequest) (*pb.WhoAmIResponse, error) {
	who, err := mustCaller(ctx)
	if err != nil {
		return nil, s.fail(err)
	}
	return &pb.WhoAmIResponse{Identity: who.id.String(), Role: who.role, HubId: s.opts.HubID, HubVersion: s.opts.Version}, nil
}

// DefaultTokenTTL is how long a bootstrap token lives when CreateToken gives no TTL.
const DefaultTokenTTL = time.Hour

// CreateToken creates a bootstrap token for the join flow.
func (s *Server) CreateToken(ctx context.Context, req *pb.CreateTokenRequest) (*pb.CreateTokenResponse, error) {
	who, err := mustCaller(ctx)
	if err != nil {
		return nil, s.fail(err)
	}
	if s.opts.CA == nil {
		return nil, s.fail(ErrJoinDisabled)
	}
	var errs []error
	if len(req.GetClusterIds()) == 0 {
		errs = append(errs, invalid("cluster_ids", "at least one cluster ID is required"))
	}
	if n := len(req.GetClusterIds()); n > registry.MaxTokenClusters {
		errs = append(errs, invalid("cluster_ids", "%d cluster IDs, at most %d allowed", n, registry.MaxTokenClusters))
	} else {
		for i, id := range req.GetClusterIds() {
			// A cluster identity's name is a DNS-1123 label.
			errs = append(errs, checkName(fmt.Sprintf("cluster_ids[%d]", i), id, 63, true))
		}
	}
	ttl := DefaultTokenTTL
	if req.GetTtl() != nil {
		ttl = req.GetTtl().AsDuration()
		if ttl <= 0 || ttl > registry.MaxTokenTTL {
			errs = append(errs, invalid("ttl", "%s outside (0, %s]", ttl, registry.MaxTokenTTL))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, s.fail(err)
	}
	tok, rec, err := s.store.CreateToken(ctx, registry.TokenSpec{
		Clusters: req.GetClusterIds(), TTL: ttl, AutoApprove: req.GetAutoApprove(), CreatedBy: who.id.String(),
	})
	if err != nil {
		return nil, s.fail(err)
	}
	s.adminLog.Info("bootstrap token created", "token", tok.ID, "clusters", rec.Clusters, "autoApprove", rec.AutoApprove, "expiresAt", rec.ExpiresAt, "by", who.id.String())
	return &pb.CreateTokenResponse{
		Token:      tok.String(),
		CaCertHash: tlsconfig.SPKIHash(s.opts.CA.Certificate()),
		ExpiresAt:  timestamppb.New(rec.ExpiresAt),
	}, nil
}

// ListJoinRequests lists the join requests, pending and decided (each until its token expires).
func (s *Server) ListJoinRequests(ctx context.Context, _ *pb.ListJoinRequestsRequest) (*pb.ListJoinRequestsResponse, error) {
	recs, err := s.store.ListJoins(ctx)
	if err != nil {
		return nil, s.fail(err)
	}
	resp := &pb.ListJoinRequestsResponse{}
	for _, r := range recs {
		resp.Requests = append(resp.Requests, joinInfo(r))
	}
	return resp, nil
}

// ApproveCluster approves the pending join request of a cluster: the CA signs its CSR, and the
// spoke gets the certificate at its next Join. With public_key_sha256 set, the request must
// hold that key (FailedPrecondition otherwise): the approval is of the request the admin saw.
func (s *Server) ApproveCluster(ctx context.Context, req *pb.ApproveClusterRequest) (*pb.ApproveClusterResponse, error) {
	who, err := mustCaller(ctx)
	if err != nil {
		return nil, s.fail(err)
	}
	errs := []error{checkName("cluster_id", req.GetClusterId(), 63, true)}
	if key := req.GetPublicKeySha256(); key != "" {
		errs = append(errs, checkKeyHash("public_key_sha256", key))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, s.fail(err)
	}
	if s.opts.CA == nil {
		return nil, s.fail(ErrJoinDisabled)
	}
	jr, err := s.approve(ctx, s.adminLog, req.GetClusterId(), req.GetPublicKeySha256(), who.id.String())
	if err != nil {
		return nil, s.fail(err)
	}
	return &pb.ApproveClusterResponse{Request: joinInfo(jr)}, nil
}

// RevokeCluster refuses every certificate of a cluster issued until now: its session on this
// replica ends at once (every other replica's when Run sees the revocation), its exports are
// withdrawn when its lease lapses (the usual damping), its join request is denied, no bootstrap
// token made until now joins it again (the registry refuses them), and with remove its record is
// deleted once nothing of it is left.
func (s *Server) RevokeCluster(ctx context.Context, req *pb.RevokeClusterRequest) (*pb.RevokeClusterResponse, error) {
	who, err := mustCaller(ctx)
	if err != nil {
		return nil, s.fail(err)
	}
	cluster := req.GetClusterId()
	if err := checkName("cluster_id", cluster, 63, true); err != nil {
		return nil, s.fail(err)
	}
	rev, err := s.store.Revoke(ctx, cluster, req.GetRemove(), who.id.String())
	if err != nil {
		return nil, s.fail(err)
	}
	s.endRevoked(s.trust.setRevocation(rev))
	msg := fmt.Sprintf("cluster %s was revoked at %s", cluster, rev.RevokedAt.Format(time.RFC3339))
	if err := s.store.DenyJoin(ctx, cluster, who.id.String(), msg); err != nil {
		return nil, s.fail(err)
	}
	s.adminLog.Info("cluster revoked", "cluster", cluster, "remove", rev.Remove, "revokedAt", rev.RevokedAt, "by", who.id.String())
	return &pb.RevokeClusterResponse{RevokedAt: timestamppb.New(rev.RevokedAt)}, nil
}

// ListEvents returns the recent events this replica's view kept of a cluster, a pool, or the
// fleet.
func (s *Server) ListEvents(_ context.Context, req *pb.ListEventsRequest) (*pb.ListEventsResponse, error) {
	if c := req.GetClusterId(); c != "" {
		if err := checkName("cluster_id", c, 253, false); err != nil {
			return nil, s.fail(err)
		}
	}
	var pool *fleet.PoolRef
	if req.GetPool() != nil {
		if err := validatePoolRef("pool", req.GetPool()); err != nil {
			return nil, s.fail(err)
		}
		p := fleetpb.PoolRefFrom(req.GetPool())
		pool = &p
	}
	if err := s.viewLoaded(); err != nil {
		return nil, s.fail(err)
	}
	evs := s.model.Events(req.GetClusterId(), pool)
	resp := &pb.ListEventsResponse{Events: make([]*pb.FleetEvent, 0, len(evs))}
	for _, e := range evs {
		m := &pb.FleetEvent{Time: timestamppb.New(e.Time), ClusterId: e.Cluster, Region: e.Region, Reason: e.Reason, Message: e.Message}
		if e.Pool != nil {
			m.Pool = fleetpb.PoolRef(*e.Pool)
		}
		resp.Events = append(resp.Events, m)
	}
	return resp, nil
}

// SetCordon cordons or uncordons a cluster or a region as a spill target. The cordon is kept in
// the registry: every replica's view follows it, and every spoke hears of it with the view update
// of the clusters it covers. A cordon of a cluster that is not registered, or of a region where
// none is, is refused (a misspelt name would cordon nothing); lifting one never is.
func (s *Server) SetCordon(ctx context.Context, req *pb.SetCordonRequest) (*pb.SetCordonResponse, error) {
	who, err := mustCaller(ctx)
	if err != nil {
		return nil, s.fail(err)
	}
	scope, name := registry.CordonCluster, req.GetClusterId()
	switch {
	case name != "" && req.GetRegion() != "", name == "" && req.GetRegion() == "":
		return nil, s.fail(fmt.Errorf("%w: give exactly one of cluster_id and region", ErrInvalidArgument))
	case name == "":
		scope, name = registry.CordonRegion, req.GetRegion()
		if err := checkName("region", name, 63, true); err != nil {
			return nil, s.fail(err)
		}
	default:
		if err := checkName("cluster_id", name, 253, false); err != nil {
			return nil, s.fail(err)
		}
	}
	if err := s.viewLoaded(); err != nil {
		return nil, s.fail(err)
	}
	var covered []string
	for _, c := range s.model.Clusters() {
		if scope == registry.CordonCluster && c.Info.ID == name || scope == registry.CordonRegion && c.Info.Region == name {
			covered = append(covered, c.Info.ID)
		}
	}
	if len(covered) == 0 && req.GetCordoned() {
		return nil, s.fail(fmt.Errorf("no registered cluster is %s %s: %w", strings.TrimSuffix(string(scope), "s"), name, registry.ErrNotFound))
	}
	if err := s.store.SetCordon(ctx, scope, name, req.GetCordoned(), who.id.String()); err != nil {
		return nil, s.fail(err)
	}
	s.adminLog.Info("cordon set", "scope", strings.TrimSuffix(string(scope), "s"), "name", name, "cordoned", req.GetCordoned(),
		"clusters", len(covered), "by", who.id.String())
	return &pb.SetCordonResponse{Clusters: covered}, nil
}

// RotateHopKey adds a new signing hop key, keeping the previous one; every stream gets the new
// keys (on this replica at once, on the others when Run sees them).
func (s *Server) RotateHopKey(ctx context.Context, _ *pb.RotateHopKeyRequest) (*pb.RotateHopKeyResponse, error) {
	who, err := mustCaller(ctx)
	if err != nil {
		return nil, s.fail(err)
	}
	keys, err := s.store.RotateHopKey(ctx)
	if err != nil {
		return nil, s.fail(err)
	}
	s.trust.setHopKeys(keys)
	s.adminLog.Info("hop key rotated", "keyID", keys[0].ID, "by", who.id.String())
	return &pb.RotateHopKeyResponse{KeyId: keys[0].ID}, nil
}
