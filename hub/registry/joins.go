package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// JoinState is where a join request stands.
type JoinState string

// Join states.
const (
	JoinPending  JoinState = "pending"
	JoinApproved JoinState = "approved"
	JoinDenied   JoinState = "denied"
)

// Errors of the join flow.
var (
	// ErrJoinConflict means a pending join request of the cluster holds another key.
	ErrJoinConflict = errors.New("another join request of the cluster is pending")
	// ErrNotPending means a join request was already decided.
	ErrNotPending = errors.New("join request is not pending")
	// ErrTokenRevoked is wrapped by every TokenRevokedError.
	ErrTokenRevoked = errors.New("bootstrap token predates the cluster's revocation")
)

// TokenRevokedError refuses a join with a token created at or before the revocation of the
// cluster it asks for: whoever the cluster was revoked for may hold that token as well, so only a
// token made after the revocation brings the cluster back.
type TokenRevokedError struct {
	TokenID   string
	Cluster   string
	CreatedAt time.Time
	RevokedAt time.Time
}

func (e *TokenRevokedError) Error() string {
	return fmt.Sprintf("bootstrap token %s (created %s) predates the revocation of cluster %s (%s): ask an admin for a new token (hubctl tokens create --cluster %s)",
		e.TokenID, e.CreatedAt.UTC().Format(time.RFC3339), e.Cluster, e.RevokedAt.UTC().Format(time.RFC3339), e.Cluster)
}

// Unwrap makes a TokenRevokedError match ErrTokenRevoked.
func (e *TokenRevokedError) Unwrap() error { return ErrTokenRevoked }

// JoinRecord is a cluster's join request: one per cluster, the last one made. It lives under the
// lease of the token it was made with, so requests vanish with their token.
type JoinRecord struct {
	Cluster string    `json:"cluster"`
	TokenID string    `json:"tokenID"`
	State   JoinState `json:"state"`
	// CSRPEM is the certificate request, kept for the signature at approval.
	CSRPEM []byte `json:"csrPEM"`
	// PublicKeySHA256 is the hex SHA-256 of the request's DER SubjectPublicKeyInfo: the request's
	// identity (a join with the same token and key is the same request).
	PublicKeySHA256 string    `json:"publicKeySHA256"`
	PeerAddress     string    `json:"peerAddress"`
	RequestedAt     time.Time `json:"requestedAt"`
	DecidedAt       time.Time `json:"decidedAt,omitzero"`
	DecidedBy       string    `json:"decidedBy,omitempty"`
	// CertificatePEM is the issued certificate, once approved.
	CertificatePEM []byte `json:"certificatePEM,omitempty"`
	// Message says why a request was denied.
	Message string `json:"message,omitempty"`
	// ClusterRevokedAt is the revocation of the cluster when the request was last made, zero when
	// it had none: a join after a revocation is never approved automatically.
	ClusterRevokedAt time.Time `json:"clusterRevokedAt,omitzero"`
}

// JoinRequest is a join as the hub received it, its token already checked.
type JoinRequest struct {
	Cluster         string
	Token           TokenRecord
	CSRPEM          []byte
	PublicKeySHA256 string
	PeerAddress     string
}

func (s *Store) joinKey(cluster string) string { return s.prefix + "joins/" + cluster }

// getJoin reads the join record of a cluster with its revision and lease; ok is false when there
// is none.
func (s *Store) getJoin(ctx context.Context, cluster string) (rec JoinRecord, rev int64, lease clientv3.LeaseID, ok bool, err error) {
	resp, err := s.cli.Get(ctx, s.joinKey(cluster))
	if err != nil {
		return JoinRecord{}, 0, 0, false, fmt.Errorf("read join request of %q: %w", cluster, err)
	}
	if len(resp.Kvs) == 0 {
		return JoinRecord{}, 0, 0, false, nil
	}
	kv := resp.Kvs[0]
	if err := json.Unmarshal(kv.Value, &rec); err != nil {
		return JoinRecord{}, 0, 0, false, fmt.Errorf("decode join request of %q: %w", cluster, err)
	}
	return rec, kv.ModRevision, clientv3.LeaseID(kv.Lease), true, nil
}

