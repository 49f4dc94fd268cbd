package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	extprocv3 "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/spillway-io/spillway/e2e/apiserver"
	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/e2e/loadgen"
	"github.com/spillway-io/spillway/e2e/localfleet"
	"github.com/spillway-io/spillway/pkg/epp"
)

type options struct {
	binDir, k8sBinDir, gieDir, workDir string
	counts                             []int
	rounds                             int
	spillwayEnv                        []string
	requests, concurrency              int
	idle                               time.Duration
	qualityRate                        float64
	qualityDuration                    time.Duration
	qualityEndpoints                   int
}

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

const (
	gieExtProc      = "127.0.0.1:9002"
	gieMetrics      = "http://127.0.0.1:9090/metrics"
	spillwayExtProc = "127.0.0.1:9012"
	spillwayHTTP    = "127.0.0.1:9091"
	// noopAddress is where the do-nothing ext_proc server of the baseline listens.
	noopAddress = "127.0.0.1:9102"
	namespace   = "bench"
)

func scrapeInterval(n int) time.Duration {
	if n > 200 {
		return time.Second
	}
	return 50 * time.Millisecond
}

func run(ctx context.Context, o options) (*report, error) {
	if o.workDir == "" {
		d, err := os.MkdirTemp("", "spillway-eppbench-")
		if err != nil {
			return nil, err
		}
		o.workDir = d
	}
	logs := filepath.Join(o.workDir, "logs")
	if err := os.MkdirAll(logs, 0o755); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "work directory %s\n", o.workDir)
	cl, err := apiserver.Start(ctx, apiserver.Bins{APIServer: filepath.Join(o.k8sBinDir, "kube-apiserver"), Etcd: filepath.Join(o.k8sBinDir, "etcd")},
		filepath.Join(o.workDir, "cluster"), "bench", "127.0.0.1")
	if err != nil {
		return nil, err
	}
	defer cl.Stop()
	if _, err := cl.Kubectl(ctx, "apply", "--server-side", "-f", filepath.Join(o.gieDir, "crds")); err != nil {
		return nil, err
	}
	if _, err := cl.Kubectl(ctx, "create", "namespace", namespace); err != nil {
		return nil, err
	}
	k, err := newKube(cl)
	if err != nil {
		return nil, err
	}
	rep := &report{Date: time.Now().UTC().Format(time.RFC3339), Command: "make bench-epp", Machine: machine(), Rounds: o.rounds, SpillwayEnv: o.spillwayEnv}
	if rep.BaselineP50, rep.BaselineCtx, err = noopBaseline(ctx, o); err != nil {
		return nil, err
	}
	for _, n := range o.counts {
		fmt.Fprintf(os.Stderr, "== %d endpoints\n", n)
		r := row{Endpoints: n}
		ips := endpointIPs(n)
		if err := k.setPods(ctx, ips); err != nil {
			return nil, err
		}
		rounds := map[string][]measurement{}
		for i := range o.rounds {
			fmt.Fprintf(os.Stderr, "   round %d\n", i+1)
			for _, side := range []string{"gie", "spillway"} {
				m, _, err := o.measure(ctx, side, n, ips, false)
				if err != nil {
					return nil, fmt.Errorf("%s at %d endpoints: %w", side, n, err)
				}
				rounds[side] = append(rounds[side], m)
			}
		}
		r.GIE, r.Spillway = mean(rounds["gie"]), mean(rounds["spillway"])
		r.P50Ratio = ratio(r.Spillway.P50ms, r.GIE.P50ms)
		r.P99Ratio = ratio(r.Spillway.P99ms, r.GIE.P99ms)
		r.ConcP99Ratio = ratio(r.Spillway.ConcP99ms, r.GIE.ConcP99ms)
		r.CPUPer1kRatio = ratio(r.Spillway.CPUPer1k, r.GIE.CPUPer1k)
		r.IdleCPURatio = ratio(r.Spillway.IdleCores, r.GIE.IdleCores)
		r.RSSRatio = ratio(r.Spillway.RSSMiB, r.GIE.RSSMiB)
		rep.Rows = append(rep.Rows, r)
	}
	if o.qualityDuration > 0 {
		n := o.qualityEndpoints
		fmt.Fprintf(os.Stderr, "== routing quality at %d endpoints\n", n)
		ips := endpointIPs(n)
		if err := k.setPods(ctx, ips); err != nil {
			return nil, err
		}
		rep.Quality = quality{Endpoints: n, Rate: o.qualityRate}
		for _, side := range []string{"gie", "spillway"} {
			_, q, err := o.measure(ctx, side, n, ips, true)
			if err != nil {
				return nil, fmt.Errorf("%s routing quality: %w", side, err)
			}
			if side == "gie" {
				rep.Quality.GIE = q
			} else {
				rep.Quality.Spillway = q
			}
		}
	}
	return rep, nil
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return float64(int(a/b*1000+0.5)) / 1000
}

