package gossip

import "github.com/prometheus/client_golang/prometheus"

// register adds the member's metrics to reg (nil: none). They are read at scrape time.
func (m *Member) register(reg prometheus.Registerer) error {
	if reg == nil {
		return nil
	}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "spillway_gossip_members",
			Help: "Members of the fleet gossip this one counts alive or suspect, itself included.",
		}, func() float64 { return float64(m.ml.NumMembers()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "spillway_gossip_unreachable_members",
			Help: "Members this one pings (the clusters a spoke would spill to) that answered none of its pings for the last second.",
		}, func() float64 { return float64(m.reach.count()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "spillway_gossip_health_score",
			Help: "memberlist's local health (Lifeguard awareness): 0 is healthy; more means this member misses answers and probes more slowly.",
		}, func() float64 { return float64(m.ml.GetHealthScore()) }),
		m.gone,
	} {
		if err := reg.Register(c); err != nil {
			return err
		}
	}
	return nil
}
