// Package registry keeps the fleet registry in etcd: registered clusters, the session of each
// connected spoke, the pools each cluster exports, and the fleet's trust: bootstrap tokens, join
// requests, revoked clusters and hop keys.
//
// Layout under the prefix (default "/spillway/v1/"):
//
//	clusters/<cluster>              ClusterRecord, no lease: a cluster stays registered
//	sessions/<cluster>              SessionRecord, held by the session lease
//	exports/<cluster>/<ns>/<name>   fleet.Export, held by the session lease
//	tokens/<id>                     TokenRecord (the secret's hash), held by a lease of the token's TTL
//	joins/<cluster>                 JoinRecord, held by the lease of the token it was made with
//	revocations/<cluster>           Revocation, no lease: a revoked certificate stays refused
//	gateways/<address>              the cluster whose registration holds that gateway address
//	hopkeys                         the fleet's hop-marker keys, the signing one first
//	hubs/<hub-id>                   HubRecord of a hub replica, held by its election-session lease
//	leader/<lease>                  the hub replicas' leader election (etcd's concurrency package)
//
// A spoke's session holds one etcd lease. The hub renews it while the spoke's stream lives; once the
// stream is gone the lease lapses after its TTL (the damping that keeps a flapping link from churning
// the fleet), and etcd deletes the session and every export with it. Capacity never reaches etcd.
package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/spillway-io/spillway/pkg/clock"
	"github.com/spillway-io/spillway/pkg/fleet"
)

// Errors returned by the registry; hub/server maps them to gRPC codes.
var (
	ErrNotFound    = errors.New("not found")
	ErrSessionLost = errors.New("session lease lost")
	ErrInvalid     = errors.New("invalid")
	// ErrLimit is wrapped by every LimitError.
	ErrLimit = errors.New("limit exceeded")
)

// Names of the registry's limits, as LimitError.Limit carries them.
const (
	LimitClusters          = "clusters"
	LimitExportsPerCluster = "exports_per_cluster"
)

// LimitError is a write refused because it would pass a limit of the hub.
type LimitError struct {
	// Limit is LimitClusters or LimitExportsPerCluster.
	Limit string
	Max   int
	// Cluster is the cluster whose write was refused.
	Cluster string
}

func (e *LimitError) Error() string {
	switch e.Limit {
	case LimitClusters:
		return fmt.Sprintf("cluster %s cannot register: the hub accepts at most %d clusters (--max-clusters); remove one (hubctl clusters revoke ID --remove) or raise the limit", e.Cluster, e.Max)
	case LimitExportsPerCluster:
		return fmt.Sprintf("cluster %s would export more than %d pools (--max-exports-per-cluster)", e.Cluster, e.Max)
	}
	return fmt.Sprintf("cluster %s: limit %s of %d exceeded", e.Cluster, e.Limit, e.Max)
}

// Unwrap makes a LimitError match ErrLimit.
func (e *LimitError) Unwrap() error { return ErrLimit }

// DefaultPrefix is the etcd key prefix of the registry.
const DefaultPrefix = "/spillway/v1/"

// maxTxnOps stays below etcd's default --max-txn-ops (128).
const maxTxnOps = 100

// ClusterRecord is the stored form of a registered cluster.
type ClusterRecord struct {
	Info         fleet.ClusterInfo `json:"info"`
	RegisteredAt time.Time         `json:"registeredAt"`
	LastSeen     time.Time         `json:"lastSeen"`
}

// SessionRecord is the stored form of a spoke's live session.
type SessionRecord struct {
	Cluster string `json:"cluster"`
	HubID   string `json:"hubID"`
	// HubIncarnation is the incarnation of the replica that opened the session (empty in
	// records of hubs before it was kept): a starting replica counts the session live only
	// while that incarnation of HubID is registered (view.Model.Unsettled).
	HubIncarnation   string    `json:"hubIncarnation,omitempty"`
	SpokeIncarnation string    `json:"spokeIncarnation"`
	ExportSeq        uint64    `json:"exportSeq"`
	StartedAt        time.Time `json:"startedAt"`
	LeaseID          int64     `json:"leaseID"`
}

// Store reads and writes the registry.
type Store struct {
	cli         *clientv3.Client
	prefix      string
	ttl         time.Duration
	incarnation string
	now         func() time.Time
}

