package modelsim

import (
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The families, label sets and buckets of a vLLM v0.19 /metrics page, so that a scrape of the
// simulator costs the scraper what a scrape of vLLM costs.
var (
	tokenBuckets     = []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000}
	iterBuckets      = []float64{1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384}
	nBuckets         = []float64{1, 2, 5, 10, 20}
	ttftBuckets      = []float64{0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80, 160, 640, 2560}
	itlBuckets       = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1, 2.5, 5, 7.5, 10, 20, 40, 80}
	requestBuckets   = []float64{0.3, 0.5, 0.8, 1, 1.5, 2, 2.5, 5, 10, 15, 20, 30, 40, 50, 60, 120, 240, 480, 960, 1920, 7680}
	httpHighrBuckets = []float64{0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 1.5, 2, 2.5, 3, 3.5, 4, 4.5, 5, 7.5, 10, 30, 60}
	finishedReasons  = []string{"stop", "length", "abort", "error", "repetition"}
	httpHandlers     = []string{"/v1/completions", "/v1/chat/completions", "/v1/models"}
)

// engineMetrics is one simulated server's /metrics page and the values behind it.
type engineMetrics struct {
	mu   sync.Mutex
	page page
	cur  Stats // the engine's load, read once per render
	lora struct {
		running, waiting string
		at               float64
	}

	promptTokens, generationTokens, prefixQueries, prefixHits float64
	cachedTokens, computedTokens                              float64
	success                                                   map[string]*float64
	promptHist, genHist, maxGenHist, paramsN, paramsMax       *histogram
	iterTokens, ttft, itl, tpot, e2e, queue, inference        *histogram
	prefill, decode, kvComputed                               *histogram
	httpRequests                                              map[string]*float64
	httpDuration                                              *histogram
	httpHandlerDuration                                       map[string]*histogram
	httpReqSize, httpRespSize                                 map[string]*[2]float64 // sum, count

	loraSeries *series
	loraPrefix func() []byte

	buf []byte
}

