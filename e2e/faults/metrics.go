package faults

import (
	"context"
	"fmt"
	"strconv"
	"strings"
)

// Metric reads the sum of a metric's samples (every label set) from a /metrics page read in
// node's namespace.
func (f *Fleet) Metric(ctx context.Context, node, url, name string) (float64, error) {
	body, err := f.Get(ctx, node, url)
	if err != nil {
		return 0, err
	}
	return metricValue(string(body), name)
}

// metricValue adds up the samples of name in a Prometheus text page.
func metricValue(page, name string) (float64, error) {
	found := false
	var sum float64
	for _, l := range strings.Split(page, "\n") {
		rest, ok := strings.CutPrefix(l, name)
		if !ok || rest == "" || (rest[0] != ' ' && rest[0] != '{') {
			continue
		}
		fields := strings.Fields(l[strings.LastIndexByte(l, '}')+1:])
		if rest[0] == ' ' {
			fields = strings.Fields(rest)
		}
		if len(fields) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(fields[0], 64)
		if err != nil {
			return 0, fmt.Errorf("%s: %q: %w", name, l, err)
		}
		sum += v
		found = true
	}
	if !found {
		return 0, fmt.Errorf("no %s in the page", name)
	}
	return sum, nil
}

// HubMetric reads a metric of hub replica h.
func (f *Fleet) HubMetric(ctx context.Context, h Hub, name string) (float64, error) {
	return f.Metric(ctx, h.Node, "https://"+hostPort(h.IP, hubHTTPPort)+"/metrics", name)
}

// SpokeMetric reads a metric of region r's spoke.
func (f *Fleet) SpokeMetric(ctx context.Context, r Region, name string) (float64, error) {
	return f.Metric(ctx, r.Node, "https://"+spokeHTTP+"/metrics", name)
}
