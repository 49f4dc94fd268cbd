// Package server holds the hub's gRPC services: SyncService and JoinService for spokes on the
// spokes' port, AdminService for hubctl and PeerService for the other hub replicas on the admin
// port. It is the only hub package that knows protobuf: it validates every request, converts
// messages to the domain types of pkg/fleet, and maps domain errors to gRPC codes in one place
// (errors.go).
//
// Several replicas may serve one fleet (docs/availability.md): every replica runs Run (the
// fleet's trust) and RunPeers (a stream of every other replica's spokes' reports, merged into its
// view), and the elected leader runs Lead (the work that must happen once). A spoke replica that
// does not write runs an observer session: the view and the hop keys, nothing stored.
//
// Who calls is read from the verified client certificate only (auth.go), never from a field of a
// message: a cluster's calls must name the cluster of its certificate, whose revocation Run
// follows in etcd; a user's role on the admin port comes from Options.AdminUsers. A spoke may
// store and report only what is its own: its registration, the pools it exports (in namespaces
// the hub allows, up to Limits), and capacity for those pools, at the rate the hub announces.
package server

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/view"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// Server implements SyncService, JoinService, AdminService and PeerService.
type Server struct {
	pb.UnimplementedSyncServiceServer
	pb.UnimplementedJoinServiceServer
	pb.UnimplementedAdminServiceServer
	pb.UnimplementedPeerServiceServer

	store *registry.Store
	model *view.Model
	opts  Options
	// ticks pace the sync streams and share their capacity (fanout.go).
	ticks *ticks
	// admission bounds the sessions opened at once (admit.go).
	admission *admission
	// Each service logs under its own component: hub-sync (SyncService), hub-join (JoinService),
	// hub-admin (AdminService), hub-trust (Run); panicLog (hub-grpc) logs panics recovered in any
	// service's handler (recover.go).
	syncLog, joinLog, adminLog, trustLog, panicLog, peerLog *slog.Logger
	metrics                                                 *metrics
	trust                                                   *trust
	// relay passes this replica's spokes' budget reports to the other replicas (budgets.go).
	relay *budgetRelay

	// gossip is the replica's gossip member, when it runs one (SetGossip).
	gossip atomic.Pointer[Gossip]

	mu       sync.Mutex
	sessions map[string]*session
	// observers are the observer streams of each cluster on this replica.
	observers map[string]map[*session]struct{}
}

// session is one stream's hold on its cluster's session on this replica.
type session struct {
	cancel context.CancelCauseFunc
	// notBefore is the start of the stream's client certificate: a revocation at or after it
	// ends the session.
	notBefore time.Time

	// mu orders the stream's writes to the fleet view with its end: once ended is set (a newer
	// stream of the cluster took over, the cluster was revoked, or the handler returned), no write
	// of this stream reaches the view, and a takeover waits for a write in progress, so every
	// write of the new stream comes after the last one of the old.
	mu    sync.Mutex
	ended bool
	// done is closed when the session ends.
	done chan struct{}

	// explains are the explain queries of the session's spoke (explain.go).
	explains *explains
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
	if !cur.ended {
		close(cur.done)
	}
	cur.ended = true
}

// New returns the services on a registry and its view. Run must run beside them: until it has
// loaded the fleet's revocations, calls that need a cluster identity answer Unavailable.
func New(store *registry.Store, model *view.Model, opts Options) *Server {
	opts = opts.complete()
	if opts.Budgets != nil && opts.Registerer != nil {
		opts.Registerer.MustRegister(budgetCollector{opts.Budgets})
	}
	return &Server{
		store:    store,
		model:    model,
		opts:     opts,
		syncLog:  opts.Logger.With("component", "hub-sync"),
		joinLog:  opts.Logger.With("component", "hub-join"),
		adminLog: opts.Logger.With("component", "hub-admin"),
		trustLog: opts.Logger.With("component", "hub-trust"),
		panicLog: opts.Logger.With("component", "hub-grpc"),
		peerLog:  opts.Logger.With("component", "hub-peers"),
		metrics:  newMetrics(opts.Registerer),
		trust:    newTrust(),
		relay:    newBudgetRelay(),
		sessions: map[string]*session{},

		observers: map[string]map[*session]struct{}{},
		ticks:     newTicks(model, opts.ViewInterval),
		admission: newAdmission(opts.Limits.MaxSessionOpens, opts.Limits.SessionOpenWait),
	}
}
