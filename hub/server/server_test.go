package server_test

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	hubetcd "github.com/spillway-io/spillway/hub/etcd"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/server"
	"github.com/spillway-io/spillway/hub/view"
	"github.com/spillway-io/spillway/pkg/fleet"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
	"github.com/spillway-io/spillway/spoke/hubclient"
)

// hub is an in-process hub on real etcd and real gRPC over loopback.
type hub struct {
	t     *testing.T
	addr  string
	model *view.Model
	srv   *server.Server
	gs    *grpc.Server
	done  chan struct{}
}

func startHub(t *testing.T, ttl time.Duration) *hub {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	e, err := hubetcd.StartEmbedded(ctx, t.TempDir(), "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cli, err := hubetcd.Dial([]string{e.Endpoint})
	if err != nil {
		t.Fatal(err)
	}
	store := registry.New(cli, registry.Options{LeaseTTL: ttl})
	model := view.New()
	followDone := make(chan struct{})
	go func() { defer close(followDone); _ = model.Follow(ctx, store, discard()) }()
	h := &hub{t: t, model: model, srv: server.New(store, model, server.Options{
		HubID: "hub-test", MinReportInterval: 50 * time.Millisecond, CapacityHeartbeat: time.Second,
		ViewInterval: 20 * time.Millisecond, Registerer: prometheus.NewRegistry(),
	})}
	h.serve("127.0.0.1:0")
	t.Cleanup(func() {
		h.stop()
		cancel()
		<-followDone
		cli.Close()
		e.Close()
	})
	return h
}

func (h *hub) serve(addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		h.t.Fatal(err)
	}
	h.addr = l.Addr().String()
	h.gs = grpc.NewServer(grpc.MaxRecvMsgSize(server.MaxMessageBytes))
	pb.RegisterSyncServiceServer(h.gs, h.srv)
	pb.RegisterAdminServiceServer(h.gs, h.srv)
	h.done = make(chan struct{})
	go func() { defer close(h.done); _ = h.gs.Serve(l) }()
}

// stop cuts every stream, as a network failure or hub crash would.
func (h *hub) stop() {
	h.gs.Stop()
	<-h.done
}

func (h *hub) admin() pb.AdminServiceClient {
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(func() { conn.Close() })
	return pb.NewAdminServiceClient(conn)
}

type spoke struct {
	client *hubclient.Client
	reg    *prometheus.Registry
	cancel context.CancelFunc
	done   chan struct{}
}

func startSpoke(t *testing.T, addr, id, region string) *spoke {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	reg := prometheus.NewRegistry()
	c := hubclient.New(hubclient.Options{
		Cluster:    fleet.ClusterInfo{ID: id, Region: region, GatewayAddress: "127.0.0.1:8080"},
		HubAddress: addr, MinBackoff: 50 * time.Millisecond, MaxBackoff: 200 * time.Millisecond,
		Registerer: reg, Logger: discard(),
	})
	s := &spoke{client: c, reg: reg, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(s.done); _ = c.Run(ctx) }()
	t.Cleanup(s.stop)
	return s
}

func (s *spoke) stop() {
	s.cancel()
	<-s.done
}

var chat = fleet.PoolRef{Namespace: "default", Name: "chat"}

func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func importOf(v interface{ Imports() []fleet.Import }, p fleet.PoolRef) []string {
	for _, i := range v.Imports() {
		if i.Pool == p {
			return i.ExportingClusters
		}
	}
	return nil
}

