package hubclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/spillway-io/spillway/e2e/testkit"
	hubetcd "github.com/spillway-io/spillway/hub/etcd"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/server"
	"github.com/spillway-io/spillway/hub/view"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// replicaSet is real hub replicas (registry, fleet view and gRPC services of hub/server)
// sharing one embedded etcd, each serving the spokes' port on its own loopback address with a
// certificate for 127.0.0.1. It records the export deltas each replica receives.
type replicaSet struct {
	t        *testing.T
	ca       *tlsconfig.CA
	store    *registry.Store
	replicas []*replica

	mu     sync.Mutex
	deltas []replicaDelta
}

type replica struct {
	addr string
	stop func()
}

type replicaDelta struct {
	replica int
	delta   *pb.ExportDelta
}

func startReplicas(t *testing.T, n int, ttl time.Duration) *replicaSet {
	t.Helper()
	ca, err := tlsconfig.NewCA("replicas CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	e, err := hubetcd.StartEmbedded(ctx, hubetcd.EmbeddedOptions{Dir: t.TempDir(), ListenAddress: "127.0.0.1:0"})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	cli, err := e.Client()
	if err != nil {
		cancel()
		e.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); cli.Close(); e.Close() })
	rs := &replicaSet{t: t, ca: ca, store: registry.New(cli, registry.Options{LeaseTTL: ttl})}
	// The fleet's first hop key, which the leading replica creates: these replicas elect none.
	if _, err := rs.store.EnsureHopKeys(ctx); err != nil {
		t.Fatal(err)
	}
	certPEM, keyPEM, err := ca.Issue(tlsconfig.Identity{TrustDomain: trustDomain, Kind: tlsconfig.KindHub, Name: "hub"},
		nil, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tlsconfig.NewStaticKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	clientCAs, err := tlsconfig.NewStaticCAPool(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	for i := range n {
		rs.replicas = append(rs.replicas, rs.start(i, cli, ttl, tlsconfig.ServerConfig(kp, clientCAs, false)))
	}
	return rs
}

func (rs *replicaSet) start(i int, cli *clientv3.Client, ttl time.Duration, tlsCfg *tls.Config) *replica {
	t := rs.t
	t.Helper()
	store := registry.New(cli, registry.Options{LeaseTTL: ttl})
	model := view.New()
	srv := server.New(store, model, server.Options{
		HubID: fmt.Sprint("hub-", i), MinReportInterval: 50 * time.Millisecond, CapacityHeartbeat: time.Second,
		ViewInterval: 20 * time.Millisecond, Registerer: prometheus.NewRegistry(), TrustDomain: trustDomain, CA: rs.ca,
	})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = model.Follow(ctx, store, slog.New(slog.DiscardHandler)) }()
	go func() { defer wg.Done(); _ = srv.Run(ctx) }()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	opts := append(srv.SpokeServerOptions(), grpc.Creds(credentials.NewTLS(tlsCfg)), grpc.ChainStreamInterceptor(rs.record(i)))
	gs := grpc.NewServer(opts...)
	srv.RegisterSpokeServices(gs)
	wg.Add(1)
	go func() { defer wg.Done(); _ = gs.Serve(l) }()
	var once sync.Once
	r := &replica{addr: l.Addr().String()}
	r.stop = func() { once.Do(func() { gs.Stop(); cancel(); wg.Wait() }) }
	t.Cleanup(r.stop)
	testkit.Eventually(t, 10*time.Second, "the replica is ready", srv.Ready)
	return r
}

// record records the export deltas replica i receives.
func (rs *replicaSet) record(i int) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		return handler(srv, &recordingStream{ServerStream: ss, rs: rs, replica: i})
	}
}

type recordingStream struct {
	grpc.ServerStream
	rs      *replicaSet
	replica int
}

func (s *recordingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if req, ok := m.(*pb.SyncRequest); ok && err == nil && req.GetExports() != nil {
		s.rs.mu.Lock()
		s.rs.deltas = append(s.rs.deltas, replicaDelta{replica: s.replica, delta: req.GetExports()})
		s.rs.mu.Unlock()
	}
	return err
}

