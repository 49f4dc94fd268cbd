package report

import "github.com/prometheus/client_golang/prometheus"

// labelFreshness is the label of spillway_spoke_endpoints, one of freshnessFresh and
// freshnessStale.
const (
	labelFreshness = "freshness"
	freshnessFresh = "fresh"
	freshnessStale = "stale"
)

type metrics struct {
	endpoints *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		endpoints: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "spillway_spoke_endpoints",
			Help: "Local endpoints by metrics freshness (fresh, stale).",
		}, []string{labelFreshness}),
	}
	if reg != nil {
		reg.MustRegister(m.endpoints)
	}
	return m
}
