package server

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-io/spillway/e2e/promtest"
)

func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	// Touch every labelled series once so that its labels are exposed.
	m.rejected.WithLabelValues("OK") // the codes appear as streams end
	promtest.CheckGolden(t, reg, "hub", "testdata/metrics.golden")
}
