package app

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
	"github.com/spillway-io/spillway/spoke/join"
)

// clusterState returns the hub's record of a cluster's state, UNSPECIFIED when it has none.
func clusterState(t *testing.T, h *hubtest.Hub, id string) pb.ClusterState {
	resp, err := h.Admin().ListClusters(t.Context(), &pb.ListClustersRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range resp.GetClusters() {
		if c.GetInfo().GetClusterId() == id {
			return c.GetState()
		}
	}
	return pb.ClusterState_CLUSTER_STATE_UNSPECIFIED
}

// TestSpokeJoinsWithATokenFile: the token of --join-token-file (written as a Secret holds it,
// with a trailing newline) joins a real hub; with an auto-approving token the certificate arrives
// at once.
func TestSpokeJoinsWithATokenFile(t *testing.T) {
	h := hubtest.Start(t, 5*time.Second)
	tok, err := h.Admin().CreateToken(t.Context(), &pb.CreateTokenRequest{ClusterIds: []string{"east"}, AutoApprove: true})
	if err != nil {
		t.Fatal(err)
	}
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(tok.GetToken()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	o := staticOptions(t)
	o.HubAddress, o.Spill = h.Addr, false
	o.Trust.TrustDomain = hubtest.TrustDomain
	o.Trust.CredentialsDir = filepath.Join(t.TempDir(), "credentials")
	o.Trust.JoinTokenFile, o.Trust.HubCAHash = tokenFile, tok.GetCaCertHash()
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if err := joinFleet(ctx, cfg); err != nil {
		t.Fatalf("joinFleet() = %v", err)
	}
	kp, _, err := tlsconfig.LoadDir(o.Trust.CredentialsDir, tlsconfig.KeyPairOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := tlsconfig.IdentityOf(kp.Certificate().Leaf); err != nil || id.String() != "spiffe://"+hubtest.TrustDomain+"/cluster/east" {
		t.Errorf("the stored certificate names %v (%v)", id, err)
	}
}

// pendingKey returns the public key hash of cluster id's pending join request; empty when
// it has none.
func pendingKey(t *testing.T, h *hubtest.Hub, id string) string {
	t.Helper()
	resp, err := h.Admin().ListJoinRequests(t.Context(), &pb.ListJoinRequestsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.GetRequests() {
		if r.GetClusterId() == id && r.GetState() == pb.JoinState_JOIN_STATE_PENDING {
			return r.GetPublicKeySha256()
		}
	}
	return ""
}

// TestSpokeJoinsTheHubByTokenAndApproval: a spoke started with a token and the CA hash against
// a real hub waits for approval, asks again for the same key when restarted meanwhile, stores
// its certificate, holds a session over mTLS, and starts again from its credentials without the
// token.
func TestSpokeJoinsTheHubByTokenAndApproval(t *testing.T) {
	h := hubtest.Start(t, 5*time.Second)
	tok, err := h.Admin().CreateToken(t.Context(), &pb.CreateTokenRequest{ClusterIds: []string{"east"}})
	if err != nil {
		t.Fatal(err)
	}
	o := staticOptions(t)
	o.HubAddress, o.Spill = h.Addr, false
	o.Trust.TrustDomain = hubtest.TrustDomain
	o.Trust.CredentialsDir = filepath.Join(t.TempDir(), "credentials")
	o.Trust.JoinToken, o.Trust.HubCAHash = tok.GetToken(), tok.GetCaCertHash()
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	// start runs the spoke; stop ends it and returns what Run returned.
	var stop func() error
	start := func() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Run(ctx, cfg) }()
		stopped := false
		stop = func() error {
			if stopped {
				return nil
			}
			stopped = true
			cancel()
			return <-done
		}
	}
	start()
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Run() = %v", err)
		}
	})

	var key string
	testkit.Eventually(t, 10*time.Second, "east's join request is pending", testkit.True(func() bool {
		key = pendingKey(t, h, "east")
		return key != ""
	}))
	// Stopped and started again while the request waits: the hub, which refuses a request for
	// another key while one is pending, is asked again for the same key.
	if err := stop(); err != nil {
		t.Fatalf("Run() stopped while joining = %v, want nil: a stop is not a failure", err)
	}
	if has, _ := join.HasCertificate(o.Trust.CredentialsDir); has {
		t.Fatal("a certificate before approval")
	}
	start()
	testkit.Eventually(t, 10*time.Second, "the restarted spoke's request is pending", testkit.True(func() bool {
		return strings.Count(logs.String(), "join request sent; awaiting approval on the hub") == 2
	}))
	if got := pendingKey(t, h, "east"); got != key {
		t.Fatalf("the pending request is for key %s after the restart, want the first one, %s", got, key)
	}
	if _, err := h.Admin().ApproveCluster(t.Context(), &pb.ApproveClusterRequest{ClusterId: "east", PublicKeySha256: key}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "east holds a session", testkit.True(func() bool {
		return clusterState(t, h, "east") == pb.ClusterState_CLUSTER_STATE_ALIVE
	}))
	if !join.Joined(o.Trust.CredentialsDir) {
		t.Error("the joined credentials are not marked for renewal")
	}
	kp, _, err := tlsconfig.LoadDir(o.Trust.CredentialsDir, tlsconfig.KeyPairOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if id, err := tlsconfig.IdentityOf(kp.Certificate().Leaf); err != nil || id.String() != "spiffe://"+hubtest.TrustDomain+"/cluster/east" {
		t.Errorf("the stored certificate names %v (%v)", id, err)
	}
	if got := tlsconfig.SPKIHash(kp.Certificate().Leaf); got != "sha256:"+key {
		t.Errorf("the stored certificate is for key %s, the approved request for %s", got, key)
	}
	if err := stop(); err != nil {
		t.Errorf("Run() = %v", err)
	}

	// Again, from the stored credentials, without the token; the hub's hop keys arrive.
	o.Trust.JoinToken, o.Trust.HubCAHash = "", ""
	cfg, err = o.Config()
	if err != nil {
		t.Fatal(err)
	}
	s, err := build(cfg)
	t.Cleanup(s.close)
	if err != nil {
		t.Fatal(err)
	}
	if s.renewer == nil {
		t.Error("no renewer for joined credentials")
	}
	ls, err := s.listen()
	if err != nil {
		t.Fatal(err)
	}
	rctx, rcancel := context.WithCancel(context.Background())
	rdone := make(chan error, 1)
	go func() { rdone <- s.run(rctx, ls) }()
	t.Cleanup(func() {
		rcancel()
		if err := <-rdone; err != nil {
			t.Errorf("spoke: %v", err)
		}
	})
	testkit.Eventually(t, 10*time.Second, "the restarted spoke holds a session and the hop keys", testkit.True(func() bool {
		return s.client.Connected() && len(s.client.HopKeys()) > 0
	}))
}

