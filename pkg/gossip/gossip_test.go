package gossip

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	// memberlist binds UDP and TCP on the same port: find one free for both.
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
	t.Fatal("no free port")
	return ""
}

// TestDeadMemberIsKnownQuickly: four members; one is killed without leaving (as a crash); the
// others see it dead within the 3 s target, and a member with another key never joins.
func TestDeadMemberIsKnownQuickly(t *testing.T) {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	seed := freeAddr(t)
	var members []*Member
	cancels := map[string]context.CancelFunc{}
	var wg sync.WaitGroup
	for i := range 4 {
		addr := seed
		if i > 0 {
			addr = freeAddr(t)
		}
		m, err := Start(Options{Name: fmt.Sprintf("cluster-%d", i), BindAddress: addr, Join: []string{seed}, Key: key})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		cancels[m.opts.Name] = cancel
		wg.Add(1)
		go func() { defer wg.Done(); _ = m.Run(ctx) }()
		members = append(members, m)
	}
	defer func() {
		for _, c := range cancels {
			c()
		}
		wg.Wait()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for _, m := range members {
		for len(m.Alive()) != 4 {
			if time.Now().After(deadline) {
				t.Fatalf("%s sees %v", m.opts.Name, m.Alive())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	other := make([]byte, 32)
	_, _ = rand.Read(other)
	stranger, err := Start(Options{Name: "stranger", BindAddress: freeAddr(t), Key: other})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stranger.ml.Join([]string{seed}); err == nil {
		t.Error("a member with another key joined")
	}
	_ = stranger.ml.Shutdown()

	victim := members[3]
	killed := time.Now()
	victim.Crash()
	for _, m := range members[:3] {
		for !m.Dead("cluster-3") {
			if time.Since(killed) > 3*time.Second {
				t.Fatalf("%s did not see cluster-3 dead within 3s (alive: %v)", m.opts.Name, m.Alive())
			}
			time.Sleep(20 * time.Millisecond)
		}
		if slices.Contains(m.Alive(), "cluster-3") {
			t.Fatalf("%s still lists cluster-3", m.opts.Name)
		}
	}
	t.Logf("every member saw the crash within %.2fs", time.Since(killed).Seconds())
	if members[0].Dead("never-seen") {
		t.Fatal("a member never seen is not dead")
	}
}

func TestReadKeyRefusesBadKeys(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{"short": "YWJj", "notbase64": "!!!"} {
		p := dir + "/" + name
		if err := writeFile(p, content); err != nil {
			t.Fatal(err)
		}
		if _, err := ReadKey(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Start(Options{Name: "x", BindAddress: "127.0.0.1:0"}); err == nil {
		t.Error("Start without a key must fail: gossip is never plaintext")
	}
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o600) }
