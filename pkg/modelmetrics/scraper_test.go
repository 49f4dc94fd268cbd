package modelmetrics_test

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/spillway-io/spillway/e2e/modelsim"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestScraperFollowsTargets(t *testing.T) {
	ls, err := modelsim.Listen([]string{"127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	simCtx, stopSim := context.WithCancel(context.Background())
	simDone := make(chan error, 1)
	go func() { simDone <- modelsim.Serve(simCtx, ls, modelsim.DefaultConfig()) }()
	defer func() { stopSim(); <-simDone }()
	sim := ls[0].Addr().String()

	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("vllm:num_requests_waiting{ 1\n"))
	}))
	defer broken.Close()
	brokenAddr := broken.Listener.Addr().String()

	s := modelmetrics.NewScraper(modelmetrics.ScraperOptions{Interval: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()

	s.SetTargets([]modelmetrics.Target{{Address: sim, Engine: modelmetrics.EngineVLLM}, {Address: brokenAddr, Engine: modelmetrics.EngineVLLM}})
	testkit.Eventually(t, 3*time.Second, "a sample of both targets", func() error {
		ok, _ := s.Sample(sim)
		bad, _ := s.Sample(brokenAddr)
		if ok.ScrapedAt.IsZero() || bad.Err == nil {
			return fmt.Errorf("no samples: sim %+v, broken %+v", ok, bad)
		}
		return nil
	})
	if ok, _ := s.Sample(sim); ok.Metrics.NumBlocks != modelsim.DefaultConfig().NumGPUBlocks {
		t.Fatalf("sample of the simulator: %+v", ok.Metrics)
	}
	if bad, _ := s.Sample(brokenAddr); !bad.ScrapedAt.IsZero() {
		t.Fatal("a page that never parsed has a scrape time")
	}
	first, _ := s.Sample(sim)
	testkit.Eventually(t, 3*time.Second, "the simulator scraped again", testkit.True(func() bool {
		again, _ := s.Sample(sim)
		return again.ScrapedAt.After(first.ScrapedAt)
	}))

	// Removing a target stops its loop and forgets it.
	s.SetTargets([]modelmetrics.Target{{Address: sim, Engine: modelmetrics.EngineVLLM}})
	if _, ok := s.Sample(brokenAddr); ok {
		t.Fatal("removed target still has a sample")
	}
	// A target that goes away keeps its last good sample (and ages), with the error recorded.
	stopSim()
	<-simDone
	simDone <- nil
	testkit.Eventually(t, 3*time.Second, "scrape errors of a dead endpoint recorded", testkit.True(func() bool {
		smp, _ := s.Sample(sim)
		return smp.Err != nil
	}))
	if smp, _ := s.Sample(sim); smp.ScrapedAt.IsZero() {
		t.Fatal("last good scrape time lost")
	}
}

// TestScraperAsksForTheFamiliesItReads: a vLLM or SGLang server is asked, by name[] query
// parameters, for the families the parser reads; a server of another engine, or any with
// AllFamilies, for its whole page at its own path.
func TestScraperAsksForTheFamiliesItReads(t *testing.T) {
	const page = "vllm:num_requests_waiting 1\nvllm:num_requests_running 1\nvllm:kv_cache_usage_perc 0.5\n" +
		"nv_trt_llm_request_metrics{request_type=\"waiting\"} 1\nnv_trt_llm_request_metrics{request_type=\"scheduled\"} 1\n" +
		"nv_trt_llm_kv_cache_block_metrics{kv_cache_block_type=\"fraction\"} 0.5\n"
	// query scrapes fresh servers, one per target (with the target's Address left empty), and
	// returns the first raw query each was asked at each path. Fresh servers per call: a
	// handler of an earlier call may still run after that call's scraper stopped.
	query := func(all bool, targets ...modelmetrics.Target) map[string]string {
		t.Helper()
		var mu sync.Mutex
		asked := map[string]string{} // path → raw query
		for i := range targets {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				if _, ok := asked[r.URL.Path]; !ok {
					asked[r.URL.Path] = r.URL.RawQuery
				}
				mu.Unlock()
				_, _ = w.Write([]byte(page))
			}))
			defer srv.Close()
			targets[i].Address = srv.Listener.Addr().String()
		}
		s := modelmetrics.NewScraper(modelmetrics.ScraperOptions{Interval: 10 * time.Millisecond, AllFamilies: all})
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Run(ctx) }()
		defer func() { cancel(); <-done }()
		s.SetTargets(targets)
		testkit.Eventually(t, 3*time.Second, "every target scraped", testkit.True(func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(asked) == len(targets)
		}))
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(asked)
	}
	// A vLLM server at /metrics, a Triton one at /triton.
	got := query(false, modelmetrics.Target{Engine: modelmetrics.EngineVLLM},
		modelmetrics.Target{Engine: modelmetrics.EngineTritonTRTLLM, Path: "/triton"})
	want := "name%5B%5D=vllm%3Anum_requests_waiting&name%5B%5D=vllm%3Anum_requests_running&name%5B%5D=vllm%3Alora_requests_info&" +
		"name%5B%5D=vllm%3Acache_config_info&name%5B%5D=vllm%3Akv_cache_usage_perc&name%5B%5D=vllm%3Agpu_cache_usage_perc"
	if got["/metrics"] != want || got["/triton"] != "" {
		t.Fatalf("queries %v: want vLLM's %q and none for Triton", got, want)
	}
	if got := query(true, modelmetrics.Target{Engine: modelmetrics.EngineVLLM}); got["/metrics"] != "" {
		t.Fatalf("AllFamilies asked %q", got["/metrics"])
	}
}
