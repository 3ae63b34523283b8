#!/usr/bin/env bash
# Turns on etcd's authentication for the fleet, once, after the first
# "docker-compose ... --profile fleet up -d": creates user root, user
# bluegreen with a role that may read and write only the fleet's prefix,
# and enables auth. Idempotent: existing users and roles are kept.
#
# Usage: docker/fleet-auth.sh [COMPOSE_PROJECT]   (default bluegreen)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
project="${1:-bluegreen}"
prefix="/${FLEET_PREFIX:-bluegreen/demo}"
s="$here/secrets/etcd"
compose=(docker-compose -f "$here/compose.yml" -f "$here/compose.fleet.yml" -p "$project" --profile fleet)
ctl() {
  "${compose[@]}" exec -T etcd-1 /usr/local/bin/etcdctl --endpoints=https://127.0.0.1:2379 \
    --cacert=/run/secrets/etcd_ca --cert=/run/secrets/etcd_root_cert --key=/run/secrets/etcd_root_key "$@"
}
root_pw="$(cat "$s/root_password")"
bg_pw="$(cat "$s/bluegreen_password")"
ctl user get root >/dev/null 2>&1 || ctl user add "root:$root_pw"
ctl user grant-role root root >/dev/null 2>&1 || true
ctl role get bluegreen >/dev/null 2>&1 || ctl role add bluegreen
ctl role grant-permission bluegreen --prefix=true readwrite "$prefix/"
ctl user get bluegreen >/dev/null 2>&1 || ctl user add "bluegreen:$bg_pw"
ctl user grant-role bluegreen bluegreen
ctl auth enable || true
echo "etcd auth enabled; user bluegreen may read and write $prefix/"
