package epp

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/spillway-io/spillway/pkg/fleet"
)

// The hop marker (header HopHeader) says that a request was spilled here by another cluster's
// EPP, so that it is served here (or refused here) and never spilled again:
//
//	v1;kid=<key-id>;from=<origin-cluster>;to=<destination-cluster>;ts=<unix-seconds>;sig=<base64url HMAC-SHA256>
//
// The signature is HMAC-SHA256, with the fleet hop key named by kid, over everything before
// ";sig=", encoded base64url without padding. The hub generates the keys and hands them to every
// spoke over its authenticated sync stream; the first key of the set signs, every key of the set
// verifies, so a rotation never invalidates markers in flight.
//
// A marker counts only when it verifies: its key is one of the current set, the signature
// matches (compared in constant time), `to` is this cluster and its time is within HopMaxSkew of
// this cluster's clock. Anything else — no marker, a client's invention, a copy replayed to
// another cluster or a minute later, a marker signed with a retired key — changes nothing: the
// request is routed as a fresh one, and spillway_epp_hop_markers_rejected_total{reason} counts
// the rejection. A signed marker was chosen over the peer's mTLS identity because the EPP never
// sees the connection the request came in on: the gateway terminates it.
//
// The marker names one destination: the target the spill policy chose. When the gateway cannot
// reach it and falls back to the next cluster of the destination list, that cluster finds the
// marker meant for another (wrong_destination) and routes the request as a fresh one; it was
// chosen as a cluster that is not spilling, so it serves it, and were it spilling by then it
// could send the request on only to a cluster that is not (spill: the anti-loop rule).
//
// Without a key (before the first sync with the hub) the EPP spills nothing in Parent Mode: an
// unsigned marker would not verify at the target. Endpoint Mode sends no marker: it reaches
// model servers, which never route.
//
// Markers are strict so that they are canonical: the fields come in that order, each once;
// kid, from and to are 1 to maxHopField characters of [A-Za-z0-9._~-] (cluster IDs are DNS
// subdomains, key IDs such as hk-20250601-120000); ts is a positive decimal without leading
// zeros; sig is exactly 32 bytes in canonical unpadded base64url. A marker that parses
// re-serializes to the same string.

// HopKeys gives the fleet's current hop-marker keys, the signing key first. HopKeys is called
// for each request that carries a marker or spills in Parent Mode: it must be cheap and safe for
// concurrent use. An empty set means no key has arrived from the hub yet.
type HopKeys interface {
	HopKeys() []fleet.HopKey
}

// HopMaxSkew is how far a marker's time may be from this cluster's clock, either way.
const HopMaxSkew = 60 * time.Second

const (
	hopVersion    = "v1"
	maxHopField   = 253
	maxHopMarker  = 1024
	hopSigBytes   = sha256.Size
	minHopSecret  = 16 // shorter secrets are never used to sign or verify
	hopSigEncoded = 43 // base64url, unpadded, of 32 bytes
)

// Reasons a hop marker is rejected: the values of the reason label.
const (
	hopMalformed        = "malformed"
	hopUnknownKey       = "unknown_key"
	hopBadSignature     = "bad_signature"
	hopWrongDestination = "wrong_destination"
	hopExpired          = "expired"
)

var hopReasons = []string{hopMalformed, hopUnknownKey, hopBadSignature, hopWrongDestination, hopExpired}

// ErrHopMarker marks a hop marker that does not count; HopError says why.
var ErrHopMarker = errors.New("hop marker rejected")

// HopError is a rejected hop marker: Reason is one of the metric's reason values.
type HopError struct {
	Reason string
	Detail string
}

func (e *HopError) Error() string { return fmt.Sprintf("hop marker %s: %s", e.Reason, e.Detail) }

// Unwrap makes every HopError an ErrHopMarker.
func (e *HopError) Unwrap() error { return ErrHopMarker }

func hopErr(reason, format string, args ...any) error {
	return &HopError{Reason: reason, Detail: fmt.Sprintf(format, args...)}
}

// HopMarker is a parsed hop marker.
type HopMarker struct {
	KeyID string
	From  string
	To    string
	// Unix is the marker's time in seconds.
	Unix int64
	Sig  []byte
}

// signed is the string the signature covers.
func (m HopMarker) signed() string {
	return hopVersion + ";kid=" + m.KeyID + ";from=" + m.From + ";to=" + m.To + ";ts=" + strconv.FormatInt(m.Unix, 10)
}

// String is the header value.
func (m HopMarker) String() string {
	return m.signed() + ";sig=" + base64.RawURLEncoding.EncodeToString(m.Sig)
}

