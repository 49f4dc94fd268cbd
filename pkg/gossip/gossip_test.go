package gossip

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/e2e/testkit"
)

// TestDeadMemberIsKnownQuickly: four members; one is killed without leaving (as a crash). The
// member that pings it finds it unreachable within 1.5 s, every other member sees it dead
// within 25 s (a probe round, the 12 s suspicion and its gossip), and a member with another key never
// joins.
func TestDeadMemberIsKnownQuickly(t *testing.T) {
	defer settled(t)()
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	// Every member binds port 0: memberlist picks a port free for both UDP and TCP and
	// advertises it; the others join the first member at the address it reports.
	var seed string
	var members []*Member
	cancels := map[string]context.CancelFunc{}
	var wg sync.WaitGroup
	reg := promtest.NewRegistry()
	for i := range 4 {
		var join []string
		if i > 0 {
			join = []string{seed}
		}
		o := Options{Name: fmt.Sprintf("cluster-%d", i), BindAddress: "127.0.0.1:0", Join: join, Key: key}
		if i == 0 {
			o.Registerer = reg
		}
		m, err := Start(o)
		if err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			seed = m.ml.LocalNode().Address()
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
	testkit.Eventually(t, 10*time.Second, "every member sees the four", func() error {
		for _, m := range members {
			if got := m.Alive(); len(got) != 4 {
				return fmt.Errorf("%s sees %v", m.opts.Name, got)
			}
		}
		return nil
	})

	other := make([]byte, 32)
	_, _ = rand.Read(other)
	stranger, err := Start(Options{Name: "stranger", BindAddress: "127.0.0.1:0", Key: other})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stranger.ml.Join([]string{seed}); err == nil {
		t.Error("a member with another key joined")
	}
	_ = stranger.ml.Shutdown()

	// cluster-0 pings cluster-3 until it has heard back.
	testkit.Eventually(t, 5*time.Second, "cluster-0 hears cluster-3's answers", func() error {
		r := members[0].reach
		r.mu.RLock()
		answered := r.targets["cluster-3"] != nil && r.targets["cluster-3"].answered.Load() != 0
		r.mu.RUnlock()
		if members[0].Unreachable("cluster-3") || !answered {
			return errors.New("no answer yet")
		}
		return nil
	})
	victim := members[3]
	killed := time.Now()
	victim.Crash()
	testkit.Eventually(t, 1500*time.Millisecond, "cluster-3 unreachable from cluster-0", func() error {
		if !members[0].Unreachable("cluster-3") {
			return errors.New("still reachable")
		}
		return nil
	})
	t.Logf("cluster-0 found cluster-3 unreachable %.2fs after the crash", time.Since(killed).Seconds())
	if n := promtest.Value(t, reg, "spillway_gossip_unreachable_members"); n != 1 {
		t.Errorf("spillway_gossip_unreachable_members %v, want 1", n)
	}
	testkit.Eventually(t, 25*time.Second, "the crash of cluster-3 known to every other member", func() error {
		for _, m := range members[:3] {
			if !m.Dead("cluster-3") || slices.Contains(m.Alive(), "cluster-3") {
				return fmt.Errorf("%s does not see cluster-3 dead (alive: %v)", m.opts.Name, m.Alive())
			}
		}
		return nil
	})
	t.Logf("every member saw the crash within %.2fs", time.Since(killed).Seconds())
	if n := promtest.Value(t, reg, "spillway_gossip_members_gone_total"); n != 1 {
		t.Errorf("spillway_gossip_members_gone_total %v, want 1", n)
	}
	if n := promtest.Value(t, reg, "spillway_gossip_members"); n != 3 {
		t.Errorf("spillway_gossip_members %v, want 3", n)
	}
	if members[0].Dead("never-seen") {
		t.Fatal("a member never seen is not dead")
	}
}

func TestReadKeyRefusesBadKeys(t *testing.T) {
	dir := t.TempDir()
	good := base64.StdEncoding.EncodeToString(make([]byte, 32))
	for name, content := range map[string]string{"short": "YWJj", "notbase64": "!!!", "empty": "\n\n", "bad second line": good + "\nYWJj\n"} {
		p := dir + "/" + name
		if err := writeFile(p, content); err != nil {
			t.Fatal(err)
		}
		if _, _, err := ReadKey(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := Start(Options{Name: "x", BindAddress: "127.0.0.1:0"}); err == nil {
		t.Error("Start without a key must fail: gossip is never plaintext")
	}
}

func writeFile(p, s string) error { return os.WriteFile(p, []byte(s), 0o600) }

// TestKeyRollout: a key file of two lines encrypts with the first and reads both. During a
// rollout, a member on the old key and one with the new key as a second line see each other
// (stage 1); once every member has the new key, one that encrypts with it (the old as a second
// line) and one still encrypting with the old see each other (stage 2). A member with the new key
// alone cannot join one with the old key alone.
func TestKeyRollout(t *testing.T) {
	defer settled(t)()
	oldKey, newKey := make([]byte, 32), make([]byte, 16)
	_, _ = rand.Read(oldKey)
	_, _ = rand.Read(newKey)
	dir := t.TempDir()
	file := func(name string, keys ...[]byte) string {
		var lines []string
		for _, k := range keys {
			lines = append(lines, base64.StdEncoding.EncodeToString(k))
		}
		p := filepath.Join(dir, name)
		if err := writeFile(p, strings.Join(lines, "\n")+"\n"); err != nil {
			t.Fatal(err)
		}
		return p
	}
	key, old, err := ReadKey(file("both", newKey, oldKey))
	if err != nil || !slices.Equal(key, newKey) || len(old) != 1 || !slices.Equal(old[0], oldKey) {
		t.Fatalf("ReadKey: key %x, old %x, %v", key, old, err)
	}

	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	defer func() { cancel(); wg.Wait() }()
	start := func(name, keyFile string, join ...string) *Member {
		m, err := (&Flags{Address: "127.0.0.1:0", KeyFile: keyFile, Join: join}).Start(name, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = m.Run(ctx) }()
		return m
	}
	see := func(a, b *Member) func() error {
		return func() error {
			for _, m := range []*Member{a, b} {
				if got := m.Alive(); !slices.Contains(got, a.opts.Name) || !slices.Contains(got, b.opts.Name) {
					return fmt.Errorf("%s sees %v", m.opts.Name, got)
				}
			}
			return nil
		}
	}
	onOld := start("on-old", file("old", oldKey))
	seed := onOld.ml.LocalNode().Address()
	rolling := start("rolling", file("old-then-new", oldKey, newKey), seed)
	testkit.Eventually(t, 10*time.Second, "stage 1: old and old+new see each other", see(onOld, rolling))
	onOld.Close()
	onNew := start("on-new", file("new-then-old", newKey, oldKey), rolling.ml.LocalNode().Address())
	testkit.Eventually(t, 10*time.Second, "stage 2: old+new and new+old see each other", see(rolling, onNew))

	newOnly, err := Start(Options{Name: "new-only", BindAddress: "127.0.0.1:0", Key: newKey})
	if err != nil {
		t.Fatal(err)
	}
	defer newOnly.ml.Shutdown()
	stranger := start("old-only", file("old-only", oldKey))
	if _, err := newOnly.ml.Join([]string{stranger.ml.LocalNode().Address()}); err == nil {
		t.Error("a member with the new key alone joined one with the old key alone")
	}
}

// TestMetricNames covers every metric a member registers.
func TestMetricNames(t *testing.T) {
	defer settled(t)()
	reg := promtest.NewRegistry()
	m, err := Start(Options{Name: "metrics", BindAddress: "127.0.0.1:0", Insecure: true, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	promtest.CheckGolden(t, reg, "gossip", "testdata/metrics.golden")
}