// Options configure a Store.
type Options struct {
	// Prefix of every key; DefaultPrefix when empty.
	Prefix string
	// LeaseTTL is how long a cluster's exports outlive its session. Rounded up to whole seconds;
	// etcd enforces a minimum of a few seconds.
	LeaseTTL time.Duration
	// HubIncarnation is written in every session record the store opens
	// (SessionRecord.HubIncarnation): the hub replica's incarnation.
	HubIncarnation string
}

// New returns a Store on an etcd client.
func New(cli *clientv3.Client, opts Options) *Store {
	if opts.Prefix == "" {
		opts.Prefix = DefaultPrefix
	}
	return &Store{cli: cli, prefix: opts.Prefix, ttl: opts.LeaseTTL, incarnation: opts.HubIncarnation, now: clock.Now}
}

// WithClock returns a Store on the same etcd client and prefix that reads the time from now, as
// a hub replica whose clock differs from this one's would: the times it records (revocations,
// tokens, join requests, registrations) come from now.
func (s *Store) WithClock(now func() time.Time) *Store {
	c := *s
	c.now = now
	return &c
}

// LeaseTTL returns the session lease TTL.
func (s *Store) LeaseTTL() time.Duration { return s.ttl }

func (s *Store) clusterKey(id string) string { return s.prefix + "clusters/" + id }
func (s *Store) sessionKey(id string) string { return s.prefix + "sessions/" + id }
func (s *Store) exportsPrefix(id string) string {
	return s.prefix + "exports/" + id + "/"
}
func (s *Store) exportKey(id string, p fleet.PoolRef) string {
	return s.exportsPrefix(id) + p.Namespace + "/" + p.Name
}

// PutCluster registers a cluster or updates its record, keeping its first registration time.
func (s *Store) PutCluster(ctx context.Context, info fleet.ClusterInfo) (ClusterRecord, error) {
	return s.RegisterCluster(ctx, info, 0)
}

// RegisterCluster is PutCluster that refuses a new cluster with a LimitError when maxClusters
// (when positive) are registered already; updating a registered cluster is always allowed, and
// a registration that changes nothing writes nothing.
// Registrations of new clusters that race may pass the limit by their number.
//
// A gateway address is held by one cluster at a time: a registration naming an address that
// another registered cluster holds is refused with a GatewayTakenError (the comparison is of
// NormalizeGatewayAddress forms). The index entry (gateways/<address> → cluster) is written in
// the transaction that writes the record, so two clusters racing for one address cannot both
// get it; a cluster that changes its address frees the old one, and so does CollectRemoved.
func (s *Store) RegisterCluster(ctx context.Context, info fleet.ClusterInfo, maxClusters int) (ClusterRecord, error) {
	key := s.clusterKey(info.ID)
	for {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return ClusterRecord{}, fmt.Errorf("read cluster %q: %w", info.ID, err)
		}
		if len(resp.Kvs) == 0 && maxClusters > 0 {
			n, err := s.cli.Get(ctx, s.prefix+"clusters/", clientv3.WithPrefix(), clientv3.WithCountOnly())
			if err != nil {
				return ClusterRecord{}, fmt.Errorf("count clusters: %w", err)
			}
			if n.Count >= int64(maxClusters) {
				return ClusterRecord{}, &LimitError{Limit: LimitClusters, Max: maxClusters, Cluster: info.ID}
			}
		}
		now := s.now().UTC()
		rec := ClusterRecord{Info: info, RegisteredAt: now, LastSeen: now}
		cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		var old ClusterRecord
		if len(resp.Kvs) == 1 {
			if err := json.Unmarshal(resp.Kvs[0].Value, &old); err == nil {
				rec.RegisteredAt = old.RegisteredAt
			}
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)
		}
		gwCmps, gwOps, err := s.gatewayOps(ctx, info.ID, old.Info.GatewayAddress, info.GatewayAddress)
		if err != nil {
			return ClusterRecord{}, err
		}
		if len(resp.Kvs) == 1 && old.Info.Equal(info) && len(gwOps) == 0 {
			// Registered as it is, its gateway address indexed as its own: nothing to write
			// unless the cluster was revoked (the write then says it registered again since).
			// A spoke registers at every connection, and a thousand reconnecting at once would
			// otherwise write a thousand records; the session's start updates LastSeen.
			rv, err := s.cli.Get(ctx, s.revocationKey(info.ID), clientv3.WithCountOnly())
			if err != nil {
				return ClusterRecord{}, fmt.Errorf("read the revocation of %q: %w", info.ID, err)
			}
			if rv.Count == 0 {
				return old, nil
			}
		}
		val, err := json.Marshal(rec)
		if err != nil {
			return ClusterRecord{}, err
		}
		txn, err := s.cli.Txn(ctx).If(append([]clientv3.Cmp{cmp}, gwCmps...)...).Then(append([]clientv3.Op{clientv3.OpPut(key, string(val))}, gwOps...)...).Commit()
		if err != nil {
			return ClusterRecord{}, fmt.Errorf("write cluster %q: %w", info.ID, err)
		}
		if txn.Succeeded {
			return rec, nil
		}
	}
}

