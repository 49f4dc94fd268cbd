package epp

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/spillway-io/spillway/e2e/promtest"
)

func TestMetricNames(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := newMetrics(reg)
	m.result("critical", "m", resultRouted)
	m.ttft.WithLabelValues("critical", "m")
	m.duration.WithLabelValues("critical", "m")
	m.inputTokens.WithLabelValues("critical", "m")
	m.outputTokens.WithLabelValues("critical", "m")
	promtest.CheckGolden(t, reg, "epp", "testdata/metrics.golden")
}