func TestExportReachesEverySpokeWithCapacity(t *testing.T) {
	h := startHub(t, 5*time.Second)
	a := startSpoke(t, h.addr, "a", "us-east")
	b := startSpoke(t, h.addr, "b", "us-west")
	b.client.SetInterest([]fleet.PoolRef{chat})

	a.client.SetExports([]fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}})
	a.client.SetCapacity([]fleet.PoolCapacity{{Pool: chat, ReadyEndpoints: 3, TotalEndpoints: 3, QueueDepth: 4, Saturation: 0.25}})

	eventually(t, 5*time.Second, "b sees a's export and capacity", func() bool {
		caps := b.client.View().Capacity(chat)
		return strings.Join(importOf(b.client.View(), chat), ",") == "a" && len(caps) == 1 &&
			caps[0].ClusterID == "a" && caps[0].Capacity.QueueDepth == 4
	})
	eventually(t, 5*time.Second, "b sees a alive with its gateway", func() bool {
		for _, c := range b.client.View().Clusters() {
			if c.Info.ID == "a" {
				return c.State == fleet.StateAlive && c.Info.GatewayAddress == "127.0.0.1:8080" && c.Info.Region == "us-east"
			}
		}
		return false
	})

	// b exports the same pool: both are listed, sorted.
	b.client.SetExports([]fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}})
	eventually(t, 5*time.Second, "a sees both exporters", func() bool {
		return strings.Join(importOf(a.client.View(), chat), ",") == "a,b"
	})
	// a never asked for capacity: interest keeps it out of a's view.
	if caps := a.client.View().Capacity(chat); len(caps) != 0 {
		t.Fatalf("a received capacity it did not ask for: %v", caps)
	}

	resp, err := h.admin().ListPools(context.Background(), &pb.ListPoolsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.GetPools()) != 1 || len(resp.GetPools()[0].GetMembers()) != 2 ||
		resp.GetPools()[0].GetMembers()[0].GetCapacity().GetCapacity().GetQueueDepth() != 4 {
		t.Fatalf("ListPools = %v", resp)
	}

	// Unexport withdraws at once.
	a.client.SetExports(nil)
	eventually(t, 5*time.Second, "b sees a's export withdrawn", func() bool {
		return strings.Join(importOf(b.client.View(), chat), ",") == "b"
	})
}

func TestKilledSpokeIsWithdrawnAfterItsLease(t *testing.T) {
	const ttl = 2 * time.Second
	h := startHub(t, ttl)
	a := startSpoke(t, h.addr, "a", "us-east")
	b := startSpoke(t, h.addr, "b", "us-west")
	b.client.SetInterest([]fleet.PoolRef{chat})
	a.client.SetExports([]fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}})
	a.client.SetCapacity([]fleet.PoolCapacity{{Pool: chat, ReadyEndpoints: 1, TotalEndpoints: 1}})
	eventually(t, 5*time.Second, "b sees a's export", func() bool { return len(importOf(b.client.View(), chat)) == 1 })

	a.stop()
	stopped := time.Now()
	// Damping: right after the stream ends the export is still there.
	time.Sleep(ttl / 4)
	if len(importOf(b.client.View(), chat)) != 1 {
		t.Fatal("export withdrawn before the lease lapsed")
	}
	eventually(t, ttl+5*time.Second, "a's export withdrawn after the lease", func() bool {
		return len(importOf(b.client.View(), chat)) == 0 && len(b.client.View().Capacity(chat)) == 0
	})
	if d := time.Since(stopped); d < ttl {
		t.Fatalf("withdrawn %s after the spoke stopped, before the %s lease", d, ttl)
	}
	eventually(t, 2*time.Second, "a is Gone", func() bool {
		for _, c := range b.client.View().Clusters() {
			if c.Info.ID == "a" {
				return c.State == fleet.StateGone
			}
		}
		return false
	})
}

func TestReconnectResumesWithoutReplay(t *testing.T) {
	h := startHub(t, 10*time.Second)
	a := startSpoke(t, h.addr, "a", "us-east")
	b := startSpoke(t, h.addr, "b", "us-west")
	a.client.SetExports([]fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}})
	eventually(t, 5*time.Second, "b sees a's export", func() bool { return len(importOf(b.client.View(), chat)) == 1 })
	snapshots := func(s *spoke) float64 {
		return counterValue(t, s.reg, "spillway_spoke_view_updates_received_total", "snapshot")
	}
	if snapshots(a) != 1 || snapshots(b) != 1 {
		t.Fatalf("snapshots before the break: a=%v b=%v, want 1 each", snapshots(a), snapshots(b))
	}

	// Cut every stream and bring the same hub back on the same address.
	addr := h.addr
	h.stop()
	eventually(t, 5*time.Second, "spokes notice the break", func() bool { return !a.client.Connected() && !b.client.Connected() })
	// While the hub is away, the spoke's view stays (static stability) and local changes queue.
	if len(importOf(b.client.View(), chat)) != 1 {
		t.Fatal("b's view lost the import while the hub was away")
	}
	code := fleet.PoolRef{Namespace: "default", Name: "code"}
	a.client.SetExports([]fleet.Export{{Pool: chat, TargetPorts: []uint32{8000}}, {Pool: code, TargetPorts: []uint32{8000}}})
	h.serve(addr)

	eventually(t, 10*time.Second, "b sees a's new export after the reconnect", func() bool {
		return len(importOf(b.client.View(), code)) == 1 && len(importOf(b.client.View(), chat)) == 1
	})
	if snapshots(a) != 1 || snapshots(b) != 1 {
		t.Fatalf("reconnect replayed the view: snapshots a=%v b=%v, want still 1", snapshots(a), snapshots(b))
	}
}

