package faults

import "testing"

// eppReplicaGap says why the EPP-replica scenario does not run.
const eppReplicaGap = "not run: the suite's gateway (e2e/cmd/gateway) dials one EPP address and has no failover between " +
	"EPP replicas, so it cannot spread ext_proc streams over three replicas and move them off a dead one as a real " +
	"gateway does; the scenario needs a gateway that takes several EPP addresses (round-robin over the healthy ones)"

// TestEPPReplicaKilled is the table's "kill -9 of one of three EPP replicas under load": left out
// until the suite's gateway can spread ext_proc streams over several EPP replicas; faults.json
// says so.
func TestEPPReplicaKilled(t *testing.T) {
	if why := enabled(); why != "" {
		t.Skip(why)
	}
	results.skip("kill -9 of one of three EPP replicas under load", eppReplicaGap)
	t.Skip(eppReplicaGap)
}
