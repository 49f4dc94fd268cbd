package registry_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/registry"
)

func TestParseToken(t *testing.T) {
	for _, tc := range []struct {
		in, says string
	}{
		{"", "0 characters, want 23"},
		{"abcdef.0123456789abcdef0", "24 characters"},
		{"abcdef-0123456789abcdef", "no '.' after the 6-character id"},
		{"abcDef.0123456789abcdef", "outside [a-z0-9]"},
		{"abcdef.0123456789abcdeF", "outside [a-z0-9]"},
		{"abcdef.01234567.9abcdef", "outside [a-z0-9]"},
		{"abcdef.0123456789abcdé", "outside [a-z0-9]"},
	} {
		_, err := registry.ParseToken(tc.in)
		if !errors.Is(err, registry.ErrInvalid) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("ParseToken(%q) = %v, want ErrInvalid saying %q", tc.in, err, tc.says)
		}
	}
	tok, err := registry.ParseToken("abcdef.0123456789abcdef")
	if err != nil || tok.ID != "abcdef" || tok.Secret != "0123456789abcdef" {
		t.Fatalf("ParseToken of a good token: %+v, %v", tok, err)
	}
	for range 100 {
		tok, err := registry.NewToken()
		if err != nil {
			t.Fatal(err)
		}
		if back, err := registry.ParseToken(tok.String()); err != nil || back != tok {
			t.Fatalf("a new token %q does not parse back: %+v, %v", tok, back, err)
		}
	}
}

// FuzzParseToken: what parses is exactly a token's String, and no error repeats its input (which
// may hold a real secret).
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"abcdef.0123456789abcdef", "", "abcdef.", "ABCDEF.0123456789ABCDEF", "abcdef.0123456789abcde\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := registry.ParseToken(s)
		if err != nil {
			// Every error is one of three fixed texts (up to the length it gives), so none carries
			// the input.
			msg := strings.Map(func(r rune) rune {
				if r >= '0' && r <= '9' {
					return '#'
				}
				return r
			}, err.Error())
			for strings.Contains(msg, "##") {
				msg = strings.ReplaceAll(msg, "##", "#")
			}
			var known bool
			for _, why := range []string{"# characters, want #", "no '.' after the #-character id", "a character outside [a-z#-#]"} {
				known = known || msg == "bootstrap token: "+why+"; want <# characters [a-z#-#]>.<# characters [a-z#-#]>: invalid"
			}
			if !known {
				t.Fatalf("ParseToken(%q): unexpected error text %q", s, err)
			}
			return
		}
		if tok.String() != s || len(tok.ID) != registry.TokenIDLen || len(tok.Secret) != registry.TokenSecretLen {
			t.Fatalf("ParseToken(%q) = %+v", s, tok)
		}
		for _, c := range s {
			if c != '.' && !(c >= 'a' && c <= 'z') && !(c >= '0' && c <= '9') {
				t.Fatalf("ParseToken(%q) accepted %q", s, c)
			}
		}
	})
}

func TestTokens(t *testing.T) {
	ctx := context.Background()
	e, cli := startEtcd(t, t.TempDir())
	defer e.Close()
	defer cli.Close()
	s := registry.New(cli, registry.Options{LeaseTTL: 10 * time.Second})

	for _, spec := range []registry.TokenSpec{
		{TTL: time.Hour},
		{Clusters: []string{"a"}},
		{Clusters: []string{"a"}, TTL: 25 * time.Hour},
	} {
		if _, _, err := s.CreateToken(ctx, spec); !errors.Is(err, registry.ErrInvalid) {
			t.Errorf("CreateToken(%+v): %v, want ErrInvalid", spec, err)
		}
	}
	tok, rec, err := s.CreateToken(ctx, registry.TokenSpec{Clusters: []string{"a", "b"}, TTL: time.Hour, AutoApprove: true, CreatedBy: "admin"})
	if err != nil {
		t.Fatal(err)
	}
	if !rec.Allows("a") || !rec.Allows("b") || rec.Allows("c") || !rec.AutoApprove || rec.ExpiresAt.Sub(rec.CreatedAt) != time.Hour {
		t.Fatalf("record %+v", rec)
	}
	got, err := s.CheckToken(ctx, tok)
	if err != nil || got.ID != tok.ID || !got.AutoApprove {
		t.Fatalf("CheckToken of the new token: %+v, %v", got, err)
	}
	// etcd holds the secret's hash only.
	raw, err := cli.Get(ctx, registry.DefaultPrefix, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range raw.Kvs {
		if strings.Contains(string(kv.Value), tok.Secret) {
			t.Fatalf("%s holds the token's secret: %s", kv.Key, kv.Value)
		}
	}
	for _, bad := range []registry.Token{
		{ID: tok.ID, Secret: strings.Repeat("0", registry.TokenSecretLen)},
		{ID: "zzzzzz", Secret: tok.Secret},
	} {
		if _, err := s.CheckToken(ctx, bad); !errors.Is(err, registry.ErrTokenInvalid) {
			t.Errorf("CheckToken(%v): %v, want ErrTokenInvalid", bad, err)
		}
	}

	// A token is refused from its expiry on, and etcd deletes it with its lease.
	short, _, err := s.CreateToken(ctx, registry.TokenSpec{Clusters: []string{"a"}, TTL: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the short token is refused and deleted", func() error {
		if _, err := s.CheckToken(ctx, short); !errors.Is(err, registry.ErrTokenInvalid) {
			return errors.New("still accepted")
		}
		resp, err := cli.Get(ctx, registry.DefaultPrefix+"tokens/"+short.ID)
		if err != nil || len(resp.Kvs) != 0 {
			return errors.New("still stored")
		}
		return nil
	})
	if _, err := s.CheckToken(ctx, tok); err != nil {
		t.Fatalf("the hour-long token after the short one expired: %v", err)
	}
}
