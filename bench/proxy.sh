#!/usr/bin/env bash
# proxy.sh - wcache-proxy over HTTP beside etcd, in the same run, on
# loopback.  `make bench` runs it after run.sh.
#
#   1. LIST of N pods (default 100000) from the proxy (consistent read and
#      resourceVersion=0) beside the same range from etcd's JSON gateway,
#      alternated, best of BENCH_REPS (3)
#   2. GETs and small LISTs per second with wrk (BENCH_WRK_SECS, 5 s each)
#   3. BENCH_WATCHERS (1000) HTTP watchers receiving BENCH_EVENTS (200)
#      changes: deliveries/s and latency percentiles (a Python client)
#
# Writes bench/results/<stamp>-proxy.txt and prints it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
N=${BENCH_PROXY_N:-100000}
REPS=${BENCH_REPS:-3}
WS=${BENCH_WRK_SECS:-5}
W=${BENCH_WATCHERS:-1000}
EV=${BENCH_EVENTS:-200}
out=bench/results/$(date -u +%Y-%m-%d-%H%M)-proxy.txt
mkdir -p bench/build bench/results
command -v wrk >/dev/null || tools/bootstrap-deps.sh bench
T=$(mktemp -d /tmp/wcbench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    tests/peers/etcd-local stop "$T/etcd" >/dev/null 2>&1 || true
    rm -rf "$T"
}
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || true

cc -O2 -Iinclude -Ibench -o bench/build/podgen_dump bench/podgen_dump.c
ETCD_LOCAL_EXTRA_ARGS="--quota-backend-bytes=8589934592 --max-request-bytes=10485760" \
    tests/peers/etcd-local start "$T/etcd" >"$T/etcd.env" 2>"$T/etcd.log"
. "$T/etcd.env"
E=$ETCD_ENDPOINTS
bench/build/podgen_dump 1 "$N" | awk 'NR % 2 == 1' >"$T/pods.tsv"
t0=$(date +%s.%N)
python3 bench/proxy_client.py load "$E" "$T/pods.tsv" >&2
echo "proxy.sh: loaded $N pods into etcd in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b - a}') s" >&2
examples/proxy/wcache-proxy --etcd "$E" --listen 127.0.0.1:0 --threads 2 \
    >"$T/proxy.out" 2>"$T/proxy.err" &
PIDS+=($!)
for _ in $(seq 600); do grep -q LISTEN= "$T/proxy.out" && curl -sf "http://$(sed -n 's/LISTEN=//p' "$T/proxy.out")/readyz" >/dev/null && break; sleep 0.1; done
P=$(sed -n 's/LISTEN=//p' "$T/proxy.out")
key=$(printf /registry/pods/ | base64)
end=$(printf /registry/pods0 | base64)
one=$(head -1 "$T/pods.tsv" | cut -f1)
ns=$(echo "$one" | cut -d/ -f4)
name=$(echo "$one" | cut -d/ -f5)

best() { sort -n | head -1; }
{
    echo "# wcache-proxy benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git describe --always --dirty 2>/dev/null)"
    echo "# machine: $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "# load average before: $(cut -d' ' -f1-3 /proc/loadavg); etcd $(etcd --version | head -1 | awk '{print $3}')"
    echo "# N=$N pods ($(du -k "$T/pods.tsv" | cut -f1) KiB of JSON), best of $REPS, alternated"
    : >"$T/p1"; : >"$T/p0"; : >"$T/e"
    for _ in $(seq "$REPS"); do
        curl -s -o "$T/body.p" -w '%{time_total}\n' "http://$P/api/v1/pods" >>"$T/p1"
        curl -s -o "$T/body.e" -w '%{time_total}\n' -X POST "$E/v3/kv/range" \
            -d "{\"key\":\"$key\",\"range_end\":\"$end\"}" >>"$T/e"
        curl -s -o /dev/null -w '%{time_total}\n' "http://$P/api/v1/pods?resourceVersion=0" >>"$T/p0"
    done
    pn=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["items"]))' "$T/body.p")
    en=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))["kvs"]))' "$T/body.e")
    p1=$(best <"$T/p1"); p0=$(best <"$T/p0"); e=$(best <"$T/e")
    printf 'LIST %s pods  proxy (consistent)  %8.3f s  %s bytes\n' "$pn" "$p1" "$(stat -c %s "$T/body.p")"
    printf 'LIST %s pods  proxy (RV=0)        %8.3f s\n' "$pn" "$p0"
    printf 'LIST %s pods  etcd gateway range  %8.3f s  %s bytes\n' "$en" "$e" "$(stat -c %s "$T/body.e")"
    awk -v e="$e" -v a="$p1" -v b="$p0" 'BEGIN{printf "ratio etcd/proxy: consistent %.1fx, RV=0 %.1fx\n", e / a, e / b}'
    echo "# wrk -t2 -c64 -d${WS}s (wrk on the same 2 cores as the proxy)"
    w() { wrk -t2 -c64 -d"${WS}s" "$2" | awk -v l="$1" '/Requests\/sec|Latency/ {print l ": " $0}'; }
    w "GET one pod, resourceVersion=0 (memory only)" "http://$P/api/v1/namespaces/$ns/pods/$name?resourceVersion=0"
    w "LIST limit=10 NotOlderThan 1 (memory only)" "http://$P/api/v1/namespaces/$ns/pods?limit=10&resourceVersion=1&resourceVersionMatch=NotOlderThan"
    w "GET one pod, consistent (+1 etcd count-only range each)" "http://$P/api/v1/namespaces/$ns/pods/$name"
    echo "# $W HTTP watchers, $EV changes written to etcd one at a time (Python asyncio client)"
    python3 bench/proxy_client.py watchers "$P" "$E" "$W" "$EV"
    echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$out"
echo "proxy.sh: results in $out" >&2
