#!/usr/bin/env bash
# bench/run.sh: bluegreen against nginx, HAProxy and Caddy on one machine.
# See bench/README.md. Every server listens on 127.0.0.1 only; every process
# this script starts is killed when it ends, whatever the way it ends.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
ARGS="$*"
ROUNDS=3
DURATION=10
CONCS="64 256"
TARGETS="direct nginx haproxy caddy bluegreen"
IDLE_N=2000
SWITCH_DURATION=20
SWITCH_CONC=64
DO_LOAD=1 DO_IDLE=1 DO_SWITCH=1
QUICK=0

CHARTS=auto
BG_ENV=""
ALT_ENV=""
ALT_BIN=""
NGINX_KEEPALIVE=1024
OUT=""
KEEP=0
BASE_PORT=18000
WRK_THREADS=$(nproc)

usage() {
  cat <<USAGE
usage: bench/run.sh [options]
  --rounds N            alternating rounds of the load test (default $ROUNDS)
  --duration S          seconds per measured wrk run (default $DURATION)
  --conc "64 256"       client concurrencies (default "$CONCS")
  --c1000               add concurrency 1000
  --targets "LIST"      subset/order of: direct nginx haproxy caddy bluegreen bluegreen-gmp1 bluegreen-nethttp bluegreen-alt
                        (default "$TARGETS"; bluegreen-gmp1 = bluegreen with GOMAXPROCS=1,
                        bluegreen-nethttp = bluegreen with BLUEGREEN_FAST_PATH=false)
                        or relay-splice relay-copy relay-epoll: floors that parse nothing, one
                        instance connection per client connection (bench/relay: splice(2), a
                        goroutine per direction, or an epoll event loop per core)
  --idle-conns N        idle keep-alive connections held per proxy (default $IDLE_N; max ~6000 here)
  --switch-duration S   seconds of the switch-under-load run (default $SWITCH_DURATION)
  --no-load | --no-idle | --no-switch   skip a part
  --quick               CI smoke: 1 round, 2 s, c64 only, 200 idle conns, 4 s switch run
  --curve               the curve: 3 rounds x 3 s at c16 c64 c256 c1024 c4096 of nginx haproxy
                        caddy bluegreen, no idle or switch part, PNG charts (~6 min);
                        options after it override its settings
  --charts | --no-charts  draw PNG charts with gnuplot next to the results file
                        (default: when more than one concurrency is measured and not --quick)
  --nginx-keepalive N   nginx's upstream keepalive (idle connections kept per worker; default $NGINX_KEEPALIVE,
                        the examples of its documentation use 16-64)
  --bluegreen-env "K=V ..."  extra environment of the bluegreen targets
                        (e.g. BLUEGREEN_UPSTREAM_MAX_CONNS=1024)
  --alt-env "K=V ..."   environment of the target bluegreen-alt (bluegreen with it on top of
                        --bluegreen-env): measures a setting side by side with the default
  --alt-bin FILE        binary of the target bluegreen-alt (default: the checkout's): another
                        build side by side with this one, e.g. the commit before a change
  --out FILE            results file (default bench/results/<date>-<host>.md; --quick: a temp file)
  --port N              base port (default $BASE_PORT; uses N+1, N+2, N+80, N+81)
  --keep                keep the temp dir with configs, logs and raw data
USAGE
}

while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS=$2; shift ;;
    --duration) DURATION=$2; shift ;;
    --conc) CONCS=$2; shift ;;
    --c1000) CONCS="$CONCS 1000" ;;
    --targets) TARGETS=$2; shift ;;
    --idle-conns) IDLE_N=$2; shift ;;
    --switch-duration) SWITCH_DURATION=$2; shift ;;
    --no-load) DO_LOAD=0 ;;
    --no-idle) DO_IDLE=0 ;;
    --no-switch) DO_SWITCH=0 ;;
    --quick) QUICK=1 ;;
    --curve)   # options after it override these
      DURATION=3 CONCS="16 64 256 1024 4096" TARGETS="nginx haproxy caddy bluegreen" DO_IDLE=0 DO_SWITCH=0 ;;
    --charts) CHARTS=1 ;;
    --no-charts) CHARTS=0 ;;
    --bluegreen-env) BG_ENV=$2; shift ;;
    --alt-env) ALT_ENV=$2; shift ;;
    --alt-bin) ALT_BIN=$(realpath "$2") || exit 2; shift ;;
    --nginx-keepalive) NGINX_KEEPALIVE=$2; shift ;;
    --out) OUT=$2; shift ;;
    --port) BASE_PORT=$2; shift ;;
    --keep) KEEP=1 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
  shift
