package server

import "github.com/prometheus/client_golang/prometheus"

const (
	labelKind = "kind"
	labelCode = "code"
)

type metrics struct {
	sessions    prometheus.Gauge
	received    *prometheus.CounterVec
	viewUpdates *prometheus.CounterVec
	rejected    *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spillway_hub_sync_sessions",
			Help: "Spoke sync streams open on this hub replica.",
		}),
		received: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_hub_sync_messages_received_total",
			Help: "Messages received on spoke sync streams, by kind (hello, exports, capacity, interest, imports).",
		}, []string{labelKind}),
		viewUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_hub_view_updates_sent_total",
			Help: "Fleet view updates sent to spokes and watchers, by kind (snapshot, delta).",
		}, []string{labelKind}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_hub_sync_streams_ended_total",
			Help: "Spoke sync streams that ended, by gRPC status code.",
		}, []string{labelCode}),
	}
	if reg != nil {
		reg.MustRegister(m.sessions, m.received, m.viewUpdates, m.rejected)
	}
	for _, k := range []string{"hello", "exports", "capacity", "interest", "imports"} {
		m.received.WithLabelValues(k)
	}
	for _, k := range []string{"snapshot", "delta"} {
		m.viewUpdates.WithLabelValues(k)
	}
	return m
}
