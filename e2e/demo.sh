#!/usr/bin/env bash
# The main job: a local control plane with a simulated GPU fleet, the bud.studio CRDs, the
# operator, and the cluster's accelerator inventory as the operator sees it.
#
#   e2e/demo.sh          start everything (left running; prints how to use it)
#   e2e/demo.sh --down   stop the operator and the control plane
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
cd "$repo"
export BUD_CLUSTER_ROOT="${BUD_CLUSTER_ROOT:-$repo/.work/clusters}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/bud-foundry/cargo-target}"
demo="$repo/.work/demo"
step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

stop_operator() {
  if [ -f "$demo/operator.pid" ]; then
    kill "$(cat "$demo/operator.pid")" 2>/dev/null || true
    rm -f "$demo/operator.pid"
  fi
}

if [ "${1:-}" = "--down" ]; then
  stop_operator
  "$here/cluster/down.sh" bud
  echo "demo stopped"
  exit 0
fi

mkdir -p "$demo"
bin="$("$here/setup.sh")"
export PATH="$bin:$PATH"

step "Starting the local control plane (etcd, kube-apiserver, controller-manager, scheduler, kwok)"
export KUBECONFIG="$("$here/cluster/up.sh" bud)"
kubectl version 2>/dev/null | sed -n 2p

step "Building the operator"
cargo build -q -p bud-operator -p bud-e2e

step "Registering the simulated GPU fleet (e2e/cluster/fleet.yaml)"
"$CARGO_TARGET_DIR/debug/bud-e2e" fleet apply
kubectl get nodes -L nvidia.com/gpu.product,nvidia.com/gpu.count,topology.kubernetes.io/zone

step "Installing the bud.studio CRDs (charts/bud/crds)"
kubectl apply --server-side -f charts/bud/crds/ >/dev/null
kubectl wait --for condition=Established --timeout=60s crd -l '!nonexistent' >/dev/null 2>&1 || true
kubectl get crd -o name | grep bud.studio

step "Starting the operator (logs: .work/demo/operator.log)"
stop_operator
metrics_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
setsid "$CARGO_TARGET_DIR/debug/bud-operator" --metrics-addr "127.0.0.1:$metrics_port" \
  >"$demo/operator.log" 2>&1 < /dev/null &
echo $! > "$demo/operator.pid"

step "Declaring the local cluster (examples/local-cluster.yaml)"
kubectl apply -f examples/local-cluster.yaml
deadline=$((SECONDS + 60))
until [ "$(kubectl get budcluster local -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" = True ]; do
  if [ $SECONDS -ge $deadline ]; then
    echo "the BudCluster did not become Ready in 60 s; operator log:" >&2
    tail -n 30 "$demo/operator.log" >&2
    exit 1
  fi
  sleep 0.5
done
kubectl get budclusters
echo
kubectl get budcluster local -o jsonpath='{range .status.accelerators[*]}{.count}x {.product} ({.memoryMib} MiB) on {.nodes} node(s), {.allocatable} allocatable{"\n"}{end}'

cat <<MSG

The control plane and the operator keep running.
  export KUBECONFIG=$KUBECONFIG
  kubectl get bud -A                      # everything Bud Foundry defines
  curl -s 127.0.0.1:$metrics_port/metrics # the operator's metrics
  make demo-down                          # stop it all
MSG
