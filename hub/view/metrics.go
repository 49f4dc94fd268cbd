package view

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-io/spillway/pkg/fleet"
)

// FleetCollector exports the fleet view as metrics: the registered clusters by region and state,
// and each exported pool's capacity summed per region, which an autoscaler or a dashboard reads
// from the hub instead of from every cluster. The labels are bounded by what the registry holds
// (pools and regions, never clusters or endpoints), and the values are read from the view at
// each scrape.
//
// Every replica of the hub holds the whole fleet and exports the same values: a query takes the
// max over the replicas (max by (pool, region)), never their sum.
type FleetCollector struct {
	model *Model
	now   func() time.Time

	clusters, poolClusters, ready, endpoints, queued, running, kvCache, saturation,
	saturated, spilling, age, spilled *prometheus.Desc

	mu sync.Mutex
	// lastSpilled holds each cluster's pool's spilled count at the previous scrape; flows the
	// requests counted since, summed by pool, source region and target region.
	lastSpilled map[fleet.CapacityKey]uint64
	flows       map[spillFlow]uint64
}

// spillFlow is one series of spillway_hub_pool_spilled_requests_total.
type spillFlow struct {
	pool, region, target string
}

// NewFleetCollector returns the collector of m's fleet metrics.
func NewFleetCollector(m *Model) *FleetCollector {
	pool := []string{"pool", "region"}
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return &FleetCollector{
		model:        m,
		now:          m.now,
		clusters:     d("spillway_hub_clusters", "Registered clusters by region and state (alive: its spoke holds a session; gone: its session lease lapsed).", "region", "state"),
		poolClusters: d("spillway_hub_pool_clusters", "Clusters of the region that export the pool and reported its capacity.", pool...),
		ready:        d("spillway_hub_pool_ready_endpoints", "Ready endpoints of the pool in the region (the sum of its clusters' last reports).", pool...),
		endpoints:    d("spillway_hub_pool_endpoints", "Endpoints of the pool in the region, ready or not.", pool...),
		queued:       d("spillway_hub_pool_queued_requests", "Requests waiting in the model servers' queues of the pool in the region.", pool...),
		running:      d("spillway_hub_pool_running_requests", "Requests running on the model servers of the pool in the region.", pool...),
		kvCache:      d("spillway_hub_pool_kv_cache_utilization_ratio", "KV-cache utilization of the pool in the region: its clusters' means, weighted by their ready endpoints.", pool...),
		saturation:   d("spillway_hub_pool_saturation_ratio", "Saturation of the pool in the region (0 idle, 1 at the EPP's thresholds): its clusters', weighted by their ready endpoints.", pool...),
		saturated:    d("spillway_hub_pool_saturated_clusters", "Clusters of the region whose pool is saturated.", pool...),
		spilling:     d("spillway_hub_pool_spilling_clusters", "Clusters of the region that send the pool's traffic to another cluster.", pool...),
		age:          d("spillway_hub_pool_capacity_age_seconds", "Age of the oldest capacity report the hub holds for the pool in the region (spokes resend unchanged capacity every --capacity-heartbeat).", pool...),
		spilled: d("spillway_hub_pool_spilled_requests_total", "Requests of the pool that clusters of the region sent to another cluster, by the region they went to (the target each cluster reported when the hub was scraped).",
			"pool", "region", "target_region"),
		lastSpilled: map[fleet.CapacityKey]uint64{},
		flows:       map[spillFlow]uint64{},
	}
}

// Describe implements prometheus.Collector.
func (c *FleetCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.clusters, c.poolClusters, c.ready, c.endpoints, c.queued, c.running, c.kvCache,
		c.saturation, c.saturated, c.spilling, c.age, c.spilled} {
		ch <- d
	}
}

// poolRegion sums one pool's capacity over the clusters of one region.
type poolRegion struct {
	clusters, ready, endpoints, queued, running, saturated, spilling int
	kvCache, saturation, weight                                      float64
	oldest                                                           time.Time
}

// Collect implements prometheus.Collector.
func (c *FleetCollector) Collect(ch chan<- prometheus.Metric) {
	now := c.now()
	type regionState struct{ region, state string }
	counts := map[regionState]int{}
	for _, cl := range c.model.Clusters() {
		state := "alive"
		if cl.State != fleet.StateAlive {
			state = "gone"
		}
		counts[regionState{cl.Info.Region, state}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.clusters, prometheus.GaugeValue, float64(n), k.region, k.state)
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	seen := make(map[fleet.CapacityKey]bool, len(c.lastSpilled))
	pools := map[string]bool{}
	for _, p := range c.model.Pools() {
		pool := p.Pool.String()
		pools[pool] = true
		regions := map[string]*poolRegion{}
		for _, mem := range p.Members {
			if mem.Capacity == nil {
				continue
			}
			region := mem.Cluster.Info.Region
			r := regions[region]
			if r == nil {
				r = &poolRegion{}
				regions[region] = r
			}
			cp := mem.Capacity.Capacity
			r.clusters++
			r.ready += int(cp.ReadyEndpoints)
			r.endpoints += int(cp.TotalEndpoints)
			r.queued += int(cp.QueueDepth)
			r.running += int(cp.RunningRequests)
			// A cluster with no ready endpoint still counts, as one, so that a region where
			// none is ready shows its saturation (1) rather than nothing.
			w := float64(max(cp.ReadyEndpoints, 1))
			r.kvCache += w * cp.KVCacheUtilization
			r.saturation += w * cp.Saturation
			r.weight += w
			if cp.Saturated {
				r.saturated++
			}
			if cp.Spilling {
				r.spilling++
			}
			if r.oldest.IsZero() || mem.Capacity.ReceivedAt.Before(r.oldest) {
				r.oldest = mem.Capacity.ReceivedAt
			}

			k := fleet.CapacityKey{ClusterID: mem.Cluster.Info.ID, Pool: p.Pool}
			seen[k] = true
			last, known := c.lastSpilled[k]
			c.lastSpilled[k] = cp.SpilledTotal
			delta := cp.SpilledTotal - last
			switch {
			case !known:
				// The first report seen counts nothing: what the cluster spilled before this
				// hub knew it was counted elsewhere, if at all.
				delta = 0
			case cp.SpilledTotal < last:
				delta = cp.SpilledTotal // the spoke restarted and counts from 0 again
			}
			target := cp.SpillTargetRegion
			if delta > 0 || (cp.Spilling && target != "") {
				c.flows[spillFlow{pool: pool, region: region, target: target}] += delta
			}
		}
		for region, r := range regions {
			gauge := func(d *prometheus.Desc, v float64) {
				ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, pool, region)
			}
			gauge(c.poolClusters, float64(r.clusters))
			gauge(c.ready, float64(r.ready))
			gauge(c.endpoints, float64(r.endpoints))
			gauge(c.queued, float64(r.queued))
			gauge(c.running, float64(r.running))
			gauge(c.kvCache, r.kvCache/r.weight)
			gauge(c.saturation, r.saturation/r.weight)
			gauge(c.saturated, float64(r.saturated))
			gauge(c.spilling, float64(r.spilling))
			gauge(c.age, max(now.Sub(r.oldest), 0).Seconds())
		}
	}
	for k := range c.lastSpilled {
		if !seen[k] {
			delete(c.lastSpilled, k)
		}
	}
	for f, n := range c.flows {
		if !pools[f.pool] {
			delete(c.flows, f) // the pool is no longer exported anywhere
			continue
		}
		ch <- prometheus.MustNewConstMetric(c.spilled, prometheus.CounterValue, float64(n), f.pool, f.region, f.target)
	}
}