done
if [ "$QUICK" = 1 ]; then
  ROUNDS=1 DURATION=2 CONCS=64 IDLE_N=200 SWITCH_DURATION=4
fi
if [ "$CHARTS" = auto ]; then
  CHARTS=0
  [ "$QUICK" = 0 ] && [ "$(echo $CONCS | wc -w)" -gt 1 ] && CHARTS=1
fi

BLUE_PORT=$((BASE_PORT + 1))
GREEN_PORT=$((BASE_PORT + 2))
PROXY_PORT=$((BASE_PORT + 80))
ADMIN_PORT=$((BASE_PORT + 81))
PROXY_URL="http://127.0.0.1:$PROXY_PORT/"
HZ=$(getconf CLK_TCK)

T=$(mktemp -d /tmp/bluegreen-bench.XXXXXX)
chmod 755 "$T"
RAW="$T/raw.tsv"
: >"$RAW"
PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# Kill one process tree: TERM, a short grace, then KILL.
kill_tree() {
  local pid=$1 kids
  [ -n "$pid" ] || return 0
  kids=$(descendants "$pid")
  kill -TERM "$pid" 2>/dev/null
  for _ in 1 2 3 4 5 6 7 8 9 10; do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL "$pid" $kids 2>/dev/null
  wait "$pid" 2>/dev/null
  return 0
}

cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill_tree "$p"; done
  PIDS=()
  if [ "$KEEP" = 1 ]; then log "kept $T"; else rm -rf "$T"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

forget_pid() {
  local p keep=()
  for p in "${PIDS[@]}"; do [ "$p" = "$1" ] || keep+=("$p"); done
  PIDS=("${keep[@]}")
}

# ---------------------------------------------------------------- tools

apt_install() {
  local missing=() p
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  command -v apt-get >/dev/null || return 1
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >"$T/apt.log" 2>&1 ||
    { DEBIAN_FRONTEND=noninteractive apt-get update >>"$T/apt.log" 2>&1 &&
      DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >>"$T/apt.log" 2>&1; }
}

need=()
for t in wrk nginx haproxy caddy socat; do
  command -v "$t" >/dev/null 2>&1 || [ -x "/usr/sbin/$t" ] || need+=("$t")
