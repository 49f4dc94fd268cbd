package server_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/spillway-io/spillway/e2e/hubtest"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

func TestBadRequestsGetClearErrors(t *testing.T) {
	h := hubtest.Start(t, 5*time.Second)
	cli := pb.NewSyncServiceClient(h.ConnAs(hubtest.Cluster("a"), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(16<<20))))
	ctx := context.Background()

	_, err := cli.Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "Bad_ID", Region: "", GatewayAddress: "nope"}})
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
	_, err = h.SyncAs("b").Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "Bad_ID", Region: ""}})
	wantStatus(t, err, codes.InvalidArgument, "cluster.cluster_id", "cluster.region")
	never, err := h.SyncAs("b").Sync(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := never.Send(hello("b")); err != nil {
		t.Fatal(err)
	}
	_, err = never.Recv()
	wantStatus(t, err, codes.FailedPrecondition, "call Register first")

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
	resp, err := h.Admin().ListImports(ctx, &pb.ListImportsRequest{})
	if err != nil || len(resp.GetImports()) != 0 {
		t.Fatalf("imports after rejected requests: %v, %v", resp, err)
	}
	_, err = h.Admin().GetCluster(ctx, &pb.GetClusterRequest{ClusterId: "zzz"})
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
