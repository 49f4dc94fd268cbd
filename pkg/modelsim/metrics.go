package modelsim

import (
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The families, label sets and buckets of a vLLM v0.19 /metrics page, so that a scrape of the
// simulator costs what a scrape of vLLM costs.
var (
	tokenBuckets     = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000}
	iterBuckets      = []float64{1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384}
	nBuckets         = []float64{1, 2, 5, 10, 20}
	ttftBuckets      = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560}
	itlBuckets       = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}
	requestBuckets   = []float64{0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680}
	httpHighrBuckets = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10, 30, 60}
	finishedReasons  = []string{"stop", "length", "abort", "error", "repetition"}
)

type engineMetrics struct {
	reg *prometheus.Registry

	promptTokens, generationTokens, prefixQueries, prefixHits prometheus.Counter
	cachedTokens, computedTokens                              prometheus.Counter
	success                                                   *prometheus.CounterVec
	promptHist, genHist, maxGenHist, paramsN, paramsMax       prometheus.Observer
	iterTokens, ttft, itl, tpot, e2e, queue, inference        prometheus.Observer
	prefill, decode, kvComputed                               prometheus.Observer
	httpRequests                                              *prometheus.CounterVec
	httpDuration                                              prometheus.Observer
	httpHandlerDuration                                       *prometheus.HistogramVec
	httpRequestSize, httpResponseSize                         *prometheus.SummaryVec
}

