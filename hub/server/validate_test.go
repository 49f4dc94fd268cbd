package server

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"k8s.io/apimachinery/pkg/util/validation"

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
				seen := map[fleet.PoolRef]bool{}
				for _, e := range msg.Exports.GetUpserts() {
					got := fleetpb.ExportFrom(e)
					if got.Pool.Name != e.GetPool().GetName() || len(got.TargetPorts) != len(e.GetTargetPorts()) {
						t.Fatalf("conversion lost data: %+v from %v", got, e)
					}
					seen[got.Pool] = true
				}
				for _, p := range poolsFrom(msg.Exports.GetRemoves()) {
					if seen[p] {
						t.Fatalf("validated a delta listing %v twice", p)
					}
					seen[p] = true
				}
				if len(seen) != len(msg.Exports.GetUpserts())+len(msg.Exports.GetRemoves()) {
					t.Fatalf("validated a delta listing a pool twice: %v", msg.Exports)
				}
			}
		case *pb.SyncRequest_Capacity:
			if ValidateCapacityReport(msg.Capacity) == nil {
				seen := map[fleet.PoolRef]bool{}
				for _, c := range msg.Capacity.GetPools() {
					got := fleetpb.CapacityFrom(c)
					if got.KVCacheUtilization < 0 || got.KVCacheUtilization > 1 || got.ReadyEndpoints > got.TotalEndpoints {
						t.Fatalf("validated capacity out of range: %+v", got)
					}
					seen[got.Pool] = true
				}
				for _, p := range poolsFrom(msg.Capacity.GetRemoved()) {
					seen[p] = true
				}
				if len(seen) != len(msg.Capacity.GetPools())+len(msg.Capacity.GetRemoved()) {
					t.Fatalf("validated a report listing a pool twice: %v", msg.Capacity)
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

func TestValidateNamesRejects(t *testing.T) {
	pool := func(ns, name string) error {
		return ValidateExportDelta(&pb.ExportDelta{Seq: 1, Upserts: []*pb.Export{{Pool: &pb.PoolRef{Namespace: ns, Name: name}, TargetPorts: []uint32{8000}}}})
	}
	for _, tc := range []struct {
		name string
		err  error
		want string
	}{
		{"region not a label", ValidateClusterInfo(&pb.ClusterInfo{ClusterId: "a", Region: "US_East"}),
			`cluster.region: "US_East": a lowercase RFC 1123 label must consist of`},
		{"region with dots", ValidateClusterInfo(&pb.ClusterInfo{ClusterId: "a", Region: "us.east"}),
			`cluster.region: "us.east": must not contain dots`},
		{"cluster ID not a subdomain", ValidateClusterInfo(&pb.ClusterInfo{ClusterId: "a..b", Region: "r"}),
			`cluster.cluster_id: "a..b": a lowercase RFC 1123 subdomain must consist of`},
		{"cluster ID too long", ValidateClusterInfo(&pb.ClusterInfo{ClusterId: strings.Repeat("a", 254), Region: "r"}),
			"cluster.cluster_id: 254 bytes, at most 253 allowed"},
		{"empty zone is fine, bad zone is not", ValidateClusterInfo(&pb.ClusterInfo{ClusterId: "a", Region: "r", Zone: "-z"}),
			`cluster.zone: "-z": a lowercase RFC 1123 label`},
		{"empty region", ValidateClusterInfo(&pb.ClusterInfo{ClusterId: "a"}), "cluster.region: must not be empty"},
		{"label key", ValidateClusterInfo(&pb.ClusterInfo{ClusterId: "a", Region: "r", Labels: map[string]string{"bad key": "x"}}), `cluster.labels: key "bad key"`},
		{"label value", ValidateClusterInfo(&pb.ClusterInfo{ClusterId: "a", Region: "r", Labels: map[string]string{"team": "-ml"}}), `cluster.labels: value of "team"`},
		{"pool namespace", pool("Default", "chat"), `exports.upserts[0].pool.namespace: "Default": a lowercase RFC 1123 label`},
		{"pool name", pool("default", "chat_v2"), `exports.upserts[0].pool.name: "chat_v2": a lowercase RFC 1123 subdomain`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !errors.Is(tc.err, ErrInvalidArgument) || !strings.Contains(tc.err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrInvalidArgument mentioning %q", tc.err, tc.want)
			}
		})
	}
	if err := ValidateClusterInfo(&pb.ClusterInfo{ClusterId: "eu-west-1.example", Region: "eu-west", Zone: "eu-west-1a",
		Labels: map[string]string{"team": "ml", "spillway.io/tier": "gold", "empty": ""}}); err != nil {
		t.Fatalf("a valid registration was rejected: %v", err)
	}
	if err := pool("default", "chat.v2"); err != nil {
		t.Fatalf("a pool name that is a DNS-1123 subdomain was rejected: %v", err)
	}
}

// FuzzReportsResponse feeds arbitrary bytes through what a replica does with a peer's batch of
// reports: decode, validate, convert. Nothing may panic, and what validates converts to reports
// with a named cluster, a pool and an age that is not negative.
func FuzzReportsResponse(f *testing.F) {
	chat := &pb.PoolRef{Namespace: "default", Name: "chat"}
	for _, m := range []*pb.ReportsResponse{
		{HubId: "hub-0", HubIncarnation: "abc", Snapshot: true,
			Capacity: []*pb.RemoteCapacity{{ClusterId: "a", Capacity: &pb.PoolCapacity{Pool: chat, ReadyEndpoints: 1, TotalEndpoints: 1}, Age: durationpb.New(time.Second)}},
			Imports:  []*pb.PeerImportReport{{ClusterId: "a", Pools: []*pb.PoolImportStatus{{Pool: chat, Imported: true}}}},
		},
		{HubId: "hub-1", HubIncarnation: "def", CapacityRemoved: []*pb.CapacityKey{{ClusterId: "b", Pool: chat}}, SessionsEnded: []string{"c"}},
	} {
		b, _ := proto.Marshal(m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var m pb.ReportsResponse
		if proto.Unmarshal(data, &m) != nil || ValidateReports(&m) != nil {
			return
		}
		now := time.Now()
		for _, c := range m.GetCapacity() {
			rc := fleetpb.RemoteCapacityFromAt(c, now)
			if rc.ClusterID == "" || rc.Capacity.Pool.Name == "" || rc.ReceivedAt.After(now) {
				t.Fatalf("validated a bad capacity report: %+v", rc)
			}
		}
		for _, r := range m.GetImports() {
			for _, st := range fleetpb.PoolImportStatusesFrom(&pb.ImportReport{Pools: r.GetPools()}) {
				if st.Pool.Name == "" || (st.Imported && st.Reason != "") {
					t.Fatalf("validated a bad import status: %+v", st)
				}
			}
		}
	})
}

func TestValidateReports(t *testing.T) {
	chat := &pb.PoolRef{Namespace: "default", Name: "chat"}
	good := func() *pb.ReportsResponse {
		return &pb.ReportsResponse{HubId: "hub-0", HubIncarnation: "abc",
			Capacity: []*pb.RemoteCapacity{{ClusterId: "a", Capacity: &pb.PoolCapacity{Pool: chat, ReadyEndpoints: 1, TotalEndpoints: 1}, Age: durationpb.New(time.Second)}},
			Imports:  []*pb.PeerImportReport{{ClusterId: "a", Pools: []*pb.PoolImportStatus{{Pool: chat, Imported: true}}}}}
	}
	for _, tc := range []struct {
		name   string
		change func(m *pb.ReportsResponse)
		says   string
	}{
		{"good", func(*pb.ReportsResponse) {}, ""},
		{"no hub ID", func(m *pb.ReportsResponse) { m.HubId = "" }, "hub_id"},
		{"no incarnation", func(m *pb.ReportsResponse) { m.HubIncarnation = "" }, "hub_incarnation"},
		{"capacity without cluster", func(m *pb.ReportsResponse) { m.Capacity[0].ClusterId = "" }, "capacity[0].cluster_id"},
		{"capacity without report", func(m *pb.ReportsResponse) { m.Capacity[0].Capacity = nil }, "capacity[0].capacity: missing"},
		{"capacity out of range", func(m *pb.ReportsResponse) { m.Capacity[0].Capacity.KvCacheUtilization = 2 }, "kv_cache_utilization"},
		{"negative age", func(m *pb.ReportsResponse) { m.Capacity[0].Age = durationpb.New(-time.Second) }, "capacity[0].age"},
		{"more failed endpoints than the pool has", func(m *pb.ReportsResponse) {
			m.Capacity[0].Capacity.ScrapeFailures = map[string]uint32{"refused": 2}
		}, "scrape_failures"},
		{"a failure kind without a name", func(m *pb.ReportsResponse) { m.Capacity[0].Capacity.ScrapeFailures = map[string]uint32{"": 1} }, "scrape_failures"},
		{"too many failure kinds", func(m *pb.ReportsResponse) {
			m.Capacity[0].Capacity.ScrapeFailures = map[string]uint32{}
			for i := range 9 {
				m.Capacity[0].Capacity.ScrapeFailures[fmt.Sprint("kind-", i)] = 0
			}
		}, "scrape_failures"},
		{"a prefix sketch", func(m *pb.ReportsResponse) {
			m.Capacity[0].Capacity.PrefixSketch = &pb.PrefixSketch{Bloom: make([]byte, 4096), HashFunctions: 11, Sample: 8, BlockBytes: 64}
		}, ""},
		{"a prefix sketch too large", func(m *pb.ReportsResponse) {
			m.Capacity[0].Capacity.PrefixSketch = &pb.PrefixSketch{Bloom: make([]byte, 32768), HashFunctions: 11, Sample: 8, BlockBytes: 64}
		}, "prefix_sketch"},
		{"a prefix sketch sampling no power of two", func(m *pb.ReportsResponse) {
			m.Capacity[0].Capacity.PrefixSketch = &pb.PrefixSketch{Bloom: make([]byte, 4096), HashFunctions: 11, Sample: 6, BlockBytes: 64}
		}, "prefix_sketch"},
		{"GPU utilisation", func(m *pb.ReportsResponse) { m.Capacity[0].Capacity.GpuUtilization = proto.Float64(0.5) }, ""},
		{"GPU utilisation out of range", func(m *pb.ReportsResponse) { m.Capacity[0].Capacity.GpuUtilization = proto.Float64(1.5) }, "gpu_utilization"},
		{"an endpoint's GPU utilisation out of range", func(m *pb.ReportsResponse) {
			m.Capacity[0].Capacity.Endpoints = []*pb.EndpointCapacity{{Address: "10.0.0.1:8000", GpuUtilization: proto.Float64(-0.1)}}
		}, "gpu_utilization"},
		{"models", func(m *pb.ReportsResponse) {
			m.Capacity[0].Capacity.Models = []string{"meta-llama/Llama-3.1-8B-Instruct"}
		}, ""},
		{"a model without a name", func(m *pb.ReportsResponse) { m.Capacity[0].Capacity.Models = []string{""} }, "models"},
		{"too many models", func(m *pb.ReportsResponse) {
			for i := range 65 {
				m.Capacity[0].Capacity.Models = append(m.Capacity[0].Capacity.Models, fmt.Sprint("model-", i))
			}
		}, "models"},
		{"import report twice", func(m *pb.ReportsResponse) { m.Imports = append(m.Imports, m.Imports[0]) }, "listed twice"},
		{"bad ended cluster", func(m *pb.ReportsResponse) { m.SessionsEnded = []string{"Not A Cluster"} }, "sessions_ended[0]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := good()
			tc.change(m)
			err := ValidateReports(m)
			switch {
			case tc.says == "" && err != nil:
				t.Fatalf("ValidateReports = %v, want nil", err)
			case tc.says != "" && (err == nil || !strings.Contains(err.Error(), tc.says)):
				t.Fatalf("ValidateReports = %v, want it to say %q", err, tc.says)
			}
		})
	}
}

// FuzzIsDNS1123: the validation's fast path agrees with apimachinery's on every string, for
// labels and subdomains.
func FuzzIsDNS1123(f *testing.F) {
	for _, s := range []string{"chat", "a-b", "-a", "a-", "a.b", "a..b", ".a", "a.", "a-.b", "a.-b", "A", "a_b", "", "0", strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a.", 127) + "a"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := isDNS1123(s, true), len(validation.IsDNS1123Label(s)) == 0; got != want {
			t.Errorf("label %q: fast path %v, apimachinery %v", s, got, want)
		}
		if got, want := isDNS1123(s, false), len(validation.IsDNS1123Subdomain(s)) == 0; got != want {
			t.Errorf("subdomain %q: fast path %v, apimachinery %v", s, got, want)
		}
	})
}
