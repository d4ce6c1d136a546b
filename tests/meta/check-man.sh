#!/bin/sh
# check-man.sh - lint the manual pages against the header (curl test 1173's idea).
#
#   1. every page renders with groff -man -ww (and mandoc -Tlint, when
#      installed) without a warning;
#   2. every ".so" alias names an existing page;
#   3. every WCACHE_API function of include/watchcache.h has a page or alias
#      in man/man3, and every man3 page is a function or a known overview;
#   4. every WCACHE_E* code of the header is described in
#      libwatchcache-errors.3;
#   5. every page has the sections of STYLE.md 5.10, in that order;
#   6. the C code of every EXAMPLE (between the comments
#      '.\" example-begin' and '.\" example-end') compiles with
#      cc -std=c11 -Wall -Wextra -Werror -Iinclude -fsyntax-only.
#
# Run from anywhere; exits non-zero and says why on the first kind of
# failure found (all failures of that kind are listed).
set -u
cd "$(dirname "$0")/../.." || exit 2

HDR=include/watchcache.h
MAN=man
CC=${CC:-cc}
tmp=$(mktemp -d) || exit 2
trap 'rm -rf "$tmp"' EXIT INT TERM
fail=0
err() { printf 'check-man: %s\n' "$*" >&2; fail=1; }

pages=$(find "$MAN" -name '*.[1-8]' -type f | LC_ALL=C sort)
[ -n "$pages" ] || { err "no pages under $MAN/"; exit 1; }

# An alias page is a single ".so" line (comments allowed).
is_alias() { grep -v '^\.\\"' "$1" | grep -q '^\.so ' ; }

