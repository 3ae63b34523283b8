#!/usr/bin/env bash
# Docker stage of CI: builds the images without a registry, validates the
# compose files, runs the blue/green stack under its own project name and
# checks it end to end, then tears it down (also when a step fails).
#
# Run by .ci/run after the Go tests, or alone: bash .ci/docker.sh
#
# Environment:
#   CI_DOCKER_PROJECT   compose project name (default bgci<pid>)
#   CI_DOCKER_COLD=0    first build with the caches (then it is not cold)
#   CI_DOCKER_ARM64=0   skip the linux/arm64 image build (then GOARCH=arm64
#                       go build ./... on the host proves the cross-build)
#   CI_IMAGE_MAX_MB     hard size limit of each amd64 image (default 20, the
#                       target is 15 MB: over it, the summary says so)
#   CI_KEEP_STACK=1     leave the stack running at the end (for debugging)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
export DEBIAN_FRONTEND=noninteractive
export GOFLAGS="${GOFLAGS:-} -buildvcs=false"

stage_start=$(date +%s)
section() { printf '\n---- docker: %s (%ss)\n' "$*" "$(( $(date +%s) - stage_start ))"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.1f", b-a}'; }

apt_install() {
  local missing=()
  for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
    { apt-get update >/dev/null && apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; }
}

section "tools"
# docker.io: the engine and the 20.10 CLI that runs BuildKit without buildx;
# busybox-static: /bin/sh of the builder image.
pkgs=(docker-compose busybox-static ca-certificates jq curl python3-yaml)
[ -x /usr/bin/docker ] || command -v docker >/dev/null || pkgs+=(docker.io)
apt_install "${pkgs[@]}"
docker version --format 'engine {{.Server.Version}}, CLI {{.Client.Version}}'
docker-compose version --short

project="${CI_DOCKER_PROJECT:-bgci$$}"
work=$(mktemp -d)
mkdir -p dist
summary="$root/dist/docker-ci-summary.txt"
: >"$summary"
note() { printf '%-34s %s\n' "$1" "$2" | tee -a "$summary"; }

dc() { docker-compose -f docker/compose.yml -p "$project" "$@"; }
load_pid=""
teardown() {
  local rc=$?
  set +e
  [ -n "$load_pid" ] && kill "$load_pid" 2>/dev/null && wait "$load_pid" 2>/dev/null
  if [ "$rc" -ne 0 ] && [ -n "${stack_up:-}" ]; then
    echo "---- docker: logs after the failure"
    dc ps
    dc logs --no-color --tail 40
  fi
  if [ -n "${stack_up:-}" ]; then
    if [ "${CI_KEEP_STACK:-0}" = 1 ]; then
      echo "stack left running: docker-compose -f docker/compose.yml -p $project ..."
    else
      # Every profile, so that their containers and volumes go too.
      COMPOSE_PROFILES=logging-lite,backup,restore dc down -v --remove-orphans >/dev/null 2>&1
    fi
  fi
  docker image rm "bluegreen:ci-arm64" "bluegreen:v2-fleet" >/dev/null 2>&1
  # Untagged leftovers of this project's images (earlier builds of a tag).
  docker image prune -f --filter "label=org.opencontainers.image.source=https://github.com/cryoprotect/bluegreen" >/dev/null 2>&1
  rm -rf "$work"
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# The stack's settings, exported for every docker-compose call below.
export COMPOSE_PROJECT_NAME="$project"
export BLUEGREEN_TAG=v1 BLUE_TAG=v1 GREEN_TAG=v1
# ECS records and the access log: the logging-lite section reads them back.
export BLUEGREEN_LOG_FORMAT=ecs BLUEGREEN_ACCESS_LOG=true
export PUBLIC_PORT ADMIN_PORT VICTORIALOGS_PORT DOCKER_GID
PUBLIC_PORT=$(free_port)
ADMIN_PORT=$(free_port)
VICTORIALOGS_PORT=$(free_port)
DOCKER_GID=$(stat -c %g /var/run/docker.sock)
mkdir -p "$work/secrets"
head -c 32 /dev/urandom | base64 | tr -d '/+=\n' >"$work/secrets/admin_token"
head -c 18 /dev/urandom | base64 | tr -d '/+=\n' >"$work/secrets/grafana_admin_password"
for f in elastic_password kibana_system_password logstash_writer_password kibana_encryption_key; do
  head -c 33 /dev/urandom | base64 | tr -d '/+=\n' >"$work/secrets/$f"
done
# The container user (uid/gid 65532) reads the bind-mounted secret files.
chgrp 65532 "$work"/secrets/*
chmod 0640 "$work"/secrets/*
export ADMIN_TOKEN_FILE="$work/secrets/admin_token"
export GRAFANA_ADMIN_PASSWORD_FILE="$work/secrets/grafana_admin_password"
export ELASTIC_PASSWORD_FILE="$work/secrets/elastic_password" KIBANA_SYSTEM_PASSWORD_FILE="$work/secrets/kibana_system_password"
export LOGSTASH_WRITER_PASSWORD_FILE="$work/secrets/logstash_writer_password" KIBANA_ENCRYPTION_KEY_FILE="$work/secrets/kibana_encryption_key"
token=$(cat "$ADMIN_TOKEN_FILE")
public="http://127.0.0.1:$PUBLIC_PORT"
admin="http://127.0.0.1:$ADMIN_PORT"

section "compose files"
# docker/compose.yml alone, and with each overlay file (docker/compose.*.yml),
# each with every profile they define.
validate() { # files...
  local args=() p profiles all=()
  for f in "$@"; do args+=(-f "$f"); done
  profiles=$(docker-compose "${args[@]}" config --profiles)
  docker-compose "${args[@]}" config -q || fail "$* is not valid"
  echo "ok  $* (default)"
  for p in $profiles; do
    docker-compose "${args[@]}" --profile "$p" config -q || fail "$* --profile $p is not valid"
    all+=(--profile "$p")
  done
  docker-compose "${args[@]}" "${all[@]}" config -q || fail "$* with every profile is not valid"
  echo "ok  $* (docker-compose config -q): no profile, each of: ${profiles//$'\n'/ }; all of them"
  # Every combination of profiles, in one process with compose's library:
  # each must resolve as "up" does (no service depending on a disabled one).
  # Profiles an overlay defines itself are always on with that overlay.
  local req=() q
  for f in "${@:2}"; do
    for q in $(sed -n 's/^ *profiles: *\[\([a-z0-9, -]*\)\].*/\1/p' "$f" | tr ',' ' ' | sort -u); do req+=(--require "$q"); done
  done
  /usr/bin/python3 .ci/compose-profiles.py "${req[@]}" "$@" || fail "$* fails with some profile combination"
  # Every file the stack bind-mounts must exist (configs/ is shared with
  # other parts of the repository).
  docker-compose "${args[@]}" "${all[@]}" config | python3 -c '
import os, sys, yaml
cfg = yaml.safe_load(sys.stdin)
missing = []
for name, svc in (cfg.get("services") or {}).items():
    for v in svc.get("volumes") or []:
        src = v.get("source") if isinstance(v, dict) else v.split(":")[0]
        kind = v.get("type") if isinstance(v, dict) else ("bind" if src.startswith("/") else "volume")
        if kind == "bind" and not os.path.exists(src):
            missing.append(f"{name}: {src}")
if missing:
    print("bind-mount sources missing:\n  " + "\n  ".join(missing))
    sys.exit(1)
' || fail "$* mounts files that do not exist"
}
validate docker/compose.yml
# The ACME overlay insists on the site's names (":?"); any name does here.
export BLUEGREEN_ACME_DOMAINS="${BLUEGREEN_ACME_DOMAINS:-site.example}"
shopt -s nullglob
for overlay in docker/compose.*.yml docker/compose.*.yaml; do
  validate docker/compose.yml "$overlay"
done
shopt -u nullglob
# Staging: the env file gives its own project name, ports and limits (the
# variables this script exports would override the file's: unset them).
staging=$(env -u COMPOSE_PROJECT_NAME -u PUBLIC_PORT -u ADMIN_PORT docker-compose --env-file docker/staging.env -f docker/compose.yml config)
grep -q '127.0.0.1:28080:8080' <<<"$staging" && grep -q 'memory: 128M' <<<"$staging" || fail "docker/staging.env: ports or limits not applied"
note "compose files" "every profile combination resolves (compose.yml, and with each overlay: $(cd docker && echo compose.*.yml)); staging.env applies"

section "offline Prometheus and etcd images (Debian packages)"
apt_install prometheus etcd-server etcd-client
t=$(now)
docker/make-offline-images.sh
# (Whole outputs captured: head would close the pipe under pipefail.)
v=$(docker run --rm --network none bluegreen-prometheus:debian --version 2>&1); echo "${v%%$'\n'*}"
v=$(docker run --rm --network none bluegreen-etcd:debian --version); echo "${v%%$'\n'*}"
v=$(docker run --rm --network none --entrypoint /usr/local/bin/etcdctl bluegreen-etcd:debian version); echo "${v%%$'\n'*}"
note "make-offline-images.sh" "$(since "$t")s: $(docker image inspect -f '{{.Size}}' bluegreen-prometheus:debian | awk '{printf "prometheus %.0f MB", $1/1e6}'), $(docker image inspect -f '{{.Size}}' bluegreen-etcd:debian | awk '{printf "etcd %.0f MB", $1/1e6}')"

section "builder image"
t=$(now)
made=made
docker image inspect bluegreen-builder:local >/dev/null 2>&1 && made=reused
docker/make-builder-image.sh
note "builder image (docker import)" "$made in $(since "$t")s, $(docker image inspect -f '{{.Size}}' bluegreen-builder:local | awk '{printf "%.0f MB", $1/1e6}')"

section "build context"
# What the daemon receives for a build, after .dockerignore.
ctx_log="$work/context.log"
printf 'FROM scratch\nCOPY . /ctx/\n' | DOCKER_BUILDKIT=0 docker build --no-cache -t "bgci-context:$project" -f - . >"$ctx_log" 2>&1 ||
  { cat "$ctx_log"; fail "context build"; }
ctx_sent=$(sed -n 's/^Sending build context to Docker daemon *//p' "$ctx_log" | tail -n 1)
cid=$(docker create "bgci-context:$project" /none)
ctx_files=$(docker export "$cid" | tar -t | grep -c '^ctx/.*[^/]$' || true)
docker rm "$cid" >/dev/null
docker image rm "bgci-context:$project" >/dev/null
note "build context" "$ctx_sent, $ctx_files files"
[ "$ctx_files" -gt 0 ] || fail "empty build context"

section "images: cold build (v1)"
# Cold: modules downloaded again and every package compiled again, the
# standard library included (build.sh COLD=1), as on a fresh machine. Both
# images share that build stage.
cold=0
[ "${CI_DOCKER_COLD:-1}" = 1 ] && cold=1
t=$(now)
COLD=$cold BUILD_LOG="$work/build-v1.log" docker/build.sh v1
note "build v1, cold" "$(since "$t")s (both images; COLD=$cold)"

section "images: warm build (v2)"
t=$(now)
BUILD_LOG="$work/build-v2.log" docker/build.sh v2
warm=$(since "$t")
note "build v2, warm" "${warm}s (layer and Go caches; new version stamp)"
# The target is 15 MB per image; the hard limit (default 20 MB) catches a
# binary that grew by accident. Over the target, the linked modules are listed.
target_mb=15
max_mb="${CI_IMAGE_MAX_MB:-20}"
for img in bluegreen:v1 bluegreen-demo-app:v1; do
  size=$(docker image inspect -f '{{.Size}}' "$img")
  size_mb=$(awk -v s="$size" 'BEGIN{printf "%.1f MB", s/1e6}')
  if [ "$size" -lt $(( target_mb * 1000000 )) ]; then
    note "image $img" "$size_mb"
    continue
  fi
  note "image $img" "$size_mb (OVER the $target_mb MB target)"
  bin=/bluegreen; [ "${img%%:*}" = bluegreen-demo-app ] && bin=/demo-app
  cid=$(docker create "$img")
  docker cp "$cid:$bin" "$work/oversize"
  docker rm "$cid" >/dev/null
  echo "modules linked into $img:"
  go version -m "$work/oversize" | awk '$1 == "dep" {print "  " $2, $3}'
  [ "$size" -lt $(( max_mb * 1000000 )) ] || fail "$img is $size bytes, over the $max_mb MB limit (CI_IMAGE_MAX_MB)"
done
# Image metadata the Dockerfile promises.
[ "$(docker image inspect -f '{{.Config.User}}' bluegreen:v1)" = 65532:65532 ] || fail "image user is not 65532:65532"
[ "$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' bluegreen:v1)" = '["CMD","/bluegreen","healthcheck"]' ] || fail "proxy HEALTHCHECK"
[ "$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' bluegreen-demo-app:v1)" = '["CMD","/demo-app","healthcheck"]' ] || fail "demo-app HEALTHCHECK"
[ "$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.version"}}' bluegreen:v2)" = v2 ] || fail "version label"
[ "$(docker image inspect -f '{{json .Config.ExposedPorts}}' bluegreen:v1)" = '{"8080/tcp":{},"8081/tcp":{}}' ] || fail "proxy EXPOSE"
# (No tee /dev/stderr: reopening stderr truncates a log file it points to.)
stamp=$(docker run --rm --network none bluegreen:v2 version)
echo "$stamp"
case "$stamp" in "bluegreen v2 "*) ;; *) fail "version stamp: $stamp" ;; esac