// GetCluster returns a registered cluster's record.
func (s *Store) GetCluster(ctx context.Context, id string) (ClusterRecord, error) {
	resp, err := s.cli.Get(ctx, s.clusterKey(id))
	if err != nil {
		return ClusterRecord{}, fmt.Errorf("read cluster %q: %w", id, err)
	}
	if len(resp.Kvs) == 0 {
		return ClusterRecord{}, fmt.Errorf("cluster %q is not registered: %w", id, ErrNotFound)
	}
	var rec ClusterRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return ClusterRecord{}, fmt.Errorf("decode cluster %q: %w", id, err)
	}
	return rec, nil
}

// GetSession returns the record of a cluster's live session; ok is false when it has none.
func (s *Store) GetSession(ctx context.Context, cluster string) (rec SessionRecord, ok bool, err error) {
	resp, err := s.cli.Get(ctx, s.sessionKey(cluster))
	if err != nil {
		return SessionRecord{}, false, fmt.Errorf("read session of %q: %w", cluster, err)
	}
	if len(resp.Kvs) == 0 {
		return SessionRecord{}, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return SessionRecord{}, false, fmt.Errorf("decode session of %q: %w", cluster, err)
	}
	return rec, true, nil
}

// Session is a spoke's live session: it owns the lease that holds the cluster's exports. A session
// ends by no longer renewing its lease (never by revoking it): the exports stay until the TTL
// lapses, so a spoke that reconnects in time (to this hub or another replica) keeps them.
type Session struct {
	store  *Store
	record SessionRecord
	stored string // the record's JSON as last written: the guard of every later write
	lease  clientv3.LeaseID
	// Resumed is true when the session continues an earlier one of the same spoke incarnation
	// whose lease was still alive; AckedSeq is then the last export delta stored.
	Resumed  bool
	AckedSeq uint64
	// MaxExports, when positive, is the most pools the cluster may export: ApplyExports refuses
	// a delta that would leave more with a LimitError. Set it before the first ApplyExports.
	MaxExports int
	// exports are the pools the cluster exports as this session stored them: the session's own
	// truth, updated when a delta is stored (the fleet view follows etcd later).
	exports map[fleet.PoolRef]struct{}
}

// Exported reports whether the cluster exports pool, as this session last stored it. Like
// ApplyExports, it is for the one goroutine that applies the session's messages.
func (s *Session) Exported(pool fleet.PoolRef) bool {
	_, ok := s.exports[pool]
	return ok
}

// ExportCount returns how many pools the cluster exports, as this session last stored it.
func (s *Session) ExportCount() int { return len(s.exports) }

// Record returns the session's stored record.
func (s *Session) Record() SessionRecord { return s.record }

