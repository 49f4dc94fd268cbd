#!/usr/bin/env bash
# make bench-epp: Spillway's EPP against GIE v1.5.0's EPP, side by side on this machine.
#
# GIE's EPP binds :9002, :9003 and :9090 on every interface, so everything runs inside a network
# namespace with only lo up: there every 127.x.y.z address is local (one per simulated Pod) and no
# packet can leave the machine. Results go to docs/benchmarks/epp.json and docs/benchmarks.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

k8s=$(bash hack/k8s-bins.sh)
gie=$(bash hack/gie-epp.sh)
make build >/dev/null

ns="spillway-bench-$$"
# The sandbox has no test subnet of its own; blackhole the benchmark range anyway so that nothing
# addressed to it could leave the machine, as every network test here does.
ip route replace blackhole 198.18.0.0/15
cleanup() {
  ip netns del "$ns" 2>/dev/null || true
  ip route del blackhole 198.18.0.0/15 2>/dev/null || true
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link set lo up

mkdir -p docs/benchmarks
work=$(mktemp -d /tmp/spillway-eppbench-XXXX)
ip netns exec "$ns" "$root/bin/eppbench" --bin-dir "$root/bin" --k8s-bin-dir "$k8s" --gie-dir "$gie" \
  --work-dir "$work" --json "$root/docs/benchmarks/epp.json" --update-doc "$root/docs/benchmarks.md" "$@"
echo "results: docs/benchmarks/epp.json, docs/benchmarks.md (logs in $work)"
