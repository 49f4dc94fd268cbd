package view

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/hub/registry"
	"github.com/spillway-io/spillway/pkg/fleet"
)

// fleetOf registers each cluster in its region, with a live session unless it is listed in
// gone, and exports chat from every live one.
func fleetOf(m *Model, regions map[string]string, gone ...string) {
	var evs []registry.Event
	for id, region := range regions {
		evs = append(evs, registry.Event{Kind: registry.KindCluster, Cluster: id, ClusterRecord: registry.ClusterRecord{Info: fleet.ClusterInfo{ID: id, Region: region}}})
		if !strings.Contains(strings.Join(gone, ","), id) {
			evs = append(evs, sessionEvents(id)...)
			evs = append(evs, exportEvent(id, false))
		}
	}
	m.Apply(evs)
}

func TestFleetCollectorSumsPoolsByRegion(t *testing.T) {
	now := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	m := New()
	m.now = func() time.Time { return now }
	fleetOf(m, map[string]string{"a": "east", "b": "east", "c": "west", "d": "west"}, "d")
	m.ReportCapacity("a", []fleet.PoolCapacity{{Pool: chat, ReadyEndpoints: 2, TotalEndpoints: 3, QueueDepth: 4, RunningRequests: 5, KVCacheUtilization: 0.5, Saturation: 0.4}}, nil)
	now = now.Add(3 * time.Second)
	m.ReportCapacity("b", []fleet.PoolCapacity{{Pool: chat, TotalEndpoints: 1, Saturation: 1, Saturated: true}}, nil)
	m.ReportCapacity("c", []fleet.PoolCapacity{{Pool: chat, ReadyEndpoints: 4, TotalEndpoints: 4, QueueDepth: 9, RunningRequests: 8, KVCacheUtilization: 0.9,
		Saturation: 1, Saturated: true, Spilling: true, SpillTarget: "a", SpillTargetRegion: "east", SpilledTotal: 10}}, nil)
	now = now.Add(time.Second)
	c := NewFleetCollector(m)

	// east: a's 2 ready endpoints weigh twice b's none (counted as one): KV-cache
	// (2×0.5 + 1×0)/3, saturation (2×0.4 + 1×1)/3; its oldest report is a's, 4 s old.
	want := `
# HELP spillway_hub_clusters Registered clusters by region and state (alive: its spoke holds a session; gone: its session lease lapsed).
# TYPE spillway_hub_clusters gauge
spillway_hub_clusters{region="east",state="alive"} 2
spillway_hub_clusters{region="west",state="alive"} 1
spillway_hub_clusters{region="west",state="gone"} 1
# HELP spillway_hub_pool_capacity_age_seconds Age of the oldest capacity report the hub holds for the pool in the region (spokes resend unchanged capacity every --capacity-heartbeat).
# TYPE spillway_hub_pool_capacity_age_seconds gauge
spillway_hub_pool_capacity_age_seconds{pool="default/chat",region="east"} 4
spillway_hub_pool_capacity_age_seconds{pool="default/chat",region="west"} 1
# HELP spillway_hub_pool_kv_cache_utilization_ratio KV-cache utilization of the pool in the region: its clusters' means, weighted by their ready endpoints.
# TYPE spillway_hub_pool_kv_cache_utilization_ratio gauge
spillway_hub_pool_kv_cache_utilization_ratio{pool="default/chat",region="east"} 0.3333333333333333
spillway_hub_pool_kv_cache_utilization_ratio{pool="default/chat",region="west"} 0.9
# HELP spillway_hub_pool_queued_requests Requests waiting in the model servers' queues of the pool in the region.
# TYPE spillway_hub_pool_queued_requests gauge
spillway_hub_pool_queued_requests{pool="default/chat",region="east"} 4
spillway_hub_pool_queued_requests{pool="default/chat",region="west"} 9
# HELP spillway_hub_pool_ready_endpoints Ready endpoints of the pool in the region (the sum of its clusters' last reports).
# TYPE spillway_hub_pool_ready_endpoints gauge
spillway_hub_pool_ready_endpoints{pool="default/chat",region="east"} 2
spillway_hub_pool_ready_endpoints{pool="default/chat",region="west"} 4
# HELP spillway_hub_pool_saturated_clusters Clusters of the region whose pool is saturated.
# TYPE spillway_hub_pool_saturated_clusters gauge
spillway_hub_pool_saturated_clusters{pool="default/chat",region="east"} 1
spillway_hub_pool_saturated_clusters{pool="default/chat",region="west"} 1
# HELP spillway_hub_pool_saturation_ratio Saturation of the pool in the region (0 idle, 1 at the EPP's thresholds): its clusters', weighted by their ready endpoints.
# TYPE spillway_hub_pool_saturation_ratio gauge
spillway_hub_pool_saturation_ratio{pool="default/chat",region="east"} 0.6
spillway_hub_pool_saturation_ratio{pool="default/chat",region="west"} 1
# HELP spillway_hub_pool_spilled_requests_total Requests of the pool that clusters of the region sent to another cluster, by the region they went to (the target each cluster reported when the hub was scraped).
# TYPE spillway_hub_pool_spilled_requests_total counter
spillway_hub_pool_spilled_requests_total{pool="default/chat",region="west",target_region="east"} 0
# HELP spillway_hub_pool_spilling_clusters Clusters of the region that send the pool's traffic to another cluster.
# TYPE spillway_hub_pool_spilling_clusters gauge
spillway_hub_pool_spilling_clusters{pool="default/chat",region="east"} 0
spillway_hub_pool_spilling_clusters{pool="default/chat",region="west"} 1
`
	names := []string{"spillway_hub_clusters", "spillway_hub_pool_capacity_age_seconds", "spillway_hub_pool_kv_cache_utilization_ratio",
		"spillway_hub_pool_queued_requests", "spillway_hub_pool_ready_endpoints", "spillway_hub_pool_saturated_clusters",
		"spillway_hub_pool_saturation_ratio", "spillway_hub_pool_spilled_requests_total", "spillway_hub_pool_spilling_clusters"}
	if err := testutil.CollectAndCompare(c, strings.NewReader(want), names...); err != nil {
		t.Fatal(err)
	}

	// What c spilled before the hub first saw it is not counted; what it spills after is, and
	// a restarted spoke's count from 0 adds to it.
	spilled := func(total uint64) float64 {
		t.Helper()
		m.ReportCapacity("c", []fleet.PoolCapacity{{Pool: chat, ReadyEndpoints: 4, Spilling: true, SpillTargetRegion: "east", SpilledTotal: total}}, nil)
		reg := promtest.NewRegistry()
		reg.MustRegister(c)
		return promtest.Value(t, reg, "spillway_hub_pool_spilled_requests_total", "default/chat", "west", "east")
	}
	if got := spilled(25); got != 15 {
		t.Fatalf("after 15 more spilled: counter %v, want 15", got)
	}
	if got := spilled(3); got != 18 {
		t.Fatalf("after the spoke restarted and spilled 3: counter %v, want 18", got)
	}

	// Once no cluster exports the pool, none of its series remain.
	m.Apply([]registry.Event{exportEvent("a", true), exportEvent("b", true), exportEvent("c", true)})
	if n := testutil.CollectAndCount(c, names[1:]...); n != 0 {
		t.Fatalf("%d pool series after the pool's last export went, want none", n)
	}
}

func TestFleetMetricNames(t *testing.T) {
	m := New()
	fleetOf(m, map[string]string{"a": "east"})
	m.ReportCapacity("a", []fleet.PoolCapacity{{Pool: chat, Spilling: true, SpillTargetRegion: "west"}}, nil)
	reg := promtest.NewRegistry()
	reg.MustRegister(NewFleetCollector(m))
	promtest.CheckGolden(t, reg, "hub", "testdata/metrics.golden")
}
