package join

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// readCredentials loads what Join wrote, failing the test when it is not a complete, matching
// set for identity want from ca.
func readCredentials(t *testing.T, dir string, ca *tlsconfig.CA, want tlsconfig.Identity) *x509.Certificate {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, tlsconfig.CertFile), filepath.Join(dir, tlsconfig.KeyFile))
	if err != nil {
		t.Fatalf("tls.crt and tls.key: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if id, err := tlsconfig.IdentityOf(leaf); err != nil || id != want {
		t.Errorf("certificate names %v (%v), want %v", id, err, want)
	}
	bundle, err := os.ReadFile(filepath.Join(dir, tlsconfig.CAFile))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bundle, ca.CertPEM()) {
		t.Errorf("ca.crt is not the hub's CA bundle")
	}
	fi, err := os.Stat(filepath.Join(dir, tlsconfig.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("tls.key has mode %v, want 0600", fi.Mode().Perm())
	}
	if !Joined(dir) {
		t.Errorf("no %s marker: the credentials would never be renewed", MarkerFile)
	}
	return leaf
}

// assertNoCredentials fails the test when dir holds anything: the hub was not trusted, or its
// answer made the join key useless.
func assertNoCredentials(t *testing.T, dir string) {
	t.Helper()
	assertHolds(t, dir)
}

// assertOnlyJoinKey fails the test when dir holds anything but the join key (mode 0600), kept for
// the next attempt.
func assertOnlyJoinKey(t *testing.T, dir string) {
	t.Helper()
	assertHolds(t, dir, tlsconfig.KeyFile)
	if fi, err := os.Stat(filepath.Join(dir, tlsconfig.KeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("the join key: %v, %v; want mode 0600", fi, err)
	}
}

func assertHolds(t *testing.T, dir string, want ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	names := []string{}
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, append([]string{}, want...)) {
		t.Errorf("the credentials directory holds %v, want %v", names, want)
	}
	if has, err := HasCertificate(dir); err != nil || has {
		t.Errorf("HasCertificate() = %v, %v; want false", has, err)
	}
}

func TestJoinPendingThenApproved(t *testing.T) {
	h := startFakeHub(t)
	h.join = func(n int, req *pb.JoinRequest) (*pb.JoinResponse, error) {
		if n < 3 {
			return &pb.JoinResponse{State: pb.JoinState_JOIN_STATE_PENDING, Message: "awaiting an admin"}, nil
		}
		return h.approve(req, time.Hour), nil
	}
	var logs bytes.Buffer
	dir := filepath.Join(t.TempDir(), "creds")
	o := h.options(dir)
	o.Logger = slog.New(slog.NewTextHandler(&logs, nil)).With("cluster", "east") // as the spoke's
	if has, _ := HasCertificate(dir); has {
		t.Fatal("a fresh directory has a certificate")
	}
	if err := Join(t.Context(), o); err != nil {
		t.Fatalf("Join() = %v", err)
	}
	readCredentials(t, dir, h.CA, clusterID("east"))
	if has, err := HasCertificate(dir); err != nil || !has {
		t.Errorf("HasCertificate() = %v, %v after joining", has, err)
	}

	reqs := h.joinRequests()
	if len(reqs) != 4 {
		t.Fatalf("%d Join calls, want 3 pending then 1 approved", len(reqs))
	}
	for i, r := range reqs {
		// One request, asked again: the same token and CSR, so the hub sees one pending request.
		if r.GetToken() != o.Token || !bytes.Equal(r.GetCsrPem(), reqs[0].GetCsrPem()) {
			t.Errorf("Join call %d carried another token or CSR than the first", i)
		}
	}
	if n := strings.Count(logs.String(), "awaiting approval"); n != 1 {
		t.Errorf("the wait for approval was logged %d times, want once:\n%s", n, logs.String())
	}
	if !strings.Contains(logs.String(), "hubctl clusters approve east") {
		t.Errorf("the log does not say how to approve:\n%s", logs.String())
	}
	if strings.Contains(logs.String(), o.Token) {
		t.Errorf("the token was logged:\n%s", logs.String())
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if n := strings.Count(line, " cluster="); n != 1 {
			t.Errorf("a log line names the cluster %d times: %s", n, line)
		}
	}
}