// TestMountedCredentialsAreNotRenewed: credentials the join flow did not write (cert-manager's,
// SPIRE's) are their issuer's to renew.
func TestMountedCredentialsAreNotRenewed(t *testing.T) {
	h := hubtest.Start(t, 5*time.Second)
	o := staticOptions(t)
	o.HubAddress, o.Spill = h.Addr, false
	o.Trust.TrustDomain = hubtest.TrustDomain
	o.Trust.CredentialsDir = h.CredentialsDir(hubtest.Cluster("east"))
	if _, err := os.Stat(filepath.Join(o.Trust.CredentialsDir, join.MarkerFile)); err == nil {
		t.Fatal("hubtest wrote a join marker")
	}
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	s, err := build(cfg)
	t.Cleanup(s.close)
	if err != nil {
		t.Fatal(err)
	}
	if s.hubKP == nil || s.renewer != nil {
		t.Errorf("mounted credentials: key pair %v, renewer %v; want the key pair and no renewer", s.hubKP != nil, s.renewer != nil)
	}
}

// TestJoinedCertificateIsRenewedByTheHub: a certificate the join flow stored is renewed by the
// hub's Renew before it expires, and the hub session carries on past the expiry of the first
// certificate, which the hub refuses from then on: the spoke reconnects with the renewed one.
func TestJoinedCertificateIsRenewedByTheHub(t *testing.T) {
	// 5 s of validity after a minute of backdating: each certificate is due for renewal at once,
	// and the renewer renews every second.
	const validity = 5 * time.Second
	h := hubtest.StartWith(t, 5*time.Second, hubtest.Options{ClusterCertValidity: validity})
	tok, err := h.Admin().CreateToken(t.Context(), &pb.CreateTokenRequest{ClusterIds: []string{"east"}, AutoApprove: true})
	if err != nil {
		t.Fatal(err)
	}
	o := staticOptions(t)
	o.HubAddress, o.Spill = h.Addr, false
	o.Trust.TrustDomain = hubtest.TrustDomain
	o.Trust.CredentialsDir = filepath.Join(t.TempDir(), "credentials")
	o.Trust.JoinToken, o.Trust.HubCAHash = tok.GetToken(), tok.GetCaCertHash()
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	if err := joinFleet(t.Context(), cfg); err != nil {
		t.Fatal(err)
	}
	joined, err := tlsconfig.NewStaticKeyPair(mustRead(t, filepath.Join(o.Trust.CredentialsDir, tlsconfig.CertFile)),
		mustRead(t, filepath.Join(o.Trust.CredentialsDir, tlsconfig.KeyFile)))
	if err != nil {
		t.Fatal(err)
	}
	s, err := build(cfg)
	t.Cleanup(s.close)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := s.listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx, ls) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("spoke: %v", err)
		}
	})
	testkit.Eventually(t, 20*time.Second, "the spoke's key pair holds a renewed certificate", testkit.True(func() bool {
		return s.hubKP.NotAfter().After(joined.NotAfter())
	}))
	if time.Now().After(joined.NotAfter()) {
		t.Errorf("renewed after the joined certificate expired (%s)", joined.NotAfter())
	}

	// Past the expiry of the first certificate, and of every certificate issued before it
	// expired: the spoke holds a session it opened after that, with a certificate renewed
	// since, and the session is live (a hop key rotated then arrives).
	expired := joined.NotAfter().Add(validity)
	testkit.Eventually(t, 2*validity+20*time.Second, "a session opened after the first certificates expired", testkit.True(func() bool {
		if time.Now().Before(expired) || !s.client.Connected() {
			return false
		}
		sess, ok, err := h.Store.GetSession(t.Context(), "east")
		if err != nil {
			t.Fatal(err)
		}
		return ok && sess.StartedAt.After(expired)
	}))
	rotated, err := h.Admin().RotateHopKey(t.Context(), &pb.RotateHopKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "the hop key rotated after the first certificates expired", testkit.True(func() bool {
		keys := s.client.HopKeys()
		return len(keys) > 0 && keys[0].ID == rotated.GetKeyId()
	}))
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// logBuffer is a log destination a test reads while the spoke writes.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