// unchanged compares key's revision with rev, the one read (0: absent).
func unchanged(key string, rev int64) clientv3.Cmp {
	if rev == 0 {
		return clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	return clientv3.Compare(clientv3.ModRevision(key), "=", rev)
}

// putJoin writes rec under lease if the record is still at rev (0: absent) and every guard
// holds; it reports whether it did. A lease that expired meanwhile (its token with it) is
// ErrTokenInvalid.
func (s *Store) putJoin(ctx context.Context, rec JoinRecord, rev int64, lease clientv3.LeaseID, guards ...clientv3.Cmp) (bool, error) {
	val, err := json.Marshal(rec)
	if err != nil {
		return false, err
	}
	key := s.joinKey(rec.Cluster)
	cmps := append([]clientv3.Cmp{unchanged(key, rev)}, guards...)
	resp, err := s.cli.Txn(ctx).If(cmps...).Then(clientv3.OpPut(key, string(val), clientv3.WithLease(lease))).Commit()
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		return false, fmt.Errorf("join request of %q: %w", rec.Cluster, ErrTokenInvalid)
	}
	if err != nil {
		return false, fmt.Errorf("write join request of %q: %w", rec.Cluster, err)
	}
	return resp.Succeeded, nil
}

// RequestJoin records a join request and returns where the cluster's request stands, and
// whether it is a new one:
//   - a request with the same key is the same request: it is returned as it stands (pending,
//     approved with its certificate, or denied), moved to the new token's lease when it is
//     pending and another token of the cluster was used;
//   - while a request with another key is pending, the new one is refused (ErrJoinConflict): an
//     admin approves or revokes the pending one first, so an approval always names the key the
//     admin saw;
//   - otherwise (no request, or a decided one with another key) it becomes the cluster's
//     pending request.
//
// A token created at or before the cluster's revocation is refused first (TokenRevokedError),
// whatever the request: the revocation is read in the same transaction as the request is
// written, so a revocation made meanwhile on any replica is never missed. The returned record's
// ClusterRevokedAt is the cluster's revocation, if any.
func (s *Store) RequestJoin(ctx context.Context, req JoinRequest) (rec JoinRecord, created bool, err error) {
	for {
		revocation, revocationRev, revoked, err := s.getRevocation(ctx, req.Cluster)
		if err != nil {
			return JoinRecord{}, false, err
		}
		if revoked && revocation.RefusesToken(req.Token) {
			return JoinRecord{}, false, &TokenRevokedError{TokenID: req.Token.ID, Cluster: req.Cluster, CreatedAt: req.Token.CreatedAt, RevokedAt: revocation.RevokedAt}
		}
		var revokedAt time.Time
		if revoked {
			revokedAt = revocation.RevokedAt
		}
		cur, rev, _, ok, err := s.getJoin(ctx, req.Cluster)
		if err != nil {
			return JoinRecord{}, false, err
		}
		next := JoinRecord{
			Cluster: req.Cluster, TokenID: req.Token.ID, State: JoinPending, CSRPEM: req.CSRPEM,
			PublicKeySHA256: req.PublicKeySHA256, PeerAddress: req.PeerAddress, RequestedAt: s.now().UTC(),
			ClusterRevokedAt: revokedAt,
		}
		created := true
		switch {
		case ok && cur.PublicKeySHA256 == req.PublicKeySHA256:
			if cur.State != JoinPending || cur.TokenID == req.Token.ID {
				cur.ClusterRevokedAt = revokedAt
				return cur, false, nil
			}
			next, created = cur, false
			next.TokenID, next.ClusterRevokedAt = req.Token.ID, revokedAt
		case ok && cur.State == JoinPending:
			return cur, false, fmt.Errorf("cluster %s has a pending join request for another key (sha256 %s, from %s, at %s): %w",
				req.Cluster, cur.PublicKeySHA256, cur.PeerAddress, cur.RequestedAt.Format(time.RFC3339), ErrJoinConflict)
		}
		done, err := s.putJoin(ctx, next, rev, req.Token.lease, unchanged(s.revocationKey(req.Cluster), revocationRev))
		if err != nil {
			return JoinRecord{}, false, err
		}
		if done {
			return next, created, nil
		}
	}
}

