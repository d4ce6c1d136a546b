#!/usr/bin/env bash
# test-http.sh - wcache-proxy at the HTTP level with curl: every Status the
# proxy answers (200, 400, 404, 405, 410, 414, 422, 429, 504), the LIST
# table of the semantics notes (resourceVersion unset / 0 / N, Exact /
# NotOlderThan, limit + continue) and the WATCH start points.
. "$(dirname "$0")/lib.sh"

start_etcd
for i in 1 2 3 4 5; do eput "/registry/pods/ns1/p$i" "$(pod_json ns1 p$i n$i Running '"app":"x"')"; done
cat >"$T/conf.yaml" <<YAML
sources:
  etcd: $E
retention:
  seconds: 0
  revisions: 3
limits:
  requestTimeoutMs: 400
  maxQueryBytes: 2048
YAML
start_proxy --config "$T/conf.yaml"
wait_ready
U=http://$P/api/v1

jget() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$T/body" "$1"; }

# discovery
eq "/version: minor 32" "$(code http://$P/version)/$(jget 'd["minor"]')" "200/32"
eq "/api" "$(code http://$P/api)/$(jget 'd["versions"]')" "200/['v1']"
eq "/apis: 200 with no groups" "$(code http://$P/apis)/$(jget 'd["groups"]')" "200/[]"
eq "/api/v1: pods with shortNames" "$(code $U)/$(jget '[r["shortNames"] for r in d["resources"] if r["name"]=="pods"][0]')" "200/['po']"
eq "/openapi/v2: 404" "$(code http://$P/openapi/v2)" 404
eq "/healthz" "$(code http://$P/healthz)" 200
eq "/readyz" "$(code http://$P/readyz)" 200
# GET
eq "GET one object" "$(code $U/namespaces/ns1/pods/p2)/$(jget 'd["metadata"]["name"]')" "200/p2"
eq "GET missing: 404 NotFound Status" "$(code $U/namespaces/ns1/pods/zz)/$(jget 'd["reason"],d["code"],d["details"]["name"]')" "404/('NotFound', 404, 'zz')"
eq "unknown resource: 404" "$(code $U/secrets)" 404
eq "GET as Table: one row" "$(code -H 'Accept: application/json;as=Table;g=meta.k8s.io;v=v1' $U/namespaces/ns1/pods/p1)/$(jget 'd["kind"],len(d["rows"])')" "200/('Table', 1)"
# writes: read-only
for m in POST PUT PATCH DELETE; do
    eq "$m: 405 MethodNotAllowed" "$(code -X $m -d '{}' $U/namespaces/ns1/pods/p1)/$(jget 'd["reason"]')" "405/MethodNotAllowed"