func newEngineMetrics(e *Engine) *engineMetrics {
	reg := prometheus.NewRegistry()
	cl := prometheus.Labels{"engine": "0", "model_name": e.cfg.Model}
	created := float64(time.Now().UnixNano()) / 1e9
	counter := func(name, help string) prometheus.Counter {
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: name + "_total", Help: help, ConstLabels: cl})
		reg.MustRegister(c, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name + "_created", Help: help, ConstLabels: cl},
			func() float64 { return created }))
		return c
	}
	hist := func(name, help string, buckets []float64) prometheus.Observer {
		h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: name, Help: help, Buckets: buckets, ConstLabels: cl})
		reg.MustRegister(h, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name + "_created", Help: help, ConstLabels: cl},
			func() float64 { return created }))
		return h
	}
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: cl}, f))
	}
	m := &engineMetrics{reg: reg}

	// Process and runtime families of the Python server, constant here.
	for gen, v := range []float64{16896, 2259, 391} {
		l := prometheus.Labels{"generation": strconv.Itoa(gen)}
		reg.MustRegister(
			constGauge("python_gc_objects_collected_total", "Objects collected during gc", l, v),
			constGauge("python_gc_objects_uncollectable_total", "Uncollectable objects found during GC", l, 0),
			constGauge("python_gc_collections_total", "Number of times this generation was collected", l, v/12),
		)
	}
	reg.MustRegister(constGauge("python_info", "Python platform information",
		prometheus.Labels{"implementation": "CPython", "major": "3", "minor": "12", "patchlevel": "13", "version": "3.12.13"}, 1))

	for _, f := range []string{"estimated_flops_per_gpu", "estimated_read_bytes_per_gpu", "estimated_write_bytes_per_gpu"} {
		counter("vllm:"+f, "Estimated work per GPU (for Model Flops Utilization calculations).")
	}
	gauge("vllm:num_requests_running", "Number of requests in model execution batches.", func() float64 { return float64(e.Stats().Running) })
	gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", func() float64 { return float64(e.Stats().Waiting) })
	gauge("vllm:engine_sleep_state", "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake.", func() float64 { return 1 })
	gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", func() float64 { return e.Stats().KVCacheUsage })
	m.prefixQueries = counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.")
	m.prefixHits = counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.")
	counter("vllm:external_prefix_cache_queries", "External prefix cache queries from KV connector cross-instance cache sharing, in terms of number of queried tokens.")
	counter("vllm:external_prefix_cache_hits", "External prefix cache hits from KV connector cross-instance cache sharing, in terms of number of cached tokens.")
	counter("vllm:mm_cache_queries", "Multi-modal cache queries, in terms of number of queried items.")
	counter("vllm:mm_cache_hits", "Multi-modal cache hits, in terms of number of cached items.")
	counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.")
	m.promptTokens = counter("vllm:prompt_tokens", "Number of prefill tokens processed.")
	src := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vllm:prompt_tokens_by_source_total", Help: "Number of prompt tokens by source.", ConstLabels: cl}, []string{"source"})
	reg.MustRegister(src)
	m.computedTokens = src.WithLabelValues("local_compute")
	m.cachedTokens = src.WithLabelValues("local_cache_hit")
	src.WithLabelValues("external_kv_transfer")
	counter("vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external).")
	counter("vllm:prompt_tokens_recomputed", "Number of cached tokens recomputed for forward pass.")
	m.generationTokens = counter("vllm:generation_tokens", "Number of generation tokens processed.")
	m.success = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "vllm:request_success_total", Help: "Count of successfully processed requests.", ConstLabels: cl}, []string{"finished_reason"})
	reg.MustRegister(m.success)
	for _, r := range finishedReasons {
		m.success.WithLabelValues(r)
	}
	m.promptHist = hist("vllm:request_prompt_tokens", "Number of prefill tokens processed.", tokenBuckets)
	m.genHist = hist("vllm:request_generation_tokens", "Number of generation tokens processed.", tokenBuckets)
	m.iterTokens = hist("vllm:iteration_tokens_total", "Histogram of number of tokens per engine_step.", iterBuckets)
	m.maxGenHist = hist("vllm:request_max_num_generation_tokens", "Histogram of maximum number of requested generation tokens.", tokenBuckets)
	m.paramsN = hist("vllm:request_params_n", "Histogram of the n request parameter.", nBuckets)
	m.paramsMax = hist("vllm:request_params_max_tokens", "Histogram of the max_tokens request parameter.", tokenBuckets)
	m.ttft = hist("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", ttftBuckets)
	m.itl = hist("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", itlBuckets)
	m.tpot = hist("vllm:request_time_per_output_token_seconds", "Histogram of time_per_output_token_seconds per request.", itlBuckets)
	m.e2e = hist("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", requestBuckets)
	m.queue = hist("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", requestBuckets)
	m.inference = hist("vllm:request_inference_time_seconds", "Histogram of time spent in RUNNING phase for request.", requestBuckets)
	m.prefill = hist("vllm:request_prefill_time_seconds", "Histogram of time spent in PREFILL phase for request.", requestBuckets)
	m.decode = hist("vllm:request_decode_time_seconds", "Histogram of time spent in DECODE phase for request.", requestBuckets)
	m.kvComputed = hist("vllm:request_prefill_kv_computed_tokens", "Histogram of new KV tokens computed during prefill (excluding cached tokens).", tokenBuckets)

	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "vllm:cache_config_info", Help: "Information of the LLMEngine CacheConfig",
		ConstLabels: prometheus.Labels{
			"engine": "0", "block_size": strconv.Itoa(e.cfg.BlockSize), "num_gpu_blocks": strconv.Itoa(e.cfg.NumGPUBlocks),
			"cache_dtype": "auto", "enable_prefix_caching": "True", "gpu_memory_utilization": "0.9",
			"num_cpu_blocks": "None", "prefix_caching_hash_algo": "sha256", "sliding_window": "None",
		},
	}, func() float64 { return 1 }))
	if len(e.cfg.LoRAs) > 0 {
		reg.MustRegister(&loraCollector{e: e, desc: prometheus.NewDesc("vllm:lora_requests_info",
			"Running stats on lora requests.", []string{"max_lora", "running_lora_adapters", "waiting_lora_adapters"}, nil)})
	}

	// The HTTP families of the API server's instrumentator.
	m.httpRequests = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "http_requests_total", Help: "Total number of requests by method, status and handler."}, []string{"handler", "method", "status"})
	reg.MustRegister(m.httpRequests)
	hd := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "http_request_duration_highr_seconds", Help: "Latency with many buckets but no API specific labels. Made for more accurate percentile calculations.", Buckets: httpHighrBuckets})
	reg.MustRegister(hd)
	m.httpDuration = hd
	m.httpHandlerDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "http_request_duration_seconds", Help: "Latency with only few buckets by handler. Made to be only used if aggregation by handler is important.", Buckets: []float64{0.1, 0.5, 1}}, []string{"handler", "method"})
	m.httpRequestSize = prometheus.NewSummaryVec(prometheus.SummaryOpts{Name: "http_request_size_bytes", Help: "Content length of incoming requests by handler. Only value of header is respected. Otherwise ignored. No percentile calculated."}, []string{"handler"})
	m.httpResponseSize = prometheus.NewSummaryVec(prometheus.SummaryOpts{Name: "http_response_size_bytes", Help: "Content length of outgoing responses by handler. Only value of header is respected. Otherwise ignored. No percentile calculated."}, []string{"handler"})
	reg.MustRegister(m.httpHandlerDuration, m.httpRequestSize, m.httpResponseSize)
	for _, h := range []string{"/v1/completions", "/v1/chat/completions"} {
		m.httpRequests.WithLabelValues(h, "POST", "2xx")
		m.httpHandlerDuration.WithLabelValues(h, "POST")
		m.httpRequestSize.WithLabelValues(h)
		m.httpResponseSize.WithLabelValues(h)
	}
	return m
}