func TestJoinRefusesAHubThatDoesNotMatchThePin(t *testing.T) {
	h := startFakeHub(t)
	other, err := tlsconfig.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		hash   string
		bundle []byte // what Discover returns; nil: the hub's own
	}{
		{name: "the pin names another CA", hash: tlsconfig.SPKIHash(other.Certificate())},
		{name: "the hub presents another CA's bundle", hash: tlsconfig.SPKIHash(h.CA.Certificate()), bundle: other.CertPEM()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.discover = nil
			if tc.bundle != nil {
				h.discover = func(int) (*pb.DiscoverResponse, error) {
					return &pb.DiscoverResponse{CaBundlePem: tc.bundle, TrustDomain: trustDomain}, nil
				}
			}
			dir := t.TempDir()
			o := h.options(dir)
			o.CAHash = tc.hash
			err := Join(t.Context(), o)
			if !errors.Is(err, ErrCAHashMismatch) {
				t.Fatalf("Join() = %v, want ErrCAHashMismatch", err)
			}
			if _, joins, _ := h.calls(); joins != 0 {
				t.Errorf("%d Join calls: the token was sent to a hub that does not match the pin", joins)
			}
			assertNoCredentials(t, dir)
		})
	}
}

func TestJoinDenied(t *testing.T) {
	h := startFakeHub(t)
	h.join = func(int, *pb.JoinRequest) (*pb.JoinResponse, error) {
		return &pb.JoinResponse{State: pb.JoinState_JOIN_STATE_DENIED, Message: "cluster east is revoked"}, nil
	}
	dir := t.TempDir()
	err := Join(t.Context(), h.options(dir))
	if !errors.Is(err, ErrDenied) || !strings.Contains(err.Error(), "cluster east is revoked") {
		t.Fatalf("Join() = %v, want ErrDenied with the hub's reason", err)
	}
	if _, joins, _ := h.calls(); joins != 1 {
		t.Errorf("%d Join calls, want 1: a denial is final", joins)
	}
	// The hub would deny the key again: it is removed, and the next join makes a new one.
	assertNoCredentials(t, dir)
}

func TestJoinRefusedByTheHub(t *testing.T) {
	for _, code := range []codes.Code{codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition} {
		t.Run(code.String(), func(t *testing.T) {
			h := startFakeHub(t)
			h.join = func(int, *pb.JoinRequest) (*pb.JoinResponse, error) {
				return nil, status.Error(code, "token abcdef is for cluster west, the CSR names east")
			}
			dir := t.TempDir()
			err := Join(t.Context(), h.options(dir))
			if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "token abcdef is for cluster west, the CSR names east") {
				t.Fatalf("Join() = %v, want ErrRefused with the hub's message", err)
			}
			if _, joins, _ := h.calls(); joins != 1 {
				t.Errorf("%d Join calls, want 1: a refusal is final", joins)
			}
			// The key stays: with a new token, the request the hub may hold for it goes on.
			assertOnlyJoinKey(t, dir)
		})
	}
}

func TestJoinRetriesWhileTheHubIsUnavailable(t *testing.T) {
	h := startFakeHub(t)
	h.discover = func(n int) (*pb.DiscoverResponse, error) {
		if n < 2 {
			return nil, status.Error(codes.Unavailable, "starting")
		}
		return &pb.DiscoverResponse{CaBundlePem: h.CA.CertPEM(), TrustDomain: trustDomain}, nil
	}
	h.join = func(n int, req *pb.JoinRequest) (*pb.JoinResponse, error) {
		if n < 2 {
			return nil, status.Error(codes.Unavailable, "etcd is away")
		}
		return h.approve(req, time.Hour), nil
	}
	dir := t.TempDir()
	if err := Join(t.Context(), h.options(dir)); err != nil {
		t.Fatalf("Join() = %v", err)
	}
	readCredentials(t, dir, h.CA, clusterID("east"))
	if d, j, _ := h.calls(); d != 3 || j != 3 {
		t.Errorf("%d Discover and %d Join calls, want 3 of each (two failures, then success)", d, j)
	}
}