# The fleet image (with the etcd client) builds too, and the default image
# refuses an etcd store with a clear message instead of failing obscurely.
t=$(now)
FLEET=1 TARGETS=bluegreen BUILD_LOG="$work/build-fleet.log" docker/build.sh v2
note "image bluegreen:v2-fleet" "$(docker image inspect -f '{{.Size}}' bluegreen:v2-fleet | awk '{printf "%.1f MB", $1/1e6}') (etcd client; built in $(since "$t")s)"
lean_err=$(docker run --rm --network none -e BLUEGREEN_BLUE_URLS=http://a:1 -e BLUEGREEN_GREEN_URLS=http://b:1 \
  -e BLUEGREEN_STATE=etcd://etcd:2379/x bluegreen:v2 2>&1 || true)
echo "$lean_err" | grep -q 'without etcd support' || fail "the default image did not refuse an etcd store clearly: $lean_err"

section "stack up"
go build -o "$work/loadgen" ./docker/tools/loadgen
stack_up=1
t=$(now)
dc up -d
deadline=$(( $(date +%s) + 120 ))
proxy_id=$(dc ps -q bluegreen)
[ -n "$proxy_id" ] || fail "no proxy container"
until [ "$(docker inspect -f '{{.State.Health.Status}}' "$proxy_id")" = healthy ]; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "the proxy did not turn healthy"
  sleep 1
done
note "stack up to proxy healthy" "$(since "$t")s"
dc ps

section "traffic reaches blue"
for i in $(seq 1 20); do
  color=$(curl -fsS -m 5 -o /dev/null -D - "$public/" | tr -d '\r' | awk -F': *' 'tolower($1)=="x-deployment-color"{print $2}')
  [ "$color" = blue ] || fail "request $i answered by '$color', want blue"
done
curl -fsS -m 5 "$public/" | grep -q 'version=v1' || fail "blue does not answer version v1"
echo "20/20 requests answered by blue"

section "hardening"
for svc in bluegreen app-blue app-green; do
  id=$(dc ps -q "$svc")
  user=$(docker inspect -f '{{.Config.User}}' "$id")
  ro=$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$id")
  caps=$(docker inspect -f '{{json .HostConfig.CapDrop}}' "$id")
  uids=$(docker top "$id" -o pid,uid | awk 'NR > 1 {print $2}' | sort -u | tr '\n' ' ')
  echo "$svc: user $user, processes' uids: $uids, read-only root $ro, cap_drop $caps"
  [ "$user" = 65532:65532 ] || fail "$svc runs as '$user'"
  [ "$ro" = true ] || fail "$svc root filesystem is writable"
  [ "$caps" = '["ALL"]' ] || fail "$svc keeps capabilities"
  for u in $uids; do [ "$u" = 65532 ] || fail "$svc has a process with uid $u"; done
done
note "containers" "uid 65532, read-only root, cap_drop ALL"

section "admin token"
mapfile -t ids < <(dc ps -q)
if docker inspect "${ids[@]}" | grep -qF -- "$token"; then fail "the admin token shows in docker inspect"; fi
if dc logs --no-color 2>&1 | grep -qF -- "$token"; then fail "the admin token shows in the logs"; fi
code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST "$admin/admin/cutover")
[ "$code" = 401 ] || fail "cutover without a token answered $code, want 401"
code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST -H "Authorization: Bearer wrong" "$admin/admin/cutover")
[ "$code" = 401 ] || fail "cutover with a wrong token answered $code, want 401"
echo "token absent from docker inspect and logs; the admin API refuses mutations without it"
note "admin token" "not in docker inspect or logs; 401 without it"