done
# 400s
eq "resourceVersion=abc: 400" "$(code "$U/pods?resourceVersion=abc")/$(jget 'd["reason"]')" "400/BadRequest"
eq "limit=-1: 400" "$(code "$U/pods?limit=-1")" 400
eq "continue=garbage: 400" "$(code "$U/pods?continue=garbage")/$(jget 'd["message"]')" "400/invalid continue token"
eq "bad label selector: 400" "$(code "$U/pods?labelSelector=a%20in%20(")" 400
eq "unsupported field: 400" "$(code "$U/pods?fieldSelector=spec.foo%3Dx")" 400
eq "watch with a bad fieldSelector: 400" "$(code "$U/pods?watch=1&fieldSelector=nope")" 400
# 422s: invalid option combinations
eq "resourceVersionMatch without resourceVersion: 422" "$(code "$U/pods?resourceVersionMatch=Exact")/$(jget 'd["reason"]')" "422/Invalid"
eq "resourceVersionMatch=Bogus: 422" "$(code "$U/pods?resourceVersion=1&resourceVersionMatch=Bogus")" 422
eq "Exact at 0: 422" "$(code "$U/pods?resourceVersion=0&resourceVersionMatch=Exact")" 422
eq "sendInitialEvents on a list: 422" "$(code "$U/pods?sendInitialEvents=true")" 422
eq "watch sendInitialEvents without NotOlderThan: 422" "$(code "$U/pods?watch=1&sendInitialEvents=true")" 422
# 414: bounded query
eq "a 40 KB header: 431" "$(code -H "X-Big: $(head -c 40000 /dev/zero | tr '\0' a)" "http://$P/healthz")" 431
eq "a 40 KB path: 414" "$(code "$U/$(head -c 40000 /dev/zero | tr '\0' a)")" 414
eq "a 4 KiB query: 414" "$(code "$U/pods?labelSelector=$(head -c 4096 /dev/zero | tr '\0' a)")" 414

# LIST semantics
curl -s "$U/pods" >"$T/l0"
R0=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["metadata"]["resourceVersion"])' "$T/l0")
eq "consistent LIST: the etcd revision" "$R0" "$(etcdctl --endpoints "$E" get /none -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["header"]["revision"])')"
eq "limit=2: a page and a continue token" "$(code "$U/pods?limit=2")/$(jget 'len(d["items"]), bool(d["metadata"].get("continue"))')" "200/(2, True)"
C=$(jget 'd["metadata"]["continue"]')
eq "continue: the next page at the same revision" "$(code --get --data-urlencode "continue=$C" "$U/pods?limit=2")/$(jget '[i["metadata"]["name"] for i in d["items"]], d["metadata"]["resourceVersion"]')" "200/(['p3', 'p4'], '$R0')"
eq "continue with resourceVersion=5: 400" "$(code --get --data-urlencode "continue=$C" "$U/pods?limit=2&resourceVersion=5")" 400
eq "resourceVersion=0 ignores limit" "$(code "$U/pods?resourceVersion=0&limit=1")/$(jget 'len(d["items"]), "continue" in d["metadata"]')" "200/(5, False)"
eq "fieldSelector spec.nodeName through the index" "$(code "$U/pods?fieldSelector=spec.nodeName%3Dn3")/$(jget '[i["metadata"]["name"] for i in d["items"]]')" "200/['p3']"
# a change, then Exact at the old revision still shows the old state
eput /registry/pods/ns1/p1 "$(pod_json ns1 p1 n9 Failed '"app":"x"')"
wait_for "the change in the cache" sh -c "curl -s '$U/namespaces/ns1/pods/p1' | grep -q Failed"
eq "Exact at the old revision: the old p1, RV echoed" "$(code "$U/pods?resourceVersion=$R0&resourceVersionMatch=Exact")/$(jget '[i["status"]["phase"] for i in d["items"] if i["metadata"]["name"]=="p1"][0], d["metadata"]["resourceVersion"]')" "200/('Running', '$R0')"
eq "legacy exact (RV + limit): the old p1" "$(code "$U/pods?resourceVersion=$R0&limit=1")/$(jget 'd["items"][0]["status"]["phase"]')" "200/Running"
eq "NotOlderThan the old revision: the latest" "$(code "$U/pods?resourceVersion=$R0&resourceVersionMatch=NotOlderThan")/$(jget '[i["status"]["phase"] for i in d["items"] if i["metadata"]["name"]=="p1"][0]')" "200/Failed"
# 504: a revision the cache cannot reach in time
eq "NotOlderThan a future revision: 504 Timeout" "$(code -D "$T/h" "$U/pods?resourceVersion=999999")/$(jget 'd["reason"]')" "504/Timeout"
check "504 carries Retry-After" grep -qi '^Retry-After: 1' "$T/h"
eq "GET at a future revision: 504" "$(code "$U/namespaces/ns1/pods/p1?resourceVersion=999999")" 504
# 410: retention keeps 3 revisions; move on and the old ones are compacted
for i in 1 2 3 4 5 6; do eput /registry/pods/ns1/p2 "$(pod_json ns1 p2 n$i Running '"app":"x"')"; done
wait_for "compaction past R0" sh -c "curl -s 'http://$P/metrics' | awk '/^wcache_proxy_cache_compacted_revision\\{resource=\"pods\"\\}/{exit !(\$2 > $R0)}'"
eq "Exact at a compacted revision: 410 Expired" "$(code "$U/pods?resourceVersion=$R0&resourceVersionMatch=Exact")/$(jget 'd["reason"], d["code"]')" "410/('Expired', 410)"
eq "continue at a compacted revision: 410 Expired" "$(code --get --data-urlencode "continue=$C" "$U/pods?limit=2")/$(jget 'd["message"][:30]')" "410/The provided continue paramete"
curl -s -m 5 "$U/pods?watch=true&resourceVersion=$R0" >"$T/w410"
eq "watch at a compacted revision: 200, one ERROR 410, closed" "$(python3 -c 'import json,sys; l=[json.loads(x) for x in open(sys.argv[1])]; print(len(l), l[0]["type"], l[0]["object"]["code"])' "$T/w410")" "1 ERROR 410"