func endpointIPs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("127.1.%d.%d", i/250, i%250+1)
	}
	return out
}

// measure starts fresh simulators and one EPP, and takes its figures.
func (o options) measure(ctx context.Context, side string, n int, ips []string, qualityRun bool) (measurement, qualityMeasurement, error) {
	var m measurement
	var q qualityMeasurement
	scrape := scrapeInterval(n)
	m.ScrapeEach = scrape.String()
	dir := filepath.Join(o.workDir, fmt.Sprintf("%s-%d", side, n))
	if qualityRun {
		dir += "-quality"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return m, q, err
	}
	sims, err := o.startSims(dir, ips)
	if err != nil {
		return m, q, err
	}
	defer func() {
		for _, p := range sims {
			_ = p.Stop(10 * time.Second)
		}
	}()
	var proc *localfleet.Proc
	var addr string
	if side == "gie" {
		proc, addr, m.ReadyEndpoints, err = o.startGIE(ctx, dir, n, scrape)
	} else {
		proc, addr, err = o.startSpillway(ctx, dir, ips, scrape)
		m.ReadyEndpoints = n
	}
	if err != nil {
		return m, q, err
	}
	defer func() { _ = proc.Stop(10 * time.Second) }()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return m, q, err
	}
	defer conn.Close()
	client := &gateway.Client{EPP: extprocv3.NewExternalProcessorClient(conn)}

	if qualityRun {
		q, err = o.quality(ctx, client, ips)
		return m, q, err
	}
	// Warm up: connections, caches, the runtime.
	if _, _, err := latencies(ctx, client, 200, 1); err != nil {
		return m, q, err
	}
	cpu0, err := cpuSeconds(proc.Pid())
	if err != nil {
		return m, q, err
	}
	time.Sleep(o.idle)
	cpu1, _ := cpuSeconds(proc.Pid())
	m.IdleCores = round3((cpu1 - cpu0) / o.idle.Seconds())

	ctx0, err := voluntarySwitches(proc.Pid())
	if err != nil {
		return m, q, err
	}
	seq, errs1, err := latencies(ctx, client, o.requests, 1)
	if err != nil {
		return m, q, err
	}
	if ctx1, err := voluntarySwitches(proc.Pid()); err == nil && len(seq) > 0 {
		m.CtxPerRequest = round3(float64(ctx1-ctx0) / float64(len(seq)))
	}
	conc, errs2, err := latencies(ctx, client, o.requests, o.concurrency)
	if err != nil {
		return m, q, err
	}
	cpu2, _ := cpuSeconds(proc.Pid())
	m.Errors = errs1 + errs2
	m.Requests = len(seq) + len(conc)
	m.CPUPer1k = round3((cpu2 - cpu1) / float64(m.Requests) * 1000)
	m.P50ms, m.P99ms = loadgen.Percentile(seq, 0.5), loadgen.Percentile(seq, 0.99)
	m.ConcP50ms, m.ConcP99ms = loadgen.Percentile(conc, 0.5), loadgen.Percentile(conc, 0.99)
	m.RSSMiB, _ = peakRSS(proc.Pid())
	fmt.Fprintf(os.Stderr, "   %-8s p50 %.3f ms p99 %.3f ms (%.1f thread blocks per request), 16-way p50 %.3f p99 %.3f, cpu/1k %.3f s, idle %.3f cores, rss %.0f MiB, errors %d\n",
		side, m.P50ms, m.P99ms, m.CtxPerRequest, m.ConcP50ms, m.ConcP99ms, m.CPUPer1k, m.IdleCores, m.RSSMiB, m.Errors)
	return m, q, nil
}