section "deploy v2 to green under load"
"$work/loadgen" -url "$public/" -c 8 -rate 200 -o "$work/load.json" >/dev/null &
load_pid=$!
sleep 2
t=$(now)
deploy_rc=0
export ENV_FILE="$work/deploy.env" # where deploy.sh records the tags (default docker/.env)
WATCH=15s SMOKE_EXPECT=version=v2 docker/deploy.sh v2 >"$work/deploy.log" 2>&1 || deploy_rc=$?
deploy_time=$(since "$t")
grep -v -e '^Recreating' -e '^Creating' -e '^Starting' "$work/deploy.log" || true
sleep 2
kill -INT "$load_pid"
wait "$load_pid" || true
load_pid=""
[ "$deploy_rc" -eq 0 ] || fail "deploy.sh exited $deploy_rc"
cat "$work/load.json"
requests=$(jq .requests "$work/load.json")
failed=$(jq .failed "$work/load.json")
note "deploy v2 (deploy.sh, watch 15s)" "${deploy_time}s"
note "requests during the deploy" "$requests, failed $failed, colours $(jq -c .colors "$work/load.json"), overlap $(jq .overlap "$work/load.json")"
[ "$failed" -eq 0 ] || fail "$failed requests failed during the deploy"
[ "$(jq -r '.sequence | join(",")' "$work/load.json")" = blue,green ] || fail "traffic did not move from blue to green once"
curl -fsS -m 5 "$public/" | grep -q 'color=green version=v2' || fail "live traffic is not on green v2"
[ "$(sort "$ENV_FILE" | paste -sd' ' -)" = "BLUE_TAG=v1 GREEN_TAG=v2" ] || fail "deploy.sh recorded: $(cat "$ENV_FILE")"
note "deploy.sh records the tags" "$(paste -sd' ' - <"$ENV_FILE") in ENV_FILE (default docker/.env)"

