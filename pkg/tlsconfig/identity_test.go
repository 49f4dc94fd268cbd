package tlsconfig

import (
	"crypto/x509"
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParseIdentityAccepts(t *testing.T) {
	for _, tc := range []struct {
		uri  string
		want Identity
	}{
		{"spiffe://spillway.example.com/cluster/eu-west-1", Identity{"spillway.example.com", KindCluster, "eu-west-1"}},
		{"spiffe://td/cluster/a", Identity{"td", KindCluster, "a"}},
		{"spiffe://spillway.local/user/alice", Identity{"spillway.local", KindUser, "alice"}},
		{"spiffe://spillway.local/user/0ps", Identity{"spillway.local", KindUser, "0ps"}},
	} {
		t.Run(tc.uri, func(t *testing.T) {
			got, err := ParseIdentity(tc.uri)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Fatalf("got %+v, want %+v", got, tc.want)
			}
			if got.String() != tc.uri {
				t.Errorf("String() = %q, want %q", got.String(), tc.uri)
			}
			if got.URL().String() != tc.uri {
				t.Errorf("URL() = %q, want %q", got.URL(), tc.uri)
			}
		})
	}
}

func TestParseIdentityRejects(t *testing.T) {
	for _, tc := range []struct {
		name, uri, says string
	}{
		{"empty", "", "starting with spiffe://"},
		{"other scheme", "https://td/cluster/a", "starting with spiffe://"},
		{"upper-case scheme", "SPIFFE://td/cluster/a", "starting with spiffe://"},
		{"no authority", "spiffe:/td/cluster/a", "starting with spiffe://"},
		{"empty trust domain", "spiffe:///cluster/a", "trust domain is empty"},
		{"upper-case trust domain", "spiffe://TD/cluster/a", "trust domain"},
		{"trust domain with underscore", "spiffe://t_d/cluster/a", "trust domain"},
		{"trust domain too long", "spiffe://" + strings.Repeat("a", 254) + "/cluster/a", "trust domain"},
		{"userinfo", "spiffe://u@td/cluster/a", "user information"},
		{"port", "spiffe://td:8443/cluster/a", "port"},
		{"query", "spiffe://td/cluster/a?x=1", "query or fragment"},
		{"empty query", "spiffe://td/cluster/a?", "query or fragment"},
		{"fragment", "spiffe://td/cluster/a#f", "query or fragment"},
		{"percent-encoding", "spiffe://td/cluster/%61", "percent-encoding"},
		{"no path", "spiffe://td", "want the path"},
		{"root path", "spiffe://td/", "want the path"},
		{"kind only", "spiffe://td/cluster", "want the path"},
		{"unknown kind", "spiffe://td/node/a", "want the path"},
		{"upper-case kind", "spiffe://td/Cluster/a", "want the path"},
		{"extra segment", "spiffe://td/cluster/a/b", "want the path"},
		{"trailing slash", "spiffe://td/cluster/a/", "want the path"},
		{"double slash", "spiffe://td//cluster/a", "want the path"},
		{"empty name", "spiffe://td/cluster/", "cluster name"},
		{"dot in cluster id", "spiffe://td/cluster/a.b", "cluster name"},
		{"upper-case name", "spiffe://td/user/Alice", "user name"},
		{"name starting with a dash", "spiffe://td/cluster/-a", "cluster name"},
		{"name too long", "spiffe://td/cluster/" + strings.Repeat("a", 64), "cluster name"},
		{"dot segment", "spiffe://td/cluster/..", "cluster name"},
		{"space", "spiffe://td/cluster/a b", "cluster name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			id, err := ParseIdentity(tc.uri)
			if err == nil {
				t.Fatalf("accepted as %+v", id)
			}
			if !errors.Is(err, ErrInvalidIdentity) {
				t.Errorf("error %v does not wrap ErrInvalidIdentity", err)
			}
			if !strings.Contains(err.Error(), tc.says) {
				t.Errorf("error %q does not say %q", err, tc.says)
			}
		})
	}
}

func TestIdentityOf(t *testing.T) {
	uri := func(s string) *url.URL {
		u, err := url.Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	for _, tc := range []struct {
		name string
		uris []*url.URL
		want Identity
		says string // empty when the identity is read
	}{
		{"one spiffe URI", []*url.URL{uri("spiffe://td/cluster/a")}, Identity{"td", KindCluster, "a"}, ""},
		{"other URIs ignored", []*url.URL{uri("https://example.com/x"), uri("spiffe://td/user/bob")}, Identity{"td", KindUser, "bob"}, ""},
		{"no URI", nil, Identity{}, "no spiffe:// URI SAN"},
		{"no spiffe URI", []*url.URL{uri("https://example.com/x")}, Identity{}, "no spiffe:// URI SAN"},
		{"two spiffe URIs", []*url.URL{uri("spiffe://td/cluster/a"), uri("spiffe://td/cluster/b")}, Identity{}, "2 spiffe:// URI SANs"},
		{"invalid spiffe URI", []*url.URL{uri("spiffe://td/cluster/a/b")}, Identity{}, "want the path"},
		{"percent-encoded spiffe URI", []*url.URL{uri("spiffe://td/cluster/%61")}, Identity{}, "percent-encoding"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := IdentityOf(&x509.Certificate{URIs: tc.uris})
			if tc.says == "" {
				if err != nil || got != tc.want {
					t.Fatalf("got %+v, %v; want %+v", got, err, tc.want)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrInvalidIdentity) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("got %+v, %v; want an ErrInvalidIdentity saying %q", got, err, tc.says)
			}
		})
	}
}

// FuzzParseIdentity: ParseIdentity never panics, and what it accepts is exactly the String of
// the Identity it returns, which parses back to an equal Identity.
func FuzzParseIdentity(f *testing.F) {
	for _, s := range []string{
		"spiffe://spillway.example.com/cluster/eu-west-1",
		"spiffe://td/user/alice",
		"spiffe://td/cluster/a/b",
		"spiffe://u@td:1/cluster/a?q#f",
		"spiffe://td/cluster/%61",
		"spiffe:///cluster/",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseIdentity(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidIdentity) {
				t.Fatalf("error %v does not wrap ErrInvalidIdentity", err)
			}
			return
		}
		if id.String() != s {
			t.Fatalf("accepted %q as %+v, whose String is %q", s, id, id.String())
		}
		again, err := ParseIdentity(id.String())
		if err != nil || again != id {
			t.Fatalf("%q parsed as %+v, and its String as %+v, %v", s, id, again, err)
		}
		if err := id.validate(); err != nil {
			t.Fatalf("accepted %q, but validate says %v", s, err)
		}
	})
}
