#!/usr/bin/env bash
# Copies the upstream CRD manifests that Spillway installs from the Go modules pinned in go.mod
# into deploy/crds/, so the manifests always match the Go types the binaries are built with.
# `make generate` runs it; `make verify` fails when the copies differ from the modules.
#
# Also copies GIE v1.5.0's InferenceObjective CRD (inference.networking.x-k8s.io/v1alpha2) into
# e2e/apiserver/testdata/: the spoke reads objectives of that group, GIE v1.6.0 no longer ships the
# kind, and tests install it on their API servers.
set -euo pipefail
cd "$(dirname "$0")/.."

GIE_OBJECTIVE_VERSION=v1.5.0

moddir() { go list -m -f '{{.Dir}}' "$1"; }

gie=$(moddir sigs.k8s.io/gateway-api-inference-extension)
mcs=$(moddir sigs.k8s.io/mcs-api)
[[ -d "$gie" && -d "$mcs" ]] || { go mod download; gie=$(moddir sigs.k8s.io/gateway-api-inference-extension); mcs=$(moddir sigs.k8s.io/mcs-api); }

copy() { # copy SRC DST: byte-for-byte, writable
  install -m 0644 "$1" "$2"
}

mkdir -p deploy/crds/upstream e2e/apiserver/testdata
copy "$gie/config/crd/bases/inference.networking.k8s.io_inferencepools.yaml" deploy/crds/upstream/
copy "$gie/config/crd/bases/inference.networking.x-k8s.io_inferencepoolimports.yaml" deploy/crds/upstream/
copy "$mcs/config/crd/multicluster.x-k8s.io_serviceexports.yaml" deploy/crds/upstream/
copy "$mcs/config/crd/multicluster.x-k8s.io_serviceimports.yaml" deploy/crds/upstream/

objdir=$(go mod download -json "sigs.k8s.io/gateway-api-inference-extension@$GIE_OBJECTIVE_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[[ -d "$objdir" ]] || { echo "cannot download GIE $GIE_OBJECTIVE_VERSION" >&2; exit 1; }
copy "$objdir/config/crd/bases/inference.networking.x-k8s.io_inferenceobjectives.yaml" e2e/apiserver/testdata/

# The Prometheus Operator's ServiceMonitor CRD, for deploy/deploy_test.go: deploy/hub and
# deploy/spoke ship a ServiceMonitor, and the test applies them to a real API server, which needs
# the kind. Spillway does not install it: clusters get it with the Prometheus Operator.
PROMETHEUS_OPERATOR_VERSION=v0.85.0
promdir=$(go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[[ -d "$promdir" ]] || { echo "cannot download prometheus-operator $PROMETHEUS_OPERATOR_VERSION" >&2; exit 1; }
copy "$promdir/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml" e2e/apiserver/testdata/

# cert-manager's Certificate and Issuer CRDs, for deploy/deploy_test.go: deploy/examples ship
# Certificates and Issuers, and the test validates them on a real API server. Spillway does not
# install cert-manager.
CERT_MANAGER_VERSION=v1.21.2
cmdir=$(go mod download -json "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
[[ -d "$cmdir" ]] || { echo "cannot download cert-manager $CERT_MANAGER_VERSION" >&2; exit 1; }
mkdir -p deploy/testdata/cert-manager
copy "$cmdir/deploy/crds/cert-manager.io_certificates.yaml" deploy/testdata/cert-manager/
copy "$cmdir/deploy/crds/cert-manager.io_issuers.yaml" deploy/testdata/cert-manager/

# The CRD chart and the spoke chart carry copies of deploy/crds and of the spoke's epp.yaml (Helm
# reads no file outside a chart); deploy/helm_test.go checks them too.
install -m 0644 deploy/crds/upstream/*.yaml deploy/crds/clusterproperty/*.yaml deploy/crds/spillway/*.yaml deploy/charts/spillway-crds/files/
install -m 0644 deploy/spoke/epp.yaml deploy/charts/spillway-spoke/files/epp.yaml
