package affinity

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/epp/prefix"
)

// replica is one Replicator on loopback with its own index, as one spoke process.
type replica struct {
	r   *Replicator
	ix  *prefix.Indexer
	reg *promtest.Registry
}

// ring starts replicas and stops them at the end of the test.
type ring struct {
	t      *testing.T
	key    []byte
	wg     sync.WaitGroup
	cancel []context.CancelFunc
}

func newRing(t *testing.T) *ring {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	g := &ring{t: t, key: key}
	t.Cleanup(func() {
		for _, c := range g.cancel {
			c()
		}
		g.wg.Wait()
	})
	return g
}

// start starts a replica named name that joins peers; edit changes its options.
func (g *ring) start(name string, peers []string, edit func(*Options)) *replica {
	g.t.Helper()
	ix := prefix.New(prefix.Options{BlockSize: 4})
	reg := promtest.NewRegistry()
	o := Options{Cluster: "east", Name: name, BindAddress: "127.0.0.1:0", Peers: peers, Key: g.key, Index: ix,
		Registerer: reg, RejoinInterval: 200 * time.Millisecond}
	if edit != nil {
		edit(&o)
	}
	r, err := New(o)
	if err != nil {
		g.t.Fatal(err)
	}
	ix.SetObserver(r)
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = append(g.cancel, cancel)
	g.wg.Go(func() { _ = r.Run(ctx) })
	return &replica{r: r, ix: ix, reg: reg}
}

// seeAll waits until every replica sees exactly the others.
func seeAll(t *testing.T, rs ...*replica) {
	t.Helper()
	var want []string
	for _, x := range rs {
		want = append(want, x.r.opts.Name)
	}
	slices.Sort(want)
	testkit.Eventually(t, 10*time.Second, "every replica sees the ring", func() error {
		for _, x := range rs {
			if got := x.r.Replicas(); !slices.Equal(got, want) {
				return fmt.Errorf("%s sees %v, want %v", x.r.opts.Name, got, want)
			}
			if g := promtest.Value(t, x.reg, "spillway_epp_affinity_replicas"); int(g) != len(want) {
				return fmt.Errorf("%s: replicas gauge %v", x.r.opts.Name, g)
			}
		}
		return nil
	})
}

// matched is how many blocks of the prompt the replica's index finds on endpoint.
func (x *replica) matched(endpoint, prompt string) int {
	n := 0
	x.ix.Match(x.ix.Hashes(nil, "m", prompt), func(e string, blocks int) {
		if e == endpoint {
			n = blocks
		}
	})
	return n
}

// pick records a local pick of endpoint for prompt, as the scheduler does.
func (x *replica) pick(endpoint, prompt string) { x.ix.Add(endpoint, x.ix.Hashes(nil, "m", prompt)) }

// holds waits until every replica finds every (endpoint, prompt) pair, whole.
func holds(t *testing.T, picks map[string]string, rs ...*replica) {
	t.Helper()
	testkit.Eventually(t, 5*time.Second, "every replica holds every pick", func() error {
		for _, x := range rs {
			for prompt, ep := range picks {
				if n, want := x.matched(ep, prompt), len(prompt)/4; n != want {
					return fmt.Errorf("%s matches %d of %d blocks of %q on %s", x.r.opts.Name, n, want, prompt, ep)
				}
			}
		}
		return nil
	})
}

// TestReplicasConverge: three replicas, each picking for its own prompts; every replica's
// index ends up with every pick, and a replica sends only its own picks (what it received is
// not sent on).
func TestReplicasConverge(t *testing.T) {
	settled(t)
	g := newRing(t)
	a := g.start("a", nil, nil)
	b := g.start("b", []string{a.r.Address()}, nil)
	c := g.start("c", []string{a.r.Address()}, nil)
	seeAll(t, a, b, c)

	picks := map[string]string{}
	for i, x := range []*replica{a, b, c} {
		for j := range 20 {
			// Distinct from the first block: every block is new, and told once.
			prompt := fmt.Sprintf("%02d%s-prompt-%s", j, x.r.opts.Name, strings.Repeat("x", 4*(j%5)))
			ep := fmt.Sprintf("10.0.0.%d:8000", (i+j)%4+1)
			x.pick(ep, prompt)
			picks[prompt] = ep
		}
	}
	holds(t, picks, a, b, c)
	own, total := map[string]int{}, 0
	for prompt := range picks {
		name, _, _ := strings.Cut(prompt[2:], "-")
		own[name] += len(prompt) / 4
		total += len(prompt) / 4
	}
	testkit.Eventually(t, 5*time.Second, "each replica sent its own picks and received the others'", func() error {
		for _, x := range []*replica{a, b, c} {
			name := x.r.opts.Name
			if sent := promtest.Value(t, x.reg, "spillway_epp_affinity_sent_blocks_total"); int(sent) != own[name] {
				return fmt.Errorf("%s sent %v blocks, its own picks have %d", name, sent, own[name])
			}
			if got := promtest.Value(t, x.reg, "spillway_epp_affinity_received_blocks_total"); int(got) != total-own[name] {
				return fmt.Errorf("%s received %v blocks, the others' picks have %d", name, got, total-own[name])
			}
		}
		return nil
	})
}

