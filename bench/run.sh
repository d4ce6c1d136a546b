#!/usr/bin/env bash
# run.sh - the core benchmark: libwatchcache (bench_core) and its Go peer
# (peers/go-btree: google/btree with a Clone() per event) side by side in
# the same run, over a sweep of N.  `make bench` runs this.
#
# Every figure is paired with the peer's figure from the same run, because
# the machine may be shared: compare ratios, not absolute numbers across
# runs.
#
# Environment:
#   BENCH_NS     sizes to sweep (default "10000 100000 1000000", and 2000000
#                when 16 GiB are available)
#   BENCH_SECS   seconds per GET and LIST measurement, best of 3 (default 0.5)
#   BENCH_PEERS  which sides to run (default "c go")
#   BENCH_RUNS   repeat the whole sweep this many times (default 1); the table
#                and plot keep each figure's best run (highest rate, lowest
#                cost), since interference only ever makes a run worse
#   BENCH_OUT    results directory (default bench/results)
#   CC           C compiler (default cc)
#
# Writes $BENCH_OUT/<stamp>.tsv (impl, metric, N, value, unit, with the
# machine and commands in '#' lines) and $BENCH_OUT/<stamp>-cost.png, and
# prints a table with the ratio C/Go for each metric.
# `bench/run.sh --table FILE.tsv` prints the table of an earlier run.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
# 2M objects take ~7 GiB in the Go peer and ~5 GiB in the C bulk load phase.
avail_gib=$(awk '/^MemAvailable/ {print int($2 / 1048576)}' /proc/meminfo)
default_ns="10000 100000 1000000"
[ "$avail_gib" -ge 16 ] && default_ns="$default_ns 2000000"
ns=${BENCH_NS:-$default_ns}
secs=${BENCH_SECS:-0.5}
peers=${BENCH_PEERS:-c go}
runs=${BENCH_RUNS:-1}
out=${BENCH_OUT:-bench/results}
build=bench/build
stamp=$(date -u +%Y-%m-%d-%H%M)
tsv=$out/$stamp.tsv
png=$out/$stamp-cost.png
mkdir -p "$build" "$out"

# --- best of the runs: rates are higher-better, everything else lower ----------
best_rows() {
    awk -F'\t' -v OFS='\t' '
        /^#/ || $1 == "impl" { next }
        { k = $1 SUBSEP $2 SUBSEP $3
          if (!(k in v)) { order[++n] = k; v[k] = $4; u[k] = $5 }
          else if ($5 ~ /\/s$/ ? $4 + 0 > v[k] + 0 : $4 + 0 < v[k] + 0) v[k] = $4 }
        END { for (i = 1; i <= n; i++) { split(order[i], f, SUBSEP)
              print f[1], f[2], f[3], v[order[i]], u[order[i]] } }' "$1"
}

# --- table -----------------------------------------------------------------
table() {
    awk -F'\t' '
        function fmt(x) { return x == "" ? "" : (x + 0 < 100 ? sprintf("%.3f", x) : sprintf("%.0f", x)) }
        { v[$1, $2, $3] = $4; unit[$2] = $5
          if (!($2 in seen)) { seen[$2] = 1; order[++nm] = $2 }
          if (!($3 in seenN)) { seenN[$3] = 1; ns[++nn] = $3 } }
        END {
            # "better": which side wins and by how much (rates: higher wins;
            # ns, bytes and ratios: lower wins)
            printf "%-20s %8s %14s %14s %7s %9s  %s\n", "metric", "N", "C", "Go", "C/Go",
                "better", "unit"
            for (j = 1; j <= nn; j++) for (i = 1; i <= nm; i++) {
                m = order[i]; n = ns[j]
                c = ((("c", m, n) in v)) ? v["c", m, n] : ""
                g = ((("go", m, n) in v)) ? v["go", m, n] : ""
                r = "-"; b = "-"
                if (c != "" && g != "" && g + 0 != 0 && c + 0 != 0 && m != "raw_bytes") {
                    r = sprintf("%.2f", c / g)
                    x = (unit[m] ~ /\/s$/) ? c / g : g / c
                    b = (x >= 1) ? sprintf("C %.1fx", x) : sprintf("Go %.1fx", 1 / x)
                }
                printf "%-20s %8s %14s %14s %7s %9s  %s\n", m, n, fmt(c), fmt(g), r, b, unit[m]
            }
        }' <(best_rows "$1")
}
if [ "${1:-}" = --table ]; then # re-print the table of an earlier run
    table "$2"
    exit 0
fi

# --- build -----------------------------------------------------------------
make -s lib >&2
cflags=(-std=c11 -O2 -g -Wall -Wextra)
${CC:-cc} "${cflags[@]}" -Iinclude -Ibench -o "$build/bench_core" bench/bench_core.c \
    lib/libwatchcache.a -Wl,--as-needed -lzstd -lcurl -ljansson -lyaml -lxxhash -lpthread -lm
