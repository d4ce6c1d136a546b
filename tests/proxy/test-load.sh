#!/usr/bin/env bash
# test-load.sh - many concurrent watchers and LIST clients on loopback
# (bounded), and a watcher that stops reading, which must be cut off
# without delaying the others.
. "$(dirname "$0")/lib.sh"

start_etcd
eput /registry/pods/load/seed "$(pod_json load seed n1 Running '')"
cat >"$T/conf.yaml" <<YAML
sources:
  etcd: $E
limits:
  writeTimeout: 3
  watchSendBuffer: 65536
YAML
start_proxy --config "$T/conf.yaml"
wait_ready
W=${PROXY_LOAD_WATCHERS:-200}
N=${PROXY_LOAD_EVENTS:-500}
if python3 "$(dirname "$0")/load.py" "$P" "$E" "$W" "$N" 4 >"$T/load.out" 2>&1; then rc=0; else rc=$?; fi
cat "$T/load.out"
while read -r l; do case $l in "ok - "*) pass=$((pass + 1)) ;; "FAIL - "*) fail=$((fail + 1)) ;; esac; done <"$T/load.out"
[ "$rc" = 0 ] || [ "$fail" -gt 0 ] || nok "load.py exited $rc"
curl -s "http://$P/metrics" >"$T/m"
check "the proxy still answers" grep -q '^wcache_proxy_watchers ' "$T/m"
finish
