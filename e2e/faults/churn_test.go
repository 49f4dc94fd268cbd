package faults

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// usage is one process's goroutines and resident memory at one moment.
type usage struct {
	Goroutines float64 `json:"goroutines"`
	RSSMiB     float64 `json:"rss_mib"`
}

// usageOf reads a hub replica's or a spoke's go_goroutines and process_resident_memory_bytes.
func (f *Fleet) usageOf(ctx context.Context, name string) (usage, error) {
	url, node := "", ""
	for _, h := range f.Hubs {
		if h.Name == name {
			url, node = "https://"+hostPort(h.IP, hubHTTPPort)+"/metrics", h.Node
		}
	}
	for _, r := range f.Regions {
		if "spoke-"+r.Cluster == name {
			url, node = "https://"+spokeHTTP+"/metrics", r.Node
		}
	}
	if url == "" {
		return usage{}, fmt.Errorf("no process %s", name)
	}
	body, err := f.Get(ctx, node, url)
	if err != nil {
		return usage{}, err
	}
	g, err := metricValue(string(body), "go_goroutines")
	if err != nil {
		return usage{}, err
	}
	rss, err := metricValue(string(body), "process_resident_memory_bytes")
	if err != nil {
		return usage{}, err
	}
	return usage{Goroutines: g, RSSMiB: round(rss / (1 << 20))}, nil
}

// TestChurn: for 2 minutes (30 with -faults.full) the fleet churns: each cycle kills us-west's
// spoke with SIGKILL and starts it again, scales eu-west's pool between one and two endpoints,
// and fails the hub over (with replicas: kills the leader, or a follower when the leader is the
// replica kept for measuring, and starts it again; with one hub: kills and restarts it), then
// waits until the fleet is whole again. The processes that live through the whole run (us-east's
// and eu-west's spokes, and hub-3 with replicas) keep a flat goroutine count and memory: at the
// end no more than 20 % (at least 20) goroutines and 30 % (at least 16 MiB) memory above their
// level after the first cycle. Load in us-east and eu-west never fails.
func TestChurn(t *testing.T) {
	cfg := Config{}
	ha := hubHA() == ""
	if ha {
		cfg = Config{Hubs: 3, HubArgs: haArgs}
	}
	f, s, ctx := scenario(t, "churn: spokes restarting, pools scaled, hub failovers", cfg)
	s.Figures["hub_replicas"] = len(f.Hubs)
	if !ha {
		s.Notes = append(s.Notes, "one hub replica (the binaries have no hub election): each failover is a kill -9 and restart of the hub")
	}
	d := short(2*time.Minute, 30*time.Minute)
	east, west, eu := f.Regions[0], f.Regions[1], f.Regions[2]
	watched := []string{"spoke-" + east.Cluster, "spoke-" + eu.Cluster}
	if ha {
		watched = append(watched, "hub-3")
	}
	load := f.StartLoad(ctx, []Region{east, eu}, 4, d+5*time.Minute)
	series := map[string][]usage{}
	sample := func() {
		for _, name := range watched {
			u, err := f.usageOf(ctx, name)
			if err != nil {
				t.Errorf("%s: %v", name, err)
				continue
			}
			series[name] = append(series[name], u)
		}
	}
	start := time.Now()
	cycles := 0
	for time.Since(start) < d && ctx.Err() == nil && !t.Failed() {
		cycles++
		spoke := f.Proc("spoke-" + west.Cluster)
		spoke.Kill()
		if err := spoke.Restart(); err != nil {
			t.Fatal(err)
		}
		if err := f.ScalePool(eu, 1+cycles%2); err != nil {
			t.Fatal(err)
		}
		victim := f.Hubs[0]
		if ha {
			l, err := f.leader(ctx, 15*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if l.Name != "hub-3" {
				victim = l
			}
		}
		f.Proc(victim.Name).Kill()
		sleepCtx(ctx, 2*time.Second)
		if err := f.Proc(victim.Name).Restart(); err != nil {
			t.Fatal(err)
		}
		if err := f.WaitReady(ctx); err != nil {
			t.Fatalf("cycle %d: %v", cycles, err)
		}
		sample()
	}
	s.Figures["cycles"], s.Figures["duration_s"] = cycles, round(time.Since(start).Seconds())
	s.Figures["usage"] = series
	rs, _ := load.Stop()
	for _, name := range watched {
		ss := series[name]
		if len(ss) < 2 {
			t.Errorf("%s: %d samples", name, len(ss))
			continue
		}
		first, last := ss[0], ss[len(ss)-1]
		if last.Goroutines > first.Goroutines+max(20, 0.2*first.Goroutines) {
			t.Errorf("%s: goroutines from %v to %v over %d cycles", name, first.Goroutines, last.Goroutines, cycles)
		}
		if last.RSSMiB > first.RSSMiB+max(16, 0.3*first.RSSMiB) {
			t.Errorf("%s: resident memory from %.1f to %.1f MiB over %d cycles", name, first.RSSMiB, last.RSSMiB, cycles)
		}
	}
	sum := Summarize(rs, nil)
	s.Figures["requests"], s.Figures["failed"], s.Figures["besteffort_shed"] = sum.Requests, sum.Failed, sum.Shed
	if sum.Total() > 0 {
		t.Errorf("failed requests in the regions that did not restart: %v, e.g. %v", sum.Failed, sum.Examples)
	}
}
