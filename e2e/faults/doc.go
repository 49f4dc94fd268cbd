// Package faults is the fault-injection suite (`make e2e-faults`, root): real hub, etcd, spoke,
// gateway and model-server processes in network namespaces the suite creates itself, under
// steady load with a Critical/Standard/BestEffort mix, while it partitions links, drops packets,
// slows gossip to WAN round trips, skews clocks, and kills etcd members, hub replicas and whole
// regions with SIGKILL. Each scenario asserts what must hold (no request fails, no import is
// deleted, no export lost, no live member declared dead, detection and failover times) and
// records its figures in faults.json.
//
// The network: a blackhole route for 10.79.0.0/16 in the test's own namespace first, so that
// no packet for the test subnet can leave the machine; then a bridge namespace and one
// namespace per node, each with a veth into the bridge: h1..h3 (10.79.0.1..3: an etcd member
// each, and a hub replica), r1..r3 (10.79.<n>.1: a region's spoke, gateway, model servers and a
// toxiproxy). Faults are nftables rules in a node's table "faults" (drop rules for partitions,
// `numgen random` drops for loss, a `limit rate` for a slow link), toxiproxy latency for TCP and
// a delaying relay of the suite for gossip's UDP, SPILLWAY_CLOCK_OFFSET in a process's
// environment (pkg/clock), and SIGKILL to a process's PID. The test reaches into the namespaces
// only through sockets it opens there (setns on a locked thread), never by routing.
//
// Without root and SPILLWAY_FAULTS=1 (hack/faults.sh sets it) the scenarios skip.
package faults
