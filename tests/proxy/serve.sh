#!/usr/bin/env bash
# serve.sh - `make serve`: wcache-proxy kept running (until ^C) on the
# built-in synthetic stream, or on etcd when SERVE_ETCD=URLS is set, with
# snapshots in build/serve; prints the kubectl command to point at it.
#   SERVE_LISTEN   address (default 127.0.0.1:8080; 127.0.0.1:0 for any port)
#   SERVE_ARGS     more wcache-proxy flags
set -eu
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$root/build/serve
mkdir -p "$dir"
args=(--listen "${SERVE_LISTEN:-127.0.0.1:8080}" --snapshot-dir "$dir/snapshots")
[ -n "${SERVE_ETCD:-}" ] && args+=(--etcd "$SERVE_ETCD")
rm -f "$dir/out"
# shellcheck disable=SC2086
"$root/examples/proxy/wcache-proxy" "${args[@]}" ${SERVE_ARGS:-} >"$dir/out" &
pid=$!
trap 'kill -TERM $pid 2>/dev/null; wait $pid' INT TERM
for _ in $(seq 500); do grep -q LISTEN= "$dir/out" 2>/dev/null && break; kill -0 $pid 2>/dev/null || exit 1; sleep 0.02; done
P=$(sed -n 's/^LISTEN=//p' "$dir/out")
cat <<MSG

wcache-proxy is serving on http://$P (logs below; ^C stops it, with a final snapshot).
Point kubectl at it:

    kubectl --server http://$P get pods -A
    kubectl --server http://$P get pods -A --watch
    curl -s 'http://$P/api/v1/pods?limit=5' | head -c 600
    curl -s http://$P/metrics | grep wcache_proxy_cache

MSG
wait $pid
