#!/usr/bin/env bash
# tour.sh - the wcache-proxy tour (make demo, after examples/c/demo): the
# proxy on the built-in synthetic stream, a few kubectl and curl reads
# (latest, an exact revision, pages, a watch), a snapshot, a restart from
# it, and how long each step took.  Loopback only; exits when done.
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
PROXY=$root/examples/proxy/wcache-proxy
T=$(mktemp -d "${TMPDIR:-/tmp}/wctour.XXXXXX")
pid=
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$T"' EXIT

ms() { date +%s%3N; }
step() { printf '\n== %s\n' "$*"; t0=$(ms); }
took() { printf -- '-- %s ms\n' "$(($(ms) - t0))"; }
start() {
    rm -f "$T/out"
    "$PROXY" --listen 127.0.0.1:0 --snapshot-dir "$T/snaps" --snapshot-interval 0 \
        >"$T/out" 2>>"$T/log" &
    pid=$!
    until grep -q LISTEN= "$T/out" 2>/dev/null; do sleep 0.02; done
    P=$(sed -n 's/^LISTEN=//p' "$T/out")
    until curl -sf "http://$P/readyz" >/dev/null; do sleep 0.02; done
}
json() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }

step "start wcache-proxy on the synthetic stream (pods and configmaps) and wait until synced"
start
echo "LISTEN=$P"
took
K=(kubectl --server "http://$P" --cache-dir "$T/kcache")
if command -v kubectl >/dev/null; then
    step "kubectl get pods -A | head -5"
    "${K[@]}" get pods -A | head -5
    took
    step "kubectl get cm -n \$(first namespace) --chunk-size=20 (kubectl follows continue tokens)"
    ns=$("${K[@]}" get pods -A -o jsonpath='{.items[0].metadata.namespace}')
    "${K[@]}" get cm -n "$ns" --chunk-size=20 | head -4
    took
fi
step "curl: the latest LIST (a consistent read) and its resourceVersion"
R=$(curl -s "http://$P/api/v1/pods?limit=1" | json 'd["metadata"]["resourceVersion"]')
echo "pods: $(curl -s "http://$P/api/v1/pods" | json 'len(d["items"])') at resourceVersion $R"
took
step "curl: an exact past revision (resourceVersionMatch=Exact)"
E=$((R - 500))
curl -s "http://$P/api/v1/pods?resourceVersion=$E&resourceVersionMatch=Exact" |
    json '"%d pods at resourceVersion %s" % (len(d["items"]), d["metadata"]["resourceVersion"])' ||
    echo "(revision $E is older than the cache keeps)"
took
step "curl: pages of 1000 with continue tokens, all read at one revision"
tok=; n=0; pages=0
while :; do
    curl -s -G "http://$P/api/v1/pods" --data-urlencode "limit=1000" ${tok:+--data-urlencode "continue=$tok"} >"$T/page"
    n=$((n + $(json 'len(d["items"])' <"$T/page"))); pages=$((pages + 1))
    tok=$(json 'd["metadata"].get("continue","")' <"$T/page")
    [ -n "$tok" ] || break
done
echo "$n pods in $pages pages at resourceVersion $(json 'd["metadata"]["resourceVersion"]' <"$T/page")"
took
step "curl: a watch from resourceVersion=0 for 1 s (the state as ADDED events, then changes)"
curl -sN "http://$P/api/v1/pods?watch=1&resourceVersion=0&timeoutSeconds=1" >"$T/watch" || true
echo "$(wc -l <"$T/watch") events; the first: $(head -c 120 "$T/watch")..."
took
step "snapshot (SIGHUP), then stop (SIGTERM: watches end, final snapshot)"
kill -HUP "$pid"
until grep -q 'configmaps: snapshot at' "$T/log"; do sleep 0.02; done
kill -TERM "$pid"; wait "$pid" || true; pid=
ls -l "$T/snaps" | tail -n +2 | awk '{print $5, $9}'
took
step "restart from the snapshots"
start
grep 'restored' "$T/log" | sed 's/^[^ ]* wcache-proxy: /   /'
echo "serving again at resourceVersion $(curl -s "http://$P/api/v1/pods?limit=1" | json 'd["metadata"]["resourceVersion"]')"
took
kill -TERM "$pid"; wait "$pid" || true; pid=
echo
echo "tour done"
