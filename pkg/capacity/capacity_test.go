package capacity

import (
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/spillway-io/spillway/pkg/fleet"
	"github.com/spillway-io/spillway/pkg/modelmetrics"
)

func TestAggregate(t *testing.T) {
	now := time.Unix(1000, 0)
	th := DefaultThresholds()
	pool := fleet.PoolRef{Namespace: "default", Name: "chat"}
	fresh := now.Add(-50 * time.Millisecond)
	tests := []struct {
		name          string
		eps           []Endpoint
		ready         uint32
		queue         uint32
		saturated     bool
		saturation    float64
		kv            float64
		loras         []string
		wantTotalEdps uint32
		failures      map[string]uint32
	}{
		{name: "no endpoints", saturated: true, saturation: 1},
		{name: "idle endpoints have headroom", ready: 2, wantTotalEdps: 2, saturation: 0,
			eps: []Endpoint{{Address: "a", ScrapedAt: fresh}, {Address: "b", ScrapedAt: fresh}}},
		{name: "one endpoint with headroom keeps the pool unsaturated", ready: 2, wantTotalEdps: 2, queue: 7,
			saturation: 0.875, kv: 0.4, // loads 1 (queue 5/5) and 0.75 (KV 0.6/0.8)
			eps: []Endpoint{
				{Address: "a", ScrapedAt: fresh, Metrics: modelmetrics.Metrics{WaitingQueue: 5, KVCacheUsage: 0.2}},
				{Address: "b", ScrapedAt: fresh, Metrics: modelmetrics.Metrics{WaitingQueue: 2, KVCacheUsage: 0.6, ActiveLoRAs: []string{"x"}, WaitingLoRAs: []string{"a"}}},
			}, loras: []string{"a", "x"}},
		{name: "queue and KV-cache both saturate", ready: 2, wantTotalEdps: 2, queue: 6, saturated: true, saturation: 1, kv: 0.45,
			eps: []Endpoint{
				{Address: "a", ScrapedAt: fresh, Metrics: modelmetrics.Metrics{WaitingQueue: 6, KVCacheUsage: 0.1}},
				{Address: "b", ScrapedAt: fresh, Metrics: modelmetrics.Metrics{KVCacheUsage: 0.8}},
			}},
		{name: "stale metrics are not ready", ready: 1, wantTotalEdps: 3, saturation: 0.5, kv: 0.4,
			eps: []Endpoint{
				{Address: "a", ScrapedAt: now.Add(-time.Second), Metrics: modelmetrics.Metrics{WaitingQueue: 0}},
				{Address: "b"},
				{Address: "c", ScrapedAt: fresh, Metrics: modelmetrics.Metrics{KVCacheUsage: 0.4}},
			}},
		{name: "failed scrapes are counted by kind", ready: 1, wantTotalEdps: 4, saturation: 0, failures: map[string]uint32{"refused": 2, "unknown": 1},
			eps: []Endpoint{
				{Address: "a", ScrapedAt: fresh},
				{Address: "b", Failed: true, FailReason: "refused"},
				{Address: "c", Failed: true, FailReason: "refused", ScrapedAt: now.Add(-time.Second)},
				{Address: "d", Failed: true},
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Aggregate(pool, tt.eps, now, th)
			if c.ReadyEndpoints != tt.ready || c.TotalEndpoints != tt.wantTotalEdps || c.QueueDepth != tt.queue ||
				c.Saturated != tt.saturated || !near(c.Saturation, tt.saturation) || !near(c.KVCacheUtilization, tt.kv) ||
				!slices.Equal(c.LoRAAdapters, tt.loras) || !maps.Equal(c.ScrapeFailures, tt.failures) {
				t.Fatalf("Aggregate = %+v", c)
			}
			detail := EndpointDetail(tt.eps, now, th)
			if len(detail) != len(tt.eps) {
				t.Fatalf("endpoint detail %+v: want one per endpoint", detail)
			}
			for i, e := range detail {
				src := tt.eps[i]
				if e.Address != src.Address || e.QueueDepth != uint32(src.Metrics.WaitingQueue) || (e.ScrapeError != "") != src.Failed ||
					e.Ready != (th.Fresh(src, now) && th.Load(src, now) < 1) {
					t.Fatalf("endpoint detail %d = %+v from %+v", i, e, src)
				}
			}
		})
	}
}

func near(a, b float64) bool { d := a - b; return d < 1e-9 && d > -1e-9 }

func TestPending(t *testing.T) {
	now := time.Unix(1000, 0)
	th := DefaultThresholds()
	target := now.Add(-th.Staleness / 2)
	for _, tc := range []struct {
		name string
		e    Endpoint
		want bool
	}{
		{name: "never scraped, a target within the bound", e: Endpoint{TargetSince: target}, want: true},
		{name: "never scraped, a target exactly the bound ago", e: Endpoint{TargetSince: now.Add(-th.Staleness)}, want: true},
		{name: "never scraped past the bound: not ready, not pending", e: Endpoint{TargetSince: now.Add(-th.Staleness - time.Millisecond)}},
		{name: "its first scrape failed: observed", e: Endpoint{TargetSince: target, Failed: true}},
		{name: "scraped", e: Endpoint{TargetSince: target, ScrapedAt: now}},
		{name: "stale metrics are observed ones", e: Endpoint{TargetSince: target, ScrapedAt: now.Add(-time.Hour)}},
		{name: "target time unknown: never pending", e: Endpoint{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := th.Pending(tc.e, now); got != tc.want {
				t.Fatalf("Pending = %v, want %v", got, tc.want)
			}
			if got := Unobserved([]Endpoint{{ScrapedAt: now}, tc.e}, now, th); got != tc.want {
				t.Fatalf("Unobserved of a pool with it = %v, want %v", got, tc.want)
			}
			if th.Pending(tc.e, now) && th.Fresh(tc.e, now) {
				t.Fatal("a pending endpoint must not count as ready")
			}
		})
	}
	if Unobserved(nil, now, th) {
		t.Fatal("a pool without endpoints is observed: it has none ready")
	}
}
