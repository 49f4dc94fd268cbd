package app

import (
	"strings"
	"testing"
	"time"
)

func TestValidateNamesEveryProblem(t *testing.T) {
	// The Kubernetes source (no --pools-file) needs the EPP's pool named; the cluster ID may come
	// from the cluster's ClusterProperty.
	o := NewOptions()
	o.GatewayService = "no-slash"
	o.RemoteGateways = map[string]string{"us-west-1": "no-port"}
	o.EPPStreamWorkers = -1
	err := o.Validate()
	for _, want := range []string{"--region", "--epp-pool", "--gateway-service", "--remote-gateway us-west-1=no-port", "--epp-stream-workers -1"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Validate() = %v, want it to name %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "--cluster-id") {
		t.Errorf("Validate() = %v: the Kubernetes source reads the cluster ID from the cluster", err)
	}
	o.GatewayService, o.Region, o.EPPPool, o.EPPStreamWorkers = "", "r", "inference/chat", 0
	o.RemoteGateways = map[string]string{"us-west-1": "10.0.0.1:8080"}
	if err := o.Validate(); err != nil {
		t.Fatalf("valid Kubernetes options: %v", err)
	}

	// The static source needs the cluster ID.
	o = NewOptions()
	o.Region, o.PoolsFile = "r", "pools.yaml"
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--cluster-id") {
		t.Errorf("Validate() = %v, want it to name --cluster-id", err)
	}
	o.ClusterID = "a"
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
