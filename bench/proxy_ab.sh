#!/usr/bin/env bash
# proxy_ab.sh A B - consistent GETs of one pod through two wcache-proxy
# builds over the same etcd, alternated (A, B, A, B, ...), so that a change
# is measured against its parent under the same load:
#
#   git worktree add --detach /tmp/old REV && make -C /tmp/old proxy
#   bench/proxy_ab.sh /tmp/old/examples/proxy/wcache-proxy examples/proxy/wcache-proxy
#
# BENCH_AB_N pods (1000), BENCH_AB_THREADS proxy threads (2), BENCH_AB_ROUNDS
# (3) of wrk -t2 -c64 -d BENCH_WRK_SECS (5) s each.  Prints one line a run.
set -euo pipefail
[ $# = 2 ] || { echo "usage: $0 PROXY-A PROXY-B" >&2; exit 2; }
A=$(realpath "$1"); B=$(realpath "$2")
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
N=${BENCH_AB_N:-1000}
TH=${BENCH_AB_THREADS:-2}
ROUNDS=${BENCH_AB_ROUNDS:-3}
WS=${BENCH_WRK_SECS:-5}
command -v wrk >/dev/null || tools/bootstrap-deps.sh bench
T=$(mktemp -d /tmp/wcab.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    tests/peers/etcd-local stop "$T/etcd" >/dev/null 2>&1 || true
    rm -rf "$T"
}
trap cleanup EXIT
mkdir -p bench/build
cc -O2 -Iinclude -Ibench -o bench/build/podgen_dump bench/podgen_dump.c
tests/peers/etcd-local start "$T/etcd" >"$T/etcd.env" 2>"$T/etcd.log"
. "$T/etcd.env"
E=$ETCD_ENDPOINTS
bench/build/podgen_dump 1 "$N" | awk 'NR % 2 == 1' >"$T/pods.tsv"
python3 bench/proxy_client.py load "$E" "$T/pods.tsv" >&2
start() { # start PROXY NAME: prints its address once it is ready
    "$1" --etcd "$E" --listen 127.0.0.1:0 --threads "$TH" >"$T/$2.out" 2>"$T/$2.err" &
    PIDS+=($!)
    for _ in $(seq 600); do
        a=$(sed -n 's/LISTEN=//p' "$T/$2.out" 2>/dev/null)
        [ -n "$a" ] && curl -sf "http://$a/readyz" >/dev/null && break
        sleep 0.1
    done
    echo "$a"
}
PA=$(start "$A" a)
PB=$(start "$B" b)
one=$(head -1 "$T/pods.tsv" | cut -f1)
url=/api/v1/namespaces/$(echo "$one" | cut -d/ -f4)/pods/$(echo "$one" | cut -d/ -f5)
echo "# proxy_ab: N=$N, --threads $TH, wrk -t2 -c64 -d${WS}s, load before: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# A=$A"
echo "# B=$B"
for r in $(seq "$ROUNDS"); do
    for v in A B; do
        p=$PA
        [ $v = B ] && p=$PB
        printf '%s round %d: ' $v "$r"
        wrk -t2 -c64 -d"${WS}s" "http://$p$url" |
            awk '/Requests\/sec/ {printf "%s req/s  ", $2} /Latency/ {printf "latency avg %s  ", $2}
                 /Non-2xx/ {printf "non-2xx %s", $4}'
        echo
    done
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
