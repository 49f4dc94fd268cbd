// Package server holds the hub's gRPC services: SyncService for spokes and AdminService for
// hubctl. It is the only hub package that knows protobuf: it validates every request, converts
// messages to the domain types of pkg/fleet, and maps domain errors to gRPC codes in one place
// (errors.go).
package server

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/view"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Options configure the services.
type Options struct {
	// HubID names this hub replica.
	HubID string
	// MinReportInterval is the fastest a spoke may send a pool's capacity.
	MinReportInterval time.Duration
	// CapacityHeartbeat is how often a spoke resends unchanged capacity.
	CapacityHeartbeat time.Duration
	// ViewInterval is the fastest the hub sends view updates on one stream; changes in between
	// are coalesced.
	ViewInterval time.Duration
	Logger       *slog.Logger
	Registerer   prometheus.Registerer
}

// Server implements SyncService and AdminService.
type Server struct {
	pb.UnimplementedSyncServiceServer
	pb.UnimplementedAdminServiceServer

	store   *registry.Store
	model   *view.Model
	opts    Options
	log     *slog.Logger
	metrics *metrics
	// panicLog logs panics recovered in any service's handler (recover.go).
	panicLog *slog.Logger

	mu       sync.Mutex
	sessions map[string]*session
}

// session is one stream's hold on its cluster's session on this replica.
type session struct {
	cancel context.CancelCauseFunc

	// mu orders the stream's writes to the fleet view with its end: once ended is set (a newer
	// stream of the cluster took over, or the handler returned), no write of this stream reaches
	// the view, and a takeover waits for a write in progress, so every write of the new stream
	// comes after the last one of the old.
	mu    sync.Mutex
	ended bool
}

// write runs fn, a write of the stream's messages to the fleet view, unless the session ended;
// it reports whether fn ran.
func (cur *session) write(fn func()) bool {
	cur.mu.Lock()
	defer cur.mu.Unlock()
	if cur.ended {
		return false
	}
	fn()
	return true
}

// live reports whether the session has not ended.
func (cur *session) live() bool {
	cur.mu.Lock()
	defer cur.mu.Unlock()
	return !cur.ended
}

func (cur *session) end() {
	cur.mu.Lock()
	defer cur.mu.Unlock()
	cur.ended = true
}

// New returns the services on a registry and its view.
func New(store *registry.Store, model *view.Model, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{
		store:    store,
		model:    model,
		opts:     opts,
		log:      opts.Logger.With("component", "hub-sync"),
		panicLog: opts.Logger.With("component", "hub-grpc"),
		metrics:  newMetrics(opts.Registerer),
		sessions: map[string]*session{},
	}
}

// Register records or updates a cluster.
func (s *Server) Register(ctx context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	if err := ValidateClusterInfo(req.GetCluster()); err != nil {
		return nil, toStatus(err)
	}
	info := fleetpb.ClusterInfoFrom(req.GetCluster())
	rec, err := s.store.PutCluster(ctx, info)
	if err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("cluster registered", "cluster", info.ID, "region", info.Region)
	c := fleet.Cluster{Info: rec.Info, RegisteredAt: rec.RegisteredAt, LastSeen: rec.LastSeen, State: fleet.StateGone}
	if cur, ok := s.model.Cluster(info.ID); ok {
		c.State, c.HubID, c.Exports = cur.State, cur.HubID, cur.Exports
	}
	return &pb.RegisterResponse{Cluster: fleetpb.Cluster(c)}, nil
}

