package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/spillway-io/spillway/e2e/loadgen"
	"github.com/spillway-io/spillway/e2e/regions"
)

// The RAG-like workload of the cache-aware comparison: long shared contexts, a third at home in
// each region (used there 95 % of the time, any context otherwise), streamed; then a burst in
// us-east on any context (a document set the whole company reads at once).
const (
	ragContexts     = 48    // 16 per region: three quarters of what a region's two simulated servers hold (21)
	ragContextBytes = 12000 // 3,000 tokens: 375 ms of prefill on a simulator, 2 ms when cached
	ragHomeShare    = 0.95
	// ragEPPConfig sizes every EPP's prefix index to what a simulator's cache holds (2,048
	// blocks of 16 tokens, about 4 bytes each: 2,048 blocks of 64 bytes), as an operator sizes
	// GIE's lruCapacityPerServer to the servers' KV cache.
	ragEPPConfig = "prefixCache: {lruCapacityPerServer: 2048}\n"
)

// ragResult is one ranking's figures: the spilled Critical requests of the burst region.
type ragResult struct {
	SpilledRequests int     `json:"spilled_requests"`
	PrefixHitRate   float64 `json:"spilled_prefix_hit_rate"`
	TTFTp50         float64 `json:"spilled_ttft_p50_ms"`
	TTFTp99         float64 `json:"spilled_ttft_p99_ms"`
	// ByRegion counts the spilled requests by the region that served them.
	ByRegion map[string]int `json:"spilled_by_region"`
	// ByHome breaks the spilled requests down by the home region of their context.
	ByHome map[string]ragShare `json:"spilled_by_context_home"`
}

// ragShare is the spilled requests on the contexts at home in one region.
type ragShare struct {
	Requests int `json:"requests"`
	// ServedAtHome counts those served in the context's home region.
	ServedAtHome   int     `json:"served_at_home"`
	PrefixHitRate  float64 `json:"prefix_hit_rate"`
	prompt, cached int
}

// ragReport is the cache-aware comparison as spill.json carries it.
type ragReport struct {
	// Date is when it ran (the report's date is the burst's: --only runs one part).
	Date      string    `json:"date,omitempty"`
	Scenario  string    `json:"scenario"`
	Aware     ragResult `json:"cache_aware"`
	Blind     ragResult `json:"cache_blind"`
	HitAware  float64   `json:"-"`
	HitBlind  float64   `json:"-"`
	TTFTRatio float64   `json:"-"`
}

