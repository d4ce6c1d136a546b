#!/usr/bin/env bash
# watch.sh - the fan-out benchmark of issue 3 (`make bench` runs it; alone:
# `bench/watch.sh`): bench/bench_watch on N podgen pods with 10,000 prefix
# watchers and 100 on every key, consumers on the same cores as the writer.
# Prints max deliveries/s and, at a steady BENCH_WATCH_RATE events/s, the
# ingest-to-delivery latency p50/p99/p99.9/max, with the CPU cost per event
# and per delivery and the context switches of the latency window, for each
# consumer structure in BENCH_WATCH_MODES, the modes interleaved run by run
# (the machine may be shared: compare within a run, and read the load
# average printed beside each line):
#   set   each consumer thread sleeps on one wcache_watchset (the default)
#   fd    each consumer thread has an epoll set of every watch's own fd (-E)
#
# Environment: BENCH_WATCH_N (default 1000000), BENCH_WATCH_RUNS (default 1),
# BENCH_WATCH_MODES (default "set fd"), BENCH_WATCH_RATE (default 100000),
# BENCH_WATCH_SECS (measured seconds per run, default 3), BENCH_WATCH_ARGS
# (more bench_watch options, e.g. "-B 100"), BENCH_OUT (default
# bench/results).  Writes $BENCH_OUT/<stamp>-watch.tsv (mode, run, load,
# metric, N, value, unit).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
n=${BENCH_WATCH_N:-1000000}
runs=${BENCH_WATCH_RUNS:-1}
modes=${BENCH_WATCH_MODES:-set fd}
rate=${BENCH_WATCH_RATE:-100000}
secs=${BENCH_WATCH_SECS:-3}
out=${BENCH_OUT:-bench/results}
build=bench/build
mkdir -p "$build" "$out"
libs=$(sed -n 's/^DEP_LIBS := //p' build/config.mk 2>/dev/null || true)
# shellcheck disable=SC2086 # the library list is meant to split
${CC:-cc} -std=c11 -O2 -g -Iinclude -Ibench -o "$build/bench_watch" bench/bench_watch.c \
    lib/libwatchcache.a ${libs:--lzstd -lcurl -ljansson -lyaml -lxxhash} -lpthread -lm
tsv=$out/$(date -u +%Y-%m-%d-%H%M)-watch.tsv
{
    echo "# bench/watch.sh N=$n rate=$rate secs=$secs modes=$modes args=${BENCH_WATCH_ARGS:-}"
    echo "# $(uname -srm), $(nproc) cores, $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    printf 'mode\trun\tload\tmetric\tN\tvalue\tunit\n'
} >"$tsv"
for r in $(seq "$runs"); do
    for m in $modes; do
        case $m in
        set) flag= ;;
        fd) flag=-E ;;
        *) echo "watch.sh: unknown mode $m" >&2; exit 2 ;;
        esac
        load=$(cut -d' ' -f1 /proc/loadavg)
        echo "== mode $m, run $r, load average $load: $build/bench_watch $flag -t $secs -r $rate ${BENCH_WATCH_ARGS:-} $n" >&2
        # shellcheck disable=SC2086 # flags are meant to split
        res=$("$build/bench_watch" $flag -t "$secs" -r "$rate" ${BENCH_WATCH_ARGS:-} "$n") || {
            echo "watch.sh: bench_watch failed (an overflow makes the figures invalid)" >&2
            exit 1
        }
        echo "$res" | awk -F'\t' -v m="$m" -v r="$r" -v l="$load" -v OFS='\t' '{print m, r, l, $0}' >>"$tsv"
        echo "$res" | awk -F'\t' -v m="$m" '
            $1 ~ /^watch_(deliveries_max|latency_p50|latency_p99|latency_p999|latency_max|latency_rate|max_total_cpu|latency_total_cpu|latency_ivcsw|latency_put_p99|latency_round_late_p99)$/ {
                printf "  %-5s %-26s %14.1f %s\n", m, $1, $3, $4 }'
    done
done
echo "watch.sh: raw results in $tsv" >&2
