#!/usr/bin/env bash
# bench/pair.sh: CPU per request of two bluegreen binaries loaded at the same
# time. Each round starts both proxies fresh in front of one backend
# (bench/backend, 100-byte answers), warms them up for 1 s, then runs one
# `wrk -t1 -cCONNS` against each, in parallel, for DURATION seconds.
# CPU µs/req = utime+stime of each proxy from /proc over its wrk run,
# divided by the requests its wrk completed; the ratio A/B is taken within
# the round. The start order alternates every round.
#
# Both proxies share the machine's load in the same seconds, so the ratio
# swings much less than one of runs taken one after the other (bench/run.sh
# --alt-bin): on the shared 2-core VM two copies of one binary measured
# 0.95-1.08 per round, where run.sh's rounds of one binary against another
# spread over 0.86-1.23. It measures no other proxy; ratios to nginx come
# from bench/run.sh.
#
# usage: bench/pair.sh BINARY_A BINARY_B [CONNS] [ROUNDS] [DURATION] [BASE_PORT]
#   prints one line per round and the median of A/B; defaults 64 10 4 19000
#   (ports BASE+1..2 backend, BASE+10..11 and BASE+30..31 the proxies).
# needs: wrk, curl, python3, go.
set -euo pipefail
A=$(realpath "$1") B=$(realpath "$2")
CONNS=${3:-64} ROUNDS=${4:-10} DURATION=${5:-4} P=${6:-19000}
T=$(mktemp -d /tmp/bench-pair.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$T"
}
trap cleanup EXIT

cd "$(dirname "$0")/.."
go build -o "$T/backend" ./bench/backend
"$T/backend" -addrs "127.0.0.1:$((P + 1)),127.0.0.1:$((P + 2))" >"$T/backend.log" 2>&1 &
PIDS+=($!)

start() { # binary port name
  rm -f "$T/$3.json"
  BLUEGREEN_LISTEN="127.0.0.1:$2" BLUEGREEN_ADMIN_LISTEN="127.0.0.1:$(($2 + 1))" \
    BLUEGREEN_BLUE_URLS="http://127.0.0.1:$((P + 1))" BLUEGREEN_GREEN_URLS="http://127.0.0.1:$((P + 2))" \
    BLUEGREEN_STATE="file:$T/$3.json" BLUEGREEN_LOG_FORMAT=json BLUEGREEN_LOG_LEVEL=warn \
    BLUEGREEN_HEALTH_INTERVAL=2s "$1" serve >"$T/$3.log" 2>&1 &
  PIDS+=($!)
  eval "PID_$3=$!"
}
ready() { # admin port
  for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$1/readyz" && return 0
    sleep 0.1
  done
  echo "bluegreen on admin port $1 not ready" >&2
  exit 2
}
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
reqs() { awk '/requests in/ {print $1}' "$1"; }

PA=$((P + 10)) PB=$((P + 30))
: >"$T/ratios"
for r in $(seq "$ROUNDS"); do
  if ((r % 2)); then start "$A" $PA a; start "$B" $PB b; else start "$B" $PB b; start "$A" $PA a; fi
  ready $((PA + 1)); ready $((PB + 1))
  wrk -t1 -c"$CONNS" -d1 "http://127.0.0.1:$PA/" >/dev/null &
  wrk -t1 -c"$CONNS" -d1 "http://127.0.0.1:$PB/" >/dev/null
  wait %%
  a0=$(cpu "$PID_a") b0=$(cpu "$PID_b")
  timeout $((DURATION + 10)) wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$PA/" >"$T/wa.out" &
  wa=$!
  timeout $((DURATION + 10)) wrk -t1 -c"$CONNS" -d"$DURATION" "http://127.0.0.1:$PB/" >"$T/wb.out" &
  wb=$!
  wait $wa $wb
  a1=$(cpu "$PID_a") b1=$(cpu "$PID_b")
  kill "$PID_a" "$PID_b"
  while kill -0 "$PID_a" 2>/dev/null || kill -0 "$PID_b" 2>/dev/null; do sleep 0.05; done
  python3 - "$r" "$CONNS" "$a0" "$a1" "$(reqs "$T/wa.out")" "$b0" "$b1" "$(reqs "$T/wb.out")" "$(getconf CLK_TCK)" >>"$T/ratios" <<'PY'
import sys
r, c, a0, a1, ra, b0, b1, rb, hz = sys.argv[1:]
ca = (float(a1) - float(a0)) / float(hz) * 1e6 / int(ra)
cb = (float(b1) - float(b0)) / float(hz) * 1e6 / int(rb)
print(f"round {r} c{c} A {ca:.1f} us/req ({ra} req)  B {cb:.1f} us/req ({rb} req)  A/B {ca / cb:.3f}")
PY
  tail -1 "$T/ratios"
done
python3 - "$T/ratios" <<'PY'
import statistics, sys
v = [float(l.split()[-1]) for l in open(sys.argv[1])]
print(f"A/B median {statistics.median(v):.3f} ({min(v):.3f}-{max(v):.3f}), {sum(x < 1 for x in v)} of {len(v)} rounds below 1")
PY
