package registry

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/spillway-io/spillway/pkg/fleet"
)

// Revocation refuses every certificate of a cluster issued up to RevokedAt (NotBefore at or
// before it). It stays after the cluster's record is gone, so the certificates stay refused.
type Revocation struct {
	Cluster   string    `json:"cluster"`
	RevokedAt time.Time `json:"revokedAt"`
	// Remove asks for the cluster's record to be deleted once its exports are withdrawn.
	Remove    bool   `json:"remove,omitempty"`
	RevokedBy string `json:"revokedBy,omitempty"`
}

// Refuses reports whether a certificate of the cluster valid from notBefore is revoked.
func (r Revocation) Refuses(notBefore time.Time) bool { return !notBefore.After(r.RevokedAt) }

// RefusesToken reports whether a bootstrap token may no longer join the cluster: one created at
// or before the revocation, which a revoked cluster's attacker may hold as well as its owner.
func (r Revocation) RefusesToken(tok TokenRecord) bool { return !tok.CreatedAt.After(r.RevokedAt) }

// getRevocation reads the revocation of cluster with its revision (0 when there is none).
func (s *Store) getRevocation(ctx context.Context, cluster string) (rev Revocation, modRev int64, ok bool, err error) {
	resp, err := s.cli.Get(ctx, s.revocationKey(cluster))
	if err != nil {
		return Revocation{}, 0, false, fmt.Errorf("read revocation of %q: %w", cluster, err)
	}
	if len(resp.Kvs) == 0 {
		return Revocation{}, 0, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &rev); err != nil {
		return Revocation{}, 0, false, fmt.Errorf("decode revocation of %q: %w", cluster, err)
	}
	rev.Cluster = cluster
	return rev, resp.Kvs[0].ModRevision, true, nil
}

func (s *Store) revocationKey(cluster string) string { return s.prefix + "revocations/" + cluster }
func (s *Store) hopKeysKey() string                  { return s.prefix + "hopkeys" }

// Revoke revokes every certificate of cluster issued until now, and with remove asks for its
// record to be garbage-collected (CollectRemoved). A later Revoke replaces an earlier one.
func (s *Store) Revoke(ctx context.Context, cluster string, remove bool, by string) (Revocation, error) {
	rev := Revocation{Cluster: cluster, RevokedAt: s.now().UTC(), Remove: remove, RevokedBy: by}
	val, err := json.Marshal(rev)
	if err != nil {
		return Revocation{}, err
	}
	if _, err := s.cli.Put(ctx, s.revocationKey(cluster), string(val)); err != nil {
		return Revocation{}, fmt.Errorf("write revocation of %q: %w", cluster, err)
	}
	return rev, nil
}

// CollectRemoved deletes the record (and join request, and the hold on its gateway address) of a
// cluster revoked with remove once it
// has neither a session nor an export and was not seen since the revocation; it reports whether
// it deleted. A cluster that registered or connected again after the revocation (with a newer
// certificate) is kept. Every hub replica may call it: the deletion is one guarded transaction.
func (s *Store) CollectRemoved(ctx context.Context, rev Revocation) (bool, error) {
	if !rev.Remove {
		return false, nil
	}
	key := s.clusterKey(rev.Cluster)
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return false, fmt.Errorf("read cluster %q: %w", rev.Cluster, err)
	}
	if len(resp.Kvs) == 0 {
		return false, nil
	}
	var rec ClusterRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err == nil && rec.LastSeen.After(rev.RevokedAt) {
		return false, nil
	}
	// Its gateway address is freed with it.
	gwCmps, gwOps, err := s.gatewayOps(ctx, rev.Cluster, rec.Info.GatewayAddress, "")
	if err != nil {
		return false, err
	}
	txn, err := s.cli.Txn(ctx).If(append([]clientv3.Cmp{
		clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision),
		clientv3.Compare(clientv3.CreateRevision(s.sessionKey(rev.Cluster)), "=", 0),
		// Over a range: true when no key is in it.
		clientv3.Compare(clientv3.CreateRevision(s.exportsPrefix(rev.Cluster)), "=", 0).WithPrefix(),
	}, gwCmps...)...).Then(append([]clientv3.Op{
		clientv3.OpDelete(key),
		clientv3.OpDelete(s.joinKey(rev.Cluster)),
	}, gwOps...)...).Commit()
	if err != nil {
		return false, fmt.Errorf("delete removed cluster %q: %w", rev.Cluster, err)
	}
	return txn.Succeeded, nil
}

