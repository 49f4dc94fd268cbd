package ctl

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

var (
	ages       = regexp.MustCompile(`\d+[smh] ago`)
	timestamps = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z`)
	// durations are the age of capacity reports in JSON and YAML output.
	durations = regexp.MustCompile(`(age"?: "?)\d+(\.\d+)?s`)
)

// run runs hubctl with args and returns what it printed, ages and timestamps replaced.
func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := NewCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.Execute()
	s := ages.ReplaceAllString(out.String(), "AGE")
	s = durations.ReplaceAllString(s, "${1}DURATION")
	return timestamps.ReplaceAllString(s, "TIME"), err
}

// writeCredentials writes a credentials directory: the CA bundle, a certificate and its key.
func writeCredentials(t *testing.T, caPEM, certPEM, keyPEM []byte) string {
	t.Helper()
	dir := t.TempDir()
	for name, data := range map[string][]byte{tlsconfig.CAFile: caPEM, tlsconfig.CertFile: certPEM, tlsconfig.KeyFile: keyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// userCredentials issues a certificate for user name from a new CA and writes its directory.
func userCredentials(t *testing.T, name string) string {
	t.Helper()
	ca, err := tlsconfig.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, key, err := ca.Issue(tlsconfig.Identity{TrustDomain: "spillway.local", Kind: tlsconfig.KindUser, Name: name}, nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return writeCredentials(t, ca.CertPEM(), cert, key)
}

// selfSigned makes a self-signed certificate valid from notBefore to notAfter, which the CA of
// tlsconfig cannot (it issues from now on).
func selfSigned(t *testing.T, notBefore, notAfter time.Time) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "old"}, NotBefore: notBefore, NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
}

func TestLoadCredentials(t *testing.T) {
	now := time.Now()
	good := userCredentials(t, "alice")
	goodCA, _ := os.ReadFile(filepath.Join(good, tlsconfig.CAFile))
	goodCert, _ := os.ReadFile(filepath.Join(good, tlsconfig.CertFile))
	goodKey, _ := os.ReadFile(filepath.Join(good, tlsconfig.KeyFile))
	expiredCert, expiredKey := selfSigned(t, now.Add(-2*time.Hour), now.Add(-time.Hour))
	futureCert, futureKey := selfSigned(t, now.Add(time.Hour), now.Add(2*time.Hour))
	partial := t.TempDir()
	if err := os.WriteFile(filepath.Join(partial, tlsconfig.CAFile), goodCA, 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "nowhere")
	empty := t.TempDir()

	for _, tc := range []struct {
		name, dir, want string
	}{
		{"missing dir", missing, "no credentials in " + missing + ": pass --credentials-dir or set SPILLWAY_CREDENTIALS"},
		{"empty dir", empty, "no credentials in " + empty + ": pass --credentials-dir or set SPILLWAY_CREDENTIALS"},
		{"partial", partial, "incomplete credentials in " + partial + ": tls.crt and tls.key missing; want ca.crt, tls.crt and tls.key"},
		{"key of another certificate", writeCredentials(t, goodCA, goodCert, expiredKey), "private key does not match public key"},
		{"garbage CA", writeCredentials(t, []byte("not PEM"), goodCert, goodKey), "no PEM certificate in it"},
		{"expired", writeCredentials(t, goodCA, expiredCert, expiredKey), "expired at " + now.Add(-time.Hour).UTC().Format(time.RFC3339) + ": get a new one"},
		{"not yet valid", writeCredentials(t, goodCA, futureCert, futureKey), "is valid only from " + now.Add(time.Hour).UTC().Format(time.RFC3339) + ": check this machine's clock"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := loadCredentials(tc.dir, now)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}

	t.Run("good", func(t *testing.T) {
		c, err := loadCredentials(good, now)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.who(), "spiffe://spillway.local/user/alice"; got != want {
			t.Errorf("who %q, want %q", got, want)
		}
	})
	t.Run("no identity", func(t *testing.T) {
		cert, key := selfSigned(t, now.Add(-time.Hour), now.Add(time.Hour))
		dir := writeCredentials(t, goodCA, cert, key)
		c, err := loadCredentials(dir, now)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := c.who(), "the certificate in "+filepath.Join(dir, tlsconfig.CertFile); got != want {
			t.Errorf("who %q, want %q", got, want)
		}
	})
}

// TestCredentialsDirChoice checks where hubctl looks for credentials: the flag, else the
// environment, else hub-pki/hubctl.
func TestCredentialsDirChoice(t *testing.T) {
	fromEnv := filepath.Join(t.TempDir(), "from-env")
	fromFlag := filepath.Join(t.TempDir(), "from-flag")
	for _, tc := range []struct {
		name, env string
		args      []string
		want      string
	}{
		{"default", "", nil, "no credentials in " + DefaultCredentialsDir + ":"},
		{"environment", fromEnv, nil, "no credentials in " + fromEnv + ":"},
		{"flag over environment", fromEnv, []string{"--credentials-dir", fromFlag}, "no credentials in " + fromFlag + ":"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Chdir(t.TempDir()) // no hub-pki here
			t.Setenv(CredentialsEnv, tc.env)
			out, err := run(t, append(tc.args, "whoami")...)
			if err == nil || !strings.Contains(out, tc.want) {
				t.Fatalf("got %v\n%s\nwant an error containing %q", err, out, tc.want)
			}
		})
	}
}

// TestFlagErrors checks that bad flags and arguments are refused, each with what to do, before
// any credential is read or the hub is dialed.
func TestFlagErrors(t *testing.T) {
	t.Setenv(CredentialsEnv, filepath.Join(t.TempDir(), "nowhere"))
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{[]string{"get", "clusters", "-o", "xml"}, []string{`--output "xml": want table, wide, json, yaml or jsonpath=TEMPLATE`}},
		{[]string{"get", "clusters", "-o", "jsonpath={.clusters[}"}, []string{`--output "jsonpath={.clusters[}"`}},
		{[]string{"get", "pool", "chat"}, []string{`pool "chat": want NAMESPACE/NAME`}},
		{[]string{"get", "clusters", "a", "b"}, []string{"accepts at most 1 arg(s), received 2"}},
		{[]string{"whoami", "--timeout", "0s", "--hub", ""}, []string{"--hub is empty", "--timeout 0s: want a positive duration"}},
		{[]string{"tokens", "create"}, []string{"--cluster is required"}},
		{[]string{"tokens", "create", "--cluster", "Bad_ID", "--ttl", "25h"}, []string{`--cluster: cluster ID "Bad_ID"`, "--ttl 25h0m0s: want more than 0 and at most 24h0m0s"}},
		{[]string{"tokens", "create", "--cluster", "a", "--ttl", "-1m"}, []string{"--ttl -1m0s"}},
		{[]string{"clusters", "approve"}, []string{"clusters approve takes one cluster ID, got 0 arguments"}},
		{[]string{"clusters", "revoke", "a", "b"}, []string{"clusters revoke takes one cluster ID, got 2 arguments"}},
		{[]string{"clusters", "approve", "a.b"}, []string{`cluster ID "a.b"`}},
		{[]string{"clusters", "approve", "a", "--public-key-sha256", "9c1185a5"}, []string{`--public-key-sha256 "9c1185a5": want the key's SHA-256 in hex as hubctl clusters requests shows it, at least its first 16 digits`}},
		{[]string{"clusters", "approve", "a", "--public-key-sha256", strings.Repeat("a", 65)}, []string{"at least its first 16 digits"}},
		{[]string{"clusters", "approve", "a", "--public-key-sha256", "9c1185a5c5e9fc5g"}, []string{`--public-key-sha256 "9c1185a5c5e9fc5g": not hex`}},
		{[]string{"get", "hubs", "extra"}, []string{`unknown command "extra"`}},
		{[]string{"users", "create"}, []string{"users create takes one user name, got 0 arguments"}},
		{[]string{"users", "create", "Bad_Name", "--validity", "8761h"}, []string{`user name "Bad_Name"`, "--out is required", "--validity 8761h0m0s: want more than 0 and at most 8760h0m0s"}},
		{[]string{"users", "create", "bob", "--out", "x", "--validity", "0s"}, []string{"--validity 0s"}},
	} {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			out, err := run(t, tc.args...)
			if err == nil {
				t.Fatalf("no error\n%s", out)
			}
			if strings.Contains(out, "no credentials") {
				t.Errorf("credentials read before the flags were checked:\n%s", out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}

func TestUnreachableHub(t *testing.T) {
	out, err := run(t, "--hub", "127.0.0.1:1", "--credentials-dir", userCredentials(t, "alice"), "--timeout", "500ms", "get", "clusters")
	if err == nil || !strings.Contains(out, "ask hub 127.0.0.1:1: unavailable:") {
		t.Fatalf("unreachable hub: %v %s", err, out)
	}
}

// FuzzParseKeyHash: whatever the user types as --public-key-sha256, hubctl either refuses it or
// sends at least 16 and at most 64 lower-case hex digits, the ones typed.
func FuzzParseKeyHash(f *testing.F) {
	for _, s := range []string{"", "9c1185a5c5e9fc54…", "sha256:" + strings.Repeat("AB", 32), "9c1185a5c5e9fc5g", strings.Repeat("a", 65)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := parseKeyHash(s)
		switch {
		case err != nil || s == "":
			if h != "" {
				t.Fatalf("%q: %q with error %v", s, h, err)
			}
		case len(h) < minKeyHashDigits || len(h) > 64 || strings.Trim(h, "0123456789abcdef") != "" || !strings.Contains(strings.ToLower(s), h):
			t.Fatalf("%q read as %q", s, h)
		}
	})
}

// TestCompletion: hubctl writes shell completion scripts that complete its commands.
func TestCompletion(t *testing.T) {
	for shell, want := range map[string]string{"bash": "__start_hubctl", "zsh": "#compdef hubctl", "fish": "complete -c hubctl"} {
		out, err := run(t, "completion", shell)
		if err != nil || !strings.Contains(out, want) {
			t.Errorf("completion %s: %v, output without %q:\n%.200s", shell, err, want, out)
		}
	}
	// Cobra's hidden completion entry point, which the scripts call: get's commands complete.
	out, err := run(t, "__complete", "get", "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"clusters", "pools", "endpoints", "imports", "hubs"} {
		if !strings.Contains(out, c) {
			t.Errorf("completing `get `: %q missing from\n%s", c, out)
		}
	}
}
