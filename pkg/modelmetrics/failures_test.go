package modelmetrics_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/e2e/testkit"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

// logLines collects a logger's JSON lines; the scrape loops write to it at once.
type logLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// count returns how many lines have message msg and endpoint addr.
func (l *logLines) count(t *testing.T, msg, addr string) int {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(strings.TrimSpace(l.buf.String()), "\n") {
		if line == "" {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log line %q: %v", line, err)
		}
		if rec["msg"] == msg && rec["endpoint"] == addr {
			n++
		}
	}
	return n
}

const (
	failingMsg   = "model server scrapes failing; its metrics go stale"
	recoveredMsg = "model server scrapes recovered"
)

// TestScrapeFailuresAreCountedAndLogged: each way a model server's scrape fails is counted under
// its reason and recorded in the sample; an endpoint whose scrapes start failing logs it once,
// however many scrapes fail and for whatever reasons, and logs its recovery once; an endpoint
// that fails again within the minute is counted but not logged again.
func TestScrapeFailuresAreCountedAndLogged(t *testing.T) {
	page, err := os.ReadFile("testdata/vllm-v0.19.1-kvwarden-snapshot.prom")
	if err != nil {
		t.Fatal(err)
	}
	var mode atomic.Value
	mode.Store("http_status")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch mode.Load() {
		case "http_status":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "unparsable":
			_, _ = w.Write([]byte("vllm:num_requests_waiting{ 1\n"))
		case "too_large":
			chunk := bytes.Repeat([]byte("# padding\n"), 1<<16)
			for range 14 { // 9 MiB
				if _, err := w.Write(chunk); err != nil {
					return
				}
			}
		case "timeout":
			select {
			case <-r.Context().Done():
			case <-time.After(2 * time.Second):
			}
		default:
			_, _ = w.Write(page)
		}
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := l.Addr().String()
	l.Close()

	reg := prometheus.NewRegistry()
	logs := &logLines{}
	s := modelmetrics.NewScraper(modelmetrics.ScraperOptions{Interval: 20 * time.Millisecond, Timeout: 200 * time.Millisecond,
		Registerer: reg, Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	s.SetTargets([]modelmetrics.Target{{Address: addr, Engine: modelmetrics.EngineVLLM}, {Address: refused, Engine: modelmetrics.EngineVLLM}})

	failures := func(reason string) float64 {
		return promtest.Value(t, reg, "spillway_spoke_scrape_failures_total", reason)
	}
	// waitFor waits until the endpoint's last scrape failed for reason, twice at least.
	waitFor := func(addr, reason string) {
		t.Helper()
		before := failures(reason)
		testkit.Eventually(t, 5*time.Second, addr+" failing for "+reason, func() error {
			smp, _ := s.Sample(addr)
			if smp.Reason != reason || smp.Err == nil || failures(reason) < before+2 {
				return fmt.Errorf("sample reason %q (err %v), %v failures for %s", smp.Reason, smp.Err, failures(reason)-before, reason)
			}
			return nil
		})
	}
	waitFor(refused, modelmetrics.ReasonRefused)
	for _, reason := range []string{modelmetrics.ReasonHTTPStatus, modelmetrics.ReasonUnparsable, modelmetrics.ReasonTooLarge, modelmetrics.ReasonTimeout} {
		mode.Store(reason)
		waitFor(addr, reason)
	}
	if n := logs.count(t, failingMsg, refused); n != 1 {
		t.Errorf("the refused endpoint logged %d failing lines, want 1", n)
	}
	if n := logs.count(t, failingMsg, addr); n != 1 {
		t.Errorf("the endpoint that failed in four ways logged %d failing lines, want 1", n)
	}

	mode.Store("ok")
	testkit.Eventually(t, 5*time.Second, "the endpoint scraped again", testkit.True(func() bool {
		smp, _ := s.Sample(addr)
		return smp.Err == nil && smp.Reason == "" && !smp.ScrapedAt.IsZero()
	}))
	testkit.Eventually(t, 5*time.Second, "its recovery logged", testkit.True(func() bool { return logs.count(t, recoveredMsg, addr) == 1 }))

	// Failing again within the minute: counted, not logged; nor is its recovery.
	mode.Store("http_status")
	waitFor(addr, modelmetrics.ReasonHTTPStatus)
	mode.Store("ok")
	testkit.Eventually(t, 5*time.Second, "the endpoint scraped again", testkit.True(func() bool {
		smp, _ := s.Sample(addr)
		return smp.Err == nil
	}))
	if f, r := logs.count(t, failingMsg, addr), logs.count(t, recoveredMsg, addr); f != 1 || r != 1 {
		t.Errorf("after a second failure within the minute: %d failing and %d recovered lines, want 1 and 1", f, r)
	}
	if n := logs.count(t, recoveredMsg, refused); n != 0 {
		t.Errorf("the refused endpoint, still failing, logged %d recoveries", n)
	}
}