// SignHopMarker makes the marker of a request this cluster (from) sends to cluster to at now,
// signed with key.
func SignHopMarker(key fleet.HopKey, from, to string, now time.Time) (HopMarker, error) {
	m := HopMarker{KeyID: key.ID, From: from, To: to, Unix: now.Unix()}
	for name, v := range map[string]string{"key ID": key.ID, "origin cluster": from, "destination cluster": to} {
		if !validHopField(v) {
			return HopMarker{}, fmt.Errorf("%w: %s %q: want 1 to %d characters of [A-Za-z0-9._~-]", ErrHopMarker, name, v, maxHopField)
		}
	}
	if len(key.Secret) < minHopSecret {
		return HopMarker{}, fmt.Errorf("%w: key %s has a %d-byte secret, want at least %d", ErrHopMarker, key.ID, len(key.Secret), minHopSecret)
	}
	if m.Unix <= 0 {
		return HopMarker{}, fmt.Errorf("%w: time %v is before 1970", ErrHopMarker, now)
	}
	m.Sig = hopMAC(key.Secret, m.signed())
	return m, nil
}

func hopMAC(secret []byte, msg string) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(msg))
	return h.Sum(nil)
}

// ParseHopMarker reads a header value. It checks the form only; Verify checks the rest.
func ParseHopMarker(s string) (HopMarker, error) {
	if len(s) > maxHopMarker {
		return HopMarker{}, hopErr(hopMalformed, "%d bytes, at most %d", len(s), maxHopMarker)
	}
	parts := strings.Split(s, ";")
	if len(parts) != 6 {
		return HopMarker{}, hopErr(hopMalformed, "%d fields, want 6 (v1;kid=;from=;to=;ts=;sig=)", len(parts))
	}
	if parts[0] != hopVersion {
		return HopMarker{}, hopErr(hopMalformed, "version %.16q, want %s", parts[0], hopVersion)
	}
	var vals [5]string
	for i, key := range []string{"kid", "from", "to", "ts", "sig"} {
		v, ok := strings.CutPrefix(parts[i+1], key+"=")
		if !ok {
			return HopMarker{}, hopErr(hopMalformed, "field %d is not %s=", i+2, key)
		}
		vals[i] = v
	}
	m := HopMarker{KeyID: vals[0], From: vals[1], To: vals[2]}
	for i, name := range []string{"kid", "from", "to"} {
		if !validHopField(vals[i]) {
			return HopMarker{}, hopErr(hopMalformed, "%s: want 1 to %d characters of [A-Za-z0-9._~-]", name, maxHopField)
		}
	}
	ts := vals[3]
	if ts == "" || len(ts) > 19 || ts[0] == '0' || strings.Trim(ts, "0123456789") != "" {
		return HopMarker{}, hopErr(hopMalformed, "ts %.24q: want positive unix seconds", ts)
	}
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return HopMarker{}, hopErr(hopMalformed, "ts %.24q: want positive unix seconds", ts)
	}
	m.Unix = n
	if len(vals[4]) != hopSigEncoded {
		return HopMarker{}, hopErr(hopMalformed, "sig: %d characters, want %d (32 bytes, base64url without padding)", len(vals[4]), hopSigEncoded)
	}
	sig, err := base64.RawURLEncoding.Strict().DecodeString(vals[4])
	if err != nil || len(sig) != hopSigBytes {
		return HopMarker{}, hopErr(hopMalformed, "sig: want 32 bytes in base64url without padding")
	}
	m.Sig = sig
	return m, nil
}

// Verify checks that the marker was signed with one of keys, is meant for cluster self and is
// fresh at now. The signature is checked before the claims, so a forgery is reported as one
// whatever it claims.
func (m HopMarker) Verify(keys []fleet.HopKey, self string, now time.Time) error {
	var secret []byte
	for _, k := range keys {
		if k.ID == m.KeyID && len(k.Secret) >= minHopSecret {
			secret = k.Secret
			break
		}
	}
	if secret == nil {
		return hopErr(hopUnknownKey, "key %s is not one of the fleet's %d current keys", m.KeyID, len(keys))
	}
	if !hmac.Equal(hopMAC(secret, m.signed()), m.Sig) {
		return hopErr(hopBadSignature, "signature does not match key %s", m.KeyID)
	}
	if m.To != self {
		return hopErr(hopWrongDestination, "meant for cluster %s, this is %s", m.To, self)
	}
	if d := now.Sub(time.Unix(m.Unix, 0)); d > HopMaxSkew || d < -HopMaxSkew {
		return hopErr(hopExpired, "made %s from now, at most %s allowed", d.Round(time.Second), HopMaxSkew)
	}
	return nil
}

// VerifyHopMarker parses and verifies a header value.
func VerifyHopMarker(s string, keys []fleet.HopKey, self string, now time.Time) (HopMarker, error) {
	m, err := ParseHopMarker(s)
	if err != nil {
		return HopMarker{}, err
	}
	if err := m.Verify(keys, self, now); err != nil {
		return HopMarker{}, err
	}
	return m, nil
}

func validHopField(s string) bool {
	if s == "" || len(s) > maxHopField {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '~' || c == '-') {
			return false
		}
	}
	return true
}