// OpenSession starts (or takes over) the session of a registered cluster. When the cluster still
// has a live lease, the lease is kept, so the exports survive a reconnect; export sequence numbers
// resume only for the same spoke incarnation. It costs etcd three round trips: one read of the
// cluster's record, its session and its exports' keys; the lease's renewal (or a new one); one
// transaction that writes the session record and the cluster's LastSeen.
func (s *Store) OpenSession(ctx context.Context, cluster, hubID, incarnation string) (*Session, error) {
	key, ckey := s.sessionKey(cluster), s.clusterKey(cluster)
	read, err := s.cli.Txn(ctx).Then(
		clientv3.OpGet(ckey),
		clientv3.OpGet(key),
		clientv3.OpGet(s.exportsPrefix(cluster), clientv3.WithPrefix(), clientv3.WithKeysOnly()),
	).Commit()
	if err != nil {
		return nil, fmt.Errorf("read cluster %q and its session: %w", cluster, err)
	}
	clusterKV := read.Responses[0].GetResponseRange().GetKvs()
	if len(clusterKV) == 0 {
		return nil, fmt.Errorf("cluster %q is not registered: %w", cluster, ErrNotFound)
	}
	var rec ClusterRecord
	if err := json.Unmarshal(clusterKV[0].Value, &rec); err != nil {
		return nil, fmt.Errorf("decode cluster %q: %w", cluster, err)
	}
	sess := &Session{store: s, exports: map[fleet.PoolRef]struct{}{}}
	var old SessionRecord
	if kvs := read.Responses[1].GetResponseRange().GetKvs(); len(kvs) == 1 && json.Unmarshal(kvs[0].Value, &old) == nil && kvs[0].Lease != 0 {
		// The old lease is alive: keep it so the exports it holds stay in place.
		if _, err := s.cli.KeepAliveOnce(ctx, clientv3.LeaseID(kvs[0].Lease)); err == nil {
			sess.lease = clientv3.LeaseID(kvs[0].Lease)
			if old.SpokeIncarnation == incarnation {
				sess.Resumed = true
				sess.AckedSeq = old.ExportSeq
			}
		}
	}
	if sess.lease == 0 {
		ttl := int64((s.ttl + time.Second - 1) / time.Second)
		grant, err := s.cli.Grant(ctx, ttl)
		if err != nil {
			return nil, fmt.Errorf("grant session lease for %q: %w", cluster, err)
		}
		sess.lease = grant.ID
	}
	now := s.now().UTC()
	sess.record = SessionRecord{
		Cluster:          cluster,
		HubID:            hubID,
		HubIncarnation:   s.incarnation,
		SpokeIncarnation: incarnation,
		ExportSeq:        sess.AckedSeq,
		StartedAt:        now,
		LeaseID:          int64(sess.lease),
	}
	// A new incarnation starts from a replace_all delta, which withdraws what the old one exported
	// and the new one does not: until it is stored, the old exports stay, so that no importer sees
	// a pool both incarnations export withdrawn for a moment (or for good, if the hub dies between
	// a clear and the resend).
	for _, kv := range read.Responses[2].GetResponseRange().GetKvs() {
		if ev, err := s.decode(string(kv.Key), nil, true); err == nil && ev.Kind == KindExport {
			sess.exports[ev.Export.Pool] = struct{}{}
		}
	}
	val, err := json.Marshal(sess.record)
	if err != nil {
		return nil, err
	}
	rec.LastSeen = now
	cval, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	// The session record, and the cluster's LastSeen if its record is still as read: a
	// registration that raced with the read changed it, and the LastSeen is written after.
	put := clientv3.OpPut(key, string(val), clientv3.WithLease(sess.lease))
	txn, err := s.cli.Txn(ctx).If(unchanged(ckey, clusterKV[0].ModRevision)).
		Then(put, clientv3.OpPut(ckey, string(cval))).Else(put).Commit()
	if err != nil {
		return nil, fmt.Errorf("write session of %q: %w", cluster, err)
	}
	sess.stored = string(val)
	if !txn.Succeeded {
		if err := s.touchCluster(ctx, cluster); err != nil {
			return nil, err
		}
	}
	return sess, nil
}

// touchCluster updates a cluster's LastSeen, leaving the rest of its record as a registration
// that races with it wrote it.
func (s *Store) touchCluster(ctx context.Context, cluster string) error {
	key := s.clusterKey(cluster)
	for {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return fmt.Errorf("read cluster %q: %w", cluster, err)
		}
		if len(resp.Kvs) == 0 {
			return fmt.Errorf("cluster %q is not registered: %w", cluster, ErrNotFound)
		}
		var rec ClusterRecord
		if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
			return fmt.Errorf("decode cluster %q: %w", cluster, err)
		}
		rec.LastSeen = s.now().UTC()
		val, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		txn, err := s.cli.Txn(ctx).If(unchanged(key, resp.Kvs[0].ModRevision)).Then(clientv3.OpPut(key, string(val))).Commit()
		if err != nil {
			return fmt.Errorf("write cluster %q: %w", cluster, err)
		}
		if txn.Succeeded {
			return nil
		}
	}
}

