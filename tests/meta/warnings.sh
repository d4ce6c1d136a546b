#!/usr/bin/env bash
# warnings.sh - every C file is warning-free with both gcc and clang under
# the project's warning set, even outside CI (where -Werror is already on).
# gcc compiles for real (its -Wmaybe-uninitialized and -Wstringop-* warnings
# come from optimisation passes that -fsyntax-only skips); clang's warnings
# come from its front end, so syntax-only is enough there.  Under CI=true
# the build itself already failed on any gcc warning, so gcc goes
# syntax-only too.
. "$(dirname "$0")/common.inc"
make_tmpdir

PKGS="libzstd libcurl jansson yaml-0.1 libxxhash check"
dep=$(pkg-config --cflags $PKGS 2>/dev/null) || { echo "FAIL: pkg-config: $PKGS"; exit 1; }
FLAGS=(-std=c11 -D_GNU_SOURCE -O2 -Wall -Wextra -Wswitch-enum -Werror)

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
        mode=(-fsyntax-only)
        [ $cc = gcc ] && [ "${CI:-}" != true ] && mode=(-c -o "$TMPD/out.o")
        if ! $cc "${FLAGS[@]}" "${mode[@]}" "${inc[@]}" $dep "$f" >"$TMPD/out" 2>&1; then
            problem "$f: $cc warnings"
            sed 's/^/    /' "$TMPD/out" | head -n 40
        fi
    done
done
finish "$n files"
