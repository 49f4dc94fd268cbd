package join

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// publicKeyOf returns the DER public key of a CSR.
func publicKeyOf(t *testing.T, csrPEM []byte) []byte {
	t.Helper()
	csr, _, err := tlsconfig.ParseCSR(csrPEM)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(csr.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// oneRequest scripts h as the hub keeps join requests: one per cluster, for the key of the first
// CSR; a request for another key is refused while it is pending, and it is pending until
// approve is called.
func oneRequest(t *testing.T, h *fakeHub) (approve func()) {
	var mu sync.Mutex
	var key []byte
	approved := false
	h.join = func(_ int, req *pb.JoinRequest) (*pb.JoinResponse, error) {
		mu.Lock()
		defer mu.Unlock()
		k := publicKeyOf(t, req.GetCsrPem())
		switch {
		case key == nil:
			key = k
		case !bytes.Equal(k, key):
			return nil, status.Error(codes.FailedPrecondition, "cluster east has a pending join request for another key")
		}
		if !approved {
			return &pb.JoinResponse{State: pb.JoinState_JOIN_STATE_PENDING, Message: "waiting for an admin"}, nil
		}
		return h.approve(req, time.Hour), nil
	}
	return func() { mu.Lock(); approved = true; mu.Unlock() }
}

// TestJoinRestartedWhilePendingReusesTheKey: a spoke restarted while its request awaits
// approval asks again for the same key, which the hub then approves; a new key would be refused
// (FailedPrecondition), and the spoke would never join.
func TestJoinRestartedWhilePendingReusesTheKey(t *testing.T) {
	h := startFakeHub(t)
	approve := oneRequest(t, h)
	dir := filepath.Join(t.TempDir(), "creds")
	o := h.options(dir)

	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- Join(ctx, o) }()
	testkit.Eventually(t, 5*time.Second, "the request is pending", testkit.True(func() bool {
		_, joins, _ := h.calls()
		return joins >= 1
	}))
	cancel() // the spoke stops while it waits
	if err := <-done; err == nil {
		t.Fatal("Join() = nil before approval")
	}
	assertOnlyJoinKey(t, dir)
	keyPEM, err := os.ReadFile(filepath.Join(dir, tlsconfig.KeyFile))
	if err != nil {
		t.Fatal(err)
	}

	approve()
	if err := Join(t.Context(), o); err != nil { // the restart
		t.Fatalf("Join() after a restart = %v", err)
	}
	readCredentials(t, dir, h.CA, clusterID("east"))
	if got, err := os.ReadFile(filepath.Join(dir, tlsconfig.KeyFile)); err != nil || !bytes.Equal(got, keyPEM) {
		t.Errorf("tls.key changed across the restart (%v)", err)
	}
	reqs := h.joinRequests()
	for i, r := range reqs {
		if !bytes.Equal(publicKeyOf(t, r.GetCsrPem()), publicKeyOf(t, reqs[0].GetCsrPem())) {
			t.Errorf("Join call %d asked for another key than the first", i)
		}
	}
}

// TestJoinAgainMakesANewKey: a directory whose joined certificate was removed to join again
// keeps the key of that certificate, which is not reused (the cluster may have been revoked for
// it); the marker goes with the certificate until the new one is stored.
func TestJoinAgainMakesANewKey(t *testing.T) {
	h := startFakeHub(t)
	dir := t.TempDir()
	if err := Join(t.Context(), h.options(dir)); err != nil {
		t.Fatal(err)
	}
	oldKey, err := os.ReadFile(filepath.Join(dir, tlsconfig.KeyFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, tlsconfig.CertFile)); err != nil {
		t.Fatal(err)
	}
	h.join = func(int, *pb.JoinRequest) (*pb.JoinResponse, error) {
		return &pb.JoinResponse{State: pb.JoinState_JOIN_STATE_DENIED, Message: "no"}, nil
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := Join(ctx, h.options(dir)); err == nil {
		t.Fatal("Join() = nil, want the denial")
	}
	reqs := h.joinRequests()
	if bytes.Equal(publicKeyOf(t, reqs[len(reqs)-1].GetCsrPem()), publicKeyOf(t, reqs[0].GetCsrPem())) {
		t.Error("joining again asked for the key of the removed certificate")
	}
	if Joined(dir) {
		t.Error("the marker outlived the certificate it marked")
	}
	if got, _ := os.ReadFile(filepath.Join(dir, tlsconfig.KeyFile)); bytes.Equal(got, oldKey) {
		t.Error("tls.key is still the old certificate's")
	}
}

// TestJoinReplacesAnUnusableKey: a tls.key that is not a key the join flow makes is replaced,
// not an error the spoke would crash on at every start.
func TestJoinReplacesAnUnusableKey(t *testing.T) {
	h := startFakeHub(t)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, tlsconfig.KeyFile), []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Join(t.Context(), h.options(dir)); err != nil {
		t.Fatalf("Join() = %v", err)
	}
	readCredentials(t, dir, h.CA, clusterID("east"))
}

// FuzzCSRFor: whatever tls.key holds, csrFor never panics, and a CSR it makes is one the hub
// accepts, for the identity asked.
func FuzzCSRFor(f *testing.F) {
	_, keyPEM, err := tlsconfig.NewCSR(clusterID("east"))
	if err != nil {
		f.Fatal(err)
	}
	ca, err := tlsconfig.NewCA("fuzz", time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(keyPEM)
	f.Add(ca.KeyPEM())
	f.Add(append(append([]byte{}, keyPEM...), keyPEM...))
	f.Add([]byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, keyPEM []byte) {
		csrPEM, err := csrFor(clusterID("east"), keyPEM)
		if err != nil {
			return
		}
		if _, id, err := tlsconfig.ParseCSR(csrPEM); err != nil || id != clusterID("east") {
			t.Fatalf("csrFor made a CSR for %v (%v)", id, err)
		}
	})
}
