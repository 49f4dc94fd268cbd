# Spillway build. `make help` lists the targets.

SHELL := /usr/bin/env bash
GO ?= go
BIN := $(CURDIR)/bin
export GOBIN := $(BIN)

# Pinned tool versions; `make tools` installs them into bin/.
BUF_VERSION := v1.75.0
PROTOC_GEN_GO_VERSION := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.6.2
TOXIPROXY_VERSION := v2.5.0

TEST_FLAGS ?= -race -count=1 -timeout 30m

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

# The commit the binaries say they were built from (`version`, spillway_build_info), and whether
# the checkout had changes; VERSION=v0.4.0 for a release.
REVISION := $(shell git rev-parse HEAD 2>/dev/null)
MODIFIED := $(shell test -n "$$(git status --porcelain 2>/dev/null)" && echo true)
BUILDINFO := github.com/spillway-io/spillway/pkg/buildinfo
LDFLAGS := -X $(BUILDINFO).revision=$(REVISION) -X $(BUILDINFO).modified=$(MODIFIED) $(if $(VERSION),-X $(BUILDINFO).version=$(VERSION),)

.PHONY: build
build: ## Build every binary into bin/ (VERSION=v0.4.0 names a release).
	@mkdir -p $(BIN)
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/hub ./hub/cmd/hub
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/hubctl ./hub/cmd/hubctl
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/spoke ./spoke/cmd/spoke
	$(GO) build -o $(BIN)/modelsim ./e2e/cmd/modelsim
	$(GO) build -o $(BIN)/fleet ./e2e/cmd/fleet
	$(GO) build -o $(BIN)/gateway ./e2e/cmd/gateway
	$(GO) build -o $(BIN)/loadgen ./e2e/cmd/loadgen
	$(GO) build -o $(BIN)/eppbench ./e2e/cmd/eppbench
	$(GO) build -o $(BIN)/spillbench ./e2e/cmd/spillbench
	$(GO) build -o $(BIN)/scalebench ./e2e/cmd/scalebench

.PHONY: images
images: ## Build the hub, spoke and hubctl images as OCI archives in bin/images, without a container daemon; reproducible at a commit (VERSION=v0.4.0 names a release).
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || echo 0) $(GO) run ./hack/images \
	  --version $(or $(VERSION),v0.0.0-dev) --revision $(or $(REVISION),unknown) --out $(BIN)/images

.PHONY: demo
demo: build ## Run a whole local fleet with TLS from its own CA: hub, three regional spokes, simulators (DEMO_DURATION=30s to stop by itself).
	$(BIN)/fleet --bin-dir $(BIN) $(if $(DEMO_DURATION),--duration $(DEMO_DURATION),)

.PHONY: demo-k8s
demo-k8s: build ## The demo fleet with a real kube-apiserver per region: pools from InferencePools, imports written back.
	@k8s=$$(bash hack/k8s-bins.sh) && SPILLWAY_K8S_BIN_DIR=$$k8s $(BIN)/fleet --bin-dir $(BIN) --kubernetes $(if $(DEMO_DURATION),--duration $(DEMO_DURATION),)

.PHONY: test
test: build ## Run the whole test suite (unit, real etcd/gRPC/kube-apiserver/Prometheus, e2e with real processes).
	@k8s=$$(bash hack/k8s-bins.sh) && prom=$$(bash hack/prometheus.sh) && \
	  echo "SPILLWAY_BIN_DIR=$(BIN) SPILLWAY_K8S_BIN_DIR=$$k8s SPILLWAY_PROMETHEUS_BIN_DIR=$$prom $(GO) test $(TEST_FLAGS) ./..." && \
	  SPILLWAY_BIN_DIR=$(BIN) SPILLWAY_K8S_BIN_DIR=$$k8s SPILLWAY_PROMETHEUS_BIN_DIR=$$prom $(GO) test $(TEST_FLAGS) ./...

.PHONY: k8s-bins
k8s-bins: ## Build (or reuse from the cache) kube-apiserver, etcd and etcdctl for tests.
	bash hack/k8s-bins.sh

.PHONY: e2e
e2e: ## The three-region end-to-end run in network namespaces (root).
	bash hack/regions.sh $(GO) test -count=1 -timeout 20m -v ./e2e/regions/ $(E2E_ARGS)

.PHONY: e2e-faults
e2e-faults: ## Fault injection in network namespaces (root): partitions, loss, WAN, clock skew, etcd and process kills; writes docs/benchmarks/faults.json (E2E_FAULTS_ARGS=-full for the full durations).
	bash hack/faults.sh $(E2E_FAULTS_ARGS)

.PHONY: bench-spill
bench-spill: ## Federated routing vs local-only vs round-robin in the three-region run (root); writes docs/benchmarks.
	bash hack/regions.sh $(BIN)/spillbench $(BENCH_ARGS)

