package epp

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pkg/fleet"
)

var (
	hopT0     = time.Unix(1_750_000_000, 0)
	hopKeyNew = fleet.HopKey{ID: "hk-20250601-120000", Secret: []byte("0123456789abcdef0123456789abcdef")}
	hopKeyOld = fleet.HopKey{ID: "hk-20250501-120000", Secret: []byte("fedcba9876543210fedcba9876543210")}
	hopFleet  = []fleet.HopKey{hopKeyNew, hopKeyOld}
)

// keySet is a fixed HopKeys.
type keySet []fleet.HopKey

func (k keySet) HopKeys() []fleet.HopKey { return k }

func mustSign(t testing.TB, key fleet.HopKey, from, to string, at time.Time) string {
	t.Helper()
	m, err := SignHopMarker(key, from, to, at)
	if err != nil {
		t.Fatal(err)
	}
	return m.String()
}

func TestHopMarkerFormat(t *testing.T) {
	s := mustSign(t, hopKeyNew, "us-east-1", "us-west-1", hopT0)
	want := "v1;kid=hk-20250601-120000;from=us-east-1;to=us-west-1;ts=1750000000;sig="
	if !strings.HasPrefix(s, want) || len(s) != len(want)+43 || strings.ContainsAny(s[len(want):], "=+/") {
		t.Fatalf("marker %q, want %q and 43 characters of unpadded base64url", s, want)
	}
	m, err := ParseHopMarker(s)
	if err != nil {
		t.Fatal(err)
	}
	if m.KeyID != hopKeyNew.ID || m.From != "us-east-1" || m.To != "us-west-1" || m.Unix != hopT0.Unix() || m.String() != s {
		t.Fatalf("parsed %+v (re-serialized %q) from %q", m, m.String(), s)
	}
}

func TestVerifyHopMarker(t *testing.T) {
	forger := fleet.HopKey{ID: hopKeyNew.ID, Secret: []byte("not-the-fleet-secret-at-all-0000")}
	valid := mustSign(t, hopKeyNew, "us-east-1", "us-west-1", hopT0)
	other := mustSign(t, hopKeyNew, "us-east-1", "eu-west-1", hopT0)
	tests := []struct {
		name   string
		marker string
		keys   []fleet.HopKey
		self   string
		now    time.Time
		reason string // "" when it verifies
	}{
		{"signed with the first key", valid, hopFleet, "us-west-1", hopT0, ""},
		{"signed with an older key of the set", mustSign(t, hopKeyOld, "us-east-1", "us-west-1", hopT0), hopFleet, "us-west-1", hopT0, ""},
		{"60 s old", valid, hopFleet, "us-west-1", hopT0.Add(HopMaxSkew), ""},
		{"60 s ahead (clock skew)", valid, hopFleet, "us-west-1", hopT0.Add(-HopMaxSkew), ""},
		{"61 s old", valid, hopFleet, "us-west-1", hopT0.Add(HopMaxSkew + time.Second), hopExpired},
		{"61 s ahead", valid, hopFleet, "us-west-1", hopT0.Add(-HopMaxSkew - time.Second), hopExpired},
		{"meant for another cluster", valid, hopFleet, "eu-west-1", hopT0, hopWrongDestination},
		{"a key that left the set", mustSign(t, hopKeyOld, "us-east-1", "us-west-1", hopT0), hopFleet[:1], "us-west-1", hopT0, hopUnknownKey},
		{"no key yet", valid, nil, "us-west-1", hopT0, hopUnknownKey},
		{"a key ID the fleet never had", mustSign(t, fleet.HopKey{ID: "mine", Secret: forger.Secret}, "us-east-1", "us-west-1", hopT0), hopFleet, "us-west-1", hopT0, hopUnknownKey},
		{"forged with a guessed secret", mustSign(t, forger, "us-east-1", "us-west-1", hopT0), hopFleet, "us-west-1", hopT0, hopBadSignature},
		{"destination rewritten", strings.Replace(valid, "to=us-west-1", "to=eu-west-1", 1), hopFleet, "eu-west-1", hopT0, hopBadSignature},
		{"time rewritten", strings.Replace(valid, "ts=1750000000", "ts=1750000100", 1), hopFleet, "us-west-1", hopT0.Add(100 * time.Second), hopBadSignature},
		{"signature of another marker", valid[:strings.Index(valid, ";sig=")] + other[strings.Index(other, ";sig="):], hopFleet, "us-west-1", hopT0, hopBadSignature},
		{"the old plain cluster ID", "us-east-1", hopFleet, "us-west-1", hopT0, hopMalformed},
		{"empty", "", hopFleet, "us-west-1", hopT0, hopMalformed},
		{"a secret shorter than 16 bytes never verifies", mustSignUnchecked(fleet.HopKey{ID: "short", Secret: []byte("abc")}, "us-east-1", "us-west-1", hopT0), []fleet.HopKey{{ID: "short", Secret: []byte("abc")}}, "us-west-1", hopT0, hopUnknownKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := VerifyHopMarker(tt.marker, tt.keys, tt.self, tt.now)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("VerifyHopMarker(%q) = %v, want it to verify", tt.marker, err)
				}
				return
			}
			var he *HopError
			if !errors.As(err, &he) || he.Reason != tt.reason || !errors.Is(err, ErrHopMarker) {
				t.Fatalf("VerifyHopMarker(%q) = %v, want a %s rejection", tt.marker, err, tt.reason)
			}
		})
	}
}

