package modelsim_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/spillway-io/spillway/e2e/modelsim"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

func serve(t testing.TB, cfg modelsim.Config) string {
	t.Helper()
	ls, err := modelsim.Listen([]string{"127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- modelsim.Serve(ctx, ls, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ls[0].Addr().String()
}

func post(t *testing.T, addr, path, body string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Post("http://"+addr+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// complete sends a completion request from a goroutine of the test: it reports a failure with
// t.Errorf, never t.Fatal.
func complete(t *testing.T, ctx context.Context, addr, body string) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+"/v1/completions", strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			t.Errorf("completion: %v", err)
		}
		return
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && ctx.Err() == nil {
		t.Errorf("completion: HTTP %d", resp.StatusCode)
	}
}

func scrape(t *testing.T, addr string) (modelmetrics.Metrics, int) {
	t.Helper()
	m, n, err := readMetrics(addr)
	if err != nil {
		t.Fatal(err)
	}
	return m, n
}

// readMetrics scrapes a simulator and parses its page as vLLM's, with the page's size.
func readMetrics(addr string) (modelmetrics.Metrics, int, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return modelmetrics.Metrics{}, 0, err
	}
	defer resp.Body.Close()
	page, err := io.ReadAll(resp.Body)
	if err != nil {
		return modelmetrics.Metrics{}, 0, err
	}
	p, _ := modelmetrics.NewParser(modelmetrics.EngineVLLM)
	m, err := p.Parse(page)
	if err != nil {
		return modelmetrics.Metrics{}, 0, fmt.Errorf("simulator page does not parse as vLLM: %w", err)
	}
	return m, len(page), nil
}

// metricsAre returns a condition for testkit.Eventually: the simulator's scraped metrics satisfy
// ok, and the error shows the last metrics when they do not.
func metricsAre(addr, want string, ok func(modelmetrics.Metrics) bool) func() error {
	return func() error {
		m, _, err := readMetrics(addr)
		if err != nil {
			return err
		}
		if !ok(m) {
			return fmt.Errorf("metrics %+v, want %s", m, want)
		}
		return nil
	}
}

func TestCompletionsAndChat(t *testing.T) {
	cfg := modelsim.DefaultConfig()
	cfg.DecodeLatency = time.Millisecond
	addr := serve(t, cfg)

	resp, body := post(t, addr, "/v1/completions", `{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"Hello there, simulator","max_tokens":5}`)
	if resp.StatusCode != 200 || resp.Header.Get(modelsim.EndpointHeader) != addr {
		t.Fatalf("completions: %d %s", resp.StatusCode, body)
	}
	var c struct {
		Object  string `json:"object"`
		Choices []struct {
			Text         string `json:"text"`
			FinishReason string `json:"finish_reason"`
		} `json:"choices"`
		Usage modelsim.Usage `json:"usage"`
	}
	if err := json.Unmarshal(body, &c); err != nil {
		t.Fatal(err)
	}
	if c.Object != "text_completion" || c.Usage.CompletionTokens != 5 || c.Usage.PromptTokens != modelsim.CountTokens("Hello there, simulator") ||
		c.Usage.TotalTokens != c.Usage.PromptTokens+5 || len(c.Choices) != 1 || c.Choices[0].FinishReason != "length" || c.Choices[0].Text == "" {
		t.Fatalf("completions response %+v", c)
	}

	resp, body = post(t, addr, "/v1/chat/completions", `{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"hi"}],"max_completion_tokens":3}`)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"chat.completion"`) || !strings.Contains(string(body), `"completion_tokens":3`) {
		t.Fatalf("chat: %d %s", resp.StatusCode, body)
	}

	for _, tc := range []struct {
		path, body string
		code       int
		msg        string
	}{
		{"/v1/completions", `{"model":"nope","prompt":"x"}`, 404, "does not exist"},
		{"/v1/completions", `{"model":"meta-llama/Llama-3.1-8B-Instruct"}`, 400, "prompt is required"},
		{"/v1/completions", `{"model":`, 400, "invalid JSON"},
		{"/v1/chat/completions", `{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[]}`, 400, "messages must not be empty"},
		{"/v1/completions", `{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"x","max_tokens":100000}`, 400, "exceed"},
	} {
		resp, body := post(t, addr, tc.path, tc.body)
		if resp.StatusCode != tc.code || !strings.Contains(string(body), tc.msg) || !strings.Contains(string(body), `"error"`) {
			t.Errorf("%s %s: %d %s, want %d mentioning %q", tc.path, tc.body, resp.StatusCode, body, tc.code, tc.msg)
		}
	}

	r, err := http.Get("http://" + addr + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if !strings.Contains(string(mb), `"id":"meta-llama/Llama-3.1-8B-Instruct"`) {
		t.Fatalf("/v1/models = %s", mb)
	}
}

func TestStreamingCarriesUsageInTheFinalChunk(t *testing.T) {
	cfg := modelsim.DefaultConfig()
	cfg.DecodeLatency = time.Millisecond
	addr := serve(t, cfg)
	resp, err := http.Post("http://"+addr+"/v1/chat/completions", "application/json", strings.NewReader(
		`{"model":"meta-llama/Llama-3.1-8B-Instruct","messages":[{"role":"user","content":"stream please"}],"max_tokens":4,"stream":true,"stream_options":{"include_usage":true}}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	var events []string
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if d, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			events = append(events, d)
		}
	}
	// 4 token chunks, the finish chunk, the usage chunk, [DONE].
	if len(events) != 7 || events[6] != "[DONE]" {
		t.Fatalf("events %q", events)
	}
	var last struct {
		Choices []any          `json:"choices"`
		Usage   modelsim.Usage `json:"usage"`
	}
	if err := json.Unmarshal([]byte(events[5]), &last); err != nil {
		t.Fatal(err)
	}
	if len(last.Choices) != 0 || last.Usage.CompletionTokens != 4 || last.Usage.PromptTokens == 0 {
		t.Fatalf("usage chunk %s", events[5])
	}
	if !strings.Contains(events[4], `"finish_reason":"length"`) {
		t.Fatalf("finish chunk %s", events[4])
	}
}

