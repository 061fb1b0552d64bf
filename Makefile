# redis-operator: every build, test and install step lives here.
# `make demo` runs the product on a real local node; `make test` runs every test.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
CARGO ?= cargo
# Upstream Kubernetes components are compiled from Go modules into this cache.
export TOOLS_CACHE ?= $(HOME)/.cache/redis-operator-tools
DEV_CERTS ?= .cache/dev-certs

.PHONY: help build release test unit lint fmt fmt-check clippy deny audit audit-live docs-check crds crds-check certs bench-slots \
        run-webhook run-operator chart-lint cluster-tools e2e demo demo-sim root deps bench image test-images e2e-real

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'

# redis-server/redis-tools: the kwok tier's Redis processes. The rest is a real
# node: containerd and runc, CNI plugins, iptables/nftables for kube-proxy,
# ipset for kube-router (the NetworkPolicy enforcer), iproute2/util-linux for
# the node's network namespace, umoci and skopeo to build images without
# Docker, busybox-static (a shell for the test images), gcc (the static pause
# binary) and curl (the helm test image).
DEPS_PACKAGES := redis-server redis-tools containerd runc containernetworking-plugins iptables nftables ipset \
                 conntrack iproute2 util-linux umoci skopeo busybox-static gcc libc6-dev curl

