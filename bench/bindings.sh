#!/usr/bin/env bash
# bindings.sh - the per-call cost of GET and LIST through the Go and Rust
# bindings against C, in process CPU time per call, best of 3 runs each:
# the "hot" workload (10k keys of 256 B, all in cache: the pure overhead),
# then ~1 KiB podgen pods at each N of a sweep (bench/bench_bindings.c
# says how).  Prints a table with the ratio of each binding to C, writes
# the raw figures and a plot (bench/bindings.gp) under bench/results/.
#
#   bench/bindings.sh [SECONDS]     (seconds per run, default 0.3)
#   bench/bindings.sh --table FILE  (re-print the table of a run's .tsv)
#
# Environment:
#   BENCH_BIND_NS  sizes of the pods sweep, ascending (default
#                  "10000 100000 1000000"; "" for the hot workload only)
#   BENCH_BIND_RUNS  repeat the three sides this many times, interleaved
#                  (default 1); table and plot keep each figure's best run,
#                  since interference only ever makes a run slower
#   BENCH_OUT      results directory (default bench/results)
#
# The three sides load the same pods file, written once by podgen_dump
# (bench/build/pods-1-<max N>.txt, ~1.1 KiB per pod, kept for the next
# run), and print a hash of what they loaded and of their request
# stream: the run stops if the three differ.  Each side loads every pod
# once (the cache grows from one N to the next); about 1.5 GiB of memory
# per side at 1M, one side at a time.
#
# Needs `make` done (lib/), go, cargo; gnuplot for the plot.  CPU time
# rather than wall time because the machine may be shared: other
# processes' load stays out.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-0.3}
ns=${BENCH_BIND_NS-10000 100000 1000000}
runs=${BENCH_BIND_RUNS:-1}
out=${BENCH_OUT:-bench/results}
build=bench/build
stamp=$(date -u +%Y-%m-%d-%H%M)
tsv=$out/$stamp-bindings.tsv
png=$out/$stamp-bindings.png
mkdir -p "$build" "$out"

# --- table: each binding against the C call it wraps ----------------------
table() {
    awk -F'\t' '
        /^#/ { next }
        $3 != "check" { k = $1 SUBSEP $2 SUBSEP $3; if (!(k in v) || $4 + 0 < v[k] + 0) v[k] = $4
                        if (!($2 in seen)) { seen[$2] = 1; w[++nw] = $2 } }
        function cell(impl, wl, m) { return ((impl, wl, m) in v) ? v[impl, wl, m] : "" }
        function ratio(x, base) { return (x != "" && base != "") ? sprintf("%.2f", x / base) : "" }
        END {
            printf "%-8s %-18s %9s %9s %6s %9s %6s\n", "workload", "CPU ns/call", "C", "Go", "Go/C", "Rust", "Rust/C"
            n = split("cgo_call get get_fenced get_append get_many get_borrowed list100 list100_func get_c_same_run get_append_same_run get_raw_ffi get_safe_same_run", m, " ")
            for (j = 1; j <= nw; j++) for (i = 1; i <= n; i++) {
                k = m[i]; wl = w[j]
                base = (k ~ /^get/) ? "get" : "list100"
                if (k == "get_borrowed") base = k
                if (k == "cgo_call" || k ~ /_ffi$|_run$/) base = "none"
                if (k == "get_c_same_run") { c = cell("go", wl, k); g = ""; r = ""
                    printf "%-8s %-18s %9s %9s %6s %9s %6s\n", wl, k, c, "", "", "", ""; continue }
                cb = cell("c", wl, base); c = cell("c", wl, k); g = cell("go", wl, k); r = cell("rust", wl, k)
                if (c == "" && g == "" && r == "") continue
                printf "%-8s %-18s %9s %9s %6s %9s %6s\n", wl, k, c, g, ratio(g, cb), r, ratio(r, cb)
            }
            for (j = 1; j <= nw; j++) {
                s = cell("go", w[j], "get_append_same_run"); f = cell("go", w[j], "get_c_same_run")
                if (s != "" && f != "") printf "%-8s Go AppendValue / C GET loop, same process: %s\n", w[j], ratio(s, f)
            }
            for (j = 1; j <= nw; j++) {
                s = cell("rust", w[j], "get_safe_same_run"); f = cell("rust", w[j], "get_raw_ffi")
                if (s != "" && f != "") printf "%-8s Rust View::get / raw extern call, same process: %s\n", w[j], ratio(s, f)
            }
            print "(cgo_call: one bare cgo call, the floor of every Go call;"
            print " get: C copies the value out; Go Get copies into a new slice;"
            print " get_fenced: C get between the four locked instructions of a cgo call;"
            print " get_append, get_many: Go into a reused buffer, against C get;"
            print " list100_func: Go ListFunc, no copies, against C list100;"
            print " get_c_same_run / get_append_same_run: C GET loop (in the C column) and"
            print " Go AppendValue alternating in the Go process, the noise-free Go/C ratio;"
            print " get_raw_ffi / get_safe_same_run: Rust, the raw extern call and the safe"
            print " View::get alternating in one process, the noise-free overhead ratio)"
        }' "$1"
}
if [ "${1:-}" = --table ]; then
    table "$2"
    exit 0