// TestLateReplica: a replica that joins after picks were made receives the index snapshot from
// the replica it contacted (unless snapshots are off), and then every new pick.
func TestLateReplica(t *testing.T) {
	for _, snapshot := range []bool{true, false} {
		t.Run(fmt.Sprintf("snapshot=%v", snapshot), func(t *testing.T) {
			settled(t)
			g := newRing(t)
			edit := func(o *Options) {
				if !snapshot {
					o.SnapshotBlocks = -1
				}
			}
			a := g.start("a", nil, edit)
			b := g.start("b", []string{a.r.Address()}, edit)
			seeAll(t, a, b)
			a.pick("10.0.0.1:8000", "old-prompt-aaaa")
			holds(t, map[string]string{"old-prompt-aaaa": "10.0.0.1:8000"}, a, b)

			late := g.start("late", []string{a.r.Address()}, edit)
			seeAll(t, a, b, late)
			b.pick("10.0.0.2:8000", "new-prompt-bbbb")
			holds(t, map[string]string{"new-prompt-bbbb": "10.0.0.2:8000"}, a, b, late)
			if snapshot {
				holds(t, map[string]string{"old-prompt-aaaa": "10.0.0.1:8000"}, late)
				if v := promtest.Value(t, late.reg, "spillway_epp_affinity_snapshot_blocks_total"); v != 3 {
					t.Errorf("snapshot blocks %v, want the 3 of the old prompt", v)
				}
			} else if n := late.matched("10.0.0.1:8000", "old-prompt-aaaa"); n != 0 {
				t.Errorf("with snapshots off the late replica holds %d blocks of an old pick", n)
			}
		})
	}
}

// TestDeadReplicaIsDropped: a replica killed without leaving leaves the others' ring within
// seconds and is no longer sent to; the survivors keep sharing.
func TestDeadReplicaIsDropped(t *testing.T) {
	settled(t)
	g := newRing(t)
	a := g.start("a", nil, nil)
	b := g.start("b", []string{a.r.Address()}, nil)
	c := g.start("c", []string{a.r.Address()}, nil)
	seeAll(t, a, b, c)
	c.r.crash()
	testkit.Eventually(t, 5*time.Second, "the dead replica dropped", func() error {
		for _, x := range []*replica{a, b} {
			if got := x.r.Replicas(); !slices.Equal(got, []string{"a", "b"}) {
				return fmt.Errorf("%s sees %v", x.r.opts.Name, got)
			}
			if peers := x.r.peerAddresses(nil); len(peers) != 1 {
				return fmt.Errorf("%s sends to %v", x.r.opts.Name, peers)
			}
			if v := promtest.Value(t, x.reg, "spillway_epp_affinity_replicas"); v != 2 {
				return fmt.Errorf("%s: replicas gauge %v", x.r.opts.Name, v)
			}
		}
		return nil
	})
	a.pick("10.0.0.1:8000", "after-the-death")
	holds(t, map[string]string{"after-the-death": "10.0.0.1:8000"}, b)
}

// TestStrangersCannotJoin: a replica of another cluster (another label) or with another key is
// not let into the ring.
func TestStrangersCannotJoin(t *testing.T) {
	settled(t)
	g := newRing(t)
	a := g.start("a", nil, nil)
	other := make([]byte, 32)
	_, _ = rand.Read(other)
	for name, edit := range map[string]func(*Options){
		"other-cluster": func(o *Options) { o.Cluster = "west" },
		"other-key":     func(o *Options) { o.Key = other },
	} {
		x := g.start(name, nil, edit)
		if _, err := x.r.ml.Join([]string{a.r.Address()}); err == nil {
			t.Errorf("%s joined", name)
		}
	}
	if got := a.r.Replicas(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("ring %v", got)
	}
}

