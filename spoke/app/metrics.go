package app

import "github.com/prometheus/client_golang/prometheus"

// metrics are the spoke's own metrics (its components register theirs).
type metrics struct {
	// leader is 1 while this replica does the leader's work: the full hub session and the
	// Kubernetes writes.
	leader prometheus.Gauge
	// eppPools counts the pools the spoke's EPPs serve.
	eppPools prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spillway_spoke_leader",
			Help: "1 while this spoke replica leads its cluster's replicas (holds the Lease spillway-spoke-<cluster-id>, or runs alone): it runs the full hub session and every Kubernetes write; 0 on the others.",
		}),
		eppPools: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spillway_spoke_epp_pools",
			Help: "Pools whose EPP this spoke serves: 1 with --epp-pool, those naming --epp-service that have a listener with it.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.leader, m.eppPools)
	}
	return m
}
