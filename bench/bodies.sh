#!/usr/bin/env bash
# bench/bodies.sh: large bodies (512 MiB - 1 GiB) uploaded and downloaded
# over loopback, direct to the backend and through bluegreen (this checkout,
# its net/http path, and the binary of another git ref such as main), nginx
# and a relay that only splices bytes (the floor of one more hop), in
# alternating rounds, with the CPU each process spends per GB. See bench/README.md. Every server listens on
# 127.0.0.1 only; everything this script starts is killed when it ends.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ARGS="$*"
SIZE_MIB=512
ROUNDS=3
REPS=2
TARGETS="direct floor bluegreen bluegreen-main bluegreen-nethttp nginx"
MAIN_REF=main
OUT=""
KEEP=0
CC=""
BASE_PORT=18200

usage() {
  cat <<USAGE
usage: bench/bodies.sh [options]
  --size MIB        body size in MiB (default $SIZE_MIB)
  --rounds N        alternating rounds (default $ROUNDS); the order of the targets rotates each round
  --reps N          downloads and uploads per target and round (default $REPS)
  --targets "LIST"  subset/order of: direct floor bluegreen bluegreen-main bluegreen-nethttp nginx
                    (default "$TARGETS"; floor = bench/relay, a TCP relay that only
                    splices, bluegreen-main = the binary of --main-ref,
                    bluegreen-nethttp = this checkout with BLUEGREEN_FAST_PATH=false)
  --main-ref REF    git ref built as bluegreen-main (default $MAIN_REF)
  --out FILE        results file (default bench/results/<date>-bodies.md)
  --port N          base port (default $BASE_PORT; uses N+1, N+81 and N+83, or the
                    next odd pairs up to N+113 when those are taken)
  --cc NAME         TCP congestion control of the client's, the backend's and the floor's
                    connections (TCP_CONGESTION, e.g. reno; default: the system's)
  --keep            keep the temp dir (configs, logs, raw.tsv)
USAGE
}

while [ $# -gt 0 ]; do
  case "$1" in
    --size) SIZE_MIB=$2; shift ;;
    --rounds) ROUNDS=$2; shift ;;
    --reps) REPS=$2; shift ;;
    --targets) TARGETS=$2; shift ;;
    --main-ref) MAIN_REF=$2; shift ;;
    --out) OUT=$2; shift ;;
    --port) BASE_PORT=$2; shift ;;
    --cc) CC=$2; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bodies: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done

BACKEND_PORT=$((BASE_PORT + 1))
# Odd ports: Linux gives connect() even ephemeral ports first, and another
# job's connection in TIME-WAIT on a port fails the bind of a listener.
PROXY_PORT=$((BASE_PORT + 81))
ADMIN_PORT=$((BASE_PORT + 83))
SIZE=$((SIZE_MIB << 20))
HZ=$(getconf CLK_TCK)

T=$(mktemp -d /tmp/bluegreen-bodies.XXXXXX)
chmod 755 "$T"
RAW="$T/raw.tsv"
: >"$RAW"
PIDS=()

log() { printf '[bodies %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# children PID: the processes whose parent is PID (nginx's workers).
children() { ps -e -o pid=,ppid= | awk -v p="$1" '$2 == p { print $1 }'; }

stop_pid() { # PID: TERM, a short grace, then KILL (its children too)
  local pid=$1 kids
  kids=$(children "$pid")
  kill -TERM "$pid" 2>/dev/null
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  kill -KILL "$pid" $kids 2>/dev/null
  wait "$pid" 2>/dev/null
  local keep=() p
  for p in "${PIDS[@]}"; do [ "$p" = "$pid" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

cleanup() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  if [ "$KEEP" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# procsum PID CMD: CMD's figure summed over PID and its children.
# cpu: utime+stime in clock ticks; utime, stime alone; hwm: VmHWM in KiB.
procsum() {
  local p sum=0 v
  for p in "$1" $(children "$1"); do
    case $2 in
      cpu) v=$(awk '{ sub(/.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null) ;;
      utime) v=$(awk '{ sub(/.*\) /, ""); print $12 }' "/proc/$p/stat" 2>/dev/null) ;;
      stime) v=$(awk '{ sub(/.*\) /, ""); print $13 }' "/proc/$p/stat" 2>/dev/null) ;;
      hwm) v=$(awk '$1 == "VmHWM:" { print $2 }' "/proc/$p/status" 2>/dev/null) ;;
    esac
    [ -n "$v" ] && sum=$((sum + v))
  done
  echo "$sum"
}

