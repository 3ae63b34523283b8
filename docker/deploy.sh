#!/usr/bin/env bash
# deploy.sh: release VERSION of the app to the idle colour of a running
# docker/compose.yml stack, then switch live traffic to it, at once or (with
# --canary) step by step.
#
#   docker/deploy.sh v2
#   docker/deploy.sh --canary --steps 5,25,50,100 --interval 2m v2
#
# Options:
#   --canary               a progressive rollout instead of step 5's cutover
#   --steps LIST           its percentages, the last one 100 [CANARY_STEPS, or the proxy's 1,5,25,50,100]
#   --interval D           how long each step holds [CANARY_INTERVAL, or the proxy's 1m]
#   --max-error-ratio R    abort above this instance error ratio [CANARY_MAX_ERROR_RATIO, or 0.01]
#   --max-p99 D            abort above this p99 latency [CANARY_MAX_P99, or no limit]
#   --min-requests N       requests a step needs to pass [CANARY_MIN_REQUESTS, or 100]
#   --timeout D            stop waiting for the rollout after D [CANARY_TIMEOUT, or
#                          twice steps x interval plus 2m]; it goes on in the proxy
#   --dry-run              check the arguments, print the plan, touch nothing
#
# 1. asks the proxy which colour is active (bluegreen status --json, run in the
#    proxy container); the other one is idle;
# 2. recreates the idle app service with image tag VERSION
#    (docker-compose up -d --no-deps app-<idle>);
# 3. waits until the proxy's own health checks see the new containers healthy;
# 4. smoke-tests them through the public port with the preview header, which
#    the proxy routes to the idle colour: every answer must be 2xx and come
#    from the idle colour (X-Deployment-Color);
# 5. cuts over with a reason and watches the new colour for WATCH; the proxy
#    rolls back by itself if the new colour loses all healthy instances.
#    With --canary: runs "bluegreen rollout --to <idle> --watch" instead: a
#    growing share of the clients goes to the idle colour, each step judged by
#    the proxy's own error ratio and p99; the last step is the cutover, then
#    WATCH as above. An abort puts every client back on the live colour.
#
# Exit status: 0 deployed and live; 1 failed before the switch (live traffic
# never moved; the idle colour is put back on its previous tag); 2 bad usage;
# 4 failed after the switch, traffic is back on the previous colour and the
# idle colour still runs VERSION, unhealthy (STOP_FAILED=1 stops it); with
# --canary also: the rollout was aborted (or ended by another switch), every
# client is back on the live colour; 5 (--canary) the rollout still runs or
# is paused when the wait ended: nothing was undone, it goes on in the proxy.
#
# The tags each colour runs afterwards are recorded in docker/.env (BLUE_TAG,
# GREEN_TAG), which docker-compose reads: a later "up -d" in a new shell keeps
# them instead of moving a colour back to "latest".
#
# Environment (defaults in brackets):
#   COMPOSE              compose command ["docker-compose"; "docker compose" works]
#   COMPOSE_FILE         compose file(s) [docker/compose.yml next to this script]
#   COMPOSE_PROJECT_NAME project name [bluegreen, as in docker/README.md]
#   PUBLIC_URL           the proxy's public address [http://127.0.0.1:${PUBLIC_PORT:-8080}]
#   PREVIEW_HEADER       header that routes to the idle colour [X-Bluegreen-Preview]
#   WAIT_HEALTHY         how long the new containers may take to turn healthy [120s]
#   SMOKE_REQUESTS       smoke-test requests [20]
#   SMOKE_PATH           path they request [/]
#   SMOKE_EXPECT         text every smoke answer must contain [none]
#   WATCH                how long to watch after the switch [60s]
#   REASON               reason recorded in the history ["deploy VERSION"]
#   KEEP_FAILED=1        leave a failed idle colour on VERSION (for debugging)
#   STOP_FAILED=1        after exit 4, stop the idle colour that runs VERSION
#   ENV_FILE             where the tags are recorded [docker/.env; "" = nowhere]
# The token for the cutover is the proxy container's own secret file.
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; }
bad() { echo "deploy: $*" >&2; exit 2; }
CANARY="${CANARY:-0}" DRY_RUN=0 VERSION="" canary_opts=""
CANARY_STEPS="${CANARY_STEPS:-}" CANARY_INTERVAL="${CANARY_INTERVAL:-}" CANARY_TIMEOUT="${CANARY_TIMEOUT:-}"
CANARY_MAX_ERROR_RATIO="${CANARY_MAX_ERROR_RATIO:-}" CANARY_MAX_P99="${CANARY_MAX_P99:-}" CANARY_MIN_REQUESTS="${CANARY_MIN_REQUESTS:-}"
while [ $# -gt 0 ]; do
  opt="$1" val=""
  case "$opt" in
    --*=*) val="${opt#*=}" opt="${opt%%=*}" ;;
    --steps|--interval|--max-error-ratio|--max-p99|--min-requests|--timeout)
      if [ $# -lt 2 ] || [[ "$2" == -* ]]; then bad "$opt needs a value"; fi
      val="$2"; shift ;;
  esac
  case "$opt" in
    -h|--help) usage; exit 0 ;;
    --canary) CANARY=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --steps) CANARY_STEPS="$val" ;;
    --interval) CANARY_INTERVAL="$val" ;;
    --max-error-ratio) CANARY_MAX_ERROR_RATIO="$val" ;;
    --max-p99) CANARY_MAX_P99="$val" ;;
    --min-requests) CANARY_MIN_REQUESTS="$val" ;;
    --timeout) CANARY_TIMEOUT="$val" ;;
    --) shift
      if [ $# -gt 1 ] || { [ $# -eq 1 ] && [ -n "$VERSION" ]; }; then bad "one VERSION only, got: ${VERSION:+$VERSION }$*"; fi
      VERSION="${1:-$VERSION}"; break ;;
    -*) usage >&2; bad "unknown option $opt" ;;
    *) [ -z "$VERSION" ] || bad "one VERSION only, got $VERSION and $opt"; VERSION="$opt" ;;
  esac
  case "$opt" in --steps|--interval|--max-error-ratio|--max-p99|--min-requests|--timeout) canary_opts+=" $opt" ;; esac
  shift
