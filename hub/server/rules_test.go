package server_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/hub/server"
	"github.com/spillway-io/spillway/pkg/fleet"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// session is a Sync stream of cluster and reads its answers in the background; msgs holds
// them, errc the error that ends the stream.
type session struct {
	st   pb.SyncService_SyncClient
	msgs chan *pb.SyncResponse
	errc chan error
}

// incarnations numbers the spoke incarnations of startSession: each session starts afresh.
var incarnations atomic.Int64

func startSession(t *testing.T, ctx context.Context, h *testHub, cluster string) *session {
	t.Helper()
	st, err := h.SyncAs(cluster).Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	inc := fmt.Sprintf("inc-%d", incarnations.Add(1))
	if err := st.Send(&pb.SyncRequest{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{ClusterId: cluster, SpokeIncarnation: inc}}}); err != nil {
		t.Fatal(err)
	}
	s := &session{st: st, msgs: make(chan *pb.SyncResponse, 1024), errc: make(chan error, 1)}
	go func() {
		for {
			m, err := st.Recv()
			if err != nil {
				s.errc <- err
				return
			}
			s.msgs <- m
		}
	}()
	return s
}

func (s *session) send(t *testing.T, m *pb.SyncRequest) {
	t.Helper()
	if err := s.st.Send(m); err != nil {
		t.Fatalf("send: %v", err)
	}
}

// next returns the next answer that match picks, failing the test when the stream ends first
// or none comes within 10 s.
func (s *session) next(t *testing.T, what string, match func(*pb.SyncResponse) bool) *pb.SyncResponse {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m := <-s.msgs:
			if match(m) {
				return m
			}
		case err := <-s.errc:
			t.Fatalf("the stream ended waiting for %s: %v", what, err)
		case <-timeout:
			t.Fatalf("no %s within 10 s", what)
		}
	}
}

// ack waits for the export ack of seq.
func (s *session) ack(t *testing.T, seq uint64) {
	t.Helper()
	s.next(t, fmt.Sprintf("the ack of %d", seq), func(m *pb.SyncResponse) bool { return m.GetExportAck().GetSeq() == seq })
}

// end returns the error that ends the stream, failing the test when it does not end within 10 s.
func (s *session) end(t *testing.T) error {
	t.Helper()
	select {
	case err := <-s.errc:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("the stream did not end within 10 s")
		return nil
	}
}

func exportsOf(pools ...*pb.PoolRef) []*pb.Export {
	var out []*pb.Export
	for _, p := range pools {
		out = append(out, &pb.Export{Pool: p, TargetPorts: []uint32{8000}})
	}
	return out
}

func exportsMsg(seq uint64, replaceAll bool, upserts []*pb.Export, removes ...*pb.PoolRef) *pb.SyncRequest {
	return &pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: seq, ReplaceAll: replaceAll, Upserts: upserts, Removes: removes}}}
}

func capacityOf(pools ...*pb.PoolRef) *pb.SyncRequest {
	r := &pb.CapacityReport{}
	for _, p := range pools {
		r.Pools = append(r.Pools, &pb.PoolCapacity{Pool: p, ReadyEndpoints: 1, TotalEndpoints: 1, QueueDepth: 9})
	}
	return &pb.SyncRequest{Msg: &pb.SyncRequest_Capacity{Capacity: r}}
}

// exportedBy returns the pools the registry stores as cluster's exports.
func (h *testHub) exportedBy(t *testing.T, ctx context.Context, cluster string) map[fleet.PoolRef]bool {
	t.Helper()
	st, err := h.Store.Load(ctx)
	if err != nil {
		t.Fatal(err)
	}
	out := map[fleet.PoolRef]bool{}
	for p := range st.Exports[cluster] {
		out[p] = true
	}
	return out
}

var (
	code  = &pb.PoolRef{Namespace: "default", Name: "code"}
	other = &pb.PoolRef{Namespace: "default", Name: "other"}
)