done
if [ "$CHARTS" = 1 ] && ! command -v gnuplot >/dev/null 2>&1; then need+=(gnuplot-nox); fi
if [ ${#need[@]} -gt 0 ]; then
  apt_install "${need[@]}" || die "could not install ${need[*]} (see $T/apt.log)"
fi
export PATH="$PATH:/usr/sbin:/sbin"
for t in wrk nginx haproxy caddy socat; do command -v "$t" >/dev/null || die "$t not found"; done
if [ "$CHARTS" = 1 ]; then command -v gnuplot >/dev/null || die "gnuplot not found"; fi
# Packaged services must not hold our ports; we start our own instances.

log "building bluegreen, backend and idleconns"
( cd "$ROOT" &&
  go build -o "$T/bluegreen" ./cmd/bluegreen &&
  go build -o "$T/backend" ./bench/backend &&
  go build -o "$T/idleconns" ./bench/idleconns &&
  go build -o "$T/relay" ./bench/relay &&
  go build -o "$T/report" ./bench/report ) || die "go build failed"

for p in $BLUE_PORT $GREEN_PORT $PROXY_PORT $ADMIN_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then die "port $p on 127.0.0.1 is in use (try --port)"; fi
done

# ---------------------------------------------------------------- /proc

# descendants PID: every process below PID.
descendants() {
  ps -e -o pid=,ppid= | awk -v r="$1" '
    { par[$1] = $2 }
    END {
      ins[r] = 1; changed = 1
      while (changed) { changed = 0
        for (p in par) if (!(p in ins) && (par[p] in ins)) { ins[p] = 1; changed = 1 } }
      for (p in ins) if (p != r) print p
    }'
}

# ticks PID: utime+stime of PID and its descendants, plus the CPU of
# children they have reaped (cutime+cstime), in clock ticks.
ticks() {
  local p sum=0 v
  for p in "$1" $(descendants "$1"); do
    v=$(awk '{ sub(/.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$p/stat" 2>/dev/null) || continue
    [ -n "$v" ] && sum=$((sum + v))
  done
  echo "$sum"
}

# mem PID FIELD: FIELD (VmHWM, VmRSS) summed over PID and its descendants, KiB.
mem() {
  local p sum=0 v
  for p in "$1" $(descendants "$1"); do
    v=$(awk -v f="$2:" '$1 == f { print $2 }' "/proc/$p/status" 2>/dev/null) || continue
    [ -n "$v" ] && sum=$((sum + v))
  done
  echo "$sum"
}

# ---------------------------------------------------------------- servers

wait_http() { # URL [seconds]
  local i n=$(( ${2:-10} * 10 ))
  for ((i = 0; i < n; i++)); do
    curl -fsS -o /dev/null --max-time 1 "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

start_backend() {
  "$T/backend" -addrs "127.0.0.1:$BLUE_PORT,127.0.0.1:$GREEN_PORT" >"$T/backend.log" 2>&1 &
  BACKEND_PID=$!
  PIDS+=("$BACKEND_PID")
  wait_http "http://127.0.0.1:$BLUE_PORT/health" && wait_http "http://127.0.0.1:$GREEN_PORT/health" ||
    die "backend did not start: $(cat "$T/backend.log")"
}

write_configs() {
  mkdir -p "$T/nginx/logs" "$T/nginx/tmp" "$T/caddy"
  echo "server 127.0.0.1:$BLUE_PORT;" >"$T/nginx/upstream.conf"
  # nginx: upstream keep-alive as its docs describe (keepalive + HTTP/1.1 +
  # empty Connection header), the idle pool sized above the concurrency, and
  # keepalive_requests raised on both sides so no side reconnects every 1000.
  cat >"$T/nginx/nginx.conf" <<NGINX
worker_processes auto;
worker_rlimit_nofile 20000;
pid $T/nginx/nginx.pid;
error_log $T/nginx/logs/error.log warn;
events { worker_connections 10000; }
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
        include $T/nginx/upstream.conf;
        keepalive $NGINX_KEEPALIVE;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }
    server {
        listen 127.0.0.1:$PROXY_PORT;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host \$host;
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
NGINX
  # HAProxy: keep-alive on both sides, http-reuse always, health checks like
  # bluegreen's (2s, rise 2, fall 3); green starts in maintenance.
  cat >"$T/haproxy.cfg" <<HAP
global
    maxconn 9000
    stats socket $T/haproxy.sock mode 600 level admin
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
    option http-keep-alive
    option forwardfor
    http-reuse always
frontend fe
    bind 127.0.0.1:$PROXY_PORT
    default_backend bk
backend bk
    option httpchk GET /health
    server s1 127.0.0.1:$BLUE_PORT check inter 2s rise 2 fall 3
    server s2 127.0.0.1:$GREEN_PORT check inter 2s rise 2 fall 3 disabled
HAP
  # Caddy: reverse_proxy with its HTTP transport's keep-alive settings, the
  # idle pool sized above the concurrency; no admin endpoint, no TLS.
  cat >"$T/caddy/Caddyfile" <<CADDY
{
    admin off
    auto_https off
}
http://127.0.0.1:$PROXY_PORT {
    bind 127.0.0.1
    reverse_proxy 127.0.0.1:$BLUE_PORT {
        transport http {
            keepalive 90s
            keepalive_idle_conns 1024
            keepalive_idle_conns_per_host 1024
        }
    }
}
CADDY
}

# start_target NAME: starts the proxy in the foreground as a child; sets TPID.
start_target() {
  local name=$1
  TPID=""
  case "$name" in
    direct) return 0 ;;
    nginx)
      echo "server 127.0.0.1:$BLUE_PORT;" >"$T/nginx/upstream.conf"
      nginx -p "$T/nginx" -c "$T/nginx/nginx.conf" -g 'daemon off;' >"$T/nginx.out" 2>&1 &
      ;;
    haproxy)
      haproxy -db -f "$T/haproxy.cfg" >"$T/haproxy.out" 2>&1 &
      ;;
    caddy)
      XDG_DATA_HOME="$T/caddy" XDG_CONFIG_HOME="$T/caddy" HOME="$T/caddy" \
        caddy run --config "$T/caddy/Caddyfile" --adapter caddyfile >"$T/caddy.out" 2>&1 &
      ;;
    bluegreen|bluegreen-gmp1|bluegreen-nethttp|bluegreen-alt)
      rm -f "$T/bg-state.json"
      local gmp=($BG_ENV)
      [ "$name" = bluegreen-gmp1 ] && gmp+=(GOMAXPROCS=1)
      [ "$name" = bluegreen-nethttp ] && gmp+=(BLUEGREEN_FAST_PATH=false)
      [ "$name" = bluegreen-alt ] && gmp+=($ALT_ENV)
      local bin="$T/bluegreen"
      [ "$name" = bluegreen-alt ] && [ -n "$ALT_BIN" ] && bin=$ALT_BIN
      env "${gmp[@]}" \
        BLUEGREEN_LISTEN="127.0.0.1:$PROXY_PORT" BLUEGREEN_ADMIN_LISTEN="127.0.0.1:$ADMIN_PORT" \
        BLUEGREEN_BLUE_URLS="http://127.0.0.1:$BLUE_PORT" BLUEGREEN_GREEN_URLS="http://127.0.0.1:$GREEN_PORT" \
        BLUEGREEN_STATE="file:$T/bg-state.json" BLUEGREEN_LOG_FORMAT=json BLUEGREEN_LOG_LEVEL=warn \
        BLUEGREEN_HEALTH_INTERVAL=2s \
        "$bin" serve >"$T/bluegreen.out" 2>&1 &
      ;;
    relay-splice|relay-copy|relay-epoll)
      "$T/relay" -listen "127.0.0.1:$PROXY_PORT" -to "127.0.0.1:$BLUE_PORT" -mode "${name#relay-}" >"$T/$name.out" 2>&1 &
      ;;
    *) die "unknown target $name" ;;
  esac
  TPID=$!
  PIDS+=("$TPID")
  if [[ $name == bluegreen* ]]; then
    wait_http "http://127.0.0.1:$ADMIN_PORT/readyz" 15 || die "bluegreen not ready: $(tail -5 "$T/bluegreen.out")"
  fi
  wait_http "$PROXY_URL" 10 || die "$name did not start: $(tail -5 "$T/$name.out" 2>/dev/null)"
}

