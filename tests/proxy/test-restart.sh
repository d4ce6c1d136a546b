#!/usr/bin/env bash
# test-restart.sh - snapshots on SIGTERM, and a restart from the newest
# snapshot that catches up by watching from its revision: no full range
# read of the served prefixes reaches etcd (counted at a loopback gateway
# in front of it), yet the restarted proxy serves the latest state.
. "$(dirname "$0")/lib.sh"

start_etcd
for i in $(seq -w 1 40); do eput "/registry/pods/ns/p$i" "$(pod_json ns p$i n1 Running '"app":"a"')"; done
eput /registry/configmaps/ns/c1 "$(cm_json ns c1)"
eput /registry/namespaces/ns "$(ns_json ns)"
S=$T/snaps
start_proxy --etcd "$E" --snapshot-dir "$S" --snapshot-interval 0
wait_ready
stop_proxy
check "SIGTERM: a clean exit that logged its snapshots" grep -q 'pods: snapshot at revision' "$T/proxy.err"
n=$(ls "$S" | grep -c '\.wcsnap$' || true)
eq "one snapshot per resource" "$n" 3

# changes while the proxy is down
eput /registry/pods/ns/p41 "$(pod_json ns p41 n2 Running '"app":"a"')"
eput /registry/pods/ns/p01 "$(pod_json ns p01 n2 Failed '"app":"a"')"
edel /registry/pods/ns/p02

python3 "$(dirname "$0")/gateway.py" "$E" "$T/gw.log" >"$T/gw.out" 2>"$T/gw.err" &
PIDS+=($!)
wait_for "the gateway" grep -q GATEWAY= "$T/gw.out"
GW=$(sed -n 's/^GATEWAY=//p' "$T/gw.out")
start_proxy --etcd "$GW" --snapshot-dir "$S" --snapshot-interval 0
wait_ready
check "restored from the snapshot" grep -q 'pods: restored 40 objects' "$T/proxy.err"
curl -s "http://$P/api/v1/pods" >"$T/l"
eq "the latest state after catching up" "$(python3 -c '
import json,sys; d=json.load(open(sys.argv[1])); n={i["metadata"]["name"]:i["status"]["phase"] for i in d["items"]}
print(len(n), n.get("p01"), "p02" in n, "p41" in n)' "$T/l")" "40 Failed False True"
ranges=$(python3 -c '
import json,sys
n=0
for l in open(sys.argv[1]):
    r=json.loads(l)
    if r["path"]=="/v3/kv/range" and not r.get("count_only") and (r.get("key") or "").startswith("/registry/"):
        n+=1
print(n)' "$T/gw.log")
eq "no full range read reached etcd" "$ranges" 0
check "the restarted proxy watches from the snapshot's revision" python3 -c '
import json,sys
w=[json.loads(l) for l in open(sys.argv[1]) if "watch_key" in l]
assert any(x["watch_key"]=="/registry/pods/" and x["start_revision"]>1 for x in w), w' "$T/gw.log"
check "consistent reads asked etcd with count-only ranges" grep -q '"count_only": true' "$T/gw.log"

# a damaged newest snapshot is not restored: the proxy lists instead
stop_proxy
f=$(ls "$S"/pods-*.wcsnap | tail -1)
printf 'garbage' | dd of="$f" bs=1 seek=100 conv=notrunc 2>/dev/null
: >"$T/gw.log"
start_proxy --etcd "$GW" --snapshot-dir "$S" --snapshot-interval 0
wait_ready
check "a damaged snapshot is refused with a reason" grep -q 'pods: not restoring' "$T/proxy.err"
eq "and the proxy lists etcd instead" "$(curl -s "http://$P/api/v1/pods" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')" 40

# the same through an object store (file:// here; s3:// and gs:// are the
# same calls): written on SIGTERM, restored with no range read
stop_proxy
start_proxy --etcd "$E" --snapshot-url "file://$T/store" --snapshot-interval 0
wait_ready
stop_proxy
check "SIGTERM: a snapshot into the store" grep -q "pods: snapshot at revision [0-9]* to file://" "$T/proxy.err"
eput /registry/pods/ns/p42 "$(pod_json ns p42 n2 Running '"app":"a"')"
: >"$T/gw.log"
start_proxy --etcd "$GW" --snapshot-url "file://$T/store" --snapshot-interval 0
wait_ready
check "restored from the store" grep -q "pods: restored 40 objects at revision [0-9]* from file://" "$T/proxy.err"
eq "caught up: p42 is served" "$(code "http://$P/api/v1/namespaces/ns/pods/p42")" 200
ranges=$(python3 -c '
import json,sys
print(sum(1 for l in open(sys.argv[1]) if json.loads(l)["path"]=="/v3/kv/range" and not json.loads(l).get("count_only") and (json.loads(l).get("key") or "").startswith("/registry/")))' "$T/gw.log")
eq "no full range read reached etcd" "$ranges" 0
finish
