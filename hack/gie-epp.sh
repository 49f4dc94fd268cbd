#!/usr/bin/env bash
# Builds the peer of the EPP benchmark: GIE v1.5.0's endpoint picker (cmd/epp), the last release
# with the full upstream EPP, from the Go module proxy in a scratch module, and caches it with the
# CRD manifests it needs. Prints the directory holding bin/epp and crds/.
set -euo pipefail

GIE_VERSION=${GIE_VERSION:-v1.5.0}
CACHE=${SPILLWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spillway}
OUT="$CACHE/gie-$GIE_VERSION"

if [[ -x "$OUT/bin/epp" && -d "$OUT/crds" ]]; then
  echo "$OUT"
  exit 0
fi
src="$OUT/src"
rm -rf "$src"
mkdir -p "$src" "$OUT/bin" "$OUT/crds"
cd "$src"
cat > go.mod <<GOMOD
module spillway.local/giebench

go 1.26

require sigs.k8s.io/gateway-api-inference-extension $GIE_VERSION
GOMOD
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "sigs.k8s.io/gateway-api-inference-extension/cmd/epp"
GO
echo "resolving GIE $GIE_VERSION..." >&2
go mod tidy >&2
echo "building GIE's epp..." >&2
go build -o "$OUT/bin/epp" sigs.k8s.io/gateway-api-inference-extension/cmd/epp
dir=$(go list -m -f '{{.Dir}}' sigs.k8s.io/gateway-api-inference-extension)
cp "$dir"/config/crd/bases/*.yaml "$OUT/crds/"
chmod -R u+w "$OUT/crds"
echo "$OUT"
