package hubclient

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// These tests look at the client's side of the trust rules with a scripted SyncService over
// mutual TLS: what a real hub would not send (a Welcome for another cluster) and exactly what
// the client sends. The sync protocol itself is tested against a real hub in e2e.

const trustDomain = "spillway.test"

type fakeHub struct {
	pb.UnimplementedSyncServiceServer
	addr string
	ca   *tlsconfig.CA

	mu sync.Mutex
	// welcomeCluster, when set, replaces the cluster the Welcome names (the client certificate's).
	welcomeCluster string
	// hopKeys is sent after each Welcome when not nil; push sends more during a session.
	hopKeys  []fleet.HopKey
	push     chan *pb.SyncResponse
	sessions int
	// interval is the min_report_interval announced; 10 ms when zero.
	interval time.Duration
	// capacity and removed are the pools of every capacity report received, in order; reportsAt
	// when each report arrived.
	capacity, removed []fleet.PoolRef
	reportsAt         []time.Time
	// policy is the export policy the Welcome announces, acked its acked_export_seq.
	policy fleet.ExportPolicy
	acked  uint64
	// deltas are the export deltas received, with the session (from 1) each came on.
	deltas []sessionDelta
	// logger, when set, is the log of the clients made by client.
	logger *slog.Logger
	// certs are the client certificates of the sessions, in order (DER).
	certs [][]byte
	// interests and imports are the Interest and ImportReport messages received, in order, with
	// when each arrived.
	interests []timed[[]fleet.PoolRef]
	imports   []timed[[]fleet.PoolImportStatus]
	// registers counts Register calls; hellos are the Hellos received, in order, and
	// afterObserver counts the messages received after an observer Hello.
	registers     int
	hellos        []*pb.Hello
	afterObserver int
	// kicked is closed by kick, which ends every stream at once; hellosAt is when each Hello
	// arrived.
	kicked   chan struct{}
	hellosAt []time.Time
	// leaseTTL is the lease TTL the Welcome announces; down makes Register answer Unavailable,
	// as a hub that is not back yet, and registersAt is when each Register came.
	leaseTTL    time.Duration
	down        bool
	registersAt []time.Time
	// stall makes that many Register calls, the first ones, wait until their caller gives up,
	// as an answer held up on a lossy link; stalled counts those that ended so.
	stall, stalled int
	// busy makes Sync refuse every Hello with Unavailable and a RetryInfo of busy, as a hub
	// replica opening as many sessions as it allows at once.
	busy time.Duration
	// budgetInterval is the budget_report_interval announced (none when zero); budgetReports
	// are the budget reports received, in order.
	budgetInterval time.Duration
	budgetReports  []*pb.BudgetReport
}

// kick ends every open stream at once, as a replica that dies would.
func (h *fakeHub) kick() {
	h.mu.Lock()
	defer h.mu.Unlock()
	close(h.kicked)
	h.kicked = make(chan struct{})
}

type timed[T any] struct {
	at  time.Time
	msg T
}

type sessionDelta struct {
	session int
	delta   *pb.ExportDelta
}

func startFakeHub(t *testing.T) *fakeHub { return startFakeHubWith(t, nil) }

// fakeHubName is the DNS name in the fake hub's certificate, besides 127.0.0.1.
const fakeHubName = "hubs.spillway.test"

