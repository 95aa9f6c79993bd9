# One task runner for developers and CI (.ci/run calls `make ci`).
#
#   make demo     the main job: local control plane, operator, inventory (see README)
#   make test     every test: unit, CRD drift, real API server, gateway and simulator suites
#
# Cargo's target directory lives outside the checkout so clones share it.
export CARGO_TARGET_DIR ?= $(HOME)/.cache/bud-foundry/cargo-target
export BUD_CACHE_DIR ?= $(HOME)/.cache/bud-foundry
CLUSTER ?= bud
CLUSTER_ROOT ?= $(CURDIR)/.work/clusters
export BUD_CLUSTER_ROOT := $(CLUSTER_ROOT)
KUBECONFIG_LOCAL := $(CLUSTER_ROOT)/$(CLUSTER)/kubeconfig
SHELL := bash
.SHELLFLAGS := -euo pipefail -c

.PHONY: setup build crds crds-check fmt fmt-check clippy lint unit-test cluster-up cluster-down \
        fleet install-crds e2e-test gateway-test simulator-test test demo demo-down chart-lint ci

setup: ## Install what a fresh machine lacks and build the pinned Kubernetes binaries.
	@e2e/setup.sh >/dev/null

build:
	cargo build --workspace --all-targets

crds: ## Regenerate charts/bud/crds from the Rust types.
	cargo run -q -p bud-crds --bin crdgen

crds-check: ## Fail if the committed CRD YAML differs from the Rust types.
	cargo run -q -p bud-crds --bin crdgen -- --check

fmt:
	cargo fmt --all

fmt-check:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets -- -D warnings

lint: fmt-check clippy crds-check chart-lint

chart-lint: setup
	PATH="$$(e2e/cluster/build-binaries.sh):$$PATH" helm lint --strict charts/bud

unit-test: ## Tests that need no cluster and no services.
	cargo test --workspace --lib --bins

cluster-up: setup ## Start the local control plane and register the simulated fleet.
	e2e/cluster/up.sh $(CLUSTER) >/dev/null
	cargo build -q -p bud-e2e
	KUBECONFIG=$(KUBECONFIG_LOCAL) $(CARGO_TARGET_DIR)/debug/bud-e2e fleet apply >/dev/null
	@echo "local control plane up: export KUBECONFIG=$(KUBECONFIG_LOCAL)"

cluster-down:
	e2e/cluster/down.sh $(CLUSTER)

# The cluster tests run against $KUBECONFIG when it is set (any cluster), else against the
# local control plane, which this target starts and stops.
# ClickHouse (for usage rows) runs from its own folder so it never meets the gateway suite's.
e2e-test: setup
	cargo build -q -p bud-operator -p bud-e2e -p bud-gateway -p bud-simulator
	export BUD_TEST_SERVICES_DIR=$(CURDIR)/.work/services-e2e; \
	trap 'gateway/tests/services.sh stop >/dev/null 2>&1 || true; [ -n "$${KUBECONFIG:-}" ] || e2e/cluster/down.sh $(CLUSTER)' EXIT; \
	eval "$$(gateway/tests/services.sh start)"; \
	export PATH="$$(e2e/cluster/build-binaries.sh):$$PATH"; \
	if [ -n "$${KUBECONFIG:-}" ]; then \
	  cargo test --no-fail-fast -p bud-e2e; \
	else \
	  $(MAKE) --no-print-directory cluster-up; \
	  KUBECONFIG=$(KUBECONFIG_LOCAL) cargo test --no-fail-fast -p bud-e2e; \
	fi

gateway-test: setup ## Gateway suites against real Redis and ClickHouse, and the Python SDK tests.
	export BUD_TEST_SERVICES_DIR=$(CURDIR)/.work/services-gateway; \
	trap 'gateway/tests/services.sh stop' EXIT; \
	eval "$$(gateway/tests/services.sh start)"; \
	cargo test -p bud-gateway; \
	gateway/tests/run-python.sh

simulator-test: setup
	cargo test -p bud-simulator
	if [ -x simulator/tests/run-python.sh ]; then simulator/tests/run-python.sh; fi

test: lint ## Everything CI runs.
	cargo test --workspace --exclude bud-e2e --exclude bud-gateway --exclude bud-simulator
	$(MAKE) --no-print-directory simulator-test
	$(MAKE) --no-print-directory gateway-test
	$(MAKE) --no-print-directory e2e-test

demo: setup ## The main job: control plane, CRDs, operator, inventory.
	e2e/demo.sh

demo-down:
	e2e/demo.sh --down

ci: test
