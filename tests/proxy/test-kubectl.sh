#!/usr/bin/env bash
# test-kubectl.sh - kubectl (from PATH) against wcache-proxy over a real
# etcd holding Kubernetes JSON under /registry/: get in every shape kubectl
# users type, get --watch while objects change, and kubectl's view compared
# with what etcd holds.
. "$(dirname "$0")/lib.sh"

if ! have_kubectl; then
    apt-get install -y -q kubernetes-client >/dev/null 2>&1 || true
fi
if ! have_kubectl; then echo "kubectl not found (install kubernetes-client)"; exit 1; fi

start_etcd
for ns in default team-a team-b; do eput "/registry/namespaces/$ns" "$(ns_json $ns)"; done
for i in $(seq -w 1 12); do
    node=n$((10#$i % 3))
    app=$([ $((10#$i % 2)) = 0 ] && echo web || echo db)
    eput "/registry/pods/default/pod-$i" "$(pod_json default pod-$i $node Running "\"app\":\"$app\"")"
done
for i in 1 2 3; do eput "/registry/pods/team-a/a-$i" "$(pod_json team-a a-$i n1 Pending '"app":"web"')"; done
eput /registry/configmaps/default/settings "$(cm_json default settings)"
eput /registry/configmaps/team-b/other "$(cm_json team-b other)"

start_proxy --etcd "$E"
wait_ready
kubeconf

# all namespaces: a Table with the namespace column
kc get pods -A >"$T/all" 2>&1
eq "get pods -A: header" "$(head -1 "$T/all" | tr -s ' ')" "NAMESPACE NAME READY STATUS RESTARTS AGE"
eq "get pods -A: 15 rows" "$(($(wc -l <"$T/all") - 1))" 15
check "get pods -A: team-a row" grep -Eq '^team-a +a-1 +1/1 +Pending +2 ' "$T/all"
# one namespace (the context's)
kc get pods >"$T/def" 2>&1
eq "get pods (default ns): 12 rows" "$(($(wc -l <"$T/def") - 1))" 12
kc get pods -n team-a -o name >"$T/names"
eq "get pods -n team-a -o name" "$(tr '\n' ' ' <"$T/names")" "pod/a-1 pod/a-2 pod/a-3 "
# one object, -o json / yaml
rv=$(etcdctl --endpoints "$E" get /registry/pods/default/pod-07 -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["kvs"][0]["mod_revision"])')
eq "get pod -o jsonpath resourceVersion = etcd mod_revision" \
    "$(kc get pod pod-07 -o jsonpath='{.metadata.resourceVersion}')" "$rv"
kc get pod pod-07 -o json >"$T/p.json"
check "get pod -o json: the object" python3 -c '
import json,sys; o=json.load(open(sys.argv[1]))
assert o["kind"]=="Pod" and o["metadata"]["name"]=="pod-07" and o["spec"]["nodeName"]=="n1", o' "$T/p.json"
kc get pods -n team-a -o yaml >"$T/l.yaml"
check "get pods -o yaml: a List of 3 pods" python3 -c '
import yaml,sys; d=yaml.safe_load(open(sys.argv[1]))
assert d["kind"]=="List" and len(d["items"])==3 and all(i["kind"]=="Pod" for i in d["items"]), d' "$T/l.yaml"
eq "get pod missing: NotFound" "$(kc get pod nope 2>&1 || true)" 'Error from server (NotFound): pods "nope" not found'
# selectors
eq "get pods -l app=web" "$(kc get pods -l app=web -o name | wc -l)" 6
eq "get pods -l 'app in (db)' -A" "$(kc get pods -A -l 'app in (db)' -o name | wc -l)" 6
eq "get pods --field-selector spec.nodeName=n1 -A" \
    "$(kc get pods -A --field-selector spec.nodeName=n1 -o name | wc -l)" 7
eq "get pods --field-selector status.phase=Pending -A" \
    "$(kc get pods -A --field-selector status.phase=Pending -o name | tr '\n' ' ')" "pod/a-1 pod/a-2 pod/a-3 "
eq "get pods --field-selector metadata.name=pod-03,spec.nodeName!=n1" \
    "$(kc get pods --field-selector metadata.name=pod-03,spec.nodeName!=n1 -o name)" "pod/pod-03"
kc get pods --field-selector spec.foo=x >"$T/bad" 2>&1 || true
check "get pods --field-selector spec.foo: BadRequest" grep -q 'BadRequest.*field label not supported: spec.foo' "$T/bad"
# paging: kubectl follows continue tokens and prints one table
kc get pods -A --chunk-size=4 -o name >"$T/paged"
kc get pods -A -o name >"$T/whole"
check "get --chunk-size=4 equals the unpaged list" cmp -s "$T/paged" "$T/whole"
eq "get --chunk-size=4: 15 pods" "$(wc -l <"$T/paged")" 15
# configmaps and namespaces
kc get cm -A >"$T/cm"
check "get cm -A: DATA column" grep -Eq '^default +settings +3 ' "$T/cm"
check "get ns" grep -Eq '^team-b +Active ' <(kc get ns)

# kubectl's view equals etcd's
kc get pods -A -o json >"$T/k.json"
etcdctl --endpoints "$E" get --prefix /registry/pods/ -w json >"$T/e.json"
check "kubectl get pods -A -o json = etcd range (names, resourceVersions)" python3 -c '
import json,sys,base64
k=json.load(open(sys.argv[1])); e=json.load(open(sys.argv[2]))
a=sorted((i["metadata"]["namespace"],i["metadata"]["name"],i["metadata"]["resourceVersion"]) for i in k["items"])
b=sorted((base64.b64decode(x["key"]).decode().split("/")[3],base64.b64decode(x["key"]).decode().split("/")[4],str(x["mod_revision"])) for x in e["kvs"])
assert a==b,(a,b)
for i in k["items"]:
    for x in e["kvs"]:
        if base64.b64decode(x["key"]).decode()=="/registry/pods/%s/%s"%(i["metadata"]["namespace"],i["metadata"]["name"]):
            v=json.loads(base64.b64decode(x["value"])); v["metadata"]["resourceVersion"]=i["metadata"]["resourceVersion"]
            assert v==i,(v,i)
' "$T/k.json" "$T/e.json"

# get --watch while objects change: kubectl lists, then watches from the
# list's resourceVersion; each change is one new row
KUBECONFIG="$T/kubeconfig" kubectl --cache-dir "$T/kcache" get pods -n team-a -w \
    >"$T/watch" 2>&1 &
WPID=$!
PIDS+=("$WPID")
wait_for "kubectl's first rows" grep -q '^a-3 ' "$T/watch"
wait_for "kubectl's watch to open" sh -c "curl -s http://$P/metrics | grep -q '^wcache_proxy_watchers [1-9]'"
eput /registry/pods/team-a/a-4 "$(pod_json team-a a-4 n2 Running '"app":"web"')"
eput /registry/pods/team-a/a-1 "$(pod_json team-a a-1 n2 Failed '"app":"web"')"
edel /registry/pods/team-a/a-2
eput /registry/pods/default/elsewhere "$(pod_json default elsewhere n2 Running '')"
wait_for "three watch rows" sh -c "[ \$(wc -l <$T/watch) -ge 7 ]"
kill "$WPID" 2>/dev/null || true
check "watch: a-4 added (Running)" grep -Eq '^a-4 +1/1 +Running' "$T/watch"
check "watch: a-1 modified (Failed)" grep -Eq '^a-1 +1/1 +Failed' "$T/watch"
eq "watch: rows = 1 header + 3 listed + 3 changes" "$(wc -l <"$T/watch")" 7
check "watch: nothing from another namespace" sh -c "! grep -q elsewhere $T/watch"

# one object watched by name: the synthetic ADDED then its change
KUBECONFIG="$T/kubeconfig" kubectl --cache-dir "$T/kcache" get pod pod-05 -w >"$T/w1" 2>&1 &
WPID=$!
PIDS+=("$WPID")
wait_for "kubectl get pod -w first row" grep -q '^pod-05 ' "$T/w1"
wait_for "the named watch to open" sh -c "curl -s http://$P/metrics | grep -q '^wcache_proxy_watchers [1-9]'"
eput /registry/pods/default/pod-05 "$(pod_json default pod-05 n2 Succeeded '')"
wait_for "the change row" grep -q Succeeded "$T/w1"
kill "$WPID" 2>/dev/null || true
eq "get pod NAME -w: header, row, change" "$(wc -l <"$T/w1")" 3
finish