export GOPATH=/usr/share/gocode GO111MODULE=off
# the Go peer's google/btree comes from Debian, like everything else
[ -d "$GOPATH/src/github.com/google/btree" ] || tools/bootstrap-deps.sh bench >&2
export GOCACHE=${GOCACHE:-$root/$build/gocache} GOFLAGS=
(cd bench/peers/go-btree && go build -o "$root/$build/go-btree" .)
# Both sides must see the same objects, or the comparison means nothing.
bench/podgen_check.sh 2000 >&2

# --- run ---------------------------------------------------------------------
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mem=$(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo)
{
    echo "# watchcache core benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "# machine: $(nproc) CPUs, $cpu, $mem; $(uname -sr)"
    echo "# commit: $(git describe --always --dirty 2>/dev/null || echo unknown) (the tree make built the lib from)"
    echo "# c:  $build/bench_core -t $secs N"
    echo "# go: $build/go-btree -secs $secs N   ($(go version | cut -d' ' -f3), google/btree 1.0.0)"
    printf 'impl\tmetric\tN\tvalue\tunit\n'
} >"$tsv"

run_one() { # impl N
    local impl=$1 n=$2 cmd
    case $impl in
    c) cmd=("$build/bench_core" -t "$secs" "$n") ;;
    go) cmd=("$build/go-btree" -secs "$secs" "$n") ;;
    *) echo "run.sh: unknown peer $impl" >&2 && exit 2 ;;
    esac
    echo "# $impl N=$n start $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$tsv"
    echo "run.sh: $impl N=$n ..." >&2
    "${cmd[@]}" | sed "s/^/$impl\t/" >>"$tsv"
}

for _ in $(seq "$runs"); do
    for n in $ns; do
        for impl in $peers; do
            run_one "$impl" "$n"
        done
    done
done

table "$tsv" | tee "$out/$stamp-table.txt"

# --- plot: cost per operation against N (lower is better) ------------------
if command -v gnuplot >/dev/null; then
    # columns: N, then C and Go each: update ns (one event per call), GET ns
    # (one key per call), LIST ns, RSS/raw, update ns (64 events per call),
    # GET ns (64 keys per call)
    dat=$build/plot.dat
    awk -F'\t' '
        $2 == "update_rate"         { u[$1, $3] = 1e9 / $4 }
        $2 == "update_rate_batch64" { ub[$1, $3] = 1e9 / $4 }
        $2 == "get_1t_view_open"    { gt[$1, $3] = 1e9 / $4 }
        $2 == "get_1t_many64"       { gm[$1, $3] = 1e9 / $4 }
        $2 == "list_old_rev"        { l[$1, $3] = $4 }
        $2 == "rss_over_raw"        { r[$1, $3] = $4 }
        { if (!($3 in seen)) { seen[$3] = 1; ns[++nn] = $3 } }
        function f(a, k) { return (k in a) ? a[k] : "NaN" }
        END {
            for (j = 1; j <= nn; j++) {
                n = ns[j]
                printf "%s", n
                split("c go", im, " ")
                for (k = 1; k <= 2; k++) { i = im[k]
                    printf " %s %s %s %s %s %s", f(u, i SUBSEP n), f(gt, i SUBSEP n),
                        f(l, i SUBSEP n), f(r, i SUBSEP n), f(ub, i SUBSEP n), f(gm, i SUBSEP n) }
                printf "\n"
            }
        }' <(best_rows "$tsv") | sort -n >"$dat"
    gnuplot <<EOF
set terminal pngcairo size 1200,900 noenhanced font ",10"
set output "$png"
set multiplot layout 2,2 title "watchcache (C) vs google/btree + Clone per event (Go): cost against N, $stamp UTC"
set logscale x
set grid
set key top left
set xlabel "N objects"
set format x "%.0s%c"
set title "update: ns per event (10,000 revisions kept)"
set ylabel "ns/event"
set logscale y
plot "$dat" using 1:2 with linespoints lw 2 title "C, 1 event per call", \
     "" using 1:6 with linespoints lw 2 title "C, 64 events per call", \
     "" using 1:8 with linespoints lw 2 title "Go btree", \
     "" using 1:12 with linespoints lw 2 title "Go btree, 64 per lock", \
     500 with lines dt 2 title "target 2M events/s"
set title "GET: ns per GET, 1 thread, view kept open"
set ylabel "ns/GET"
plot "$dat" using 1:3 with linespoints lw 2 title "C, 1 key per call", \
     "" using 1:7 with linespoints lw 2 title "C, 64 keys per call", \
     "" using 1:9 with linespoints lw 2 title "Go btree", \
     200 with lines dt 2 title "target 5M GET/s"
set title "LIST: ns per item at an old revision in the window"
set ylabel "ns/item"
plot "$dat" using 1:4 with linespoints lw 2 title "C watchcache", \
     "" using 1:10 with linespoints lw 2 title "Go btree", \
     20 with lines dt 2 title "target 20 ns/item"
set title "memory: peak RSS / raw key+value bytes"
set ylabel "RSS / raw"
unset logscale y
set yrange [0:*]
plot "$dat" using 1:5 with linespoints lw 2 title "C watchcache", \
     "" using 1:11 with linespoints lw 2 title "Go btree", \
     1.15 with lines dt 2 title "target 1.15"
unset multiplot
EOF
    echo "run.sh: plot in $png" >&2
fi
echo "run.sh: results in $tsv" >&2
