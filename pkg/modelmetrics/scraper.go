package modelmetrics

import (
	"cmp"
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// maxPageBytes bounds a /metrics page; a larger page is an error, not a memory spike.
const maxPageBytes = 8 << 20

// Target is an endpoint to scrape.
type Target struct {
	// Address is the endpoint's ip:port; the page is read from http://Address/metrics unless
	// Path names another.
	Address string
	Engine  Engine
	Path    string
}

// Sample is the latest scrape of one endpoint.
type Sample struct {
	Metrics Metrics
	// ScrapedAt is when the last successful scrape finished; zero before the first.
	ScrapedAt time.Time
	// Err is the error of the last scrape attempt, nil when it succeeded, and Reason its kind
	// (ReasonRefused, ...).
	Err    error
	Reason string
}

// ScraperOptions configure a Scraper.
type ScraperOptions struct {
	// Interval between scrapes of one endpoint; 0 means 1s.
	Interval time.Duration
	// Timeout of one scrape; 0 means max(Interval, 1s).
	Timeout time.Duration
	// Registerer takes the scraper's metrics (none when nil); Logger its lines about endpoints
	// whose scrapes fail and recover (none when nil).
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// AllFamilies asks every server for its whole page. Otherwise a server that honours name[]
	// query parameters (vLLM, SGLang: prometheus_client's ASGI app) is asked for the families
	// routing reads only: a few hundred bytes instead of tens of kilobytes to render, send and
	// skim, at every scrape.
	AllFamilies bool
}

// Scraper scrapes a changing set of endpoints, each on its own loop, and keeps the latest sample
// of each. Run owns every loop.
type Scraper struct {
	opts    ScraperOptions
	metrics *scrapeMetrics

	mu      sync.RWMutex
	targets map[string]*target
	changed chan struct{}
	// slots is how many instants of each interval the scrapes are spread over: enough that at
	// most about scrapeBatch endpoints are scraped at once (scrapeOffset).
	slots atomic.Int64
}

// scrapeBatch is about how many endpoints are scraped at the same instant. Scrapes that start
// together wake the spoke once: their requests leave together and their answers come back
// together, so the Go scheduler's threads wake once per batch rather than once per endpoint (at
// 100 endpoints every 50 ms: 0.11 cores idle, against 0.17 spread over the interval;
// docs/architecture.md). A batch holds a page buffer per scrape while it runs and parses its
// pages in one burst, which a request arriving meanwhile waits behind: all 1,000 endpoints of
// make bench-epp at once doubled the spoke's peak memory and nearly tripled its 16-way p99,
// against 8 batches.
const scrapeBatch = 128

type target struct {
	t      Target
	cancel context.CancelFunc
	done   chan struct{}
	sample Sample
}

// NewScraper returns a scraper with no endpoints.
func NewScraper(opts ScraperOptions) *Scraper {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.Timeout <= 0 {
		opts.Timeout = max(opts.Interval, time.Second)
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	return &Scraper{opts: opts, metrics: newScrapeMetrics(opts.Registerer), targets: map[string]*target{}, changed: make(chan struct{}, 1)}
}

// SetTargets replaces the set of endpoints. Endpoints that stay keep their samples.
func (s *Scraper) SetTargets(ts []Target) {
	s.mu.Lock()
	next := make(map[string]*target, len(ts))
	for _, t := range ts {
		if cur, ok := s.targets[t.Address]; ok && cur.t == t {
			next[t.Address] = cur
			continue
		}
		next[t.Address] = &target{t: t}
	}
	for addr, cur := range s.targets {
		if n, ok := next[addr]; !ok || n != cur {
			if cur.cancel != nil {
				cur.cancel()
			}
		}
	}
	s.targets = next
	s.slots.Store(int64(max(1, (len(next)+scrapeBatch-1)/scrapeBatch)))
	s.mu.Unlock()
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Sample returns the latest sample of an endpoint.
func (s *Scraper) Sample(addr string) (Sample, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	t, ok := s.targets[addr]
	if !ok {
		return Sample{}, false
	}
	return t.sample, true
}

// Samples appends the latest sample of each address to dst (the zero Sample for an unknown one),
// under one lock: the Endpoint Picker reads a whole pool per request.
func (s *Scraper) Samples(addrs []string, dst []Sample) []Sample {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, a := range addrs {
		var smp Sample
		if t, ok := s.targets[a]; ok {
			smp = t.sample
		}
		dst = append(dst, smp)
	}
	return dst
}

// Run scrapes until ctx ends, then waits for every loop to stop.
func (s *Scraper) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		s.mu.Lock()
		for _, t := range s.targets {
			if t.cancel != nil {
				continue
			}
			tctx, cancel := context.WithCancel(ctx)
			t.cancel, t.done = cancel, make(chan struct{})
			wg.Add(1)
			go func(t *target) {
				defer wg.Done()
				defer close(t.done)
				s.loop(tctx, t)
			}(t)
		}
		s.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil
		case <-s.changed:
		}
	}
}

