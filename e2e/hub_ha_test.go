package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/spillway-io/spillway/e2e/etcdcluster"
	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/tlsconfig"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// These tests run hub replicas as real processes (the hub binary of $SPILLWAY_BIN_DIR) on a real
// three-member etcd cluster (the etcd binary of $SPILLWAY_K8S_BIN_DIR), with spokes speaking the
// sync protocol over mutual TLS from the test.

var haPool = &pb.PoolRef{Namespace: "default", Name: "chat"}

// startReplicas starts an etcd cluster of three members and n hub replicas on it, sharing one CA.
func startReplicas(t *testing.T, n int) []*hubtest.Hub {
	t.Helper()
	bin := os.Getenv("SPILLWAY_BIN_DIR")
	if bin == "" {
		t.Skip("SPILLWAY_BIN_DIR is not set: run make build first")
	}
	etcd := etcdcluster.Start(t, 3)
	ca, err := tlsconfig.NewCA("hub replicas CA", 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hubs := make([]*hubtest.Hub, n)
	for i := range n {
		args := append(etcd.HubArgs(), "--insecure-http", "--leader-lease-ttl", "3s")
		hubs[i] = hubtest.StartProcess(t, bin, hubtest.ProcessOptions{HubID: fmt.Sprintf("hub-%d", i), CA: ca, Args: args, LeaseTTL: 10 * time.Second})
	}
	return hubs
}

// leaders returns the replicas whose spillway_hub_leader is 1.
func leaders(hubs []*hubtest.Hub) ([]int, error) {
	var out []int
	for i, h := range hubs {
		if h.Exited() {
			continue
		}
		v, err := h.Metric("spillway_hub_leader")
		if err != nil {
			return nil, err
		}
		if v == 1 {
			out = append(out, i)
		}
	}
	return out, nil
}

// oneLeader waits until exactly one live replica leads and returns it.
func oneLeader(t *testing.T, hubs []*hubtest.Hub, within time.Duration) int {
	t.Helper()
	var leader int
	testkit.Eventually(t, within, "exactly one hub replica leads", func() error {
		ls, err := leaders(hubs)
		if err != nil {
			return err
		}
		if len(ls) != 1 {
			return fmt.Errorf("leaders %v", ls)
		}
		leader = ls[0]
		return nil
	})
	return leader
}

// haSpoke is a spoke's session with one replica, spoken by the test.
type haSpoke struct {
	t      *testing.T
	id     string
	stream pb.SyncService_SyncClient
	cancel context.CancelFunc
	done   chan struct{}

	mu      sync.Mutex
	welcome *pb.Welcome
	views   []receivedView
	acked   uint64
	err     error
	wake    chan struct{}
}

type receivedView struct {
	at time.Time
	u  *pb.ViewUpdate
}

// connectSpoke registers cluster id (unless observer) and opens its sync stream on h with
// incarnation inc, interested in haPool.
func connectSpoke(t *testing.T, h *hubtest.Hub, id, inc string, observer bool) *haSpoke {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cli := h.SyncAs(id)
	if !observer {
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := cli.Register(rctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: id, Region: "r-" + id, GatewayAddress: "gw-" + id + ".test:443"}})
		rcancel()
		if err != nil {
			cancel()
			t.Fatalf("register %s on %s: %v", id, h.ID, err)
		}
	}
	stream, err := cli.Sync(ctx)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	if err := stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{
		ClusterId: id, SpokeIncarnation: inc, CapacityInterest: []*pb.PoolRef{haPool}, Observer: observer}}}); err != nil {
		cancel()
		t.Fatal(err)
	}
	s := &haSpoke{t: t, id: id, stream: stream, cancel: cancel, done: make(chan struct{}), wake: make(chan struct{})}
	go s.recv()
	t.Cleanup(s.close)
	testkit.Eventually(t, 10*time.Second, "the Welcome of "+id, func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.welcome == nil {
			return fmt.Errorf("no Welcome yet (%v)", s.err)
		}
		return nil
	})
	return s
}

func (s *haSpoke) close() {
	s.cancel()
	<-s.done
}

func (s *haSpoke) recv() {
	defer close(s.done)
	for {
		m, err := s.stream.Recv()
		s.mu.Lock()
		if err != nil {
			s.err = err
			s.mu.Unlock()
			return
		}
		switch v := m.GetMsg().(type) {
		case *pb.SyncResponse_Welcome:
			s.welcome = v.Welcome
		case *pb.SyncResponse_View:
			s.views = append(s.views, receivedView{at: time.Now(), u: v.View})
		case *pb.SyncResponse_ExportAck:
			s.acked = v.ExportAck.GetSeq()
		}
		close(s.wake)
		s.wake = make(chan struct{})
		s.mu.Unlock()
	}
}

