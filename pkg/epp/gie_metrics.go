package epp

import (
	"maps"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-io/spillway/pkg/buildinfo"
	"github.com/spillway-io/spillway/pkg/fleet"
)

// GIE's EPP metric names, exported next to Spillway's own where the meaning is the same, so that
// GIE's Grafana dashboard and alerts read Spillway's EPP. Names, label names, types and buckets
// are GIE v1.5.0's (pkg/epp/metrics/metrics.go and pkg/epp/metrics/collectors/inference_pool.go,
// listed in site-src/guides/metrics-and-observability.md): v1.5.0 is the last GIE release with an
// EPP; v1.6.0 moved it to llm-d/llm-d-router and keeps only the lightweight conformance EPP,
// which exports none of these. docs/epp.md lists them and those left out.
//
// Label values stay bounded as Spillway's own: model_name and target_model_name are configured
// model names or "other" (modelLabel), priority an objective's configured priority or the
// default, name a pool the process's EPPs serve, model_server_pod one of the pool's endpoints.
const (
	gieModel       = "model_name"
	gieTargetModel = "target_model_name"
)

// GIE's error codes (pkg/common/error) for the requests the EPP refuses. GIE has no code for a
// body too large (413); BadRequest is its nearest. GIE's other codes are not counted: Internal
// (a recovered panic is counted in spillway_epp_panics_total only: it may strike before the
// request's model is known), ModelServerError (a response status other than 200: the EPP does
// not record the response's status), Unauthorized, Forbidden and NotFound (no such case).
const (
	gieBadRequest         = "BadRequest"
	gieResourceExhausted  = "ResourceExhausted"
	gieServiceUnavailable = "ServiceUnavailable"
)

// gieErrorCode maps a refused request's result to GIE's code for the same situation.
func gieErrorCode(result string) string {
	switch result {
	case resultShed, resultBudget, resultCapped:
		return gieResourceExhausted // GIE: "system saturated, sheddable request dropped"; a budget's or a cap's 429 alike
	case resultNoEndpoints:
		return gieServiceUnavailable // GIE: "failed to find endpoint candidates"
	case resultInvalid, resultTooLarge:
		return gieBadRequest
	}
	return ""
}

var gieLatencyBuckets = []float64{0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2, 3, 4, 5, 6,
	8, 10, 15, 20, 30, 45, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600}

type gieMetrics struct {
	requests   *prometheus.CounterVec
	errors     *prometheus.CounterVec
	duration   *prometheus.HistogramVec
	ttft       *prometheus.HistogramVec
	reqSizes   *prometheus.HistogramVec
	respSizes  *prometheus.HistogramVec
	inTokens   *prometheus.HistogramVec
	outTokens  *prometheus.HistogramVec
	ntpot      *prometheus.HistogramVec
	running    *prometheus.GaugeVec
	scheduling prometheus.Histogram
	info       *prometheus.GaugeVec
}

func newGIEMetrics() *gieMetrics {
	models := []string{gieModel, gieTargetModel}
	histogram := func(name, help string, buckets []float64) *prometheus.HistogramVec {
		return prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets}, models)
	}
	tokens := []float64{1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32778, 65536, 131072, 262144, 524288, 1048576}
	g := &gieMetrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "inference_objective_request_total",
			Help: "GIE's name: requests routed or spilled, by model, target model and priority."}, []string{gieModel, gieTargetModel, "priority"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "inference_objective_request_error_total",
			Help: "GIE's name: requests refused, by model, target model and GIE's error code (BadRequest, ResourceExhausted, ServiceUnavailable)."},
			[]string{gieModel, gieTargetModel, "error_code"}),
		duration: histogram("inference_objective_request_duration_seconds", "GIE's name: time from the request's headers to the end of its response.", gieLatencyBuckets),
		ttft:     histogram("inference_objective_request_ttft_seconds", "GIE's name: time from the request's headers to the first byte of its response.", gieLatencyBuckets),
		reqSizes: histogram("inference_objective_request_sizes", "GIE's name: request body sizes in bytes.", []float64{
			64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072, 262144, 524288, 1048576, 2097152, 4194304, 8388608,
			16777216, 33554432, 67108864, 134217728, 268435456, 536870912, 1073741824}),
		respSizes: histogram("inference_objective_response_sizes", "GIE's name: response body sizes in bytes.",
			[]float64{1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32778, 65536}),
		inTokens:  histogram("inference_objective_input_tokens", "GIE's name: prompt tokens of responses that reported usage.", tokens),
		outTokens: histogram("inference_objective_output_tokens", "GIE's name: completion tokens of responses that reported usage.", tokens[:12]),
		ntpot: histogram("inference_objective_normalized_time_per_output_token_seconds", "GIE's name: request duration divided by its completion tokens.",
			[]float64{0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0}),
		running: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "inference_objective_running_requests",
			Help: "GIE's name: requests routed here whose response has not ended, by model."}, []string{gieModel}),
		scheduling: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "inference_extension_scheduler_e2e_duration_seconds",
			Help: "GIE's name: time to admit and pick an endpoint for a request.", Buckets: []float64{0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1}}),
		info: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "inference_extension_info",
			Help: "GIE's name: 1, labelled with the build's commit and version."}, []string{"commit", "build_ref"}),
	}
	bi := buildinfo.Get()
	g.info.WithLabelValues(bi.Revision, bi.Version).Set(1)
	return g
}

func (g *gieMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{g.requests, g.errors, g.duration, g.ttft, g.reqSizes, g.respSizes, g.inTokens, g.outTokens, g.ntpot, g.running, g.scheduling, g.info}
}