stop_target() {
  [ -n "${TPID:-}" ] || return 0
  if [ "$1" = nginx ]; then kill -QUIT "$TPID" 2>/dev/null; sleep 0.3; fi
  kill_tree "$TPID"
  forget_pid "$TPID"
  TPID=""
}

# backend_conns: connections the backend has accepted so far (both ports).
backend_conns() { curl -fsS --max-time 2 "http://127.0.0.1:$BLUE_PORT/conns" 2>/dev/null || echo NA; }

target_url() { if [ "$1" = direct ]; then echo "http://127.0.0.1:$BLUE_PORT/"; else echo "$PROXY_URL"; fi; }

# ---------------------------------------------------------------- wrk

# parse_wrk FILE: prints "requests rps p50_ms p99_ms non2xx sockerr".
parse_wrk() {
  awk '
    function ms(v) {
      if (v ~ /us$/) { sub(/us$/, "", v); return v / 1000 }
      if (v ~ /ms$/) { sub(/ms$/, "", v); return v + 0 }
      if (v ~ /m$/)  { sub(/m$/, "", v);  return v * 60000 }
      if (v ~ /s$/)  { sub(/s$/, "", v);  return v * 1000 }
      return v + 0
    }
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    / requests in / { req = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /Non-2xx or 3xx responses:/ { non2xx = $NF }
    /Socket errors:/ { gsub(/,/, ""); sockerr = $4 + $6 + $8 + $10 }
    END { printf "%d %.1f %.3f %.3f %d %d\n", req, rps, p50, p99, non2xx, sockerr }
  ' "$1"
}

run_wrk() { # URL CONC SECONDS OUTFILE
  local threads=$WRK_THREADS
  [ "$2" -lt "$threads" ] && threads=$2
  timeout $(( $3 + 30 )) wrk -t"$threads" -c"$2" -d"$3"s --timeout 5s --latency "$1" >"$4" 2>&1
}

# ---------------------------------------------------------------- 1. load

load_round() { # ROUND
  local r=$1 n i name c url before after bbefore bafter out stats cpu bcpu hwm cbefore cafter reconn
  local -a order=($TARGETS)
  n=${#order[@]}
  for ((i = 0; i < n; i++)); do
    name=${order[$(( (i + r - 1) % n ))]}
    for c in $CONCS; do
      start_target "$name"
      url=$(target_url "$name")
      run_wrk "$url" "$c" 1 "$T/warm.txt"                        # open the pools
      cbefore=$(backend_conns)
      bbefore=$(ticks "$BACKEND_PID")
      if [ -n "$TPID" ]; then before=$(ticks "$TPID"); fi
      out="$T/wrk-r$r-$name-c$c.txt"
      run_wrk "$url" "$c" "$DURATION" "$out" || log "wrk $name c$c exited non-zero"
      if [ -n "$TPID" ]; then
        after=$(ticks "$TPID")
        hwm=$(mem "$TPID" VmHWM)
      fi
      bafter=$(ticks "$BACKEND_PID")
      cafter=$(backend_conns)
      stats=($(parse_wrk "$out"))
      if [ "${stats[0]}" -gt 0 ] && [ -n "$TPID" ]; then
        cpu=$(awk -v t=$((after - before)) -v hz="$HZ" -v n="${stats[0]}" 'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
      else cpu=NA; hwm=NA; fi
      # Upstream connections opened during the measured run per 1,000
      # requests (the /conns query itself counts one).
      reconn=$(awk -v a="$cbefore" -v b="$cafter" -v n="${stats[0]}" \
        'BEGIN { if (n > 0 && a != "NA" && b != "NA") printf "%.2f", (b - a - 1) * 1000 / n; else print "NA" }')
      bcpu=$(awk -v t=$((bafter - bbefore)) -v hz="$HZ" -v n="${stats[0]}" 'BEGIN { if (n > 0) printf "%.1f", t / hz * 1e6 / n; else print "NA" }')
      printf 'load\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$r" "$c" "$name" "${stats[1]}" "${stats[2]}" "${stats[3]}" "$cpu" "$hwm" \
        "${stats[0]}" "${stats[4]}" "${stats[5]}" "$bcpu" "$reconn" >>"$RAW"
      log "round $r c$c $name: ${stats[1]} req/s p50 ${stats[2]}ms p99 ${stats[3]}ms cpu ${cpu}us/req hwm ${hwm}KiB non2xx ${stats[4]} sockerr ${stats[5]} reconnects/1k $reconn"
      stop_target "$name"
    done
  done
}

# ---------------------------------------------------------------- 2. idle

idle_test() { # NAME
  local name=$1 before after line held failed pid
  start_target "$name"
  [ -n "$TPID" ] || return 0
  run_wrk "$PROXY_URL" 8 1 "$T/warm.txt"
  sleep 1
  before=$(mem "$TPID" VmRSS)
  : >"$T/idle.out"
  timeout 120 "$T/idleconns" -n "$IDLE_N" -url "$PROXY_URL" >"$T/idle.out" 2>&1 &
  pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 600); do grep -q '^ready' "$T/idle.out" && break; sleep 0.1; done
  sleep 2
  after=$(mem "$TPID" VmRSS)
  line=$(grep '^ready' "$T/idle.out")
  held=$(echo "$line" | awk '{print $2}'); failed=$(echo "$line" | awk '{print $3}')
  kill -TERM "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; forget_pid "$pid"
  [ -n "$held" ] || { held=0; failed=$IDLE_N; }
  printf 'idle\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$IDLE_N" "$held" "$failed" "$before" "$after" >>"$RAW"
  log "idle $name: held $held (failed $failed) RSS ${before} -> ${after} KiB"
  stop_target "$name"
}

# ---------------------------------------------------------------- 3. switch

SWITCH_TO=green
switch_once() { # NAME: flips the upstream between the two backend ports
  local name=$1 port
  case "$name" in
    nginx)
      if [ "$SWITCH_TO" = green ]; then port=$GREEN_PORT; else port=$BLUE_PORT; fi
      echo "server 127.0.0.1:$port;" >"$T/nginx/upstream.conf"
      kill -HUP "$TPID" ;;
    haproxy)
      if [ "$SWITCH_TO" = green ]; then
        echo "set server bk/s2 state ready; set server bk/s1 state maint" | socat - "UNIX-CONNECT:$T/haproxy.sock" >/dev/null
      else
        echo "set server bk/s1 state ready; set server bk/s2 state maint" | socat - "UNIX-CONNECT:$T/haproxy.sock" >/dev/null
      fi ;;
    bluegreen*)
      curl -fsS -o /dev/null --max-time 2 -X POST "http://127.0.0.1:$ADMIN_PORT/admin/cutover" \
        -d "{\"to\":\"$SWITCH_TO\",\"reason\":\"bench\"}" ;;
  esac
  local rc=$?
  if [ "$SWITCH_TO" = green ]; then SWITCH_TO=blue; else SWITCH_TO=green; fi
  return $rc
}

