package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/view"
	"github.com/spillway-io/spillway/pkg/clock"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Reports streams the reports of the spokes connected to this replica to another replica: a
// snapshot of everything this replica holds of its own spokes, then what changes as it arrives,
// each capacity report with its age. Reports peers streamed here are never passed on: each
// replica hears every other one directly. Only a hub replica of the trust domain may call it
// (auth.go).
func (s *Server) Reports(req *pb.ReportsRequest, stream pb.PeerService_ReportsServer) (err error) {
	defer func() { err = s.fail(err) }()
	who, err := mustCaller(stream.Context())
	if err != nil {
		return err
	}
	if who.id.Name == s.opts.HubID {
		return invalid("caller", "hub replica %s called itself: two replicas share one --hub-id", who.id.Name)
	}
	log := s.peerLog.With("peer", who.id.Name)
	log.Info("peer replica streams this replica's reports")
	ctx := stream.Context()
	inc, seq := "", uint64(0)
	var budgetSeq uint64
	first := true
	for {
		changed := s.model.Changed()
		u := s.model.LocalSince(inc, seq)
		inc, seq = s.model.Incarnation(), u.Seq
		var budgets []*pb.PeerBudgetReport
		var budgetsChanged <-chan struct{}
		budgets, budgetSeq, budgetsChanged = s.relay.since(budgetSeq)
		if first || !u.Empty() || len(budgets) > 0 {
			m := s.peerReports(u)
			m.Budgets = budgets
			if err := stream.Send(m); err != nil {
				return err
			}
			first = false
		}
		select {
		case <-ctx.Done():
			log.Info("peer replica's stream of reports ended", "cause", context.Cause(ctx))
			return nil
		case <-changed:
		case <-budgetsChanged:
		}
	}
}

// peerReports converts what changed of this replica's own reports to a message, capacity with
// its age by this replica's clock.
func (s *Server) peerReports(u view.LocalUpdate) *pb.ReportsResponse {
	now := clock.Now()
	m := &pb.ReportsResponse{HubId: s.opts.HubID, HubIncarnation: s.model.Incarnation(), Snapshot: u.Snapshot, SessionsEnded: u.ImportsEnded}
	for _, rc := range u.Capacity {
		m.Capacity = append(m.Capacity, fleetpb.RemoteCapacityAt(rc, now))
	}
	for _, k := range u.CapacityRemoved {
		m.CapacityRemoved = append(m.CapacityRemoved, fleetpb.CapacityKey(k))
	}
	for cluster, states := range u.Imports {
		m.Imports = append(m.Imports, &pb.PeerImportReport{ClusterId: cluster, Pools: fleetpb.PoolImportStatuses(states).GetPools()})
	}
	return m
}

// HubSource is the registry of hub replicas as RunPeers reads it (registry.Store).
type HubSource interface {
	Hubs(ctx context.Context) (map[string]registry.HubRecord, int64, error)
	WatchHubs(ctx context.Context, rev int64, fn func([]registry.HubEvent)) error
}

// IncompletePeers is the reason RunPeers marks the view incomplete with while a replica listed
// in hubs/ has not sent its first snapshot (for at most PeerOptions.FirstSnapshotWait).
const IncompletePeers = "peers"

// DefaultFirstSnapshotWait bounds how long the view stays incomplete waiting for a replica's
// first snapshot.
const DefaultFirstSnapshotWait = 5 * time.Second

// DefaultPeerDropAfter is how long a replica's stream of reports may stay broken before what it
// streamed is dropped from the view.
const DefaultPeerDropAfter = 10 * time.Second

// peerMaxMessageBytes bounds a batch of a peer's reports: a snapshot holds every report of its
// spokes.
const peerMaxMessageBytes = 64 << 20

