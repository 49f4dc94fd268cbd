package modelmetrics

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestGPUScraperAttributesPods: a round reads every address of every exporter; the Pods' values
// are those of the pages read, a failing exporter is counted and skipped, and the values age out
// three intervals after the last round that read a page.
func TestGPUScraperAttributesPods(t *testing.T) {
	page := `DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-a",namespace="llm",pod="chat-0",container="vllm"} 70` + "\n" +
		`DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-b",namespace="",pod="",container=""} 0` + "\n"
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(page)) }))
	defer srv.Close()
	broken := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 500) }))
	defer broken.Close()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	_, brokenPort, _ := net.SplitHostPort(broken.Listener.Addr().String())
	reg := prometheus.NewRegistry()
	s := NewGPUScraper(GPUScraperOptions{
		Exporters: []string{"exporters.test:" + port, "127.0.0.1:" + brokenPort},
		Interval:  time.Hour, Registerer: reg,
		Lookup: func(_ context.Context, host string) ([]string, error) {
			if host == "exporters.test" {
				return []string{"127.0.0.1"}, nil
			}
			return []string{host}, nil
		},
	})
	if _, ok := s.Pod("llm/chat-0"); ok {
		t.Fatal("a value before any round")
	}
	s.round(context.Background(), NewDCGMParser())
	if u, ok := s.Pod("llm/chat-0"); !ok || u != 0.7 {
		t.Fatalf("llm/chat-0: %v %v, want 0.7", u, ok)
	}
	if _, ok := s.Pod("llm/other"); ok {
		t.Fatal("a Pod no exporter names has a value")
	}
	if ok, failed := testutil.ToFloat64(s.scrape.WithLabelValues("ok")), testutil.ToFloat64(s.scrape.WithLabelValues("failed")); ok != 1 || failed != 1 {
		t.Fatalf("scrapes ok %v failed %v, want 1 and 1", ok, failed)
	}
	s.mu.Lock()
	s.at = time.Now().Add(-4 * time.Hour)
	s.mu.Unlock()
	if _, ok := s.Pod("llm/chat-0"); ok {
		t.Fatal("a value older than three intervals is still given")
	}
}