func (o options) startSims(dir string, ips []string) ([]*localfleet.Proc, error) {
	var procs []*localfleet.Proc
	for i := 0; i < len(ips); i += 250 {
		var eps []string
		for _, ip := range ips[i:min(i+250, len(ips))] {
			eps = append(eps, ip+":8000")
		}
		p, err := localfleet.StartProc(dir, fmt.Sprintf("modelsim-%d", i/250), filepath.Join(o.binDir, "modelsim"),
			"--endpoints", strings.Join(eps, ","), "--max-num-seqs", "8", "--decode-latency", "10ms")
		if err != nil {
			for _, q := range procs {
				q.Kill()
			}
			return nil, err
		}
		procs = append(procs, p)
	}
	// Every endpoint answers before an EPP starts.
	deadline := time.Now().Add(30 * time.Second)
	for _, ip := range ips {
		for {
			c, err := net.DialTimeout("tcp", ip+":8000", time.Second)
			if err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				return procs, fmt.Errorf("simulator %s not listening: %w", ip, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return procs, nil
}

// gieConfig is the scheduler configuration of GIE v1.5.0's Helm chart for a vLLM pool.
const gieConfig = `apiVersion: inference.networking.x-k8s.io/v1alpha1
kind: EndpointPickerConfig
plugins:
- type: queue-scorer
- type: kv-cache-utilization-scorer
- type: prefix-cache-scorer
- type: metrics-data-source
  parameters:
    scheme: "http"
    path: "/metrics"
    insecureSkipVerify: true
- type: core-metrics-extractor
schedulingProfiles:
- name: default
  plugins:
  - pluginRef: queue-scorer
    weight: 2
  - pluginRef: kv-cache-utilization-scorer
    weight: 2
  - pluginRef: prefix-cache-scorer
    weight: 3
`

// startGIE starts GIE's EPP and waits until it has every Pod ready, or, when the machine cannot
// keep that many endpoints fresh for it, until it has routed for two minutes with as many as it
// can; it returns how many it had.
func (o options) startGIE(ctx context.Context, dir string, n int, scrape time.Duration) (*localfleet.Proc, string, int, error) {
	cfg := filepath.Join(dir, "gie-config.yaml")
	if err := os.WriteFile(cfg, []byte(gieConfig), 0o644); err != nil {
		return nil, "", 0, err
	}
	kubeconfig := filepath.Join(o.workDir, "cluster", "kubeconfig")
	p, err := localfleet.StartProcEnv(dir, "gie-epp", filepath.Join(o.gieDir, "bin", "epp"), []string{"KUBECONFIG=" + kubeconfig},
		"--pool-name", "chat", "--pool-namespace", namespace, "--config-file", cfg,
		"--tracing=false", "--metrics-endpoint-auth=false", "--secure-serving=false",
		"--refresh-metrics-interval", scrape.String(), "--enable-pprof=false")
	if err != nil {
		return nil, "", 0, err
	}
	ready := 0
	var routing time.Time
	err = waitFor(ctx, p, 4*time.Minute, func() error {
		v, err := metricValue(gieMetrics, "inference_pool_ready_pods")
		if err != nil {
			return err
		}
		ready = int(v)
		if err := routes(ctx, gieExtProc); err != nil {
			return err
		}
		if routing.IsZero() {
			routing = time.Now()
		}
		if ready != n && time.Since(routing) < 2*time.Minute {
			return fmt.Errorf("GIE sees %d ready pods of %d", ready, n)
		}
		return nil
	})
	if err != nil {
		_ = p.Stop(5 * time.Second)
		return nil, "", 0, err
	}
	if ready != n {
		fmt.Fprintf(os.Stderr, "   gie      has %d of %d endpoints ready; measuring with those\n", ready, n)
	}
	return p, gieExtProc, ready, nil
}

func (o options) startSpillway(ctx context.Context, dir string, ips []string, scrape time.Duration) (*localfleet.Proc, string, error) {
	var b strings.Builder
	b.WriteString("pools:\n- namespace: bench\n  name: chat\n  targetPorts: [8000]\n  endpoints:\n")
	for _, ip := range ips {
		fmt.Fprintf(&b, "  - %s\n", ip)
	}
	pools := filepath.Join(dir, "pools.yaml")
	if err := os.WriteFile(pools, []byte(b.String()), 0o644); err != nil {
		return nil, "", err
	}
	staleness := max(4*scrape, 200*time.Millisecond)
	p, err := localfleet.StartProcEnv(dir, "spoke", filepath.Join(o.binDir, "spoke"), o.spillwayEnv,
		"--cluster-id", "bench", "--region", "bench", "--hub-address", "", "--pools-file", pools, "--pools-reload", "0",
		"--http-address", spillwayHTTP, "--epp-address", spillwayExtProc,
		"--scrape-interval", scrape.String(), "--metrics-staleness", staleness.String(), "--log-level", "warn")
	if err != nil {
		return nil, "", err
	}
	err = waitFor(ctx, p, 60*time.Second, func() error {
		v, err := metricValue("http://"+spillwayHTTP+"/metrics", `spillway_spoke_endpoints{freshness="fresh"}`)
		if err != nil {
			return err
		}
		if int(v) != len(ips) {
			return fmt.Errorf("spoke has %v fresh endpoints of %d", v, len(ips))
		}
		return routes(ctx, spillwayExtProc)
	})
	if err != nil {
		_ = p.Stop(5 * time.Second)
		return nil, "", err
	}
	return p, spillwayExtProc, nil
}

func waitFor(ctx context.Context, p *localfleet.Proc, within time.Duration, ready func() error) error {
	deadline := time.Now().Add(within)
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-p.Done():
			return fmt.Errorf("%s exited (%v); see %s", p.Name, p.Err(), p.LogPath)
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		if last = ready(); last == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready: %w (see %s)", p.Name, last, p.LogPath)
}

// routes checks that the EPP routes a request.
func routes(ctx context.Context, addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	c := &gateway.Client{EPP: extprocv3.NewExternalProcessorClient(conn)}
	rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	call, d, err := c.Request(rctx, headers(), body(0), nil)
	if err != nil {
		return err
	}
	call.Close()
	if d.Immediate != nil {
		return fmt.Errorf("EPP answered %d: %s", d.Immediate.Status, d.Immediate.Body)
	}
	return nil
}

func headers() []gateway.Header {
	return []gateway.Header{{Key: ":method", Value: "POST"}, {Key: ":path", Value: "/v1/chat/completions"},
		{Key: ":authority", Value: "bench"}, {Key: "content-type", Value: "application/json"}}
}

var prefixes = func() []string {
	out := make([]string, 4)
	for i := range out {
		unit := fmt.Sprintf("You are assistant number %d of the benchmark; answer briefly and precisely. ", i)
		out[i] = strings.Repeat(unit, 2048/len(unit)+1)[:2048]
	}
	return out
}()

// body is a chat request with one of four shared 2 KB system prompts and a unique question.
func body(i int) []byte {
	return []byte(fmt.Sprintf(`{"model":"meta-llama/Llama-3.1-8B-Instruct","max_tokens":16,"messages":[{"role":"system","content":%q},{"role":"user","content":"question %d"}]}`,
		prefixes[i%len(prefixes)], i))
}

// maxRun bounds one latency run: an EPP starved of CPU would otherwise hold the benchmark for
// an hour. A run cut short reports the requests it completed.
const maxRun = 60 * time.Second

// latencies runs n request phases over the real ext_proc protocol with the given concurrency.
func latencies(ctx context.Context, c *gateway.Client, n, workers int) ([]time.Duration, int, error) {
	out := make([]time.Duration, n)
	deadline := time.Now().Add(maxRun)
	var errs int
	var mu sync.Mutex
	var wg sync.WaitGroup
	next := make(chan int)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				b := body(i)
				start := time.Now()
				call, d, err := c.Request(ctx, headers(), b, nil)
				out[i] = time.Since(start)
				if err == nil {
					call.Close()
				}
				if err != nil || d.Immediate != nil {
					mu.Lock()
					errs++
					mu.Unlock()
				}
			}
		}()
	}
	sent := n
	for i := range n {
		if time.Now().After(deadline) {
			sent = i
			break
		}
		select {
		case next <- i:
		case <-ctx.Done():
			close(next)
			wg.Wait()
			return nil, errs, ctx.Err()
		}
	}
	close(next)
	wg.Wait()
	return out[:sent], errs, nil
}