fi

${CC:-cc} -std=c11 -O2 -Wall -Wextra -Iinclude bench/bench_bindings.c -Llib -lwatchcache \
    -Wl,-rpath,"$root/lib" -o "$build/bench_bindings"
pods=
if [ -n "$ns" ]; then
    # shellcheck disable=SC2086 # a list of sizes
    max=$(printf '%s\n' $ns | sort -n | tail -n 1)
    pods=$root/$build/pods-1-$max.txt
    if [ ! -s "$pods" ]; then
        ${CC:-cc} -std=c11 -O2 -Wall -Wextra -o "$build/podgen_dump" bench/podgen_dump.c
        echo "bindings.sh: writing $pods ..." >&2
        "$build/podgen_dump" 1 "$max" 1 >"$pods.tmp"
        mv "$pods.tmp" "$pods"
    fi
fi

{
    echo "# watchcache binding benchmark, $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "# machine: $(nproc) CPUs, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1), $(awk '/^MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo); $(uname -sr)"
    echo "# commit: $(git describe --always --dirty 2>/dev/null || echo unknown); $(go version | cut -d' ' -f3), $(rustc --version | cut -d' ' -f1-2), $(${CC:-cc} --version | head -n 1)"
    echo "# command: BENCH_BIND_RUNS=$runs bench/bindings.sh $secs; pods N: ${ns:-none}; CPU ns per call, best of 3 runs of ${secs} s"
} >"$tsv"
side() { # impl command...
    local impl=$1
    shift
    echo "# $impl start $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$tsv"
    echo "bindings.sh: $impl ..." >&2
    "$@" | sed "s/^/$impl\t/" >>"$tsv"
}
for _ in $(seq "$runs"); do
    # shellcheck disable=SC2086 # $ns is a list of sizes
    side c "$build/bench_bindings" "$secs" $pods $ns
    side go make -s -C examples/go bench-cpu BENCH_SECS="$secs" BENCH_PODS="$pods" BENCH_NS="$ns"
    # shellcheck disable=SC2086
    side rust env CARGO_TARGET_DIR="$root/build/rust" cargo run --offline -q --release \
        --manifest-path examples/rust/Cargo.toml --example bench_bindings -- "$secs" $pods $ns
done
echo "# end $(date -u +%H:%M:%S), load $(cut -d' ' -f1-3 /proc/loadavg)" >>"$tsv"

# The three sides must have measured the same bytes and the same keys.
if ! awk -F'\t' '$3 == "check" { if (($2 in h) && h[$2] != $4) bad = bad " " $2; h[$2] = $4; n[$2]++ }
        END { for (w in n) if (n[w] != 3 * runs) bad = bad " " w; exit bad != "" }' runs="$runs" "$tsv"; then
    echo "bindings.sh: the sides loaded different data or streams (check lines in $tsv)" >&2
    exit 1
fi

table "$tsv" | tee "$out/$stamp-bindings-table.txt"

if command -v gnuplot >/dev/null && [ -n "$ns" ]; then
    dat=$build/bindings.dat
    # columns: N, C get, Go AppendValue, Go GetMany, Go Get, Rust get,
    # C list100, Go ListFunc, Go List, Rust list100, cgo_call (hot), then the
    # same-process pairs: C GET loop in the Go process, Go AppendValue; Rust
    # raw extern call, Rust View::get
    awk -F'\t' '/^#/ { next }
        $3 == "cgo_call" { if (cgo == "" || $4 + 0 < cgo + 0) cgo = $4 }
        $2 != "hot" && $3 != "check" { k = $1 SUBSEP $3 SUBSEP $2; if (!(k in v) || $4 + 0 < v[k] + 0) v[k] = $4
                                       if (!($2 in seen)) { seen[$2] = 1; n[++nn] = $2 } }
        END { split("c get go get_append go get_many go get rust get c list100 go list100_func go list100 rust list100 go get_c_same_run go get_append_same_run rust get_raw_ffi rust get_safe_same_run", m, " ")
              for (j = 1; j <= nn; j++) { printf "%s", n[j]
                  for (i = 1; i < 27; i += 2) { k = m[i] SUBSEP m[i + 1] SUBSEP n[j]
                      if (i == 19) printf " %s", cgo
                      printf " %s", (k in v) ? v[k] : "NaN" }
                  printf "\n" } }' "$tsv" >"$dat"
    gnuplot -e "dat='$dat'; out='$png'; stamp='$stamp UTC'" bench/bindings.gp
    echo "bindings.sh: plot in $png" >&2
fi
echo "bindings.sh: results in $tsv" >&2