// TestReceivedInsertsAreFiltered: inserts for endpoints the replica does not serve are dropped
// and counted; a malformed message changes nothing and is counted.
func TestReceivedInsertsAreFiltered(t *testing.T) {
	settled(t)
	g := newRing(t)
	a := g.start("a", nil, nil)
	b := g.start("b", []string{a.r.Address()}, func(o *Options) {
		o.Accept = func(ep string) bool { return ep == "10.0.0.1:8000" }
	})
	seeAll(t, a, b)
	a.pick("10.0.0.2:8000", "unknown-endpoint")
	a.pick("10.0.0.1:8000", "known-endpoint")
	holds(t, map[string]string{"known-endpoint": "10.0.0.1:8000"}, b)
	if b.ix.Blocks("10.0.0.2:8000") != 0 {
		t.Error("an insert for an endpoint b does not serve was applied")
	}
	if v := promtest.Value(t, b.reg, "spillway_epp_affinity_dropped_blocks_total", reasonUnknownEndpoint); v != 4 {
		t.Errorf("dropped unknown_endpoint %v, want 4", v)
	}
	peers := a.r.peerAddresses(nil)
	if err := a.r.ml.SendToAddress(peers[0], []byte{wireVersion, 5, 'x'}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the malformed message counted", func() error {
		if v := promtest.Value(t, b.reg, "spillway_epp_affinity_malformed_messages_total"); v != 1 {
			return fmt.Errorf("malformed %v", v)
		}
		return nil
	})
}

func TestValidateNamesEveryProblem(t *testing.T) {
	o := Options{BindAddress: "nowhere", AdvertiseAddress: "x", Peers: []string{"a:1", "b"}}
	err := o.Validate()
	for _, want := range []string{"cluster ID", "an index", `bind address "nowhere"`, `advertise address "x"`, `peer "b"`, "encryption key"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %q", err, want)
		}
	}
	if _, err := New(o); err == nil {
		t.Error("New accepted invalid options")
	}
	ok := Options{Cluster: "east", BindAddress: "127.0.0.1:0", Index: prefix.New(prefix.Options{}), Insecure: true}
	if err := ok.Validate(); err != nil {
		t.Errorf("plaintext by Insecure: %v", err)
	}
}

func TestMetricNames(t *testing.T) {
	reg := promtest.NewRegistry()
	newMetrics(reg)
	promtest.CheckGolden(t, reg, "epp", "testdata/metrics.golden")
}

// BenchmarkAdded: queueing a pick's 64 hashes for the other replicas, on the request's path,
// allocates nothing, also when the queue overflows.
func BenchmarkAdded(b *testing.B) {
	o := Options{}
	o.complete()
	r := &Replicator{opts: o, metrics: newMetrics(nil), queue: newQueue(o.QueueBlocks), wake: make(chan struct{}, 1)}
	r.members.Store(2)
	hashes := make([]uint64, 64)
	b.ReportAllocs()
	for b.Loop() {
		r.Added("10.0.0.1:8000", hashes)
	}
}

// TestPeersByNameAreJoinedWhenTheyAppear: a replica given its peer by DNS name (as a headless
// Service's) before the peer runs joins it once it does: the name is resolved again and the
// address not in the ring joined.
func TestPeersByNameAreJoinedWhenTheyAppear(t *testing.T) {
	settled(t)
	g := newRing(t)
	port := freePort(t)
	b := g.start("b", []string{"localhost:" + port}, nil)
	if got := b.r.Replicas(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("ring before the peer runs: %v", got)
	}
	a := g.start("a", nil, func(o *Options) { o.BindAddress = "127.0.0.1:" + port })
	seeAll(t, a, b)
}

// freePort returns a loopback port free for both TCP and UDP (memberlist binds both).
func freePort(t *testing.T) string {
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
			_, port, _ := net.SplitHostPort(addr)
			return port
		}
	}
	t.Fatal("no port free for TCP and UDP")
	return ""
}