// TestSpokeReportsOnlyWhatItOwns: capacity only for pools the cluster exports (the check reads
// the session's own export set, so a report right after the delta that exports the pool is
// accepted), exports only in namespaces the hub allows, no contradictory messages, and a
// replayed delta changes nothing. Each refusal ends the stream with its status and changes
// nothing else.
func TestSpokeReportsOnlyWhatItOwns(t *testing.T) {
	h := startHub(t, hubOptions{hub: hubtest.Options{Limits: server.Limits{
		DeniedExportNamespaces:  server.DefaultDeniedExportNamespaces(),
		AllowedExportNamespaces: []string{"default", "kube-system", "ml"},
	}}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h.register(t, ctx, "a", "")
	h.register(t, ctx, "b", "")
	b := startSession(t, ctx, h, "b")
	b.send(t, exportsMsg(1, true, exportsOf(chat)))
	b.ack(t, 1)
	b.send(t, capacityOf(chat))
	testkit.Eventually(t, 5*time.Second, "b's capacity in the view", testkit.True(func() bool { return len(h.capacityOf("b")) == 1 }))

	// a exports code and reports it at once, but reports b's pool chat, which a does not export.
	a := startSession(t, ctx, h, "a")
	a.send(t, exportsMsg(1, true, exportsOf(code)))
	a.send(t, capacityOf(code))
	a.send(t, capacityOf(chat))
	wantStatus(t, a.end(t), codes.PermissionDenied, "cluster a reports capacity for default/chat, which it does not export")
	if caps := h.capacityOf("a"); len(caps) != 1 || caps[0].Pool.Name != "code" {
		t.Fatalf("a's capacity in the view: %+v, want code's only", caps)
	}

	for _, tc := range []struct {
		name string
		msgs []*pb.SyncRequest
		code codes.Code
		says string
	}{
		{"an export in a denied namespace", []*pb.SyncRequest{exportsMsg(1, true, exportsOf(chat, &pb.PoolRef{Namespace: "kube-system", Name: "x"}))},
			codes.PermissionDenied, "cluster a may not export kube-system/x: namespace kube-system is denied for exports"},
		{"an export outside the allowed namespaces", []*pb.SyncRequest{exportsMsg(1, true, exportsOf(&pb.PoolRef{Namespace: "team-x", Name: "x"}))},
			codes.PermissionDenied, "namespace team-x is not among the hub's --allowed-export-namespaces"},
		{"a pool upserted and removed", []*pb.SyncRequest{exportsMsg(1, true, exportsOf(chat), chat)},
			codes.InvalidArgument, "exports.removes[0]: default/chat is also in upserts"},
		{"a pool upserted twice", []*pb.SyncRequest{exportsMsg(1, true, exportsOf(chat, chat))},
			codes.InvalidArgument, "exports.upserts[1].pool: default/chat listed twice"},
		{"a pool reported twice", []*pb.SyncRequest{exportsMsg(1, true, exportsOf(code)), capacityOf(code, code)},
			codes.InvalidArgument, "capacity.pools[1].pool: default/code listed twice"},
		{"a pool reported and removed", []*pb.SyncRequest{exportsMsg(1, true, exportsOf(code)), {Msg: &pb.SyncRequest_Capacity{Capacity: &pb.CapacityReport{
			Pools: capacityOf(code).GetCapacity().GetPools(), Removed: []*pb.PoolRef{code}}}}},
			codes.InvalidArgument, "capacity.removed[0]: default/code is also in pools"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSession(t, ctx, h, "a")
			for _, m := range tc.msgs {
				s.send(t, m)
			}
			wantStatus(t, s.end(t), tc.code, tc.says)
		})
	}
	// None of it reached the registry: a never exported chat, b still does.
	if got := h.exportedBy(t, ctx, "a"); got[fleet.PoolRef{Namespace: "default", Name: "chat"}] || len(got) > 1 {
		t.Fatalf("a's exports after the refusals: %v", got)
	}
	if got := h.exportedBy(t, ctx, "b"); len(got) != 1 {
		t.Fatalf("b's exports: %v", got)
	}
	if got := promtest.Value(t, h.Registry, "spillway_hub_auth_denied_total", "not_exported"); got != 1 {
		t.Errorf("spillway_hub_auth_denied_total{reason=not_exported} = %v, want 1", got)
	}
	if got := promtest.Value(t, h.Registry, "spillway_hub_auth_denied_total", "namespace"); got != 2 {
		t.Errorf("spillway_hub_auth_denied_total{reason=namespace} = %v, want 2", got)
	}

	// Replays: a delta at or below the acked sequence number changes nothing and is acked with
	// the current number.
	r := startSession(t, ctx, h, "a")
	r.send(t, exportsMsg(1, true, exportsOf(chat)))
	r.ack(t, 1)
	r.send(t, exportsMsg(2, false, exportsOf(code)))
	r.ack(t, 2)
	r.send(t, exportsMsg(1, true, exportsOf(other)))
	r.send(t, exportsMsg(2, false, nil, chat))
	r.ack(t, 2)
	r.ack(t, 2)
	if got := h.exportedBy(t, ctx, "a"); len(got) != 2 || !got[fleet.PoolRef{Namespace: "default", Name: "chat"}] || !got[fleet.PoolRef{Namespace: "default", Name: "code"}] {
		t.Fatalf("a's exports after replays: %v, want chat and code", got)
	}
	// The replayed set did not become the session's either: capacity for other is refused.
	r.send(t, capacityOf(other))
	wantStatus(t, r.end(t), codes.PermissionDenied, "default/other, which it does not export")
}

// TestWelcomeAnnouncesTheExportPolicy: the Welcome carries the namespace rules and the export
// cap the hub enforces, so that an honest spoke can leave out what would be refused; a spoke that
// sends it anyway is still refused and its stream ends. A hub without limits announces none.
func TestWelcomeAnnouncesTheExportPolicy(t *testing.T) {
	h := startHub(t, hubOptions{hub: hubtest.Options{Limits: server.Limits{
		DeniedExportNamespaces:  server.DefaultDeniedExportNamespaces(),
		AllowedExportNamespaces: []string{"default", "ml"},
		MaxExportsPerCluster:    2,
	}}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h.register(t, ctx, "a", "")
	a := startSession(t, ctx, h, "a")
	w := a.next(t, "the welcome", func(m *pb.SyncResponse) bool { return m.GetWelcome() != nil }).GetWelcome()
	if got, want := w.GetDeniedExportNamespaces(), server.DefaultDeniedExportNamespaces(); !slices.Equal(got, want) {
		t.Errorf("denied_export_namespaces = %v, want %v", got, want)
	}
	if got := w.GetAllowedExportNamespaces(); !slices.Equal(got, []string{"default", "ml"}) {
		t.Errorf("allowed_export_namespaces = %v, want [default ml]", got)
	}
	if got := w.GetMaxExports(); got != 2 {
		t.Errorf("max_exports = %d, want 2", got)
	}
	// What the Welcome announces is what the hub enforces.
	a.send(t, exportsMsg(1, true, exportsOf(&pb.PoolRef{Namespace: w.GetDeniedExportNamespaces()[0], Name: "x"})))
	wantStatus(t, a.end(t), codes.PermissionDenied, "namespace kube-system is denied for exports by the hub (--denied-export-namespaces)")

	open := startHub(t, hubOptions{})
	open.register(t, ctx, "a", "")
	o := startSession(t, ctx, open, "a")
	w = o.next(t, "the welcome", func(m *pb.SyncResponse) bool { return m.GetWelcome() != nil }).GetWelcome()
	if len(w.GetDeniedExportNamespaces()) != 0 || len(w.GetAllowedExportNamespaces()) != 0 || w.GetMaxExports() != 0 {
		t.Errorf("a hub without limits announces %v", w)
	}
}

// TestLimitsTrip: each limit refuses with ResourceExhausted, changes nothing, and is counted.
func TestLimitsTrip(t *testing.T) {
	h := startHub(t, hubOptions{hub: hubtest.Options{
		Limits:            server.Limits{MaxClusters: 2, MaxExportsPerCluster: 2},
		MinReportInterval: time.Second,
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	limited := func(limit string) float64 {
		return promtest.Value(t, h.Registry, "spillway_hub_limit_exceeded_total", limit)
	}

	h.register(t, ctx, "a", "")
	h.register(t, ctx, "b", "")
	_, err := h.SyncAs("c").Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "c", Region: "r"}})
	wantStatus(t, err, codes.ResourceExhausted, "cluster c cannot register: the hub accepts at most 2 clusters")
	h.register(t, ctx, "a", "10.0.0.1:80") // a registered cluster updates at the limit
	if n := limited("clusters"); n != 1 {
		t.Errorf("spillway_hub_limit_exceeded_total{limit=clusters} = %v, want 1", n)
	}
	if _, err := h.Store.GetCluster(ctx, "c"); !errors.Is(err, registry.ErrNotFound) {
		t.Fatalf("the refused cluster c: %v, want it not registered", err)
	}

	a := startSession(t, ctx, h, "a")
	a.send(t, exportsMsg(1, true, exportsOf(chat, code)))
	a.ack(t, 1)
	a.send(t, exportsMsg(2, false, exportsOf(other)))
	wantStatus(t, a.end(t), codes.ResourceExhausted, "cluster a would export more than 2 pools")
	if got := h.exportedBy(t, ctx, "a"); len(got) != 2 {
		t.Fatalf("a's exports after the refused delta: %v", got)
	}
	if n := limited("exports_per_cluster"); n != 1 {
		t.Errorf("spillway_hub_limit_exceeded_total{limit=exports_per_cluster} = %v, want 1", n)
	}

	// A burst of reports is fine; a flood faster than the announced interval ends the stream.
	f := startSession(t, ctx, h, "a")
	f.send(t, exportsMsg(1, true, exportsOf(chat)))
	f.ack(t, 1)
	for range 200 {
		if err := f.st.Send(capacityOf(chat)); err != nil {
			break
		}
	}
	wantStatus(t, f.end(t), codes.ResourceExhausted, "sends capacity reports faster than one per 1s")
	if n := limited("report_rate"); n != 1 {
		t.Errorf("spillway_hub_limit_exceeded_total{limit=report_rate} = %v, want 1", n)
	}

	// The protocol's caps on one message are counted too (and answered InvalidArgument).
	m := startSession(t, ctx, h, "a")
	many := &pb.ExportDelta{Seq: 1, ReplaceAll: true}
	for i := range 1001 {
		many.Upserts = append(many.Upserts, &pb.Export{Pool: &pb.PoolRef{Namespace: "default", Name: fmt.Sprintf("p%d", i)}, TargetPorts: []uint32{1}})
	}
	m.send(t, &pb.SyncRequest{Msg: &pb.SyncRequest_Exports{Exports: many}})
	wantStatus(t, m.end(t), codes.InvalidArgument, "exports.upserts: 1001 exports, at most 1000 allowed")
	if n := limited("exports_per_delta"); n != 1 {
		t.Errorf("spillway_hub_limit_exceeded_total{limit=exports_per_delta} = %v, want 1", n)
	}
}

// TestUpdateFloodsEndTheStream: interest changes and import reports are limited as capacity
// reports are: a burst such as a spoke's controllers send while they settle is fine, a flood
// ends the stream with ResourceExhausted and is counted.
func TestUpdateFloodsEndTheStream(t *testing.T) {
	h := startHub(t, hubOptions{hub: hubtest.Options{MinReportInterval: time.Second}})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	limited := func(limit string) float64 {
		return promtest.Value(t, h.Registry, "spillway_hub_limit_exceeded_total", limit)
	}
	h.register(t, ctx, "a", "")
	interest := func(i int) *pb.SyncRequest {
		return &pb.SyncRequest{Msg: &pb.SyncRequest_Interest{Interest: &pb.Interest{CapacityInterest: []*pb.PoolRef{{Namespace: "default", Name: fmt.Sprintf("p%d", i)}}}}}
	}
	imports := func(i int) *pb.SyncRequest {
		return &pb.SyncRequest{Msg: &pb.SyncRequest_Imports{Imports: &pb.ImportReport{Pools: []*pb.PoolImportStatus{
			{Pool: chat, Imported: i%2 == 0, Reason: map[bool]string{true: "", false: "Pending"}[i%2 == 0]},
		}}}}
	}
	for _, tc := range []struct {
		name, limit, says string
		msg               func(int) *pb.SyncRequest
	}{
		{"interest", "interest_rate", "cluster a changes its capacity interest faster than once per 1s after 20 changes", interest},
		{"imports", "import_report_rate", "cluster a sends import reports faster than one per 1s after 20 reports", imports},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startSession(t, ctx, h, "a")
			for i := range 20 {
				s.send(t, tc.msg(i))
			}
			// After the burst the stream still works: an export is acknowledged.
			s.send(t, exportsMsg(1, true, exportsOf(chat)))
			s.ack(t, 1)
			for i := range 200 {
				if err := s.st.Send(tc.msg(i)); err != nil {
					break // the hub ended the stream: its status is what Recv returns
				}
			}
			wantStatus(t, s.end(t), codes.ResourceExhausted, tc.says)
			if n := limited(tc.limit); n != 1 {
				t.Errorf("spillway_hub_limit_exceeded_total{limit=%s} = %v, want 1", tc.limit, n)
			}
		})
	}
}

// TestMaxConcurrentStreams: a connection has no more streams at once than the limit; a call
// beyond it waits until a stream ends.
func TestMaxConcurrentStreams(t *testing.T) {
	h := startHub(t, hubOptions{hub: hubtest.Options{Limits: server.Limits{MaxConcurrentStreams: 1}}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	h.register(t, ctx, "a", "")
	cli := pb.NewSyncServiceClient(h.ConnAs(hubtest.Cluster("a")))
	sctx, stop := context.WithCancel(ctx)
	defer stop()
	openSession(t, sctx, cli, "a")
	register := func(d time.Duration) error {
		rctx, cancel := context.WithTimeout(ctx, d)
		defer cancel()
		_, err := cli.Register(rctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "a", Region: "r"}})
		return err
	}
	wantStatus(t, register(time.Second), codes.DeadlineExceeded)
	stop()
	if err := register(10 * time.Second); err != nil {
		t.Fatalf("Register once the stream ended: %v", err)
	}
}
