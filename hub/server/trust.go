package server

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"

	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
)

// trust is what this replica knows of the fleet's trust: the revoked clusters and the hop keys.
// Run keeps it in step with etcd; RevokeCluster and RotateHopKey also update it at once on the
// replica that served them.
type trust struct {
	mu          sync.RWMutex
	loaded      bool
	revocations map[string]registry.Revocation
	hopKeys     []fleet.HopKey
	// hopWake is closed when hopKeys change.
	hopWake chan struct{}
}

func newTrust() *trust {
	return &trust{revocations: map[string]registry.Revocation{}, hopWake: make(chan struct{})}
}

// revocation returns the revocation of cluster; loaded is false until Run first loaded them.
func (t *trust) revocation(cluster string) (rev registry.Revocation, ok, loaded bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	rev, ok = t.revocations[cluster]
	return rev, ok, t.loaded
}

// setRevocation keeps the later of rev and the one known, so that a watch event of an older
// revocation cannot weaken a newer one this replica wrote; it returns the one kept.
func (t *trust) setRevocation(rev registry.Revocation) registry.Revocation {
	t.mu.Lock()
	defer t.mu.Unlock()
	if cur, ok := t.revocations[rev.Cluster]; ok && cur.RevokedAt.After(rev.RevokedAt) {
		return cur
	}
	t.revocations[rev.Cluster] = rev
	return rev
}

func (t *trust) deleteRevocation(cluster string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.revocations, cluster)
}

// hopKeysNow returns the hop keys and a channel closed when they next change.
func (t *trust) hopKeysNow() ([]fleet.HopKey, <-chan struct{}) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return t.hopKeys, t.hopWake
}

// setHopKeys replaces the hop keys and wakes the streams when they changed.
func (t *trust) setHopKeys(keys []fleet.HopKey) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if slices.EqualFunc(keys, t.hopKeys, func(a, b fleet.HopKey) bool { return a.ID == b.ID && slices.Equal(a.Secret, b.Secret) }) {
		return
	}
	t.hopKeys = keys
	close(t.hopWake)
	t.hopWake = make(chan struct{})
}

// reset replaces the revocations and hop keys with a full load's, and marks them loaded.
func (t *trust) reset(st registry.State) {
	t.mu.Lock()
	t.revocations = map[string]registry.Revocation{}
	for id, rev := range st.Revocations {
		t.revocations[id] = rev
	}
	t.loaded = true
	t.mu.Unlock()
	t.setHopKeys(st.HopKeys)
}

// Ready returns nil once the hub has loaded the fleet's revocations and hop keys (Run does, at
// its start; the leader's Lead creates the first hop key of a new fleet) and its fleet view has loaded the registry (view.Model.Follow does): before, every
// call that needs a cluster identity answers Unavailable, and so do the admin calls that read the
// view (ErrViewNotLoaded).
func (s *Server) Ready() error {
	if _, _, loaded := s.trust.revocation(""); !loaded {
		return ErrNotReady
	}
	if s.model != nil && !s.model.Loaded() {
		return ErrViewNotLoaded
	}
	if keys, _ := s.trust.hopKeysNow(); len(keys) == 0 {
		return ErrNoHopKeys
	}
	return nil
}

// retryOptions retry a read or write of etcd after 100 ms doubling to 5 s, for as long as the
// context lasts, logging each failure.
func retryOptions(log *slog.Logger, what string) []backoff.RetryOption {
	return []backoff.RetryOption{
		backoff.WithBackOff(&backoff.ExponentialBackOff{InitialInterval: 100 * time.Millisecond, Multiplier: 2, MaxInterval: 5 * time.Second}),
		backoff.WithMaxElapsedTime(0),
		backoff.WithNotify(func(err error, d time.Duration) {
			log.Warn("trust: reading etcd failed, retrying", "what", what, "err", err, "retry", d)
		}),
	}
}

// Run follows the fleet's trust in etcd until ctx ends, on every replica: it loads the
// revocations and hop keys, then watches them. A revocation (made on any replica) ends the
// revoked cluster's session on this replica at once; new hop keys go to every stream. A broken
// watch loads again; failures are retried after 100 ms doubling to 5 s. The work that must
// happen once in the fleet is Lead's.
func (s *Server) Run(ctx context.Context) error {
	log := s.trustLog
	for ctx.Err() == nil {
		st, err := backoff.Retry(ctx, func() (registry.State, error) { return s.store.Load(ctx) }, retryOptions(log, "loading the registry")...)
		if err != nil {
			break // only the end of ctx stops the retries
		}
		s.trust.reset(st)
		log.Debug("trust loaded", "revision", st.Revision, "revocations", len(st.Revocations), "hopKeys", len(st.HopKeys))
		for _, rev := range st.Revocations {
			s.endRevoked(rev)
		}
		err = s.store.Watch(ctx, st.Revision, func(evs []registry.Event) {
			for _, ev := range evs {
				s.applyTrustEvent(ev)
			}
		})
		if err != nil {
			log.Warn("trust: registry watch ended, reloading", "err", err)
		}
	}
	return nil
}

