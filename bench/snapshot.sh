#!/usr/bin/env bash
# snapshot.sh - the snapshot benchmark of issue 4 (`make bench` runs it):
# bench/bench_snapshot on N podgen pods (write MB/s at zstd level 1 with and
# without ingest, beside `zstd -1 -T0` on the same bytes; restore to
# serving), and the cache's initial sync from a real etcd holding the same
# pods, started here by tests/peers/etcd-local with a large backend quota.
#
# Environment: BENCH_SNAP_N (default 1000000), BENCH_SNAP_RUNS (default 1),
# BENCH_SNAP_ETCD=0 to leave etcd out, BENCH_OUT (default bench/results).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
n=${BENCH_SNAP_N:-1000000}
runs=${BENCH_SNAP_RUNS:-1}
out=${BENCH_OUT:-bench/results}
build=bench/build
mkdir -p "$build" "$out"
libs=$(sed -n 's/^DEP_LIBS := //p' build/config.mk)
# shellcheck disable=SC2086 # the library list is meant to split
${CC:-cc} -std=c11 -O2 -Iinclude -Ibench -o "$build/bench_snapshot" bench/bench_snapshot.c \
    lib/libwatchcache.a ${libs:--lzstd -lxxhash -lcurl} -lpthread -lm
tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-snap.XXXXXX")
cleanup() {
    [ -f "$tmp/etcd/pids" ] && tests/peers/etcd-local stop "$tmp/etcd" >/dev/null 2>&1
    rm -rf "$tmp"
}
trap cleanup EXIT
if [ "${BENCH_SNAP_ETCD:-1}" != 0 ]; then
    ETCD_LOCAL_EXTRA_ARGS="--quota-backend-bytes 8589934592" \
        tests/peers/etcd-local start "$tmp/etcd" >"$tmp/env"
    BENCH_ETCD=$(sed -n 's/^ETCD_ENDPOINTS=//p' "$tmp/env")
    export BENCH_ETCD
fi
tsv=$out/$(date -u +%Y-%m-%d-%H%M)-snapshot.tsv
{
    echo "# bench/snapshot.sh N=$n runs=$runs $(git describe --always --dirty 2>/dev/null)"
    echo "# $(nproc) cores, $(uptime)"
    for _ in $(seq 1 "$runs"); do
        "$build/bench_snapshot" "$n" "$tmp"
        unset BENCH_ETCD # etcd holds the pods now: one load and sync per run
    done
} | tee "$tsv"
