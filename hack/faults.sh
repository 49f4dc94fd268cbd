#!/usr/bin/env bash
# Runs the fault-injection suite (e2e/faults) as `make e2e-faults` does: builds the binaries and
# toxiproxy, installs nftables when missing, and runs the scenarios with the short durations, or
# the full ones with -full. The tests create their own network namespaces (10.79.0.0/16, behind
# a blackhole route they add first) and remove them; they need root. faults.json is written to
# docs/benchmarks/faults.json, or to $SPILLWAY_FAULTS_OUT; SPILLWAY_FAULTS_KEEP=DIR keeps each
# scenario's logs and data there.
#
#   hack/faults.sh [-full] [go test flags, e.g. -run 'TestLoss']
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

[[ $(id -u) == 0 ]] || { echo "the fault suite needs root (network namespaces, nftables)" >&2; exit 1; }
command -v nft >/dev/null || { apt-get update >/dev/null && apt-get install -y nftables >/dev/null; }
make "$root/bin/toxiproxy-server" >/dev/null
k8s=$(bash hack/k8s-bins.sh)
# The binaries the run starts, built into a directory of its own so that nothing rebuilds them
# under it; removed at the end.
bin=$(mktemp -d)
trap 'rm -rf "$bin"' EXIT
for c in hub/cmd/hub hub/cmd/hubctl spoke/cmd/spoke e2e/cmd/gateway e2e/cmd/modelsim e2e/cmd/loadgen; do
  go build -o "$bin/$(basename $c)" "./$c"
done
cp "$root/bin/toxiproxy-server" "$bin/"

full=() timeout=30m cmd="make e2e-faults"
args=()
for a in "$@"; do
  if [[ $a == -full ]]; then
    full=(-args -faults.full) timeout=120m cmd="make e2e-faults E2E_FAULTS_ARGS=-full"
  else
    args+=("$a")
  fi
done
[[ ${#args[@]} == 0 ]] || cmd="$cmd (go test ${args[*]})"

export SPILLWAY_FAULTS=1 SPILLWAY_BIN_DIR=$bin SPILLWAY_K8S_BIN_DIR=$k8s
export SPILLWAY_FAULTS_OUT=${SPILLWAY_FAULTS_OUT:-$root/docs/benchmarks/faults.json} SPILLWAY_FAULTS_COMMAND=$cmd
start=$(date +%s)
go test -count=1 -timeout "$timeout" -v ./e2e/faults/ "${args[@]}" "${full[@]}"
echo "fault suite: $(( $(date +%s) - start ))s"
