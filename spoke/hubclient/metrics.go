package hubclient

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	connected   prometheus.Gauge
	reconnects  prometheus.Counter
	viewUpdates *prometheus.CounterVec
	exportAcks  prometheus.Counter
	// hopKeyUpdates counts the hop key sets received.
	hopKeyUpdates prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spillway_spoke_hub_connected",
			Help: "1 while the spoke holds a sync session with the hub, else 0.",
		}),
		reconnects: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spillway_spoke_hub_reconnects_total",
			Help: "Hub sync sessions that ended and were retried.",
		}),
		viewUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_spoke_view_updates_received_total",
			Help: "Fleet view updates received from the hub, by kind (snapshot, delta).",
		}, []string{"kind"}),
		exportAcks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spillway_spoke_export_acks_received_total",
			Help: "Export deltas the hub acknowledged as stored.",
		}),
		hopKeyUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spillway_spoke_hop_key_updates_received_total",
			Help: "Sets of hop-marker keys received from the hub.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.reconnects, m.viewUpdates, m.exportAcks, m.hopKeyUpdates)
	}
	for _, k := range []string{"snapshot", "delta"} {
		m.viewUpdates.WithLabelValues(k)
	}
	return m
}