func (rs *replicaSet) received() []replicaDelta {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return slices.Clone(rs.deltas)
}

// client returns a client of cluster id given every replica's address.
func (rs *replicaSet) client(t *testing.T, id string) *Client {
	t.Helper()
	certPEM, keyPEM, err := rs.ca.Issue(tlsconfig.Identity{TrustDomain: trustDomain, Kind: tlsconfig.KindCluster, Name: id}, nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tlsconfig.NewStaticKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsconfig.NewStaticCAPool(rs.ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	var addrs []string
	for _, r := range rs.replicas {
		addrs = append(addrs, r.addr)
	}
	return New(Options{
		Cluster: fleet.ClusterInfo{ID: id, Region: "r"}, HubAddresses: addrs,
		// No server name: each replica is verified for the address dialed (127.0.0.1).
		TLSFor:     func(name string) *tls.Config { return tlsconfig.ClientConfig(kp, pool, name) },
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(testWriter{t}, nil)),
	})
}

// exportsOfCluster returns the pools the registry holds as id's exports.
func (rs *replicaSet) exportsOfCluster(id string) (map[fleet.PoolRef]bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := rs.store.Load(ctx)
	if err != nil {
		return nil, err
	}
	out := map[fleet.PoolRef]bool{}
	for p := range st.Exports[id] {
		out[p] = true
	}
	return out, nil
}

func (rs *replicaSet) index(addr string) int {
	return slices.IndexFunc(rs.replicas, func(r *replica) bool { return r.addr == addr })
}

// A replica dies: the client continues on the other one, which resumes its exports from the
// acknowledged sequence number (the session lease is in the shared etcd): the registry keeps
// every export, and no replace_all is sent.
func TestFailoverToAnotherReplicaKeepsTheExports(t *testing.T) {
	rs := startReplicas(t, 2, 10*time.Second)
	c := rs.client(t, "east")
	var all []fleet.PoolRef
	for i := range 50 {
		all = append(all, poolN(i))
	}
	c.SetExports(exportsOf(all...))
	run(t, c)
	want := pools(all...)
	stored := func(what string, want map[fleet.PoolRef]bool) {
		t.Helper()
		testkit.Eventually(t, 10*time.Second, what, func() error {
			got, err := rs.exportsOfCluster("east")
			if err != nil {
				return err
			}
			if len(got) != len(want) {
				return fmt.Errorf("the registry holds %d exports of east, want %d", len(got), len(want))
			}
			return nil
		})
	}
	stored("the 50 exports stored", want)
	first := rs.index(c.HubAddress())
	if first < 0 {
		t.Fatalf("HubAddress() = %q, not a replica's", c.HubAddress())
	}
	before := len(rs.received())

	rs.replicas[first].stop()
	testkit.Eventually(t, 10*time.Second, "a session on the other replica", testkit.True(func() bool {
		return c.Connected() && rs.index(c.HubAddress()) == 1-first
	}))
	// One more pool, sent to the new replica as a delta after the acknowledged ones.
	all = append(all, poolN(50))
	c.SetExports(exportsOf(all...))
	stored("51 exports after the failover", pools(all...))
	got, err := rs.exportsOfCluster("east")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range all {
		if !got[p] {
			t.Errorf("export %s lost in the failover", p)
		}
	}
	for _, d := range rs.received()[before:] {
		if d.replica != 1-first {
			t.Errorf("a delta reached replica %d after it stopped", d.replica)
		}
		if d.delta.GetReplaceAll() {
			t.Errorf("the client resent its whole export set (replace_all, %d pools) after the failover; want a resume from the acknowledged seq", len(d.delta.GetUpserts()))
		}
	}
}

// Clients given the same list spread over the replicas.
func TestClientsSpreadOverReplicas(t *testing.T) {
	a := startFakeHub(t)
	b := startFakeHubWith(t, a.ca)
	seen := map[string]int{}
	for i := range 16 {
		c := a.client(t, fmt.Sprint("c", i), fmt.Sprint("c", i))
		c.opts.HubAddresses = []string{a.addr, b.addr}
		c.opts.TLSServerName = ""
		run(t, c)
		testkit.Eventually(t, 10*time.Second, "a session", testkit.True(c.Connected))
		seen[c.HubAddress()]++
	}
	if len(seen) != 2 {
		t.Errorf("16 clients with two addresses used %v: want both replicas", seen)
	}
}

// testWriter writes a client's log to the test's.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// On real replicas: an observer receives the view and leaves no trace in the registry (no
// registration, no session, no export); switched to a full session, it registers and its
// exports are stored, and its view is the same.
func TestObserverOnRealReplicas(t *testing.T) {
	rs := startReplicas(t, 2, 10*time.Second)
	chat, code := poolN(1), poolN(2)
	west := rs.client(t, "west")
	west.SetExports(exportsOf(chat))
	run(t, west)
	east := rs.client(t, "east")
	east.SetObserver(true)
	east.SetExports(exportsOf(code))
	east.SetCapacity(capacityOf(code))
	run(t, east)
	hasChat := testkit.True(func() bool {
		imps := east.View().Imports()
		return len(imps) == 1 && imps[0].Pool == chat
	})
	testkit.Eventually(t, 10*time.Second, "west's export in the observer's view", hasChat)
	ctx := t.Context()
	if _, ok, err := rs.store.GetSession(ctx, "east"); err != nil || ok {
		t.Fatalf("the observer has a session in the registry (%v, %v)", ok, err)
	}
	if _, err := rs.store.GetCluster(ctx, "east"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("the observer registered its cluster: %v", err)
	}
	if got, err := rs.exportsOfCluster("east"); err != nil || len(got) != 0 {
		t.Fatalf("the observer's exports are stored: %v, %v", got, err)
	}
	if !east.Connected() {
		t.Fatal("the observer session ended: it sent the hub a message it refuses")
	}

	east.SetObserver(false)
	testkit.Eventually(t, 10*time.Second, "east's export stored by its full session", func() error {
		got, err := rs.exportsOfCluster("east")
		if err != nil {
			return err
		}
		if !got[code] {
			return fmt.Errorf("east exports %v", got)
		}
		return nil
	})
	// east's own export joins the view; west's stays.
	if !slices.ContainsFunc(east.View().Imports(), func(i fleet.Import) bool { return i.Pool == chat }) {
		t.Errorf("the view lost west's export in the switch: %v", east.View().Imports())
	}
}

// A spoke whose clock is 10 s off the hub's, either way, judges a real replica's capacity
// reports as fresh as they are: their age crosses hosts, never a timestamp.
func TestCapacityAgeAcrossSkewedClocks(t *testing.T) {
	rs := startReplicas(t, 1, 10*time.Second)
	chat := poolN(1)
	west := rs.client(t, "west")
	west.SetExports(exportsOf(chat))
	west.SetCapacity(capacityOf(chat))
	run(t, west)
	for _, skew := range []time.Duration{10 * time.Second, -10 * time.Second} {
		east := rs.client(t, fmt.Sprint("east", map[bool]string{true: "ahead", false: "behind"}[skew > 0]))
		east.view.now = func() time.Time { return time.Now().Add(skew) }
		east.SetInterest([]fleet.PoolRef{chat})
		run(t, east)
		testkit.Eventually(t, 10*time.Second, "west's capacity in the view", testkit.True(func() bool { return len(east.View().Capacity(chat)) == 1 }))
		rc := east.View().Capacity(chat)[0]
		// West reports at least every heartbeat (1 s): a fresh report is younger than that and
		// a little delivery time, on the spoke's own clock.
		if age := east.view.now().Sub(rc.ReceivedAt); age < 0 || age > 2*time.Second {
			t.Errorf("clock %s off the hub's: west's report is %s old on the spoke's clock, want 0 to 2 s", skew, age)
		}
	}
}