switch_test() { # NAME
  local name=$1 out wpid switches=0 failed_sw=0 end stats
  start_target "$name"
  SWITCH_TO=green
  if [[ $name == bluegreen* ]]; then
    # Wait until green is healthy too, or the first cutover is refused.
    for _ in $(seq 1 100); do
      [ "$(curl -fsS --max-time 1 "http://127.0.0.1:$ADMIN_PORT/admin/status" | grep -Eo '"healthy": *1' | wc -l)" -ge 2 ] && break
      sleep 0.1
    done
  fi
  if [ "$name" = haproxy ]; then sleep 5; fi   # checks of s1 settle (rise 2 x 2s)
  run_wrk "$PROXY_URL" "$SWITCH_CONC" 1 "$T/warm.txt"
  out="$T/wrk-switch-$name.txt"
  run_wrk "$PROXY_URL" "$SWITCH_CONC" "$SWITCH_DURATION" "$out" &
  wpid=$!
  end=$((SECONDS + SWITCH_DURATION - 1))
  sleep 1
  while [ $SECONDS -lt $end ] && kill -0 "$wpid" 2>/dev/null; do
    if switch_once "$name"; then switches=$((switches + 1)); else failed_sw=$((failed_sw + 1)); fi
    sleep 1
  done
  wait "$wpid"
  stats=($(parse_wrk "$out"))
  printf 'switch\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$SWITCH_CONC" "$SWITCH_DURATION" \
    "$switches" "$failed_sw" "${stats[0]}" "${stats[4]}" "${stats[5]}" "${stats[3]}" >>"$RAW"
  log "switch $name: $switches switches ($failed_sw refused), ${stats[0]} requests, non2xx ${stats[4]}, socket errors ${stats[5]}, p99 ${stats[3]}ms"
  stop_target "$name"
}

# ---------------------------------------------------------------- charts

# draw_charts DATA BASE: BASE-rps.png, BASE-cpu.png and BASE-p99.png from the
# report's curve table (column 1 the connections, then per target its median
# req/s, CPU µs/req and p99 ms over the rounds; "#" header names the targets).
draw_charts() {
  local data=$1 base=$2 names n i what col title ylab logy xt xmin xmax
  names=($(head -1 "$data" | sed 's/^# *conns *//'))
  n=${#names[@]}
  [ "$n" -gt 0 ] || return 1
  xt=$(grep -v '^#' "$data" | awk '{ print $1 }' | paste -sd,)
  xmin=$(grep -v '^#' "$data" | awk 'NR == 1 { print $1 / 1.5 }')
  xmax=$(grep -v '^#' "$data" | awk '{ m = $1 } END { print m * 1.5 }')
  for what in rps cpu p99; do
    case $what in
      rps) col=0 title="Requests per second (median of rounds; higher is better)" ylab="requests/s" logy="" ;;
      cpu) col=1 title="Proxy CPU per request (median of rounds; lower is better)" ylab="CPU µs per request (user+system)" logy="" ;;
      p99) col=2 title="p99 latency (median of rounds; lower is better)" ylab="p99 latency, ms (log scale)" logy="set logscale y" ;;
    esac
    {
      echo "set terminal pngcairo size 900,560 font 'sans,11'"
      echo "set output '$base-$what.png'"
      echo "set title \"$title\\n{/*0.8 wrk -> proxy -> one Go backend, 100-byte answers, keep-alive, 127.0.0.1, $(nproc) cores shared}\" enhanced"
      echo "set xlabel 'client connections (wrk -c)'"
      echo "set ylabel '$ylab'"
      echo "set logscale x 2"
      echo "$logy"
      echo "set xtics ($xt)"
      echo "set xrange [$xmin:$xmax]"
      echo "set grid"
      echo "set key outside right top"
      echo "set yrange [0:*]"
      [ -n "$logy" ] && echo "set yrange [*:*]"
      printf 'plot '
      for ((i = 0; i < n; i++)); do
        [ "$i" -gt 0 ] && printf ', '
        printf "'%s' using 1:%d with linespoints lw 2 pt 7 title '%s'" "$data" $((2 + 3 * i + col)) "${names[$i]}"
      done
      echo
    } >"$T/chart-$what.gp"
    gnuplot "$T/chart-$what.gp" >>"$T/gnuplot.log" 2>&1 || return 1
    log "chart $base-$what.png"
  done
}

