#!/usr/bin/env bash
# s3.sh - push and pull throughput of a snapshot of N pods through the local
# S3 server (tests/peers/s3-local: s3rver behind the SigV4 gate, loopback),
# `wcache push` / `wcache pull` beside `aws s3 cp` of the same file in the
# same run, interleaved, best of BENCH_S3_RUNS.  Then a restore from the
# store to a serving cache: streamed (wcache_store_restore, what the proxy
# does) against download-to-file-then-restore, alternated, each beside
# aws's pull of the bytes alone.  `make bench` runs it.
#
#   BENCH_S3_N      objects (default 1000000)
#   BENCH_S3_RUNS   rounds (default 2)
#   BENCH_OUT       results directory (default bench/results)
#
# Prints and writes $BENCH_OUT/<stamp>-s3.tsv: impl, metric, N, MB/s, with
# the file size and the load average in '#' lines.  MB/s are of snapshot
# file bytes.  Both sides pay the same gate (which buffers each request
# body to check its SHA-256) and s3rver; the ratio is what to read.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
n=${BENCH_S3_N:-1000000}
runs=${BENCH_S3_RUNS:-2}
out=${BENCH_OUT:-bench/results}
build=bench/build
mkdir -p "$build" "$out"
tsv=$out/$(date -u +%Y-%m-%d-%H%M)-s3.tsv
command -v aws >/dev/null || { echo "s3.sh: aws not on PATH (tools/bootstrap-deps.sh check)" >&2; exit 1; }
[ -x tools/wcache ] || { echo "s3.sh: run make first" >&2; exit 1; }

libs=$(sed -n 's/^DEP_LIBS := //p' build/config.mk)
# shellcheck disable=SC2086
${CC:-cc} -std=c11 -O2 -Iinclude -Ibench -o "$build/bench_store" bench/bench_store.c \
    lib/libwatchcache.a $libs -lpthread -lm

work=$(mktemp -d "${TMPDIR:-/tmp}/wcache-s3bench.XXXXXX")
cleanup() { tests/peers/s3-local stop "$work/srv" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
eval "$(tests/peers/s3-local start "$work/srv" --bucket bench)"
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_DEFAULT_REGION=$S3_REGION AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export WCACHE_BENCH_ENDPOINT=$S3_ENDPOINT
snap=$work/pods.wcsnap
echo "s3.sh: generating a snapshot of $n pods ..." >&2
"$build/bench_store" gen "$n" "$snap"
bytes=$(stat -c %s "$snap")

# seconds of a command, wall clock
secs() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1 || { echo "s3.sh: failed: $*" >&2; exit 1; }
    t1=$(date +%s.%N)
    awk -v a="$t0" -v b="$t1" 'BEGIN { print b - a }'
}
mbps() { awk -v b="$bytes" -v t="$1" 'BEGIN { print b / t / 1000000 }'; }

{
    echo "# s3.sh N=$n file_bytes=$bytes runs=$runs $(uname -srm) $(nproc) cpus"
    echo "# load before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "# wcache: tools/wcache push|pull FILE s3://bench/... --endpoint E (default 8 MiB parts, 4 in parallel; pull verifies)"
    echo "# aws: $(aws --version 2>&1 | head -1): aws --endpoint-url E s3 cp (its defaults: 8 MiB parts, 10 threads)"
    printf 'impl\tmetric\tN\tMB/s\n'
} >"$tsv"
for r in $(seq 1 "$runs"); do
    echo "s3.sh: round $r of $runs" >&2
    E=$S3_ENDPOINT
    t=$(secs tools/wcache push "$snap" s3://bench/ours.wcsnap --endpoint "$E")
    printf 'wcache\tpush\t%s\t%.1f\n' "$n" "$(mbps "$t")" >>"$tsv"
    t=$(secs aws --endpoint-url "$E" s3 cp "$snap" s3://bench/theirs.wcsnap)
    printf 'aws\tpush\t%s\t%.1f\n' "$n" "$(mbps "$t")" >>"$tsv"
    t=$(secs tools/wcache pull s3://bench/theirs.wcsnap "$work/ours.out" --endpoint "$E")
    printf 'wcache\tpull_verified\t%s\t%.1f\n' "$n" "$(mbps "$t")" >>"$tsv"
    t=$(secs tools/wcache pull s3://bench/theirs.wcsnap "$work/ours.out" --endpoint "$E" --no-verify)
    printf 'wcache\tpull\t%s\t%.1f\n' "$n" "$(mbps "$t")" >>"$tsv"
    t=$(secs aws --endpoint-url "$E" s3 cp s3://bench/ours.wcsnap "$work/theirs.out")
    printf 'aws\tpull\t%s\t%.1f\n' "$n" "$(mbps "$t")" >>"$tsv"
    if ! cmp -s "$snap" "$work/ours.out" || ! cmp -s "$snap" "$work/theirs.out"; then
        echo "s3.sh: a copy differs from the original" >&2
        exit 1
    fi
    rm -f "$work/ours.out" "$work/theirs.out"
    "$build/bench_store" putsnap "$n" s3://bench/sync.wcsnap | sed 's/^/wcache\t/' |
        awk -F'\t' -v OFS='\t' '{ print $1, $2, $3, $4 }' >>"$tsv"
    "$build/bench_store" restore "$n" s3://bench/theirs.wcsnap "$work/restore.tmp" |
        sed 's/^/wcache\t/' | awk -F'\t' -v OFS='\t' '{ print $1, $2, $3, $4 }' >>"$tsv"
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)" >>"$tsv"
# Best of the rounds, and the ratio to aws where there is one.
awk -F'\t' '
    /^#/ { print; next } $1 == "impl" { next }
    { k = $1 "\t" $2; if (!(k in b) || $4 + 0 > b[k]) b[k] = $4 + 0; m[$2] = 1 }
    END { printf "%-15s %10s %10s %8s\n", "metric", "wcache", "aws", "ratio"
          for (x in m) { w = b["wcache\t" x]; a = b["aws\t" x]
              if (x == "putsnap_mbps") a = b["aws\tpush"]
              else if (x == "pull_verified" || x ~ /^restore_/) a = b["aws\tpull"]
              printf "%-15s %10.1f %10.1f %8.2f\n", x, w, a, a ? w / a : 0 } }' "$tsv"
echo "s3.sh: results in $tsv" >&2
