package server_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/server"
	"github.com/spillway-io/spillway/pkg/fleet"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// testHub is the in-process hub of e2e/hubtest (assembled as hub/app assembles it, behind the
// hub's interceptors) with its log records kept for the test.
type testHub struct {
	*hubtest.Hub
	logs *logRecorder
}

type hubOptions struct {
	// stream is an extra stream interceptor, run inside the hub's own.
	stream grpc.StreamServerInterceptor
	// admin wraps the AdminService implementation before it is registered.
	admin func(*server.Server) pb.AdminServiceServer
	// ttl is the session lease TTL (5 s when zero).
	ttl time.Duration
	// hub are the rest of hubtest's options.
	hub hubtest.Options
}

func startHub(t *testing.T, o hubOptions) *testHub {
	t.Helper()
	logs := newLogRecorder()
	ho := o.hub
	ho.Logger, ho.StreamInterceptor, ho.Admin = slog.New(logs), o.stream, o.admin
	if o.ttl == 0 {
		o.ttl = 5 * time.Second
	}
	h := hubtest.StartWith(t, o.ttl, ho)
	return &testHub{Hub: h, logs: logs}
}

// register registers cluster (as itself) in region r.
func (h *testHub) register(t *testing.T, ctx context.Context, cluster, gateway string) {
	t.Helper()
	if _, err := h.SyncAs(cluster).Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: cluster, Region: "r", GatewayAddress: gateway}}); err != nil {
		t.Fatal(err)
	}
}

// ended reads st until it fails and returns the error, or fails the test when it does not end
// within 10 s.
func ended(t *testing.T, st interface {
	Recv() (*pb.SyncResponse, error)
}) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		for {
			if _, err := st.Recv(); err != nil {
				errc <- err
				return
			}
		}
	}()
	select {
	case err := <-errc:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end within 10 s")
		return nil
	}
}

// capacityOf returns what the view holds of a cluster's capacity reports.
func (h *testHub) capacityOf(cluster string) []fleet.PoolCapacity {
	var out []fleet.PoolCapacity
	for _, c := range h.Model.Since("", 0, func(fleet.PoolRef) bool { return true }).Capacity {
		if c.ClusterID == cluster {
			out = append(out, c.Capacity)
		}
	}
	return out
}

// logRecorder keeps every log record's message and attributes (those of the logger's With too).
type logRecorder struct {
	mu    *sync.Mutex
	recs  *[]logRecord
	attrs []slog.Attr
}

func newLogRecorder() *logRecorder { return &logRecorder{mu: &sync.Mutex{}, recs: &[]logRecord{}} }

type logRecord struct {
	msg   string
	attrs map[string]string
}

func (l *logRecorder) Enabled(context.Context, slog.Level) bool { return true }
func (l *logRecorder) WithGroup(string) slog.Handler            { return l }
func (l *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{mu: l.mu, recs: l.recs, attrs: append(slices.Clip(l.attrs), as...)}
}

func (l *logRecorder) Handle(_ context.Context, r slog.Record) error {
	rec := logRecord{msg: r.Message, attrs: map[string]string{}}
	for _, a := range l.attrs {
		rec.attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		rec.attrs[a.Key] = a.Value.String()
		return true
	})
	l.mu.Lock()
	defer l.mu.Unlock()
	*l.recs = append(*l.recs, rec)
	return nil
}

// find returns the records whose message is msg.
func (l *logRecorder) find(msg string) []logRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []logRecord
	for _, r := range *l.recs {
		if r.msg == msg {
			out = append(out, r)
		}
	}
	return out
}

var chat = &pb.PoolRef{Namespace: "default", Name: "chat"}

func hello(cluster string) *pb.SyncRequest {
	return &pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{ClusterId: cluster, SpokeIncarnation: "inc-1"}}}
}

func capacityReport(queue uint32) *pb.SyncRequest {
	return &pb.SyncRequest{Msg: &pb.SyncRequest_Capacity{Capacity: &pb.CapacityReport{Pools: []*pb.PoolCapacity{{
		Pool: chat, ReadyEndpoints: 1, TotalEndpoints: 1, QueueDepth: queue,
	}}}}}
}

// openSession opens a Sync stream for cluster (from a client of that cluster), waits for the
// hub's Welcome, exports chat and waits for the hub's ack: the cluster may then report chat's
// capacity.
func openSession(t *testing.T, ctx context.Context, cli pb.SyncServiceClient, cluster string) pb.SyncService_SyncClient {
	t.Helper()
	st, err := cli.Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Send(hello(cluster)); err != nil {
		t.Fatal(err)
	}
	resp, err := st.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetWelcome() == nil {
		t.Fatalf("first answer of the hub: %v, want a welcome", resp)
	}
	if err := st.Send(exportChat(1)); err != nil {
		t.Fatal(err)
	}
	for {
		resp, err := st.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetExportAck() != nil {
			return st
		}
	}
}

func exportChat(seq uint64) *pb.SyncRequest {
	return &pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{
		Seq: seq, ReplaceAll: true, Upserts: []*pb.Export{{Pool: chat, TargetPorts: []uint32{8000}}},
	}}}
}