func (s *Server) applyTrustEvent(ev registry.Event) {
	switch {
	case ev.Kind == registry.KindRevocation && ev.Deleted:
		s.trust.deleteRevocation(ev.Cluster)
	case ev.Kind == registry.KindRevocation:
		s.endRevoked(s.trust.setRevocation(ev.Revocation))
	case ev.Kind == registry.KindHopKeys && !ev.Deleted:
		s.trust.setHopKeys(ev.HopKeys)
	}
}

// Lead does the work that must happen once in the fleet, on the replica that leads (hub/replica
// runs it under the election), until ctx ends: it creates the first hop key when there is none
// (again if someone deletes them), indexes the gateway addresses of clusters registered before
// the index existed (registry.Store.IndexGateways), and deletes the record of a cluster revoked
// with remove once its session lease lapsed (registry.Store.CollectRemoved). Each of these is a
// guarded etcd transaction, so a former leader that has not noticed yet that it lost the
// election does no harm running it a moment longer. A broken watch loads again.
func (s *Server) Lead(ctx context.Context) error {
	log := s.trustLog.With("role", "leader")
	if _, err := backoff.Retry(ctx, func() ([]fleet.HopKey, error) { return s.store.EnsureHopKeys(ctx) }, retryOptions(log, "creating the first hop key")...); err != nil {
		return nil // only the end of ctx stops the retries
	}
	conflicts, err := backoff.Retry(ctx, func() (map[string]string, error) { return s.store.IndexGateways(ctx) }, retryOptions(log, "indexing gateway addresses")...)
	if err != nil {
		return nil
	}
	for cluster, owner := range conflicts {
		log.Warn("trust: two clusters are registered with one gateway address; the other's next registration will be refused", "cluster", owner, "other", cluster)
	}
	for ctx.Err() == nil {
		st, err := backoff.Retry(ctx, func() (registry.State, error) { return s.store.Load(ctx) }, retryOptions(log, "loading the registry")...)
		if err != nil {
			break
		}
		revs := maps.Clone(st.Revocations)
		for _, rev := range revs {
			s.collect(ctx, log, rev)
		}
		err = s.store.Watch(ctx, st.Revision, func(evs []registry.Event) {
			for _, ev := range evs {
				switch {
				case ev.Kind == registry.KindRevocation && ev.Deleted:
					delete(revs, ev.Cluster)
				case ev.Kind == registry.KindRevocation:
					if cur, ok := revs[ev.Cluster]; !ok || !cur.RevokedAt.After(ev.Revocation.RevokedAt) {
						revs[ev.Cluster] = ev.Revocation
					}
					s.collect(ctx, log, revs[ev.Cluster])
				case ev.Kind == registry.KindHopKeys && ev.Deleted:
					// Deleted by hand: make a new first key, whose put arrives as the next event.
					if _, err := s.store.EnsureHopKeys(ctx); err != nil {
						log.Warn("trust: the hop keys were deleted and could not be created again", "err", err)
					}
				case ev.Kind == registry.KindSession && ev.Deleted:
					if rev, ok := revs[ev.Cluster]; ok {
						s.collect(ctx, log, rev)
					}
				}
			}
		})
		if err != nil {
			log.Warn("trust: registry watch ended, reloading", "err", err)
		}
	}
	return nil
}

// collect deletes the record of a cluster revoked with remove once nothing of it is left.
func (s *Server) collect(ctx context.Context, log *slog.Logger, rev registry.Revocation) {
	if !rev.Remove {
		return
	}
	done, err := s.store.CollectRemoved(ctx, rev)
	switch {
	case err != nil && ctx.Err() == nil:
		log.Warn("trust: a removed cluster's record could not be deleted", "cluster", rev.Cluster, "err", err)
	case done:
		log.Info("removed cluster's record deleted", "cluster", rev.Cluster, "revokedAt", rev.RevokedAt)
	}
}

// endRevoked ends the session of a revoked cluster on this replica at once, if its certificate is
// one the revocation refuses.
func (s *Server) endRevoked(rev registry.Revocation) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.sessions[rev.Cluster]; ok && rev.Refuses(cur.notBefore) {
		cur.end()
		cur.cancel(revokedError(rev.Cluster, rev.RevokedAt))
	}
	for obs := range s.observers[rev.Cluster] {
		if rev.Refuses(obs.notBefore) {
			obs.cancel(revokedError(rev.Cluster, rev.RevokedAt))
		}
	}
}
