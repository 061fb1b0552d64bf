#!/usr/bin/env bash
# Builds the test control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl, etcd, kwok, metrics-server, helm), the real
# node's kubelet and kube-proxy, promtool, the Redis exporter and
# kube-router (the NetworkPolicy enforcer) from Go modules, and takes
# cert-manager's CRDs from its module.
# Output: $TOOLS_CACHE/bin-<hash of versions.env>/, printed on the last line.
# A warm cache rebuilds nothing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"
cache="${TOOLS_CACHE:-$HOME/.cache/redis-operator-tools}"
mkdir -p "$cache"
cache="$(cd "$cache" && pwd)" # GOCACHE must be absolute
key="$(grep -v "^#" "$here/versions.env" | sha256sum | cut -c1-12)"
bin="$cache/bin-$key"
mkdir -p "$bin"
export GOFLAGS="-buildvcs=false -trimpath"
export CGO_ENABLED=0
# A build cache of our own: it grows to several GB and is dropped once every
# binary exists, so that a CI machine has that disk for the Rust build.
export GOCACHE="$cache/go-build"

log() { echo "[build-tools] $*" >&2; }

# Runs "$@" and logs how long it took (cold builds take minutes each).
timed() {
  local what="$1" t0=$SECONDS
  shift
  log "$what ..."
  "$@"
  log "$what: done in $((SECONDS - t0)) s"
}

K8S_COMPONENTS="kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy"

have_all() {
  for b in $K8S_COMPONENTS etcd kwok metrics-server helm promtool prometheus redis_exporter kube-router; do
    [ -x "$bin/$b" ] || return 1
  done
  [ -f "$bin/cert-manager-crds/cert-manager.io_certificates.yaml" ]
}

if have_all; then
  echo "$bin"
  exit 0
fi

build_kubernetes() {
  local c missing=0
  for c in $K8S_COMPONENTS; do [ -x "$bin/$c" ] || missing=1; done
  [ "$missing" = 0 ] && return 0
  local mod="$cache/src/kubernetes-$KUBERNETES_VERSION"
  mkdir -p "$mod"
  log "kubernetes $KUBERNETES_VERSION: preparing wrapper module in $mod"
  (
    cd "$mod"
    local kmod
    kmod="$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    # k/k requires every staging module at v0.0.0 and replaces it with a local
    # path; a wrapper module must point each one at its published version.
    {
      echo "module redis-operator.test/kubernetes-tools"
      echo
      echo "go $(sed -n 's/^go \(.*\)/\1/p' "$kmod")"
      echo
      sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#replace \1 => \1 '"$KUBERNETES_STAGING_VERSION"'#p' "$kmod"
    } >go.mod
    cat >tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kube-scheduler"
	_ "k8s.io/kubernetes/cmd/kubectl"
	_ "k8s.io/kubernetes/cmd/kubelet"
	_ "k8s.io/kubernetes/cmd/kube-proxy"
)
GO
    go get "k8s.io/kubernetes@$KUBERNETES_VERSION"
    go mod tidy -e >/dev/null 2>&1 || true
    local minor="${KUBERNETES_VERSION#v1.}"
    minor="${minor%%.*}"
    local ld="-s -w -X k8s.io/component-base/version.gitVersion=$KUBERNETES_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
    for c in $K8S_COMPONENTS; do
      [ -x "$bin/$c" ] && continue
      timed "building $c" go build -ldflags "$ld" -o "$bin/$c.tmp" "k8s.io/kubernetes/cmd/$c"
      mv "$bin/$c.tmp" "$bin/$c"
    done
  )
}

build_etcd() {
  [ -x "$bin/etcd" ] && return 0
  local mod="$cache/src/etcd-$ETCD_VERSION"
  mkdir -p "$mod"
  log "etcd $ETCD_VERSION"
  (
    cd "$mod"
    [ -f go.mod ] || go mod init redis-operator.test/etcd-tools >/dev/null 2>&1
    cat >tools.go <<'GO'
//go:build tools

package tools

import _ "go.etcd.io/etcd/server/v3"
GO
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    timed "building etcd" go build -ldflags "-s -w" -o "$bin/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$bin/etcd.tmp" "$bin/etcd"
  )
}

