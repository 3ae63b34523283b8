# Writes kibana.ndjson next to this file (kept in git): the data view, saved
# visualizations, saved search and dashboard that elk-setup imports.
#   python3 docker/logging/elk/setup/make-kibana-ndjson.py
import json
IDX = "bluegreen-logs"
ref = [{"name": "kibanaSavedObjectMeta.searchSourceJSON.index", "type": "index-pattern", "id": IDX}]
def source(query):
    return json.dumps({"query": {"query": query, "language": "kuery"}, "filter": [],
                       "indexRefName": "kibanaSavedObjectMeta.searchSourceJSON.index"})
def xy(kind, title, query, metric, splits, ylabel):
    aggs = [metric, {"id": "2", "enabled": True, "type": "date_histogram", "schema": "segment",
                     "params": {"field": "@timestamp", "interval": "auto", "min_doc_count": 1, "extended_bounds": {}}}]
    for i, f in enumerate(splits):
        aggs.append({"id": str(3 + i), "enabled": True, "type": "terms", "schema": "group",
                     "params": {"field": f, "size": 10, "order": "desc", "orderBy": "1"}})
    params = {
        "type": kind, "addTooltip": True, "addLegend": True, "legendPosition": "right", "times": [],
        "addTimeMarker": False,
        "grid": {"categoryLines": False},
        "categoryAxes": [{"id": "CategoryAxis-1", "type": "category", "position": "bottom", "show": True,
                          "scale": {"type": "linear"}, "labels": {"show": True, "filter": True, "truncate": 100}, "title": {}}],
        "valueAxes": [{"id": "ValueAxis-1", "name": "LeftAxis-1", "type": "value", "position": "left", "show": True,
                       "scale": {"type": "linear", "mode": "normal"}, "labels": {"show": True, "rotate": 0, "filter": False, "truncate": 100},
                       "title": {"text": ylabel}}],
        "seriesParams": [{"show": True, "type": kind, "mode": "stacked" if kind == "histogram" else "normal",
                          "data": {"label": ylabel, "id": "1"}, "valueAxis": "ValueAxis-1",
                          "drawLinesBetweenPoints": True, "lineWidth": 2, "showCircles": True}],
    }
    return {"title": title, "type": kind, "aggs": aggs, "params": params}
objs = []
objs.append({"type": "index-pattern", "id": IDX, "attributes": {"title": "logs-bluegreen-*", "name": "bluegreen logs", "timeFieldName": "@timestamp"}, "references": []})
count = {"id": "1", "enabled": True, "type": "count", "schema": "metric", "params": {}}
vis = [
    ("bluegreen-requests-per-color", "Requests per colour", "log.logger : \"access\"", "histogram", count, ["labels.color"], "requests"),
    ("bluegreen-5xx-by-color-instance", "5xx by colour and instance", "log.logger : \"access\" and http.response.status_code >= 500", "histogram", count, ["labels.color", "labels.instance"], "5xx answers"),
    ("bluegreen-latency", "Latency p50 / p99 per colour (event.duration, ns)", "log.logger : \"access\"", "line",
     {"id": "1", "enabled": True, "type": "percentiles", "schema": "metric", "params": {"field": "event.duration", "percents": [50, 99]}}, ["labels.color"], "ns"),
]
for vid, title, q, kind, metric, splits, ylabel in vis:
    objs.append({"type": "visualization", "id": vid, "attributes": {
        "title": title, "description": "", "uiStateJSON": "{}", "version": 1,
        "visState": json.dumps(xy(kind, title, q, metric, splits, ylabel)),
        "kibanaSavedObjectMeta": {"searchSourceJSON": source(q)}}, "references": ref})
objs.append({"type": "search", "id": "bluegreen-switches", "attributes": {
    "title": "Cutovers and rollbacks", "description": "Every switch of the active colour, with its trigger and reason",
    "columns": ["event.action", "labels.color", "labels.from_color", "labels.trigger", "event.reason", "labels.generation"],
    "sort": [["@timestamp", "desc"]],
    "kibanaSavedObjectMeta": {"searchSourceJSON": source("event.action : (\"cutover\" or \"rollback\")")}}, "references": ref})
panels, refs = [], []
layout = [("bluegreen-requests-per-color", "visualization", 0, 0), ("bluegreen-5xx-by-color-instance", "visualization", 24, 0),
          ("bluegreen-latency", "visualization", 0, 15), ("bluegreen-switches", "search", 24, 15)]
for i, (oid, typ, x, y) in enumerate(layout):
    panels.append({"version": "8.19.3", "type": typ, "gridData": {"x": x, "y": y, "w": 24, "h": 15, "i": str(i + 1)},
                   "panelIndex": str(i + 1), "embeddableConfig": {}, "panelRefName": f"panel_{i}"})
    refs.append({"name": f"panel_{i}", "type": typ, "id": oid})
objs.append({"type": "dashboard", "id": "bluegreen", "attributes": {
    "title": "bluegreen", "description": "Requests per colour, 5xx by colour and instance, latency, cutovers and rollbacks",
    "panelsJSON": json.dumps(panels), "optionsJSON": json.dumps({"useMargins": True, "syncColors": False, "hidePanelTitles": False}),
    "timeRestore": True, "timeFrom": "now-1h", "timeTo": "now", "refreshInterval": {"pause": False, "value": 30000},
    "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps({"query": {"query": "", "language": "kuery"}, "filter": []})}},
    "references": refs})
import os
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "kibana.ndjson"), "w") as f:
    for o in objs:
        f.write(json.dumps(o, separators=(",", ":")) + "\n")