func TestJoinRefusesUnusableAnswers(t *testing.T) {
	other, err := tlsconfig.NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		answer func(h *fakeHub, req *pb.JoinRequest) *pb.JoinResponse
		want   error
		says   string
	}{{
		name: "a certificate for another cluster",
		answer: func(h *fakeHub, req *pb.JoinRequest) *pb.JoinResponse {
			csr, _, _ := tlsconfig.ParseCSR(req.GetCsrPem())
			cert, _ := h.CA.Sign(csr, clusterID("west"), time.Hour)
			return &pb.JoinResponse{State: pb.JoinState_JOIN_STATE_APPROVED, CertificatePem: cert, CaBundlePem: h.CA.CertPEM()}
		},
		want: ErrBadResponse, says: "names spiffe://spillway.test/cluster/west",
	}, {
		name: "a certificate for another key",
		answer: func(h *fakeHub, _ *pb.JoinRequest) *pb.JoinResponse {
			otherCSR, _, _ := tlsconfig.NewCSR(clusterID("east"))
			return &pb.JoinResponse{State: pb.JoinState_JOIN_STATE_APPROVED, CertificatePem: h.sign(otherCSR, time.Hour), CaBundlePem: h.CA.CertPEM()}
		},
		want: ErrBadResponse, says: "not one for the spoke's key",
	}, {
		name: "a certificate from another CA",
		answer: func(h *fakeHub, req *pb.JoinRequest) *pb.JoinResponse {
			csr, id, _ := tlsconfig.ParseCSR(req.GetCsrPem())
			cert, _ := other.Sign(csr, id, time.Hour)
			return &pb.JoinResponse{State: pb.JoinState_JOIN_STATE_APPROVED, CertificatePem: cert, CaBundlePem: h.CA.CertPEM()}
		},
		want: ErrBadResponse, says: "does not verify with the hub's CA bundle",
	}, {
		name: "no certificate",
		answer: func(h *fakeHub, _ *pb.JoinRequest) *pb.JoinResponse {
			return &pb.JoinResponse{State: pb.JoinState_JOIN_STATE_APPROVED, CaBundlePem: h.CA.CertPEM()}
		},
		want: ErrBadResponse,
	}, {
		name: "a bundle without the pinned CA",
		answer: func(h *fakeHub, req *pb.JoinRequest) *pb.JoinResponse {
			r := h.approve(req, time.Hour)
			r.CaBundlePem = other.CertPEM()
			return r
		},
		want: ErrBadResponse, says: "no longer holds the pinned CA",
	}, {
		name: "an approval without a CA bundle",
		answer: func(h *fakeHub, req *pb.JoinRequest) *pb.JoinResponse {
			r := h.approve(req, time.Hour)
			r.CaBundlePem = nil
			return r
		},
		want: ErrBadResponse, says: "carries no CA bundle",
	}, {
		name: "approved for another cluster",
		answer: func(h *fakeHub, req *pb.JoinRequest) *pb.JoinResponse {
			r := h.approve(req, time.Hour)
			r.ClusterId = "west"
			return r
		},
		want: ErrBadResponse, says: `approved for cluster "west"`,
	}, {
		name: "an unknown state",
		answer: func(*fakeHub, *pb.JoinRequest) *pb.JoinResponse {
			return &pb.JoinResponse{State: pb.JoinState_JOIN_STATE_UNSPECIFIED}
		},
		want: ErrBadResponse,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			h := startFakeHub(t)
			h.join = func(_ int, req *pb.JoinRequest) (*pb.JoinResponse, error) { return tc.answer(h, req), nil }
			dir := t.TempDir()
			err := Join(t.Context(), h.options(dir))
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Join() = %v, want %v saying %q", err, tc.want, tc.says)
			}
			assertOnlyJoinKey(t, dir)
		})
	}
}

func TestJoinRefusesAnotherTrustDomain(t *testing.T) {
	h := startFakeHub(t)
	dir := t.TempDir()
	o := h.options(dir)
	o.TrustDomain = "elsewhere.test"
	err := Join(t.Context(), o)
	if !errors.Is(err, ErrTrustDomain) || !strings.Contains(err.Error(), `"spillway.test"`) {
		t.Fatalf("Join() = %v, want ErrTrustDomain naming the hub's", err)
	}
	if _, joins, _ := h.calls(); joins != 0 {
		t.Errorf("%d Join calls after a trust domain mismatch", joins)
	}
	assertNoCredentials(t, dir)
}

func TestJoinValidatesOptions(t *testing.T) {
	valid := Options{HubAddress: "hub:8470", Token: "a.b", CAHash: "sha256:00", TrustDomain: "spillway.local", ClusterID: "east", Dir: "creds"}
	for _, tc := range []struct {
		name   string
		change func(*Options)
		says   string
	}{
		{"no port", func(o *Options) { o.HubAddress = "hub" }, `hub address "hub": want host:port`},
		{"no token", func(o *Options) { o.Token = "" }, "a join token is required"},
		{"no hash", func(o *Options) { o.CAHash = "" }, `CA hash "": want sha256:<hex>`},
		{"no directory", func(o *Options) { o.Dir = "" }, "a credentials directory is required"},
		{"bad cluster ID", func(o *Options) { o.ClusterID = "East_1" }, "cluster identity"},
		{"bad trust domain", func(o *Options) { o.TrustDomain = "" }, "cluster identity"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := valid
			tc.change(&o)
			err := Join(t.Context(), o)
			if err == nil || !strings.Contains(err.Error(), tc.says) {
				t.Fatalf("Join() = %v, want an error saying %q", err, tc.says)
			}
		})
	}
}
