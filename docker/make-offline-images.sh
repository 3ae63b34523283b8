#!/usr/bin/env bash
# make-offline-images.sh: Prometheus and etcd images made from Debian's
# packages, for air-gapped sites that cannot pull prom/prometheus or
# quay.io/coreos/etcd. Like make-builder-image.sh, it packs binaries (and the
# shared libraries they link) into a tar and pipes it to `docker import`.
#
#   apt-get install -y --no-install-recommends prometheus etcd-server etcd-client busybox-static ca-certificates
#   docker/make-offline-images.sh                  # both images
#   docker/make-offline-images.sh prometheus       # or only one
#
# Images and how the compose files take them:
#   bluegreen-prometheus:debian   PROMETHEUS_IMAGE=bluegreen-prometheus:debian (profile monitoring)
#   bluegreen-etcd:debian         ETCD_IMAGE=bluegreen-etcd:debian (compose.fleet.yml)
# Both have busybox (/bin/sh, wget) for the compose health checks. Versions
# are Debian's (bookworm: Prometheus 2.42, etcd 3.4), older than the
# registry tags the compose files name. Grafana has no Debian package: the
# monitoring profile's Grafana still needs its registry image (or leave it
# out: `up -d prometheus`).
#
# Environment: DOCKER (docker CLI), BUSYBOX (/bin/busybox), TAG (debian).
set -euo pipefail
DOCKER="${DOCKER:-docker}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
TAG="${TAG:-debian}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(prometheus etcd)

[ "$(id -u)" = 0 ] || { echo "run as root (the images' data directories are chowned)" >&2; exit 1; }
need() { command -v "$1" >/dev/null || { echo "missing $1 (Debian: apt-get install $2)" >&2; exit 1; }; }
[ -x "$BUSYBOX" ] || { echo "missing $BUSYBOX (Debian: apt-get install busybox-static)" >&2; exit 1; }

# copy_bin FILE ROOT DEST: the binary and every library ldd lists, at the
# same paths (so the dynamic loader finds them).
copy_bin() {
  local f="$1" root="$2" dest="$3" lib
  install -D -m 0755 "$f" "$root$dest"
  for lib in $(ldd "$f" 2>/dev/null | grep -o '/[^ ]*' || true); do
    [ -e "$root$lib" ] || install -D -m 0755 "$(readlink -f "$lib")" "$root$lib"
  done
}

base_rootfs() { # ROOT
  local root="$1"
  mkdir -p "$root"/{bin,etc/ssl/certs,tmp}
  chmod 1777 "$root/tmp"
  cp "$BUSYBOX" "$root/bin/busybox"
  for a in sh wget; do ln -s busybox "$root/bin/$a"; done
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/" 2>/dev/null || true
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\nnonroot:x:65532:\n' >"$root/etc/group"
}

for target in "${targets[@]}"; do
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  base_rootfs "$root"
  previous=$("$DOCKER" image inspect -f '{{.Id}}' "bluegreen-$target:$TAG" 2>/dev/null || true)
  case "$target" in
    prometheus)
      need prometheus prometheus
      copy_bin "$(command -v prometheus)" "$root" /bin/prometheus
      command -v promtool >/dev/null && copy_bin "$(command -v promtool)" "$root" /bin/promtool
      mkdir -p "$root/etc/prometheus" "$root/prometheus"
      version=$(prometheus --version 2>&1 | awk 'NR==1{print $3}')
      image="bluegreen-prometheus:$TAG"
      # The data directory belongs to nobody, the image's user, so a new
      # named volume mounted there does too (chown: run as root).
      chown 65534:65534 "$root/prometheus"
      tar -C "$root" --numeric-owner -cf - . |
        "$DOCKER" import \
          -c 'USER 65534:65534' -c 'WORKDIR /prometheus' -c 'EXPOSE 9090' \
          -c 'ENV PATH=/bin' \
          -c 'ENTRYPOINT ["/bin/prometheus"]' \
          -c 'CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]' \
          -c "LABEL org.opencontainers.image.version=$version org.opencontainers.image.title=prometheus-debian" \
          - "$image" >/dev/null
      ;;
    etcd)
      need etcd etcd-server
      need etcdctl etcd-client
      copy_bin "$(command -v etcd)" "$root" /usr/local/bin/etcd
      copy_bin "$(command -v etcdctl)" "$root" /usr/local/bin/etcdctl
      mkdir -p "$root/var/lib/etcd"
      version=$(etcd --version 2>&1 | awk '/etcd Version/{print $3}')
      image="bluegreen-etcd:$TAG"
      chown 65532:65532 "$root/var/lib/etcd"
      tar -C "$root" --numeric-owner -cf - . |
        "$DOCKER" import \
          -c 'USER 65532:65532' -c 'EXPOSE 2379 2380' \
          -c 'ENV PATH=/usr/local/bin:/bin ETCDCTL_API=3' \
          -c 'ENTRYPOINT ["/usr/local/bin/etcd"]' \
          -c "LABEL org.opencontainers.image.version=$version org.opencontainers.image.title=etcd-debian" \
          - "$image" >/dev/null
      ;;
    *) echo "unknown image $target (prometheus or etcd)" >&2; exit 2 ;;
  esac
  rm -rf "$root"
  trap - EXIT
  # The image the tag named before is removed when nothing else uses it.
  if [ -n "${previous:-}" ] && [ "$("$DOCKER" image inspect -f '{{len .RepoTags}}' "$previous" 2>/dev/null)" = 0 ]; then
    "$DOCKER" image rm "$previous" >/dev/null 2>&1 || true
  fi
  echo "made $image (version $version, $("$DOCKER" image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
done
