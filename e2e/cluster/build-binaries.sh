#!/usr/bin/env bash
# Builds the pinned control-plane binaries (kube-apiserver, kube-controller-manager,
# kube-scheduler, etcd, kwok) from their Go modules into a cache outside the checkout,
# keyed by the versions pinned in go/*/go.mod, so later runs reuse them.
#
#   e2e/cluster/build-binaries.sh        prints the directory holding the binaries
#
# BUD_CACHE_DIR overrides the cache root (default ~/.cache/bud-foundry).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache_root="${BUD_CACHE_DIR:-$HOME/.cache/bud-foundry}"
# The cache key is a hash of the wrapper modules: a changed pin builds into a new folder.
key="$(cat "$here"/go/*/go.mod "$here"/go/*/go.sum "$here/build-binaries.sh" | sha256sum | cut -c1-16)"
bin="$cache_root/k8s-bin-$key"
k8s_version="$(awk '/^require k8s.io\/kubernetes/ {print $3}' "$here/go/kubernetes/go.mod")"

have_all() {
  for b in kube-apiserver kube-controller-manager kube-scheduler etcd kwok; do
    [ -x "$bin/$b" ] || return 1
  done
}

if ! have_all; then
  mkdir -p "$bin.partial"
  export GOFLAGS="-mod=mod -trimpath"
  export CGO_ENABLED=0
  minor="${k8s_version#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$k8s_version \
    -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor \
    -X k8s.io/component-base/version.gitTreeState=clean"
  echo "building Kubernetes $k8s_version control plane into $bin (first run only; ~15-25 min on 2 cores)" >&2
  (cd "$here/go/etcd" && go build -ldflags "-s -w" -o "$bin.partial/etcd" .)
  (cd "$here/go/kwok" && go build -ldflags "-s -w" -o "$bin.partial/kwok" sigs.k8s.io/kwok/cmd/kwok)
  (cd "$here/go/kubernetes" && for cmd in kube-apiserver kube-controller-manager kube-scheduler; do
     go build -ldflags "$ldflags" -o "$bin.partial/$cmd" "k8s.io/kubernetes/cmd/$cmd"
   done)
  rm -rf "$bin" && mv "$bin.partial" "$bin"
fi
echo "$bin"
