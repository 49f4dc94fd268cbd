package registry

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Bootstrap tokens have kubeadm's format, "<id>.<secret>": an id of 6 and a secret of 16
// characters of [a-z0-9]. The id is public (it names the token in logs and join requests); the
// secret is never stored, only its SHA-256.
const (
	TokenIDLen     = 6
	TokenSecretLen = 16
	// MaxTokenTTL bounds how long a bootstrap token lives.
	MaxTokenTTL = 24 * time.Hour
	// MaxTokenClusters bounds the cluster IDs one token may join.
	MaxTokenClusters = 100
)

const tokenAlphabet = "abcdefghijklmnopqrstuvwxyz0123456789"

// ErrTokenInvalid means a bootstrap token is unknown, expired or has the wrong secret; which of
// the three is not said, so that the answer tells a guesser nothing.
var ErrTokenInvalid = errors.New("bootstrap token is unknown, expired or wrong: ask an admin for a new one (hubctl tokens create)")

// Token is a bootstrap token.
type Token struct {
	ID     string
	Secret string
}

// String returns the token as the spoke is given it, "<id>.<secret>".
func (t Token) String() string { return t.ID + "." + t.Secret }

// ParseToken reads "<id>.<secret>". Its errors wrap ErrInvalid and never repeat the input, which
// may be a real secret mistyped.
func ParseToken(s string) (Token, error) {
	bad := func(why string) (Token, error) {
		return Token{}, fmt.Errorf("bootstrap token: %s; want <6 characters [a-z0-9]>.<16 characters [a-z0-9]>: %w", why, ErrInvalid)
	}
	if len(s) != TokenIDLen+1+TokenSecretLen {
		return bad(fmt.Sprintf("%d characters, want %d", len(s), TokenIDLen+1+TokenSecretLen))
	}
	if s[TokenIDLen] != '.' {
		return bad("no '.' after the 6-character id")
	}
	t := Token{ID: s[:TokenIDLen], Secret: s[TokenIDLen+1:]}
	if !inAlphabet(t.ID) || !inAlphabet(t.Secret) {
		return bad("a character outside [a-z0-9]")
	}
	return t, nil
}

func inAlphabet(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') {
			return false
		}
	}
	return true
}

// NewToken returns a random token.
func NewToken() (Token, error) {
	const n = TokenIDLen + TokenSecretLen
	out := make([]byte, 0, n)
	var b [32]byte
	for len(out) < n {
		if _, err := rand.Read(b[:]); err != nil {
			return Token{}, err
		}
		for _, c := range b {
			// Bytes below 252 (7 × 36) map uniformly onto the 36 characters; the rest are drawn again.
			if c < 252 && len(out) < n {
				out = append(out, tokenAlphabet[int(c)%len(tokenAlphabet)])
			}
		}
	}
	return Token{ID: string(out[:TokenIDLen]), Secret: string(out[TokenIDLen:])}, nil
}

// TokenRecord is the stored form of a bootstrap token: its secret only as a hash. It lives under
// an etcd lease of its TTL, so etcd deletes it when it expires.
type TokenRecord struct {
	ID string `json:"id"`
	// SecretSHA256 is the hex SHA-256 of the secret.
	SecretSHA256 string `json:"secretSHA256"`
	// Clusters are the cluster IDs a join with this token may ask for.
	Clusters []string `json:"clusters"`
	// AutoApprove lets a join request with this token be signed without an admin's approval.
	AutoApprove bool      `json:"autoApprove"`
	CreatedAt   time.Time `json:"createdAt"`
	ExpiresAt   time.Time `json:"expiresAt"`
	CreatedBy   string    `json:"createdBy,omitempty"`
	// lease holds the token; join requests made with it live under the same lease.
	lease clientv3.LeaseID
}

// Allows reports whether the token may join cluster.
func (r TokenRecord) Allows(cluster string) bool { return slices.Contains(r.Clusters, cluster) }

func (s *Store) tokenKey(id string) string { return s.prefix + "tokens/" + id }

func secretHash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// TokenSpec is what a new token allows.
type TokenSpec struct {
	// Clusters are the cluster IDs it may join: at least one, at most MaxTokenClusters.
	Clusters []string
	// TTL is how long it lives: positive, at most MaxTokenTTL. etcd's lease rounds it up to
	// whole seconds; Check refuses the token from ExpiresAt on either way.
	TTL         time.Duration
	AutoApprove bool
	// CreatedBy names the admin who made it, for the record.
	CreatedBy string
}

// CreateToken stores a new random token and returns it: the only time its secret is seen.
func (s *Store) CreateToken(ctx context.Context, spec TokenSpec) (Token, TokenRecord, error) {
	switch {
	case len(spec.Clusters) == 0:
		return Token{}, TokenRecord{}, fmt.Errorf("a token needs at least one cluster ID: %w", ErrInvalid)
	case len(spec.Clusters) > MaxTokenClusters:
		return Token{}, TokenRecord{}, fmt.Errorf("a token may name at most %d cluster IDs, not %d: %w", MaxTokenClusters, len(spec.Clusters), ErrInvalid)
	case spec.TTL <= 0 || spec.TTL > MaxTokenTTL:
		return Token{}, TokenRecord{}, fmt.Errorf("token TTL %s outside (0, %s]: %w", spec.TTL, MaxTokenTTL, ErrInvalid)
	}
	grant, err := s.cli.Grant(ctx, int64((spec.TTL+time.Second-1)/time.Second))
	if err != nil {
		return Token{}, TokenRecord{}, fmt.Errorf("grant token lease: %w", err)
	}
	for {
		tok, err := NewToken()
		if err != nil {
			return Token{}, TokenRecord{}, err
		}
		now := s.now().UTC()
		rec := TokenRecord{
			ID: tok.ID, SecretSHA256: secretHash(tok.Secret), Clusters: slices.Clone(spec.Clusters),
			AutoApprove: spec.AutoApprove, CreatedAt: now, ExpiresAt: now.Add(spec.TTL), CreatedBy: spec.CreatedBy,
			lease: grant.ID,
		}
		val, err := json.Marshal(rec)
		if err != nil {
			return Token{}, TokenRecord{}, err
		}
		key := s.tokenKey(tok.ID)
		resp, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
			Then(clientv3.OpPut(key, string(val), clientv3.WithLease(grant.ID))).Commit()
		if err != nil {
			return Token{}, TokenRecord{}, fmt.Errorf("store token: %w", err)
		}
		if resp.Succeeded {
			return tok, rec, nil
		}
		// Another token has this id (1 in 36^6 per token alive): draw again.
	}
}

// CheckToken returns the record of a live token whose secret matches, and ErrTokenInvalid
// otherwise.
func (s *Store) CheckToken(ctx context.Context, tok Token) (TokenRecord, error) {
	resp, err := s.cli.Get(ctx, s.tokenKey(tok.ID))
	if err != nil {
		return TokenRecord{}, fmt.Errorf("read token: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return TokenRecord{}, ErrTokenInvalid
	}
	var rec TokenRecord
	if err := json.Unmarshal(resp.Kvs[0].Value, &rec); err != nil {
		return TokenRecord{}, fmt.Errorf("decode token %s: %w", tok.ID, err)
	}
	rec.lease = clientv3.LeaseID(resp.Kvs[0].Lease)
	if subtle.ConstantTimeCompare([]byte(rec.SecretSHA256), []byte(secretHash(tok.Secret))) != 1 {
		return TokenRecord{}, ErrTokenInvalid
	}
	if !s.now().Before(rec.ExpiresAt) {
		return TokenRecord{}, ErrTokenInvalid
	}
	return rec, nil
}
