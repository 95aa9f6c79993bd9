#!/usr/bin/env bash
# Starts a local Kubernetes control plane on loopback: etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler and kwok (which plays the kubelets of simulated
# nodes and gives pods 127.x addresses from each node's podCIDR). Waits until the API
# answers, then writes a kubeconfig and an env file.
#
#   e2e/cluster/up.sh [NAME]          default NAME=bud
#   e2e/cluster/up.sh --keep [NAME]   start again a control plane that down.sh stopped, with
#                                     its state (etcd data, certificates, token, ports) kept:
#                                     clients and kubeconfigs made for it keep working
#
# State (certificates, data, logs, pids, kubeconfig) lives in $BUD_CLUSTER_ROOT/NAME
# (default .work/clusters/NAME in the checkout). Prints the kubeconfig path. Stop with
# e2e/cluster/down.sh NAME. Registering nodes is separate: `bud-e2e fleet apply`.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
keep=false
if [ "${1:-}" = --keep ]; then keep=true; shift; fi
name="${1:-bud}"
root="${BUD_CLUSTER_ROOT:-$repo/.work/clusters}"
state="$root/$name"
bin="$("$here/build-binaries.sh")"
# The kubectl built with the control plane matches its version.
export PATH="$bin:$PATH"

if [ -f "$state/pids" ] && "$here/down.sh" --check "$name" >/dev/null 2>&1; then
  echo "cluster $name already running" >&2
  echo "$state/kubeconfig"
  exit 0
fi
if [ "$keep" = true ] && [ -f "$state/ports" ] && [ -f "$state/pki/ca.crt" ]; then
  # Restart: same ports, certificates, token and data as before.
  # shellcheck source=/dev/null
  . "$state/ports"
  restart=true
else
  restart=false
  rm -rf "$state"
fi
mkdir -p "$state"/{pki,etcd,logs}
: > "$state/pids"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
if [ "$restart" = false ]; then
  api_port="${BUD_API_PORT:-$(free_port)}"
  etcd_port="$(free_port)"
  peer_port="$(free_port)"
  kwok_port="$(free_port)"
  # Each control plane gets its own service and pod ranges so two of them stay distinguishable.
  service_cidr="${BUD_SERVICE_CIDR:-10.96.0.0/16}"
  pod_cidr="${BUD_DEFAULT_POD_CIDR:-127.200.0.1/16}"
  cat > "$state/ports" <<PORTS
api_port=$api_port
etcd_port=$etcd_port
peer_port=$peer_port
kwok_port=$kwok_port
service_cidr=$service_cidr
pod_cidr=$pod_cidr
PORTS
fi

pki="$state/pki"
kubeconfig="$state/kubeconfig"
if [ "$restart" = false ]; then
openssl_quiet() { openssl "$@" >/dev/null 2>&1; }
openssl_quiet req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=bud-local-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt"
cat > "$pki/apiserver.ext" <<EXT
subjectAltName = IP:127.0.0.1, IP:10.96.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc
extendedKeyUsage = serverAuth
EXT
openssl_quiet req -newkey rsa:2048 -nodes -subj "/CN=kube-apiserver" \
  -keyout "$pki/apiserver.key" -out "$pki/apiserver.csr"
openssl_quiet x509 -req -in "$pki/apiserver.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
  -CAcreateserial -days 30 -extfile "$pki/apiserver.ext" -out "$pki/apiserver.crt"
openssl_quiet genrsa -out "$pki/sa.key" 2048
openssl_quiet rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
token="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
echo "$token,bud-admin,bud-admin,system:masters" > "$pki/tokens.csv"
chmod 600 "$pki"/*.key "$pki/tokens.csv"

cat > "$kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: $name
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority: $pki/ca.crt
users:
- name: bud-admin
  user:
    token: $token
contexts:
- name: $name
  context: {cluster: $name, user: bud-admin}
current-context: $name
KC
chmod 600 "$kubeconfig"
fi

start() { # name, command...
  local n="$1"; shift
  setsid "$@" >"$state/logs/$n.log" 2>&1 < /dev/null &
  echo "$n $!" >> "$state/pids"
}

start etcd "$bin/etcd" --name default --data-dir "$state/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
  --initial-cluster "default=http://127.0.0.1:$peer_port" --unsafe-no-fsync --quota-backend-bytes 2147483648

# --endpoint-reconciler-type=none: the API server's own address is loopback, which the
# `kubernetes` Endpoints object may not hold.
start kube-apiserver "$bin/kube-apiserver" \
  --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" --token-auth-file "$pki/tokens.csv" \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --service-cluster-ip-range "$service_cidr" --authorization-mode Node,RBAC \
  --allow-privileged=true --endpoint-reconciler-type none --enable-priority-and-fairness=false \
  --profiling=false --v 1

deadline=$((SECONDS + 120))
until kubectl --kubeconfig "$kubeconfig" get --raw /readyz >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    echo "kube-apiserver did not become ready in 120 s; last log lines:" >&2
    tail -n 30 "$state/logs/kube-apiserver.log" >&2
    "$here/down.sh" "$name" >/dev/null 2>&1 || true
    exit 1
  fi
  if ! kill -0 "$(awk '/^kube-apiserver /{print $2}' "$state/pids")" 2>/dev/null; then
    echo "kube-apiserver exited; last log lines:" >&2
    tail -n 30 "$state/logs/kube-apiserver.log" >&2
    "$here/down.sh" "$name" >/dev/null 2>&1 || true
    exit 1
  fi
  sleep 0.5
done

start kube-controller-manager "$bin/kube-controller-manager" \
  --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --allocate-node-cidrs=false --service-cluster-ip-range "$service_cidr" \
  --controllers '*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-persistentvolume-binder' \
  --concurrent-deployment-syncs 10 --concurrent-replicaset-syncs 10 --v 1

start kube-scheduler "$bin/kube-scheduler" \
  --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" --authorization-kubeconfig "$kubeconfig" \
  --bind-address 127.0.0.1 --secure-port 0 --leader-elect=false --v 1

# kwok manages only nodes annotated as fake, so a real cluster's nodes are never touched.
start kwok "$bin/kwok" --kubeconfig "$kubeconfig" \
  --manage-all-nodes=false --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
  --cidr "$pod_cidr" --node-ip 127.0.0.1 --node-port "$kwok_port" \
  --node-lease-duration-seconds 40

# The default ServiceAccount must exist before pods can be created in a namespace.
deadline=$((SECONDS + 60))
until kubectl --kubeconfig "$kubeconfig" -n default get serviceaccount default >/dev/null 2>&1; do
  if [ $SECONDS -ge $deadline ]; then
    echo "kube-controller-manager did not create the default ServiceAccount in 60 s" >&2
    tail -n 30 "$state/logs/kube-controller-manager.log" >&2
    exit 1
  fi
  sleep 0.5
done

cat > "$state/env" <<ENV
export KUBECONFIG=$kubeconfig
ENV
echo "$kubeconfig"
