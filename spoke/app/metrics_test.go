package app

import (
	"testing"

	"github.com/spillway-io/spillway/e2e/promtest"
	"github.com/spillway-io/spillway/spoke/hubclient"
	"github.com/spillway-io/spillway/spoke/report"
)

// TestMetricNames covers every metric the spoke binary registers of its own (the EPP's are
// pkg/epp's).
func TestMetricNames(t *testing.T) {
	reg := promtest.NewRegistry()
	report.New(report.Options{Registerer: reg})
	hubclient.New(hubclient.Options{Registerer: reg})
	promtest.CheckGolden(t, reg, "spoke", "testdata/metrics.golden")
}
