package server

import "github.com/prometheus/client_golang/prometheus"

const (
	labelKind   = "kind"
	labelCode   = "code"
	labelMethod = "method"
)

type metrics struct {
	sessions    prometheus.Gauge
	received    *prometheus.CounterVec
	viewUpdates *prometheus.CounterVec
	rejected    *prometheus.CounterVec
	panics      *prometheus.CounterVec
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
		panics: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_hub_grpc_handler_panics_total",
			Help: "Panics recovered in gRPC handlers (and the goroutines of a Sync stream), by full method name; each ended its call with Internal. Any is a bug: the log has its stack.",
		}, []string{labelMethod}),
	}
	if reg != nil {
		reg.MustRegister(m.sessions, m.received, m.viewUpdates, m.rejected, m.panics)
	}
	for _, k := range []string{"hello", "exports", "capacity", "interest", "imports"} {
		m.received.WithLabelValues(k)
	}
	for _, k := range []string{"snapshot", "delta"} {
		m.viewUpdates.WithLabelValues(k)
	}
	return m
}
