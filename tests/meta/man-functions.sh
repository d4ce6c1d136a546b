#!/usr/bin/env bash
# man-functions.sh - every WCACHE_API function has a man page.
#
# A function is documented when man/man3/FUNCTION.3 exists (a page, or a
# ".so man3/GROUP.3" alias whose target exists), or when it is named in the
# NAME section of some man/man3 page (man(7) .SH NAME or mdoc .Sh NAME), so
# that `man FUNCTION` finds it.
. "$(dirname "$0")/common.inc"
make_tmpdir

# Names listed in the NAME sections of all man3 pages.
for p in man/man3/*.3; do
    [ -e "$p" ] || continue
    awk '
        /^\.S[Hh][[:space:]]/ { inname = ($2 == "NAME" || $2 == "\"NAME\"") ; next }
        inname { print }
    ' "$p"
done | grep -o 'wcache_[A-Za-z0-9_]*' | sort -u >"$TMPD/named" || true

checked=0
while read -r f; do
    checked=$((checked + 1))
    page=man/man3/$f.3
    if [ -f "$page" ]; then
        target=$(sed -n 's/^\.so[[:space:]]\{1,\}\([^[:space:]]*\).*/\1/p' "$page" | head -n 1)
        if [ -n "$target" ] && [ ! -f "man/$target" ]; then
            problem "$page is an alias of $target, which does not exist"
        fi
        continue
    fi
    grep -qx "$f" "$TMPD/named" ||
        problem "$f has no man page (no $page, not in the NAME section of any man/man3 page)"
done < <(header_functions)

finish "$checked functions"
