package hubclient

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-io/spillway/pkg/fleet"
)

// labelRule is the label of spillway_spoke_exports_left_out: fleet.RuleNamespace or
// fleet.RuleExportLimit.
const labelRule = "rule"

// labelReason is the label of spillway_spoke_import_withdrawals_held: why the withdrawals are
// held, heldIncomplete or heldDamping.
const labelReason = "reason"

const (
	// heldIncomplete: withdrawn by an update the hub marked incomplete, waiting for a complete one.
	heldIncomplete = "incomplete"
	// heldDamping: held by the mass-deletion guard for its damping period.
	heldDamping = "damping"
)

type metrics struct {
	connected   prometheus.Gauge
	reconnects  prometheus.Counter
	viewUpdates *prometheus.CounterVec
	exportAcks  prometheus.Counter
	// hopKeyUpdates counts the hop key sets received.
	hopKeyUpdates prometheus.Counter
	// leftOut counts the pools left out of the exports, by the rule that refuses them.
	leftOut *prometheus.GaugeVec
	// withdrawalsHeld counts the imports the view keeps though the hub withdrew them, by reason.
	withdrawalsHeld *prometheus.GaugeVec
	// observer is 1 while the client runs observer sessions.
	observer prometheus.Gauge
	// failovers counts sessions started on another hub address than the last one.
	failovers prometheus.Counter
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
		leftOut: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "spillway_spoke_exports_left_out",
			Help: "Pools marked for export that the spoke does not export because the hub's export policy refuses them, by rule (namespace, limit).",
		}, []string{labelRule}),
		withdrawalsHeld: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "spillway_spoke_import_withdrawals_held",
			Help: "Imports the spoke keeps though the hub's view withdrew them, by reason: incomplete (the update was marked incomplete; waiting for a complete one) or damping (the mass-deletion guard holds them for its damping period).",
		}, []string{labelReason}),
		observer: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "spillway_spoke_hub_observer",
			Help: "1 while the spoke's hub sessions are observer sessions (view only; another replica holds the full session), else 0.",
		}),
		failovers: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spillway_spoke_hub_failovers_total",
			Help: "Hub sessions started on another hub address than the previous session's.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.connected, m.reconnects, m.viewUpdates, m.exportAcks, m.hopKeyUpdates, m.leftOut, m.withdrawalsHeld, m.observer, m.failovers)
	}
	for _, r := range []string{heldIncomplete, heldDamping} {
		m.withdrawalsHeld.WithLabelValues(r)
	}
	for _, k := range []string{"snapshot", "delta"} {
		m.viewUpdates.WithLabelValues(k)
	}
	m.setLeftOut(nil)
	return m
}

// setLeftOut sets spillway_spoke_exports_left_out from what the export policy refuses.
func (m *metrics) setLeftOut(refused map[fleet.PoolRef]fleet.ExportRefusal) {
	n := map[string]int{fleet.RuleNamespace: 0, fleet.RuleExportLimit: 0}
	for _, r := range refused {
		n[r.Rule]++
	}
	for rule, v := range n {
		m.leftOut.WithLabelValues(rule).Set(float64(v))
	}
}
