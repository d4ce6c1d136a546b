# tests/proxy/lib.sh - shared by the wcache-proxy tests (sourced, not run).
#
# Each test starts what it needs on 127.0.0.1 only (a throw-away etcd from
# tests/peers/etcd-local, the proxy on port 0), polls conditions with a
# deadline instead of sleeping, and ends with "N passed, N failed".
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PROXY=${WCACHE_PROXY:-$ROOT/examples/proxy/wcache-proxy}
T=$(mktemp -d "${TMPDIR:-/tmp}/wcproxy.XXXXXX")
PIDS=()
pass=0
fail=0
export ETCDCTL_API=3

cleanup() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
    if [ -f "$T/etcd/pids" ]; then "$ROOT/tests/peers/etcd-local" stop "$T/etcd" >/dev/null 2>&1 || true; fi
    if [ "$fail" -gt 0 ] && [ -f "$T/proxy.err" ]; then
        echo "--- proxy stderr (last 30 lines)"; tail -n 30 "$T/proxy.err"
    fi
    [ -n "${KEEP_T:-}" ] || rm -rf "$T"
}
trap cleanup EXIT

ok() { pass=$((pass + 1)); echo "ok - $*${TEST_TIMES:+ [$(date +%S.%N | cut -c1-5)]}"; }
nok() { fail=$((fail + 1)); echo "FAIL - $*"; }
# check DESC CMD...: pass when CMD succeeds
check() { local d=$1; shift; if "$@"; then ok "$d"; else nok "$d"; fi; }
# eq DESC GOT WANT
eq() { if [ "$2" = "$3" ]; then ok "$1"; else nok "$1: got '$2', want '$3'"; fi; }
finish() {
    # a sanitizer build of the proxy (WCACHE_PROXY=build/asan/...) reports
    # on its stderr; every proxy of the test must have exited for this
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    if [ -f "$T/proxy.err" ] && grep -qE 'Sanitizer|runtime error:' "$T/proxy.err"; then
        nok "sanitizer report:"
        grep -E -A12 'Sanitizer|runtime error:' "$T/proxy.err" | head -40
    fi
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}

# wait_for DESC CMD...: poll CMD every 50 ms for up to WAIT_S (10) seconds
wait_for() {
    local d=$1 i n=$((${WAIT_S:-10} * 20)); shift
    for ((i = 0; i < n; i++)); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    nok "timed out waiting for: $d"
    return 1
}

start_etcd() {
    command -v etcd >/dev/null || "$ROOT/tools/bootstrap-deps.sh" ci >/dev/null
    "$ROOT/tests/peers/etcd-local" start "$T/etcd" 2>"$T/etcd.log" >"$T/etcd.env" ||
        { cat "$T/etcd.log" >&2; return 1; }
    # shellcheck disable=SC1091
    . "$T/etcd.env"
    E=$ETCD_ENDPOINTS
}

eput() { etcdctl --endpoints "$E" put "$1" "$2" >/dev/null; }
edel() { etcdctl --endpoints "$E" del "$1" >/dev/null; }

# pod_json NS NAME NODE PHASE LABELS-JSON-MEMBERS
pod_json() {
    printf '{"kind":"Pod","apiVersion":"v1","metadata":{"name":"%s","namespace":"%s","uid":"uid-%s-%s","creationTimestamp":"2026-01-01T00:00:00Z","labels":{%s}},"spec":{"nodeName":"%s","containers":[{"name":"c","image":"busybox"}]},"status":{"phase":"%s","podIP":"10.1.0.1","containerStatuses":[{"name":"c","ready":true,"restartCount":2}]}}' \
        "$2" "$1" "$1" "$2" "$5" "$3" "$4"
}
cm_json() {
    printf '{"kind":"ConfigMap","apiVersion":"v1","metadata":{"name":"%s","namespace":"%s","creationTimestamp":"2026-01-01T00:00:00Z"},"data":{"a":"1","b":"2","c":"3"}}' "$2" "$1"
}
ns_json() {
    printf '{"kind":"Namespace","apiVersion":"v1","metadata":{"name":"%s","creationTimestamp":"2026-01-01T00:00:00Z"},"status":{"phase":"Active"}}' "$1"
}

# start_proxy ARGS...: the proxy on a free port; sets P (host:port), PROXY_PID
start_proxy() {
    # the redirection below happens in the background child: remove the
    # old file first, or its LISTEN line may be read before it is truncated
    rm -f "$T/proxy.out"
    "$PROXY" --listen "${LISTEN:-127.0.0.1:0}" "$@" >"$T/proxy.out" 2>>"$T/proxy.err" &
    PROXY_PID=$!
    PIDS+=("$PROXY_PID")
    wait_for "the proxy's LISTEN line" grep -q '^LISTEN=' "$T/proxy.out"
    P=$(sed -n 's/^LISTEN=//p' "$T/proxy.out")
}
stop_proxy() {
    kill -TERM "$PROXY_PID" 2>/dev/null || true
    wait "$PROXY_PID" 2>/dev/null || true
}
wait_ready() { WAIT_S=${WAIT_S:-20} wait_for "the proxy to be ready" curl -sf "http://$P/readyz"; }

# kubeconfig pointing at the proxy, and a kubectl with its own cache dir
kubeconf() {
    cat >"$T/kubeconfig" <<KC
apiVersion: v1
kind: Config
clusters:
- name: proxy
  cluster:
    server: http://$P
contexts:
- name: proxy
  context:
    cluster: proxy
    namespace: default
    user: nobody
current-context: proxy
users:
- name: nobody
  user: {}
KC
}
kc() { KUBECONFIG="$T/kubeconfig" kubectl --cache-dir "$T/kcache" --request-timeout=20s "$@"; }
have_kubectl() { command -v kubectl >/dev/null 2>&1; }
# HTTP status of a GET (extra curl args allowed)
code() { curl -s -o "$T/body" -w '%{http_code}' "$@"; }