section "green stops: the proxy rolls back to blue"
green_id=$(dc ps -q app-green)
t=$(now)
docker stop "$green_id" >/dev/null &
stop_pid=$!
deadline=$(( $(date +%s) + 60 ))
until curl -fsS -m 2 "$admin/admin/status" 2>/dev/null | jq -e '.active == "blue"' >/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "no rollback within 60s of stopping green"
  sleep 0.2
done
rollback_time=$(since "$t")
wait "$stop_pid"
note "stop green -> rollback to blue" "${rollback_time}s (health interval 2s, fall 3)"
curl -fsS -m 5 "$admin/admin/history" | jq -e '[.. | objects | select(.trigger? == "auto-rollback")] | length > 0' >/dev/null ||
  fail "the history shows no auto-rollback"
color=$(curl -fsS -m 5 -o /dev/null -D - "$public/" | tr -d '\r' | awk -F': *' 'tolower($1)=="x-deployment-color"{print $2}')
[ "$color" = blue ] || fail "after the rollback, traffic goes to '$color'"
sleep 6 # one Docker health-check interval
[ "$(docker inspect -f '{{.State.Health.Status}}' "$proxy_id")" = healthy ] || fail "the proxy is not healthy after the rollback"
note "proxy health after rollback" "healthy"

section "deploy.sh fails: bad smoke test, then auto-rollback during the watch"
rc=0
WATCH=10s SMOKE_REQUESTS=3 SMOKE_EXPECT=version=never docker/deploy.sh v2 >"$work/deploy-bad.log" 2>&1 || rc=$?
tail -n 3 "$work/deploy-bad.log"
[ "$rc" -eq 1 ] || fail "deploy.sh with a failing smoke test exited $rc, want 1"
[ "$(curl -fsS -m 5 "$admin/admin/status" | jq -r .active)" = blue ] || fail "a failed smoke test moved live traffic"
# Green turns unhealthy right after the switch: the proxy rolls back within
# the watch window and deploy.sh exits 4.
(
  deadline=$(( $(date +%s) + 120 ))
  until curl -fsS -m 2 "$admin/admin/status" 2>/dev/null | jq -e '.active == "green"' >/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || exit 1
    sleep 0.2
  done
  curl -fsS -m 5 -X POST "$public/health/fail" >/dev/null
) &
breaker=$!
rc=0
WATCH=30s SMOKE_REQUESTS=3 docker/deploy.sh v2 >"$work/deploy-rollback.log" 2>&1 || rc=$?
wait "$breaker" || true
tail -n 4 "$work/deploy-rollback.log"
[ "$rc" -eq 4 ] || fail "deploy.sh exited $rc after an auto-rollback, want 4"
grep -q 'still runs v2' "$work/deploy-rollback.log" || fail "deploy.sh exit 4 does not say that the idle colour still runs v2"
[ "$(curl -fsS -m 5 "$admin/admin/status" | jq -r .active)" = blue ] || fail "blue is not live after the auto-rollback"
note "deploy.sh failure paths" "smoke fail -> exit 1, live untouched; auto-rollback -> exit 4"

