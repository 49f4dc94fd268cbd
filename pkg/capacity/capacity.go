// Package capacity turns endpoint metrics into load: each endpoint's load against the saturation
// thresholds, and a pool's aggregate that a spoke reports to the hub.
//
// An endpoint's load is max(queue/QueueDepth, kv/KVCacheUtilization), capped at 1; an endpoint
// whose metrics are older than Staleness, or were never read, has load 1 and is not ready. An
// endpoint has headroom while its load is below 1. A pool is saturated when no ready endpoint has
// headroom (GIE's saturation detector), and its saturation is the mean load of its ready endpoints
// (1 when none is ready).
//
// An endpoint is pending while nothing is known of it yet: no scrape of it has ended, and it
// became a scrape target no longer than Staleness ago (a spoke that just started, an endpoint just
// added). A pool with a pending endpoint is unobserved (Unobserved): its aggregate says nothing of
// its load, and the spill decision must not read "not ready" into it. An endpoint still not
// scraped past that bound is simply not ready, so a pool whose endpoints never answer counts as
// having none ready.
package capacity

import (
	"maps"
	"slices"
	"time"

	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

// Thresholds are the saturation detector's settings. The defaults are GIE's.
type Thresholds struct {
	// QueueDepth is the waiting queue at which an endpoint has no headroom.
	QueueDepth int `json:"queueDepth"`
	// KVCacheUtilization is the KV-cache use (0..1) at which an endpoint has no headroom.
	KVCacheUtilization float64 `json:"kvCacheUtilization"`
	// Staleness is how old metrics may be before the endpoint counts as saturated.
	Staleness time.Duration `json:"staleness"`
}

// DefaultThresholds returns queue depth 5, KV-cache 0.8, stale after 200ms.
func DefaultThresholds() Thresholds {
	return Thresholds{QueueDepth: 5, KVCacheUtilization: 0.8, Staleness: 200 * time.Millisecond}
}

// Endpoint is one endpoint's latest metrics.
type Endpoint struct {
	Address string
	Metrics modelmetrics.Metrics
	// ScrapedAt is when the last successful scrape ended; zero before the first.
	ScrapedAt time.Time
	// Failed is true when the last scrape failed: the endpoint was observed, not reachable (the
	// metrics, if any, are an earlier scrape's, used until they are stale).
	Failed bool
	// FailReason is the kind of the last scrape's failure (modelmetrics.Reason*), when Failed.
	FailReason string
	// TargetSince is when the endpoint became a scrape target; zero when unknown, and then an
	// endpoint never scraped is not ready at once (it is never pending).
	TargetSince time.Time
	// Models the endpoint serves as its source declares them; empty: the model names its
	// server labels its metrics with.
	Models []string
	// GPUUtilization is the utilisation, 0..1, of the GPUs a DCGM exporter attributes to the
	// endpoint's Pod; nil when none does.
	GPUUtilization *float64
}

// MaxPoolModels bounds the models of a pool's capacity (the sync protocol's limit).
const MaxPoolModels = 64

// Pending reports whether nothing is known of the endpoint yet: no scrape of it has ended, and it
// became a scrape target no longer than Staleness ago.
func (t Thresholds) Pending(e Endpoint, now time.Time) bool {
	return e.ScrapedAt.IsZero() && !e.Failed && !e.TargetSince.IsZero() && now.Sub(e.TargetSince) <= t.Staleness
}

// Unobserved reports whether some endpoint of a pool is pending: the pool's load is not known
// yet, and no decision should start on its aggregate.
func Unobserved(eps []Endpoint, now time.Time, t Thresholds) bool {
	return slices.ContainsFunc(eps, func(e Endpoint) bool { return t.Pending(e, now) })
}

// Fresh reports whether the endpoint's metrics are recent enough to use.
func (t Thresholds) Fresh(e Endpoint, now time.Time) bool {
	return !e.ScrapedAt.IsZero() && now.Sub(e.ScrapedAt) <= t.Staleness
}

// Load returns the endpoint's load, 0..1; 1 means no headroom.
func (t Thresholds) Load(e Endpoint, now time.Time) float64 {
	if !t.Fresh(e, now) {
		return 1
	}
	l := 0.0
	if t.QueueDepth > 0 {
		l = float64(e.Metrics.WaitingQueue) / float64(t.QueueDepth)
	}
	if t.KVCacheUtilization > 0 {
		l = max(l, e.Metrics.KVCacheUsage/t.KVCacheUtilization)
	}
	return min(l, 1)
}

// MaxEndpointDetail bounds the per-endpoint detail of an aggregate (the sync protocol's limit).
const MaxEndpointDetail = 1000

// EndpointDetail is the per-endpoint part of a pool's capacity (at most MaxEndpointDetail), for
// remote clusters that send spilled requests to endpoints directly (Endpoint Mode on flat
// networks). An endpoint is Ready there when its metrics are fresh and it has headroom.
func EndpointDetail(eps []Endpoint, now time.Time, t Thresholds) []fleet.EndpointCapacity {
	out := make([]fleet.EndpointCapacity, 0, min(len(eps), MaxEndpointDetail))
	for _, e := range eps[:min(len(eps), MaxEndpointDetail)] {
		out = append(out, fleet.EndpointCapacity{Address: e.Address, QueueDepth: uint32(e.Metrics.WaitingQueue),
			RunningRequests: uint32(e.Metrics.Running), KVCacheUtilization: e.Metrics.KVCacheUsage,
			Ready: t.Fresh(e, now) && t.Load(e, now) < 1, ScrapeError: failReason(e), GPUUtilization: e.GPUUtilization})
	}
	return out
}

// failReason is the kind of e's last scrape failure: "" when it did not fail, "unknown" when
// the scraper gave none.
func failReason(e Endpoint) string {
	switch {
	case !e.Failed:
		return ""
	case e.FailReason == "":
		return "unknown"
	}
	return e.FailReason
}

// Aggregate computes a pool's capacity from its endpoints.
func Aggregate(pool fleet.PoolRef, eps []Endpoint, now time.Time, t Thresholds) fleet.PoolCapacity {
	c := fleet.PoolCapacity{Pool: pool, TotalEndpoints: uint32(len(eps)), ObservedAt: now, Saturated: true, Saturation: 1}
	var kv, load, gpu float64
	gpus := 0
	loras, models := map[string]bool{}, map[string]bool{}
	for _, e := range eps {
		if e.Failed {
			if c.ScrapeFailures == nil {
				c.ScrapeFailures = map[string]uint32{}
			}
			c.ScrapeFailures[failReason(e)]++
		}
		if !t.Fresh(e, now) {
			continue
		}
		c.ReadyEndpoints++
		c.QueueDepth += uint32(e.Metrics.WaitingQueue)
		c.RunningRequests += uint32(e.Metrics.Running)
		kv += e.Metrics.KVCacheUsage
		if e.GPUUtilization != nil {
			gpu += *e.GPUUtilization
			gpus++
		}
		l := t.Load(e, now)
		load += l
		if l < 1 {
			c.Saturated = false
		}
		served := e.Models
		if len(served) == 0 {
			served = e.Metrics.Models
		}
		for _, m := range served {
			models[m] = true
		}
		for _, a := range e.Metrics.ActiveLoRAs {
			loras[a] = true
		}
		for _, a := range e.Metrics.WaitingLoRAs {
			loras[a] = true
		}
	}
	if gpus > 0 {
		mean := gpu / float64(gpus)
		c.GPUUtilization = &mean
	}
	if c.ReadyEndpoints > 0 {
		c.KVCacheUtilization = kv / float64(c.ReadyEndpoints)
		c.Saturation = load / float64(c.ReadyEndpoints)
	}
	for a := range loras {
		c.LoRAAdapters = append(c.LoRAAdapters, a)
	}
	slices.Sort(c.LoRAAdapters)
	c.Models = slices.Sorted(maps.Keys(models))
	c.Models = c.Models[:min(len(c.Models), MaxPoolModels)]
	if len(c.Models) == 0 {
		c.Models = nil
	}
	return c
}
