package server

import (
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/fleetpb"
	pb "github.com/spillway-io/spillway/proto/spillway/v1"
)

// FuzzSyncRequest feeds arbitrary bytes through what the hub does with a spoke's message: decode,
// validate, convert. Nothing may panic, and what validates must convert without loss of the fields
// the hub stores.
func FuzzSyncRequest(f *testing.F) {
	for _, m := range []*pb.SyncRequest{
		{Msg: &pb.SyncRequest_Hello{Hello: &pb.Hello{ClusterId: "a", SpokeIncarnation: "i", CapacityInterest: []*pb.PoolRef{{Namespace: "default", Name: "chat"}}}}},
		{Msg: &pb.SyncRequest_Exports{Exports: &pb.ExportDelta{Seq: 1, ReplaceAll: true, Upserts: []*pb.Export{{Pool: &pb.PoolRef{Namespace: "default", Name: "chat"}, TargetPorts: []uint32{8000}, Labels: map[string]string{"app": "chat"}}}}}},
		{Msg: &pb.SyncRequest_Capacity{Capacity: &pb.CapacityReport{Pools: []*pb.PoolCapacity{{Pool: &pb.PoolRef{Namespace: "default", Name: "chat"}, ReadyEndpoints: 1, TotalEndpoints: 2, KvCacheUtilization: 0.5, Saturation: 0.2, LoraAdapters: []string{"x"}}}}}},
		{Msg: &pb.SyncRequest_Imports{Imports: &pb.ImportReport{Pools: []*pb.PoolImportStatus{{Pool: &pb.PoolRef{Namespace: "default", Name: "chat"}, Imported: true}, {Pool: &pb.PoolRef{Namespace: "ml", Name: "chat"}, Reason: "NamespaceNotFound", Message: "namespace ml does not exist"}}}}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m pb.SyncRequest
		if proto.Unmarshal(data, &m) != nil {
			return
		}
		switch msg := m.GetMsg().(type) {
		case *pb.SyncRequest_Hello:
			_ = ValidateHello(msg.Hello)
		case *pb.SyncRequest_Exports:
			if ValidateExportDelta(msg.Exports) == nil {
				for _, e := range msg.Exports.GetUpserts() {
					got := fleetpb.ExportFrom(e)
					if got.Pool.Name != e.GetPool().GetName() || len(got.TargetPorts) != len(e.GetTargetPorts()) {
						t.Fatalf("conversion lost data: %+v from %v", got, e)
					}
				}
			}
		case *pb.SyncRequest_Capacity:
			if ValidateCapacityReport(msg.Capacity) == nil {
				for _, c := range msg.Capacity.GetPools() {
					got := fleetpb.CapacityFrom(c)
					if got.KVCacheUtilization < 0 || got.KVCacheUtilization > 1 || got.ReadyEndpoints > got.TotalEndpoints {
						t.Fatalf("validated capacity out of range: %+v", got)
					}
				}
			}
		case *pb.SyncRequest_Imports:
			if ValidateImportReport(msg.Imports) == nil {
				seen := map[fleet.PoolRef]bool{}
				for _, st := range fleetpb.PoolImportStatusesFrom(msg.Imports) {
					if seen[st.Pool] || len(st.Reason) > maxReasonLen || (st.Imported && st.Reason != "") {
						t.Fatalf("validated a bad import status: %+v", st)
					}
					seen[st.Pool] = true
				}
			}
		}
	})
}

func FuzzClusterInfo(f *testing.F) {
	f.Add("us-east-1", "us-east", "us-east-1a", "10.0.0.1:8080", "v1")
	f.Add("", "", "", "[::1]:70000", "")
	f.Fuzz(func(t *testing.T, id, region, zone, gw, version string) {
		c := &pb.ClusterInfo{ClusterId: id, Region: region, Zone: zone, GatewayAddress: gw, Version: version}
		if ValidateClusterInfo(c) == nil {
			if id == "" || region == "" || len(id) > 253 || len(version) > 64 {
				t.Fatalf("accepted %+v", c)
			}
		}
	})
}
