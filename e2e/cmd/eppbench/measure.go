package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/spillway-io/spillway/e2e/loadgen"
)

// measure starts fresh simulators and one EPP, and takes its figures.
func (o options) measure(ctx context.Context, side string, ips []string) (measurement, error) {
	scrape := scrapeInterval(len(ips))
	e, err := o.startEPP(ctx, side, fmt.Sprintf("%s-%d", side, len(ips)), ips, scrape)
	if err != nil {
		return measurement{}, err
	}
	defer e.stop()
	m, err := o.measureLoad(ctx, e)
	if err != nil {
		return m, err
	}
	m.ScrapeEach, m.ReadyEndpoints = scrape.String(), e.ready
	fmt.Fprintf(os.Stderr, "   %-8s p50 %.3f ms p99 %.3f ms (%.1f thread blocks per request), 16-way p50 %.3f p99 %.3f, cpu/1k %.3f s, idle %.3f cores, rss %.0f MiB, errors %d\n",
		side, m.P50ms, m.P99ms, m.CtxPerRequest, m.ConcP50ms, m.ConcP99ms, m.CPUPer1k, m.IdleCores, m.RSSMiB, m.Errors)
	return m, nil
}

// measureQuality starts fresh simulators and one EPP, and runs the routing-quality workload
// through it.
func (o options) measureQuality(ctx context.Context, side string, ips []string) (qualityMeasurement, error) {
	e, err := o.startEPP(ctx, side, fmt.Sprintf("%s-%d-quality", side, len(ips)), ips, scrapeInterval(len(ips)))
	if err != nil {
		return qualityMeasurement{}, err
	}
	defer e.stop()
	return o.quality(ctx, e.client, ips, filepath.Join(o.workDir, fmt.Sprintf("%s-%d-quality", side, len(ips)), "results.json"))
}

// measureLoad warms the EPP up, then takes its idle CPU, the sequential and the concurrent
// latency runs with the CPU and the thread blocks they cost, and its peak RSS.
func (o options) measureLoad(ctx context.Context, e *runningEPP) (measurement, error) {
	var m measurement
	pid := e.proc.Pid()
	// Warm up: connections, caches, the runtime.
	if _, _, err := latencies(ctx, e.client, 200, 1); err != nil {
		return m, err
	}
	cpu0, err := cpuSeconds(pid)
	if err != nil {
		return m, err
	}
	select { // no requests for o.idle
	case <-ctx.Done():
		return m, ctx.Err()
	case <-time.After(o.idle):
	}
	cpu1, err := cpuSeconds(pid)
	if err != nil {
		return m, err
	}
	m.IdleCores = round3((cpu1 - cpu0) / o.idle.Seconds())

	sw0, err := voluntarySwitches(pid)
	if err != nil {
		return m, err
	}
	seq, errs1, err := latencies(ctx, e.client, o.requests, 1)
	if err != nil {
		return m, err
	}
	if sw1, err := voluntarySwitches(pid); err == nil && len(seq) > 0 {
		m.CtxPerRequest = round3(float64(sw1-sw0) / float64(len(seq)))
	}
	conc, errs2, err := latencies(ctx, e.client, o.requests, o.concurrency)
	if err != nil {
		return m, err
	}
	cpu2, err := cpuSeconds(pid)
	if err != nil {
		return m, err
	}
	m.Errors, m.Requests = errs1+errs2, len(seq)+len(conc)
	if m.Requests > 0 {
		m.CPUPer1k = round3((cpu2 - cpu1) / float64(m.Requests) * 1000)
	}
	m.P50ms, m.P99ms = loadgen.Percentile(seq, 0.5), loadgen.Percentile(seq, 0.99)
	m.ConcP50ms, m.ConcP99ms = loadgen.Percentile(conc, 0.5), loadgen.Percentile(conc, 0.99)
	m.RSSMiB, _ = peakRSS(pid)
	return m, nil
}