section "logging-lite: VictoriaLogs and logship"
# The proxy has logged in ECS (BLUEGREEN_LOG_FORMAT=ecs, the compose default)
# with the access log on since the stack started. logship reads every line
# from each container's start, so what it ships can be counted against
# docker logs, and what VictoriaLogs stores against what it shipped.
t=$(now)
TARGETS="victorialogs logship backup" docker/build-extras.sh >"$work/build-extras.log" 2>&1 ||
  { cat "$work/build-extras.log"; fail "docker/build-extras.sh"; }
cat "$work/build-extras.log"
note "extras images (host Go + scratch)" "$(since "$t")s: $(grep -o 'bluegreen-[a-z]*:[^ ]* [0-9.]* MB' "$work/build-extras.log" | paste -sd, - | sed 's/,/, /g')"
dc --profile logging-lite up -d victorialogs logship
vl="http://127.0.0.1:$VICTORIALOGS_PORT"
wait_healthy() { # service seconds
  local id deadline=$(( $(date +%s) + $2 ))
  id=$(dc ps -q "$1")
  [ -n "$id" ] || fail "no container for $1"
  until [ "$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")" = healthy ]; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$1 is not healthy after $2s"
    sleep 1
  done
}
wait_healthy victorialogs 60
wait_healthy logship 60
logsql() { curl -fsS -m 10 "$vl/select/logsql/query" --data-urlencode "query=$1"; }
count() { logsql "$1 | stats count() as n" | jq -r '.n // "0"'; }