func TestMetricsFollowLoad(t *testing.T) {
	cfg := modelsim.DefaultConfig()
	cfg.MaxNumSeqs = 2
	cfg.DecodeLatency = 20 * time.Millisecond
	cfg.NumGPUBlocks = 64
	addr := serve(t, cfg)

	idle, size := scrape(t, addr)
	if idle.WaitingQueue != 0 || idle.Running != 0 || idle.KVCacheUsage != 0 || idle.BlockSize != 16 || idle.NumBlocks != 64 {
		t.Fatalf("idle metrics %+v", idle)
	}
	// A real vLLM v0.19 page is ~57 KB; the simulator's must cost about as much to scrape.
	if size < 50_000 {
		t.Fatalf("metrics page is %d bytes, want a vLLM-sized page (>= 50 KB)", size)
	}
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	tp := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := tp.TextToMetricFamilies(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("the whole page must parse as Prometheus text: %v", err)
	}
	if len(fams) < 80 || fams["vllm:time_to_first_token_seconds"].GetType().String() != "HISTOGRAM" {
		t.Fatalf("page has %d families; want vLLM's ~90 with histograms", len(fams))
	}

	// Six requests on two slots: two run, four wait, and their prompts hold KV-cache blocks.
	prompt := strings.Repeat("a", 64*8) // 8 blocks
	var wg sync.WaitGroup
	for i := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			complete(t, context.Background(), addr, fmt.Sprintf(`{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"%d%s","max_tokens":10}`, i, prompt))
		}()
	}
	testkit.Eventually(t, 3*time.Second, "metrics under load", metricsAre(addr, "running 2, waiting 4, KV-cache in use", func(m modelmetrics.Metrics) bool {
		return m.Running == 2 && m.WaitingQueue == 4 && m.KVCacheUsage > 0
	}))
	wg.Wait()
	after, _ := scrape(t, addr)
	if after.Running != 0 || after.WaitingQueue != 0 || after.KVCacheUsage != 0 {
		t.Fatalf("after load: %+v", after)
	}
	resp, err = http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`vllm:request_success_total{engine="0",finished_reason="length",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6`,
		`vllm:generation_tokens_total{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 60`,
		`vllm:time_to_first_token_seconds_count{engine="0",model_name="meta-llama/Llama-3.1-8B-Instruct"} 6`,
	} {
		if !strings.Contains(string(page), want) {
			t.Errorf("page lacks %q", want)
		}
	}
}

func TestPrefixCacheCutsTTFT(t *testing.T) {
	cfg := modelsim.DefaultConfig()
	cfg.PrefillTokensPerSecond = 20000
	cfg.PrefillOverhead = 0
	e, err := modelsim.NewEngine(cfg)
	if err != nil {
		t.Fatal(err)
	}
	shared := strings.Repeat("system prompt shared by every request. ", 200) // ~2000 tokens
	run := func(suffix string) modelsim.Result {
		res, err := e.Generate(context.Background(), modelsim.Request{Model: cfg.Model, Prompt: shared + suffix, MaxTokens: 1}, func(modelsim.Token) error { return nil })
		if err != nil {
			t.Fatal(err)
		}
		return res
	}
	cold := run("first question")
	warm := run("second question")
	if cold.CachedTokens != 0 || warm.CachedTokens < cold.PromptTokens*9/10 {
		t.Fatalf("cached tokens cold %d, warm %d of %d", cold.CachedTokens, warm.CachedTokens, warm.PromptTokens)
	}
	if warm.TTFT*4 > cold.TTFT {
		t.Fatalf("prefix hit TTFT %s vs cold %s: want at least 4x faster", warm.TTFT, cold.TTFT)
	}
}

