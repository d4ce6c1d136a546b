#!/usr/bin/env bash
# snapshot.sh - the snapshot benchmark of issue 4 (`make bench` runs it):
# bench/bench_snapshot on N podgen pods (write MB/s at zstd level 1 with and
# without ingest, beside `zstd -1 -T0` on the same bytes; restore to
# serving), and the cache's initial sync from a real etcd holding the same
# pods, started here by tests/peers/etcd-local with a large backend quota.
#
# The write target of issue 4 (>= 1 GB/s of key+value bytes at level 1 with
# ingest running) is printed for two ingest loads, each with its achieved
# rate: (a) a feed at a steady BENCH_SNAP_RATE events/s (default 100000, the
# steady rate of issue 3's latency run), as a source delivers events, with
# a check that the feed kept that rate during the write; (b) a feed thread
# putting flat out, which takes one of the two cores for itself.
#
# The feed's events are made before any clock starts (a source reads them
# from a socket), so the feed's CPU is the library's ingest alone; the cache
# keeps a window of BENCH_SNAP_RETAIN revisions (default 100000), and a
# first write with the feed running, not reported, warms the allocator up
# as a previous periodic snapshot would have.
#
# Environment: BENCH_SNAP_N (default 1000000), BENCH_SNAP_RUNS (default 1),
# BENCH_SNAP_RATE (default 100000), BENCH_SNAP_ETCD=0 to leave etcd out,
# BENCH_SNAP_WRITE_ONLY=1 to stop after the writes, BENCH_SNAP_BLOCK (block
# bytes; default the library's), BENCH_SNAP_RETAIN, BENCH_OUT (default
# bench/results).
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

# The target's two cases, per run, from the lines above.
awk -F'\t' '
function mb(k) { return (k in v) ? v[k] " MB/s" : "-" }
function line() {
    if (!("write_mbps_w2_paced" in v)) return
    run++
    printf "run %d: issue 4 write target, >= 1000 MB/s of key+value bytes, level 1, 2 workers\n", run
    printf "  (a) ingest at a steady %s events/s (achieved %s/s, most behind %s ms, kept: %s): %s (writer %s cpu-s/GB)\n",
        v["ingest_rate_target"], v["ingest_w2_paced"], v["ingest_lag_w2_paced"],
        v["ingest_kept_w2_paced"] == 1 ? "yes" : "NO", mb("write_mbps_w2_paced"), v["write_cpu_w2_paced"]
    printf "  (b) ingest flat out (one feed thread, achieved %s events/s): %s (writer %s cpu-s/GB)\n",
        v["ingest_w2_ingest_max"], mb("write_mbps_w2_ingest_max"), v["write_cpu_w2_ingest_max"]
    printf "  the feed alone, no write: %s events/s flat out, %s cpu-us/event (events made beforehand: podgen took %s cpu-us/event, not counted)\n",
        v["ingest_alone"], v["ingest_cpu_alone"], v["feed_gen_us"]
    printf "  the first write with ingest (warm-up, fresh memory for the held-back versions): feed %s cpu-us/event\n",
        v["ingest_cpu_cold"]
    printf "  no ingest: %s (writer %s cpu-s/GB); zstd -1 -T0 on the same bytes: %s (%s cpu-s/GB)\n",
        mb("write_mbps_w2"), v["write_cpu_w2"], mb("zstd_mbps"), ("zstd_cpu_s_per_gb" in v) ? v["zstd_cpu_s_per_gb"] : "-"
    delete v
}
/^#/ { next }
$1 == "ingest_rate_target" { line() }
{ v[$1] = $3 }
END { line() }' "$tsv"
echo "# $(uptime)"