func (sess *Session) putRecord(ctx context.Context) error {
	val, err := json.Marshal(sess.record)
	if err != nil {
		return err
	}
	_, err = sess.store.cli.Put(ctx, sess.store.sessionKey(sess.record.Cluster), string(val), clientv3.WithLease(sess.lease))
	if err != nil {
		return fmt.Errorf("write session of %q: %w", sess.record.Cluster, err)
	}
	sess.stored = string(val)
	return nil
}

// KeepAlive renews the session lease until ctx ends. It returns ErrSessionLost if the lease
// expires or is revoked meanwhile (for example after a long partition from etcd).
func (sess *Session) KeepAlive(ctx context.Context) error {
	ch, err := sess.store.cli.KeepAlive(ctx, sess.lease)
	if err != nil {
		return fmt.Errorf("keep session of %q alive: %w: %w", sess.record.Cluster, ErrSessionLost, err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case resp, ok := <-ch:
			if !ok || resp == nil {
				if ctx.Err() != nil {
					return nil
				}
				return fmt.Errorf("lease of %q ended: %w", sess.record.Cluster, ErrSessionLost)
			}
		}
	}
}

// ExportDelta is one change to a cluster's exports.
type ExportDelta struct {
	Seq        uint64
	ReplaceAll bool
	Upserts    []fleet.Export
	Removes    []fleet.PoolRef
}

// ApplyExports stores a delta under the session's lease. Deltas at or below the acked sequence
// number are ignored (a resent delta after a reconnect, or a replayed one): nothing changes. The
// stored sequence number moves in the last transaction, so a delta interrupted half-way is
// applied again in full when resent. A delta that would leave more than MaxExports pools is
// refused with a LimitError, and changes nothing.
func (sess *Session) ApplyExports(ctx context.Context, d ExportDelta) error {
	if d.Seq <= sess.AckedSeq {
		return nil
	}
	if d.Seq != sess.AckedSeq+1 && !d.ReplaceAll {
		return fmt.Errorf("export delta %d does not follow %d and is not replace_all: %w", d.Seq, sess.AckedSeq, ErrInvalid)
	}
	st := sess.store
	cluster := sess.record.Cluster
	next := make(map[fleet.PoolRef]struct{}, len(sess.exports)+len(d.Upserts))
	if !d.ReplaceAll {
		for p := range sess.exports {
			next[p] = struct{}{}
		}
	}
	for _, e := range d.Upserts {
		next[e.Pool] = struct{}{}
	}
	for _, p := range d.Removes {
		delete(next, p)
	}
	if sess.MaxExports > 0 && len(next) > sess.MaxExports {
		return &LimitError{Limit: LimitExportsPerCluster, Max: sess.MaxExports, Cluster: cluster}
	}
	// Upserts go first and withdrawals last, so that a delta cut short (the hub dies between its
	// transactions) leaves the old set and part of the new one, never fewer than both hold: no
	// pool is withdrawn before every upsert of the delta is stored.
	var ops []clientv3.Op
	for _, e := range d.Upserts {
		val, err := json.Marshal(e)
		if err != nil {
			return err
		}
		ops = append(ops, clientv3.OpPut(st.exportKey(cluster, e.Pool), string(val), clientv3.WithLease(sess.lease)))
	}
	if d.ReplaceAll {
		keep := make(map[string]bool, len(d.Upserts))
		for _, e := range d.Upserts {
			keep[st.exportKey(cluster, e.Pool)] = true
		}
		resp, err := st.cli.Get(ctx, st.exportsPrefix(cluster), clientv3.WithPrefix(), clientv3.WithKeysOnly())
		if err != nil {
			return fmt.Errorf("list exports of %q: %w", cluster, err)
		}
		for _, kv := range resp.Kvs {
			if !keep[string(kv.Key)] {
				ops = append(ops, clientv3.OpDelete(string(kv.Key)))
			}
		}
	}
	for _, p := range d.Removes {
		ops = append(ops, clientv3.OpDelete(st.exportKey(cluster, p)))
	}
	rec := sess.record
	rec.ExportSeq = d.Seq
	recVal, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	recVal0 := recVal
	sessKey := st.sessionKey(cluster)
	// The session is ours while its record is exactly what we last wrote: a takeover by a newer
	// stream (even one that kept the lease) or an expiry makes every later write fail.
	ours := clientv3.Compare(clientv3.Value(sessKey), "=", sess.stored)
	for len(ops) > 0 || recVal != nil {
		n := min(len(ops), maxTxnOps)
		batch := ops[:n]
		ops = ops[n:]
		if len(ops) == 0 {
			batch = append(batch, clientv3.OpPut(sessKey, string(recVal), clientv3.WithLease(sess.lease)))
			recVal = nil
		}
		resp, err := st.cli.Txn(ctx).If(ours).Then(batch...).Commit()
		if err != nil {
			return fmt.Errorf("store exports of %q: %w", cluster, err)
		}
		if !resp.Succeeded {
			return fmt.Errorf("session of %q was taken over or expired: %w", cluster, ErrSessionLost)
		}
	}
	sess.stored = string(recVal0)
	sess.record = rec
	sess.AckedSeq = d.Seq
	sess.exports = next
	return nil
}

