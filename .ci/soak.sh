#!/usr/bin/env bash
# CI stage: a 60-second soak of the real binaries (bench/soak): keep-alive load
# through bluegreen while it cuts over at random and one demo-app instance at a
# time is killed and restarted. Prints the Markdown report; fails on any failed
# GET, or when the proxy's goroutines or open fds at rest grew by more than 20.
# The 10-minute run and how to read the report: bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
case " ${GOFLAGS:-} " in
  *" -buildvcs=false "*) ;;
  *) export GOFLAGS="${GOFLAGS:-} -buildvcs=false" ;;
esac

# Built and started here rather than with `go run`, so that a SIGTERM or
# SIGINT sent to this script (a CI timeout) reaches the soak, which then stops
# every process it started before it exits.
bin=$(mktemp -d /tmp/bluegreen-soak-ci.XXXXXX)
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/soak" ./bench/soak

"$bin/soak" -duration 60s -clients 32 &
pid=$!
trap 'kill -TERM "$pid" 2>/dev/null || true' TERM INT
rc=0
wait "$pid" || rc=$?
# A trapped signal interrupts wait; wait again for the soak's own clean-up.
while kill -0 "$pid" 2>/dev/null; do rc=0; wait "$pid" || rc=$?; done
exit "$rc"