// counterValue reads one labelled series of a counter from a registry.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func TestBadRequestsGetClearErrors(t *testing.T) {
	h := startHub(t, 5*time.Second)
	conn, err := grpc.NewClient(h.addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16<<20)))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cli := pb.NewSyncServiceClient(conn)
	ctx := context.Background()

	_, err = cli.Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "Bad_ID", Region: "", GatewayAddress: "nope"}})
	wantStatus(t, err, codes.InvalidArgument, "cluster.cluster_id", "cluster.region", "cluster.gateway_address")

	huge := &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "a", Region: "r", Version: strings.Repeat("x", 2<<20)}}
	_, err = cli.Register(ctx, huge)
	wantStatus(t, err, codes.ResourceExhausted, "larger than max")

	if _, err := cli.Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "a", Region: "r"}}); err != nil {
		t.Fatal(err)
	}

	syncErr := func(msgs ...*pb.SyncRequest) error {
		t.Helper()
		sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		st, err := cli.Sync(sctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range msgs {
			if err := st.Send(m); err != nil {
				break
			}
		}
		for {
			if _, err := st.Recv(); err != nil {
				return err
			}
		}
	}
	hello := func(id string) *pb.SyncRequest {
		return &pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{ClusterId: id, SpokeIncarnation: "i"}}}
	}
	wantStatus(t, syncErr(&pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: 1}}}),
		codes.InvalidArgument, "first message of a sync stream must be a hello")
	wantStatus(t, syncErr(hello("never-registered")), codes.FailedPrecondition, "call Register first")

	tooMany := &pb.ExportDelta{Seq: 1, ReplaceAll: true}
	for range 1001 {
		tooMany.Upserts = append(tooMany.Upserts, &pb.Export{Pool: &pb.PoolRef{Namespace: "default", Name: "chat"}, TargetPorts: []uint32{1}})
	}
	wantStatus(t, syncErr(hello("a"), &pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: tooMany}}),
		codes.InvalidArgument, "at most 1000")
	wantStatus(t, syncErr(hello("a"), &pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: 7}}}),
		codes.InvalidArgument, "does not follow")
	wantStatus(t, syncErr(hello("a"), &pb.SyncRequest{Msg: &pb.SyncRequest_Capacity{Capacity: &pb.CapacityReport{
		Pools: []*pb.PoolCapacity{{Pool: &pb.PoolRef{Namespace: "default", Name: "chat"}, KvCacheUtilization: 3}}}}}),
		codes.InvalidArgument, "kv_cache_utilization")
	wantStatus(t, syncErr(hello("a"), hello("a")), codes.InvalidArgument, "sent twice")

	// None of it left anything behind.
	resp, err := h.admin().ListImports(ctx, &pb.ListImportsRequest{})
	if err != nil || len(resp.GetImports()) != 0 {
		t.Fatalf("imports after rejected requests: %v, %v", resp, err)
	}
	_, err = h.admin().GetCluster(ctx, &pb.GetClusterRequest{ClusterId: "zzz"})
	wantStatus(t, err, codes.NotFound, "not found")
}

func wantStatus(t *testing.T, err error, code codes.Code, substrs ...string) {
	t.Helper()
	st, ok := status.FromError(err)
	if !ok || st.Code() != code {
		t.Fatalf("error %v: want code %s", err, code)
	}
	for _, s := range substrs {
		if !strings.Contains(st.Message(), s) {
			t.Fatalf("error %q does not mention %q", st.Message(), s)
		}
	}
}