func (s *haSpoke) export(seq uint64) error {
	return s.stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{
		Seq: seq, ReplaceAll: true, Upserts: []*pb.Export{{Pool: haPool, TargetPorts: []uint32{8000}}}}}})
}

func (s *haSpoke) capacity(queue uint32) error {
	return s.stream.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Capacity{Capacity: &pb.CapacityReport{Pools: []*pb.PoolCapacity{{
		Pool: haPool, ReadyEndpoints: 1, TotalEndpoints: 1, QueueDepth: queue, ObservedAt: timestamppb.Now()}}}}})
}

// seenCapacity returns when this spoke first received cluster's capacity of haPool with queue.
func (s *haSpoke) seenCapacity(cluster string, queue uint32) (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, v := range s.views {
		for _, c := range v.u.GetCapacity() {
			if c.GetClusterId() == cluster && c.GetCapacity().GetQueueDepth() == queue {
				return v.at, true
			}
		}
	}
	return time.Time{}, false
}

// waitCapacity waits until the spoke received cluster's capacity with queue.
func (s *haSpoke) waitCapacity(cluster string, queue uint32, within time.Duration) (time.Time, error) {
	deadline := time.After(within)
	for {
		s.mu.Lock()
		wake := s.wake
		s.mu.Unlock()
		if at, ok := s.seenCapacity(cluster, queue); ok {
			return at, nil
		}
		select {
		case <-wake:
		case <-deadline:
			return time.Time{}, fmt.Errorf("%s did not receive %s's capacity with queue %d within %s", s.id, cluster, queue, within)
		}
	}
}

// importsOf lists the clusters exporting haPool, as replica h's admin port says.
func importsOf(ctx context.Context, h *hubtest.Hub) ([]string, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	resp, err := h.Admin().ListImports(ctx, &pb.ListImportsRequest{})
	if err != nil {
		return nil, err
	}
	for _, imp := range resp.GetImports() {
		if imp.GetPool().GetName() == haPool.GetName() {
			return imp.GetExportingClusters(), nil
		}
	}
	return nil, nil
}

