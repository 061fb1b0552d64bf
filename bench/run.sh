#!/usr/bin/env bash
# `make bench`: builds what the benchmark needs into bench/.cache (the Go
# twin, the instrumented operator, oha, a Python venv with matplotlib), then
# runs bench/bench.py. BENCH_QUICK=1 runs small sizes for development.
# Expects the release binaries (`make release`) and the cluster tools
# (`make cluster-tools`); TOOLS_BIN names the latter.
set -euo pipefail
bench="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$bench/.." && pwd)"
cache="${BENCH_CACHE:-$bench/.cache}"
mkdir -p "$cache/bin"
log() { echo "[bench] $*" >&2; }

: "${TOOLS_BIN:?set TOOLS_BIN to the directory that tests/cluster/build-tools.sh prints}"
for t in taskset strip; do
  command -v "$t" >/dev/null || { echo "bench needs '$t' (Debian: util-linux, binutils)" >&2; exit 1; }
done

log "Go twin (controller-runtime) -> $cache/bin"
(cd "$bench/go-twin" && CGO_ENABLED=0 GOFLAGS=-buildvcs=false \
  go build -trimpath -ldflags="-s -w" -o "$cache/bin/" ./cmd/twin-operator ./cmd/twin-webhook)

log "instrumented operator (bench/rust-probe, same versions as Cargo.lock)"
cmp -s "$repo/Cargo.lock" "$cache/Cargo.lock.used" || {
  cp "$repo/Cargo.lock" "$bench/rust-probe/Cargo.lock"
  cp "$repo/Cargo.lock" "$cache/Cargo.lock.used"
}
# From the repository, so its .cargo/config.toml (linker flags) applies.
(cd "$repo" && cargo build -q --release --manifest-path "$bench/rust-probe/Cargo.toml" --target-dir "$cache/probe-target")

OHA_VERSION=1.16.0
if ! "$cache/tools/bin/oha" --version 2>/dev/null | grep -q "$OHA_VERSION"; then
  log "oha $OHA_VERSION (cargo install, once)"
  cargo install -q oha --version "$OHA_VERSION" --locked --root "$cache/tools"
fi

log "local-cluster (tests harness)"
(cd "$repo" && cargo build -q -p redis-operator-harness --bin local-cluster)

MATPLOTLIB_VERSION=3.11.2
if ! "$cache/venv/bin/python" -c "import matplotlib" 2>/dev/null; then
  log "Python venv with matplotlib $MATPLOTLIB_VERSION (once)"
  python3 -m venv "$cache/venv"
  "$cache/venv/bin/pip" install -q "matplotlib==$MATPLOTLIB_VERSION"
fi

quick=()
[ "${BENCH_QUICK:-0}" = 1 ] && quick=(--quick)
exec "$cache/venv/bin/python" "$bench/bench.py" "${quick[@]}" ${BENCH_ONLY:+--only "$BENCH_ONLY"} \
  --repo "$repo" --tools-bin "$TOOLS_BIN" \
  --local-cluster "$repo/target/debug/local-cluster" \
  --crd "$repo/charts/redis-operator/files/redisclusters.crd.yaml" \
  --ours-operator "$repo/target/release/redis-operator" \
  --ours-webhook "$repo/target/release/redis-webhook" \
  --ours-probe "$cache/probe-target/release/redis-operator-probe" \
  --twin-operator "$cache/bin/twin-operator" \
  --twin-webhook "$cache/bin/twin-webhook" \
  --oha "$cache/tools/bin/oha" \
  --slots "$bench/results/tmp/slots.json" \
  --results "$bench/results"