// rag runs the RAG-like workload with cache-aware ranking (the spokes send prefix sketches) or
// blind (--prefix-sketch=false: every target is ranked as holding nothing).
func (o options) rag(ctx context.Context, aware bool) (ragResult, error) {
	name := "rag_blind"
	var spokeArgs []string
	if aware {
		name = "rag_cache_aware"
	} else {
		spokeArgs = []string{"--prefix-sketch=false"}
	}
	r, err := regions.Start(ctx, regions.Config{Prefix: o.prefix, BinDir: o.binDir, WorkDir: mkdir(o.workDir, name), SpokeArgs: spokeArgs,
		EPPConfig: ragEPPConfig})
	if err != nil {
		return ragResult{}, err
	}
	defer r.Stop()
	load := func(reg regions.Region, rate float64, d time.Duration, homeShare float64) regions.Load {
		home := [2]int{(reg.Index - 1) * ragContexts / len(r.Regions), reg.Index * ragContexts / len(r.Regions)}
		return regions.Load{Rate: rate, Duration: d, Prefixes: ragContexts, PrefixBytes: ragContextBytes, Home: home, HomeShare: homeShare, StreamShare: 1}
	}
	total := o.ragWarm + o.ragBurst
	var wg sync.WaitGroup
	errs := make(chan error, len(r.Regions)+1)
	for _, reg := range r.Regions[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := r.Load(ctx, reg, load(reg, o.steady, total, ragHomeShare)); err != nil {
				errs <- err
			}
		}()
	}
	east := r.Regions[0]
	var burst []loadgen.Result
	if _, err := r.Load(ctx, east, load(east, o.steady, o.ragWarm, ragHomeShare)); err != nil {
		errs <- err
	} else if burst, err = r.Load(ctx, east, load(east, o.ragRate, o.ragBurst, 0)); err != nil {
		errs <- err
	}
	wg.Wait()
	close(errs)
	if err := errors.Join(collect(errs)...); err != nil {
		return ragResult{}, err
	}
	res := ragResult{ByRegion: map[string]int{}, ByHome: map[string]ragShare{}}
	var ttft []time.Duration
	var prompt, cached int
	for _, x := range burst {
		away := r.RemoteRegion(east, x)
		if away == "" || x.Class != "Critical" || !x.OK() {
			continue
		}
		res.SpilledRequests++
		res.ByRegion[away]++
		ttft = append(ttft, x.TTFT)
		prompt += x.PromptTokens
		cached += x.CachedTokens
		home := r.Regions[x.Prefix*len(r.Regions)/ragContexts].Name
		sh := res.ByHome[home]
		sh.Requests++
		if home == away {
			sh.ServedAtHome++
		}
		sh.prompt += x.PromptTokens
		sh.cached += x.CachedTokens
		sh.PrefixHitRate = ratio(sh.cached, sh.prompt)
		res.ByHome[home] = sh
	}
	res.PrefixHitRate = ratio(cached, prompt)
	res.TTFTp50, res.TTFTp99 = loadgen.Percentile(ttft, 0.5), loadgen.Percentile(ttft, 0.99)
	return res, nil
}

// ragCompare runs both rankings and compares them.
func (o options) ragCompare(ctx context.Context) (ragReport, error) {
	rep := ragReport{Scenario: fmt.Sprintf("%d contexts of %d bytes, a third at home in each region (%.0f %% of its requests), every region at %.0f requests/s streamed for %s, then us-east at %.0f requests/s on any context for %s; the spilled Critical requests of the burst",
		ragContexts, ragContextBytes, ragHomeShare*100, o.steady, o.ragWarm, o.ragRate, o.ragBurst)}
	var err error
	fmt.Println("== RAG workload, cache-aware ranking")
	if rep.Aware, err = o.rag(ctx, true); err != nil {
		return rep, fmt.Errorf("cache-aware: %w", err)
	}
	rep.Aware.print()
	fmt.Println("== RAG workload, cache-blind ranking (--prefix-sketch=false)")
	if rep.Blind, err = o.rag(ctx, false); err != nil {
		return rep, fmt.Errorf("cache-blind: %w", err)
	}
	rep.Blind.print()
	rep.HitAware, rep.HitBlind = rep.Aware.PrefixHitRate, rep.Blind.PrefixHitRate
	if rep.Blind.TTFTp50 > 0 {
		rep.TTFTRatio = rep.Aware.TTFTp50 / rep.Blind.TTFTp50
	}
	return rep, nil
}

func (r ragResult) print() {
	fmt.Printf("   %d spilled, prefix hit rate %.3f, TTFT p50 %.0f ms p99 %.0f ms, by region %v\n", r.SpilledRequests, r.PrefixHitRate, r.TTFTp50, r.TTFTp99, r.ByRegion)
	for _, home := range slices.Sorted(maps.Keys(r.ByHome)) {
		sh := r.ByHome[home]
		fmt.Printf("   contexts at home in %s: %d spilled, %d served there, prefix hit rate %.3f\n", home, sh.Requests, sh.ServedAtHome, sh.PrefixHitRate)
	}
}

// atHome counts the spilled requests whose context is at home in another region than the
// bursting one (us-east) and, of those, the ones served there.
func (r ragResult) atHome() (served, of int) {
	for home, sh := range r.ByHome {
		if home != regions.Names[0] {
			served, of = served+sh.ServedAtHome, of+sh.Requests
		}
	}
	return served, of
}