func TestLoRAAdapters(t *testing.T) {
	cfg := modelsim.DefaultConfig()
	cfg.LoRAs = []string{"sql-lora", "chat-lora"}
	cfg.MaxLoRAs = 1
	cfg.DecodeLatency = 30 * time.Millisecond
	addr := serve(t, cfg)
	done := make(chan struct{})
	go func() {
		defer close(done)
		complete(t, context.Background(), addr, `{"model":"sql-lora","prompt":"select","max_tokens":10}`)
	}()
	testkit.Eventually(t, 2*time.Second, "LoRA metrics while serving sql-lora", metricsAre(addr, "sql-lora active of at most 1", func(m modelmetrics.Metrics) bool {
		return len(m.ActiveLoRAs) == 1 && m.ActiveLoRAs[0] == "sql-lora" && m.MaxLoRAs == 1
	}))
	<-done
	if after, _ := scrape(t, addr); len(after.ActiveLoRAs) != 0 {
		t.Fatalf("adapter still running after the request: %+v", after)
	}
}

func TestAbandonedRequestsFreeTheirSlots(t *testing.T) {
	cfg := modelsim.DefaultConfig()
	cfg.MaxNumSeqs = 1
	cfg.DecodeLatency = 50 * time.Millisecond
	addr := serve(t, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			complete(t, ctx, addr, `{"model":"meta-llama/Llama-3.1-8B-Instruct","prompt":"x","max_tokens":100}`)
		}()
	}
	// All three are in: one runs (100 tokens take 5 s), two wait.
	testkit.Eventually(t, 3*time.Second, "the requests arrived", metricsAre(addr, "running 1, waiting 2", func(m modelmetrics.Metrics) bool {
		return m.Running == 1 && m.WaitingQueue == 2
	}))
	cancel()
	wg.Wait()
	testkit.Eventually(t, 2*time.Second, "slots freed after the clients left", metricsAre(addr, "running 0, waiting 0", func(m modelmetrics.Metrics) bool {
		return m.Running == 0 && m.WaitingQueue == 0
	}))
}

func TestManyEndpointsInOneProcess(t *testing.T) {
	var addrs []string
	for i := range 50 {
		addrs = append(addrs, fmt.Sprintf("127.0.9.%d:0", i+1))
	}
	ls, err := modelsim.Listen(addrs)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- modelsim.Serve(ctx, ls, modelsim.DefaultConfig()) }()
	defer func() { cancel(); <-done }()
	for _, l := range ls {
		host, _, _ := net.SplitHostPort(l.Addr().String())
		if !strings.HasPrefix(host, "127.0.9.") {
			t.Fatalf("listener bound to %s", l.Addr())
		}
		if m, _ := scrape(t, l.Addr().String()); m.Running != 0 {
			t.Fatalf("fresh endpoint %s busy", l.Addr())
		}
	}
	// A second bind of an address in use is refused before anything is served.
	if _, err := modelsim.Listen([]string{ls[0].Addr().String()}); err == nil {
		t.Fatal("binding an address in use succeeded")
	}
}

// BenchmarkMetricsPage measures one scrape of a simulator's /metrics page over loopback HTTP.
func BenchmarkMetricsPage(b *testing.B) {
	addr := serve(b, modelsim.DefaultConfig())
	c := &http.Client{}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		resp, err := c.Get("http://" + addr + "/metrics")
		if err != nil {
			b.Fatal(err)
		}
		n, _ := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		b.SetBytes(n)
	}
}

// TestMetricsNameFilter: the simulator honours name[] as vLLM's prometheus_client app does, and
// the page a parser asks for with FilteredPath parses to the same metrics as the whole page.
func TestMetricsNameFilter(t *testing.T) {
	addr := serve(t, modelsim.DefaultConfig())
	get := func(path string) []byte {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %d %v", path, resp.StatusCode, err)
		}
		return b
	}
	p, _ := modelmetrics.NewParser(modelmetrics.EngineVLLM)
	path := p.FilteredPath("/metrics")
	whole, filtered := get("/metrics"), get(path)
	mw, err := p.Parse(whole)
	if err != nil {
		t.Fatal(err)
	}
	mf, err := p.Parse(filtered)
	if err != nil {
		t.Fatalf("filtered page %s: %v\n%s", path, err, filtered)
	}
	if fmt.Sprint(mw) != fmt.Sprint(mf) {
		t.Fatalf("whole page parsed as %+v, filtered as %+v", mw, mf)
	}
	if len(filtered)*20 > len(whole) {
		t.Fatalf("filtered page of %d bytes, whole page %d: want it at least 20 times smaller", len(filtered), len(whole))
	}
	tp := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := tp.TextToMetricFamilies(strings.NewReader(string(filtered)))
	if err != nil {
		t.Fatalf("filtered page is no exposition: %v", err)
	}
	for name := range fams {
		if !strings.Contains(path, strings.ReplaceAll(name, ":", "%3A")) {
			t.Errorf("filtered page holds %s, which %s does not name", name, path)
		}
	}
}