// measureDelay sends n capacity reports from `from` (queue values base+1..base+n, one per
// 250 ms, above the hub's report rate) and returns how long each took to reach `to`.
func measureDelay(t *testing.T, from, to *haSpoke, base uint32, n int) []time.Duration {
	t.Helper()
	var out []time.Duration
	for i := 1; i <= n; i++ {
		q := base + uint32(i)
		sent := time.Now()
		if err := from.capacity(q); err != nil {
			t.Fatal(err)
		}
		at, err := to.waitCapacity(from.id, q, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, at.Sub(sent))
		time.Sleep(250 * time.Millisecond)
	}
	return out
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

// TestHubReplicas: three hub replicas on a three-member etcd cluster. Exactly one leads. A spoke
// connected to one replica sees the capacity of a spoke connected to another (and the test
// measures how much later than a spoke on the same replica). An observer session takes over
// nothing and may send nothing. Then the leader is killed with SIGKILL: another replica leads
// within 5 s, the export of the spoke that was connected to it is never missing from the imports
// the surviving replicas serve, and the spoke resumes on a surviving replica from its acked
// sequence number.
func TestHubReplicas(t *testing.T) {
	hubs := startReplicas(t, 3)
	leader := oneLeader(t, hubs, 20*time.Second)
	others := []int{}
	for i := range hubs {
		if i != leader {
			others = append(others, i)
		}
	}
	t.Logf("leader: %s", hubs[leader].ID)
	listsLeader(t, hubs[others[0]], hubs, hubs[leader])

	// Spoke a on the leader, spoke b on another replica, spoke c (a baseline) on the leader too.
	a := connectSpoke(t, hubs[leader], "a", "a-1", false)
	b := connectSpoke(t, hubs[others[0]], "b", "b-1", false)
	c := connectSpoke(t, hubs[leader], "c", "c-1", false)
	if err := a.export(1); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "a's export acked", func() error {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.acked != 1 {
			return fmt.Errorf("acked %d", a.acked)
		}
		return nil
	})
	for _, h := range hubs {
		testkit.Eventually(t, 10*time.Second, h.ID+" serves a's export", func() error {
			cs, err := importsOf(context.Background(), h)
			if err != nil {
				return err
			}
			if !slices.Contains(cs, "a") {
				return fmt.Errorf("exporting clusters %v", cs)
			}
			return nil
		})
	}

	// Capacity crosses replicas: warm up, then measure both paths with the same reports.
	if err := a.capacity(1); err != nil {
		t.Fatal(err)
	}
	if _, err := b.waitCapacity("a", 1, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(250 * time.Millisecond)
	const n = 20
	var cross, same []time.Duration
	for i := 1; i <= n; i++ {
		q := uint32(100 + i)
		sent := time.Now()
		if err := a.capacity(q); err != nil {
			t.Fatal(err)
		}
		atB, err := b.waitCapacity("a", q, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		atC, err := c.waitCapacity("a", q, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		cross, same = append(cross, atB.Sub(sent)), append(same, atC.Sub(sent))
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("capacity from a spoke to another: same replica median %s max %s; across replicas median %s max %s (n=%d, --view-interval 20ms)",
		median(same), slices.Max(same), median(cross), slices.Max(cross), n)
	if median(cross) > median(same)+250*time.Millisecond {
		t.Errorf("capacity across replicas takes %s (median), more than one hop over %s on the same replica", median(cross), median(same))
	}

	// An observer of cluster b on the leader: it sees the fleet, takes nothing over and may
	// send nothing.
	obs := connectSpoke(t, hubs[leader], "b", "b-observer", true)
	if _, err := obs.waitCapacity("a", uint32(100+n), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := obs.capacity(9); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the observer's stream ends with FailedPrecondition", func() error {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		if status.Code(obs.err) != codes.FailedPrecondition {
			return fmt.Errorf("stream error %v", obs.err)
		}
		return nil
	})
	b.mu.Lock()
	bErr := b.err
	b.mu.Unlock()
	if bErr != nil {
		t.Fatalf("b's real session ended when its observer came and went: %v", bErr)
	}

	// Kill the leader. Watch the survivors' imports from now on: a's export must never be
	// missing, and exactly one survivor leads within 5 s.
	ctx, stop := context.WithCancel(context.Background())
	missing := make(chan string, 16)
	var watchers sync.WaitGroup
	for _, i := range others {
		watchers.Go(func() {
			for ctx.Err() == nil {
				cs, err := importsOf(ctx, hubs[i])
				if err == nil && !slices.Contains(cs, "a") {
					missing <- fmt.Sprintf("%s served imports without a: %v", hubs[i].ID, cs)
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
	killed := time.Now()
	hubs[leader].Kill()
	var newLeader int
	var failover time.Duration
	for {
		ls, err := leaders(hubs)
		if err == nil && len(ls) == 1 {
			newLeader, failover = ls[0], time.Since(killed)
			break
		}
		if time.Since(killed) > 10*time.Second {
			t.Fatalf("no replica leads 10 s after the leader was killed (leaders %v, %v)", ls, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("failover: %s leads %s after %s was killed with SIGKILL", hubs[newLeader].ID, failover, hubs[leader].ID)
	if failover > 5*time.Second {
		t.Errorf("leadership moved in %s, want at most 5s", failover)
	}
	listsLeader(t, hubs[others[1]], []*hubtest.Hub{hubs[others[0]], hubs[others[1]]}, hubs[newLeader])

	// a's stream broke with its replica; it resumes on a survivor, which knows its export.
	a2 := connectSpoke(t, hubs[others[1]], "a", "a-1", false)
	a2.mu.Lock()
	acked := a2.welcome.GetAckedExportSeq()
	a2.mu.Unlock()
	if acked != 1 {
		t.Errorf("a resumed on %s with acked_export_seq %d, want 1 (no replace_all after a failover)", hubs[others[1]].ID, acked)
	}
	// Its capacity reaches b across replicas again.
	if err := a2.capacity(500); err != nil {
		t.Fatal(err)
	}
	if _, err := b.waitCapacity("a", 500, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	stop()
	watchers.Wait()
	close(missing)
	for m := range missing {
		t.Error(m)
	}
}

// listsLeader waits until ListHubs at replica at lists exactly the replicas live, with their
// admin addresses, and leader alone as the leader.
func listsLeader(t *testing.T, at *hubtest.Hub, live []*hubtest.Hub, leader *hubtest.Hub) {
	t.Helper()
	testkit.Eventually(t, 10*time.Second, "ListHubs at "+at.ID+" lists the replicas and the leader", func() error {
		resp, err := at.AdminAs(hubtest.User("viewer")).ListHubs(context.Background(), &pb.ListHubsRequest{})
		if err != nil {
			return err
		}
		if resp.GetAnsweredBy() != at.ID {
			return fmt.Errorf("answered by %q", resp.GetAnsweredBy())
		}
		want := map[string]string{}
		for _, h := range live {
			want[h.ID] = h.AdminAddr
		}
		leaders := 0
		for _, r := range resp.GetHubs() {
			addr, ok := want[r.GetHubId()]
			if !ok || r.GetAdminAddress() != addr {
				return fmt.Errorf("listed %s at %s: want %v", r.GetHubId(), r.GetAdminAddress(), want)
			}
			if r.GetLeader() {
				leaders++
				if r.GetHubId() != leader.ID {
					return fmt.Errorf("%s listed as the leader, want %s", r.GetHubId(), leader.ID)
				}
			}
		}
		if len(resp.GetHubs()) != len(live) || leaders != 1 {
			return fmt.Errorf("%d replicas, %d leaders listed: want %d and 1", len(resp.GetHubs()), leaders, len(live))
		}
		return nil
	})
}

// TestHubReplicaPeerNeedsHubIdentity: PeerService answers hub identities only.
func TestHubReplicaPeerNeedsHubIdentity(t *testing.T) {
	hubs := startReplicas(t, 1)
	for _, p := range []hubtest.Peer{hubtest.Admin(), hubtest.Cluster("a")} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		st, err := pb.NewPeerServiceClient(hubs[0].AdminConnAs(p)).Reports(ctx, &pb.ReportsRequest{HubId: "x"})
		if err == nil {
			_, err = st.Recv()
		}
		cancel()
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("Reports as %s: %v, want PermissionDenied", p.Identity(), err)
		}
	}
}

// readyz reads a hub process's /readyz: its status code and body.
func readyz(h *hubtest.Hub) (int, string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + h.HTTPAddr + "/readyz")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// lastView returns the last view update a spoke received.
func (s *haSpoke) lastView() *pb.ViewUpdate {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.views) == 0 {
		return nil
	}
	return s.views[len(s.views)-1].u
}

// TestHubReplicaQuorumLost: with two of three etcd members killed, the hub keeps serving its
// last view to its spokes marked incomplete, /readyz says the quorum is lost, and the replica no
// longer leads once its election session lapsed; with the members back, the next update is a
// complete snapshot, /readyz is ready and the replica leads again, without an operator.
func TestHubReplicaQuorumLost(t *testing.T) {
	bin := os.Getenv("SPILLWAY_BIN_DIR")
	if bin == "" {
		t.Skip("SPILLWAY_BIN_DIR is not set: run make build first")
	}
	etcd := etcdcluster.Start(t, 3)
	h := hubtest.StartProcess(t, bin, hubtest.ProcessOptions{HubID: "hub-0",
		Args: append(etcd.HubArgs(), "--insecure-http", "--leader-lease-ttl", "3s"), LeaseTTL: 10 * time.Second})
	oneLeader(t, []*hubtest.Hub{h}, 20*time.Second)
	a := connectSpoke(t, h, "a", "a-1", false)
	if err := a.export(1); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "a complete view with a's import", func() error {
		v := a.lastView()
		if v == nil || v.GetIncomplete() || len(v.GetImports()) == 0 {
			return fmt.Errorf("last view %v", v)
		}
		return nil
	})
	if code, body, err := readyz(h); err != nil || code != http.StatusOK {
		t.Fatalf("/readyz before the loss: %d %q %v", code, body, err)
	}

	etcd.Kill(0)
	etcd.Kill(1)
	lost := time.Now()
	testkit.Eventually(t, 10*time.Second, "a view update marked incomplete", func() error {
		if v := a.lastView(); !v.GetIncomplete() {
			return errors.New("the last update is not marked incomplete")
		}
		return nil
	})
	testkit.Eventually(t, 10*time.Second, "/readyz says the quorum is lost", func() error {
		code, body, err := readyz(h)
		if err != nil {
			return err
		}
		if code == http.StatusOK || !strings.Contains(body, "quorum lost") {
			return fmt.Errorf("/readyz %d %q", code, body)
		}
		return nil
	})
	testkit.Eventually(t, 10*time.Second, "the replica stops leading once its session lapsed", func() error {
		v, err := h.Metric("spillway_hub_leader")
		if err != nil {
			return err
		}
		if v != 0 {
			return fmt.Errorf("spillway_hub_leader %v", v)
		}
		return nil
	})
	t.Logf("the replica stopped leading %s after the quorum was lost", time.Since(lost))
	// The spoke's stream lives on and was never told its import is gone.
	a.mu.Lock()
	for _, v := range a.views {
		for _, p := range v.u.GetImportsRemoved() {
			if p.GetName() == haPool.GetName() {
				t.Errorf("an update removed %s while etcd had no quorum", p.GetName())
			}
		}
	}
	a.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := etcd.Restart(ctx, 0); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 20*time.Second, "a complete snapshot after the quorum came back", func() error {
		v := a.lastView()
		if v.GetIncomplete() || !v.GetSnapshot() {
			return fmt.Errorf("last view incomplete=%v snapshot=%v", v.GetIncomplete(), v.GetSnapshot())
		}
		return nil
	})
	testkit.Eventually(t, 20*time.Second, "/readyz ready and the replica leading again", func() error {
		if code, body, err := readyz(h); err != nil || code != http.StatusOK {
			return fmt.Errorf("/readyz %d %q %v", code, body, err)
		}
		if v, err := h.Metric("spillway_hub_leader"); err != nil || v != 1 {
			return fmt.Errorf("spillway_hub_leader %v %v", v, err)
		}
		return nil
	})
}