func newEngineMetrics(e *Engine) *engineMetrics {
	m := &engineMetrics{success: map[string]*float64{}, httpRequests: map[string]*float64{},
		httpHandlerDuration: map[string]*histogram{}, httpReqSize: map[string]*[2]float64{}, httpRespSize: map[string]*[2]float64{}}
	p := &m.page
	cl := map[string]string{"engine": "0", "model_name": e.cfg.Model}
	created := float64(time.Now().UnixNano()) / 1e9
	constant := func(v float64) func() float64 { return func() float64 { return v } }
	ptr := func(v *float64) func() float64 { return func() float64 { return *v } }
	with := func(extra map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range cl {
			out[k] = v
		}
		for k, v := range extra {
			out[k] = v
		}
		return out
	}
	counter := func(name, help string, v *float64) {
		p.family(name+"_total", help, "counter").scalar(name+"_total", cl, ptr(v))
		p.family(name+"_created", help, "gauge").scalar(name+"_created", cl, constant(created))
	}
	hist := func(name, help string, buckets []float64) *histogram {
		h := p.family(name, help, "histogram").histo(name, cl, buckets)
		p.family(name+"_created", help, "gauge").scalar(name+"_created", cl, constant(created))
		return h
	}
	gauge := func(name, help string, f func() float64) { p.family(name, help, "gauge").scalar(name, cl, f) }

	// Process and runtime families of the Python server, constant here.
	gc := []float64{16896, 2259, 391}
	for _, fam := range []struct{ name, help string }{
		{"python_gc_objects_collected_total", "Objects collected during gc"},
		{"python_gc_objects_uncollectable_total", "Uncollectable objects found during GC"},
		{"python_gc_collections_total", "Number of times this generation was collected"},
	} {
		f := p.family(fam.name, fam.help, "counter")
		for g, v := range gc {
			f.scalar(fam.name, map[string]string{"generation": strconv.Itoa(g)}, constant(v))
		}
	}
	p.family("python_info", "Python platform information", "gauge").scalar("python_info",
		map[string]string{"implementation": "CPython", "major": "3", "minor": "12", "patchlevel": "13", "version": "3.12.13"}, constant(1))
	for _, pf := range []struct {
		name, help, typ string
		v               float64
	}{
		{"process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge", 3.110516736e10},
		{"process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", 1.266573312e9},
		{"process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge", created},
		{"process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter", 39.5},
		{"process_open_fds", "Number of open file descriptors.", "gauge", 44},
		{"process_max_fds", "Maximum number of open file descriptors.", "gauge", 65535},
	} {
		p.family(pf.name, pf.help, pf.typ).scalar(pf.name, nil, constant(pf.v))
	}

	var zero float64
	for _, f := range []string{"estimated_flops_per_gpu", "estimated_read_bytes_per_gpu", "estimated_write_bytes_per_gpu"} {
		counter("vllm:"+f, "Estimated work per GPU (for Model Flops Utilization calculations).", &zero)
	}
	gauge("vllm:num_requests_running", "Number of requests in model execution batches.", func() float64 { return float64(m.cur.Running) })
	gauge("vllm:num_requests_waiting", "Number of requests waiting to be processed.", func() float64 { return float64(m.cur.Waiting) })
	gauge("vllm:engine_sleep_state", "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake.", constant(1))
	gauge("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", func() float64 { return m.cur.KVCacheUsage })
	counter("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.", &m.prefixQueries)
	counter("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", &m.prefixHits)
	counter("vllm:external_prefix_cache_queries", "External prefix cache queries from KV connector cross-instance cache sharing, in terms of number of queried tokens.", &zero)
	counter("vllm:external_prefix_cache_hits", "External prefix cache hits from KV connector cross-instance cache sharing, in terms of number of cached tokens.", &zero)
	counter("vllm:mm_cache_queries", "Multi-modal cache queries, in terms of number of queried items.", &zero)
	counter("vllm:mm_cache_hits", "Multi-modal cache hits, in terms of number of cached items.", &zero)
	counter("vllm:num_preemptions", "Cumulative number of preemption from the engine.", &zero)
	counter("vllm:prompt_tokens", "Number of prefill tokens processed.", &m.promptTokens)
	bySource := p.family("vllm:prompt_tokens_by_source_total", "Number of prompt tokens by source.", "counter")
	bySource.scalar("vllm:prompt_tokens_by_source_total", with(map[string]string{"source": "local_compute"}), ptr(&m.computedTokens))
	bySource.scalar("vllm:prompt_tokens_by_source_total", with(map[string]string{"source": "local_cache_hit"}), ptr(&m.cachedTokens))
	bySource.scalar("vllm:prompt_tokens_by_source_total", with(map[string]string{"source": "external_kv_transfer"}), constant(0))
	counter("vllm:prompt_tokens_cached", "Number of cached prompt tokens (local + external).", &m.cachedTokens)
	counter("vllm:prompt_tokens_recomputed", "Number of cached tokens recomputed for forward pass.", &zero)
	counter("vllm:generation_tokens", "Number of generation tokens processed.", &m.generationTokens)
	succ := p.family("vllm:request_success_total", "Count of successfully processed requests.", "counter")
	for _, r := range finishedReasons {
		v := new(float64)
		m.success[r] = v
		succ.scalar("vllm:request_success_total", with(map[string]string{"finished_reason": r}), ptr(v))
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
	p.family("vllm:cache_config_info", "Information of the LLMEngine CacheConfig", "gauge").scalar("vllm:cache_config_info", map[string]string{
		"engine": "0", "block_size": strconv.Itoa(e.cfg.BlockSize), "num_gpu_blocks": strconv.Itoa(e.cfg.NumGPUBlocks),
		"cache_dtype": "auto", "enable_prefix_caching": "True", "gpu_memory_utilization": "0.9",
		"num_cpu_blocks": "None", "prefix_caching_hash_algo": "sha256", "sliding_window": "None",
	}, constant(1))
	{
		// vLLM with LoRA enabled (as GIE's guides deploy it, and as GIE's default metrics extractor
		// expects) writes one series whose labels list the adapters and whose value is the time of
		// the last change; its labels change, so the prefix is rebuilt per render.
		f := p.family("vllm:lora_requests_info", "Running stats on lora requests.", "gauge")
		m.loraSeries = &series{value: func() float64 { return m.lora.at }}
		f.series = append(f.series, m.loraSeries)
		maxLoRA := strconv.Itoa(e.cfg.MaxLoRAs)
		m.loraPrefix = func() []byte {
			return []byte(`vllm:lora_requests_info{max_lora="` + maxLoRA + `",running_lora_adapters="` + m.lora.running +
				`",waiting_lora_adapters="` + m.lora.waiting + `"} `)
		}
	}

	// The HTTP families of the API server's instrumentator.
	reqs := p.family("http_requests_total", "Total number of requests by method, status and handler.", "counter")
	for _, h := range httpHandlers {
		v := new(float64)
		m.httpRequests[h] = v
		reqs.scalar("http_requests_total", map[string]string{"handler": h, "method": "POST", "status": "2xx"}, ptr(v))
	}
	for _, sz := range []struct {
		name, help string
		m          map[string]*[2]float64
	}{
		{"http_request_size_bytes", "Content length of incoming requests by handler. Only value of header is respected. Otherwise ignored. No percentile calculated.", m.httpReqSize},
		{"http_response_size_bytes", "Content length of outgoing responses by handler. Only value of header is respected. Otherwise ignored. No percentile calculated.", m.httpRespSize},
	} {
		f := p.family(sz.name, sz.help, "summary")
		for _, h := range httpHandlers {
			v := new([2]float64)
			sz.m[h] = v
			f.scalar(sz.name+"_count", map[string]string{"handler": h}, func() float64 { return v[1] })
			f.scalar(sz.name+"_sum", map[string]string{"handler": h}, func() float64 { return v[0] })
		}
	}
	m.httpDuration = p.family("http_request_duration_highr_seconds", "Latency with many buckets but no API specific labels. Made for more accurate percentile calculations.", "histogram").
		histo("http_request_duration_highr_seconds", nil, httpHighrBuckets)
	hd := p.family("http_request_duration_seconds", "Latency with only few buckets by handler. Made to be only used if aggregation by handler is important.", "histogram")
	for _, h := range httpHandlers {
		m.httpHandlerDuration[h] = hd.histo("http_request_duration_seconds", map[string]string{"handler": h, "method": "POST"}, []float64{0.1, 0.5, 1})
	}
	return m
}

// serve writes the page, or only the samples that name[] query parameters name.
func (m *engineMetrics) serve(e *Engine, w http.ResponseWriter, r *http.Request) {
	var names map[string]bool
	if ns := r.URL.Query()["name[]"]; len(ns) > 0 {
		names = make(map[string]bool, len(ns))
		for _, n := range ns {
			names[n] = true
		}
	}
	st := e.Stats()
	e.mu.Lock()
	running, waiting, at := strings.Join(keys(e.runLoRA), ","), strings.Join(keys(e.waitLoRA), ","), e.loraUpdate
	e.mu.Unlock()
	m.mu.Lock()
	m.cur = st
	m.lora.running, m.lora.waiting, m.lora.at = running, waiting, float64(at.UnixNano())/1e9
	if m.loraSeries != nil {
		m.loraSeries.prefix = m.loraPrefix()
	}
	m.buf = m.page.render(m.buf[:0], names)
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(m.buf)))
	_, _ = w.Write(m.buf)
	m.mu.Unlock()
}

