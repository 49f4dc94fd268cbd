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

func TestLeaderElectionOptions(t *testing.T) {
	// On by default with the Kubernetes source, in $POD_NAMESPACE.
	t.Setenv("POD_NAMESPACE", "inference-gw")
	o := NewOptions()
	o.Region, o.EPPPool = "r", "inference/chat"
	if err := o.Complete(); err != nil {
		t.Fatal(err)
	}
	if le := o.LeaderElection; !le.Enabled || le.Namespace != "inference-gw" || le.LeaseDuration != 15*time.Second || le.RenewDeadline != 10*time.Second || le.RetryPeriod != 2*time.Second {
		t.Errorf("defaults with the Kubernetes source: %+v", le)
	}
	if err := o.Validate(); err != nil {
		t.Errorf("Validate() = %v", err)
	}
	// Without $POD_NAMESPACE, spillway-system; a flag wins over both.
	t.Setenv("POD_NAMESPACE", "")
	o = NewOptions()
	if err := o.Complete(); err != nil || o.LeaderElection.Namespace != "spillway-system" {
		t.Errorf("namespace without $POD_NAMESPACE: %q, %v", o.LeaderElection.Namespace, err)
	}
	o = NewOptions()
	o.LeaderElection.Namespace = "mine"
	if err := o.Complete(); err != nil || o.LeaderElection.Namespace != "mine" {
		t.Errorf("namespace by flag: %q, %v", o.LeaderElection.Namespace, err)
	}
	// The static source runs one replica: no election.
	o = staticOptions(t)
	if err := o.Complete(); err != nil || o.LeaderElection.Enabled {
		t.Errorf("--pools-file: election %v, %v", o.LeaderElection.Enabled, err)
	}
	// Timings client-go would refuse are named by their flags.
	for _, tc := range []struct {
		lease, renew, retry time.Duration
		want                string
	}{
		{10 * time.Second, 10 * time.Second, 2 * time.Second, "--leader-elect-lease-duration 10s must be longer than --leader-elect-renew-deadline 10s"},
		{15 * time.Second, 2 * time.Second, 2 * time.Second, "--leader-elect-renew-deadline 2s must be longer than 1.2 × --leader-elect-retry-period 2s"},
		{0, 10 * time.Second, 2 * time.Second, "must be positive"},
	} {
		o = NewOptions()
		o.Region, o.EPPPool = "r", "inference/chat"
		o.LeaderElection.LeaseDuration, o.LeaderElection.RenewDeadline, o.LeaderElection.RetryPeriod = tc.lease, tc.renew, tc.retry
		o.LeaderElection.Namespace = "Not_A_Namespace"
		if err := o.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "--leader-elect-namespace") {
			t.Errorf("Validate() = %v, want it to say %q and name --leader-elect-namespace", err, tc.want)
		}
	}
	// --hub-address takes a list of replicas.
	o = NewOptions()
	o.Region, o.EPPPool, o.HubAddress = "r", "inference/chat", "hub-0.hub:8470,hub-1.hub:8470"
	if err := o.Validate(); err != nil {
		t.Errorf("a list of hub addresses: %v", err)
	}
	o.HubAddress = "hub-0.hub:8470,,hub-1.hub"
	if err := o.Validate(); err == nil || !strings.Contains(err.Error(), "--hub-address") {
		t.Errorf("a bad list of hub addresses: %v", err)
	}
	if got := joinAddress("hub-0.hub:8470, hub-1.hub:8470"); got != "hub-0.hub:8470" {
		t.Errorf("joinAddress = %q, want the first of the list", got)
	}
}
