#!/usr/bin/env bash
# warnings.sh - every C file is warning-free with both gcc and clang under
# the project's warning set, even outside CI (where -Werror is already on).
# Syntax-only, so it costs a few seconds.
. "$(dirname "$0")/common.inc"
make_tmpdir

PKGS="libzstd libcurl jansson yaml-0.1 libxxhash check"
dep=$(pkg-config --cflags $PKGS 2>/dev/null) || { echo "FAIL: pkg-config: $PKGS"; exit 1; }
FLAGS=(-std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Wswitch-enum -Werror -fsyntax-only)

n=0
for f in lib/*.c tools/*.c tests/*.c tests/fuzz/*.c examples/c/*.c; do
    [ -f "$f" ] || continue
    inc=(-Iinclude -I.)
    case $f in
    lib/* | tests/wb_* | tests/fuzz/*) inc+=(-Ilib) ;;
    tests/check_main.c) inc+=(-Ibuild/default/gen/public) ;;
    esac
    [ "$f" = tests/check_main.c ] && [ ! -f build/default/gen/public/suites.inc ] && continue
    n=$((n + 1))
    for cc in gcc clang; do
        # shellcheck disable=SC2086
        if ! $cc "${FLAGS[@]}" "${inc[@]}" $dep "$f" >"$TMPD/out" 2>&1; then
            problem "$f: $cc warnings"
            sed 's/^/    /' "$TMPD/out" | head -n 40
        fi
    done
done
finish "$n files"