// Sync runs one spoke's session.
func (s *Server) Sync(stream pb.SyncService_SyncServer) (err error) {
	defer func() {
		err = toStatus(err)
		s.metrics.rejected.WithLabelValues(status.Code(err).String()).Inc()
	}()
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hello := first.GetHello()
	if err := ValidateHello(hello); err != nil {
		return err
	}
	s.metrics.received.WithLabelValues("hello").Inc()
	cluster := hello.GetClusterId()
	log := s.log.With("cluster", cluster)

	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	sess, err := s.store.OpenSession(ctx, cluster, s.opts.HubID, hello.GetSpokeIncarnation())
	if errors.Is(err, registry.ErrNotFound) {
		return ErrNotRegistered
	}
	if err != nil {
		return err
	}
	cur := s.takeOver(cluster, cancel)
	defer s.release(cluster, cur)
	s.metrics.sessions.Inc()
	defer s.metrics.sessions.Dec()

	cursor := hello.GetViewCursor()
	resumed := cursor.GetHubIncarnation() == s.model.Incarnation()
	if err := stream.Send(&pb.SyncResponse{Msg: &pb.SyncResponse_Welcome{Welcome: &pb.Welcome{
		HubId:             s.opts.HubID,
		AckedExportSeq:    sess.AckedSeq,
		LeaseTtl:          durationpb.New(s.store.LeaseTTL()),
		MinReportInterval: durationpb.New(s.opts.MinReportInterval),
		CapacityHeartbeat: durationpb.New(s.opts.CapacityHeartbeat),
		ViewResumed:       resumed,
	}}}); err != nil {
		return err
	}
	log.Info("spoke session started", "resumedExports", sess.Resumed, "ackedSeq", sess.AckedSeq, "resumedView", resumed)

	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := s.recovering(pb.SyncService_Sync_FullMethodName, func() error { return sess.KeepAlive(ctx) }); err != nil {
			cancel(err)
		}
	}()
	// However the session ends (even a failed Send with the stream still open), stop renewing
	// the lease and wait for the renewer before returning.
	defer func() {
		cancel(nil)
		wg.Wait()
	}()

	acks := make(chan uint64, 64)
	interest := make(chan []fleet.PoolRef, 1)
	// The receive side runs until the stream ends: gRPC ends it when this handler returns, and it
	// cannot be waited for here (its Recv returns only then). It returns on its own once the
	// session ended (taken over or this handler returned): from then on it writes nothing.
	go func() {
		cancel(s.recovering(pb.SyncService_Sync_FullMethodName, func() error {
			return s.recvLoop(ctx, stream, sess, cur, log, acks, interest)
		}))
	}()

	err = s.sendLoop(ctx, stream, cursor, poolsFrom(hello.GetCapacityInterest()), acks, interest)
	cause := context.Cause(ctx)
	log.Info("spoke session ended", "cause", cause)
	if errors.Is(cause, io.EOF) {
		return nil
	}
	if cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return err
}

// takeOver makes this stream the cluster's session on this replica, ending an older stream: from
// its return on, the older stream writes nothing more to the fleet view.
func (s *Server) takeOver(cluster string, cancel context.CancelCauseFunc) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.sessions[cluster]; ok {
		old.end()
		old.cancel(ErrSessionReplaced)
	}
	cur := &session{cancel: cancel}
	s.sessions[cluster] = cur
	return cur
}

// release ends the stream's session when its handler returns.
func (s *Server) release(cluster string, cur *session) {
	cur.end()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.sessions[cluster] == cur {
		delete(s.sessions, cluster)
	}
}

// recvLoop applies a stream's messages until the stream fails or its session ends. Every write
// to the fleet view goes through cur.write, so a stream that was taken over stops writing at
// once, even with messages still in flight; its export writes are also refused by the registry,
// whose transactions are guarded by the session record the stream wrote.
func (s *Server) recvLoop(ctx context.Context, stream pb.SyncService_SyncServer, sess *registry.Session,
	cur *session, log *slog.Logger, acks chan<- uint64, interest chan []fleet.PoolRef) error {
	cluster := sess.Record().Cluster
	dropped := func(kind string) error {
		log.Debug("sync message dropped: the stream's session ended", "kind", kind)
		return ErrSessionReplaced
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			return err
		}
		switch m := req.GetMsg().(type) {
		case *pb.SyncRequest_Exports:
			s.metrics.received.WithLabelValues("exports").Inc()
			if err := ValidateExportDelta(m.Exports); err != nil {
				return err
			}
			if !cur.live() {
				return dropped("exports")
			}
			d := registry.ExportDelta{Seq: m.Exports.GetSeq(), ReplaceAll: m.Exports.GetReplaceAll()}
			for _, e := range m.Exports.GetUpserts() {
				d.Upserts = append(d.Upserts, fleetpb.ExportFrom(e))
			}
			d.Removes = poolsFrom(m.Exports.GetRemoves())
			if err := sess.ApplyExports(ctx, d); err != nil {
				return err
			}
			select {
			case acks <- sess.AckedSeq:
			case <-ctx.Done():
				return ctx.Err()
			}
		case *pb.SyncRequest_Capacity:
			s.metrics.received.WithLabelValues("capacity").Inc()
			if err := ValidateCapacityReport(m.Capacity); err != nil {
				return err
			}
			caps := make([]fleet.PoolCapacity, 0, len(m.Capacity.GetPools()))
			for _, c := range m.Capacity.GetPools() {
				caps = append(caps, fleetpb.CapacityFrom(c))
			}
			if !cur.write(func() { s.model.ReportCapacity(cluster, caps, poolsFrom(m.Capacity.GetRemoved())) }) {
				return dropped("capacity")
			}
		case *pb.SyncRequest_Interest:
			s.metrics.received.WithLabelValues("interest").Inc()
			if err := validateInterest("interest.capacity_interest", m.Interest.GetCapacityInterest()); err != nil {
				return err
			}
			select {
			case <-interest:
			default:
			}
			interest <- poolsFrom(m.Interest.GetCapacityInterest())
		case *pb.SyncRequest_Imports:
			s.metrics.received.WithLabelValues("imports").Inc()
			if err := ValidateImportReport(m.Imports); err != nil {
				return err
			}
			if !cur.write(func() { s.model.ReportImports(cluster, fleetpb.PoolImportStatusesFrom(m.Imports)) }) {
				return dropped("imports")
			}
		case *pb.SyncRequest_Hello:
			return invalid("hello", "sent twice on one stream")
		default:
			return invalid("msg", "empty or unknown sync request")
		}
	}
}

