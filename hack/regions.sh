#!/usr/bin/env bash
# Builds the network namespaces of the three-region run, runs a command with
# SPILLWAY_NETNS_PREFIX naming them, and removes them: `make e2e` runs e2e/regions' tests in
# them, `make bench-spill` bin/spillbench. Needs root.
#
# Topology: a management namespace (hub with embedded etcd) and one namespace per region
# (spoke with EPP, gateway, simulators, a toxiproxy for the links to the other regions), each
# with a veth into a bridge namespace; addresses 10.77.0.1 (management) and 10.77.<n>.1
# (regions) on 10.77.0.0/16. Nothing else is connected: the root namespace has no route to
# them, and a blackhole route for 10.77.0.0/16 makes sure that no packet for the test subnet
# could leave the machine. The tests reach the namespaces only through `ip netns exec`.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

[[ $(id -u) == 0 ]] || { echo "the three-region run needs root (network namespaces)" >&2; exit 1; }
command -v curl >/dev/null || apt-get install -y curl >/dev/null  # the tests drive toxiproxy's API with it
make build >/dev/null
make "$root/bin/toxiproxy-server" >/dev/null

p="spw$$"
subnet=10.77.0.0/16
ip route replace blackhole "$subnet"
names=(mgmt r1 r2 r3)
cleanup() {
  for n in "${names[@]}" core; do ip netns del "$p-$n" 2>/dev/null || true; done
  ip route del blackhole "$subnet" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$p-core"
ip -n "$p-core" link set lo up
ip -n "$p-core" link add br0 type bridge
ip -n "$p-core" link set br0 up
for i in "${!names[@]}"; do
  n=${names[$i]}
  ip netns add "$p-$n"
  ip -n "$p-$n" link set lo up
  a="sw$$a$i" b="sw$$b$i" # interface names are at most 15 bytes
  ip link add "$a" type veth peer name "$b"
  ip link set "$a" netns "$p-$n"
  ip link set "$b" netns "$p-core"
  ip -n "$p-$n" link set "$a" name eth0
  ip -n "$p-$n" addr add "10.77.$i.1/16" dev eth0
  ip -n "$p-$n" link set eth0 up
  ip -n "$p-core" link set "$b" master br0
  ip -n "$p-core" link set "$b" up
done

SPILLWAY_NETNS_PREFIX=$p SPILLWAY_BIN_DIR=$root/bin "$@"