// PeerOptions configure RunPeers.
type PeerOptions struct {
	// Hubs is the registry of replicas.
	Hubs HubSource
	// Dial opens a connection to a replica's admin port at address (host:port), presenting this
	// replica's hub certificate and verifying the peer's serving certificate for host.
	Dial func(address string) (*grpc.ClientConn, error)
	// FirstSnapshotWait is how long a replica listed in hubs/ keeps the view incomplete before
	// its first snapshot arrives; zero means DefaultFirstSnapshotWait.
	FirstSnapshotWait time.Duration
	// DropAfter is how long the stream of a replica still listed in hubs/ may stay ended (a
	// partition between replicas) before its reports are dropped from the view, where they would
	// otherwise stay as they were last streamed; zero means DefaultPeerDropAfter. Its next
	// snapshot brings them back. A stream whose packets are silently dropped ends only when
	// gRPC's keepalive gives up on it (the hub dials its peers with a 10 s ping interval and a
	// 5 s ping timeout), so the reports of a partitioned replica go about 15 s + DropAfter after
	// the partition.
	DropAfter time.Duration
}

// RunPeers keeps one stream of reports (PeerService.Reports) open to every other replica listed
// in hubs/ until ctx ends, and merges what they stream into the fleet view as if this replica's
// own spokes had sent it; capacity is as fresh as its age says, measured from its receipt here.
// A replica that leaves hubs/ (its lease lapsed, or it stopped) has its reports dropped; one that
// comes back with a new incarnation is streamed again, and its first snapshot replaces what it
// sent before. A broken stream is opened again after a jittered backoff (200 ms doubling to 5 s);
// one broken for DropAfter has its reports dropped until its next snapshot.
//
// The view is marked incomplete (IncompletePeers) until the first list of replicas is read, and
// while a listed replica's first snapshot has not arrived, for at most FirstSnapshotWait each.
func (s *Server) RunPeers(ctx context.Context, o PeerOptions) error {
	if o.FirstSnapshotWait <= 0 {
		o.FirstSnapshotWait = DefaultFirstSnapshotWait
	}
	if o.DropAfter <= 0 {
		o.DropAfter = DefaultPeerDropAfter
	}
	p := &peers{s: s, o: o, log: s.peerLog, conns: map[string]*peerConn{}, pending: map[string]time.Time{},
		broken: map[string]brokenStream{}}
	s.model.SetIncomplete(IncompletePeers, "the list of hub replicas has not been read yet")
	var wg sync.WaitGroup
	defer func() {
		p.stopAll()
		wg.Wait()
		s.model.ClearIncomplete(IncompletePeers)
	}()
	wg.Go(func() { p.expire(ctx) })
	retry := jitteredBackoff(200*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		hubs, rev, err := o.Hubs.Hubs(ctx)
		if err == nil {
			retry = jitteredBackoff(200*time.Millisecond, 5*time.Second)
			p.reconcile(ctx, &wg, hubs)
			err = o.Hubs.WatchHubs(ctx, rev, func(evs []registry.HubEvent) {
				for _, ev := range evs {
					if ev.Deleted {
						delete(hubs, ev.Hub.ID)
					} else {
						hubs[ev.Hub.ID] = ev.Hub
					}
				}
				p.reconcile(ctx, &wg, hubs)
			})
		}
		if ctx.Err() != nil {
			break
		}
		d := retry()
		p.log.Warn("reading the hub replicas failed, retrying", "err", err, "retry", d)
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	return nil
}

// peers is RunPeers's state.
type peers struct {
	s   *Server
	o   PeerOptions
	log *slog.Logger

	mu    sync.Mutex
	conns map[string]*peerConn
	// pending are the replicas whose first snapshot has not arrived, with when to stop waiting.
	pending map[string]time.Time
	// broken are the replicas whose stream ended and has not delivered a snapshot since.
	broken map[string]brokenStream
	listed bool
}

type brokenStream struct {
	since   time.Time
	dropped bool
}

type peerConn struct {
	rec    registry.HubRecord
	cancel context.CancelFunc
	done   chan struct{}
}

// reconcile starts a stream to every listed replica but this one, restarts it for a replica
// whose address or incarnation changed, and stops those no longer listed, dropping their reports.
func (p *peers) reconcile(ctx context.Context, wg *sync.WaitGroup, hubs map[string]registry.HubRecord) {
	// The streams to stop are waited for without the lock, which their snapshots take.
	type stop struct {
		c    *peerConn
		left bool
	}
	var stops []stop
	p.mu.Lock()
	for id, c := range p.conns {
		rec, ok := hubs[id]
		if ok && rec.Address == c.rec.Address && rec.Incarnation == c.rec.Incarnation {
			continue
		}
		stops = append(stops, stop{c: c, left: !ok})
		delete(p.conns, id)
		delete(p.pending, id)
		delete(p.broken, id)
	}
	p.mu.Unlock()
	for _, st := range stops {
		st.c.cancel()
		<-st.c.done
		if st.left {
			p.s.model.DropOrigin(st.c.rec.ID)
			p.log.Info("hub replica left: its spokes' reports are dropped", "peer", st.c.rec.ID)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, rec := range hubs {
		if id == p.s.opts.HubID || p.conns[id] != nil {
			continue
		}
		cctx, cancel := context.WithCancel(ctx)
		c := &peerConn{rec: rec, cancel: cancel, done: make(chan struct{})}
		p.conns[id] = c
		p.pending[id] = time.Now().Add(p.o.FirstSnapshotWait)
		p.log.Info("hub replica found: streaming its spokes' reports", "peer", id, "address", rec.Address, "incarnation", rec.Incarnation)
		wg.Go(func() {
			defer close(c.done)
			p.follow(cctx, rec)
		})
	}
	p.listed = true
	p.markLocked()
}

func (p *peers) stopAll() {
	p.mu.Lock()
	conns := p.conns
	p.conns = map[string]*peerConn{}
	p.mu.Unlock()
	for _, c := range conns {
		c.cancel()
		<-c.done
	}
}

// markLocked sets or lifts the view's incomplete mark from the pending replicas.
func (p *peers) markLocked() {
	switch {
	case !p.listed:
		return
	case len(p.pending) == 0:
		p.s.model.ClearIncomplete(IncompletePeers)
	default:
		ids := make([]string, 0, len(p.pending))
		for id := range p.pending {
			ids = append(ids, id)
		}
		p.s.model.SetIncomplete(IncompletePeers, fmt.Sprintf("waiting for the first reports of hub replicas %v", ids))
	}
}

// snapshotArrived lifts the wait for a replica's first snapshot.
func (p *peers) snapshotArrived(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.pending[id]; ok {
		delete(p.pending, id)
		p.markLocked()
	}
}

// expire stops waiting for first snapshots that are late, and drops the reports of replicas
// whose stream has been broken for DropAfter.
func (p *peers) expire(ctx context.Context) {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			p.mu.Lock()
			changed := false
			for id, deadline := range p.pending {
				if now.After(deadline) {
					p.log.Warn("hub replica sent no reports in time: the view no longer waits for it", "peer", id, "wait", p.o.FirstSnapshotWait)
					delete(p.pending, id)
					changed = true
				}
			}
			if changed {
				p.markLocked()
			}
			for id, b := range p.broken {
				if !b.dropped && now.Sub(b.since) >= p.o.DropAfter {
					p.s.model.DropOrigin(id)
					p.broken[id] = brokenStream{since: b.since, dropped: true}
					p.log.Warn("stream of a hub replica's reports broken too long: its spokes' reports are dropped until it is back", "peer", id, "broken", now.Sub(b.since).Round(time.Millisecond))
				}
			}
			p.mu.Unlock()
		}
	}
}

// follow keeps a stream of rec's reports open until ctx ends.
func (p *peers) follow(ctx context.Context, rec registry.HubRecord) {
	log := p.log.With("peer", rec.ID, "address", rec.Address)
	retry := jitteredBackoff(200*time.Millisecond, 5*time.Second)
	for ctx.Err() == nil {
		got, err := p.stream(ctx, rec)
		if ctx.Err() != nil {
			return
		}
		p.broke(rec.ID)
		if got {
			retry = jitteredBackoff(200*time.Millisecond, 5*time.Second)
		}
		d := retry()
		log.Warn("stream of a hub replica's reports ended, reconnecting", "err", err, "retry", d)
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
}

// broke records that the stream of replica id ended, unless it had already: the expire loop
// drops its reports DropAfter later if no new stream has delivered a snapshot by then.
func (p *peers) broke(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.conns[id]; !ok {
		return
	}
	if _, ok := p.broken[id]; !ok {
		p.broken[id] = brokenStream{since: time.Now()}
	}
}

// live records that a new stream of replica id delivered its first message. It runs before
// the message is applied, so that the expire loop cannot drop a fresh snapshot.
func (p *peers) live(id string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.broken, id)
}

// errPeerMismatch is a stream whose sender is not the replica dialed.
var errPeerMismatch = errors.New("the replica at the address answers with another hub ID")

// stream receives one stream of rec's reports; got is true once a message arrived.
func (p *peers) stream(ctx context.Context, rec registry.HubRecord) (got bool, err error) {
	conn, err := p.o.Dial(rec.Address)
	if err != nil {
		return false, err
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := pb.NewPeerServiceClient(conn).Reports(ctx, &pb.ReportsRequest{HubId: p.s.opts.HubID}, grpc.MaxCallRecvMsgSize(peerMaxMessageBytes))
	if err != nil {
		return false, err
	}
	p.s.metrics.peerStreams.Inc()
	defer p.s.metrics.peerStreams.Dec()
	first := true
	for {
		m, err := st.Recv()
		if err != nil {
			return got, err
		}
		if err := ValidateReports(m); err != nil {
			return got, fmt.Errorf("hub replica %s sent a bad batch of reports: %w", rec.ID, err)
		}
		if m.GetHubId() != rec.ID {
			return got, fmt.Errorf("%w: %s dialed, %s answered", errPeerMismatch, rec.ID, m.GetHubId())
		}
		if first && !m.GetSnapshot() {
			return got, fmt.Errorf("hub replica %s: the first batch of a stream must be a snapshot", rec.ID)
		}
		if first {
			p.live(rec.ID)
		}
		got, first = true, false
		if err := p.s.peerBudgets(m.GetBudgets()); err != nil {
			return got, fmt.Errorf("hub replica %s sent a bad batch of reports: %w", rec.ID, err)
		}
		p.apply(rec.ID, m)
	}
}

// apply merges one batch of a peer's reports into the view.
func (p *peers) apply(origin string, m *pb.ReportsResponse) {
	now := clock.Now()
	caps := make([]fleet.RemoteCapacity, 0, len(m.GetCapacity()))
	for _, c := range m.GetCapacity() {
		caps = append(caps, fleetpb.RemoteCapacityFromAt(c, now))
	}
	imports := make(map[string][]fleet.PoolImportStatus, len(m.GetImports()))
	for _, r := range m.GetImports() {
		imports[r.GetClusterId()] = fleetpb.PoolImportStatusesFrom(&pb.ImportReport{Pools: r.GetPools()})
	}
	model := p.s.model
	if m.GetSnapshot() {
		p.s.metrics.peerMessages.WithLabelValues("snapshot").Inc()
		model.ReplaceOrigin(origin, caps, imports)
		p.snapshotArrived(origin)
		return
	}
	p.s.metrics.peerMessages.WithLabelValues("delta").Inc()
	removed := make([]fleet.CapacityKey, 0, len(m.GetCapacityRemoved()))
	for _, k := range m.GetCapacityRemoved() {
		removed = append(removed, fleetpb.CapacityKeyFrom(k))
	}
	model.MergeCapacity(origin, caps, removed)
	for cluster, states := range imports {
		model.MergeImports(origin, cluster, states)
	}
	for _, cluster := range m.GetSessionsEnded() {
		model.EndImports(origin, cluster)
	}
}

// jitteredBackoff returns delays from about first, doubling to at most maxDelay, each a random
// point in its upper half, so that replicas that lost a peer together do not call it together.
func jitteredBackoff(first, maxDelay time.Duration) func() time.Duration {
	d := first
	return func() time.Duration {
		j := d/2 + rand.N(d/2+1)
		d = min(2*d, maxDelay)
		return j
	}
}