# --- 1, 2: rendering and aliases --------------------------------------------
for p in $pages; do
    rel=${p#"$MAN"/}
    if is_alias "$p"; then
        n=$(grep -v '^\.\\"' "$p" | grep -cv '^[[:space:]]*$')
        [ "$n" -eq 1 ] || err "$p: an alias page holds only its .so line"
        target=$(sed -n 's/^\.so[[:space:]]\{1,\}//p' "$p")
        [ -f "$MAN/$target" ] || err "$p: .so $target: no such page"
        if [ -f "$MAN/$target" ] && is_alias "$MAN/$target"; then
            err "$p: .so $target: an alias of an alias"
        fi
        continue
    fi
    # groff resolves .so relative to its working directory: run it in man/.
    out=$(cd "$MAN" && groff -t -man -ww -z "$rel" 2>&1)
    [ -z "$out" ] || err "$p: groff warns: $out"
    if command -v mandoc >/dev/null 2>&1; then
        # -W warning: real problems; style remarks are not failures.
        out=$(mandoc -Tlint -W warning "$p" 2>&1)
        [ -z "$out" ] || err "$p: mandoc warns: $out"
    fi
done

# --- 3: every public function has a page ------------------------------------
# Prototypes may span lines: drop preprocessor lines, join the rest, strip
# comments, then pick "WCACHE_API ... name(".
funcs=$(grep -v '^[[:space:]]*#' "$HDR" | tr '\n' ' ' |
        sed 's:/\*[^*]*\*\{1,\}\([^/*][^*]*\*\{1,\}\)*/: :g' | grep -o 'WCACHE_API[^;(]*(' |
        sed 's/[[:space:]]*($//; s/.*[[:space:]*]//' | LC_ALL=C sort -u)
[ -n "$funcs" ] || err "no WCACHE_API function found in $HDR"
for f in $funcs; do
    [ -f "$MAN/man3/$f.3" ] || err "$f: no man/man3/$f.3 (page or .so alias)"
done
# ... and every non-alias page names its functions in NAME and SYNOPSIS.
for f in $funcs; do
    p=$MAN/man3/$f.3
    [ -f "$p" ] || continue
    if is_alias "$p"; then p=$MAN/$(sed -n 's/^\.so[[:space:]]\{1,\}//p' "$p"); fi
    [ -f "$p" ] || continue
    sed -n '/^\.SH NAME/,/^\.SH/p' "$p" | grep -q "\\<$f\\>" ||
        err "$f: not in the NAME section of $p"
    sed -n '/^\.SH SYNOPSIS/,/^\.SH/p' "$p" | grep -q "\\<$f(" ||
        err "$f: no prototype in the SYNOPSIS of $p"
done
# Pages in man3 that are neither a function nor an overview are stale.
for p in "$MAN"/man3/*.3; do
    b=$(basename "$p" .3)
    case $b in libwatchcache | libwatchcache-*) continue ;; esac
    is_alias "$p" && { echo "$funcs" | grep -qx "$b" || err "$p: alias of no public function"; continue; }
    # a group page: one of its NAME entries must be a public function
    sed -n '/^\.SH NAME/,/^\.SH/p' "$p" | tr ',' '\n' | grep -o 'wcache_[a-z0-9_]*' |
        grep -qxF "$funcs" || err "$p: names no public function"
done

# --- 4: every status code is documented -------------------------------------
codes=$(grep -o '^[[:space:]]*WCACHE_E[A-Z0-9_]*[[:space:]]*=' "$HDR" | tr -d ' =' | sort -u)
[ -n "$codes" ] || err "no WCACHE_E* code found in $HDR"
errpage=$MAN/man3/libwatchcache-errors.3
if [ -f "$errpage" ]; then
    for e in $codes WCACHE_OK; do
        grep -q "^\\.B $e\$" "$errpage" ||
            err "$e: not described in $errpage (want a '.B $e' tag)"
    done
else
    err "$errpage: missing"
fi

# --- 5: section order (STYLE.md 5.10) ---------------------------------------
order="NAME LIBRARY SYNOPSIS DESCRIPTION OWNERSHIP THREAD_SAFETY RETURN_VALUE ERRORS EXAMPLE SEE_ALSO HISTORY"
for p in "$MAN"/man3/*.3; do
    is_alias "$p" && continue
    # Function pages carry every section; overview pages a subset, in order.
    got=$(sed -n 's/^\.SH[[:space:]]\{1,\}//p' "$p" | tr -d '"' | tr ' ' '_')
    want=$order
    case $(basename "$p") in libwatchcache*) want=$(for s in $order; do
        echo "$got" | grep -qx "$s" && echo "$s"; done) ;; esac
    [ "$(echo $got)" = "$(echo $want)" ] ||
        err "$p: sections are '$(echo $got)', want '$(echo $want)'"
done

# --- 6: examples compile -----------------------------------------------------
for p in $pages; do
    is_alias "$p" && continue
    # Keep the lines between the markers, drop requests (.EX, .EE, comments),
    # and undo the roff escapes used in code: \- \e \(aq \(dq \&.
    awk -v out="$tmp/$(basename "$p")" '
        /^\.\\" example-begin/ { n++; on = 1; f = out "-" n ".c"; printf "" > f; next }
        /^\.\\" example-end/   { on = 0; close(f); next }
        on && /^[.\x27]/       { next }
        on                     { print > f }
        END { if (on) { print "unterminated example" > "/dev/stderr"; exit 1 } }
    ' "$p" || err "$p: unterminated example"
    for c in "$tmp/$(basename "$p")"-*.c; do
        [ -f "$c" ] || continue
        sed -i -e 's/\\-/-/g' -e 's/\\(aq/'"'"'/g' -e 's/\\(dq/"/g' -e 's/\\&//g' \
            -e 's/\\e/\\/g' "$c"
        if ! out=$($CC -std=c11 -Wall -Wextra -Werror -I"$PWD/include" -fsyntax-only "$c" 2>&1); then
            err "$p: example $(basename "$c" .c | sed 's/.*-//') does not compile:"
            printf '%s\n' "$out" >&2
        fi
    done
done
grep -l 'example-begin' $pages >/dev/null 2>&1 || err "no page has a marked example"

if [ "$fail" -ne 0 ]; then
    echo "check-man: FAILED" >&2
    exit 1
fi
echo "check-man: $(echo "$pages" | wc -l) pages, $(echo "$funcs" | wc -l) functions, $(echo "$codes" | wc -l) codes: ok"
