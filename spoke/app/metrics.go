package app

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	endpoints *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "spillway_spoke_endpoints",
			Help: "Local endpoints by metrics freshness (fresh, stale).",
		}, []string{"freshness"}),
	}
	reg.MustRegister(m.endpoints)
	return m
}
