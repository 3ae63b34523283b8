#!/usr/bin/env bash
# bench/h2.sh: CPU per request of the net/http request path, two bluegreen
# binaries side by side with nginx, in one run with rotated rounds.
#   HTTP/2 through the TLS listener:      h2load -c4 -m16 -D DURATION
#   plain HTTP/1.1, BLUEGREEN_FAST_PATH=false:  wrk -t2 -c64 -d DURATION
# CPU µs/req = utime+stime of the proxy's processes (nginx: master and
# workers) from /proc over the measured run, divided by completed requests.
#
# usage: [TARGETS="before-h2 after-h2 nginx before-nethttp after-nethttp"] \
#        bench/h2.sh BEFORE_BINARY AFTER_BINARY [ROUNDS] [DURATION]
# needs: h2load (nghttp2-client), wrk, nginx, openssl, go.
set -euo pipefail
BEFORE=$(realpath "$1") AFTER=$(realpath "$2") ROUNDS=${3:-3} DURATION=${4:-8}
T=$(mktemp -d /tmp/bench-h2.XXXXXX)
BE_PORTS=24001,24002 PLAIN=24080 ADMIN=24081 TLSP=24443 NGINXP=24444
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

cd "$(dirname "$0")/.."
go build -o "$T/backend" ./bench/backend
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$T/key.pem" \
  -out "$T/cert.pem" -days 2 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 2>/dev/null
"$T/backend" -addrs 127.0.0.1:24001,127.0.0.1:24002 >"$T/backend.log" 2>&1 &
PIDS+=($!)

mkdir -p "$T/nginx/logs" "$T/nginx/tmp"
cat >"$T/nginx/nginx.conf" <<NGINX
worker_processes 2;
pid $T/nginx/nginx.pid;
error_log $T/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $T/nginx/tmp/body;
    proxy_temp_path $T/nginx/tmp/proxy;
    fastcgi_temp_path $T/nginx/tmp/fastcgi;
    uwsgi_temp_path $T/nginx/tmp/uwsgi;
    scgi_temp_path $T/nginx/tmp/scgi;
    upstream app {
        server 127.0.0.1:24001;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINXP ssl http2;
        ssl_certificate $T/cert.pem;
        ssl_certificate_key $T/key.pem;
        ssl_protocols TLSv1.3;
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

# ticks PID: utime+stime of PID and its children, in clock ticks.
ticks() {
  local sum=0 p
  for p in "$1" $(pgrep -P "$1" || true); do
    [ -r "/proc/$p/stat" ] || continue
    sum=$((sum + $(awk '{print $14+$15}' "/proc/$p/stat")))
  done
  echo "$sum"
}

start() { # start NAME -> sets TPID, URL, TOOL
  case $1 in
    nginx)
      nginx -p "$T/nginx" -c "$T/nginx/nginx.conf" -g 'daemon off;' >"$T/nginx.out" 2>&1 &
      TPID=$!; URL=https://127.0.0.1:$NGINXP/; TOOL=h2load ;;
    before-h2|after-h2|before-nethttp|after-nethttp)
      local bin=$BEFORE fast=true
      case $1 in after-*) bin=$AFTER ;; esac
      case $1 in *-nethttp) fast=false ;; esac
      rm -f "$T/state.json"
      env BLUEGREEN_BLUE_URLS=http://127.0.0.1:24001 BLUEGREEN_GREEN_URLS=http://127.0.0.1:24002 \
        BLUEGREEN_LISTEN=127.0.0.1:$PLAIN BLUEGREEN_ADMIN_LISTEN=127.0.0.1:$ADMIN \
        BLUEGREEN_TLS_LISTEN=127.0.0.1:$TLSP BLUEGREEN_TLS_CERT_FILE="$T/cert.pem" BLUEGREEN_TLS_KEY_FILE="$T/key.pem" \
        BLUEGREEN_STATE=file:"$T/state.json" BLUEGREEN_LOG_LEVEL=warn BLUEGREEN_FAST_PATH=$fast \
        "$bin" >"$T/$1.log" 2>&1 &
      TPID=$!
      if [ $fast = true ]; then URL=https://127.0.0.1:$TLSP/; TOOL=h2load; else URL=http://127.0.0.1:$PLAIN/; TOOL=wrk; fi ;;
  esac
  PIDS+=("$TPID")
  for _ in $(seq 100); do curl -sk -o /dev/null -f "$URL" && return 0; sleep 0.1; done
  echo "$1 did not come up" >&2; cat "$T/$1.log" "$T/nginx.out" 2>/dev/null >&2; exit 1
}

stop() { kill -KILL "$TPID" $(pgrep -P "$TPID" || true) 2>/dev/null || true; wait "$TPID" 2>/dev/null || true; }

load() { # load TOOL URL SECONDS -> requests completed on stdout
  if [ "$1" = h2load ]; then
    h2load -c4 -m16 -D "$3" "$2" 2>&1 | tee -a "$T/raw.txt" | awk '/^requests:/ {print $8}'
  else
    wrk -t2 -c64 -d"$3"s "$2" 2>&1 | tee -a "$T/raw.txt" | awk '/requests in/ {print $1}'
  fi
}

HZ=$(getconf CLK_TCK)
read -r -a TARGETS <<<"${TARGETS:-before-h2 after-h2 nginx before-nethttp after-nethttp}" # a subset/order: TARGETS="..." 
printf 'round\ttarget\ttool\trequests\tcpu_s\tcpu_us_per_req\treq_per_s\n'
for r in $(seq "$ROUNDS"); do
  n=${#TARGETS[@]}
  for i in $(seq 0 $((n - 1))); do
    name=${TARGETS[$(((i + r - 1) % n))]}
    start "$name"
    load "$TOOL" "$URL" 1 >/dev/null # warm-up: TLS sessions, upstream pools
    c0=$(ticks "$TPID")
    echo "== round $r $name" >>"$T/raw.txt"
    reqs=$(load "$TOOL" "$URL" "$DURATION")
    c1=$(ticks "$TPID")
    stop
    awk -v r="$r" -v n="$name" -v t="$TOOL" -v q="$reqs" -v c=$((c1 - c0)) -v hz="$HZ" -v d="$DURATION" \
      'BEGIN { printf "%s\t%s\t%s\t%d\t%.2f\t%.1f\t%.0f\n", r, n, t, q, c/hz, c/hz*1e6/q, q/d }'
  done
done
echo "raw tool output: $T/raw.txt" >&2
