package app

import "github.com/prometheus/client_golang/prometheus"

// metrics are the spoke's own metrics (its components register theirs).
type metrics struct {
	// leader is 1 while this replica does the leader's work: the full hub session and the
	// Kubernetes writes.
	leader prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spillway_spoke_leader",
			Help: "1 while this spoke replica leads its cluster's replicas (holds the Lease spillway-spoke-<cluster-id>, or runs alone): it runs the full hub session and every Kubernetes write; 0 on the others.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.leader)
	}
	return m
}