# Traffic: 502s answered by blue (live), then a cutover to green with a
# reason, then 502s answered by green.
n502=25
for i in $(seq 1 "$n502"); do
  code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' "$public/status/502")
  [ "$code" = 502 ] || fail "GET /status/502 through the proxy answered $code"
done
# Green was told to fail its health check by the exit-4 test (and the
# proxy routes nothing to it, not even previews): restart it, then wait for
# the proxy to see it healthy. logship follows the restarted container from
# where it stopped.
docker restart "$(dc ps -q app-green)" >/dev/null
deadline=$(( $(date +%s) + 60 ))
until curl -fsS -m 2 "$admin/admin/status" | jq -e '.colors.green.healthy > 0' >/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "green did not turn healthy again"
  sleep 0.5
done
gen_before=$(curl -fsS -m 5 "$admin/admin/status" | jq -r .generation)
reason="ci logging-lite $$"
# Forced: the 502s below are consecutive 5xx from green right after the
# cutover, which the data plane's evidence (every instance failing by
# outlier detection) would roll back at once; a forced cutover is never
# rolled back, so every 502 is green's.
curl -fsS -m 10 -X POST -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d "{\"to\":\"green\",\"force\":true,\"reason\":\"$reason\"}" "$admin/admin/cutover" >/dev/null
for i in $(seq 1 "$n502"); do
  curl -s -m 5 -o /dev/null "$public/status/502"
done

# Wait until logship has shipped all it read, and VictoriaLogs holds it all.
proxy_name=$(docker inspect -f '{{.Name}}' "$proxy_id" | sed 's|^/||')
deadline=$(( $(date +%s) + 90 ))
while :; do
  st=$(docker exec "$(dc ps -q logship)" /logship stats)
  read_n=$(jq .lines_read <<<"$st"); shipped=$(jq .lines_shipped <<<"$st")
  found=$(count '*')
  docker_lines=$(docker logs "$proxy_id" 2>&1 | wc -l)
  found_proxy=$(count "container.name:\"$proxy_name\"")
  if [ "$read_n" = "$shipped" ] && [ "$found" = "$shipped" ] && [ "$found_proxy" = "$docker_lines" ] &&
     [ "$(count "url.path:\"/status/502\" labels.color:green")" = "$n502" ]; then
    break
  fi
  [ "$(date +%s)" -lt "$deadline" ] || fail "log store incomplete: logship $st, VictoriaLogs $found, proxy lines $docker_lines vs stored $found_proxy"
  sleep 2
