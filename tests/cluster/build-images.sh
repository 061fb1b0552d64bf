#!/usr/bin/env bash
# `make image`: OCI images without Docker (umoci builds, skopeo exports), as
# docker-archive tarballs that `ctr -n k8s.io images import` accepts.
#
#   redis-operator.tar  the product: both release binaries, the same layout,
#                       user and entrypoint as the Dockerfile (checked by
#                       tests/tests/images.rs and again below on the result)
#   pause.tar           the sandbox image, from Kubernetes' build/pause/linux/pause.c
#   redis-debian.tar    TEST ONLY: Debian's redis-server, redis-cli and
#                       redis-benchmark with their libraries, and busybox
#                       for the `sh -c` the operator's pods run
#   curl-debian.tar     TEST ONLY: Debian's curl and busybox, for `helm test`
#   redis-exporter.tar  TEST ONLY: the Redis exporter sidecar, built from its
#                       Go module by build-tools.sh (the chart's default is
#                       the upstream image)
#
# Usage: build-images.sh <release binary dir> <output dir>
# The last line printed is the output dir; each image's name and size before it.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
# shellcheck source=versions.env
source "$here/versions.env"

# The product image's contract with the Dockerfile (tests/tests/images.rs
# reads these three lines and the Dockerfile and compares them).
PRODUCT_BIN_DIR=/usr/local/bin
PRODUCT_USER=65532:65532
PRODUCT_ENTRYPOINT=/usr/local/bin/redis-operator

bins="${1:?usage: build-images.sh <release binary dir> <output dir>}"
out="${2:?usage: build-images.sh <release binary dir> <output dir>}"
mkdir -p "$out"
out="$(cd "$out" && pwd)"
work="$(mktemp -d "${TMPDIR:-/tmp}/redis-operator-images.XXXXXX")"
trap 'rm -rf "$work"' EXIT

log() { echo "[build-images] $*" >&2; }
for tool in umoci skopeo gcc ldd busybox; do
  command -v "$tool" >/dev/null || { log "$tool is missing: run 'make deps'"; exit 1; }
done
[ -x /bin/busybox ] || { log "/bin/busybox (busybox-static) is missing: run 'make deps'"; exit 1; }

app_version="$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$root/charts/redis-operator/Chart.yaml")"
pause_tag="$(sed -n 's/^TAG ?= *//p' "$(go env GOMODCACHE)/k8s.io/kubernetes@$KUBERNETES_VERSION/build/pause/Makefile" 2>/dev/null || true)"
redis_version="$(dpkg-query -W -f '${Version}' redis-server | sed 's/^[0-9]*://; s/-.*//')"
curl_version="$(dpkg-query -W -f '${Version}' curl | sed 's/^[0-9]*://; s/-.*//')"
tools_bin="$(bash "$here/build-tools.sh" | tail -1)"

# Copies every library `ldd` names for a binary into rootfs, at the same path.
copy_libs() { # rootfs binary
  local rootfs="$1" lib
  for lib in $(ldd "$2" 2>/dev/null | grep -o '/[^ ]*' || true); do
    [ -e "$rootfs$lib" ] && continue
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
}

# Copies each binary to the same path in rootfs, with its libraries.
copy_with_libs() { # rootfs binary...
  local rootfs="$1" f
  shift
  for f in "$@"; do
    mkdir -p "$rootfs$(dirname "$f")"
    cp -L "$f" "$rootfs$f"
    copy_libs "$rootfs" "$f"
  done
}

# /etc/passwd and /etc/group as distroless has them (root, nobody, nonroot).
write_users() { # rootfs
  local rootfs="$1"
  mkdir -p "$rootfs/etc" "$rootfs/home/nonroot" "$rootfs/tmp"
  cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
  chown 65532:65532 "$rootfs/home/nonroot"
  chmod 1777 "$rootfs/tmp"
}

# Adds busybox as /bin/sh and the few applets the tests use.
add_busybox() { # rootfs
  local rootfs="$1" a
  mkdir -p "$rootfs/bin"
  cp /bin/busybox "$rootfs/bin/busybox"
  for a in sh cat echo sleep ls grep seq date; do ln -sf busybox "$rootfs/bin/$a"; done
}

