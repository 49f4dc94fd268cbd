package app

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/spillway-io/spillway/e2e/testkit"
)

func TestValidateAffinityOptions(t *testing.T) {
	for _, tc := range []struct {
		o    AffinityOptions
		want string
	}{
		{AffinityOptions{}, ""},
		{AffinityOptions{Address: "0.0.0.0:7947", Peers: []string{"spoke-replicas.spillway-system.svc:7947", "10.0.0.2:7947"}}, ""},
		{AffinityOptions{Peers: []string{"10.0.0.2:7947"}}, "need --replica-address"},
		{AffinityOptions{Address: "7947"}, `--replica-address "7947": want host:port`},
		{AffinityOptions{Address: ":7947", Advertise: "x"}, `--replica-advertise-address "x"`},
		{AffinityOptions{Address: ":7947", Peers: []string{"spoke-replicas"}}, `--replica-peers "spoke-replicas": want host:port`},
	} {
		err := tc.o.Validate()
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%+v: error %v, want %q", tc.o, err, tc.want)
		}
	}
}

// TestReplicaRingNeedsAKey: the ring is encrypted with the fleet's gossip key; without one the
// spoke refuses to start unless plaintext is asked for by name.
func TestReplicaRingNeedsAKey(t *testing.T) {
	o := staticOptions(t)
	o.Affinity.Address = "127.0.0.1:0"
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	s, err := build(cfg)
	s.close()
	if err == nil || !strings.Contains(err.Error(), "--replica-address needs --gossip-key-file") {
		t.Fatalf("build: %v", err)
	}
}

// TestSpokeReplicasShareAffinity: two spokes of one cluster on a replica ring (encrypted with a
// gossip key file): a prefix one replica's EPP records for an endpoint of the pool reaches the
// other's index; one for an endpoint outside the pool does not.
func TestSpokeReplicasShareAffinity(t *testing.T) {
	before := goleak.IgnoreCurrent()
	defer testkit.Eventually(t, 10*time.Second, "the replicas' goroutines end", func() error { return goleak.Find(before) })
	keyFile := filepath.Join(t.TempDir(), "gossip.key")
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	portA, portB := freeRingPort(t), freeRingPort(t)
	var replicas []*spoke
	for _, ring := range []struct{ addr, peer string }{{portA, portB}, {portB, portA}} {
		o := staticOptions(t)
		o.Gossip.KeyFile = keyFile
		o.Affinity.Address, o.Affinity.Peers = ring.addr, []string{ring.peer}
		s, stop := runSpoke(t, o)
		defer stop()
		replicas = append(replicas, s)
	}
	// A pick made before a replica counts the other in its ring is told to nobody (and reaches
	// the other only by a later join's snapshot): wait until each counts both.
	testkit.Eventually(t, 10*time.Second, "each replica counts both in its ring", func() error {
		for i, s := range replicas {
			if n := gauge(s.reg, "spillway_epp_affinity_replicas"); n != 2 {
				return fmt.Errorf("replica %d counts %v", i, n)
			}
		}
		return nil
	})
	a, b := replicas[0].primary.picker.Scheduler().Prefix(), replicas[1].primary.picker.Scheduler().Prefix()
	const served, outside = "127.0.0.1:8000", "10.9.9.9:8000"
	prompt := strings.Repeat("a shared system prompt, ", 20)
	hashes := a.Hashes(nil, "m", prompt)
	testkit.Eventually(t, 10*time.Second, "replica B holds the prefix replica A recorded", func() error {
		a.Add(outside, hashes) // sent until the ring has formed: a pick before that is not
		a.Add(served, hashes)
		if n := b.Blocks(served); n != len(hashes) {
			return fmt.Errorf("B holds %d of %d blocks", n, len(hashes))
		}
		return nil
	})
	if n := b.Blocks(outside); n != 0 {
		t.Errorf("B holds %d blocks of an endpoint outside its pools", n)
	}
}

// runSpoke builds and runs a spoke of o; stop stops it and checks that it ended cleanly.
func runSpoke(t *testing.T, o *Options) (*spoke, func()) {
	t.Helper()
	cfg, err := o.Config()
	if err != nil {
		t.Fatal(err)
	}
	s, err := build(cfg)
	if err != nil {
		s.close()
		t.Fatal(err)
	}
	ls, err := s.listen()
	if err != nil {
		s.close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.run(ctx, ls) }()
	return s, func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("spoke: %v", err)
		}
		s.close()
	}
}

// freeRingPort returns a loopback host:port free for both TCP and UDP (memberlist binds both).
func freeRingPort(t *testing.T) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr
		}
	}
	t.Fatal("no port free for TCP and UDP")
	return ""
}

// gauge reads a gauge without labels from reg, or -1 while it is not registered.
func gauge(reg prometheus.Gatherer, name string) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return -1
	}
	for _, mf := range mfs {
		if mf.GetName() == name && len(mf.GetMetric()) == 1 {
			return mf.GetMetric()[0].GetGauge().GetValue()
		}
	}
	return -1
}