done
[ -n "$VERSION" ] || { usage >&2; exit 2; }
if ! [[ "$VERSION" =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]]; then
  bad "$VERSION is not a valid image tag"
fi
case "$CANARY" in 0|1) ;; *) bad "CANARY must be 0 or 1, got '$CANARY'" ;; esac
[ "$CANARY" = 1 ] || [ -z "$canary_opts" ] || bad "${canary_opts# } only apply with --canary"

here="$(cd "$(dirname "$0")" && pwd)"
# One project name everywhere: the README's commands use -p bluegreen.
export COMPOSE_PROJECT_NAME="${COMPOSE_PROJECT_NAME:-bluegreen}"
ENV_FILE="${ENV_FILE-$here/.env}"
read -r -a COMPOSE_CMD <<<"${COMPOSE:-docker-compose}"
compose_args=()
[ -z "${COMPOSE_FILE:-}" ] && compose_args+=(-f "$here/compose.yml")
PUBLIC_URL="${PUBLIC_URL:-http://127.0.0.1:${PUBLIC_PORT:-8080}}"
PREVIEW_HEADER="${PREVIEW_HEADER:-X-Bluegreen-Preview}"
WAIT_HEALTHY="${WAIT_HEALTHY:-120s}"
SMOKE_REQUESTS="${SMOKE_REQUESTS:-20}"
SMOKE_PATH="${SMOKE_PATH:-/}"
SMOKE_EXPECT="${SMOKE_EXPECT:-}"
WATCH="${WATCH:-60s}"
REASON="${REASON:-deploy $VERSION}"

log() { printf '%s deploy: %s\n' "$(date -u +%H:%M:%S)" "$*"; }
dc() { "${COMPOSE_CMD[@]}" "${compose_args[@]}" "$@"; }
# The bluegreen CLI, run inside the proxy container: it reaches the admin API
# on loopback and reads the token from /run/secrets/admin_token.
bg() { dc exec -T bluegreen /bluegreen "$@"; }
seconds() { # 90s, 2m, 1m30s -> seconds
  local d="$1" total=0 n
  while [[ "$d" =~ ^([0-9]+)([hms])(.*)$ ]]; do
    n=${BASH_REMATCH[1]}
    case ${BASH_REMATCH[2]} in h) n=$((n * 3600)) ;; m) n=$((n * 60)) ;; esac
    total=$((total + n)); d=${BASH_REMATCH[3]}
  done
  [ -z "$d" ] || { echo "deploy: bad duration $1 (use 90s, 2m, 1m30s)" >&2; exit 2; }
  echo "$total"
}
wait_secs=$(seconds "$WAIT_HEALTHY")
watch_secs=$(seconds "$WATCH")

