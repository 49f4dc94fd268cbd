package ctl

import (
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// fixedCertificate is a certificate that is the same at every run (Ed25519 signatures are
// deterministic), so that -o json and yaml, which carry it, can be compared with golden files.
func fixedCertificate(t *testing.T, id tlsconfig.Identity, notBefore, notAfter time.Time) []byte {
	t.Helper()
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	u, err := url.Parse(id.String())
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), NotBefore: notBefore, NotAfter: notAfter, URIs: []*url.URL{u}}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// TestUserOutputGolden renders what `users create` prints in every format; the clock is fixed.
func TestUserOutputGolden(t *testing.T) {
	now := time.Date(2025, 6, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name, hub, dir, user, role string
	}{
		{"user-create", DefaultHub, "creds/bob", "bob", "viewer"},
		{"user-create-admin", "hub.example.com:8472", "/home/ops/hub creds", "carol", "admin"},
	} {
		id := tlsconfig.Identity{TrustDomain: "spillway.local", Kind: tlsconfig.KindUser, Name: tc.user}
		notAfter := now.Add(720 * time.Hour)
		cert := fixedCertificate(t, id, now.Add(-time.Minute), notAfter)
		resp := &pb.IssueUserCertificateResponse{CertificatePem: cert, CaBundlePem: cert, Role: tc.role}
		for _, format := range []string{"table", "json", "yaml"} {
			t.Run(tc.name+"-"+format, func(t *testing.T) {
				o := &options{output: format, hub: tc.hub, now: func() time.Time { return now }}
				var out strings.Builder
				if err := o.printUserCreated(&out, id, notAfter, tc.dir, resp); err != nil {
					t.Fatal(err)
				}
				testkit.Golden(t, filepath.Join("testdata", tc.name+"."+format), []byte(out.String()))
			})
		}
	}
}

func mode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

// TestUsersCreate issues credentials for another operator through an in-process hub and uses
// them: the directory hubctl writes works with hubctl, with the viewer role.
func TestUsersCreate(t *testing.T) {
	h := hubtest.Start(t, 10*time.Second)
	out := filepath.Join(t.TempDir(), "bob")

	got, err := as(t, h, hubtest.Admin(), "users", "create", "bob", "--out", out, "--validity", "2h")
	if err != nil {
		t.Fatalf("%v\n%s", err, got)
	}
	bob := fmt.Sprintf("spiffe://%s/user/bob", hubtest.TrustDomain)
	for _, want := range []string{
		"Identity: " + bob, "Role:     viewer", "(in 2h)",
		"hubctl --hub " + h.AdminAddr + " --credentials-dir " + out + " whoami",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("users create printed\n%s\nwant it to contain %q", got, want)
		}
	}
	if m := mode(t, out); m != 0o700 {
		t.Errorf("%s has mode %o, want 0700", out, m)
	}
	if m := mode(t, filepath.Join(out, tlsconfig.KeyFile)); m != 0o600 {
		t.Errorf("tls.key has mode %o, want 0600", m)
	}
	caPEM, err := os.ReadFile(filepath.Join(out, tlsconfig.CAFile))
	if err != nil || string(caPEM) != string(h.CA.CertPEM()) {
		t.Fatalf("ca.crt is not the hub's CA: %v", err)
	}

	// The directory works with hubctl: bob is a viewer, who reads and may not write.
	got, err = run(t, "--hub", h.AdminAddr, "--credentials-dir", out, "whoami", "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, got)
	}
	var who pb.WhoAmIResponse
	if err := protojson.Unmarshal([]byte(got), &who); err != nil || who.GetIdentity() != bob || who.GetRole() != roleViewer {
		t.Fatalf("whoami with the written directory: %v %v", &who, err)
	}
	if got, err := run(t, "--hub", h.AdminAddr, "--credentials-dir", out, "get", "clusters"); err != nil {
		t.Fatalf("get clusters as bob: %v\n%s", err, got)
	}
	got, err = run(t, "--hub", h.AdminAddr, "--credentials-dir", out, "users", "create", "mallory", "--out", filepath.Join(t.TempDir(), "m"))
	if err == nil || !strings.Contains(got, "users create needs the admin role") {
		t.Fatalf("users create as a viewer: %v\n%s", err, got)
	}

	// The same directory again: refused before the hub is asked, nothing overwritten.
	cert, _ := os.ReadFile(filepath.Join(out, tlsconfig.CertFile))
	got, err = as(t, h, hubtest.Admin(), "users", "create", "bob", "--out", out)
	if err == nil || !strings.Contains(got, "already holds ca.crt, tls.crt, tls.key: hubctl does not overwrite credentials") {
		t.Fatalf("users create into a full directory: %v\n%s", err, got)
	}
	if again, _ := os.ReadFile(filepath.Join(out, tlsconfig.CertFile)); string(again) != string(cert) {
		t.Fatal("tls.crt was overwritten")
	}
	if n := promtest.Value(t, h.Registry, "spillway_hub_certificates_issued_total", "user"); n != 1 {
		t.Errorf("the hub issued %v user certificates, want 1", n)
	}

	// An admin name gets an admin's directory; -o json is the hub's answer, whose certificate is
	// the one written.
	admin2 := filepath.Join(t.TempDir(), "admin")
	got, err = as(t, h, hubtest.Admin(), "users", "create", "admin", "--out", admin2, "-o", "json")
	if err != nil {
		t.Fatalf("%v\n%s", err, got)
	}
	var resp pb.IssueUserCertificateResponse
	if err := protojson.Unmarshal([]byte(got), &resp); err != nil || resp.GetRole() != roleAdmin {
		t.Fatalf("users create -o json: %v %v\n%s", &resp, err, got)
	}
	if written, _ := os.ReadFile(filepath.Join(admin2, tlsconfig.CertFile)); string(written) != string(resp.GetCertificatePem()) {
		t.Fatal("tls.crt is not the certificate of the hub's answer")
	}
	if got, err := run(t, "--hub", h.AdminAddr, "--credentials-dir", admin2, "hopkey", "rotate"); err != nil {
		t.Fatalf("hopkey rotate with the issued admin credentials: %v\n%s", err, got)
	}
}

