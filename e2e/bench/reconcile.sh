#!/usr/bin/env bash
# The reconcile benchmark (a report, not a test): a dedicated local control plane with the
# large fleet, the operator's release build, 200 ModelDeployments of mixed sizes; writes
# e2e/bench/REPORT.md with the time to converge and the operator's memory.
#
#   e2e/bench/reconcile.sh [COUNT]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
count="${1:-200}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bud-foundry/cargo-target}"
export BUD_CLUSTER_ROOT="${BUD_CLUSTER_ROOT:-$repo/.work/clusters}"
export PATH="$("$repo/e2e/cluster/build-binaries.sh"):$PATH"
cargo build -q --release -p bud-operator -p bud-e2e
trap '[ -n "${operator:-}" ] && kill "$operator" 2>/dev/null; e2e/cluster/down.sh bench' EXIT
export KUBECONFIG="$(e2e/cluster/up.sh bench)"
"$CARGO_TARGET_DIR/release/bud-e2e" install-crds
"$CARGO_TARGET_DIR/release/bud-e2e" fleet apply --file "$here/fleet-large.yaml" >/dev/null
kubectl apply -f examples/local-cluster.yaml >/dev/null
RUST_LOG=warn "$CARGO_TARGET_DIR/release/bud-operator" --metrics-addr 127.0.0.1:0 --leader-election=false \
  > "$repo/.work/bench-operator.log" 2>&1 &
operator=$!
kubectl wait --for=condition=Ready --timeout=60s budcluster/local >/dev/null
"$CARGO_TARGET_DIR/release/bud-e2e" bench-reconcile --count "$count" --operator-pid "$operator" \
  --report "$here/REPORT.md" --command "e2e/bench/reconcile.sh $count"