# The rollout's settings, checked here so that a typo fails before anything
# moves; empty ones are left to the proxy's defaults.
rollout_args=()
if [ "$CANARY" = 1 ]; then
  nsteps=5 interval_secs=60
  if [ -n "$CANARY_STEPS" ]; then
    [[ "$CANARY_STEPS" =~ ^[0-9]{1,3}(,[0-9]{1,3})*$ ]] || bad "--steps must be percentages such as 5,25,50,100, got '$CANARY_STEPS'"
    prev=0 nsteps=0
    IFS=, read -r -a step_list <<<"$CANARY_STEPS"
    for p in "${step_list[@]}"; do
      p=$((10#$p))
      if [ "$p" -le "$prev" ] || [ "$p" -gt 100 ]; then bad "--steps must rise strictly from 1 to 100, got '$CANARY_STEPS'"; fi
      prev=$p nsteps=$((nsteps + 1))
    done
    [ "$prev" = 100 ] || bad "--steps must end with 100 (the cutover), got '$CANARY_STEPS'"
    rollout_args+=(--steps "$CANARY_STEPS")
  fi
  if [ -n "$CANARY_INTERVAL" ]; then
    interval_secs=$(seconds "$CANARY_INTERVAL")
    [ "$interval_secs" -gt 0 ] || bad "--interval must be longer than 0"
    rollout_args+=(--interval "$CANARY_INTERVAL")
  fi
  if [ -n "$CANARY_MAX_ERROR_RATIO" ]; then
    [[ "$CANARY_MAX_ERROR_RATIO" =~ ^(0(\.[0-9]+)?|1(\.0+)?|\.[0-9]+)$ ]] || bad "--max-error-ratio must be a ratio from 0 to 1 such as 0.01, got '$CANARY_MAX_ERROR_RATIO'"
    rollout_args+=(--max-error-ratio "$CANARY_MAX_ERROR_RATIO")
  fi
  if [ -n "$CANARY_MAX_P99" ]; then
    [[ "$CANARY_MAX_P99" =~ ^([0-9]+(\.[0-9]+)?(ms|s|m))+$ ]] || bad "--max-p99 must be a duration such as 500ms or 1.5s, got '$CANARY_MAX_P99'"
    rollout_args+=(--max-p99 "$CANARY_MAX_P99")
  fi
  if [ -n "$CANARY_MIN_REQUESTS" ]; then
    [[ "$CANARY_MIN_REQUESTS" =~ ^[1-9][0-9]{0,8}$ ]] || bad "--min-requests must be a positive whole number, got '$CANARY_MIN_REQUESTS'"
    rollout_args+=(--min-requests "$CANARY_MIN_REQUESTS")
  fi
  if [ -n "$CANARY_TIMEOUT" ]; then
    canary_secs=$(seconds "$CANARY_TIMEOUT")
  else
    canary_secs=$((2 * nsteps * interval_secs + 120))
  fi
  rollout_args+=(--reason "$REASON" --watch)
fi

if [ "$DRY_RUN" = 1 ]; then
  echo "deploy: dry run: VERSION=$VERSION project=$COMPOSE_PROJECT_NAME public=$PUBLIC_URL"
  echo "deploy: would start app-<idle> on $VERSION, wait up to ${wait_secs}s for health, send $SMOKE_REQUESTS smoke requests to $SMOKE_PATH"
  if [ "$CANARY" = 1 ]; then
    printf 'deploy: would run in the proxy container: bluegreen rollout --to <idle>'
    printf ' %q' "${rollout_args[@]}"
    printf '\ndeploy: would wait up to %ss for it, then watch %ss\n' "$canary_secs" "$watch_secs"
  else
    echo "deploy: would run in the proxy container: bluegreen cutover --to <idle> --reason '$REASON' --wait-healthy 30s --watch $WATCH"
  fi
  exit 0
fi

for tool in jq curl docker; do
  command -v "$tool" >/dev/null || { echo "deploy: needs $tool" >&2; exit 2; }
done

# 1. Who is live?
if [ -z "$(dc ps -q bluegreen 2>/dev/null)" ]; then
  running=$(docker ps --filter label=com.docker.compose.service=bluegreen --format '{{.Label "com.docker.compose.project"}}' | sort -u | paste -sd, -)
  echo "deploy: no proxy container in compose project '$COMPOSE_PROJECT_NAME'${running:+; projects with one: $running (set COMPOSE_PROJECT_NAME)}" >&2
  exit 1
fi
status=$(bg status --json) || { echo "deploy: cannot read the proxy's status in project '$COMPOSE_PROJECT_NAME'" >&2; exit 1; }
active=$(jq -r .active <<<"$status")
case "$active" in
  blue) idle=green ;;
  green) idle=blue ;;
  *) echo "deploy: unexpected active colour '$active'" >&2; exit 1 ;;