// qualitySeed fixes the routing-quality workload.
const qualitySeed = 20261124

// quality sends shared-prefix streamed load through a gateway to the simulators and reads the
// simulators' prefix-cache counters.
func (o options) quality(ctx context.Context, c *gateway.Client, ips []string) (qualityMeasurement, error) {
	var q qualityMeasurement
	ts := httptest.NewServer(gateway.NewHandler(gateway.Options{Client: c}))
	defer ts.Close()
	rs, err := loadgen.Run(ctx, loadgen.Options{
		// Requests ends the run; the duration leaves room for arrivals running late.
		Target: ts.URL, Rate: o.qualityRate, Duration: o.qualityDuration * 3 / 2,
		Classes: []loadgen.Class{{Name: "Standard", Share: 1}}, Model: "meta-llama/Llama-3.1-8B-Instruct",
		Prefixes: 8, PrefixBytes: 4096, MaxTokens: 16, StreamShare: 1,
		// Both EPPs get the same requests at the same offsets.
		Seed: qualitySeed, Requests: int(o.qualityRate * o.qualityDuration.Seconds()),
	})
	if err != nil {
		return q, err
	}
	var ttft []time.Duration
	for _, r := range rs {
		q.Requests++
		if r.OK() {
			q.Succeeded++
			ttft = append(ttft, r.TTFT)
		}
	}
	q.TTFTp50ms, q.TTFTp99ms = loadgen.Percentile(ttft, 0.5), loadgen.Percentile(ttft, 0.99)
	var hits, queries float64
	for _, ip := range ips {
		url := "http://" + ip + ":8000/metrics"
		h, err := metricValue(url, `vllm:prefix_cache_hits_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"}`)
		if err != nil {
			return q, err
		}
		qu, err := metricValue(url, `vllm:prefix_cache_queries_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"}`)
		if err != nil {
			return q, err
		}
		hits, queries = hits+h, queries+qu
	}
	if queries > 0 {
		q.PrefixHitRate = round3(hits / queries)
	}
	fmt.Fprintf(os.Stderr, "   quality: %d/%d ok, TTFT p50 %.1f ms p99 %.1f ms, prefix hit rate %.3f\n", q.Succeeded, q.Requests, q.TTFTp50ms, q.TTFTp99ms, q.PrefixHitRate)
	return q, nil
}

