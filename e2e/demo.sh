#!/usr/bin/env bash
# The main job: a local control plane with a simulated GPU fleet, the bud.studio CRDs, the
# operator, the gateway and the engine runtime (the simulator's engine emulator at each
# engine pod's address); then the quickstart: an SLO-driven ModelDeployment and an ApiKey,
# ending with a chat completion through the gateway with the official OpenAI SDK.
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

stop_processes() {
  for name in operator gateway engine-runtime; do
    if [ -f "$demo/$name.pid" ]; then
      kill -- "-$(cat "$demo/$name.pid")" 2>/dev/null || kill "$(cat "$demo/$name.pid")" 2>/dev/null || true
      rm -f "$demo/$name.pid"
    fi
  done
  if [ -f "$demo/services.env" ]; then
    BUD_TEST_SERVICES_DIR="$demo/services" "$repo/gateway/tests/services.sh" stop >/dev/null 2>&1 || true
    rm -f "$demo/services.env"
  fi
}

if [ "${1:-}" = "--down" ]; then
  stop_processes
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

step "Building the operator, the gateway and the simulator"
cargo build -q -p bud-operator -p bud-e2e -p bud-gateway -p bud-simulator

step "Registering the simulated GPU fleet (e2e/cluster/fleet.yaml)"
"$CARGO_TARGET_DIR/debug/bud-e2e" fleet apply
kubectl get nodes -L nvidia.com/gpu.product,nvidia.com/gpu.count,topology.kubernetes.io/zone

step "Installing the bud.studio CRDs (charts/bud/crds)"
kubectl apply --server-side -f charts/bud/crds/ >/dev/null
kubectl wait --for condition=Established --timeout=60s crd -l '!nonexistent' >/dev/null 2>&1 || true
kubectl get crd -o name | grep bud.studio

step "Starting the operator (logs: .work/demo/operator.log)"
stop_processes
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


step "Starting ClickHouse for usage analytics, the engine runtime and the gateway"
BUD_TEST_SERVICES_DIR="$demo/services" "$repo/gateway/tests/services.sh" start > "$demo/services.env"
# shellcheck disable=SC1091
source "$demo/services.env"
setsid "$CARGO_TARGET_DIR/debug/bud-e2e" engine-runtime --log-dir "$demo/engines" \
  >"$demo/engine-runtime.log" 2>&1 < /dev/null &
echo $! > "$demo/engine-runtime.pid"
gateway_port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
setsid "$CARGO_TARGET_DIR/debug/bud-gateway" --listen "127.0.0.1:$gateway_port" --kubernetes \
  --clickhouse-url "$BUD_TEST_CLICKHOUSE_URL" --clickhouse-flush-ms 500 \
  >"$demo/gateway.log" 2>&1 < /dev/null &
echo $! > "$demo/gateway.pid"
gateway="http://127.0.0.1:$gateway_port"
deadline=$((SECONDS + 30))
until curl -sf "$gateway/healthz" >/dev/null; do
  [ $SECONDS -lt $deadline ] || { echo "the gateway did not start; log:" >&2; tail -n 20 "$demo/gateway.log" >&2; exit 1; }
  sleep 0.2
done
echo "gateway: $gateway (logs: .work/demo/gateway.log)"

step "Applying the quickstart (examples/quickstart.yaml): an SLO-driven deployment of Qwen3-8B and an API key"
cat examples/quickstart.yaml | sed -n '/^spec:/,/^---/p' | head -14
kubectl apply -f examples/quickstart.yaml
if ! kubectl wait --for=condition=Ready --timeout=180s modeldeployment/qwen3-8b >/dev/null; then
  kubectl get modeldeployment qwen3-8b -o wide >&2
  kubectl describe modeldeployment qwen3-8b | tail -n 20 >&2
  exit 1
fi
echo
kubectl get simulations
echo
kubectl get modeldeployments -o wide
echo
kubectl get pods -l app.kubernetes.io/component=engine -o wide
echo
kubectl get events --field-selector involvedObject.kind=ModelDeployment,involvedObject.name=qwen3-8b --sort-by=.lastTimestamp

step "Calling the gateway with the official OpenAI Python SDK"
secret="$(kubectl get apikey quickstart -o jsonpath='{.status.secretName}')"
key="$(kubectl get secret "$secret" -o jsonpath='{.data.apiKey}' | base64 -d)"
deadline=$((SECONDS + 60))
until reply="$(python3 e2e/clients/chat.py "$gateway/v1" "$key" qwen3-8b 2>"$demo/chat.err")"; do
  [ $SECONDS -lt $deadline ] || { cat "$demo/chat.err" >&2; exit 1; }
  sleep 1
done
echo "$reply" | python3 -c '
import json, sys
r = json.load(sys.stdin)
print("chat completion:  ", r["reply"])
print("streamed:         ", r["streamed_reply"], "(%d chunks)" % r["stream_chunks"])
print("usage:            ", r["usage"])
print("x-request-id:     ", r["request_id"])'
deadline=$((SECONDS + 20))
until [ "$(curl -s --data-binary "SELECT count() FROM bud.usage WHERE served_model = 'qwen3-8b'" "$BUD_TEST_CLICKHOUSE_URL")" -ge 2 ] 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || break
  sleep 0.5
done
echo "usage rows in ClickHouse: $(curl -s --data-binary "SELECT count() FROM bud.usage WHERE served_model = 'qwen3-8b'" "$BUD_TEST_CLICKHOUSE_URL")"

cat <<MSG

Everything keeps running.
  export KUBECONFIG=$KUBECONFIG
  kubectl get bud -A                      # everything Bud Foundry defines
  export OPENAI_BASE_URL=$gateway/v1 OPENAI_API_KEY=\$(kubectl get secret $secret -o jsonpath='{.data.apiKey}' | base64 -d)
  curl -s 127.0.0.1:$metrics_port/metrics # the operator's metrics
  make demo-down                          # stop it all
MSG
