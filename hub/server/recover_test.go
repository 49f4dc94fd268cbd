package server_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/hub/server"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// panicky is the hub's AdminService with two handlers that panic, a unary one and a stream.
type panicky struct{ *server.Server }

func (panicky) GetCluster(context.Context, *pb.GetClusterRequest) (*pb.GetClusterResponse, error) {
	panic("a bug in GetCluster")
}

func (panicky) Watch(*pb.WatchRequest, pb.AdminService_WatchServer) error {
	panic("a bug in Watch")
}

// TestPanicEndsOneCallOnly: a panic in a handler ends that call with Internal, is logged with the
// method and its stack and counted; the hub goes on serving, a spoke's session included.
func TestPanicEndsOneCallOnly(t *testing.T) {
	h := startHub(t, hubOptions{admin: func(s *server.Server) pb.AdminServiceServer { return panicky{s} }})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := h.SyncAs("a").Register(ctx, &pb.RegisterRequest{Cluster: &pb.ClusterInfo{ClusterId: "a", Region: "us-east"}}); err != nil {
		t.Fatal(err)
	}
	spoke := openSession(t, ctx, h.SyncAs("a"), "a")

	_, err := h.Admin().GetCluster(ctx, &pb.GetClusterRequest{ClusterId: "a"})
	wantStatus(t, err, codes.Internal, "internal error in the hub")
	watch, err := h.Admin().Watch(ctx, &pb.WatchRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = watch.Recv()
	wantStatus(t, err, codes.Internal, "internal error in the hub")

	// Later calls succeed, and the session opened before the panics is still live.
	// (The view follows etcd, so the session may take a moment to show.)
	testkit.Eventually(t, 5*time.Second, "a alive in a call after the panics", func() error {
		resp, err := h.Admin().ListClusters(ctx, &pb.ListClustersRequest{})
		if err != nil {
			t.Fatalf("a call after the panics: %v", err)
		}
		if cs := resp.GetClusters(); len(cs) != 1 || cs[0].GetState() != pb.ClusterState_CLUSTER_STATE_ALIVE {
			return fmt.Errorf("clusters %v, want a alive", cs)
		}
		return nil
	})
	if err := spoke.Send(capacityReport(2)); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 5*time.Second, "the spoke's report after the panics", testkit.True(func() bool {
		caps := h.capacityOf("a")
		return len(caps) == 1 && caps[0].QueueDepth == 2
	}))

	for _, method := range []string{pb.AdminService_GetCluster_FullMethodName, pb.AdminService_Watch_FullMethodName} {
		if n := promtest.Value(t, h.Registry, "spillway_hub_grpc_handler_panics_total", method); n != 1 {
			t.Errorf("spillway_hub_grpc_handler_panics_total{method=%q} = %v, want 1", method, n)
		}
		var logged bool
		for _, r := range h.logs.find("panic in a gRPC handler recovered; the call ends with Internal") {
			if r.attrs["method"] == method {
				logged = true
				if !strings.Contains(r.attrs["stack"], "server_test.panicky.") || !strings.Contains(r.attrs["panic"], "a bug in") {
					t.Errorf("log of the panic in %s: %v, want the panic value and a stack through the handler", method, r.attrs)
				}
			}
		}
		if !logged {
			t.Errorf("the panic in %s was not logged", method)
		}
	}
}