// TestUsersCreateRefused: a viewer's request and a hub without a CA key leave no file behind.
func TestUsersCreateRefused(t *testing.T) {
	h := hubtest.Start(t, 10*time.Second)
	dir := filepath.Join(t.TempDir(), "x")
	got, err := as(t, h, hubtest.User("alice"), "users", "create", "x", "--out", dir)
	if err == nil || !strings.Contains(got, "users create needs the admin role") {
		t.Fatalf("users create as a viewer: %v\n%s", err, got)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("a refused users create left %s behind (%v)", dir, err)
	}

	off := hubtest.StartWith(t, 10*time.Second, hubtest.Options{NoJoin: true})
	got, err = as(t, off, hubtest.Admin(), "users", "create", "x", "--out", dir)
	if err == nil || !strings.Contains(got, "FailedPrecondition") || !strings.Contains(got, "no CA key") {
		t.Fatalf("users create on a hub without a CA key: %v\n%s", err, got)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("a refused users create left %s behind (%v)", dir, err)
	}
}

// TestWriteCredentialsDir: modes, no overwrite, and nothing left behind when a file is in the way.
func TestWriteCredentialsDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	if err := writeCredentialsDir(dir, []byte("ca"), []byte("cert"), []byte("key")); err != nil {
		t.Fatal(err)
	}
	if m := mode(t, filepath.Join(dir, tlsconfig.KeyFile)); m != 0o600 {
		t.Errorf("tls.key: mode %o, want 600", m)
	}
	for _, name := range []string{tlsconfig.CAFile, tlsconfig.CertFile} { // 0644 less the umask
		if m := mode(t, filepath.Join(dir, name)); m&^0o644 != 0 {
			t.Errorf("%s: mode %o, want at most 644", name, m)
		}
	}
	if m := mode(t, dir); m != 0o700 {
		t.Errorf("directory mode %o, want 0700", m)
	}

	// A key already there (made between the check and the write): the key is kept, and the
	// files written before it are removed.
	other := t.TempDir()
	if err := os.WriteFile(filepath.Join(other, tlsconfig.KeyFile), []byte("mine"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkFree(other); err == nil || !strings.Contains(err.Error(), "already holds tls.key") {
		t.Fatalf("checkFree: %v", err)
	}
	if err := writeCredentialsDir(other, []byte("ca"), []byte("cert"), []byte("key")); err == nil {
		t.Fatal("tls.key was overwritten")
	}
	entries, _ := os.ReadDir(other)
	if kept, _ := os.ReadFile(filepath.Join(other, tlsconfig.KeyFile)); len(entries) != 1 || string(kept) != "mine" {
		t.Fatalf("after a failed write: %d entries, tls.key %q", len(entries), kept)
	}
	file := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := checkFree(file); err == nil || !strings.Contains(err.Error(), "is not a directory") {
		t.Fatalf("checkFree of a file: %v", err)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{
		"creds/bob": "creds/bob", "/a b": "'/a b'", "it's": `'it'\''s'`, "": "''", "127.0.0.1:8472": "127.0.0.1:8472", "$HOME": "'$HOME'",
	} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %s, want %s", in, got, want)
		}
	}
}