# WATCH start points
R1=$(curl -s "$U/pods" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')
curl -sN -m 5 "$U/pods?watch=1&resourceVersion=$R1&timeoutSeconds=2" >"$T/wn" &
W1=$!
curl -sN -m 5 "$U/namespaces/ns1/pods?watch=1&resourceVersion=0&timeoutSeconds=2" >"$T/w0" &
W2=$!
curl -sN -m 5 "$U/pods?watch=1&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=2" >"$T/wl" &
W3=$!
curl -sN -m 5 -H 'Accept: application/json;as=Table;g=meta.k8s.io;v=v1' "$U/pods?watch=1&resourceVersion=$R1&labelSelector=app%3Dy&timeoutSeconds=2" >"$T/wt" &
W4=$!
wait_for "four watches open" sh -c "curl -s http://$P/metrics | grep -q '^wcache_proxy_watchers 4'"
eput /registry/pods/ns1/p6 "$(pod_json ns1 p6 n1 Running '"app":"y"')"
edel /registry/pods/ns1/p3
wait $W1 $W2 $W3 $W4 || true
types() { python3 -c 'import json,sys; print(" ".join(json.loads(x)["type"] + ":" + (json.loads(x)["object"].get("metadata",{}).get("name") or "-") for x in open(sys.argv[1])))' "$1"; }
eq "watch at N: only later changes" "$(types "$T/wn")" "ADDED:p6 DELETED:p3"
eq "watch at 0: the state as ADDED, then changes" "$(types "$T/w0")" "ADDED:p1 ADDED:p2 ADDED:p3 ADDED:p4 ADDED:p5 ADDED:p6 DELETED:p3"
eq "watch-list: state, initial-events-end bookmark, changes" "$(types "$T/wl")" "ADDED:p1 ADDED:p2 ADDED:p3 ADDED:p4 ADDED:p5 BOOKMARK:- ADDED:p6 DELETED:p3"
check "the bookmark carries k8s.io/initial-events-end" grep -q '"k8s.io/initial-events-end":"true"' "$T/wl"
eq "watch in Table form with a label selector: one Table event" "$(python3 -c 'import json,sys; l=[json.loads(x) for x in open(sys.argv[1])]; print(len(l), l[0]["object"]["kind"], l[0]["object"]["rows"][0]["cells"][0])' "$T/wt")" "1 Table p6"
DEL_RV=$(python3 -c 'import json,sys; l=[json.loads(x) for x in open(sys.argv[1])]; print(l[-1]["object"]["metadata"]["resourceVersion"])' "$T/wn")
eq "DELETED carries the deletion's revision" "$DEL_RV" "$(curl -s "$U/pods" | python3 -c 'import json,sys; print(json.load(sys.stdin)["metadata"]["resourceVersion"])')"

# /metrics: Prometheus text
curl -s "http://$P/metrics" >"$T/m"
check "/metrics: request counters and latency histogram" grep -q '^wcache_proxy_request_duration_seconds_bucket{verb="list",le="+Inf"}' "$T/m"
check "/metrics: 410 counted" grep -q 'wcache_proxy_requests_total{verb="list",code="410"}' "$T/m"
check "/metrics: consistent reads and the etcd ranges they shared, at most one each" awk '
    /^wcache_proxy_etcd_consistent_reads_total\{resource="pods"\}/ {r = $2}
    /^wcache_proxy_etcd_revision_probes_total\{resource="pods"\}/ {p = $2}
    END {exit !(r > 0 && p >= 1 && p <= r)}' "$T/m"

# 429 + Retry-After until synced: a proxy whose etcd is not there
stop_proxy
start_proxy --etcd http://127.0.0.1:9 --snapshot-interval 0
eq "not synced: LIST 429 TooManyRequests" "$(code -D "$T/h" "http://$P/api/v1/pods")/$(jget 'd["reason"]')" "429/TooManyRequests"
check "429 carries Retry-After" grep -qi '^Retry-After: [0-9]' "$T/h"
eq "not synced: /readyz 503" "$(code "http://$P/readyz")" 503
finish