// TestTakenOverStreamWritesNothing: once a newer stream of the same cluster took the session
// over, a capacity report that still arrives on the old stream does not reach the fleet view; the
// new stream's reports do.
func TestTakenOverStreamWritesNothing(t *testing.T) {
	// The first Sync stream to end is held open after its handler returned, as a slow network
	// would hold it, so that what its client sends after the takeover still reaches the old
	// stream's receive loop.
	release := make(chan struct{})
	var held sync.Once
	hold := func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		err := handler(srv, ss)
		if info.FullMethod == pb.SyncService_Sync_FullMethodName {
			held.Do(func() { <-release })
		}
		return err
	}
	h := startHub(t, hubOptions{stream: hold})
	var releaseOnce sync.Once
	unhold := func() { releaseOnce.Do(func() { close(release) }) }
	t.Cleanup(unhold)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := h.SyncAs("a").Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "a", Region: "us-east"}}); err != nil {
		t.Fatal(err)
	}
	old := openSession(t, ctx, h.SyncAs("a"), "a")
	if err := old.Send(capacityReport(1)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the first stream's report in the view", func() error {
		if caps := h.capacityOf("a"); len(caps) != 1 || caps[0].QueueDepth != 1 {
			return fmt.Errorf("capacity of a: %+v, want queue 1", caps)
		}
		return nil
	})

	// The Welcome on the new stream comes after the takeover.
	cur := openSession(t, ctx, h.SyncAs("a"), "a")
	if err := old.Send(capacityReport(7)); err != nil {
		t.Fatal(err)
	}
	// The old stream's receive loop says when it dropped the report; the view must not have it.
	testkit.Eventually(t, 5*time.Second, "the old stream drops its report", func() error {
		for _, r := range h.logs.find("sync message dropped: the stream's session ended") {
			if r.attrs["cluster"] == "a" && r.attrs["kind"] == "capacity" {
				return nil
			}
		}
		return fmt.Errorf("no drop logged; capacity of a in the view: %+v", h.capacityOf("a"))
	})
	if caps := h.capacityOf("a"); len(caps) != 1 || caps[0].QueueDepth != 1 {
		t.Fatalf("capacity of a after a report on the taken-over stream: %+v, want queue 1 still", caps)
	}

	// The stream that took over writes.
	if err := cur.Send(capacityReport(3)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the new stream's report in the view", func() error {
		if caps := h.capacityOf("a"); len(caps) != 1 || caps[0].QueueDepth != 3 {
			return fmt.Errorf("capacity of a: %+v, want queue 3", caps)
		}
		return nil
	})

	// Once no longer held, the old stream ends with Aborted: it was replaced.
	unhold()
	for {
		if _, err := old.Recv(); err != nil {
			wantStatus(t, err, codes.Aborted, "replaced by a newer stream")
			break
		}
	}
	if sessions := promtest.Value(t, h.Registry, "spillway_hub_sync_sessions"); sessions != 1 {
		t.Fatalf("spillway_hub_sync_sessions = %v after the takeover, want 1", sessions)
	}
}

// TestServicesLogUnderTheirComponents: each service logs under its own component (hub-sync,
// hub-join, hub-admin), so that an operator can follow the join flow or the admins' acts apart
// from the spokes' sessions; and a stream the spoke closes is counted as ended with OK.
func TestServicesLogUnderTheirComponents(t *testing.T) {
	h := startHub(t, hubOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tok := createToken(t, ctx, h, false, time.Hour, "a")
	k := newSpokeKey(t, clusterID("a"))
	if _, err := join(ctx, h, tok.GetToken(), k); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Admin().ApproveCluster(ctx, &pb.ApproveClusterRequest{ClusterId: "a"}); err != nil {
		t.Fatal(err)
	}
	joined, err := join(ctx, h, tok.GetToken(), k)
	if err != nil {
		t.Fatal(err)
	}
	asA := h.ConnAs(hubtest.KeyPair(joined.GetCertificatePem(), k.key))
	if _, err := pb.NewJoinServiceClient(asA).Renew(ctx, &pb.RenewRequest{CsrPem: newSpokeKey(t, clusterID("a")).csr}); err != nil {
		t.Fatal(err)
	}
	if _, err := pb.NewSyncServiceClient(asA).Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "a", Region: "r"}}); err != nil {
		t.Fatal(err)
	}
	st := openSession(t, ctx, pb.NewSyncServiceClient(asA), "a")
	if err := st.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if err := ended(t, st); !errors.Is(err, io.EOF) {
		t.Fatalf("the stream the spoke closed ended with %v, want EOF", err)
	}
	if _, err := h.Admin().RevokeCluster(ctx, &pb.RevokeClusterRequest{ClusterId: "a"}); err != nil {
		t.Fatal(err)
	}
	for msg, component := range map[string]string{
		"bootstrap token created":     "hub-admin",
		"join request recorded":       "hub-join",
		"join request approved":       "hub-admin",
		"cluster certificate renewed": "hub-join",
		"cluster registered":          "hub-sync",
		"spoke session started":       "hub-sync",
		"cluster revoked":             "hub-admin",
	} {
		var got []string
		for _, r := range h.logs.find(msg) {
			got = append(got, r.attrs["component"])
		}
		if len(got) != 1 || got[0] != component {
			t.Errorf("%q logged under components %q; want once under %s", msg, got, component)
		}
	}
	testkit.Eventually(t, 5*time.Second, "the closed stream counted as ended with OK", func() error {
		if got := promtest.Value(t, h.Registry, "spillway_hub_sync_streams_ended_total", "OK"); got != 1 {
			return fmt.Errorf("spillway_hub_sync_streams_ended_total{code=OK} = %v, want 1", got)
		}
		return nil
	})
}
