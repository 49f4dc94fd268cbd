package main

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/spillway-io/spillway/e2e/gateway"
	"github.com/spillway-io/spillway/e2e/loadgen"
)

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
		wg.Go(func() {
			for i := range next {
				start := time.Now()
				call, d, err := c.Request(ctx, headers(), body(i), nil)
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
		})
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
// simulators' prefix-cache counters. With dump set, every request's result is written there as
// JSON, for a closer look.
func (o options) quality(ctx context.Context, c *gateway.Client, ips []string, dump string) (qualityMeasurement, error) {
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
	if dump != "" {
		if err := writeJSON(dump, rs); err != nil {
			return q, err
		}
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
	if q.PrefixHitRate, err = prefixHitRate(ctx, ips); err != nil {
		return q, err
	}
	fmt.Fprintf(os.Stderr, "   quality: %d/%d ok, TTFT p50 %.1f ms p99 %.1f ms, prefix hit rate %.3f\n", q.Succeeded, q.Requests, q.TTFTp50ms, q.TTFTp99ms, q.PrefixHitRate)
	return q, nil
}

// prefixHitRate is the simulators' prefix-cache hits over their queries, in tokens.
func prefixHitRate(ctx context.Context, ips []string) (float64, error) {
	model := map[string]string{"model_name": "meta-llama/Llama-3.1-8B-Instruct"}
	var hits, queries float64
	for _, ip := range ips {
		url := "http://" + ip + ":8000/metrics"
		page, err := scrape(ctx, url)
		if err != nil {
			return 0, err
		}
		h, err := sampleSum(page, "vllm:prefix_cache_hits_total", model)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", url, err)
		}
		qu, err := sampleSum(page, "vllm:prefix_cache_queries_total", model)
		if err != nil {
			return 0, fmt.Errorf("%s: %w", url, err)
		}
		hits, queries = hits+h, queries+qu
	}
	if queries == 0 {
		return 0, nil
	}
	return round3(hits / queries), nil
}
