#!/usr/bin/env bash
# Prints the directory holding Debian's prometheus and promtool, installing the package when they
# are missing and this runs as root (CI does); otherwise prints nothing and says why on stderr, and
# the tests that need them skip. The dashboard and alert tests run them (docs/observability.md).
set -euo pipefail

if command -v prometheus > /dev/null && command -v promtool > /dev/null; then
  dirname "$(command -v promtool)"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "prometheus and promtool are missing and this is not root: apt-get install prometheus to run the dashboard and alert tests" >&2
  exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# The package's service is not started: a test starts its own Prometheus on loopback.
{ apt-get install -y --no-install-recommends prometheus || { apt-get update && apt-get install -y --no-install-recommends prometheus; }; } > /dev/null
dirname "$(command -v promtool)"
