package replica

import (
	"testing"

	"github.com/spillway-io/spillway/e2e/promtest"
)

func TestMetricNames(t *testing.T) {
	reg := promtest.NewRegistry()
	newMetrics(reg)
	promtest.CheckGolden(t, reg, "hub", "testdata/metrics.golden")
}
