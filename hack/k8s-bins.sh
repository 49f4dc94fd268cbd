#!/usr/bin/env bash
# Builds a real kube-apiserver, etcd and etcdctl from the Go module proxy and caches them.
#
# `go install k8s.io/kubernetes/cmd/kube-apiserver@v1.37.2` is refused because k8s.io/kubernetes
# replaces its staging modules with local paths; a scratch module that requires it and maps every
# staging module to its published v0.x version builds it. Cold: 8 to 10 minutes on 2 cores.
# Prints the directory holding the binaries.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.37.2}
ETCD_VERSION=${ETCD_VERSION:-v3.7.3}
CACHE=${SPILLWAY_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spillway}
OUT="$CACHE/k8s-$K8S_VERSION-etcd-$ETCD_VERSION"
BIN="$OUT/bin"

if [[ -x "$BIN/kube-apiserver" && -x "$BIN/etcd" && -x "$BIN/etcdctl" ]]; then
  echo "$BIN"
  exit 0
fi

staging_version="v0.${K8S_VERSION#v1.}"
src="$OUT/src"
rm -rf "$src"
mkdir -p "$src" "$BIN"
cd "$src"

# Read the staging modules from k8s.io/kubernetes's own go.mod.
gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[[ -f "$gomod" ]] || { echo "cannot download k8s.io/kubernetes@$K8S_VERSION" >&2; exit 1; }
mapfile -t staging < <(grep -E '^\s*k8s.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk '{print $1}')
[[ ${#staging[@]} -gt 10 ]] || { echo "no staging modules found in $gomod" >&2; exit 1; }

{
  echo "module spillway.local/k8sbins"
  echo
  echo "go 1.26"
  echo
  echo "require ("
  echo "	k8s.io/kubernetes $K8S_VERSION"
  echo "	go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  echo "	go.etcd.io/etcd/etcdctl/v3 $ETCD_VERSION"
  echo ")"
  echo
  echo "replace ("
  for m in "${staging[@]}"; do echo "	$m => $m $staging_version"; done
  echo ")"
} > go.mod

mkdir -p etcd
cat > etcd/main.go <<'GO'
// Command etcd is the etcd server, built from go.etcd.io/etcd/server/v3.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
GO
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "go.etcd.io/etcd/etcdctl/v3"
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
)
GO

echo "resolving modules (k8s.io/kubernetes $K8S_VERSION, etcd $ETCD_VERSION)..." >&2
go mod tidy >&2
echo "building kube-apiserver, etcd and etcdctl into $BIN (8 to 10 minutes cold)..." >&2
go build -o "$BIN/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go build -o "$BIN/etcd" ./etcd
go build -o "$BIN/etcdctl" go.etcd.io/etcd/etcdctl/v3
"$BIN/kube-apiserver" --version >&2
echo "$BIN"