// GetJoin returns the join request of a cluster.
func (s *Store) GetJoin(ctx context.Context, cluster string) (JoinRecord, error) {
	rec, _, _, ok, err := s.getJoin(ctx, cluster)
	if err != nil {
		return JoinRecord{}, err
	}
	if !ok {
		return JoinRecord{}, fmt.Errorf("no join request of cluster %q (requests vanish with their token): %w", cluster, ErrNotFound)
	}
	return rec, nil
}

// ListJoins returns every join request, sorted by cluster.
func (s *Store) ListJoins(ctx context.Context) ([]JoinRecord, error) {
	resp, err := s.cli.Get(ctx, s.prefix+"joins/", clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("list join requests: %w", err)
	}
	out := make([]JoinRecord, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var rec JoinRecord
		if json.Unmarshal(kv.Value, &rec) == nil {
			out = append(out, rec)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Cluster < out[j].Cluster })
	return out, nil
}

// ApproveJoin approves the pending join request of cluster: sign issues the certificate for it,
// which is stored with the request. With key not empty, the request must hold that key
// (ErrJoinConflict otherwise, naming both), checked in the transaction that approves it. A request already decided is ErrNotPending, returned with it.
func (s *Store) ApproveJoin(ctx context.Context, cluster, key, by string, sign func(JoinRecord) ([]byte, error)) (JoinRecord, error) {
	for {
		cur, rev, lease, ok, err := s.getJoin(ctx, cluster)
		if err != nil {
			return JoinRecord{}, err
		}
		switch {
		case !ok:
			return JoinRecord{}, fmt.Errorf("no join request of cluster %q to approve (requests vanish with their token): %w", cluster, ErrNotFound)
		case key != "" && cur.PublicKeySHA256 != key:
			return cur, fmt.Errorf("the join request of cluster %s holds public key sha256 %s (from %s, at %s), not %s: list the requests again (hubctl clusters requests): %w",
				cluster, cur.PublicKeySHA256, cur.PeerAddress, cur.RequestedAt.Format(time.RFC3339), key, ErrJoinConflict)
		case cur.State != JoinPending:
			return cur, fmt.Errorf("the join request of %s is %s already: %w", cluster, cur.State, ErrNotPending)
		}
		cert, err := sign(cur)
		if err != nil {
			return cur, err
		}
		next := cur
		next.State, next.CertificatePEM, next.DecidedAt, next.DecidedBy = JoinApproved, cert, s.now().UTC(), by
		done, err := s.putJoin(ctx, next, rev, lease)
		if errors.Is(err, ErrTokenInvalid) {
			return JoinRecord{}, fmt.Errorf("the join request of %s expired with its token: %w", cluster, ErrNotFound)
		}
		if err != nil {
			return JoinRecord{}, err
		}
		if done {
			return next, nil
		}
	}
}

// DenyJoin marks the join request of cluster denied with message, whatever its state; no
// request is fine. A spoke that asks again with the same key is told it was denied.
func (s *Store) DenyJoin(ctx context.Context, cluster, by, message string) error {
	for {
		cur, rev, lease, ok, err := s.getJoin(ctx, cluster)
		if err != nil || !ok || cur.State == JoinDenied {
			return err
		}
		next := cur
		next.State, next.CertificatePEM, next.DecidedAt, next.DecidedBy, next.Message = JoinDenied, nil, s.now().UTC(), by, message
		done, err := s.putJoin(ctx, next, rev, lease)
		if errors.Is(err, ErrTokenInvalid) {
			return nil // gone with its token
		}
		if err != nil || done {
			return err
		}
	}
}
