package app

import (
	"sync"

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

// datastore gives the EPP the local pools' endpoints with their latest scraped metrics.
type datastore struct {
	scraper samples

	mu    sync.RWMutex
	pools map[fleet.PoolRef]poolEndpoints
}

type poolEndpoints struct {
	addrs  []string
	models [][]string
}

func newDatastore(s samples) *datastore {
	return &datastore{scraper: s, pools: map[fleet.PoolRef]poolEndpoints{}}
}

// Set replaces the pools and returns the endpoints that left every pool.
func (d *datastore) Set(pools []source.Pool) (gone []string) {
	next := make(map[fleet.PoolRef]poolEndpoints, len(pools))
	now := map[string]bool{}
	for _, p := range pools {
		var pe poolEndpoints
		for _, e := range p.Endpoints {
			pe.addrs = append(pe.addrs, e.Address)
			pe.models = append(pe.models, e.Models)
			now[e.Address] = true
		}
		next[p.Ref] = pe
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, pe := range d.pools {
		for _, a := range pe.addrs {
			if !now[a] {
				gone = append(gone, a)
			}
		}
	}
	d.pools = next
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
		dst = append(dst, epp.Endpoint{
			Endpoint: scheduler.Endpoint{Address: pe.addrs[i], Metrics: s.Metrics, ScrapedAt: s.ScrapedAt},
			Ready:    s.Err == nil && !s.ScrapedAt.IsZero(),
			Models:   pe.models[i],
		})
	}
	return dst, true
}