done
echo "logship: $st"
note "logging-lite: lines shipped/found" "$shipped shipped, $found found in VictoriaLogs (all containers); proxy: $docker_lines in docker logs, $found_proxy found"
blue502=$(count 'labels.color:blue http.response.status_code:502 url.path:"/status/502"')
green502=$(count 'labels.color:green http.response.status_code:502 url.path:"/status/502"')
[ "$blue502" = "$n502" ] && [ "$green502" = "$n502" ] || fail "502s by labels.color: blue $blue502, green $green502, want $n502 each"
note "logging-lite: 502s by labels.color" "blue $blue502, green $green502 (sent $n502 each)"
logsql "event.action:cutover event.reason:\"$reason\"" >"$work/cutover.json"
cat "$work/cutover.json"
[ "$(wc -l <"$work/cutover.json")" = 1 ] || fail "the cutover event is not in VictoriaLogs exactly once"
jq -e --arg g "$((gen_before + 1))" '."labels.color" == "green" and ."labels.from_color" == "blue" and ."labels.trigger" == "api" and ."labels.generation" == $g and ."log.level" == "warn"' \
  "$work/cutover.json" >/dev/null || fail "the cutover event lacks its fields"
note "logging-lite: cutover event" "found by event.action and event.reason, generation $((gen_before + 1)), blue -> green"
# Access records carry every ECS field.
logsql 'log.logger:access url.path:"/status/502" labels.color:green | limit 1' >"$work/access.json"
jq -e '."http.request.method" == "GET" and ."http.response.status_code" == "502" and (."event.duration" | tonumber) > 0 and
  ."client.ip" != null and ."labels.instance" != null and ."service.name" == "bluegreen" and ."event.dataset" == "bluegreen.access"' \
  "$work/access.json" >/dev/null || { cat "$work/access.json"; fail "an access record lacks ECS fields"; }

# The pitfall of the JSON-lines endpoint: without the Content-Type it
# answers 200 and stores nothing. Count what comes back.
marker="ci-ctype-$$"
doc="{\"@timestamp\":\"$(date -u +%Y-%m-%dT%H:%M:%SZ)\",\"message\":\"content-type check\",\"labels.marker\":\"$marker-X\"}"
q='_time_field=@timestamp&_msg_field=message&_stream_fields=labels.marker'
c1=$(curl -s -m 5 -o /dev/null -w '%{http_code}' --data-binary "${doc/X/plain}" "$vl/insert/jsonline?$q")
c2=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -H 'Content-Type: application/stream+json' --data-binary "${doc/X/stream}" "$vl/insert/jsonline?$q")
sleep 2
curl -fsS -m 5 "$vl/internal/force_flush" >/dev/null 2>&1 || true
plain=$(count "labels.marker:\"$marker-plain\""); stream=$(count "labels.marker:\"$marker-stream\"")
note "jsonline without/with Content-Type" "HTTP $c1 stored $plain; HTTP $c2 stored $stream"
[ "$stream" = 1 ] || fail "a JSON line sent with application/stream+json was not stored"

# The logging profile's Logstash pipeline cannot run here (no registry for
# its image). What its elasticsearch output sends, a bulk body of "create"
# actions for the data stream logs-bluegreen-default with the decoded ECS
# record plus Filebeat's container fields and the data_stream fields, is
# sent to VictoriaLogs' Elasticsearch bulk API and read back.
docker logs "$proxy_id" 2>&1 | grep '^{' | tail -n 200 | jq -c --arg c "$proxy_name" '
  {create: {_index: "logs-bluegreen-default"}},
  (. + {"container": {"name": $c, "image": {"name": "bluegreen"}}, "labels.pipeline": "logstash-bulk-'"$$"'",
        "data_stream": {"type": "logs", "dataset": "bluegreen", "namespace": "default"}})' >"$work/bulk.ndjson"
bulk_docs=$(( $(wc -l <"$work/bulk.ndjson") / 2 ))
resp=$(curl -fsS -m 30 -H 'Content-Type: application/x-ndjson' --data-binary @"$work/bulk.ndjson" \
  "$vl/insert/elasticsearch/_bulk?_msg_field=message&_time_field=@timestamp&_stream_fields=container.name")