# build NAME REF FILL [umoci config args...]: a one-layer image whose rootfs
# FILL populates, exported to $out/NAME.tar as REF.
build() {
  local name="$1" ref="$2" fill="$3" t0=$SECONDS
  shift 3
  local layout="$work/$name-oci" bundle="$work/$name-bundle"
  umoci init --layout "$layout"
  umoci new --image "$layout:latest"
  umoci unpack --image "$layout:latest" "$bundle" >/dev/null
  "$fill" "$bundle/rootfs"
  umoci repack --image "$layout:latest" "$bundle"
  umoci config --image "$layout:latest" --os linux --architecture amd64 "$@"
  rm -f "$out/$name.tar"
  skopeo copy --quiet "oci:$layout:latest" "docker-archive:$out/$name.tar:$ref"
  log "$ref -> $out/$name.tar: $(du -h "$out/$name.tar" | cut -f1) ($((SECONDS - t0)) s)"
}

fill_product() {
  local rootfs="$1"
  write_users "$rootfs"
  mkdir -p "$rootfs$PRODUCT_BIN_DIR"
  for b in redis-operator redis-webhook; do
    cp "$bins/$b" "$rootfs$PRODUCT_BIN_DIR/$b"
    copy_libs "$rootfs" "$bins/$b"
  done
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$rootfs/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
  fi
}

fill_pause() {
  local rootfs="$1"
  gcc -Os -Wall -Werror -static "-DVERSION=v$pause_tag-local" \
    -o "$rootfs/pause" "$(go env GOMODCACHE)/k8s.io/kubernetes@$KUBERNETES_VERSION/build/pause/linux/pause.c"
  strip "$rootfs/pause"
}

fill_redis() {
  local rootfs="$1"
  write_users "$rootfs"
  add_busybox "$rootfs"
  copy_with_libs "$rootfs" /usr/bin/redis-server /usr/bin/redis-cli /usr/bin/redis-benchmark
  mkdir -p "$rootfs/data" "$rootfs/etc/redis"
}

fill_exporter() {
  local rootfs="$1"
  write_users "$rootfs"
  cp "$tools_bin/redis_exporter" "$rootfs/redis_exporter"
}

fill_curl() {
  local rootfs="$1"
  write_users "$rootfs"
  add_busybox "$rootfs"
  copy_with_libs "$rootfs" /usr/bin/curl
}

[ -x "$bins/redis-operator" ] && [ -x "$bins/redis-webhook" ] ||
  { log "release binaries missing in $bins: run 'make release'"; exit 1; }
[ -n "$pause_tag" ] || { log "k8s.io/kubernetes@$KUBERNETES_VERSION is not in the Go module cache: run 'make cluster-tools'"; exit 1; }
for p in redis-server redis-tools curl; do
  dpkg -s "$p" >/dev/null 2>&1 || { log "Debian package $p is missing: run 'make deps'"; exit 1; }
done

build redis-operator "localhost/redis-operator:$app_version" fill_product \
  --config.user "$PRODUCT_USER" --config.entrypoint "$PRODUCT_ENTRYPOINT" --config.workingdir /
build pause "localhost/pause:$pause_tag-local" fill_pause \
  --config.user 65535:65535 --config.entrypoint /pause
build redis-debian "localhost/redis-debian-test:$redis_version" fill_redis \
  --config.user 999:999 --config.entrypoint redis-server --config.workingdir /data \
  --config.env PATH=/usr/bin:/bin
build curl-debian "localhost/curl-debian-test:$curl_version" fill_curl \
  --config.user 65532:65532 --config.entrypoint /bin/sh --config.env PATH=/usr/bin:/bin
build redis-exporter "localhost/redis-exporter-test:$REDIS_EXPORTER_VERSION" fill_exporter \
  --config.user 65534:65534 --config.entrypoint /redis_exporter

# The product image must say what the Dockerfile says.
config="$(skopeo inspect --config "docker-archive:$out/redis-operator.tar")"
for want in "\"User\": \"$PRODUCT_USER\"" "\"$PRODUCT_ENTRYPOINT\""; do
  grep -qF "$want" <<<"$config" || { log "the product image's config lacks $want:"; echo "$config" >&2; exit 1; }
done

# Names for the tests and the demo (KEY=image reference).
cat >"$out/images.env" <<EOF
PRODUCT_IMAGE=localhost/redis-operator:$app_version
PAUSE_IMAGE=localhost/pause:$pause_tag-local
REDIS_IMAGE=localhost/redis-debian-test:$redis_version
CURL_IMAGE=localhost/curl-debian-test:$curl_version
EXPORTER_IMAGE=localhost/redis-exporter-test:$REDIS_EXPORTER_VERSION
EOF
echo "$out"
