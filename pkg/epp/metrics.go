package epp

import "github.com/prometheus/client_golang/prometheus"

const (
	labelObjective = "objective"
	labelModel     = "model"
	labelResult    = "result"
	labelReason    = "reason"
	labelPriority  = "priority"

	resultRouted      = "routed"
	resultShed        = "shed"
	resultNoEndpoints = "no_endpoints"
	resultInvalid     = "invalid"
	resultTooLarge    = "too_large"
	resultSpilled     = "spilled"
)

// Metrics are the EPP's metrics, Spillway's and GIE's names, for every Server of a process: a
// spoke serving several pools runs a Server per pool, which share one set. Spillway's series are
// labelled by objective and model, GIE's inference_pool_* by pool name.
type Metrics struct {
	m     *metrics
	pools *giePoolCollector
}

// NewMetrics returns the metrics and registers them with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{m: newMetrics(reg), pools: newGIEPoolCollector()}
	if reg != nil {
		// GIE's names, beside Spillway's (gie_metrics.go).
		reg.MustRegister(m.m.gie.collectors()...)
		reg.MustRegister(m.pools)
	}
	return m
}

type metrics struct {
	requests     *prometheus.CounterVec
	ttft         *prometheus.HistogramVec
	duration     *prometheus.HistogramVec
	inputTokens  *prometheus.CounterVec
	outputTokens *prometheus.CounterVec
	scheduling   prometheus.Histogram
	spilled      *prometheus.CounterVec
	fallbacks    prometheus.Counter
	panics       prometheus.Counter
	hopRejected  *prometheus.CounterVec
	// holds and holdTime are flow control's (flow.go).
	holds    *prometheus.CounterVec
	holdTime prometheus.Histogram
	// gie are GIE's names for the same measures (gie_metrics.go).
	gie *gieMetrics
}

func newMetrics(reg prometheus.Registerer) *metrics {
	labels := []string{labelObjective, labelModel}
	// The latencies carry the request's priority class as well (an objective has one), so that a
	// dashboard shows them by priority without knowing the objectives.
	latencyLabels := []string{labelObjective, labelModel, labelPriority}
	latency := []float64{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60}
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_epp_requests_total",
			Help: "Requests the EPP decided, by objective, model and result (routed, spilled, shed, no_endpoints, invalid, too_large).",
		}, []string{labelObjective, labelModel, labelResult}),
		ttft: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "spillway_epp_request_ttft_seconds",
			Help:    "Time from the request's headers to the first byte of its response body, by objective, model and priority class (critical, standard, besteffort).",
			Buckets: latency,
		}, latencyLabels),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "spillway_epp_request_duration_seconds",
			Help:    "Time from the request's headers to the end of its response, by objective, model and priority class.",
			Buckets: latency,
		}, latencyLabels),
		inputTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_epp_input_tokens_total",
			Help: "Prompt tokens of responses that reported usage, by objective and model.",
		}, labels),
		outputTokens: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_epp_output_tokens_total",
			Help: "Completion tokens of responses that reported usage, by objective and model.",
		}, labels),
		scheduling: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "spillway_epp_scheduling_duration_seconds",
			Help:    "Time to parse, admit and pick an endpoint for a request.",
			Buckets: prometheus.ExponentialBuckets(0.00001, 4, 10),
		}),
		spilled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_epp_spilled_requests_total",
			Help: "Requests sent to another cluster, by reason (saturated, no_endpoints, import_only), priority class (critical, standard, besteffort) and target region.",
		}, []string{labelReason, labelPriority, "region"}),
		fallbacks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spillway_epp_spill_fallbacks_total",
			Help: "Requests that should have left the cluster, found no remote target, and were served on the spill policy's fallback pool or model.",
		}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "spillway_epp_panics_total",
			Help: "Request streams that ended in a recovered panic (a bug): each failed that one request with Internal.",
		}),
		hopRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_epp_hop_markers_rejected_total",
			Help: "Hop markers (x-spillway-hop) that did not verify, by reason (malformed, unknown_key, bad_signature, wrong_destination, expired); each such request was routed as a fresh one.",
		}, []string{labelReason}),
		holds: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_epp_flow_holds_total",
			Help: "Requests flow control held while their pool was saturated, by how the hold ended (released, timed_out, queue_full, client_gone).",
		}, []string{labelResult}),
		holdTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "spillway_epp_flow_hold_duration_seconds",
			Help:    "Time requests were held by flow control.",
			Buckets: latency,
		}),
	}
	m.gie = newGIEMetrics()
	for _, r := range hopReasons {
		m.hopRejected.WithLabelValues(r) // every reason exists from the start, at 0
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.ttft, m.duration, m.inputTokens, m.outputTokens, m.scheduling, m.spilled, m.fallbacks, m.panics, m.hopRejected,
			m.holds, m.holdTime)
	}
	return m
}

func (m *metrics) result(objective, model, result string) {
	m.requests.WithLabelValues(objective, model, result).Inc()
}

// priorityClass bounds the priority label: critical (≥ 100), standard (≥ 0), besteffort.
func priorityClass(p int) string {
	switch {
	case p >= 100:
		return "critical"
	case p >= 0:
		return "standard"
	}
	return "besteffort"
}
