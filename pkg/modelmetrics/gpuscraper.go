package modelmetrics

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// GPUScraperOptions configure a GPUScraper.
type GPUScraperOptions struct {
	// Exporters are the DCGM exporters, host:port each; a host that is a name is resolved every
	// round, and every address it has is read (a headless Service of the exporters' DaemonSet
	// names them all).
	Exporters []string
	// Interval between rounds; 5 s when zero (the exporter's own collection interval is 30 s by
	// default). Timeout bounds one page; 2 s when zero.
	Interval, Timeout time.Duration
	Logger            *slog.Logger
	Registerer        prometheus.Registerer
	// Lookup resolves a host; net.DefaultResolver's when nil.
	Lookup func(ctx context.Context, host string) ([]string, error)
}

// GPUScraper reads NVIDIA DCGM exporters' pages and keeps the GPU utilisation of each Pod they
// attribute GPUs to. Run runs it; Pod is safe for concurrent use.
type GPUScraper struct {
	opts   GPUScraperOptions
	client *http.Client
	scrape *prometheus.CounterVec

	mu   sync.RWMutex
	pods map[string]float64
	at   time.Time // when pods were read; zero before the first round that read a page
}

// NewGPUScraper returns a scraper and registers its metrics.
func NewGPUScraper(o GPUScraperOptions) *GPUScraper {
	if o.Interval <= 0 {
		o.Interval = 5 * time.Second
	}
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Lookup == nil {
		o.Lookup = net.DefaultResolver.LookupHost
	}
	s := &GPUScraper{opts: o, client: &http.Client{Timeout: o.Timeout},
		scrape: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spillway_spoke_gpu_scrapes_total",
			Help: "DCGM exporter pages read for GPU utilisation, by result (ok, failed).",
		}, []string{"result"})}
	s.scrape.WithLabelValues("ok")
	s.scrape.WithLabelValues("failed")
	if o.Registerer != nil {
		o.Registerer.MustRegister(s.scrape)
	}
	return s
}

// Pod returns the mean utilisation, 0..1, of the GPUs the exporters attribute to a Pod
// (namespace/name), when the last round that read a page is no older than three intervals.
func (s *GPUScraper) Pod(key string) (float64, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.at.IsZero() || time.Since(s.at) > 3*s.opts.Interval {
		return 0, false
	}
	u, ok := s.pods[key]
	return u, ok
}

// Run reads the exporters every interval until ctx ends.
func (s *GPUScraper) Run(ctx context.Context) error {
	t := time.NewTicker(s.opts.Interval)
	defer t.Stop()
	p := NewDCGMParser()
	for {
		s.round(ctx, p)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// round reads every exporter once; the Pods of the pages it read replace the last round's.
func (s *GPUScraper) round(ctx context.Context, p *DCGMParser) {
	var gpus []GPUUtil
	read := 0
	for _, ex := range s.opts.Exporters {
		host, port, err := net.SplitHostPort(ex)
		if err != nil {
			continue // validated by the options
		}
		addrs, err := s.opts.Lookup(ctx, host)
		if err != nil {
			s.scrape.WithLabelValues("failed").Inc()
			s.opts.Logger.Warn("DCGM exporter name not resolved", "exporter", ex, "err", err)
			continue
		}
		for _, a := range addrs {
			page, err := s.get(ctx, "http://"+net.JoinHostPort(a, port)+"/metrics")
			if err == nil {
				gpus, err = p.Parse(page, gpus)
			}
			if err != nil {
				s.scrape.WithLabelValues("failed").Inc()
				s.opts.Logger.Warn("DCGM exporter page not read", "exporter", ex, "address", a, "err", err)
				continue
			}
			s.scrape.WithLabelValues("ok").Inc()
			read++
		}
	}
	if read == 0 {
		return // the last round's values age out
	}
	pods := PodGPUUtilization(gpus)
	s.mu.Lock()
	s.pods, s.at = pods, time.Now()
	s.mu.Unlock()
}

func (s *GPUScraper) get(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: HTTP %d", url, resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxPageBytes+1))
	if err == nil && len(b) > maxPageBytes {
		err = fmt.Errorf("GET %s: page larger than %d bytes", url, maxPageBytes)
	}
	return b, err
}