// startFakeHubWith starts a fake hub whose certificate ca issues (a new CA when nil).
func startFakeHubWith(t *testing.T, ca *tlsconfig.CA) *fakeHub {
	t.Helper()
	var err error
	if ca == nil {
		if ca, err = tlsconfig.NewCA("test CA", time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	certPEM, keyPEM, err := ca.Issue(tlsconfig.Identity{TrustDomain: trustDomain, Kind: tlsconfig.KindUser, Name: "hub"},
		[]string{fakeHubName}, []net.IP{net.IPv4(127, 0, 0, 1)}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tlsconfig.NewStaticKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsconfig.NewStaticCAPool(ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &fakeHub{addr: l.Addr().String(), ca: ca, push: make(chan *pb.SyncResponse, 4), kicked: make(chan struct{})}
	gs := grpc.NewServer(grpc.Creds(credentials.NewTLS(tlsconfig.ServerConfig(kp, pool, true))))
	pb.RegisterSyncServiceServer(gs, h)
	done := make(chan struct{})
	go func() { defer close(done); _ = gs.Serve(l) }()
	t.Cleanup(func() { gs.Stop(); <-done })
	return h
}

// keyPair returns a key pair whose certificate names cluster certID, and the hub's CA bundle.
func (h *fakeHub) keyPair(t *testing.T, certID string) (*tlsconfig.KeyPair, *tlsconfig.CAPool) {
	t.Helper()
	certPEM, keyPEM, err := h.ca.Issue(tlsconfig.Identity{TrustDomain: trustDomain, Kind: tlsconfig.KindCluster, Name: certID}, nil, nil, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tlsconfig.NewStaticKeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := tlsconfig.NewStaticCAPool(h.ca.CertPEM())
	if err != nil {
		t.Fatal(err)
	}
	return kp, pool
}

// client returns a client for cluster id whose certificate names certID.
func (h *fakeHub) client(t *testing.T, id, certID string) *Client {
	t.Helper()
	kp, pool := h.keyPair(t, certID)
	log := h.logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return New(Options{
		Cluster: fleet.ClusterInfo{ID: id, Region: "r"}, HubAddress: h.addr,
		TLSFor:     func(name string) *tls.Config { return tlsconfig.ClientConfig(kp, pool, name) },
		MinBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond, Logger: log,
	})
}

func (h *fakeHub) Register(ctx context.Context, req *pb.RegisterRequest) (*pb.RegisterResponse, error) {
	if _, _, ok := tlsconfig.PeerIdentity(ctx); !ok {
		return nil, status.Error(codes.Unauthenticated, "no client certificate")
	}
	h.mu.Lock()
	h.registers++
	h.registersAt = append(h.registersAt, time.Now())
	down, stall := h.down, h.registers <= h.stall
	h.mu.Unlock()
	if stall {
		<-ctx.Done()
		h.mu.Lock()
		h.stalled++
		h.mu.Unlock()
		return nil, ctx.Err()
	}
	if down {
		return nil, status.Error(codes.Unavailable, "the hub is starting")
	}
	return &pb.RegisterResponse{Cluster: &pb.Cluster{Info: req.GetCluster()}}, nil
}

func (h *fakeHub) Sync(stream pb.SyncService_SyncServer) error {
	id, cert, ok := tlsconfig.PeerIdentity(stream.Context())
	if !ok {
		return status.Error(codes.Unauthenticated, "no client certificate")
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	observer := first.GetHello().GetObserver()
	h.mu.Lock()
	h.hellos = append(h.hellos, first.GetHello())
	h.hellosAt = append(h.hellosAt, time.Now())
	if busy := h.busy; busy > 0 {
		h.mu.Unlock()
		st, err := status.New(codes.Unavailable, "busy opening other sessions").WithDetails(&errdetails.RetryInfo{RetryDelay: durationpb.New(busy)})
		if err != nil {
			return err
		}
		return st.Err()
	}
	kicked := h.kicked
	h.sessions++
	h.certs = append(h.certs, cert.Raw)
	interval := h.interval
	if interval == 0 {
		interval = 10 * time.Millisecond
	}
	welcome := &pb.Welcome{HubId: "fake", ClusterId: id.Name, MinReportInterval: durationpb.New(interval),
		CapacityHeartbeat: durationpb.New(time.Hour), AckedExportSeq: h.acked, LeaseTtl: durationpb.New(h.leaseTTL)}
	if h.budgetInterval > 0 {
		welcome.BudgetReportInterval = durationpb.New(h.budgetInterval)
	}
	fleetpb.SetExportPolicy(welcome, h.policy)
	if h.welcomeCluster != "" {
		welcome.ClusterId = h.welcomeCluster
	}
	keys := h.hopKeys
	session := h.sessions
	h.mu.Unlock()
	if err := stream.Send(&pb.SyncResponse{Msg: &pb.SyncResponse_Welcome{Welcome: welcome}}); err != nil {
		return err
	}
	if keys != nil {
		if err := stream.Send(&pb.SyncResponse{Msg: &pb.SyncResponse_HopKeys{HopKeys: fleetpb.HopKeys(keys)}}); err != nil {
			return err
		}
	}
	errc := make(chan error, 1)
	go func() {
		for {
			req, err := stream.Recv()
			if err != nil {
				errc <- err
				return
			}
			if observer {
				h.mu.Lock()
				h.afterObserver++
				h.mu.Unlock()
			}
			if d := req.GetExports(); d != nil {
				h.mu.Lock()
				h.deltas = append(h.deltas, sessionDelta{session: session, delta: d})
				h.mu.Unlock()
			}
			if b := req.GetBudgets(); b != nil {
				h.mu.Lock()
				h.budgetReports = append(h.budgetReports, b)
				h.mu.Unlock()
			}
			if m := req.GetInterest(); m != nil {
				h.mu.Lock()
				h.interests = append(h.interests, timed[[]fleet.PoolRef]{time.Now(), poolsFrom(m.GetCapacityInterest())})
				h.mu.Unlock()
			}
			if m := req.GetImports(); m != nil {
				h.mu.Lock()
				h.imports = append(h.imports, timed[[]fleet.PoolImportStatus]{time.Now(), fleetpb.PoolImportStatusesFrom(m)})
				h.mu.Unlock()
			}
			if c := req.GetCapacity(); c != nil {
				h.mu.Lock()
				h.reportsAt = append(h.reportsAt, time.Now())
				for _, p := range c.GetPools() {
					h.capacity = append(h.capacity, fleetpb.PoolRefFrom(p.GetPool()))
				}
				for _, p := range c.GetRemoved() {
					h.removed = append(h.removed, fleetpb.PoolRefFrom(p))
				}
				h.mu.Unlock()
			}
		}
	}()
	for {
		select {
		case err := <-errc:
			return err
		case <-kicked:
			return status.Error(codes.Unavailable, "every stream ended by the test")
		case m := <-h.push:
			if m == nil {
				return status.Error(codes.Unavailable, "session ended by the test")
			}
			if err := stream.Send(m); err != nil {
				return err
			}
		}
	}
}

func (h *fakeHub) seen() (sessions int, capacity, removed []fleet.PoolRef) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.sessions, slices.Clone(h.capacity), slices.Clone(h.removed)
}

// run runs c until the test ends and returns what Run returned, once it has.
func run(t *testing.T, c *Client) <-chan error {
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	done := make(chan struct{})
	go func() { defer close(done); errc <- c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return errc
}

// TestRegisterIsHedged: a Register whose answer does not come within ConnectTimeout is called
// again on a second connection, and the session starts on the one that answered, long before
// RegisterTimeout; the stalled call is given up.
func TestRegisterIsHedged(t *testing.T) {
	h := startFakeHub(t)
	h.stall = 1
	c := h.client(t, "us-east-1", "us-east-1")
	c.opts.ConnectTimeout, c.opts.RegisterTimeout = 100*time.Millisecond, time.Minute
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() {
		cancel()
		<-done
	}()
	testkit.Eventually(t, 10*time.Second, "a session on the second connection", testkit.True(c.Connected))
	h.mu.Lock()
	registers, sessions := h.registers, h.sessions
	h.mu.Unlock()
	if registers != 2 || sessions != 1 {
		t.Fatalf("%d Register calls, %d sessions: want 2 (the stalled one, then the hedge) and 1", registers, sessions)
	}
	testkit.Eventually(t, 5*time.Second, "the stalled Register given up", testkit.True(func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return h.stalled == 1
	}))
}

func TestRunNeedsTLS(t *testing.T) {
	c := New(Options{Cluster: fleet.ClusterInfo{ID: "east"}, HubAddress: "127.0.0.1:1"})
	if err := c.Run(t.Context()); !errors.Is(err, ErrNoTLS) {
		t.Fatalf("Run() without TLS = %v, want ErrNoTLS", err)
	}
}

func TestWelcomeForAnotherClusterStopsTheClient(t *testing.T) {
	h := startFakeHub(t)
	// The certificate names west; the spoke was started as east.
	errc := run(t, h.client(t, "east", "west"))
	select {
	case err := <-errc:
		if !errors.Is(err, ErrWrongCluster) {
			t.Fatalf("Run() = %v, want ErrWrongCluster", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run() still runs with a session the hub gives another cluster")
	}
	if sessions, _, _ := h.seen(); sessions != 1 {
		t.Errorf("%d sessions, want 1: the client must not retry", sessions)
	}
}

func TestHopKeysFollowTheHub(t *testing.T) {
	h := startFakeHub(t)
	k1 := fleet.HopKey{ID: "k1", Secret: []byte("0123456789abcdef0123456789abcdef")}
	k2 := fleet.HopKey{ID: "k2", Secret: []byte("fedcba9876543210fedcba9876543210")}
	h.hopKeys = []fleet.HopKey{k1}
	c := h.client(t, "east", "east")
	if got := c.HopKeys(); got != nil {
		t.Fatalf("HopKeys() before any session = %v, want none", got)
	}
	run(t, c)
	same := func(want ...fleet.HopKey) func() error {
		return testkit.True(func() bool {
			return slices.EqualFunc(c.HopKeys(), want, func(a, b fleet.HopKey) bool { return a.ID == b.ID && string(a.Secret) == string(b.Secret) })
		})
	}
	testkit.Eventually(t, 5*time.Second, "the keys sent after the Welcome", same(k1))

	// A rotation: the new key signs first, the old one still verifies.
	h.push <- &pb.SyncResponse{Msg: &pb.SyncResponse_HopKeys{HopKeys: fleetpb.HopKeys([]fleet.HopKey{k2, k1})}}
	testkit.Eventually(t, 5*time.Second, "the rotated keys, the new one first", same(k2, k1))

	// A new session whose hub has not sent keys yet keeps the last ones.
	h.mu.Lock()
	h.hopKeys = nil
	h.mu.Unlock()
	h.push <- nil
	testkit.Eventually(t, 5*time.Second, "a second session", testkit.True(func() bool {
		sessions, _, _ := h.seen()
		return sessions == 2 && c.Connected()
	}))
	if err := same(k2, k1)(); err != nil {
		t.Errorf("HopKeys() after a reconnect = %v, want the last keys k2, k1", c.HopKeys())
	}
}

func TestCapacityOnlyForExportedPools(t *testing.T) {
	h := startFakeHub(t)
	chat, batch := fleet.PoolRef{Namespace: "default", Name: "chat"}, fleet.PoolRef{Namespace: "default", Name: "batch"}
	c := h.client(t, "east", "east")
	c.SetExports([]fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}})
	c.SetCapacity([]fleet.PoolCapacity{{Pool: chat, ReadyEndpoints: 1}, {Pool: batch, ReadyEndpoints: 2}})
	run(t, c)
	reported := func(p fleet.PoolRef) func() error {
		return testkit.True(func() bool { _, caps, _ := h.seen(); return slices.Contains(caps, p) })
	}
	testkit.Eventually(t, 5*time.Second, "chat's capacity", reported(chat))
	// Both pools' capacity was set before the session: one report would have carried both.
	if _, caps, _ := h.seen(); slices.Contains(caps, batch) {
		t.Errorf("capacity reports %v: batch was reported before it was exported", caps)
	}

	// batch joins the exports: its capacity follows, after the export.
	c.SetExports([]fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}, {Pool: batch, TargetPorts: []uint32{8000}}})
	testkit.Eventually(t, 5*time.Second, "batch's capacity once exported", reported(batch))

	// chat leaves the exports: its capacity is withdrawn, and no longer reported.
	c.SetExports([]fleet.Export{{Pool: batch, TargetPorts: []uint32{8000}}})
	testkit.Eventually(t, 5*time.Second, "chat's capacity withdrawn", testkit.True(func() bool {
		_, _, removed := h.seen()
		return slices.Contains(removed, chat)
	}))
	_, before, _ := h.seen()
	// Both change: one report would carry both.
	c.SetCapacity([]fleet.PoolCapacity{{Pool: chat, ReadyEndpoints: 5}, {Pool: batch, ReadyEndpoints: 6}})
	testkit.Eventually(t, 5*time.Second, "batch's new capacity", testkit.True(func() bool {
		_, caps, _ := h.seen()
		return len(caps) > len(before)
	}))
	if _, after, _ := h.seen(); slices.Contains(after[len(before):], chat) {
		t.Errorf("capacity reports %v: chat reported after it left the exports", after[len(before):])
	}
}

func TestCapacityReportsKeepTheAnnouncedInterval(t *testing.T) {
	h := startFakeHub(t)
	h.interval = 200 * time.Millisecond
	chat := fleet.PoolRef{Namespace: "default", Name: "chat"}
	c := h.client(t, "east", "east")
	c.SetExports([]fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}})
	run(t, c)
	// Load changes and wake-ups (interest changes) far more often than the interval.
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 0; ; i++ {
			c.SetCapacity([]fleet.PoolCapacity{{Pool: chat, QueueDepth: uint32(i)}})
			c.SetInterest([]fleet.PoolRef{{Namespace: "default", Name: fmt.Sprint("p", i%2)}})
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	testkit.Eventually(t, 10*time.Second, "five capacity reports", testkit.True(func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.reportsAt) >= 5
	}))
	close(stop)
	<-stopped
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := 1; i < len(h.reportsAt); i++ {
		// Sent at least 200 ms apart; half of it leaves room for delivery jitter.
		if gap := h.reportsAt[i].Sub(h.reportsAt[i-1]); gap < h.interval/2 {
			t.Errorf("capacity reports %d and %d arrived %s apart, the hub announced %s", i-1, i, gap, h.interval)
		}
	}
}

