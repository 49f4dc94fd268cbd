package replica

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	leader prometheus.Gauge
	terms  prometheus.Counter
}

// newMetrics makes the replica's metrics and registers them with reg (none when nil).
func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		leader: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spillway_hub_leader",
			Help: "1 while this hub replica holds the leader election and runs the work that must happen once in the fleet, 0 otherwise.",
		}),
		terms: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spillway_hub_leader_terms_total",
			Help: "Times this hub replica became the leader.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.leader, m.terms)
	}
	return m
}
