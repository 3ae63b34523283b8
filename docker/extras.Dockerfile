# Images of the logging-lite and backup profiles, from static binaries built
# on the host with Go (docker/build-extras.sh makes the context): no registry,
# no base image.
#
#   victorialogs  VictoriaLogs (log store with LogsQL, the Elasticsearch bulk
#                 API and JSON lines), with logship for its health check
#   logship       the log shipper (docker/tools/logship)
#   backup        snapshots and restores of the proxy's state (docker/tools/stateback)

FROM scratch AS base
COPY passwd group /etc/
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY logship /logship
ARG SOURCE=https://github.com/cryoprotect/bluegreen
LABEL org.opencontainers.image.source="${SOURCE}"
USER 65532:65532

FROM base AS logship
# Positions of what was shipped (a named volume mounted here keeps them).
COPY --chown=65532:65532 empty/ /var/lib/logship/
LABEL org.opencontainers.image.title="bluegreen-logship" \
      org.opencontainers.image.description="Ships a compose project's container logs to VictoriaLogs or Elasticsearch"
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 CMD ["/logship", "probe", "http://127.0.0.1:9400/healthz"]
ENTRYPOINT ["/logship"]

FROM base AS backup
COPY stateback /stateback
# Owned by the container user, so new named volumes mounted here are too.
COPY --chown=65532:65532 empty/ /state/
COPY --chown=65532:65532 empty/ /backups/
LABEL org.opencontainers.image.title="bluegreen-backup" \
      org.opencontainers.image.description="Scheduled snapshots of the bluegreen state volume, with retention and restore"
ENTRYPOINT ["/stateback"]
CMD ["loop"]

# Last: the classic builder builds every stage before --target, and only
# this one needs the VictoriaLogs binary (TARGETS without victorialogs).
FROM base AS victorialogs
ARG VICTORIALOGS_VERSION=unknown
COPY victoria-logs /victoria-logs
# The data directory belongs to the container user, so a new named volume
# mounted there does too.
COPY --chown=65532:65532 empty/ /vlogs/
LABEL org.opencontainers.image.title="victorialogs" \
      org.opencontainers.image.version="${VICTORIALOGS_VERSION}" \
      org.opencontainers.image.description="VictoriaLogs built from source with the bluegreen logging-lite profile"
EXPOSE 9428
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["/logship", "probe", "http://127.0.0.1:9428/health"]
ENTRYPOINT ["/victoria-logs"]
CMD ["-storageDataPath=/vlogs", "-httpListenAddr=:9428"]
