#!/usr/bin/env bash
# Builds the pinned control-plane binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, etcd, kwok), kubectl and helm from their Go modules into a cache outside the
# checkout. Each binary is keyed by a hash of its wrapper module (go/<module>/go.mod and
# go.sum), so a changed pin rebuilds only what it pins and later runs reuse the rest.
#
#   e2e/cluster/build-binaries.sh        prints the directory holding all the binaries
#
# BUD_CACHE_DIR overrides the cache root (default ~/.cache/bud-foundry).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${BUD_CACHE_DIR:-$HOME/.cache/bud-foundry}"
export GOFLAGS="-mod=mod -trimpath" CGO_ENABLED=0

# name  module-dir  package
components="
etcd                    etcd        .
kwok                    kwok        sigs.k8s.io/kwok/cmd/kwok
kube-apiserver          kubernetes  k8s.io/kubernetes/cmd/kube-apiserver
kube-controller-manager kubernetes  k8s.io/kubernetes/cmd/kube-controller-manager
kube-scheduler          kubernetes  k8s.io/kubernetes/cmd/kube-scheduler
kubectl                 kubernetes  k8s.io/kubernetes/cmd/kubectl
helm                    helm        helm.sh/helm/v3/cmd/helm
"

module_key() {
  cat "$here/go/$1/go.mod" "$here/go/$1/go.sum" | sha256sum | cut -c1-16
}

ldflags_for() {
  if [ "$1" = kubernetes ]; then
    local v; v="$(awk '/^require k8s.io\/kubernetes/ {print $3}' "$here/go/kubernetes/go.mod")"
    local minor="${v#v1.}"; minor="${minor%%.*}"
    echo "-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
  else
    echo "-s -w"
  fi
}

all_key=""
while read -r name module package; do
  [ -n "$name" ] || continue
  key="$(module_key "$module")"
  all_key="$all_key$name-$key"
  out="$cache_root/go-bin/$name-$key/$name"
  if [ ! -x "$out" ]; then
    echo "building $name (module go/$module, first run only; the Kubernetes binaries take ~15 min on 2 cores)" >&2
    mkdir -p "$(dirname "$out")"
    (cd "$here/go/$module" && go build -ldflags "$(ldflags_for "$module")" -o "$out.partial" "$package")
    mv "$out.partial" "$out"
  fi
done <<< "$components"

bin="$cache_root/bin-$(echo "$all_key" | sha256sum | cut -c1-16)"
if [ ! -d "$bin" ]; then
  mkdir -p "$bin.partial"
  while read -r name module package; do
    [ -n "$name" ] || continue
    ln -sf "$cache_root/go-bin/$name-$(module_key "$module")/$name" "$bin.partial/$name"
  done <<< "$components"
  rm -rf "$bin" && mv "$bin.partial" "$bin"
fi
echo "$bin"