go_install() { # name package version ldflags
  local name="$1" pkg="$2" version="$3" ld="${4:-}"
  [ -x "$bin/$name" ] && return 0
  timed "building $name $version" env GOBIN="$bin" go install -ldflags "-s -w $ld" "$pkg@$version"
}

build_kubernetes
build_etcd
go_install kwok sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION"
go_install metrics-server sigs.k8s.io/metrics-server/cmd/metrics-server "$METRICS_SERVER_VERSION"
go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" \
  "-X helm.sh/helm/v3/pkg/chartutil.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/chartutil.k8sVersionMinor=36 -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
go_install promtool github.com/prometheus/prometheus/cmd/promtool "$PROMETHEUS_VERSION"
# The real-node tier scrapes the exporters, the operator and the webhook
# with it, and evaluates the chart's alerts (its web UI is not needed).
go_install prometheus github.com/prometheus/prometheus/cmd/prometheus "$PROMETHEUS_VERSION"
# Through a wrapper module: `go install pkg@version` asks the proxy for the
# module's version list (for deprecations), which it refuses for this one.
build_redis_exporter() {
  [ -x "$bin/redis_exporter" ] && return 0
  local mod="$cache/src/redis_exporter-$REDIS_EXPORTER_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    [ -f go.mod ] || go mod init redis-operator.test/redis-exporter >/dev/null 2>&1
    go get "github.com/oliver006/redis_exporter@$REDIS_EXPORTER_VERSION" >/dev/null 2>&1
    timed "building redis_exporter $REDIS_EXPORTER_VERSION" go build \
      -ldflags "-s -w -X main.BuildVersion=$REDIS_EXPORTER_VERSION" \
      -o "$bin/redis_exporter.tmp" github.com/oliver006/redis_exporter
    mv "$bin/redis_exporter.tmp" "$bin/redis_exporter"
  )
}
build_redis_exporter
# Also through a wrapper module (the same refusal).
build_kube_router() {
  [ -x "$bin/kube-router" ] && return 0
  local mod="$cache/src/kube-router-$KUBE_ROUTER_VERSION"
  mkdir -p "$mod"
  (
    cd "$mod"
    [ -f go.mod ] || go mod init redis-operator.test/kube-router >/dev/null 2>&1
    go get "github.com/cloudnativelabs/kube-router/v2/cmd/kube-router@$KUBE_ROUTER_VERSION" >/dev/null 2>&1
    timed "building kube-router $KUBE_ROUTER_VERSION" go build \
      -ldflags "-s -w -X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION" \
      -o "$bin/kube-router.tmp" github.com/cloudnativelabs/kube-router/v2/cmd/kube-router
    mv "$bin/kube-router.tmp" "$bin/kube-router"
  )
}
build_kube_router
# cert-manager's CRDs, as its module ships them (plain YAML, no templating).
fetch_cert_manager_crds() {
  [ -f "$bin/cert-manager-crds/cert-manager.io_certificates.yaml" ] && return 0
  local dir
  dir="$(go mod download -json "github.com/cert-manager/cert-manager@$CERT_MANAGER_VERSION" \
    | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  rm -rf "$bin/cert-manager-crds.tmp" && mkdir -p "$bin/cert-manager-crds.tmp"
  cp "$dir"/deploy/crds/cert-manager.io_*.yaml "$bin/cert-manager-crds.tmp/"
  chmod u+w "$bin"/cert-manager-crds.tmp/*
  mv "$bin/cert-manager-crds.tmp" "$bin/cert-manager-crds"
  log "cert-manager $CERT_MANAGER_VERSION CRDs: done"
}
fetch_cert_manager_crds

have_all
rm -rf "$GOCACHE"
echo "$bin"