func poolsFrom(refs []*pb.PoolRef) []fleet.PoolRef {
	out := make([]fleet.PoolRef, 0, len(refs))
	for _, r := range refs {
		out = append(out, fleetpb.PoolRefFrom(r))
	}
	return out
}

// The hub ends a stream that changes its interest or reports its imports faster than the
// announced interval (after a burst); a controller that reconciles every few milliseconds must
// not cost the spoke its session. Both messages carry the whole state, so the client sends the
// latest one per interval and nothing is lost.
func TestInterestAndImportReportsKeepTheAnnouncedInterval(t *testing.T) {
	h := startFakeHub(t)
	h.interval = 200 * time.Millisecond
	c := h.client(t, "east", "east")
	pool := func(name string) fleet.PoolRef { return fleet.PoolRef{Namespace: "default", Name: name} }
	states := func(i int) []fleet.PoolImportStatus {
		return []fleet.PoolImportStatus{{Pool: pool("chat"), Imported: i%2 == 0, Reason: "Pending", Message: fmt.Sprint("change ", i)}}
	}
	c.SetImportStatus(states(0))
	run(t, c)
	testkit.Eventually(t, 10*time.Second, "the import states set before the session", testkit.True(func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.imports) == 1 && slices.Equal(h.imports[0].msg, states(0))
	}))
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for i := 1; ; i++ {
			c.SetImportStatus(states(i))
			c.SetInterest([]fleet.PoolRef{pool(fmt.Sprint("p", i))})
			select {
			case <-stop:
				return
			case <-time.After(3 * time.Millisecond):
			}
		}
	}()
	// Without pacing, the hub would see some 60 of each per interval: far past its burst of 20.
	testkit.Eventually(t, 10*time.Second, "five interest changes and five import reports", testkit.True(func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.interests) >= 5 && len(h.imports) >= 5
	}))
	close(stop)
	<-stopped
	// The final state, set right after others were sent: it is held, then sent.
	final := []fleet.PoolImportStatus{{Pool: pool("chat"), Imported: true}, {Pool: pool("final"), Reason: "NoBackends", Message: "final"}}
	c.SetImportStatus(final)
	c.SetInterest([]fleet.PoolRef{pool("final")})
	testkit.Eventually(t, 10*time.Second, "the final interest and import states", testkit.True(func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.interests) > 0 && slices.Equal(h.interests[len(h.interests)-1].msg, []fleet.PoolRef{pool("final")}) &&
			len(h.imports) > 0 && slices.Equal(h.imports[len(h.imports)-1].msg, final)
	}))
	h.mu.Lock()
	defer h.mu.Unlock()
	for i := 1; i < len(h.interests); i++ {
		// Sent at least 200 ms apart; half of it leaves room for delivery jitter.
		if gap := h.interests[i].at.Sub(h.interests[i-1].at); gap < h.interval/2 {
			t.Errorf("interest changes %d and %d arrived %s apart, the hub announced %s", i-1, i, gap, h.interval)
		}
	}
	for i := 1; i < len(h.imports); i++ {
		if gap := h.imports[i].at.Sub(h.imports[i-1].at); gap < h.interval/2 {
			t.Errorf("import reports %d and %d arrived %s apart, the hub announced %s", i-1, i, gap, h.interval)
		}
	}
}

// TestNoExportsBeforeTheSourceTellsThem: a session that starts before the first SetExports
// (a spoke whose caches have not synced) sends nothing of the exports; the first delta the hub
// gets, once they are set, is a replace_all that carries them, not an empty one that would have
// withdrawn every export the hub held for the cluster.
func TestNoExportsBeforeTheSourceTellsThem(t *testing.T) {
	h := startFakeHub(t)
	chat := fleet.PoolRef{Namespace: "default", Name: "chat"}
	c := h.client(t, "east", "east")
	run(t, c)
	testkit.Eventually(t, 5*time.Second, "session", testkit.True(c.Connected))
	c.SetExports([]fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}})
	testkit.Eventually(t, 5*time.Second, "an export delta", testkit.True(func() bool {
		h.mu.Lock()
		defer h.mu.Unlock()
		return len(h.deltas) > 0
	}))
	h.mu.Lock()
	first := h.deltas[0].delta
	h.mu.Unlock()
	if !first.GetReplaceAll() || len(first.GetUpserts()) != 1 || first.GetUpserts()[0].GetPool().GetName() != "chat" {
		t.Fatalf("first export delta %v: want a replace_all carrying chat", first)
	}
}
