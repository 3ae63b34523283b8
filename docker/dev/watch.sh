#!/bin/sh
# watch.sh: the dev profile's entry point. Builds the proxy from the source
# mounted at /src, runs it, and rebuilds and restarts it whenever a .go file,
# go.mod or go.sum changes. POSIX sh (busybox or dash).
set -u

out=/tmp/bluegreen-dev
bin=$out/bluegreen
stamp=$out/.built
interval=${WATCH_INTERVAL:-2}
mkdir -p "$out"
case ${BLUEGREEN_STATE:-} in
  file:*) mkdir -p "$(dirname "${BLUEGREEN_STATE#file:}")" ;;
esac

pid=
stop() {
  if [ -n "$pid" ]; then
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    pid=
  fi
}
trap 'stop; exit 0' TERM INT

build() {
  touch "$stamp.next"
  echo "dev: building ./cmd/bluegreen"
  if go build -o "$bin.new" ./cmd/bluegreen; then
    mv "$bin.new" "$bin"
    mv "$stamp.next" "$stamp"
    return 0
  fi
  mv "$stamp.next" "$stamp" # do not retry until the next change
  echo "dev: build failed; waiting for the next change"
  return 1
}

changed() {
  [ -n "$(find . \( -name '*.go' -o -name go.mod -o -name go.sum \) -newer "$stamp" 2>/dev/null | head -n 1)" ]
}

build || true
while :; do
  if [ -z "$pid" ] && [ -x "$bin" ]; then
    "$bin" serve &
    pid=$!
  fi
  sleep "$interval" &
  wait $! # returns at once on TERM
  if changed; then
    if build; then
      stop
    fi
  fi
  if [ -n "$pid" ] && ! kill -0 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null
    echo "dev: the proxy exited with status $?; restarting after the next change"
    pid=
    rm -f "$bin"
  fi
done