// mustSignUnchecked signs as SignHopMarker would, without its refusal of short secrets: what a
// careless peer could send.
func mustSignUnchecked(key fleet.HopKey, from, to string, at time.Time) string {
	m := HopMarker{KeyID: key.ID, From: from, To: to, Unix: at.Unix()}
	m.Sig = hopMAC(key.Secret, m.signed())
	return m.String()
}

func TestParseHopMarkerRefuses(t *testing.T) {
	valid := mustSign(t, hopKeyNew, "us-east-1", "us-west-1", hopT0)
	sig := valid[strings.Index(valid, ";sig=")+5:]
	head := "v1;kid=k;from=a;to=b;ts=1750000000"
	tests := map[string]string{
		"too few fields":          "v1;kid=k;from=a;to=b;ts=1",
		"a seventh field":         valid + ";x=1",
		"another version":         strings.Replace(valid, "v1;", "v2;", 1),
		"fields out of order":     "v1;from=a;kid=k;to=b;ts=1750000000;sig=" + sig,
		"empty key ID":            "v1;kid=;from=a;to=b;ts=1750000000;sig=" + sig,
		"a space in from":         "v1;kid=k;from=a b;to=b;ts=1750000000;sig=" + sig,
		"a comma in to":           "v1;kid=k;from=a;to=b,c;ts=1750000000;sig=" + sig,
		"an equals sign in kid":   "v1;kid=k=1;from=a;to=b;ts=1750000000;sig=" + sig,
		"a 254-character cluster": "v1;kid=k;from=" + strings.Repeat("a", 254) + ";to=b;ts=1750000000;sig=" + sig,
		"leading zero in ts":      "v1;kid=k;from=a;to=b;ts=01750000000;sig=" + sig,
		"negative ts":             "v1;kid=k;from=a;to=b;ts=-1;sig=" + sig,
		"zero ts":                 "v1;kid=k;from=a;to=b;ts=0;sig=" + sig,
		"ts beyond int64":         "v1;kid=k;from=a;to=b;ts=9999999999999999999;sig=" + sig,
		"ts with a plus":          "v1;kid=k;from=a;to=b;ts=+1750000000;sig=" + sig,
		"padded signature":        head + ";sig=" + sig + "=",
		"standard base64":         head + ";sig=" + strings.Repeat("+", 42) + "A",
		"short signature":         head + ";sig=" + sig[:42],
		"non-canonical last char": head + ";sig=" + sig[:42] + "B",
		"too long":                head + ";sig=" + sig + strings.Repeat("x", maxHopMarker),
		"upper-case field name":   "v1;KID=k;from=a;to=b;ts=1750000000;sig=" + sig,
	}
	for name, s := range tests {
		t.Run(name, func(t *testing.T) {
			var he *HopError
			if _, err := ParseHopMarker(s); !errors.As(err, &he) || he.Reason != hopMalformed {
				t.Fatalf("ParseHopMarker(%q) = %v, want malformed", s, err)
			}
		})
	}
}

func TestSignHopMarkerRefuses(t *testing.T) {
	tests := map[string]struct {
		key      fleet.HopKey
		from, to string
		at       time.Time
	}{
		"a short secret":             {fleet.HopKey{ID: "k", Secret: []byte("short")}, "a", "b", hopT0},
		"no key ID":                  {fleet.HopKey{Secret: hopKeyNew.Secret}, "a", "b", hopT0},
		"no origin":                  {hopKeyNew, "", "b", hopT0},
		"a destination with a colon": {hopKeyNew, "a", "b:8080", hopT0},
		"a time before 1970":         {hopKeyNew, "a", "b", time.Unix(-5, 0)},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			if m, err := SignHopMarker(tt.key, tt.from, tt.to, tt.at); !errors.Is(err, ErrHopMarker) {
				t.Fatalf("SignHopMarker = %v, %v; want an ErrHopMarker", m, err)
			}
		})
	}
}

// FuzzParseHopMarker: no input makes the parser (or Verify) panic, and a marker it accepts
// re-serializes to exactly the input: the accepted form is canonical.
func FuzzParseHopMarker(f *testing.F) {
	f.Add(mustSign(f, hopKeyNew, "us-east-1", "us-west-1", hopT0))
	f.Add(mustSign(f, hopKeyOld, "a.b-c_d~e", "Z9", time.Unix(1, 0)))
	f.Add("v1;kid=k;from=a;to=b;ts=1;sig=")
	f.Add("v1;kid=k;from=a;to=b;ts=01;sig=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
	f.Add("us-east-1")
	f.Add(";;;;;")
	f.Fuzz(func(t *testing.T, s string) {
		m, err := ParseHopMarker(s)
		if err != nil {
			var he *HopError
			if !errors.As(err, &he) || he.Reason != hopMalformed {
				t.Fatalf("ParseHopMarker(%q) = %v, want a malformed HopError", s, err)
			}
			return
		}
		if got := m.String(); got != s {
			t.Fatalf("ParseHopMarker(%q) re-serializes as %q", s, got)
		}
		_ = m.Verify(hopFleet, m.To, hopT0)
	})
}
