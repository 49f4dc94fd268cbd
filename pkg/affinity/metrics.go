package affinity

import "github.com/prometheus/client_golang/prometheus"

// Label of spillway_epp_affinity_dropped_blocks_total: why a block hash was not applied or not
// sent.
const (
	labelReason = "reason"
	// reasonQueueFull: the send queue was full and dropped its oldest hashes.
	reasonQueueFull = "queue_full"
	// reasonUnknownEndpoint: a received hash named an endpoint this replica does not serve.
	reasonUnknownEndpoint = "unknown_endpoint"
)

type metrics struct {
	replicas prometheus.Gauge
	sent     prometheus.Counter
	messages prometheus.Counter
	received prometheus.Counter
	dropped  *prometheus.CounterVec
	// queueFull and unknownEndpoint are dropped's children, resolved once: Added increments
	// queueFull on the request's path.
	queueFull, unknownEndpoint prometheus.Counter
	malformed                  prometheus.Counter
	snapshot                   prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		replicas: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spillway_epp_affinity_replicas",
			Help: "EPP replicas of this cluster in the replica ring, this one included.",
		}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spillway_epp_affinity_sent_blocks_total",
			Help: "Prefix block hashes of local picks sent to the other replicas (once per hash, whatever the number of replicas).",
		}),
		messages: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spillway_epp_affinity_sent_messages_total",
			Help: "Messages (UDP packets) of block hashes sent, one per replica reached.",
		}),
		received: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spillway_epp_affinity_received_blocks_total",
			Help: "Prefix block hashes received from other replicas and added to the local index.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_epp_affinity_dropped_blocks_total",
			Help: "Prefix block hashes dropped: queue_full (the send queue overflowed; the oldest went), unknown_endpoint (received for an endpoint this replica does not serve).",
		}, []string{labelReason}),
		malformed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spillway_epp_affinity_malformed_messages_total",
			Help: "Messages from the replica ring that could not be read and were ignored.",
		}),
		snapshot: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spillway_epp_affinity_snapshot_blocks_total",
			Help: "Prefix block hashes received in the index snapshots a replica gets when it joins the ring.",
		}),
	}
	m.queueFull = m.dropped.WithLabelValues(reasonQueueFull)
	m.unknownEndpoint = m.dropped.WithLabelValues(reasonUnknownEndpoint)
	if reg != nil {
		reg.MustRegister(m.replicas, m.sent, m.messages, m.received, m.dropped, m.malformed, m.snapshot)
	}
	return m
}
