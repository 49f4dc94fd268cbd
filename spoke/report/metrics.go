package report

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-io/spillway/pkg/fleet"
)

// labelFreshness is the label of spillway_spoke_endpoints, one of freshnessFresh and
// freshnessStale.
const (
	labelFreshness = "freshness"
	freshnessFresh = "fresh"
	freshnessStale = "stale"
)

type metrics struct {
	endpoints *prometheus.GaugeVec
	// The capacity of each local pool as the spoke reports it to the hub, by pool
	// (namespace/name): what an autoscaler of the pool's model servers reads.
	ready, queued, running, kvCache, saturation, spilling *prometheus.GaugeVec
	pools                                                 map[string]bool // the pools with series
}

func newMetrics(reg prometheus.Registerer) *metrics {
	pool := func(name, help string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, []string{"pool"})
	}
	m := &metrics{
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "spillway_spoke_endpoints",
			Help: "Local endpoints by metrics freshness (fresh, stale).",
		}, []string{labelFreshness}),
		ready:      pool("spillway_spoke_pool_ready_endpoints", "Ready endpoints of the local pool (namespace/name)."),
		queued:     pool("spillway_spoke_pool_queued_requests", "Requests waiting in the queues of the local pool's model servers (the sum of their queue lengths)."),
		running:    pool("spillway_spoke_pool_running_requests", "Requests running on the local pool's model servers."),
		kvCache:    pool("spillway_spoke_pool_kv_cache_utilization_ratio", "Mean KV-cache utilization of the local pool's ready endpoints."),
		saturation: pool("spillway_spoke_pool_saturation_ratio", "Saturation of the local pool (0 idle, 1 at the EPP's thresholds), as reported to the hub."),
		spilling:   pool("spillway_spoke_pool_spilling", "1 while the EPP sends the pool's spillable traffic to another cluster, else 0."),
		pools:      map[string]bool{},
	}
	if reg != nil {
		reg.MustRegister(m.endpoints, m.ready, m.queued, m.running, m.kvCache, m.saturation, m.spilling)
	}
	return m
}

// setPools sets the pool gauges from a report and deletes the series of pools no longer in it.
func (m *metrics) setPools(caps []fleet.PoolCapacity) {
	seen := make(map[string]bool, len(caps))
	for _, c := range caps {
		p := c.Pool.String()
		seen[p] = true
		m.ready.WithLabelValues(p).Set(float64(c.ReadyEndpoints))
		m.queued.WithLabelValues(p).Set(float64(c.QueueDepth))
		m.running.WithLabelValues(p).Set(float64(c.RunningRequests))
		m.kvCache.WithLabelValues(p).Set(c.KVCacheUtilization)
		m.saturation.WithLabelValues(p).Set(c.Saturation)
		spilling := 0.0
		if c.Spilling {
			spilling = 1
		}
		m.spilling.WithLabelValues(p).Set(spilling)
	}
	for p := range m.pools {
		if !seen[p] {
			for _, g := range []*prometheus.GaugeVec{m.ready, m.queued, m.running, m.kvCache, m.saturation, m.spilling} {
				g.DeleteLabelValues(p)
			}
		}
	}
	m.pools = seen
}