esac
if [ "$CANARY" = 1 ]; then
  # One rollout at a time: refuse before anything moves, not after the new
  # version is up.
  ro_phase=$(bg rollout status --json | jq -r .phase) || { echo "deploy: cannot read the proxy's rollout status (is it older than progressive delivery?)" >&2; exit 1; }
  case "$ro_phase" in
    running|paused) echo "deploy: a rollout is already $ro_phase; see: bluegreen rollout status (in the proxy container)" >&2; exit 1 ;;
  esac
fi

# Keep each colour on the tag it runs now; only the idle one changes.
tag_of() {
  local id
  id=$(dc ps -q "app-$1" | head -n 1)
  [ -n "$id" ] || { echo ""; return; }
  local image
  image=$(docker inspect -f '{{.Config.Image}}' "$id")
  echo "${image##*:}"
}
blue_tag=$(tag_of blue); green_tag=$(tag_of green)
export BLUE_TAG="${blue_tag:-${BLUE_TAG:-latest}}" GREEN_TAG="${green_tag:-${GREEN_TAG:-latest}}"
if [ "$idle" = blue ]; then old_tag=$BLUE_TAG live_tag=$GREEN_TAG; else old_tag=$GREEN_TAG live_tag=$BLUE_TAG; fi
log "live: $active; deploying $VERSION to $idle (now on ${old_tag:-nothing})"

set_idle_tag() { if [ "$idle" = blue ]; then export BLUE_TAG="$1"; else export GREEN_TAG="$1"; fi; }

# record_tags writes the running tags into ENV_FILE (other lines kept).
record_tags() {
  [ -n "$ENV_FILE" ] || return 0
  local tmp
  tmp=$(mktemp)
  { [ -f "$ENV_FILE" ] && grep -v -e '^BLUE_TAG=' -e '^GREEN_TAG=' "$ENV_FILE"; echo "BLUE_TAG=$BLUE_TAG"; echo "GREEN_TAG=$GREEN_TAG"; } >"$tmp" || true
  if cat "$tmp" >"$ENV_FILE"; then
    log "recorded BLUE_TAG=$BLUE_TAG GREEN_TAG=$GREEN_TAG in $ENV_FILE"
  else
    log "could not write $ENV_FILE; export BLUE_TAG=$BLUE_TAG GREEN_TAG=$GREEN_TAG before the next up"
  fi
  rm -f "$tmp"
}

abort() { # before the switch: live traffic never moved
  log "FAILED before the switch: $*"
  if [ "${KEEP_FAILED:-0}" != 1 ] && [ -n "$old_tag" ] && [ "$old_tag" != "$VERSION" ]; then
    log "putting $idle back on $old_tag"
    set_idle_tag "$old_tag"
    dc up -d --no-deps "app-$idle" || log "could not restore app-$idle to $old_tag"
  fi
  record_tags
  exit 1
}