wait_http() { # URL [seconds [PID]]: fails at once when PID has exited
  local i
  for ((i = 0; i < ${2:-10} * 10; i++)); do
    curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
    [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null && return 1
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- build

export PATH="$PATH:/usr/sbin:/sbin"
if [[ " $TARGETS " == *" nginx "* ]] && ! command -v nginx >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx >"$T/apt.log" 2>&1 ||
    die "nginx is missing and could not be installed (see $T/apt.log)"
fi
log "building bluegreen, bluegreen@$MAIN_REF, the bodies backend/client and the relay"
( cd "$ROOT" && go build -o "$T/bluegreen" ./cmd/bluegreen && go build -o "$T/bodies" ./bench/bodies &&
  go build -o "$T/relay" ./bench/relay ) ||
  die "go build failed"
if [[ " $TARGETS " == *" bluegreen-main "* ]]; then
  mkdir -p "$T/main-src"
  git -C "$ROOT" archive --format=tar "$MAIN_REF" | tar -x -C "$T/main-src" &&
    ( cd "$T/main-src" && go build -o "$T/bluegreen-main" ./cmd/bluegreen ) || die "could not build $MAIN_REF"
  MAIN_COMMIT=$(git -C "$ROOT" rev-parse --short "$MAIN_REF")
fi
for p in $BACKEND_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p on 127.0.0.1 is in use (try --port)"; fi
done
log "writing the $SIZE_MIB MiB body file"
head -c "$SIZE" /dev/urandom >"$T/body" || die "could not write $T/body"

# ---------------------------------------------------------------- servers

"$T/bodies" serve -addr "127.0.0.1:$BACKEND_PORT" -file "$T/body" -cc "$CC" >"$T/backend.log" 2>&1 &
BPID=$!
PIDS+=($BPID)
wait_http "http://127.0.0.1:$BACKEND_PORT/" || die "backend did not start: $(cat "$T/backend.log")"

# nginx as in bench/run.sh, with what large bodies need: no body size limit,
# request bodies streamed to the upstream instead of spooled to a file first,
# and responses through its memory buffers with no temp file.
mkdir -p "$T/nginx/logs" "$T/nginx/tmp"
cat >"$T/nginx/nginx.conf.in" <<NGINX
worker_processes auto;
pid $T/nginx/nginx.pid;
error_log $T/nginx/logs/error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_timeout 75s;
    keepalive_requests 1000000;
    client_body_temp_path $T/nginx/tmp/body;
    proxy_temp_path $T/nginx/tmp/proxy;
    fastcgi_temp_path $T/nginx/tmp/fastcgi;
    uwsgi_temp_path $T/nginx/tmp/uwsgi;
    scgi_temp_path $T/nginx/tmp/scgi;
    upstream app {
        server 127.0.0.1:$BACKEND_PORT;
        keepalive 64;
    }
    server {
        listen 127.0.0.1:@PORT@;
        client_max_body_size 0;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_request_buffering off;
            proxy_max_temp_file_size 0;
        }
    }
}
NGINX

