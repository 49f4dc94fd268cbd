package main

// measurement is one EPP's figures at one endpoint count.
type measurement struct {
	P50ms     float64 `json:"p50_ms"`
	P99ms     float64 `json:"p99_ms"`
	ConcP50ms float64 `json:"concurrent_p50_ms"`
	ConcP99ms float64 `json:"concurrent_p99_ms"`
	// CtxPerRequest is how often the EPP's threads blocked (voluntary context switches) per
	// request of the sequential run: the thread hand-offs its latency is made of.
	CtxPerRequest float64 `json:"voluntary_ctx_switches_per_request"`
	CPUPer1k      float64 `json:"cpu_s_per_1k"`
	IdleCores     float64 `json:"idle_cpu_cores"`
	RSSMiB        float64 `json:"rss_mib"`
	Errors        int     `json:"errors"`
	ScrapeEach    string  `json:"scrape_interval"`
	// Requests is how many request phases the latency runs completed (each run stops after 60 s).
	Requests int `json:"requests"`
	// ReadyEndpoints is how many endpoints the EPP had ready when measured (the fewest of the rounds).
	ReadyEndpoints int `json:"ready_endpoints"`
	// P50Rounds is each round's sequential p50; the figures above are the means over the rounds.
	P50Rounds []float64 `json:"p50_rounds_ms"`
}

// mean averages rounds of one EPP's figures: the two EPPs run one after the other, so each is
// measured in several rounds, taken in turn, and drift of the machine between them evens out.
func mean(ms []measurement) measurement {
	out := measurement{ScrapeEach: ms[0].ScrapeEach, ReadyEndpoints: ms[0].ReadyEndpoints}
	n := float64(len(ms))
	for _, m := range ms {
		out.P50ms += m.P50ms / n
		out.P99ms += m.P99ms / n
		out.ConcP50ms += m.ConcP50ms / n
		out.ConcP99ms += m.ConcP99ms / n
		out.CtxPerRequest += m.CtxPerRequest / n
		out.CPUPer1k += m.CPUPer1k / n
		out.IdleCores += m.IdleCores / n
		out.RSSMiB = max(out.RSSMiB, m.RSSMiB)
		out.Errors += m.Errors
		out.Requests += m.Requests
		out.ReadyEndpoints = min(out.ReadyEndpoints, m.ReadyEndpoints)
		out.P50Rounds = append(out.P50Rounds, m.P50ms)
	}
	for _, f := range []*float64{&out.P50ms, &out.P99ms, &out.ConcP50ms, &out.ConcP99ms, &out.CtxPerRequest, &out.CPUPer1k, &out.IdleCores} {
		*f = round3(*f)
	}
	return out
}

type row struct {
	Endpoints     int         `json:"endpoints"`
	Spillway      measurement `json:"spillway"`
	GIE           measurement `json:"gie"`
	P50Ratio      float64     `json:"p50_ratio"`
	P99Ratio      float64     `json:"p99_ratio"`
	ConcP99Ratio  float64     `json:"concurrent_p99_ratio"`
	CPUPer1kRatio float64     `json:"cpu_per_1k_ratio"`
	IdleCPURatio  float64     `json:"idle_cpu_ratio"`
	RSSRatio      float64     `json:"rss_ratio"`
}

// newRow compares the two EPPs' rounds at n endpoints.
func newRow(n int, gie, spillway []measurement) row {
	r := row{Endpoints: n, GIE: mean(gie), Spillway: mean(spillway)}
	r.P50Ratio = ratio(r.Spillway.P50ms, r.GIE.P50ms)
	r.P99Ratio = ratio(r.Spillway.P99ms, r.GIE.P99ms)
	r.ConcP99Ratio = ratio(r.Spillway.ConcP99ms, r.GIE.ConcP99ms)
	r.CPUPer1kRatio = ratio(r.Spillway.CPUPer1k, r.GIE.CPUPer1k)
	r.IdleCPURatio = ratio(r.Spillway.IdleCores, r.GIE.IdleCores)
	r.RSSRatio = ratio(r.Spillway.RSSMiB, r.GIE.RSSMiB)
	return r
}

type qualityMeasurement struct {
	Requests      int     `json:"requests"`
	Succeeded     int     `json:"succeeded"`
	TTFTp50ms     float64 `json:"ttft_p50_ms"`
	TTFTp99ms     float64 `json:"ttft_p99_ms"`
	PrefixHitRate float64 `json:"prefix_cache_hit_rate"`
}

type quality struct {
	Endpoints int                `json:"endpoints"`
	Rate      float64            `json:"rate_rps"`
	Spillway  qualityMeasurement `json:"spillway"`
	GIE       qualityMeasurement `json:"gie"`
}

type report struct {
	Date    string `json:"date"`
	Command string `json:"command"`
	Machine string `json:"machine"`
	Rounds  int    `json:"rounds"`
	// SpillwayEnv is what --spillway-env added to the spoke's environment; empty for its defaults.
	SpillwayEnv []string `json:"spillway_env,omitempty"`
	BaselineP50 float64  `json:"noop_ext_proc_p50_ms"`
	BaselineCtx float64  `json:"noop_ext_proc_ctx_switches_per_request"`
	Rows        []row    `json:"results"`
	Quality     quality  `json:"routing_quality"`
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return float64(int(a/b*1000+0.5)) / 1000
}

func round3(v float64) float64 { return float64(int(v*1000+0.5)) / 1000 }
