package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/view"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Register records or updates the caller's cluster: the one its certificate names, with a
// gateway address no other registered cluster holds (so that no cluster can point the spill
// traffic meant for it at another's gateway, nor another's at its own).
func (s *Server) Register(ctx context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	who, err := mustCaller(ctx)
	if err != nil {
		return nil, s.fail(err)
	}
	if err := ValidateClusterInfo(req.GetCluster()); err != nil {
		return nil, s.fail(err)
	}
	info := fleetpb.ClusterInfoFrom(req.GetCluster())
	if info.ID != who.id.Name {
		return nil, s.fail(denied(codes.PermissionDenied, reasonClusterMismatch,
			"certificate names cluster %s, request names %s: a cluster registers as itself only", who.id.Name, info.ID))
	}
	if cur, ok := s.model.Cluster(info.ID); !ok || !cur.Info.Equal(info) {
		// A new cluster, or a changed one: the registration writes, and takes an admission
		// slot for it (a fleet's first connection is thousands of them at once). One that
		// changes nothing writes nothing and needs none.
		release, err := s.admit(ctx)
		if err != nil {
			return nil, s.fail(err)
		}
		defer release()
	}
	rec, err := s.store.RegisterCluster(ctx, info, s.opts.Limits.MaxClusters)
	var taken *registry.GatewayTakenError
	if errors.As(err, &taken) {
		return nil, s.fail(denied(codes.PermissionDenied, reasonGatewayTaken, "%s", taken.Error()))
	}
	if err != nil {
		return nil, s.fail(err)
	}
	s.syncLog.Info("cluster registered", "cluster", info.ID, "region", info.Region)
	c := fleet.Cluster{Info: rec.Info, RegisteredAt: rec.RegisteredAt, LastSeen: rec.LastSeen, State: fleet.StateGone}
	if cur, ok := s.model.Cluster(info.ID); ok {
		c.State, c.HubID, c.Exports = cur.State, cur.HubID, cur.Exports
	}
	return &pb.RegisterResponse{Cluster: fleetpb.Cluster(c)}, nil
}

// reportBurst is how many capacity reports a stream may send back to back before the announced
// MinReportInterval applies. A spoke sends at most one per interval, but the hub sees them when
// TCP delivers them: after a retransmission stall on a lossy link, the reports of the whole stall
// arrive at once. A stall lasts up to the spoke's keepalive time plus its timeout (10 s + 10 s)
// before the connection is given up; 60 reports cover 30 s at the default 500 ms. (20, which
// covered 10 s, ended a session under 30 % loss in CI's fault run.) The average stays bounded by
// the interval.
const reportBurst = 60

// updateBurst is how many interest changes, and how many import reports, a stream may send back
// to back before one per MinReportInterval applies to them too. A spoke sends one when its
// interest or its imports change, which may come in a quick series as its controllers settle.
const updateBurst = 20

// messageLimiter allows one message per interval on average after a burst; a zero interval
// allows everything.
func messageLimiter(interval time.Duration, burst int) *rate.Limiter {
	if interval <= 0 {
		return rate.NewLimiter(rate.Inf, 0)
	}
	return rate.NewLimiter(rate.Every(interval), burst)
}