# failed_idle: after exit 4, app-<idle> still runs VERSION, and is unhealthy
# (or, after an aborted rollout, failed the proxy's analysis).
failed_idle() {
  record_tags
  if [ "${STOP_FAILED:-0}" = 1 ]; then
    log "stopping app-$idle ($VERSION)"
    dc stop "app-$idle" || log "could not stop app-$idle"
    return
  fi
  log "app-$idle still runs $VERSION and is probably ${failed_how:-unhealthy}; live traffic is on $final."
  log "to stop it: ${COMPOSE_CMD[*]} ${compose_args[*]} -p $COMPOSE_PROJECT_NAME stop app-$idle (or run deploy.sh with STOP_FAILED=1);"
  if [ -n "$old_tag" ] && [ "$old_tag" != "$VERSION" ]; then
    log "to put it back on $old_tag: ${idle^^}_TAG=$old_tag ${COMPOSE_CMD[*]} ${compose_args[*]} -p $COMPOSE_PROJECT_NAME up -d --no-deps app-$idle"
  fi
}

# 2. Start the new version on the idle colour.
set_idle_tag "$VERSION"
dc up -d --no-deps "app-$idle" || abort "could not start app-$idle:$VERSION"

# 3. Healthy: Docker's health check of every new container, then the proxy's
# own checks, with results taken after the containers started.
deadline=$(( $(date +%s) + wait_secs ))
ids=$(dc ps -q "app-$idle")
[ -n "$ids" ] || abort "no container for app-$idle"
started=0
for id in $ids; do
  until [ "$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' "$id")" = healthy ]; do
    [ "$(date +%s)" -lt "$deadline" ] || abort "container $id not healthy after $WAIT_HEALTHY"
    [ "$(docker inspect -f '{{.State.Status}}' "$id")" = running ] || abort "container $id is $(docker inspect -f '{{.State.Status}}' "$id")"
    sleep 1
  done
  s=$(docker inspect -f '{{.State.StartedAt}}' "$id" | jq -R 'sub("\\.[0-9]+";"") | fromdateiso8601')
  [ "$s" -gt "$started" ] && started=$s
done
log "app-$idle containers healthy; waiting for the proxy's health checks"
# shellcheck disable=SC2016 # $c, $x and $t are jq's variables
jq_fresh='.colors[$c] as $x | $x.total > 0 and $x.healthy == $x.total and
  all($x.instances[]; .last_check | sub("\\.[0-9]+";"") | fromdateiso8601 > $t)'
until bg status --json | jq -e --arg c "$idle" --argjson t "$started" "$jq_fresh" >/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || abort "the proxy does not see $idle healthy after $WAIT_HEALTHY"
  sleep 1
done
log "proxy sees $idle healthy"

# 4. Smoke test through the proxy with the preview header.
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for i in $(seq 1 "$SMOKE_REQUESTS"); do
  code=$(curl -sS -m 5 -o "$tmp/body" -D "$tmp/headers" -w '%{http_code}' \
    -H "$PREVIEW_HEADER: 1" "$PUBLIC_URL$SMOKE_PATH") || abort "smoke request $i: curl failed"
  color=$(tr -d '\r' <"$tmp/headers" | awk -F': *' 'tolower($1)=="x-deployment-color"{print $2}')
  [[ "$code" == 2* ]] || abort "smoke request $i: HTTP $code"
  [ "$color" = "$idle" ] || abort "smoke request $i: answered by '${color:-?}', not $idle (the proxy honours the preview header only from BLUEGREEN_PREVIEW_FROM, private networks by default)"
  if [ -n "$SMOKE_EXPECT" ] && ! grep -qF -- "$SMOKE_EXPECT" "$tmp/body"; then
    abort "smoke request $i: answer lacks '$SMOKE_EXPECT'"
  fi
done
log "smoke test passed: $SMOKE_REQUESTS requests answered by $idle"