deps: ## install the Debian packages the tests and the real node need
	@missing=""; for p in $(DEPS_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

build: ## debug build of both binaries
	$(CARGO) build --workspace --bins

release: ## optimised, stripped binaries in target/release
	# One at a time, so that neither binary gets dependency features only the
	# other (or the tests) need; both run a single-threaded tokio runtime.
	$(CARGO) build --release -p redis-operator
	$(CARGO) build --release -p redis-webhook

IMAGES_DIR ?= target/images

image: deps cluster-tools release ## OCI image tarballs without Docker: the product, pause, and test-only Redis/curl images
	@bash tests/cluster/build-images.sh target/release $(IMAGES_DIR) >/dev/null

fmt: ## format the code
	$(CARGO) fmt --all

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

lint: fmt-check clippy docs-check chart-lint crds-check deny audit ## formatting, clippy, rustdoc links, chart lint, CRD drift, dependencies, advisories

CARGO_DENY_VERSION ?= 0.20.2

deny: ## dependency licenses, bans (duplicate versions) and sources (deny.toml); installs cargo-deny once
	@$(CARGO) deny --version 2>/dev/null | grep -q " $(CARGO_DENY_VERSION)$$" \
	  || $(CARGO) install --locked --quiet cargo-deny --version $(CARGO_DENY_VERSION)
	$(CARGO) deny check licenses bans sources

CARGO_AUDIT_VERSION ?= 0.22.2
# cargo-deny looks for the database under deny.toml's db-path, in a
# directory named after a hash of its URL (this name is cargo-deny 0.20's).
ADVISORY_DB := target/advisory-dbs/advisory-db-3157b0e258782691

audit: ## RustSec advisories (cargo deny and cargo audit) against supply-chain/advisory-db.bundle, offline; installs cargo-audit once
	@$(CARGO) deny --version 2>/dev/null | grep -q " $(CARGO_DENY_VERSION)$$" \
	  || $(CARGO) install --locked --quiet cargo-deny --version $(CARGO_DENY_VERSION)
	@$(CARGO) audit --version 2>/dev/null | grep -q " $(CARGO_AUDIT_VERSION)$$" \
	  || $(CARGO) install --locked --quiet cargo-audit --version $(CARGO_AUDIT_VERSION)
	@rm -rf $(ADVISORY_DB) && mkdir -p $(dir $(ADVISORY_DB)) \
	  && git -c advice.detachedHead=false clone -q supply-chain/advisory-db.bundle $(ADVISORY_DB)
	@echo "advisory database: $$(git -C $(ADVISORY_DB) log -1 --format='%s')"
	$(CARGO) deny --offline check advisories
	# --stale: the snapshot is older than cargo-audit's 90-day limit by design.
	$(CARGO) audit --no-fetch --stale --db $(ADVISORY_DB) --deny warnings

audit-live: ## the same advisories against the current RustSec database (needs github.com)
	$(CARGO) deny check advisories
	$(CARGO) audit --deny warnings

docs-check: ## rustdoc of every crate, private items too, without warnings (broken links)
	RUSTDOCFLAGS="-D warnings" $(CARGO) doc --workspace --no-deps --document-private-items -q

crds: ## regenerate the CRD in the chart from the Rust types
	$(CARGO) run -q -p redis-operator-api --bin crdgen charts/redis-operator/files/redisclusters.crd.yaml

crds-check: ## fail when the committed CRD differs from the types (the one check: api's crd test)
	$(CARGO) test -q -p redis-operator-api --lib crd::tests::committed_crd_matches_the_types

certs: build ## development CA and serving certificate for 127.0.0.1/localhost in .cache/dev-certs
	target/debug/redis-webhook certs generate --out $(DEV_CERTS) --san 127.0.0.1 --san localhost

run-webhook: certs ## run the webhook locally on :8443 (HTTPS) and :8080 (HTTP)
	target/debug/redis-webhook serve --cert-dir $(DEV_CERTS) --bind 127.0.0.1:8443 --metrics-bind 127.0.0.1:8080

run-operator: build ## run the operator against the current kubeconfig
	target/debug/redis-operator --metrics-bind 127.0.0.1:8081

cluster-tools: ## compile kube-apiserver, etcd, kwok, metrics-server, helm, kubelet, kube-proxy... (cached by version)
	@bash tests/cluster/build-tools.sh >/dev/null

# The directory build-tools.sh prints is where the binaries are.
TOOLS_BIN = $(shell bash tests/cluster/build-tools.sh 2>/dev/null | tail -1)

chart-lint: cluster-tools ## helm lint --strict and render every values file in ci/
	@helm="$(TOOLS_BIN)/helm"; \
	$$helm lint --strict charts/redis-operator; \
	for f in charts/redis-operator/ci/*-values.yaml; do \
	  $$helm lint --strict charts/redis-operator -f $$f >/dev/null; \
	  $$helm template t charts/redis-operator -n redis-operator -f $$f >/dev/null; \
	  echo "rendered with $$f"; \
	done; \
	if out=$$($$helm template t charts/redis-operator --set operator.enabled=false 2>&1); then \
	  echo "chart-lint: an in-cluster self-managed webhook without the operator rendered"; exit 1; \
	fi; \
	echo "$$out" | grep -q 'webhook.certs.mode "self-managed" needs operator.enabled=true' \
	  || { echo "chart-lint: unexpected refusal: $$out"; exit 1; }; \
	echo "refused: a self-managed webhook in the cluster without the operator"

unit: ## unit tests only (no control plane)
	$(CARGO) test --workspace --lib --bins

# The real-node tier runs images of the debug binaries: the same code and
# layout as `make image`, without its fat-LTO release build (about 30 min
# of a cold CI run on 2 cores).
TEST_IMAGES_DIR ?= target/test-images

test-images: deps cluster-tools build ## the images the real-node tier runs: `make image`'s, from the debug binaries
	@bash tests/cluster/build-images.sh target/debug $(TEST_IMAGES_DIR) >/dev/null

test: deps cluster-tools lint build test-images ## every test: unit, integration, e2e on kwok nodes and on a real node (root)
	CLUSTER_TOOLS_BIN="$(TOOLS_BIN)" REAL_NODE_IMAGES="$(abspath $(TEST_IMAGES_DIR))" $(CARGO) test --workspace --no-fail-fast

e2e: deps cluster-tools build ## the end-to-end suite only
	CLUSTER_TOOLS_BIN="$(TOOLS_BIN)" $(CARGO) test -p redis-operator-harness --test e2e --test e2e_operator --test e2e_redis -- --test-threads=1

e2e-real: deps cluster-tools build test-images ## the real-node tier: containerd + kubelet in a netns of its own, the chart in-cluster (root)
	CLUSTER_TOOLS_BIN="$(TOOLS_BIN)" REAL_NODE_IMAGES="$(abspath $(TEST_IMAGES_DIR))" \
	  $(CARGO) test -p redis-operator-harness --test e2e_real --test e2e_real_roll --test e2e_real_loss --test e2e_real_monitoring --test e2e_real_tls --test e2e_real_netpol -- --test-threads=1 --nocapture

# A real node needs root; say so before a long first build, not after it.
root:
	@[ "$$(id -u)" = 0 ] || { echo "make demo runs a real node (containerd, kubelet) and needs root: sudo make demo; make demo-sim needs no root"; exit 1; }

demo: root deps cluster-tools build test-images ## a real node, the chart in-cluster, a RedisCluster scaling on real CPU, until Ctrl-C (root)
	CLUSTER_TOOLS_BIN="$(TOOLS_BIN)" REAL_NODE_IMAGES="$(abspath $(TEST_IMAGES_DIR))" $(CARGO) run -q -p redis-operator-demo --bin demo

demo-sim: deps cluster-tools build ## simulated kwok nodes, local operator and webhook, a RedisCluster on simulated CPU, until Ctrl-C
	CLUSTER_TOOLS_BIN="$(TOOLS_BIN)" $(CARGO) run -q -p redis-operator-demo --bin demo-sim

bench: cluster-tools release bench-slots ## Rust vs a Go controller-runtime twin, one table (BENCH_QUICK=1: short run); see bench/README.md
	TOOLS_BIN="$(TOOLS_BIN)" bash bench/run.sh

bench-slots: deps ## slot-migration rate (keys/s): operator::topology beside redis-cli --cluster rebalance
	mkdir -p bench/results/tmp
	SLOT_BENCH_OUT=bench/results/tmp/slots.json $(CARGO) run -q --release -p redis-operator-slot-bench --bin slot-bench