func (s *Scraper) loop(ctx context.Context, t *target) {
	h := &health{addr: t.t.Address, log: s.opts.Logger, metrics: s.metrics}
	p, err := NewParser(t.t.Engine)
	if err == nil && t.t.Path != "" && !ValidPath(t.t.Path) {
		err = fmt.Errorf("scrape %s: metrics path %q is not a plain absolute path", t.t.Address, t.t.Path)
	}
	if err != nil {
		h.failed(time.Now(), ReasonConfig, err)
		s.store(t, Sample{Err: err, Reason: ReasonConfig})
		return
	}
	path := cmp.Or(t.t.Path, "/metrics")
	if !s.opts.AllFamilies {
		path = p.FilteredPath(path)
	}
	c := newPageConn(t.t.Address, path)
	defer c.close()
	// A scrape in flight when ctx ends stops at once rather than at its deadline.
	defer context.AfterFunc(ctx, c.abort)()
	// The endpoint is scraped at its slot's instants of the wall clock, with the other endpoints
	// of its batch (scrapeBatch).
	slot := slotHash(t.t.Address)
	timer := time.NewTimer(s.untilSlot(time.Now(), slot))
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		var m Metrics
		reason := ""
		bp := pageBuffers.Get().(*[]byte)
		*bp, err = c.get(ctx, (*bp)[:0], s.opts.Timeout)
		if err != nil {
			reason = fetchReason(err)
		} else if m, err = p.Parse(*bp); err != nil {
			err, reason = fmt.Errorf("scrape %s: %w", c.url(), err), ReasonUnparsable
		}
		if cap(*bp) <= maxPooledPage {
			pageBuffers.Put(bp)
		}
		if ctx.Err() != nil {
			return
		}
		now := time.Now()
		s.mu.Lock()
		if err != nil {
			t.sample.Err, t.sample.Reason = err, reason
		} else {
			t.sample = Sample{Metrics: m, ScrapedAt: now}
		}
		s.mu.Unlock()
		if err != nil {
			h.failed(now, reason, err)
		} else {
			h.succeeded(now)
		}
		timer.Reset(s.untilSlot(time.Now(), slot))
	}
}

// untilSlot is the time from now to the next scrape of the endpoint whose address hashes to
// slot (slotHash): the endpoints are spread over the scraper's slots by it.
func (s *Scraper) untilSlot(now time.Time, slot uint32) time.Duration {
	return untilTick(now, s.opts.Interval, scrapeOffset(slot, s.opts.Interval, s.slots.Load()))
}

// slotHash is the hash of an endpoint's address that picks its slot, computed once per loop.
func slotHash(addr string) uint32 {
	h := fnv.New32a()
	h.Write([]byte(addr))
	return h.Sum32()
}

// scrapeOffset is where in each interval an endpoint of that slot hash is scraped: the start of
// one of slots equal parts.
func scrapeOffset(slot uint32, interval time.Duration, slots int64) time.Duration {
	if slots <= 1 {
		return 0
	}
	return time.Duration(int64(slot) % slots * int64(interval) / slots)
}

// untilTick is the time from now to the next instant offset after a multiple of interval on the
// wall clock (0 <= offset < interval): never 0, at most interval.
func untilTick(now time.Time, interval, offset time.Duration) time.Duration {
	return interval - time.Duration((now.UnixNano()-int64(offset))%int64(interval)+int64(interval))%interval
}

func (s *Scraper) store(t *target, smp Sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	t.sample = smp
}

// pageBuffers recycles page buffers across endpoints: an endpoint needs one only while its
// scrape runs, so a thousand endpoints share the few that are in use at once instead of each
// keeping its own.
var pageBuffers = sync.Pool{New: func() any {
	b := make([]byte, 0, 96<<10)
	return &b
}}

// maxPooledPage keeps a rare huge page's buffer out of the pool.
const maxPooledPage = 1 << 20
