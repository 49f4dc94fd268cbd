package app

import (
	"strings"
	"testing"
	"time"
)

func TestValidateNamesEveryProblem(t *testing.T) {
	o := NewOptions()
	if err := o.Complete(); err != nil {
		t.Fatal(err)
	}
	if err := o.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	o.GRPCAddress = "8470"
	o.LeaseTTL = time.Second
	o.CapacityHeartbeat = time.Millisecond
	o.Log.Level = "loud"
	o.DataDir = ""
	err := o.Validate()
	for _, want := range []string{"--grpc-address", "--lease-ttl", "--capacity-heartbeat", "--log-level", "--data-dir"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
}