.PHONY: bench-budgets
bench-budgets: ## Token budgets (root): the request path's cost with 1,000 budgets, then the three-region budget test with minute windows; writes docs/benchmarks/budgets.json.
	$(GO) test -run '^$$' -bench BudgetsPathCost -benchtime 200000x -count 5 ./pkg/epp | tee $(BIN)/budgets-bench.txt
	SPILLWAY_EPP_BENCH=$(BIN)/budgets-bench.txt SPILLWAY_BUDGET_WINDOW=1m SPILLWAY_BUDGETS_JSON=$(CURDIR)/docs/benchmarks/budgets.json \
	  bash hack/regions.sh $(GO) test -count=1 -timeout 30m -v -run TestTokenBudget ./e2e/regions/

# toxiproxy's server, for the latency between regions in make e2e.
$(BIN)/toxiproxy-server:
	@mkdir -p $(BIN)
	GOBIN=$$(mktemp -d) && $(GO) install github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION) && mv $$GOBIN/server $@ && rmdir $$GOBIN

.PHONY: bench-scale
bench-scale: build ## One hub against 100 to 3,000 simulated spokes over mutual TLS (a fifth importing every pool, then 20 importing), then 1,000 on two replicas: staleness, CPU, memory, etcd writes, restart; writes docs/benchmarks/scale.json (BENCH_ARGS=--spokes=1000 for one size).
	@k8s=$$(bash hack/k8s-bins.sh) && SPILLWAY_K8S_BIN_DIR=$$k8s $(BIN)/scalebench --bin-dir $(BIN) --profile-dir $(BIN)/scale-profiles $(BENCH_ARGS)

.PHONY: bench-epp
bench-epp: ## Benchmark the EPP against GIE v1.5.0's EPP (root: uses a network namespace).
	bash hack/bench-epp.sh $(BENCH_ARGS)

.PHONY: bench
bench: ## Go benchmarks (scheduler, simulator page) with allocations.
	$(GO) test -run '^$$' -bench . -benchmem ./pkg/...

.PHONY: fuzz
# go test -list prints a package's names before its "ok" line. A new input that widens coverage
# is minimized for up to -fuzzminimizetime (Go's default 60s), during which no input runs: 5s
# keeps most of FUZZTIME for fuzzing.
fuzz: ## Run every fuzz target for FUZZTIME (default 20s) each.
	@for spec in $$($(GO) test -list '^Fuzz' ./... 2>/dev/null | awk '/^Fuzz/ {names = names " " $$1} /^ok/ {n = split(names, f, " "); for (i = 1; i <= n; i++) print $$2":"f[i]; names = ""}'); do \
	  pkg=$${spec%%:*}; fn=$${spec##*:}; \
	  echo "fuzz $$pkg $$fn"; \
	  $(GO) test -run '^$$' -fuzz "^$$fn$$" -fuzztime $${FUZZTIME:-20s} -fuzzminimizetime $${FUZZMINIMIZETIME:-5s} $$pkg || exit 1; \
	done

.PHONY: tools
tools: $(BIN)/buf $(BIN)/protoc-gen-go $(BIN)/protoc-gen-go-grpc ## Install the pinned code generators into bin/.

$(BIN)/buf:
	$(GO) install github.com/bufbuild/buf/cmd/buf@$(BUF_VERSION)
$(BIN)/protoc-gen-go:
	$(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
$(BIN)/protoc-gen-go-grpc:
	$(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

.PHONY: generate
generate: tools ## Regenerate the protobuf Go code in proto/ and copy the upstream CRDs into deploy/.
	$(BIN)/buf generate
	bash hack/crds.sh

.PHONY: verify
verify: generate ## Prove generated code is current, no binary is tracked; buf lint, go vet, gofmt, go mod tidy.
	bash hack/no-binaries.sh
	$(BIN)/buf lint
	@if git rev-parse --verify -q main >/dev/null; then $(BIN)/buf breaking --against '.git#branch=main'; fi
	@git diff --exit-code -- proto || { echo "generated code is stale: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- proto)" || { echo "untracked generated files in proto/"; git status --porcelain -- proto; exit 1; }
	@git diff --exit-code -- deploy/crds/upstream deploy/charts/spillway-crds/files deploy/charts/spillway-spoke/files e2e/apiserver/testdata deploy/testdata/cert-manager || { echo "upstream CRD copies differ from the pinned modules: run 'make generate' and commit"; exit 1; }
	@test -z "$$(git status --porcelain -- deploy/crds/upstream deploy/charts/spillway-crds/files deploy/charts/spillway-spoke/files e2e/apiserver/testdata deploy/testdata/cert-manager)" || { echo "untracked CRD copies"; git status --porcelain -- deploy/crds/upstream deploy/charts/spillway-crds/files deploy/charts/spillway-spoke/files e2e/apiserver/testdata deploy/testdata/cert-manager; exit 1; }
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); test -z "$$out" || { echo "gofmt needed:"; echo "$$out"; exit 1; }
	$(GO) mod tidy
	@git diff --exit-code -- go.mod go.sum || { echo "go mod tidy changed go.mod/go.sum: commit the result"; exit 1; }

.PHONY: clean
clean: ## Remove bin/.
	rm -rf $(BIN)