# ---------------------------------------------------------------- main

{
  echo "date	$(date -u +'%Y-%m-%d %H:%M UTC')"
  echo "host	$(hostname -s)"
  echo "nproc	$(nproc)"
  echo "cpu	$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
  echo "kernel	$(uname -sr)"
  echo "mem	$(awk '/^MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
  echo "go	$(go version | awk '{ print $3 }')"
  echo "bluegreen	$("$T/bluegreen" version 2>&1 | head -1)"
  echo "nginx	$(nginx -v 2>&1 | sed 's/^nginx version: //')"
  echo "haproxy	$(haproxy -v 2>&1 | head -1 | awk '{ print $3 }')"
  echo "caddy	$(caddy version 2>&1 | awk '{ print $1 }')"
  echo "wrk	$(wrk -v 2>&1 | head -1 | awk '{ print $2 }')"
  echo "rounds	$ROUNDS"
  echo "duration	${DURATION}s"
  echo "concurrency	$CONCS"
  echo "wrk_threads	$WRK_THREADS"
  echo "targets	$TARGETS"
  echo "idle_conns	$IDLE_N"
  echo "switch	c$SWITCH_CONC, ${SWITCH_DURATION}s, one switch a second"
  [ -n "$BG_ENV" ] && echo "bluegreen_env	$BG_ENV"
  echo "nginx_keepalive	$NGINX_KEEPALIVE"
  [ -n "$ALT_ENV" ] && echo "bluegreen-alt	bluegreen with $ALT_ENV"
  [ -n "$ALT_BIN" ] && echo "bluegreen-alt_binary	$("$ALT_BIN" version 2>&1 | head -1) ($ALT_BIN)"
  echo "command	bench/run.sh $ARGS"
} >"$T/meta.tsv"