// MaxHopKeys is how many hop keys the fleet holds: the signing one and the one before it.
const MaxHopKeys = 2

type hopKeysRecord struct {
	Keys []hopKey `json:"keys"`
}

type hopKey struct {
	ID        string    `json:"id"`
	Secret    []byte    `json:"secret"`
	CreatedAt time.Time `json:"createdAt"`
}

func newHopKey(now time.Time) (hopKey, error) {
	id := make([]byte, 4)
	secret := make([]byte, 32)
	if _, err := rand.Read(id); err != nil {
		return hopKey{}, err
	}
	if _, err := rand.Read(secret); err != nil {
		return hopKey{}, err
	}
	return hopKey{ID: "k" + hex.EncodeToString(id), Secret: secret, CreatedAt: now}, nil
}

func (r hopKeysRecord) fleet() []fleet.HopKey {
	out := make([]fleet.HopKey, 0, len(r.Keys))
	for _, k := range r.Keys {
		out = append(out, fleet.HopKey{ID: k.ID, Secret: slices.Clone(k.Secret)})
	}
	return out
}

// EnsureHopKeys creates the fleet's first hop key when there is none (one transaction, so
// replicas starting together agree on it), and returns the keys, the signing one first.
func (s *Store) EnsureHopKeys(ctx context.Context) ([]fleet.HopKey, error) {
	k, err := newHopKey(s.now().UTC())
	if err != nil {
		return nil, err
	}
	val, err := json.Marshal(hopKeysRecord{Keys: []hopKey{k}})
	if err != nil {
		return nil, err
	}
	key := s.hopKeysKey()
	resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(val))).Else(clientv3.OpGet(key)).Commit()
	if err != nil {
		return nil, fmt.Errorf("create hop keys: %w", err)
	}
	if resp.Succeeded {
		return hopKeysRecord{Keys: []hopKey{k}}.fleet(), nil
	}
	kvs := resp.Responses[0].GetResponseRange().GetKvs()
	if len(kvs) == 0 {
		return nil, fmt.Errorf("hop keys vanished while read: %w", ErrNotFound)
	}
	var rec hopKeysRecord
	if err := json.Unmarshal(kvs[0].Value, &rec); err != nil {
		return nil, fmt.Errorf("decode hop keys: %w", err)
	}
	return rec.fleet(), nil
}

// RotateHopKey puts a new signing key first and keeps the one before it (MaxHopKeys in all); it
// returns the keys.
func (s *Store) RotateHopKey(ctx context.Context) ([]fleet.HopKey, error) {
	key := s.hopKeysKey()
	for {
		resp, err := s.cli.Get(ctx, key)
		if err != nil {
			return nil, fmt.Errorf("read hop keys: %w", err)
		}
		var rec hopKeysRecord
		cmp := clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
		if len(resp.Kvs) == 1 {
			if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
				return nil, fmt.Errorf("decode hop keys: %w", err)
			}
			cmp = clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)
		}
		k, err := newHopKey(s.now().UTC())
		if err != nil {
			return nil, err
		}
		rec.Keys = append([]hopKey{k}, rec.Keys...)
		rec.Keys = rec.Keys[:min(len(rec.Keys), MaxHopKeys)]
		val, err := json.Marshal(rec)
		if err != nil {
			return nil, err
		}
		txn, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(val))).Commit()
		if err != nil {
			return nil, fmt.Errorf("write hop keys: %w", err)
		}
		if txn.Succeeded {
			return rec.fleet(), nil
		}
	}
}