# 5c. --canary: a progressive rollout instead of the cutover. The CLI exits 0
# when its last step (the cutover) is done, 4 when it was aborted (by the
# proxy's analysis or by hand) or ended by another switch, 1 when the proxy
# refused to start it, 3 when the admin API is unreachable.
canary() {
  local rc=0 phase
  log "rollout to $idle: bluegreen rollout --to $idle ${rollout_args[*]} (waiting up to ${canary_secs}s)"
  timeout "$canary_secs" "${COMPOSE_CMD[@]}" "${compose_args[@]}" exec -T bluegreen /bluegreen rollout --to "$idle" "${rollout_args[@]}" || rc=$?
  final=$(bg status --json 2>/dev/null | jq -r .active 2>/dev/null || echo unknown)
  phase=$(bg rollout status --json 2>/dev/null | jq -r .phase 2>/dev/null || echo unknown)
  case "$rc" in
    0)
      [ "$final" = "$idle" ] || { log "FAILED: the rollout completed but $final is live"; bg history --limit 3 2>/dev/null || true; failed_idle; exit 4; }
      log "rollout completed: $idle live on $VERSION; watching for $WATCH"
      local until=$(( $(date +%s) + watch_secs ))
      while [ "$(date +%s)" -lt "$until" ]; do
        sleep 2
        final=$(bg status --json 2>/dev/null | jq -r .active 2>/dev/null || echo unknown)
        if [ "$final" != "$idle" ] && [ "$final" != unknown ]; then
          log "FAILED: the proxy rolled back to $final during the watch"
          bg history --limit 3 2>/dev/null || true
          failed_idle; exit 4
        fi
      done
      log "done: $idle live on $VERSION; $active stays on $live_tag as the rollback target"
      record_tags; exit 0 ;;
    4)
      if [ "$final" = "$idle" ]; then # ended by an explicit cutover to the new version
        log "the rollout was ended by a cutover to $idle, which is live on $VERSION"
        bg history --limit 3 2>/dev/null || true
        record_tags; exit 0
      fi
      # The evidence: how the rollout ended (the analysis writes what it
      # measured into the reason, e.g. "green 5xx 4.2% > 1% over 812
      # requests") and the history entries.
      log "FAILED: the rollout to $idle did not complete; every client is back on $final"
      bg rollout status 2>/dev/null || true
      bg history --limit 3 2>/dev/null || true   # newest first
      failed_how="failing (see the reason above)"
      failed_idle
      log "to retry after a fix: deploy.sh --canary with a new version; to look at $idle first: curl -H '$PREVIEW_HEADER: 1' $PUBLIC_URL$SMOKE_PATH"
      exit 4 ;;
  esac
  case "$phase" in
    running|paused)
      # Timed out (124) or the watch lost the proxy: nothing is undone.
      log "STILL RUNNING: the rollout to $idle is $phase (exit $rc); nothing was undone, it goes on in the proxy"
      bg rollout status 2>/dev/null || true
      log "decide with: ${COMPOSE_CMD[*]} ${compose_args[*]} -p $COMPOSE_PROJECT_NAME exec bluegreen /bluegreen rollout promote|resume|abort --reason '...'"
      record_tags
      exit 5 ;;
  esac
  if [ "$final" = "$active" ]; then
    abort "rollout refused (exit $rc)"
  fi
  # Unknown outcome with the idle colour live: the rollout's cutover may
  # have happened as the watch lost the proxy; treat it as the cutover path.
  log "the rollout's outcome is unclear (exit $rc, phase $phase, live: $final); rolling back to $active"
  bg cutover --to "$active" --reason "deploy $VERSION failed" --wait-healthy 30s || bg cutover --to "$active" --force --reason "deploy $VERSION failed"
  failed_idle
  exit 4
}
if [ "$CANARY" = 1 ]; then canary; fi

# 5. Switch and watch. The CLI exits 4 when the proxy rolled back during the
# watch, 1 when the switch was refused, 3 when the admin API is unreachable.
log "cutover to $idle (watch $WATCH)"
rc=0
bg cutover --to "$idle" --reason "$REASON" --wait-healthy 30s --watch "$WATCH" || rc=$?
final=$(bg status --json 2>/dev/null | jq -r .active 2>/dev/null || echo unknown)
case "$rc" in
  0)
    if [ "$final" = "$idle" ]; then
      log "done: $idle live on $VERSION; $active stays on $live_tag as the rollback target"
      record_tags
      exit 0
    fi
    log "FAILED: the watch ended with $final live"; exit 4 ;;
  4)
    log "FAILED: the proxy rolled back to $final during the watch"
    bg history --limit 3 2>/dev/null || true   # newest first
    failed_idle
    exit 4 ;;
esac
if [ "$final" = "$active" ]; then
  abort "cutover refused (exit $rc)"
fi
# Unknown outcome after the switch: go back explicitly.
log "FAILED after the switch (exit $rc, live: $final); rolling back to $active"
bg cutover --to "$active" --reason "deploy $VERSION failed" --wait-healthy 30s || bg cutover --to "$active" --force --reason "deploy $VERSION failed"
failed_idle
exit 4
