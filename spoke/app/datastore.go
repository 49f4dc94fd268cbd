package app

import (
	"sync"
	"time"

	"github.com/spillway-io/spillway/pkg/epp"
	"github.com/spillway-io/spillway/pkg/epp/scheduler"
	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
	"github.com/spillway-io/spillway/spoke/source"
)

// samples looks up the endpoints' latest metrics (a *modelmetrics.Scraper).
type samples interface {
	Samples(addrs []string, dst []modelmetrics.Sample) []modelmetrics.Sample
}

// datastore gives the EPP the local pools' endpoints with their latest scraped metrics, and when
// each became a scrape target: the EPP takes an endpoint not scraped yet as one of unknown load
// (pending) for at most the metrics' staleness after that, not as one that is down.
type datastore struct {
	scraper samples
	now     func() time.Time
	// gpu, when set, gives a Pod's GPU utilisation (a DCGM exporter's).
	gpu func(pod string) (float64, bool)

	mu    sync.RWMutex
	pools map[fleet.PoolRef]poolEndpoints
	// since is when each endpoint of any pool became a scrape target (was first Set).
	since map[string]time.Time
}

type poolEndpoints struct {
	addrs  []string
	models [][]string
	pods   []string
	since  []time.Time
}

func newDatastore(s samples) *datastore {
	return &datastore{scraper: s, now: time.Now, pools: map[fleet.PoolRef]poolEndpoints{}, since: map[string]time.Time{}}
}

// Set replaces the pools and returns the endpoints that left every pool. An endpoint keeps the
// time it became a target while it stays in some pool.
func (d *datastore) Set(pools []source.Pool) (gone []string) {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	next := make(map[fleet.PoolRef]poolEndpoints, len(pools))
	since := make(map[string]time.Time, len(d.since))
	for _, p := range pools {
		var pe poolEndpoints
		for _, e := range p.Endpoints {
			t, ok := since[e.Address]
			if !ok {
				if t, ok = d.since[e.Address]; !ok {
					t = now
				}
				since[e.Address] = t
			}
			pe.addrs = append(pe.addrs, e.Address)
			pe.models = append(pe.models, e.Models)
			pe.pods = append(pe.pods, e.Pod)
			pe.since = append(pe.since, t)
		}
		next[p.Ref] = pe
	}
	for a := range d.since {
		if _, ok := since[a]; !ok {
			gone = append(gone, a)
		}
	}
	d.pools, d.since = next, since
	return gone
}

// Endpoints implements epp.Datastore.
func (d *datastore) Endpoints(pool fleet.PoolRef, dst []epp.Endpoint) ([]epp.Endpoint, bool) {
	d.mu.RLock()
	pe, ok := d.pools[pool]
	d.mu.RUnlock()
	if !ok {
		return dst, false
	}
	samples := d.scraper.Samples(pe.addrs, make([]modelmetrics.Sample, 0, len(pe.addrs)))
	for i, s := range samples {
		se := scheduler.Endpoint{Address: pe.addrs[i], Metrics: s.Metrics, ScrapedAt: s.ScrapedAt}
		if d.gpu != nil && pe.pods[i] != "" {
			se.GPUUtilization, se.HasGPU = d.gpu(pe.pods[i])
		}
		dst = append(dst, epp.Endpoint{
			Endpoint:    se,
			Ready:       s.Err == nil && !s.ScrapedAt.IsZero(),
			Failed:      s.Err != nil,
			TargetSince: pe.since[i],
			Models:      pe.models[i],
		})
	}
	return dst, true
}