// State is a consistent read of the whole registry at one etcd revision (tokens and join
// requests aside: they are read where they are used).
type State struct {
	Revision int64
	Clusters map[string]ClusterRecord
	Sessions map[string]SessionRecord
	Exports  map[string]map[fleet.PoolRef]fleet.Export // cluster → pool → export
	// Revocations are the revoked clusters; HopKeys the fleet's hop keys, the signing one first.
	Revocations map[string]Revocation
	HopKeys     []fleet.HopKey
	// Cordons are the cordoned clusters and regions, by CordonKey.
	Cordons map[string]Cordon
}

// Load reads the whole registry at one revision.
func (s *Store) Load(ctx context.Context) (State, error) {
	resp, err := s.cli.Get(ctx, s.prefix, clientv3.WithPrefix())
	if err != nil {
		return State{}, fmt.Errorf("read registry: %w", err)
	}
	st := State{
		Revision:    resp.Header.Revision,
		Clusters:    map[string]ClusterRecord{},
		Sessions:    map[string]SessionRecord{},
		Exports:     map[string]map[fleet.PoolRef]fleet.Export{},
		Revocations: map[string]Revocation{},
		Cordons:     map[string]Cordon{},
	}
	for _, kv := range resp.Kvs {
		ev, err := s.decode(string(kv.Key), kv.Value, false)
		if err != nil {
			continue // a record we cannot read is skipped, never fatal; decode says why in Watch
		}
		st.Apply(ev)
	}
	return st, nil
}

// Apply changes the state by one event.
func (st *State) Apply(ev Event) {
	switch ev.Kind {
	case KindCluster:
		if ev.Deleted {
			delete(st.Clusters, ev.Cluster)
		} else {
			st.Clusters[ev.Cluster] = ev.ClusterRecord
		}
	case KindSession:
		if ev.Deleted {
			delete(st.Sessions, ev.Cluster)
		} else {
			st.Sessions[ev.Cluster] = ev.Session
		}
	case KindExport:
		m := st.Exports[ev.Cluster]
		if ev.Deleted {
			delete(m, ev.Export.Pool)
			if len(m) == 0 {
				delete(st.Exports, ev.Cluster)
			}
			return
		}
		if m == nil {
			m = map[fleet.PoolRef]fleet.Export{}
			st.Exports[ev.Cluster] = m
		}
		m[ev.Export.Pool] = ev.Export
	case KindRevocation:
		if ev.Deleted {
			delete(st.Revocations, ev.Cluster)
			return
		}
		if st.Revocations == nil {
			st.Revocations = map[string]Revocation{}
		}
		st.Revocations[ev.Cluster] = ev.Revocation
	case KindHopKeys:
		st.HopKeys = ev.HopKeys
	case KindCordon:
		k := CordonKey(ev.Cordon.Scope, ev.Cordon.Name)
		if ev.Deleted {
			delete(st.Cordons, k)
			return
		}
		if st.Cordons == nil {
			st.Cordons = map[string]Cordon{}
		}
		st.Cordons[k] = ev.Cordon
	}
}

// EventKind says which kind of record changed.
type EventKind int

// Event kinds.
const (
	KindCluster EventKind = iota + 1
	KindSession
	KindExport
	// KindRevocation carries a Revocation of Cluster.
	KindRevocation
	// KindHopKeys carries the fleet's hop keys (none when deleted).
	KindHopKeys
	// KindCordon carries a Cordon (its scope and name only when deleted).
	KindCordon
)