func (m *engineMetrics) finished(reason string) {
	m.mu.Lock()
	*m.success[reason]++
	m.mu.Unlock()
}

func (m *engineMetrics) http(handler string, seconds float64, reqBytes, respBytes int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.httpRequests[handler] // fixed handler names only: a client's path never becomes a label
	if !ok {
		return
	}
	{
		*v++
		m.httpHandlerDuration[handler].observe(seconds)
		m.httpReqSize[handler][0] += float64(reqBytes)
		m.httpReqSize[handler][1]++
		m.httpRespSize[handler][0] += float64(respBytes)
		m.httpRespSize[handler][1]++
	}
	m.httpDuration.observe(seconds)
}

func (m *engineMetrics) observe(r Result, arrived, decodeStart, done time.Time, maxTokens int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	*m.success[r.FinishReason]++
	m.promptTokens += float64(r.PromptTokens)
	m.generationTokens += float64(r.CompletionTokens)
	m.prefixQueries += float64(r.PromptTokens)
	m.prefixHits += float64(r.CachedTokens)
	m.cachedTokens += float64(r.CachedTokens)
	m.computedTokens += float64(r.PromptTokens - r.CachedTokens)
	m.promptHist.observe(float64(r.PromptTokens))
	m.genHist.observe(float64(r.CompletionTokens))
	m.maxGenHist.observe(float64(maxTokens))
	m.paramsN.observe(1)
	m.paramsMax.observe(float64(maxTokens))
	m.iterTokens.observe(float64(r.PromptTokens - r.CachedTokens))
	m.kvComputed.observe(float64(r.PromptTokens - r.CachedTokens))
	m.ttft.observe(r.TTFT.Seconds())
	m.queue.observe(r.QueueTime.Seconds())
	m.prefill.observe((r.TTFT - r.QueueTime).Seconds())
	decode := done.Sub(decodeStart)
	m.decode.observe(decode.Seconds())
	m.inference.observe(done.Sub(arrived.Add(r.QueueTime)).Seconds())
	m.e2e.observe(done.Sub(arrived).Seconds())
	if r.CompletionTokens > 1 {
		per := decode.Seconds() / float64(r.CompletionTokens-1)
		m.itl.observe(per)
		m.tpot.observe(per)
	}
}