func (s *Server) sendLoop(ctx context.Context, stream pb.SyncService_SyncServer, cursor *pb.ViewCursor,
	pools []fleet.PoolRef, acks <-chan uint64, interestCh <-chan []fleet.PoolRef) error {
	inc, seq := cursor.GetHubIncarnation(), cursor.GetSeq()
	interest := interestOf(pools)
	first := true
	var lastSent time.Time
	for {
		changed := s.model.Changed()
		u := s.model.Since(inc, seq, interest)
		inc, seq = s.model.Incarnation(), u.Seq
		if first || !u.Empty() {
			if err := stream.Send(&pb.SyncResponse{Msg: &pb.SyncResponse_View{View: viewUpdate(inc, u)}}); err != nil {
				return err
			}
			s.metrics.viewUpdates.WithLabelValues(updateKind(u)).Inc()
			first, lastSent = false, time.Now()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case a := <-acks:
			if err := stream.Send(&pb.SyncResponse{Msg: &pb.SyncResponse_ExportAck{ExportAck: &pb.ExportAck{Seq: a}}}); err != nil {
				return err
			}
		case ps := <-interestCh:
			interest = interestOf(ps)
			inc = "" // the new interest set needs the current capacity of every pool in it
		case <-changed:
			if wait := s.opts.ViewInterval - time.Since(lastSent); wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-ctx.Done():
					t.Stop()
					return ctx.Err()
				case <-t.C:
				}
			}
		}
	}
}

func updateKind(u view.Update) string {
	if u.Snapshot {
		return "snapshot"
	}
	return "delta"
}

func interestOf(pools []fleet.PoolRef) view.Interest {
	set := make(map[fleet.PoolRef]struct{}, len(pools))
	for _, p := range pools {
		set[p] = struct{}{}
	}
	return func(p fleet.PoolRef) bool { _, ok := set[p]; return ok }
}

func poolsFrom(ps []*pb.PoolRef) []fleet.PoolRef {
	out := make([]fleet.PoolRef, 0, len(ps))
	for _, p := range ps {
		out = append(out, fleetpb.PoolRefFrom(p))
	}
	return out
}

func viewUpdate(inc string, u view.Update) *pb.ViewUpdate {
	m := &pb.ViewUpdate{
		Cursor:   &pb.ViewCursor{HubIncarnation: inc, Seq: u.Seq},
		Snapshot: u.Snapshot,
	}
	for _, i := range u.Imports {
		m.Imports = append(m.Imports, fleetpb.Import(i))
	}
	for _, p := range u.ImportsRemoved {
		m.ImportsRemoved = append(m.ImportsRemoved, fleetpb.PoolRef(p))
	}
	for _, c := range u.Clusters {
		m.Clusters = append(m.Clusters, fleetpb.Liveness(c))
	}
	for _, c := range u.Capacity {
		m.Capacity = append(m.Capacity, fleetpb.RemoteCapacity(c))
	}
	for _, k := range u.CapacityRemoved {
		m.CapacityRemoved = append(m.CapacityRemoved, fleetpb.CapacityKey(k))
	}
	return m
}
