# Production images of bluegreen (the proxy) and demo-app (the sample app that
# plays blue or green), from one Dockerfile:
#
#   docker build --target bluegreen -t bluegreen:dev .
#   docker build --target demo-app  -t bluegreen-demo-app:dev .
#
# Needs BuildKit (Docker 23+ or buildx; DOCKER_BUILDKIT=1 with Docker 20.10).
# Multi-arch: docker buildx build --platform linux/amd64,linux/arm64 ...
# The Go build runs on the build platform and cross-compiles to TARGETOS/TARGETARCH.
# Where golang:* cannot be pulled, pass a local builder image:
#   --build-arg GO_IMAGE=bluegreen-builder:local   (see docker/make-builder-image.sh)

# The Go toolchain image. Pin it by digest in release pipelines:
#   golang:1.26.11-bookworm@sha256:<digest>
ARG GO_IMAGE=golang:1.26.11-bookworm

FROM --platform=$BUILDPLATFORM ${GO_IMAGE} AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
# Modules first: this layer is reused until go.mod or go.sum change, or until
# CACHE_BUST takes a new value (with GO_BUILD_FLAGS=-a: a cold build).
ARG GOPROXY CACHE_BUST
COPY go.mod go.sum ./
RUN go mod download && go mod verify
COPY . .
ARG TARGETOS TARGETARCH
ARG VERSION=dev
# Extra go build flags, e.g. "-a" (rebuild everything).
ARG GO_BUILD_FLAGS=
# Build tags. The default image is the lean one, without the etcd client
# (file state store only); GO_TAGS= (empty) builds the fleet image.
ARG GO_TAGS=noetcd
RUN --mount=type=cache,target=/root/.cache/go-build \
    GOOS=${TARGETOS:-linux} GOARCH=${TARGETARCH} \
    go build -tags "${GO_TAGS}" ${GO_BUILD_FLAGS} -trimpath -ldflags "-s -w -X main.version=${VERSION}" \
      -o /out/ ./cmd/bluegreen ./cmd/demo-app
# What the scratch images need: a passwd/group entry for the non-root user and
# the state and ACME directories it owns (a named volume mounted there copies
# the ownership on first use).
RUN mkdir -p /rootfs/etc /rootfs/state /rootfs/acme \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >/rootfs/etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' >/rootfs/etc/group \
 && cp /etc/ssl/certs/ca-certificates.crt /rootfs/ca-certificates.crt

# Shared by both runtime images.
FROM scratch AS runtime-base
COPY --from=build /rootfs/etc/passwd /rootfs/etc/group /etc/
COPY --from=build /rootfs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ARG VERSION=dev
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
ARG SOURCE=https://github.com/cryoprotect/bluegreen
LABEL org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.url="${SOURCE}" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
USER 65532:65532

# demo-app: the application that plays one colour in demos and compose stacks.
FROM runtime-base AS demo-app
COPY --from=build /out/demo-app /demo-app
LABEL org.opencontainers.image.title="bluegreen-demo-app" \
      org.opencontainers.image.description="Demo application that plays the blue or green deployment behind bluegreen"
ENV PORT=5000
EXPOSE 5000
HEALTHCHECK --interval=5s --timeout=3s --start-period=5s --retries=3 CMD ["/demo-app", "healthcheck"]
ENTRYPOINT ["/demo-app"]

# bluegreen: the proxy (last stage, so a build without --target gives it).
FROM runtime-base AS bluegreen
COPY --from=build --chown=65532:65532 /rootfs/state /state
COPY --from=build --chown=65532:65532 /rootfs/acme /acme
COPY --from=build /out/bluegreen /bluegreen
LABEL org.opencontainers.image.title="bluegreen" \
      org.opencontainers.image.description="Blue/green reverse proxy with health checks, atomic cutover and automatic rollback"
ENV BLUEGREEN_LISTEN=:8080 \
    BLUEGREEN_STATE=file:/state/bluegreen-state.json \
    BLUEGREEN_LOG_FORMAT=json
# 8080: public traffic. 8081: admin API (status, cutover, metrics, /readyz); it
# listens on loopback unless BLUEGREEN_ADMIN_LISTEN=0.0.0.0:8081 and a token
# (BLUEGREEN_ADMIN_TOKEN_FILE=/run/secrets/admin_token) are set.
EXPOSE 8080 8081
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 CMD ["/bluegreen", "healthcheck"]
ENTRYPOINT ["/bluegreen"]
CMD ["serve"]
