#!/bin/sh
# podgen_check.sh - check that the Go port of podgen.h writes the same bytes
# as the C generator: COUNT pods (creates and updates) for a few seeds.
# Usage: bench/podgen_check.sh [COUNT]   (from the repository root or bench/)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
count=${1:-20000}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
${CC:-cc} -std=c11 -O2 -Wall -Wextra -o "$tmp/podgen_dump" "$here/podgen_dump.c"
(cd "$here/peers/go-btree" &&
    GOPATH=/usr/share/gocode GO111MODULE=off GOCACHE="${GOCACHE:-$tmp/gocache}" \
        go build -o "$tmp/go-btree" .)
for seed in 0 1 42 18446744073709551615; do
    "$tmp/podgen_dump" "$seed" "$count" >"$tmp/c.txt"
    "$tmp/go-btree" -dump "$count" -seed "$seed" >"$tmp/go.txt"
    if ! cmp -s "$tmp/c.txt" "$tmp/go.txt"; then
        echo "podgen: C and Go differ for seed $seed:" >&2
        cmp "$tmp/c.txt" "$tmp/go.txt" >&2 || true
        exit 1
    fi
    echo "podgen: seed $seed: $count pods identical ($(wc -c <"$tmp/c.txt") bytes)"
done
