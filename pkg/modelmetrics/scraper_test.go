package modelmetrics_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
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