# start_once NAME PORT ADMIN_PORT: starts NAME listening on PORT; sets TPID
# ("" for direct) and ADDR. It fails when NAME does not come up.
start_once() {
  local name=$1 port=$2 admin=$3 bin=$T/bluegreen env=()
  TPID="" ADDR="127.0.0.1:$port"
  case "$name" in
    direct) ADDR="127.0.0.1:$BACKEND_PORT"; return 0 ;;
    floor) "$T/relay" -listen "$ADDR" -to "127.0.0.1:$BACKEND_PORT" -cc "$CC" >"$T/floor.out" 2>&1 & ;;
    nginx)
      sed "s/@PORT@/$port/" "$T/nginx/nginx.conf.in" >"$T/nginx/nginx.conf"
      nginx -p "$T/nginx" -c "$T/nginx/nginx.conf" -g 'daemon off;' >"$T/nginx.out" 2>&1 &
      ;;
    bluegreen|bluegreen-main|bluegreen-nethttp)
      [ "$name" = bluegreen-main ] && bin=$T/bluegreen-main
      [ "$name" = bluegreen-nethttp ] && env+=(BLUEGREEN_FAST_PATH=false)
      rm -f "$T/bg-state.json"
      env "${env[@]}" BLUEGREEN_LISTEN="$ADDR" BLUEGREEN_ADMIN_LISTEN="127.0.0.1:$admin" \
        BLUEGREEN_BLUE_URLS="http://127.0.0.1:$BACKEND_PORT" BLUEGREEN_GREEN_URLS="http://127.0.0.1:$BACKEND_PORT" \
        BLUEGREEN_STATE="file:$T/bg-state.json" BLUEGREEN_LOG_FORMAT=json BLUEGREEN_LOG_LEVEL=warn \
        BLUEGREEN_HEALTH_INTERVAL=2s "$bin" serve >"$T/$name.out" 2>&1 &
      ;;
    *) die "unknown target $name" ;;
  esac
  TPID=$!
  PIDS+=("$TPID")
  if [[ $name == bluegreen* ]]; then
    wait_http "http://127.0.0.1:$admin/readyz" 15 "$TPID" || return 1
  fi
  wait_http "http://$ADDR/" 10 "$TPID"
}

# start_target NAME: start_once on PROXY_PORT, or on the next pairs of
# ports when it is in use or NAME does not come up: on a machine where other
# jobs open many connections, a port of ours may be some connection's
# ephemeral port.
start_target() {
  local k p
  for ((k = 0; k < 8; k++)); do
    p=$((PROXY_PORT + 4 * k))
    # a socket in TIME-WAIT on the port, even another job's, fails the bind
    if ss -tan 2>/dev/null | grep -qE "127\.0\.0\.1:($p|$((p + 2))) "; then continue; fi
    start_once "$1" "$p" $((p + 2)) && return 0
    log "$1 did not start on port $p: $(tail -2 "$T/$1.out" 2>/dev/null)"
    [ -n "$TPID" ] && stop_pid "$TPID"
  done
  die "$1 did not start"
}

# ---------------------------------------------------------------- rounds

{
  echo "date	$(date -u +'%Y-%m-%d %H:%M UTC')"
  echo "host	$(hostname -s)"
  echo "nproc	$(nproc)"
  echo "cpu	$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "kernel	$(uname -sr)"
  echo "go	$(go version | awk '{ print $3 }')"
  echo "bluegreen	$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet HEAD -- . 2>/dev/null || echo ' (modified)')"
  [ -n "${MAIN_COMMIT:-}" ] && echo "bluegreen-main	$MAIN_REF at $MAIN_COMMIT"
  command -v nginx >/dev/null && echo "nginx	$(nginx -v 2>&1 | sed 's/^nginx version: //')"
  echo "body	$SIZE_MIB MiB ($SIZE bytes)"
  echo "rounds	$ROUNDS x $REPS downloads and $REPS uploads per target"
  echo "targets	$TARGETS"
  echo "congestion control	${CC:-system default} for the client, the backend and the floor; system: $(sysctl -n net.ipv4.tcp_congestion_control 2>/dev/null)"
  echo "command	bench/bodies.sh $ARGS"
} >"$T/meta.tsv"

