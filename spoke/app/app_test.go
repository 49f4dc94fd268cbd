package app

import (
	"strings"
	"testing"
	"time"
)

func TestValidateNamesEveryProblem(t *testing.T) {
	o := NewOptions()
	err := o.Validate()
	for _, want := range []string{"--cluster-id", "--region", "--pools-file"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
	o.ClusterID, o.Region, o.PoolsFile = "a", "r", "pools.yaml"
	if err := o.Validate(); err != nil {
		t.Fatalf("valid options: %v", err)
	}
	o.Thresholds.Staleness = 10 * time.Millisecond
	o.GatewayAddress = "nope"
	err = o.Validate()
	for _, want := range []string{"--metrics-staleness", "--gateway-address"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
}
