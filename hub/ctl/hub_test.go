package ctl

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/spillway-io/spillway/e2e/hubtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// fleet registers two clusters through the real SyncService and exports one pool from both.
func fleet(t *testing.T) *hubtest.Hub {
	t.Helper()
	h := hubtest.Start(t, 10*time.Second)
	cli := pb.NewSyncServiceClient(h.Conn())
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for i, c := range []*pb.ClusterInfo{
		{ClusterId: "us-east-1", Region: "us-east", Zone: "us-east-1a", GatewayAddress: "10.0.1.1:80", Version: "test"},
		{ClusterId: "eu-west-1", Region: "eu-west", GatewayAddress: "10.0.2.1:80", Version: "test"},
	} {
		if _, err := cli.Register(ctx, &pb.RegisterRequest{Cluster: c}); err != nil {
			t.Fatal(err)
		}
		st, err := cli.Sync(ctx)
		if err != nil {
			t.Fatal(err)
		}
		chat := &pb.PoolRef{Namespace: "default", Name: "chat"}
		target, region := "", "" // the second cluster is spilling to the first
		if i == 1 {
			target, region = "us-east-1", "us-east"
		}
		for _, m := range []*pb.SyncRequest{
			{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{ClusterId: c.GetClusterId(), SpokeIncarnation: "i"}}},
			{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []*pb.Export{{Pool: chat, TargetPorts: []uint32{8000}}}}}},
			{Msg: &pb.SyncRequest_Capacity{Capacity: &pb.CapacityReport{Pools: []*pb.PoolCapacity{{
				Pool: chat, ReadyEndpoints: uint32(3 - i), TotalEndpoints: 3, QueueDepth: uint32(7 * i), RunningRequests: 8,
				KvCacheUtilization: 0.5, Saturation: 0.4 + 0.6*float64(i), Saturated: i == 1, LoraAdapters: []string{"sql-lora"},
				Spilling: i == 1, SpillTarget: target, SpillTargetRegion: region,
			}}}}},
		} {
			if err := st.Send(m); err != nil {
				t.Fatal(err)
			}
		}
	}
	testkit.Eventually(t, 5*time.Second, "fleet in the view", func() error {
		pools := h.Model.Pools()
		if len(pools) == 1 && len(pools[0].Members) == 2 && pools[0].Members[0].Capacity != nil && pools[0].Members[1].Capacity != nil {
			return nil
		}
		return fmt.Errorf("pools %+v: want one with two members and their capacity", pools)
	})
	return h
}

func TestGetGolden(t *testing.T) {
	h := fleet(t)
	for _, what := range []string{"clusters", "pools", "imports"} {
		for _, format := range []string{"table", "json", "yaml"} {
			t.Run(what+"-"+format, func(t *testing.T) {
				got, err := run(t, "--hub", h.Addr, "get", what, "-o", format)
				if err != nil {
					t.Fatalf("%v\n%s", err, got)
				}
				testkit.Golden(t, filepath.Join("testdata", what+"."+format), []byte(got))
			})
		}
	}
}