jq -e '.errors == false' <<<"$resp" >/dev/null || fail "bulk answer: $resp"
deadline=$(( $(date +%s) + 30 ))
until [ "$(count "labels.pipeline:\"logstash-bulk-$$\"")" = "$bulk_docs" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "bulk: $bulk_docs sent, $(count "labels.pipeline:\"logstash-bulk-$$\"") found"
  sleep 1
done
bulk_cut=$(count "labels.pipeline:\"logstash-bulk-$$\" event.action:cutover")
note "Logstash-shaped bulk -> VictoriaLogs" "$bulk_docs sent, $bulk_docs found (cutover events among them: $bulk_cut)"

section "backup and restore of the state volume"
st_before=$(curl -fsS -m 5 "$admin/admin/status")
active_before=$(jq -r .active <<<"$st_before"); gen=$(jq -r .generation <<<"$st_before")
BACKUP_KEEP=2 dc --profile backup up -d backup
backup_id=$(dc ps -q backup)
deadline=$(( $(date +%s) + 30 ))
until [ -n "$(docker exec "$backup_id" /stateback list 2>/dev/null)" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || fail "no snapshot 30s after the backup service started"
  sleep 1
done
# Retention: two more snapshots, two kept.
docker exec -e BACKUP_KEEP=2 "$backup_id" /stateback snapshot >/dev/null
docker exec -e BACKUP_KEEP=2 "$backup_id" /stateback snapshot >/dev/null
kept=$(docker exec "$backup_id" /stateback list | wc -l)
[ "$kept" = 2 ] || fail "BACKUP_KEEP=2 kept $kept snapshots"
# Destroy the state: the proxy and the backup service go, then the volume.
dc --profile backup stop bluegreen backup >/dev/null 2>&1
dc --profile backup rm -f bluegreen backup >/dev/null 2>&1
docker volume rm "${project}_bluegreen-state" >/dev/null || fail "could not remove the state volume"
dc --profile restore run --rm restore | tee "$work/restore.log"
grep -q '^restored state-' "$work/restore.log" || fail "restore"
t=$(now)
dc up -d --no-deps bluegreen
proxy_id=$(dc ps -q bluegreen)
wait_healthy bluegreen 120
st_after=$(curl -fsS -m 5 "$admin/admin/status")
[ "$(jq -r .active <<<"$st_after")" = "$active_before" ] && [ "$(jq -r .generation <<<"$st_after")" = "$gen" ] ||
  fail "after the restore: $(jq -c '{active, generation}' <<<"$st_after"), want $active_before generation $gen"
color=$(curl -fsS -m 5 -o /dev/null -D - "$public/" | tr -d '\r' | awk -F': *' 'tolower($1)=="x-deployment-color"{print $2}')
[ "$color" = "$active_before" ] || fail "after the restore, traffic goes to '$color'"
note "backup -> rm state volume -> restore" "back on $active_before, generation $gen (proxy healthy $(since "$t")s after up); BACKUP_KEEP=2 kept $kept"

section "arm64"
if [ "${CI_DOCKER_ARM64:-1}" = 1 ]; then
  t=$(now)
  PLATFORM=linux/arm64 TARGETS=bluegreen BUILD_LOG="$work/build-arm64.log" docker/build.sh ci-arm64
  [ "$(docker image inspect -f '{{.Architecture}}' bluegreen:ci-arm64)" = arm64 ] || fail "the arm64 image is not arm64"
  cid=$(docker create bluegreen:ci-arm64)
  docker cp "$cid:/bluegreen" "$work/bluegreen-arm64"
  docker rm "$cid" >/dev/null
  # ELF e_machine (offset 18) 0xb7 = AArch64.
  machine=$(od -An -tx1 -j18 -N1 "$work/bluegreen-arm64" | tr -d ' ')
  [ "$machine" = b7 ] || fail "the arm64 image's binary is not AArch64 (e_machine $machine)"
  note "linux/arm64 image build" "$(since "$t")s, AArch64 binary, $(docker image inspect -f '{{.Size}}' bluegreen:ci-arm64 | awk '{printf "%.1f MB", $1/1e6}')"
else
  t=$(now)
  GOARCH=arm64 go build ./...
  note "GOARCH=arm64 go build ./..." "$(since "$t")s"
fi

section "summary"
note "docker stage runtime" "$(( $(date +%s) - stage_start ))s"
echo
cat "$summary"