// decided counts a decided request as GIE does: routed or spilled ones in request_total (and
// their body size), refused ones in request_error_total under GIE's code.
func (g *gieMetrics) decided(model, target string, priority int, result string, bodyBytes int) {
	if code := gieErrorCode(result); code != "" {
		g.errors.WithLabelValues(model, target, code).Inc()
		return
	}
	g.requests.WithLabelValues(model, target, strconv.Itoa(priority)).Inc()
	g.reqSizes.WithLabelValues(model, target).Observe(float64(bodyBytes))
	g.running.WithLabelValues(model).Inc()
}

// finished records a routed request's response.
func (g *gieMetrics) finished(model, target string, duration, ttft time.Duration, respBytes int, u *Usage) {
	g.running.WithLabelValues(model).Dec()
	g.duration.WithLabelValues(model, target).Observe(duration.Seconds())
	if ttft > 0 {
		g.ttft.WithLabelValues(model, target).Observe(ttft.Seconds())
	}
	g.respSizes.WithLabelValues(model, target).Observe(float64(respBytes))
	if u == nil {
		return
	}
	if u.PromptTokens > 0 {
		g.inTokens.WithLabelValues(model, target).Observe(float64(u.PromptTokens))
	}
	if u.CompletionTokens > 0 {
		g.outTokens.WithLabelValues(model, target).Observe(float64(u.CompletionTokens))
		g.ntpot.WithLabelValues(model, target).Observe(duration.Seconds() / float64(u.CompletionTokens))
	}
}

// giePoolCollector reads GIE's pool gauges from the datastore at each scrape: ready Pods (ready
// endpoints: last scrape succeeded) and the averages over them of KV-cache utilisation, waiting
// queue and running requests, labelled with the pool's name; and, as GIE's collector does for
// every Pod of its datastore, each endpoint's waiting queue (the last scraped, 0 before the first
// scrape), labelled with the pool's name and the endpoint's address (ip:port) as
// model_server_pod: the EPP's datastore knows endpoints by address, not Pod name. That label is
// bounded by the pool's size, and the gauge is this EPP's, never aggregated across the fleet.
type giePoolCollector struct {
	mu    sync.RWMutex
	pools map[fleet.PoolRef]Datastore // the pools the process's EPPs serve

	kv, queue, running, ready, podQueue *prometheus.Desc
}

func newGIEPoolCollector() *giePoolCollector {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, append([]string{"name"}, labels...), nil)
	}
	return &giePoolCollector{pools: map[fleet.PoolRef]Datastore{},
		kv:       desc("inference_pool_average_kv_cache_utilization", "GIE's name: the average KV-cache utilisation of the pool's ready endpoints."),
		queue:    desc("inference_pool_average_queue_size", "GIE's name: the average number of requests waiting in the ready endpoints' queues."),
		running:  desc("inference_pool_average_running_requests", "GIE's name: the average number of requests running on the ready endpoints."),
		ready:    desc("inference_pool_ready_pods", "GIE's name: the pool's ready endpoints."),
		podQueue: desc("inference_pool_per_pod_queue_size", "GIE's name: the requests waiting in each endpoint's queue, by endpoint address (model_server_pod).", "model_server_pod"),
	}
}

func (c *giePoolCollector) add(pool fleet.PoolRef, ds Datastore) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.pools[pool] = ds
}

func (c *giePoolCollector) remove(pool fleet.PoolRef) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.pools, pool)
}

func (c *giePoolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.kv
	ch <- c.queue
	ch <- c.running
	ch <- c.ready
	ch <- c.podQueue
}

// Collect reports each pool by name, as GIE does (one pool per EPP there); of two pools with the
// same name in different namespaces, the first by namespace is reported.
func (c *giePoolCollector) Collect(ch chan<- prometheus.Metric) {
	c.mu.RLock()
	refs := slices.SortedFunc(maps.Keys(c.pools), fleet.PoolRef.Compare)
	dss := make([]Datastore, len(refs))
	for i, r := range refs {
		dss[i] = c.pools[r]
	}
	c.mu.RUnlock()
	named := make(map[string]bool, len(refs))
	for i, r := range refs {
		if !named[r.Name] {
			named[r.Name] = true
			c.collect(ch, r, dss[i])
		}
	}
}

func (c *giePoolCollector) collect(ch chan<- prometheus.Metric, pool fleet.PoolRef, ds Datastore) {
	eps, ok := ds.Endpoints(pool, nil)
	if !ok {
		return
	}
	name := pool.Name
	var ready int
	var kv, queue, running float64
	seen := make(map[string]bool, len(eps))
	for _, e := range eps {
		// An address listed twice would be a duplicate series and fail the whole scrape.
		if !seen[e.Address] {
			seen[e.Address] = true
			ch <- prometheus.MustNewConstMetric(c.podQueue, prometheus.GaugeValue, float64(e.Metrics.WaitingQueue), name, e.Address)
		}
		if !e.Ready {
			continue
		}
		ready++
		kv += e.Metrics.KVCacheUsage
		queue += float64(e.Metrics.WaitingQueue)
		running += float64(e.Metrics.Running)
	}
	avg := func(sum float64) float64 {
		if ready == 0 {
			return 0
		}
		return sum / float64(ready)
	}
	ch <- prometheus.MustNewConstMetric(c.kv, prometheus.GaugeValue, avg(kv), name)
	ch <- prometheus.MustNewConstMetric(c.queue, prometheus.GaugeValue, avg(queue), name)
	ch <- prometheus.MustNewConstMetric(c.running, prometheus.GaugeValue, avg(running), name)
	ch <- prometheus.MustNewConstMetric(c.ready, prometheus.GaugeValue, float64(ready), name)
}
