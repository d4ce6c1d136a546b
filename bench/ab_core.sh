#!/usr/bin/env bash
# ab_core.sh - the core workload on two git revisions of the library, in one
# process, interleaved (bench/ab_core.c), for A/B comparisons on a machine
# shared with other work.  Prints the load average before and after.
#
# Usage: bench/ab_core.sh REV_A REV_B [N [UPDATES [ROUNDS [PHASES]]]]
#   defaults: N 1000000, UPDATES 600000, ROUNDS 15, PHASES ugl
#   REV may be "." for the working tree as it is.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
[ $# -ge 2 ] || { echo "usage: $0 REV_A REV_B [N [UPDATES [ROUNDS [PHASES]]]]" >&2; exit 2; }
build=bench/build/ab
mkdir -p "$build"
lib_of() { # rev -> path of its libwatchcache.so
    local rev=$1 dir
    if [ "$rev" = . ]; then
        make -s lib >&2
        cp lib/libwatchcache.so.0.*.* "$build/wt.so"
        echo "$build/wt.so"
        return
    fi
    dir=$build/$(git rev-parse --short "$rev")
    if [ ! -f "$dir/lib.so" ]; then
        rm -rf "$dir.src" && mkdir -p "$dir.src" "$dir"
        git archive "$rev" | tar -x -C "$dir.src"
        make -s -C "$dir.src" lib >&2
        cp "$dir.src"/lib/libwatchcache.so.0.*.* "$dir/lib.so"
        rm -rf "$dir.src"
    fi
    echo "$dir/lib.so"
}
a=$(lib_of "$1")
b=$(lib_of "$2")
${CC:-cc} -std=c11 -O2 -g -Wall -Wextra -Iinclude -Ibench -o "$build/ab_core" bench/ab_core.c -ldl
echo "# A=$1 B=$2 N=${3:-1000000} load before: $(cut -d' ' -f1-3 /proc/loadavg)"
"$build/ab_core" "$a" "$b" "${3:-1000000}" "${4:-600000}" "${5:-15}" "${6:-ugl}"
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"