for ((r = 1; r <= ROUNDS; r++)); do
  order=($TARGETS)
  n=${#order[@]}
  for ((i = 0; i < n; i++)); do
    name=${order[$(( (i + r - 1) % n ))]}
    start_target "$name"
    for dir in down up; do
      for ((k = 1; k <= REPS; k++)); do
        pu=0 ps=0
        [ -n "$TPID" ] && pu=$(procsum "$TPID" utime) ps=$(procsum "$TPID" stime)
        bu=$(procsum "$BPID" utime) bs=$(procsum "$BPID" stime)
        # The client's user+system seconds (bash's time: its rusage).
        if [ "$dir" = down ]; then
          res=$( { TIMEFORMAT='%U %S'; time timeout 300 "$T/bodies" get -addr "$ADDR" -n "$SIZE" -cc "$CC" 2>"$T/client.err"; } 2>"$T/client.time")
        else
          res=$( { TIMEFORMAT='%U %S'; time timeout 300 "$T/bodies" put -addr "$ADDR" -file "$T/body" -cc "$CC" 2>"$T/client.err"; } 2>"$T/client.time")
        fi
        [ -n "$res" ] || die "$name $dir failed: $(cat "$T/client.err")"
        # user and system seconds of the client, the backend and the proxy
        cus=$(awk '{ printf "%.3f\t%.3f", $1, $2 }' "$T/client.time")
        bus=$(awk -v u=$(( $(procsum "$BPID" utime) - bu )) -v s=$(( $(procsum "$BPID" stime) - bs )) -v hz="$HZ" \
          'BEGIN { printf "%.3f\t%.3f", u / hz, s / hz }')
        pus="NA	NA" hwm=NA
        if [ -n "$TPID" ]; then
          pus=$(awk -v u=$(( $(procsum "$TPID" utime) - pu )) -v s=$(( $(procsum "$TPID" stime) - ps )) -v hz="$HZ" \
            'BEGIN { printf "%.3f\t%.3f", u / hz, s / hz }')
          hwm=$(procsum "$TPID" hwm)
        fi
        set -- $res
        printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$name" "$dir" "$2" "$3" "$cus" "$bus" "$pus" "$hwm" >>"$RAW"
        log "round $r $name $dir: $3 GB/s ($2 s); user/sys s: client ${cus/	//} backend ${bus/	//} proxy ${pus/	//}; peak rss ${hwm} KiB"
      done
    done
    if [ -n "$TPID" ]; then stop_pid "$TPID"; TPID=""; fi
  done
done

# ---------------------------------------------------------------- report

[ -n "$OUT" ] || OUT="$ROOT/bench/results/$(date -u +%F)-bodies.md"
mkdir -p "$(dirname "$OUT")"
awk -F'\t' -v targets="$TARGETS" -v size="$SIZE" -v ncpu="$(nproc)" '
  FNR == NR { meta[++nm] = $0; next }
  {
    r = $1; t = $2; d = $3; gb = size / 1e9
    # per round: the mean GB/s of the reps
    key = r SUBSEP t SUBSEP d
    sum[key] += $5; cnt[key]++
    raw[++nr] = $0
    td = t SUBSEP d
    cl = ($6 + $7) / gb; be = ($8 + $9) / gb
    ccpu[td] = ccpu[td] " " cl; bcpu[td] = bcpu[td] " " be
    tot = cl + be
    if ($10 != "NA") {
      px = ($10 + $11) / gb; tot += px
      pcpu[td] = pcpu[td] " " px
      if ($10 + $11 > 0) psys[td] = psys[td] " " 100 * $11 / ($10 + $11)
    }
    tcpu[td] = tcpu[td] " " tot
    busy[td] = busy[td] " " tot * $5
    if ($12 != "NA" && $12 + 0 > hwm[t]) hwm[t] = $12 + 0
    rounds[r] = 1
  }
  function median(s,    a, n, i, j, x) {
    n = split(s, a, " ")
    if (n == 0) return "NA"
    for (i = 2; i <= n; i++) { x = a[i] + 0; for (j = i - 1; j >= 1 && a[j] + 0 > x; j--) a[j + 1] = a[j]; a[j + 1] = x }
    return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
  }
  function range(s,    a, n, i, lo, hi) {
    n = split(s, a, " ")
    if (n == 0) return ""
    lo = hi = a[1] + 0
    for (i = 2; i <= n; i++) { if (a[i] + 0 < lo) lo = a[i] + 0; if (a[i] + 0 > hi) hi = a[i] + 0 }
    return sprintf("%.2f–%.2f", lo, hi)
  }
  function m2(s) { return s == "" ? "–" : sprintf("%.2f", median(s)) }
  # ratio T D REF: the median of the ratios T/REF taken within each round
  function ratio(t, d, ref,    r, k, kr, s) {
    s = ""
    for (r in rounds) {
      k = r SUBSEP t SUBSEP d; kr = r SUBSEP ref SUBSEP d
      if ((k in cnt) && (kr in cnt)) s = s " " (sum[k] / cnt[k]) / (sum[kr] / cnt[kr])
    }
    return s == "" ? "–" : sprintf("%.2f (%s)", median(s), range(s))
  }
  END {
    print "# Large bodies: upload and download through bluegreen, nginx, a splice-only relay and direct"
    print ""
    print "Written by `bench/bodies.sh` (see bench/README.md)."
    print ""
    print "| | |"
    print "|---|---|"
    for (i = 1; i <= nm; i++) { split(meta[i], kv, "\t"); printf "| %s | %s |\n", kv[1], kv[2] }
    nt = split(targets, tl, " ")
    for (dd = 1; dd <= 2; dd++) {
      d = dd == 1 ? "down" : "up"
      print ""
      printf "## %s\n\n", d == "down" ? "Download (backend → client)" : "Upload (client → backend)"
      print "Median of rounds (min–max in brackets); ratios are taken within each round, then the median."
      print "CPU is user + system seconds per GB of each process (median of the transfers); `cores busy`"
      printf "is GB/s × total CPU s per GB, at most %d here; `bound` is %d cores ÷ total CPU s per GB, the\n", ncpu, ncpu
      print "GB/s the three processes could reach if they had every core and nothing else ran."
      print ""
      print "| target | GB/s | × direct | × floor | × bluegreen-main | CPU s/GB client | backend | proxy (sys %) | total | cores busy | bound GB/s | peak RSS MiB |"
      print "|---|---|---|---|---|---|---|---|---|---|---|---|"
      for (i = 1; i <= nt; i++) {
        t = tl[i]; td = t SUBSEP d; g = ""
        for (r in rounds) { k = r SUBSEP t SUBSEP d; if (k in cnt) g = g " " sum[k] / cnt[k] }
        if (g == "") continue
        printf "| %s | %.2f (%s) | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", t, median(g), range(g),
          ratio(t, d, "direct"), ratio(t, d, "floor"), ratio(t, d, "bluegreen-main"),
          m2(ccpu[td]), m2(bcpu[td]),
          pcpu[td] == "" ? "–" : sprintf("%.2f (%.0f %%)", median(pcpu[td]), median(psys[td])),
          m2(tcpu[td]), m2(busy[td]), sprintf("%.2f", ncpu / median(tcpu[td])),
          (t in hwm) ? sprintf("%.1f", hwm[t] / 1024) : "–"
      }
    }
    print ""
    print "## Every run"
    print ""
    print "User and system CPU seconds of each process for the transfer."
    print ""
    print "| round | target | direction | seconds | GB/s | client user | client sys | backend user | backend sys | proxy user | proxy sys | proxy peak RSS KiB |"
    print "|---|---|---|---|---|---|---|---|---|---|---|---|"
    for (i = 1; i <= nr; i++) {
      n = split(raw[i], f, "\t")
      printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12]
    }
  }
' "$T/meta.tsv" "$RAW" >"$OUT" || die "report failed"
cat "$OUT"
log "wrote $OUT"
