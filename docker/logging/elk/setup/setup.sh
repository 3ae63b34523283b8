#!/usr/bin/env bash
# elk-setup (profile logging): a one-shot service, run by compose after
# Elasticsearch is healthy. Idempotent: every run puts the same objects.
#   1. the built-in user kibana_system gets its password (secret);
#   2. the role and user logstash_writer (secret), allowed to write the
#      bluegreen data streams only;
#   3. the ILM policy bluegreen-logs (rollover daily or at 10 GB, delete after
#      LOG_RETENTION) and the index template logs-bluegreen (data stream, ECS
#      mappings); the data stream logs-bluegreen-default;
#   4. once Kibana is available: the data view, the saved searches and
#      visualizations and the dashboard "bluegreen" (kibana.ndjson).
# Passwords must be letters and digits (docker/README.md generates them so).
set -euo pipefail
es="${ELASTICSEARCH_URL:-http://elasticsearch:9200}"
kb="${KIBANA_URL:-http://kibana:5601}"
here="$(dirname "$0")"
secret() { tr -d '\r\n' <"/run/secrets/$1"; }
elastic=$(secret elastic_password)
kibana_pw=$(secret kibana_system_password)
writer_pw=$(secret logstash_writer_password)
for pw in "$elastic" "$kibana_pw" "$writer_pw"; do
  [[ "$pw" =~ ^[A-Za-z0-9]{12,}$ ]] || { echo "elk-setup: passwords must be 12 or more letters and digits" >&2; exit 2; }
done
es_req() { # METHOD PATH [curl args]
  local m="$1" p="$2"; shift 2
  curl -fsS -u "elastic:$elastic" -H 'Content-Type: application/json' -X "$m" "$es$p" "$@"; echo
}
step() { printf 'elk-setup: %s\n' "$*"; }

step "waiting for Elasticsearch"
until curl -fsS -u "elastic:$elastic" "$es/_cluster/health?wait_for_status=yellow&timeout=5s" >/dev/null; do sleep 3; done

step "user kibana_system"
es_req POST /_security/user/kibana_system/_password -d "{\"password\":\"$kibana_pw\"}"

step "role and user logstash_writer"
es_req PUT /_security/role/logstash_writer -d '{
  "cluster": ["monitor"],
  "indices": [{"names": ["logs-bluegreen-*"], "privileges": ["create_doc", "auto_configure", "view_index_metadata"]}]
}'
es_req PUT /_security/user/logstash_writer -d "{\"password\":\"$writer_pw\",\"roles\":[\"logstash_writer\"],\"full_name\":\"Logstash writer (bluegreen)\"}"

step "ILM policy bluegreen-logs (delete after ${LOG_RETENTION:-14d})"
sed "s/@RETENTION@/${LOG_RETENTION:-14d}/" "$here/ilm-policy.json" | es_req PUT /_ilm/policy/bluegreen-logs -d @-

step "index template logs-bluegreen and data stream logs-bluegreen-default"
es_req PUT /_index_template/logs-bluegreen -d @"$here/index-template.json"
if ! curl -fsS -o /dev/null -u "elastic:$elastic" "$es/_data_stream/logs-bluegreen-default"; then
  es_req PUT /_data_stream/logs-bluegreen-default
fi

step "waiting for Kibana"
until curl -fsS -u "elastic:$elastic" "$kb/api/status" 2>/dev/null | grep -q '"level":"available"'; do sleep 5; done
step "Kibana data view and dashboard"
curl -fsS -u "elastic:$elastic" -H 'kbn-xsrf: bluegreen' -X POST \
  "$kb/api/saved_objects/_import?overwrite=true" -F "file=@$here/kibana.ndjson"; echo
step "done"
