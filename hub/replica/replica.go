// Package replica makes a hub process one replica among several on one etcd cluster.
//
// Lifecycle of a replica (Elector.Run):
//
//  1. It opens an election session: an etcd lease of TTL Options.LeaseTTL (--leader-lease-ttl),
//     renewed by the etcd client while the process lives and reaches etcd.
//  2. It writes its record hubs/<hub-id> (advertised admin address, incarnation) under that
//     lease, so that the other replicas find it, and lose it when the lease lapses.
//  3. It campaigns in the election leader/ with the same lease. Every replica serves spokes and
//     hubctl meanwhile; only the leader runs the work that must happen once in the fleet (the
//     lead function: the gateway-index migration, the garbage collection of removed clusters,
//     the first hop key).
//  4. When the session ends (the process dies and its lease lapses after at most the TTL, or the
//     replica cannot reach etcd for the TTL), the lead function's context ends at once and the
//     replica starts again at 1 with a new session; another replica's campaign wins as soon as
//     etcd deletes the lapsed lease's key. A replica that stops cleanly resigns and revokes its
//     lease, so leadership moves without waiting for the TTL.
//
// spillway_hub_leader is 1 while this replica leads.
package replica

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/client/v3/concurrency"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/clock"
)

// DefaultLeaseTTL is the default TTL of the election session: leadership moves within about this
// long (plus etcd's lease check, 500 ms) after the leader dies.
const DefaultLeaseTTL = 3 * time.Second

// resignTimeout bounds the resignation of a replica that stops: one lease revocation, a write
// that waits for etcd's disk. Within the 30 s a Pod is given to stop; past it the leadership
// passes only when the lease's TTL runs out.
const resignTimeout = 5 * time.Second

// Options configure an Elector.
type Options struct {
	// HubID names this replica; Incarnation is new at every start.
	HubID, Incarnation string
	// AdvertiseAddress is where the other replicas reach this one's admin port (host:port).
	AdvertiseAddress string
	// LeaseTTL is the election session's TTL, rounded up to whole seconds; zero means
	// DefaultLeaseTTL.
	LeaseTTL time.Duration
	Logger   *slog.Logger
	// Registerer receives spillway_hub_leader; nil registers nothing.
	Registerer prometheus.Registerer
}

// Elector runs this replica's election session, its registry record and its campaign.
type Elector struct {
	cli     *clientv3.Client
	store   *registry.Store
	opts    Options
	log     *slog.Logger
	metrics *metrics
	// leading is what spillway_hub_leader shows.
	leading atomic.Bool
}

// New returns an Elector on an etcd client and the registry it shares with the other replicas.
func New(cli *clientv3.Client, store *registry.Store, opts Options) *Elector {
	if opts.LeaseTTL <= 0 {
		opts.LeaseTTL = DefaultLeaseTTL
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Elector{
		cli: cli, store: store, opts: opts,
		log:     opts.Logger.With("component", "hub-election"),
		metrics: newMetrics(opts.Registerer),
	}
	return e
}

func (e *Elector) ttlSeconds() int {
	return int((e.opts.LeaseTTL + time.Second - 1) / time.Second)
}

// Run keeps this replica registered and campaigning until ctx ends, and runs lead while it
// leads, with a context that ends as soon as the leadership does. lead should return when its
// context ends; an error it returns before is logged and lead runs again while the replica still
// leads (after a short pause). Run returns nil when ctx ends.
func (e *Elector) Run(ctx context.Context, lead func(context.Context) error) error {
	retry := newBackoff()
	for ctx.Err() == nil {
		start := time.Now()
		err := e.term(ctx, lead)
		if ctx.Err() != nil {
			break
		}
		if time.Since(start) > e.opts.LeaseTTL {
			retry = newBackoff() // a session that lasted starts the retries afresh
		}
		d := retry()
		e.log.Warn("election session ended, starting a new one", "err", err, "retry", d)
		select {
		case <-ctx.Done():
		case <-time.After(d):
		}
	}
	return nil
}

// errSessionLost is a session whose lease lapsed or could not be renewed.
var errSessionLost = errors.New("election session lost: its lease lapsed or etcd could not be reached for its TTL")

// term runs one election session: registers, campaigns, leads; it returns when the session
// ends or ctx does.
func (e *Elector) term(ctx context.Context, lead func(context.Context) error) error {
	sess, err := concurrency.NewSession(e.cli, concurrency.WithTTL(e.ttlSeconds()), concurrency.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("open election session: %w", err)
	}
	// sctx ends with the session or with ctx.
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go func() {
		select {
		case <-sess.Done():
			cancel(errSessionLost)
		case <-sctx.Done():
		}
	}()
	defer func() {
		// On a clean stop, give the leadership and the record up at once rather than after the
		// TTL; a lost session has nothing to give up.
		if !errors.Is(context.Cause(sctx), errSessionLost) {
			rctx, rcancel := context.WithTimeout(context.Background(), resignTimeout)
			defer rcancel()
			if _, err := e.cli.Revoke(rctx, sess.Lease()); err != nil {
				e.log.Warn("could not give up the election session: another replica leads once its lease expires", "ttl", e.ttlSeconds(), "err", err)
			}
		}
		sess.Orphan()
	}()

	rec := registry.HubRecord{ID: e.opts.HubID, Address: e.opts.AdvertiseAddress, Incarnation: e.opts.Incarnation, StartedAt: clock.Now().UTC()}
	if err := e.store.PutHub(sctx, rec, sess.Lease()); err != nil {
		return err
	}
	e.log.Info("hub replica registered", "address", rec.Address, "incarnation", rec.Incarnation, "lease", int64(sess.Lease()), "ttl", e.ttlSeconds())

	el := concurrency.NewElection(sess, e.store.ElectionPrefix())
	if err := el.Campaign(sctx, e.opts.HubID); err != nil {
		if c := context.Cause(sctx); c != nil {
			return c
		}
		return fmt.Errorf("campaign: %w", err)
	}
	e.leading.Store(true)
	e.metrics.leader.Set(1)
	e.metrics.terms.Inc()
	e.log.Info("hub replica leads: running the work that must happen once")
	defer func() {
		e.leading.Store(false)
		e.metrics.leader.Set(0)
		e.log.Info("hub replica no longer leads", "cause", context.Cause(sctx))
	}()
	for sctx.Err() == nil {
		if err := lead(sctx); err != nil && sctx.Err() == nil {
			e.log.Warn("leader work failed, running it again", "err", err)
			select {
			case <-sctx.Done():
			case <-time.After(time.Second):
			}
		} else if sctx.Err() == nil {
			<-sctx.Done() // lead is done; keep the leadership until the session ends
		}
	}
	return context.Cause(sctx)
}

// Leader reports whether this replica leads now.
func (e *Elector) Leader() bool { return e.leading.Load() }

// newBackoff returns a jittered exponential backoff from 100 ms to 2 s.
func newBackoff() func() time.Duration {
	d := 100 * time.Millisecond
	return func() time.Duration {
		j := d/2 + rand.N(d/2+1)
		d = min(2*d, 2*time.Second)
		return j
	}
}
