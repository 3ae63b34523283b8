#!/usr/bin/env bash
# make-builder-image.sh: create the Go builder image locally, without a registry.
#
# The image holds a copy of a Go toolchain (the go binary is statically linked),
# busybox-static for /bin/sh, the host's CA certificates and passwd/group. It is
# the GO_IMAGE build argument of the Dockerfile on machines that cannot pull
# golang:* images.
#
# Usage: docker/make-builder-image.sh [--force]
#
# Environment:
#   GO_TOOLCHAIN   Go release to pack (default go1.26.11). It is fetched into the
#                  module cache through the Go module proxy (GOTOOLCHAIN=<it>) when
#                  the host's own Go is a different release.
#   BUILDER_IMAGE  tag of the image (default bluegreen-builder:local)
#   DOCKER         docker CLI to use (default: docker from PATH)
#
# Needs: go, docker, tar, /bin/busybox (Debian: apt-get install busybox-static),
# /etc/ssl/certs/ca-certificates.crt (Debian: ca-certificates).
set -euo pipefail

GO_TOOLCHAIN="${GO_TOOLCHAIN:-go1.26.11}"
BUILDER_IMAGE="${BUILDER_IMAGE:-bluegreen-builder:local}"
DOCKER="${DOCKER:-docker}"
BUSYBOX="${BUSYBOX:-/bin/busybox}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
force=false
case "${1:-}" in
  --force) force=true ;;
  "") ;;
  *) echo "usage: $0 [--force]" >&2; exit 2 ;;
esac

golang_version="${GO_TOOLCHAIN#go}"

# An image already made for this toolchain is reused.
if ! $force && existing=$("$DOCKER" image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$BUILDER_IMAGE" 2>/dev/null); then
  if grep -qx "GOLANG_VERSION=$golang_version" <<<"$existing"; then
    echo "builder image $BUILDER_IMAGE ($GO_TOOLCHAIN) already exists; --force to remake it"
    exit 0
  fi
fi

for f in "$BUSYBOX" "$CA_BUNDLE"; do
  [ -r "$f" ] || { echo "missing $f (Debian: apt-get install busybox-static ca-certificates)" >&2; exit 1; }
done
"$BUSYBOX" --list >/dev/null 2>&1 || { echo "$BUSYBOX is not a working busybox" >&2; exit 1; }
# The image has no libc: busybox must be the static build.
case "$(ldd "$BUSYBOX" 2>&1 || true)" in
  *"not a dynamic executable"*|*"statically linked"*) ;;
  *) echo "$BUSYBOX is dynamically linked; install busybox-static" >&2; exit 1 ;;
esac

# The toolchain: GOTOOLCHAIN=<release> makes the go command fetch that release
# into the module cache (or use the host's Go when it is that release).
goroot=$(GOTOOLCHAIN="$GO_TOOLCHAIN" go env GOROOT)
got=$("$goroot/bin/go" env GOVERSION)
if [ "$got" != "$GO_TOOLCHAIN" ]; then
  echo "toolchain at $goroot is $got, wanted $GO_TOOLCHAIN" >&2; exit 1
fi

start=$(date +%s)
root=$(mktemp -d)
trap 'chmod -R u+w "$root" 2>/dev/null; rm -rf "$root"' EXIT
mkdir -p "$root"/{bin,etc/ssl/certs,tmp,root,go/bin,go/src,usr/local,usr/bin,home/nonroot}
chmod 1777 "$root/tmp" "$root/go" "$root/go/bin" "$root/go/src"
chmod 700 "$root/root"

cp -a "$goroot" "$root/usr/local/go"
chmod -R u+w "$root/usr/local/go"

cp "$BUSYBOX" "$root/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
ln -s ../../bin/env "$root/usr/bin/env"

cp "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
cat >"$root/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
nonroot:x:65532:65532:nonroot:/home/nonroot:/bin/false
PASSWD
cat >"$root/etc/group" <<'GROUP'
root:x:0:
nogroup:x:65534:
nonroot:x:65532:
GROUP
echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
chown 65532:65532 "$root/home/nonroot"

tar --numeric-owner -C "$root" -cf - . | "$DOCKER" import \
  -c 'ENV PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c "ENV GOLANG_VERSION=$golang_version" \
  -c 'ENV GOPATH=/go' \
  -c 'ENV GOTOOLCHAIN=local' \
  -c 'WORKDIR /go' \
  -c 'CMD ["/bin/sh"]' \
  -m "Go $golang_version builder (local import)" \
  - "$BUILDER_IMAGE" >/dev/null

"$DOCKER" run --rm --network none "$BUILDER_IMAGE" go version
echo "built $BUILDER_IMAGE in $(( $(date +%s) - start ))s, $("$DOCKER" image inspect -f '{{.Size}}' "$BUILDER_IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
