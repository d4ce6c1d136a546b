#!/usr/bin/env bash
# no-alloc.sh - lib/ allocates only through lib/alloc.c (STYLE 5.5), so that
# the per-cache wcache_allocator really sees every allocation.
#
# Two checks: the sources (comments stripped, so prose may say "free()") call
# no libc allocator, and the compiled objects reference none (this catches
# calls hidden behind macros).  Member calls such as a->free(p, ud) are the
# allocator's own callbacks and are allowed.
. "$(dirname "$0")/common.inc"

BANNED='malloc|calloc|realloc|reallocarray|free|strdup|strndup|aligned_alloc|posix_memalign|memalign|valloc|pvalloc|asprintf|vasprintf|__strdup|__strndup'

n=0
for f in $(find lib -name '*.c' | sort); do
    [ "$f" = lib/alloc.c ] && continue
    n=$((n + 1))
    # -fpreprocessed strips comments without expanding macros; the line
    # markers it leaves keep the reported line numbers right.
    gcc -fpreprocessed -dD -E "$f" 2>/dev/null | awk -v file="$f" -v re="$BANNED" '
        /^# [0-9]+ / { line = $2 - 1; next }
        { line++ }
        {
            s = $0
            gsub(/"([^"\\]|\\.)*"/, "\"\"", s)
            while (match(s, "(^|[^A-Za-z0-9_.>])(" re ")[[:space:]]*\\(")) {
                call = substr(s, RSTART, RLENGTH)
                sub(/^[^A-Za-z_]/, "", call)
                sub(/[[:space:]]*\($/, "", call)
                printf "%s:%d: calls %s()\n", file, line, call
                s = substr(s, RSTART + RLENGTH)
            }
        }'
done >"${TMPDIR:-/tmp}/no-alloc.$$" || true
while read -r l; do problem "$l outside lib/alloc.c"; done <"${TMPDIR:-/tmp}/no-alloc.$$"
rm -f "${TMPDIR:-/tmp}/no-alloc.$$"

# The objects of the default build, when present.
if ls build/default/obj/lib/*.o >/dev/null 2>&1; then
    for f in $(find lib -name '*.c' | sort); do
        [ "$f" = lib/alloc.c ] && continue
        o=build/default/obj/${f%.c}.o
        [ -f "$o" ] || { echo "$o not built"; continue; }
        { nm -u "$o" | awk '{ print $NF }' | sed 's/@.*//' | grep -xE "$BANNED" || true; } |
            while read -r s; do echo "$o references $s"; done
    done >"${TMPDIR:-/tmp}/no-alloc-obj.$$"
    while read -r l; do problem "$l"; done <"${TMPDIR:-/tmp}/no-alloc-obj.$$"
    rm -f "${TMPDIR:-/tmp}/no-alloc-obj.$$"
else
    echo "note: build/default/obj/lib/*.o not built; only the sources were checked"
fi

finish "$n files"
