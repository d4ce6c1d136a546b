#!/usr/bin/env bash
# etcd.sh - the etcd source against a real etcd: the initial sync of N pods
# (~1 KiB each, bench/podgen.h) into a fresh cache beside `etcdctl get
# --prefix` of the same keys, interleaved in the same run, and the steady
# ingest rate while writers update pods.  `make bench` runs it after run.sh.
#
# Environment:
#   BENCH_ETCD_NS     sizes (default "100000 1000000"; 1M needs ~6 GiB free)
#   BENCH_ETCD_REPS   sync / etcdctl pairs per size, best of (default 3)
#   BENCH_ETCD_INGEST seconds of the ingest phase at the first size (default
#                     10; 0: none), BENCH_ETCD_WRITERS writer threads (4)
#   BENCH_OUT         results directory (default bench/results)
#
# Writes $BENCH_OUT/etcd-<stamp>.tsv (impl, metric, N, value, unit, with
# the machine, load and commands in '#' lines) and prints the table.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
ns=${BENCH_ETCD_NS:-100000 1000000}
reps=${BENCH_ETCD_REPS:-3}
ingest=${BENCH_ETCD_INGEST:-10}
writers=${BENCH_ETCD_WRITERS:-4}
out=${BENCH_OUT:-bench/results}
build=bench/build
stamp=$(date -u +%Y-%m-%d-%H%M)
tsv=$out/etcd-$stamp.tsv
mkdir -p "$build" "$out"
command -v etcd >/dev/null && command -v etcdctl >/dev/null || {
    echo "etcd.sh: etcd and etcdctl are needed (apt-get install etcd-server etcd-client)" >&2
    exit 1
}

libs=$(sed -n 's/^DEP_LIBS := //p' build/config.mk)
${CC:-cc} -std=c11 -O2 -g -Iinclude -Ibench -o "$build/bench_etcd" bench/bench_etcd.c \
    lib/libwatchcache.a -Wl,--as-needed ${libs:--lzstd -lcurl -ljansson -lyaml -lxxhash} -lpthread -lm

now() { date +%s.%N; }
tmp=/dev/shm
[ -w "$tmp" ] || tmp=${TMPDIR:-/tmp}
dir=
cleanup() { [ -n "$dir" ] && tests/peers/etcd-local stop "$dir" >/dev/null 2>&1; [ -n "$dir" ] && rm -rf "$dir"; dir=; }
trap cleanup EXIT

{
    echo "# watchcache etcd source benchmark, $(date -u '+%Y-%m-%d %H:%M UTC'), $(git describe --always --dirty 2>/dev/null)"
    echo "# machine: $(nproc) CPUs, $(awk '/^MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $(etcd --version | head -n 1)"
    echo "# wcache: $build/bench_etcd sync EP N (create, list over gRPC in pages of 10,000, load, watch confirmed)"
    echo "# etcdctl: etcdctl --endpoints EP get --prefix /registry/pods/ >/dev/null"
    printf 'impl\tmetric\tN\tvalue\tunit\n'
} >"$tsv"

for n in $ns; do
    dir=$(mktemp -d "$tmp/wcache-bench-etcd-XXXXXX")
    ETCD_LOCAL_EXTRA_ARGS="--quota-backend-bytes=17179869184 --max-txn-ops=1024 --max-request-bytes=33554432 --experimental-watch-progress-notify-interval 1s --snapshot-count=1000000" \
        tests/peers/etcd-local start "$dir" >"$dir/env.out" 2>"$dir/start.log"
    ep=$(sed -n 's/^ETCD_ENDPOINTS=//p' "$dir/env.out")
    echo "# N=$n load before: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$tsv"
    # bench_etcd load sizes its transactions to etcd's limits (the flags
    # above raise them; a bare etcd refuses more than 128 puts in one) and
    # says what etcd answered when it stops; the count is checked so that
    # no figure below is taken on a partial load.
    "$build/bench_etcd" load "$ep" "$n" | sed "s/^/# /" >>"$tsv"
    have=$(etcdctl --endpoints "$ep" get --prefix /registry/pods/ --limit=1 -w json |
        sed -n 's/.*"count":\([0-9]*\).*/\1/p')
    if [ "$have" != "$n" ]; then
        echo "etcd.sh: etcd holds ${have:-no} pods after loading $n" >&2
        exit 1
    fi
    for r in $(seq "$reps"); do
        t0=$(now)
        etcdctl --endpoints "$ep" --command-timeout=600s get --prefix /registry/pods/ >/dev/null
        t1=$(now)
        printf 'etcdctl\tsync_seconds\t%s\t%.3f\ts\n' "$n" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')" >>"$tsv"
        "$build/bench_etcd" sync "$ep" "$n" | awk -v n="$n" '$1 == "sync_seconds" {printf "wcache\tsync_seconds\t%s\t%s\t%s\n", n, $2, $3}' >>"$tsv"
    done
    if [ "$ingest" != 0 ]; then
        "$build/bench_etcd" ingest "$ep" "$n" "$ingest" "$writers" |
            awk -v n="$n" '{printf "wcache\t%s\t%s\t%s\t%s\n", $1, n, $2, $3}' >>"$tsv"
        ingest=0
    fi
    echo "# N=$n load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$tsv"
    cleanup
done

# best of the pairs, and the ratio
awk -F'\t' '
    /^#/ || $1 == "impl" { next }
    $2 == "sync_seconds" { k = $1 SUBSEP $3; if (!(k in b) || $4 + 0 < b[k] + 0) b[k] = $4; ns[$3] = 1; next }
    { print "  " $2 " (N=" $3 "): " $4 " " $5 }
    END {
        printf "  %-10s %12s %12s %8s\n", "N", "wcache s", "etcdctl s", "ratio"
        for (n in ns) printf "  %-10s %12.3f %12.3f %8.2f\n", n, b["wcache", n], b["etcdctl", n], b["wcache", n] / b["etcdctl", n]
    }' "$tsv"
echo "etcd.sh: results in $tsv" >&2