// noopBaseline is what the transport alone costs: a do-nothing ext_proc server in its own
// process (this binary's hidden noop-server command, with the spoke's gRPC server settings)
// answers the same client, so the client, the kernel and two Go schedulers are in its figure
// just as they are in the EPPs'.
func noopBaseline(ctx context.Context, o options) (float64, float64, error) {
	exe, err := os.Executable()
	if err != nil {
		return 0, 0, err
	}
	p, err := localfleet.StartProcEnv(o.workDir, "noop-server", exe, nil, "noop-server", "--listen", noopAddress)
	if err != nil {
		return 0, 0, err
	}
	defer func() { _ = p.Stop(5 * time.Second) }()
	if err := waitFor(ctx, p, 10*time.Second, func() error { return routes(ctx, noopAddress) }); err != nil {
		return 0, 0, err
	}
	conn, err := grpc.NewClient(noopAddress, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, 0, err
	}
	defer conn.Close()
	client := &gateway.Client{EPP: extprocv3.NewExternalProcessorClient(conn)}
	if _, _, err := latencies(ctx, client, 200, 1); err != nil {
		return 0, 0, err
	}
	ctx0, err := voluntarySwitches(p.Pid())
	if err != nil {
		return 0, 0, err
	}
	ds, _, err := latencies(ctx, client, o.requests, 1)
	if err != nil {
		return 0, 0, err
	}
	if len(ds) == 0 {
		return 0, 0, errors.New("the do-nothing server answered no request")
	}
	ctx1, err := voluntarySwitches(p.Pid())
	if err != nil {
		return 0, 0, fmt.Errorf("do-nothing server's context switches: %w", err)
	}
	p50, blocks := loadgen.Percentile(ds, 0.5), round3(float64(ctx1-ctx0)/float64(len(ds)))
	fmt.Fprintf(os.Stderr, "   noop     p50 %.3f ms (%.1f thread blocks per request)\n", p50, blocks)
	return p50, blocks, nil
}

