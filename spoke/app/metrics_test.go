package app

import (
	"testing"

	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/spoke/hubclient"
)

// TestMetricNames covers every metric the spoke binary registers of its own.
func TestMetricNames(t *testing.T) {
	reg := promtest.NewRegistry()
	newMetrics(reg)
	hubclient.New(hubclient.Options{Registerer: reg})
	promtest.CheckGolden(t, reg, "spoke", "testdata/metrics.golden")
}
