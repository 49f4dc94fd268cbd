#!/usr/bin/env bash
# make bench-epp: Spillway's EPP against GIE v1.5.0's EPP, side by side on this machine.
# make bench-epp BENCH_ARGS=replicas: the routing-quality workload through 3 spoke replicas
# behind a round-robin gateway, with shared prefix affinity and without, against one replica
# (docs/benchmarks/epp-replicas.json and the active-active section of docs/benchmarks.md).
#
# GIE's EPP binds :9002, :9003 and :9090 on every interface, so everything runs inside a network
# namespace with only lo up: there every 127.x.y.z address is local (one per simulated Pod) and no
# packet can leave the machine. Results go to docs/benchmarks/epp.json and docs/benchmarks.md.
#
# SPILLWAY_BENCH_BIN_DIR: run the binaries there instead of building bin/ with make build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

mode=epp
if [[ "${1:-}" == replicas ]]; then
  mode=replicas
  shift
fi
bin=${SPILLWAY_BENCH_BIN_DIR:-}
if [[ -z "$bin" ]]; then
  make build >/dev/null
  bin=$root/bin
fi
if [[ $mode == epp ]]; then
  k8s=$(bash hack/k8s-bins.sh)
  gie=$(bash hack/gie-epp.sh)
fi

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
if [[ $mode == replicas ]]; then
  ip netns exec "$ns" "$bin/eppbench" replicas --bin-dir "$bin" --work-dir "$work" \
    --json "$root/docs/benchmarks/epp-replicas.json" --update-doc "$root/docs/benchmarks.md" "$@"
  echo "results: docs/benchmarks/epp-replicas.json, docs/benchmarks.md (logs in $work)"
  exit 0
fi
ip netns exec "$ns" "$bin/eppbench" --bin-dir "$bin" --k8s-bin-dir "$k8s" --gie-dir "$gie" \
  --work-dir "$work" --json "$root/docs/benchmarks/epp.json" --update-doc "$root/docs/benchmarks.md" "$@"
echo "results: docs/benchmarks/epp.json, docs/benchmarks.md (logs in $work)"