// serveNoop runs the do-nothing ext_proc server until ctx ends.
func serveNoop(ctx context.Context, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	gs := grpc.NewServer(epp.GRPCServerOptions(epp.DefaultStreamWorkers)...)
	extprocv3.RegisterExternalProcessorServer(gs, noop{})
	stop := context.AfterFunc(ctx, gs.Stop)
	defer stop()
	return gs.Serve(l)
}

// noop answers a request phase at once: the headers answer, then the body echoed whole.
type noop struct {
	extprocv3.UnimplementedExternalProcessorServer
}

func (noop) Process(s extprocv3.ExternalProcessor_ProcessServer) error {
	var body []byte
	for {
		req, err := s.Recv()
		if err != nil {
			return nil
		}
		rb := req.GetRequestBody()
		if rb == nil {
			continue
		}
		body = append(body, rb.GetBody()...)
		if !rb.GetEndOfStream() {
			continue
		}
		if err := s.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestHeaders{RequestHeaders: &extprocv3.HeadersResponse{}}}); err != nil {
			return nil
		}
		if err := s.Send(&extprocv3.ProcessingResponse{Response: &extprocv3.ProcessingResponse_RequestBody{RequestBody: &extprocv3.BodyResponse{
			Response: &extprocv3.CommonResponse{BodyMutation: &extprocv3.BodyMutation{Mutation: &extprocv3.BodyMutation_StreamedResponse{
				StreamedResponse: &extprocv3.StreamedBodyResponse{Body: body, EndOfStream: true}}}}}}}); err != nil {
			return nil
		}
	}
}

// metricValue reads one series (name with its labels as printed) from a Prometheus page.
func metricValue(url, series string) (float64, error) {
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if rest, ok := strings.CutPrefix(line, series); ok && (strings.HasPrefix(rest, " ") || (strings.HasPrefix(rest, "{") && !strings.Contains(series, "{"))) {
			f := strings.Fields(line)
			return strconv.ParseFloat(f[len(f)-1], 64)
		}
	}
	return 0, fmt.Errorf("%s not found at %s", series, url)
}

// cpuSeconds is a process's user+system CPU time.
func cpuSeconds(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseFloat(f[11], 64)
	st, _ := strconv.ParseFloat(f[12], 64)
	return (ut + st) / 100, nil // USER_HZ is 100 on Linux
}

// voluntarySwitches is the sum of a process's threads' voluntary context switches.
func voluntarySwitches(pid int) (int64, error) {
	tasks, err := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	if err != nil || len(tasks) == 0 {
		return 0, fmt.Errorf("no threads of %d: %v", pid, err)
	}
	var n int64
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue // a thread that ended
		}
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "voluntary_ctxt_switches:"); ok {
				c, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
				n += c
			}
		}
	}
	return n, nil
}

// peakRSS is a process's peak resident set size in MiB (VmHWM).
func peakRSS(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "VmHWM:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return round3(kb / 1024), err
		}
	}
	return 0, fmt.Errorf("no VmHWM for %d", pid)
}

func round3(v float64) float64 { return float64(int(v*1000+0.5)) / 1000 }

func machine() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	model := ""
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "model name"); ok {
			model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
			break
		}
	}
	cores := strings.Count(string(b), "processor\t:")
	return fmt.Sprintf("%d cores, %s", cores, model)
}