ulimit -n 20000 2>/dev/null || ulimit -n "$(ulimit -Hn)"
write_configs
start_backend
log "backend on 127.0.0.1:$BLUE_PORT (blue) and :$GREEN_PORT (green); proxies on :$PROXY_PORT"

if [ "$DO_LOAD" = 1 ]; then
  for ((r = 1; r <= ROUNDS; r++)); do load_round "$r"; done
fi
if [ "$DO_IDLE" = 1 ]; then
  for name in $TARGETS; do [ "$name" = direct ] || idle_test "$name"; done
fi
if [ "$DO_SWITCH" = 1 ]; then
  for name in $TARGETS; do
    case "$name" in nginx|haproxy|bluegreen*) switch_test "$name" ;; esac
  done
fi

if [ -z "$OUT" ]; then
  if [ "$QUICK" = 1 ]; then OUT="$T/quick.md"; else OUT="$ROOT/bench/results/$(date -u +%F)-$(hostname -s).md"; fi
fi
mkdir -p "$(dirname "$OUT")"
CHART_ARGS=()
if [ "$CHARTS" = 1 ]; then
  CHART_BASE="${OUT%.md}"
  CHART_ARGS=(-plot "$T/curve.tsv" -charts "$(basename "$CHART_BASE")")
fi
"$T/report" -meta "$T/meta.tsv" -raw "$RAW" "${CHART_ARGS[@]}" >"$OUT" || die "report failed"
if [ "$CHARTS" = 1 ]; then draw_charts "$T/curve.tsv" "$CHART_BASE" || log "gnuplot failed (see $T/gnuplot.log)"; fi
cat "$OUT"
if [ "$QUICK" = 1 ] && [ "$OUT" = "$T/quick.md" ]; then log "quick run: results not kept (use --out FILE)"; else log "wrote $OUT"; fi
