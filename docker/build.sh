#!/usr/bin/env bash
# build.sh: build the two images from the Dockerfile with BuildKit:
#   bluegreen:<TAG>            the proxy
#   bluegreen-demo-app:<TAG>   the demo application (plays blue and green)
#
# Usage: docker/build.sh [TAG]        (default TAG: latest)
#
# Environment:
#   VERSION        version stamped into the binary and the labels (default: TAG)
#   GO_IMAGE       builder image (default: bluegreen-builder:local when it
#                  exists, made by docker/make-builder-image.sh; otherwise the
#                  Dockerfile's default golang image)
#   PLATFORM       target platform, e.g. linux/arm64 (default: the engine's)
#   BUILD_NETWORK  network of RUN steps (default host: go mod download reaches
#                  the Go module proxy with the host's name resolution)
#   IMAGE_PREFIX   prefix of the image names (default: none, e.g. ghcr.io/org/)
#   DOCKER         docker CLI (default: one that can run BuildKit)
#   TARGETS        images to build (default: "bluegreen demo-app")
#   GO_BUILD_FLAGS extra go build flags (e.g. -a)
#   FLEET=1        build the fleet proxy image, with the etcd client, tagged
#                  bluegreen:<TAG>-fleet (the default image has the file
#                  state store only and stays small)
#   COLD=1         a cold build: modules downloaded and every package compiled
#                  again; the images still share one build stage
#   NO_CACHE=1     docker build --no-cache for every target
#   BUILD_LOG      file the build output is appended to (default: stderr)
set -euo pipefail
cd "$(dirname "$0")/.."

TAG="${1:-${TAG:-latest}}"
VERSION="${VERSION:-$TAG}"
BUILD_NETWORK="${BUILD_NETWORK:-host}"
IMAGE_PREFIX="${IMAGE_PREFIX:-}"
TARGETS="${TARGETS:-bluegreen demo-app}"

# BuildKit: Docker 23+ and buildx use it by default; a 20.10 CLI needs
# DOCKER_BUILDKIT=1. A newer CLI without the buildx plugin cannot use it at all,
# so prefer one that can.
if [ -z "${DOCKER:-}" ]; then
  DOCKER=docker
  if ! docker buildx version >/dev/null 2>&1; then
    for d in $(type -ap docker); do
      case "$("$d" version --format '{{.Client.Version}}' 2>/dev/null)" in
        20.10.*|19.03.*|18.09.*) DOCKER="$d"; break ;;
      esac
    done
  fi
fi
export DOCKER_BUILDKIT=1

if [ -z "${GO_IMAGE:-}" ] && "$DOCKER" image inspect bluegreen-builder:local >/dev/null 2>&1; then
  GO_IMAGE=bluegreen-builder:local
fi

args=(--network "$BUILD_NETWORK"
  --build-arg "VERSION=$VERSION"
  --build-arg "REVISION=${REVISION:-$(git rev-parse HEAD 2>/dev/null || echo unknown)}"
  --build-arg "CREATED=${CREATED:-$(TZ=UTC git log -1 --format=%cd --date=format-local:%Y-%m-%dT%H:%M:%SZ 2>/dev/null || TZ=UTC date +%Y-%m-%dT%H:%M:%SZ)}")
[ -n "${GO_IMAGE:-}" ] && args+=(--build-arg "GO_IMAGE=$GO_IMAGE")
[ -n "${GOPROXY:-}" ] && args+=(--build-arg "GOPROXY=$GOPROXY")
# COLD=1: download the modules again and compile every package again (the
# standard library included), as a fresh machine does, while the results
# still land in the shared caches (unlike --no-cache).
if [ "${COLD:-0}" = 1 ]; then
  GO_BUILD_FLAGS="-a${GO_BUILD_FLAGS:+ $GO_BUILD_FLAGS}"
  args+=(--build-arg "CACHE_BUST=$(date +%s%N)")
fi
[ -n "${GO_BUILD_FLAGS:-}" ] && args+=(--build-arg "GO_BUILD_FLAGS=$GO_BUILD_FLAGS")
suffix=""
if [ "${FLEET:-0}" = 1 ]; then
  args+=(--build-arg "GO_TAGS=")
  suffix="-fleet"
fi
[ -n "${SOURCE:-}" ] && args+=(--build-arg "SOURCE=$SOURCE")
[ -n "${PLATFORM:-}" ] && args+=(--platform "$PLATFORM")
# --no-cache also gives the Go build a new, empty cache mount: every target
# then compiles everything again.
[ "${NO_CACHE:-0}" = 1 ] && args+=(--no-cache)

echo "build: $DOCKER (BuildKit), builder ${GO_IMAGE:-Dockerfile default}, version $VERSION${PLATFORM:+, platform $PLATFORM}"
total_start=$(date +%s.%N)
for target in $TARGETS; do
  case "$target" in
    bluegreen) image="${IMAGE_PREFIX}bluegreen:$TAG$suffix" ;;
    demo-app) image="${IMAGE_PREFIX}bluegreen-demo-app:$TAG" ;;
    *) echo "unknown target $target" >&2; exit 2 ;;
  esac
  start=$(date +%s.%N)
  previous=$("$DOCKER" image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)
  if ! "$DOCKER" build --progress "${PROGRESS:-plain}" "${args[@]}" --target "$target" -t "$image" . >>"${BUILD_LOG:-/dev/stderr}" 2>&1; then
    echo "build: $target failed${BUILD_LOG:+ (log: $BUILD_LOG)}" >&2
    [ -n "${BUILD_LOG:-}" ] && tail -n 40 "$BUILD_LOG" >&2
    exit 1
  fi
  # The image the tag named before, if nothing else uses it, would be left
  # dangling (<none>): remove it.
  if [ -n "$previous" ] && [ "$previous" != "$("$DOCKER" image inspect -f '{{.Id}}' "$image")" ] &&
     [ "$("$DOCKER" image inspect -f '{{len .RepoTags}}' "$previous" 2>/dev/null)" = 0 ]; then
    "$DOCKER" image rm "$previous" >/dev/null 2>&1 || true
  fi
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')
  size=$("$DOCKER" image inspect -f '{{.Size}}' "$image" | awk '{printf "%.1f MB", $1/1e6}')
  arch=$("$DOCKER" image inspect -f '{{.Os}}/{{.Architecture}}' "$image")
  echo "build: $image  $size  $arch  ${secs}s"
done
echo "build: total $(awk -v a="$total_start" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}')s"