func constGauge(name, help string, l prometheus.Labels, v float64) prometheus.Collector {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help, ConstLabels: l}, func() float64 { return v })
}

// loraCollector writes vllm:lora_requests_info as vLLM does: one series whose labels list the
// adapters and whose value is the time of the last change.
type loraCollector struct {
	e    *Engine
	desc *prometheus.Desc
}

func (c *loraCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *loraCollector) Collect(ch chan<- prometheus.Metric) {
	c.e.mu.Lock()
	running, waiting, at := keys(c.e.runLoRA), keys(c.e.waitLoRA), c.e.loraUpdate
	c.e.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(at.UnixNano())/1e9,
		strconv.Itoa(c.e.cfg.MaxLoRAs), strings.Join(running, ","), strings.Join(waiting, ","))
}

func (m *engineMetrics) finished(reason string) { m.success.WithLabelValues(reason).Inc() }

func (m *engineMetrics) observe(r Result, arrived, decodeStart, done time.Time, maxTokens int) {
	m.finished(r.FinishReason)
	m.promptTokens.Add(float64(r.PromptTokens))
	m.generationTokens.Add(float64(r.CompletionTokens))
	m.prefixQueries.Add(float64(r.PromptTokens))
	m.prefixHits.Add(float64(r.CachedTokens))
	m.cachedTokens.Add(float64(r.CachedTokens))
	m.computedTokens.Add(float64(r.PromptTokens - r.CachedTokens))
	m.promptHist.Observe(float64(r.PromptTokens))
	m.genHist.Observe(float64(r.CompletionTokens))
	m.maxGenHist.Observe(float64(maxTokens))
	m.paramsN.Observe(1)
	m.paramsMax.Observe(float64(maxTokens))
	m.iterTokens.Observe(float64(r.PromptTokens - r.CachedTokens))
	m.kvComputed.Observe(float64(r.PromptTokens - r.CachedTokens))
	m.ttft.Observe(r.TTFT.Seconds())
	m.queue.Observe(r.QueueTime.Seconds())
	m.prefill.Observe((r.TTFT - r.QueueTime).Seconds())
	decode := done.Sub(decodeStart)
	m.decode.Observe(decode.Seconds())
	m.inference.Observe(done.Sub(arrived.Add(r.QueueTime)).Seconds())
	m.e2e.Observe(done.Sub(arrived).Seconds())
	if r.CompletionTokens > 1 {
		per := decode.Seconds() / float64(r.CompletionTokens-1)
		m.itl.Observe(per)
		m.tpot.Observe(per)
	}
}
