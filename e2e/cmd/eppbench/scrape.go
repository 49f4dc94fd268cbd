package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

var scrapeClient = &http.Client{Timeout: 10 * time.Second}

// metricValue scrapes the Prometheus text page at url and returns the sum of the samples of
// name whose labels include want, as PromQL's sum(name{want...}) would.
func metricValue(ctx context.Context, url, name string, want map[string]string) (float64, error) {
	page, err := scrape(ctx, url)
	if err != nil {
		return 0, err
	}
	v, err := sampleSum(page, name, want)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", url, err)
	}
	return v, nil
}

// scrape reads the metric families of the Prometheus text page at url.
func scrape(ctx context.Context, url string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", string(expfmt.NewFormat(expfmt.TypeTextPlain)))
	resp, err := scrapeClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	page, err := parsePage(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", url, err)
	}
	return page, nil
}

// parsePage parses a page of the Prometheus text format.
func parsePage(r io.Reader) (map[string]*dto.MetricFamily, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(r)
}

// sampleSum is the sum of the samples of the counter, gauge or untyped family name whose labels
// include every label of want, in whatever order the page prints them. No such sample is an
// error.
func sampleSum(page map[string]*dto.MetricFamily, name string, want map[string]string) (float64, error) {
	f, ok := page[name]
	if !ok {
		return 0, fmt.Errorf("no metric %s", name)
	}
	var sum float64
	found := false
	for _, m := range f.GetMetric() {
		if !hasLabels(m, want) {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_COUNTER:
			sum += m.GetCounter().GetValue()
		case dto.MetricType_GAUGE:
			sum += m.GetGauge().GetValue()
		case dto.MetricType_UNTYPED:
			sum += m.GetUntyped().GetValue()
		default:
			return 0, fmt.Errorf("%s is a %s, not a counter, gauge or untyped metric", name, f.GetType())
		}
		found = true
	}
	if !found {
		return 0, fmt.Errorf("no sample of %s with labels %v", name, want)
	}
	return sum, nil
}

// hasLabels reports whether m carries every label of want with its value.
func hasLabels(m *dto.Metric, want map[string]string) bool {
	have := make(map[string]string, len(m.GetLabel()))
	for _, l := range m.GetLabel() {
		have[l.GetName()] = l.GetValue()
	}
	for k, v := range want {
		if got, ok := have[k]; !ok || got != v {
			return false
		}
	}
	return true
}
