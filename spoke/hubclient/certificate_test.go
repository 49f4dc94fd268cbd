package hubclient

import (
	"bytes"
	"context"
	"encoding/pem"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
)

// writeKeyPair issues a certificate for cluster id from ca and writes it and its key into dir
// (the key first, each by a rename, as the join flow does); it returns the certificate's DER.
func writeKeyPair(t *testing.T, ca *tlsconfig.CA, dir, id string) []byte {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(tlsconfig.Identity{TrustDomain: trustDomain, Kind: tlsconfig.KindCluster, Name: id}, nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []struct {
		name string
		data []byte
	}{{tlsconfig.KeyFile, keyPEM}, {tlsconfig.CertFile, certPEM}} {
		tmp := filepath.Join(dir, "."+f.name+".tmp")
		if err := os.WriteFile(tmp, f.data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, f.name)); err != nil {
			t.Fatal(err)
		}
	}
	block, _ := pem.Decode(certPEM)
	return block.Bytes
}

// TestANewCertificateStartsANewSession: when the key pair's certificate changes (a renewal),
// the session ends and the next one presents the new certificate, on a connection of its own:
// a TLS connection keeps the certificate of its handshake, and the hub ends the streams of a
// certificate that expired.
func TestANewCertificateStartsANewSession(t *testing.T) {
	h := startFakeHub(t)
	dir := t.TempDir()
	first := writeKeyPair(t, h.ca, dir, "east")
	kp, err := tlsconfig.NewKeyPair(filepath.Join(dir, tlsconfig.CertFile), filepath.Join(dir, tlsconfig.KeyFile),
		tlsconfig.KeyPairOptions{Interval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsconfig.NewStaticCAPool(h.ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	reloaded := make(chan struct{})
	go func() { defer close(reloaded); _ = kp.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-reloaded })
	c := New(Options{
		Cluster: fleet.ClusterInfo{ID: "east"}, HubAddress: h.addr,
		TLS:        tlsconfig.ClientConfig(kp, pool, "127.0.0.1"),
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: slog.New(slog.DiscardHandler),
		CertificateCheckInterval: 20 * time.Millisecond,
	})
	run(t, c)
	sessionWith := func(cert []byte) func() error {
		return testkit.True(func() bool {
			h.mu.Lock()
			defer h.mu.Unlock()
			return c.Connected() && len(h.certs) > 0 && bytes.Equal(h.certs[len(h.certs)-1], cert)
		})
	}
	testkit.Eventually(t, 5*time.Second, "a session with the first certificate", sessionWith(first))

	renewed := writeKeyPair(t, h.ca, dir, "east")
	testkit.Eventually(t, 5*time.Second, "the key pair holds the renewed certificate", testkit.True(func() bool {
		return bytes.Equal(kp.Certificate().Certificate[0], renewed)
	}))
	testkit.Eventually(t, 5*time.Second, "a session with the renewed certificate", sessionWith(renewed))
	if sessions, _, _ := h.seen(); sessions != 2 {
		t.Errorf("%d sessions, want 2: one per certificate", sessions)
	}
}

// TestLogLinesNameTheClusterOnce: the spoke's logger names the cluster already; the client's
// lines must not name it again (a duplicate key breaks JSON log pipelines).
func TestLogLinesNameTheClusterOnce(t *testing.T) {
	h := startFakeHub(t)
	logs := &lockedBuffer{}
	h.logger = slog.New(slog.NewJSONHandler(logs, nil)).With("cluster", "east")
	c := h.client(t, "east", "east")
	run(t, c)
	testkit.Eventually(t, 5*time.Second, "a session", testkit.True(c.Connected))
	h.push <- nil // the hub ends it: the client logs that it reconnects
	testkit.Eventually(t, 5*time.Second, "the reconnect logged", testkit.True(func() bool {
		return strings.Contains(logs.String(), "hub session ended, reconnecting")
	}))
	lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
	for _, line := range lines {
		if n := strings.Count(line, `"cluster":`); n != 1 {
			t.Errorf("a log line names the cluster %d times: %s", n, line)
		}
	}
	if len(lines) < 2 {
		t.Errorf("%d log lines, want the session's start and end", len(lines))
	}
}