// Event is one change of the registry.
type Event struct {
	Kind          EventKind
	Deleted       bool
	Cluster       string
	ClusterRecord ClusterRecord
	Session       SessionRecord
	Export        fleet.Export
	Revocation    Revocation
	HopKeys       []fleet.HopKey
	Cordon        Cordon
	Revision      int64
}

func (s *Store) decode(key string, val []byte, deleted bool) (Event, error) {
	rest, ok := strings.CutPrefix(key, s.prefix)
	if !ok {
		return Event{}, fmt.Errorf("key %q outside prefix: %w", key, ErrInvalid)
	}
	parts := strings.Split(rest, "/")
	ev := Event{Deleted: deleted}
	switch {
	case len(parts) == 2 && parts[0] == "clusters":
		ev.Kind, ev.Cluster = KindCluster, parts[1]
		if !deleted {
			if err := json.Unmarshal(val, &ev.ClusterRecord); err != nil {
				return Event{}, fmt.Errorf("decode %q: %w", key, err)
			}
		}
	case len(parts) == 2 && parts[0] == "sessions":
		ev.Kind, ev.Cluster = KindSession, parts[1]
		if !deleted {
			if err := json.Unmarshal(val, &ev.Session); err != nil {
				return Event{}, fmt.Errorf("decode %q: %w", key, err)
			}
		}
	case len(parts) == 4 && parts[0] == "exports":
		ev.Kind, ev.Cluster = KindExport, parts[1]
		ev.Export.Pool = fleet.PoolRef{Namespace: parts[2], Name: parts[3]}
		if !deleted {
			if err := json.Unmarshal(val, &ev.Export); err != nil {
				return Event{}, fmt.Errorf("decode %q: %w", key, err)
			}
		}
	case len(parts) == 2 && parts[0] == "revocations":
		ev.Kind, ev.Cluster = KindRevocation, parts[1]
		if !deleted {
			if err := json.Unmarshal(val, &ev.Revocation); err != nil {
				return Event{}, fmt.Errorf("decode %q: %w", key, err)
			}
			ev.Revocation.Cluster = parts[1]
		}
	case len(parts) == 1 && parts[0] == "hopkeys":
		ev.Kind = KindHopKeys
		if !deleted {
			var rec hopKeysRecord
			if err := json.Unmarshal(val, &rec); err != nil {
				return Event{}, fmt.Errorf("decode %q: %w", key, err)
			}
			ev.HopKeys = rec.fleet()
		}
	case len(parts) == 3 && parts[0] == "cordons" && (parts[1] == string(CordonCluster) || parts[1] == string(CordonRegion)) && parts[2] != "":
		ev.Kind = KindCordon
		if !deleted {
			if err := json.Unmarshal(val, &ev.Cordon); err != nil {
				return Event{}, fmt.Errorf("decode %q: %w", key, err)
			}
		}
		ev.Cordon.Scope, ev.Cordon.Name = CordonScope(parts[1]), parts[2]
	default:
		// tokens/ and joins/ among them: they are read where they are used, never followed.
		return Event{}, fmt.Errorf("unknown key %q: %w", key, ErrInvalid)
	}
	return ev, nil
}

// Watch calls fn for every change after revision rev until ctx ends. It returns an error when the
// watch cannot continue (for example the revision was compacted); the caller then loads again.
func (s *Store) Watch(ctx context.Context, rev int64, fn func([]Event)) error {
	wctx, cancel := context.WithCancel(clientv3.WithRequireLeader(ctx))
	defer cancel()
	wch := s.cli.Watch(wctx, s.prefix, clientv3.WithPrefix(), clientv3.WithRev(rev+1), clientv3.WithPrevKV())
	for resp := range wch {
		if err := resp.Err(); err != nil {
			return fmt.Errorf("watch registry: %w", err)
		}
		evs := make([]Event, 0, len(resp.Events))
		for _, e := range resp.Events {
			ev, err := s.decode(string(e.Kv.Key), e.Kv.Value, e.Type == clientv3.EventTypeDelete)
			if err != nil {
				continue
			}
			ev.Revision = e.Kv.ModRevision
			evs = append(evs, ev)
		}
		if len(evs) > 0 {
			fn(evs)
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	return errors.New("watch registry: channel closed")
}