// Sync runs one spoke's session.
func (s *Server) Sync(stream pb.SyncService_SyncServer) (err error) {
	defer func() {
		err = s.fail(err)
		s.metrics.streamsEnded.WithLabelValues(status.Code(err).String()).Inc()
	}()
	who, err := mustCaller(stream.Context())
	if err != nil {
		return err
	}
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
	if cluster != who.id.Name {
		return denied(codes.PermissionDenied, reasonClusterMismatch,
			"certificate names cluster %s, hello names %s: a cluster syncs as itself only", who.id.Name, cluster)
	}
	log := s.syncLog.With("cluster", cluster)
	if hello.GetObserver() {
		return s.observe(stream, who, hello, log)
	}

	ctx, cancel := context.WithCancelCause(stream.Context())
	defer cancel(nil)
	// The session lasts no longer than the certificate it was opened with.
	expiry := time.AfterFunc(time.Until(who.cert.NotAfter), func() { cancel(certificateExpired(who.id, who.cert.NotAfter)) })
	defer expiry.Stop()
	// From here to the first view update the session costs the most (etcd requests, a
	// snapshot): only so many are opened at once.
	opened, err := s.admit(ctx)
	if err != nil {
		return err
	}
	defer opened()
	sess, err := s.store.OpenSession(ctx, cluster, s.opts.HubID, hello.GetSpokeIncarnation())
	if errors.Is(err, registry.ErrNotFound) {
		return ErrNotRegistered
	}
	if err != nil {
		return err
	}
	sess.MaxExports = s.opts.Limits.MaxExportsPerCluster
	cur := s.takeOver(cluster, cancel, who.cert.NotBefore, hello.GetExplains())
	defer s.release(cluster, cur)
	// A revocation that arrived between the authorization and the takeover ends the session now.
	if err := s.checkRevoked(cluster, who.cert); err != nil {
		return err
	}
	s.metrics.sessions.Inc()
	defer s.metrics.sessions.Dec()

	cursor := hello.GetViewCursor()
	resumed := cursor.GetHubIncarnation() == s.model.Incarnation()
	welcome := &pb.Welcome{
		HubId:             s.opts.HubID,
		AckedExportSeq:    sess.AckedSeq,
		LeaseTtl:          durationpb.New(s.store.LeaseTTL()),
		MinReportInterval: durationpb.New(s.opts.MinReportInterval),
		CapacityHeartbeat: durationpb.New(s.opts.CapacityHeartbeat),
		ViewResumed:       resumed,
		ClusterId:         cluster,
	}
	bs := s.newBudgetStream(hello)
	if bs != nil {
		welcome.BudgetReportInterval = durationpb.New(s.budgetReportInterval())
		defer s.relay.forget(bs.member)
	}
	// The export policy, so that an honest spoke leaves out what recvLoop would refuse.
	fleetpb.SetExportPolicy(welcome, s.opts.Limits.ExportPolicy())
	if err := stream.Send(&pb.SyncResponse{Msg: &pb.SyncResponse_Welcome{Welcome: welcome}}); err != nil {
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
			return s.recvLoop(ctx, stream, hello, sess, cur, log, acks, interest, bs)
		}))
	}()

	err = s.sendLoop(ctx, stream, hello, acks, interest, cur.explains.queries, opened, bs)
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
func (s *Server) takeOver(cluster string, cancel context.CancelCauseFunc, notBefore time.Time, explains bool) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	if old, ok := s.sessions[cluster]; ok {
		old.end()
		old.cancel(ErrSessionReplaced)
	}
	cur := &session{cancel: cancel, notBefore: notBefore, done: make(chan struct{}), explains: newExplains(explains)}
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
//
// What a spoke may send is checked here against the session's own export set (updated when a
// delta is stored, before the next message is read), never against the fleet view, which
// follows etcd later: exports only in namespaces the hub allows and up to its limit (the export
// policy the Welcome announced, which an honest spoke never breaks), capacity
// only for pools the cluster exports, at most one capacity report per MinReportInterval after a
// burst. A message that breaks a rule ends the stream and changes nothing.
func (s *Server) recvLoop(ctx context.Context, stream pb.SyncService_SyncServer, hello *pb.Hello, sess *registry.Session,
	cur *session, log *slog.Logger, acks chan<- uint64, interest chan []fleet.PoolRef, bs *budgetStream) error {
	cluster := sess.Record().Cluster
	dropped := func(kind string) error {
		log.Debug("sync message dropped: the stream's session ended", "kind", kind)
		return ErrSessionReplaced
	}
	iv := s.opts.MinReportInterval
	reports, interests, imports := messageLimiter(iv, reportBurst), messageLimiter(iv, updateBurst), messageLimiter(iv, updateBurst)
	budgetReports := s.budgetLimiter()
	parts := newAssembler(s.opts.Limits.MaxExportsPerCluster)
	if hello.GetInterestFollows() {
		// The Hello's interest is the first part; Interest messages bring the rest.
		if _, _, err := parts.interestPart(poolsFrom(hello.GetCapacityInterest()), true); err != nil {
			return err
		}
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
			for _, e := range m.Exports.GetUpserts() {
				if why := s.opts.Limits.exportDenied(e.GetPool().GetNamespace()); why != "" {
					return denied(codes.PermissionDenied, reasonNamespace, "cluster %s may not export %s: %s", cluster, poolKey(e.GetPool()), why)
				}
			}
			if !cur.live() {
				return dropped("exports")
			}
			d := registry.ExportDelta{Seq: m.Exports.GetSeq(), ReplaceAll: m.Exports.GetReplaceAll()}
			for _, e := range m.Exports.GetUpserts() {
				d.Upserts = append(d.Upserts, fleetpb.ExportFrom(e))
			}
			d.Removes = poolsFrom(m.Exports.GetRemoves())
			d, done, err := parts.exportPart(d, proto.Size(m.Exports), m.Exports.GetMore())
			if err != nil {
				return err
			}
			if !done {
				continue // the parts are stored together, with the last one
			}
			// A delta at or below the acked sequence number (a replay) changes nothing and is
			// answered with the current ack.
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
			pools := make([]fleet.PoolRef, 0, len(m.Capacity.GetPools()))
			for _, c := range m.Capacity.GetPools() {
				cp := fleetpb.CapacityFrom(c)
				if !sess.Exported(cp.Pool) {
					return denied(codes.PermissionDenied, reasonNotExported,
						"cluster %s reports capacity for %s/%s, which it does not export", cluster, cp.Pool.Namespace, cp.Pool.Name)
				}
				caps, pools = append(caps, cp), append(pools, cp.Pool)
			}
			removed := poolsFrom(m.Capacity.GetRemoved())
			// A report's parts count once against the rate.
			first, err := parts.capacityPart(pools, removed, m.Capacity.GetMore())
			if err != nil {
				return err
			}
			if first && !reports.Allow() {
				return &rateError{limit: limitReportRate, msg: fmt.Sprintf("cluster %s sends capacity reports faster than one per %s, the min_report_interval the hub announced", cluster, iv)}
			}
			if !cur.write(func() { s.model.ReportCapacity(cluster, caps, removed) }) {
				return dropped("capacity")
			}
		case *pb.SyncRequest_ExplainAnswer:
			s.metrics.received.WithLabelValues("explain_answer").Inc()
			if n := len(m.ExplainAnswer.GetExplanation()); n > maxExplainAnswerBytes {
				return fmt.Errorf("%w: an explanation of %d bytes, more than %d", ErrInvalidArgument, n, maxExplainAnswerBytes)
			}
			cur.explains.answer(m.ExplainAnswer)
		case *pb.SyncRequest_Interest:
			s.metrics.received.WithLabelValues("interest").Inc()
			if !parts.interesting && !interests.Allow() {
				return &rateError{limit: limitInterestRate, msg: fmt.Sprintf("cluster %s changes its capacity interest faster than once per %s after %d changes, the min_report_interval the hub announced", cluster, iv, updateBurst)}
			}
			if err := validateInterest("interest.capacity_interest", m.Interest.GetCapacityInterest()); err != nil {
				return err
			}
			pools, done, err := parts.interestPart(poolsFrom(m.Interest.GetCapacityInterest()), m.Interest.GetMore())
			if err != nil {
				return err
			}
			if !done {
				continue
			}
			select {
			case <-interest:
			default:
			}
			interest <- pools
		case *pb.SyncRequest_Imports:
			s.metrics.received.WithLabelValues("imports").Inc()
			if !parts.importing && !imports.Allow() {
				return &rateError{limit: limitImportReportRate, msg: fmt.Sprintf("cluster %s sends import reports faster than one per %s after %d reports, the min_report_interval the hub announced", cluster, iv, updateBurst)}
			}
			if err := ValidateImportReport(m.Imports); err != nil {
				return err
			}
			states, done, err := parts.importPart(fleetpb.PoolImportStatusesFrom(m.Imports), m.Imports.GetMore())
			if err != nil {
				return err
			}
			if !done {
				continue
			}
			if !cur.write(func() { s.model.ReportImports(cluster, states) }) {
				return dropped("imports")
			}
		case *pb.SyncRequest_Budgets:
			s.metrics.received.WithLabelValues("budgets").Inc()
			if !budgetReports.Allow() {
				return &rateError{limit: limitReportRate, msg: fmt.Sprintf("cluster %s sends budget reports faster than one per half the budget_report_interval the hub announced", cluster)}
			}
			if err := s.budgetReport(bs, m.Budgets); err != nil {
				return err
			}
		case *pb.SyncRequest_Hello:
			return invalid("hello", "sent twice on one stream")
		default:
			return invalid("msg", "empty or unknown sync request")
		}
	}
}

