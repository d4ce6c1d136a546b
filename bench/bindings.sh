#!/usr/bin/env bash
# bindings.sh - the per-call cost of GET and LIST through the Go and Rust
# bindings against C, on one workload (bench/bench_bindings.c says which),
# in process CPU time per call, best of 3 runs each.  Prints a table with
# the ratio of each binding to C.
#
#   bench/bindings.sh [SECONDS]     (seconds per run, default 1)
#
# Needs `make` done (lib/), go and cargo.  CPU time rather than wall time
# because the machine may be shared: other processes' load stays out.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
secs=${1:-1}
mkdir -p bench/build
${CC:-cc} -std=c11 -O2 -Iinclude bench/bench_bindings.c -Llib -lwatchcache \
    -Wl,-rpath,"$root/lib" -o bench/build/bench_bindings
bench/build/bench_bindings "$secs" >bench/build/bindings-c.tsv
make -s -C examples/go bench-cpu BENCH_SECS="$secs" >bench/build/bindings-go.tsv
CARGO_TARGET_DIR="$root/build/rust" cargo run --offline -q --release \
    --manifest-path examples/rust/Cargo.toml --example bench_bindings -- "$secs" \
    >bench/build/bindings-rust.tsv
awk -F'\t' '
    FILENAME ~ /-c\.tsv$/ { c[$1] = $2; next }
    FILENAME ~ /-go\.tsv$/ { g[$1] = $2; next }
    { r[$1] = $2 }
    END {
        printf "%-14s %10s %10s %7s %10s %7s\n", "CPU ns/call", "C", "Go", "Go/C", "Rust", "Rust/C"
        n = split("cgo_call get get_append get_many get_borrowed list100 list100_func get_raw_ffi get_safe_same_run", m, " ")
        for (i = 1; i <= n; i++) {
            k = m[i]; base = (k ~ /^get/) ? "get" : "list100"
            if (k == "get_borrowed") base = k
            if (k == "cgo_call" || k ~ /_ffi$|_run$/) base = "none"
            cv = c[base]
            printf "%-14s %10s %10s %7s %10s %7s\n", k, (k in c) ? c[k] : "", (k in g) ? g[k] : "",
                (k in g && cv) ? sprintf("%.2f", g[k] / cv) : "", (k in r) ? r[k] : "",
                (k in r && cv) ? sprintf("%.2f", r[k] / cv) : ""
        }
        print "(cgo_call: one bare cgo call, the floor of every Go call;"
        print " get_append, get_many: Go against C get, which copies the value too;"
        print " list100_func: Go ListFunc, no copies, against C list100;"
        print " get_raw_ffi / get_safe_same_run: Rust, the raw extern call and the safe"
        print " View::get alternating in one process, the noise-free overhead ratio)"
    }' bench/build/bindings-c.tsv bench/build/bindings-go.tsv bench/build/bindings-rust.tsv
