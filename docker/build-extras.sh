#!/usr/bin/env bash
# build-extras.sh: build the images of the logging-lite and backup profiles
# without a registry, from static binaries built on the host:
#
#   bluegreen-victorialogs:<VICTORIALOGS_VERSION>  VictoriaLogs, compiled from
#       github.com/VictoriaMetrics/VictoriaLogs through the Go module proxy
#       (about 30 s to a few minutes on 2 cores)
#   bluegreen-logship:<TAG>   the log shipper (docker/tools/logship)
#   bluegreen-backup:<TAG>    state snapshots and restore (docker/tools/stateback)
#
# Usage: docker/build-extras.sh [TAG]    (default TAG: latest)
# TARGETS="logship backup" skips VictoriaLogs.
#
# Environment:
#   VICTORIALOGS_VERSION  release to build (default v1.52.2)
#   IMAGE_PREFIX          prefix of the image names (default: none)
#   DOCKER                docker CLI (default: docker)
# Needs go (1.25 or later) and /etc/ssl/certs/ca-certificates.crt.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${1:-latest}"
VICTORIALOGS_VERSION="${VICTORIALOGS_VERSION:-v1.52.2}"
IMAGE_PREFIX="${IMAGE_PREFIX:-}"
TARGETS="${TARGETS:-victorialogs logship backup}"
DOCKER="${DOCKER:-docker}"
ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT

export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:-} -buildvcs=false"
t=$(date +%s)
# go install into a directory of its own: the version is the module's, not
# this repository's go.mod.
case " $TARGETS " in *" victorialogs "*)
  GOBIN="$ctx" go install -trimpath -ldflags '-s -w' \
    "github.com/VictoriaMetrics/VictoriaLogs/app/victoria-logs@$VICTORIALOGS_VERSION" ;;
esac
go build -trimpath -ldflags '-s -w' -o "$ctx/" ./docker/tools/logship ./docker/tools/stateback
echo "extras build: binaries in $(( $(date +%s) - t ))s"

mkdir -p "$ctx/empty"
cp docker/extras.Dockerfile "$ctx/Dockerfile"
cp /etc/ssl/certs/ca-certificates.crt "$ctx/"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >"$ctx/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$ctx/group"

for target in $TARGETS; do
  case "$target" in
    victorialogs) img="${IMAGE_PREFIX}bluegreen-victorialogs:$VICTORIALOGS_VERSION" ;;
    logship|backup) img="${IMAGE_PREFIX}bluegreen-$target:$TAG" ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
  esac
  previous=$("$DOCKER" image inspect -f '{{.Id}}' "$img" 2>/dev/null || true)
  DOCKER_BUILDKIT=0 "$DOCKER" build -q --target "$target" --build-arg "VICTORIALOGS_VERSION=$VICTORIALOGS_VERSION" \
    -t "$img" "$ctx" >/dev/null 2>"$ctx/build.log" || { cat "$ctx/build.log" >&2; exit 1; }
  # The image the tag named before is removed when nothing else uses it (no
  # dangling images).
  if [ -n "$previous" ] && [ "$("$DOCKER" image inspect -f '{{len .RepoTags}}' "$previous" 2>/dev/null)" = 0 ]; then
    "$DOCKER" image rm "$previous" >/dev/null 2>&1 || true
  fi
  echo "extras build: $img $("$DOCKER" image inspect -f '{{.Size}}' "$img" | awk '{printf "%.1f MB", $1/1e6}')"
done