// viewLoadWait bounds how long a stream, or an admin watch, waits for the hub's first load of
// the registry before it ends with ErrViewNotLoaded.
const viewLoadWait = 30 * time.Second

// sendLoop sends the stream's hop keys, then view updates, export acks and new hop keys until
// the session ends. The first view update waits for the view's first load of the registry (at
// most viewLoadWait). The stream reads the view at most once per ViewInterval (so updates are at
// least that far apart, and a stream that finds nothing to send does not spin), whatever asks: a
// change of the fleet view or of the stream's interest (which needs a snapshot of the pools of
// interest); what changes meanwhile goes out together.
func (s *Server) sendLoop(ctx context.Context, stream pb.SyncService_SyncServer, hello *pb.Hello,
	acks <-chan uint64, interestCh <-chan []fleet.PoolRef, explainQueries <-chan *pb.ExplainQuery, opened func(), bs *budgetStream) error {
	keys, keysChanged := s.trust.hopKeysNow()
	if err := stream.Send(&pb.SyncResponse{Msg: &pb.SyncResponse_HopKeys{HopKeys: fleetpb.HopKeys(keys)}}); err != nil {
		return err
	}
	// The budgets' declarations and the stream's first grants, then an answer to each report
	// and the declarations again whenever they change.
	var budgetAnswers <-chan *pb.Budgets
	var budgetsChanged <-chan struct{}
	if bs != nil {
		var first *pb.Budgets
		first, budgetsChanged = s.firstBudgets(bs)
		if err := stream.Send(&pb.SyncResponse{Msg: &pb.SyncResponse_Budgets{Budgets: first}}); err != nil {
			return err
		}
		budgetAnswers = bs.answers
	}
	inc, seq := hello.GetViewCursor().GetHubIncarnation(), hello.GetViewCursor().GetSeq()
	// The stream's cluster receives the import states of the pools it exports only.
	interest := poolsFrom(hello.GetCapacityInterest())
	sub := view.Subscriber{Interest: interestOf(interest), Cluster: hello.GetClusterId()}
	key := interestKey(interest)
	interestFollows := hello.GetInterestFollows()
	first := true
	// No view update before the view holds the registry: an empty snapshot would tell the spoke
	// the fleet exports nothing, and it would delete every import it manages. Acks and hop keys
	// go out meanwhile; a view still unloaded after viewLoadWait ends the stream (Unavailable),
	// and the spoke tries again, perhaps on another replica.
	loaded := s.model.FirstLoad()
	loadWait := time.NewTimer(viewLoadWait)
	defer loadWait.Stop()
	notLoaded := loadWait.C
	// lastLook is when the stream last read the view, whether or not it found anything to send:
	// a stream whose interest no change touches would otherwise read it again at every change.
	var lastLook time.Time
	// incomplete is the mark of the last update sent.
	incomplete := false
	// pace waits for the first tick after the last look at the view.
	pace := func() error { return sleepCtx(ctx, s.ticks.next(time.Now(), lastLook)) }
	for {
		changed := s.model.Changed()
		if loaded != nil && s.model.Loaded() {
			loaded, notLoaded = nil, nil
		}
		// With interest_follows, the first view waits for the whole interest too.
		if loaded == nil && !interestFollows {
			now := time.Now()
			u, shared, ok := view.Update{}, (*sharedCapacity)(nil), false
			if !first {
				u, shared, ok = s.sharedDelta(now, inc, seq, sub, key)
			}
			if !ok {
				// A first update, or a snapshot (a cursor of another incarnation or one the
				// log no longer holds): the tick's shared snapshot with the stream's own
				// imports, or the stream's own update.
				u, shared = s.snapshotOrSince(now, inc, seq, sub, key)
			}
			// When the view is complete again, a delta says so: the spoke kept what the
			// updates marked incomplete would have removed, and removes it with the first
			// update without the mark unless that brought it back (spoke/hubclient's View). No
			// snapshot, which would cost every stream one at the same tick.
			inc, seq = s.model.Incarnation(), u.Seq
			if first || !u.Empty() || u.Incomplete != incomplete || (shared != nil && !shared.empty()) {
				send := func(v *pb.ViewUpdate) error {
					return stream.Send(&pb.SyncResponse{Msg: &pb.SyncResponse_View{View: v}})
				}
				var err error
				if shared != nil {
					err = sendEach(sharedViewUpdate(inc, u, shared, time.Now(), fleetpb.ViewPartBytes), send)
				} else {
					err = sendView(viewUpdate(inc, u), send)
				}
				if err != nil {
					return err
				}
				s.metrics.viewUpdates.WithLabelValues(updateKind(u)).Inc()
				if first {
					opened()
				}
				first, incomplete = false, u.Incomplete
			}
			lastLook = now
			// The tick's seq may be older than the channel taken above: changes that came in
			// the tick after its seq are in neither what went out nor that channel. Then the
			// stream reads again at the next tick, and so it does when the mark changed since
			// the update (a mark changes no seq, and its signal may have come before the
			// channel below was taken); else it waits for the first change after its cursor.
			cur, next := s.model.SeqChanged()
			if cur > seq || s.model.IsIncomplete() != incomplete {
				changed = closedChan
			} else {
				changed = next
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-loaded:
		case <-notLoaded:
			return ErrViewNotLoaded
		case a := <-acks:
			if err := stream.Send(&pb.SyncResponse{Msg: &pb.SyncResponse_ExportAck{ExportAck: &pb.ExportAck{Seq: a}}}); err != nil {
				return err
			}
		case q := <-explainQueries:
			if err := stream.Send(&pb.SyncResponse{Msg: &pb.SyncResponse_Explain{Explain: q}}); err != nil {
				return err
			}
		case b := <-budgetAnswers:
			if err := stream.Send(&pb.SyncResponse{Msg: &pb.SyncResponse_Budgets{Budgets: b}}); err != nil {
				return err
			}
		case <-budgetsChanged:
			var b *pb.Budgets
			b, budgetsChanged = s.firstBudgets(bs)
			if err := stream.Send(&pb.SyncResponse{Msg: &pb.SyncResponse_Budgets{Budgets: b}}); err != nil {
				return err
			}
		case <-keysChanged:
			keys, keysChanged = s.trust.hopKeysNow()
			if err := stream.Send(&pb.SyncResponse{Msg: &pb.SyncResponse_HopKeys{HopKeys: fleetpb.HopKeys(keys)}}); err != nil {
				return err
			}
		case ps := <-interestCh:
			sub.Interest, key, interestFollows = interestOf(ps), interestKey(ps), false
			inc = "" // the new interest set needs the current capacity of every pool in it
			if err := pace(); err != nil {
				return err
			}
		case <-changed:
			if err := pace(); err != nil {
				return err
			}
		}
	}
}

// sharedDelta returns the changes of the view after the stream's cursor up to the tick of now:
// its own (imports), and the clusters and capacity it shares with the streams of the same cursor
// and interest (see ticks); nothing (shared nil) when the stream has read up to the tick already.
// ok is false when a delta cannot be had: the cursor is of another incarnation, or the view's
// log no longer holds it.
func (s *Server) sharedDelta(now time.Time, inc string, seq uint64, sub view.Subscriber, key string) (u view.Update, shared *sharedCapacity, ok bool) {
	if inc != s.model.Incarnation() {
		return view.Update{}, nil, false
	}
	to := s.ticks.at(now)
	if seq >= to {
		return view.Update{Seq: seq, Incomplete: s.model.IsIncomplete()}, nil, true
	}
	own := sub
	own.OwnOnly = true
	if u, ok = s.model.DeltaFor(inc, seq, to, own); !ok {
		return view.Update{}, nil, false
	}
	if shared = s.ticks.capacity(inc, seq, to, key, sub.Interest); !shared.ok {
		return view.Update{}, nil, false
	}
	return u, shared, true
}

// snapshotOrSince returns what a stream needs when it cannot take the tick's shared delta: a
// snapshot, the tick's shared one (ticks.snapshot) with the imports of the stream's own pools
// and their states, when its cursor is of another incarnation or out of the view's log; else
// the delta from its cursor, its own.
func (s *Server) snapshotOrSince(now time.Time, inc string, seq uint64, sub view.Subscriber, key string) (view.Update, *sharedCapacity) {
	if sub.Cluster == "" || s.model.Holds(inc, seq) {
		return s.model.SinceFor(inc, seq, sub), nil
	}
	snap := s.ticks.snapshot(now, key, sub.Interest)
	if !snap.ok {
		return s.model.SinceFor(inc, seq, sub), nil
	}
	return view.Update{Seq: snap.seq, Snapshot: true, Incomplete: snap.incomplete, Imports: s.model.OwnImports(sub.Cluster)}, snap
}

// sendView sends a view update, in parts of about fleetpb.ViewPartBytes when it is larger.
func sendView(u *pb.ViewUpdate, send func(*pb.ViewUpdate) error) error {
	return sendEach(fleetpb.SplitView(u, fleetpb.ViewPartBytes), send)
}

func sendEach(parts []*pb.ViewUpdate, send func(*pb.ViewUpdate) error) error {
	for _, part := range parts {
		if err := send(part); err != nil {
			return err
		}
	}
	return nil
}

// closedChan is a channel that is always ready.
var closedChan = func() <-chan struct{} {
	c := make(chan struct{})
	close(c)
	return c
}()

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
		Cursor:     &pb.ViewCursor{HubIncarnation: inc, Seq: u.Seq},
		Snapshot:   u.Snapshot,
		Incomplete: u.Incomplete,
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
	m.ClustersRemoved = u.ClustersRemoved
	for _, c := range u.Capacity {
		m.Capacity = append(m.Capacity, fleetpb.RemoteCapacity(c))
	}
	for _, k := range u.CapacityRemoved {
		m.CapacityRemoved = append(m.CapacityRemoved, fleetpb.CapacityKey(k))
	}
	return m
}
