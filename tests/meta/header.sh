#!/usr/bin/env bash
# header.sh - the public header is self-contained, strict and namespaced.
#
#  - compiles alone, warning-free, as C11 (-pedantic-errors) with gcc and
#    clang, and as C++ (extern "C" guards) with g++ and clang++ (liburcu's
#    C++ compile twins);
#  - defines no macro, type or tag outside WCACHE_* / wcache_* (STYLE 5.2);
#  - keeps the version macros consistent with each other.
. "$(dirname "$0")/common.inc"
make_tmpdir

printf '#include <watchcache.h>\n#include <watchcache.h>\nint main(void) { return 0; }\n' \
    >"$TMPD/t.c"
cp "$TMPD/t.c" "$TMPD/t.cc"

try() {
    local what=$1
    shift
    if ! "$@" >"$TMPD/out" 2>&1; then
        problem "$what: $*"
        sed 's/^/    /' "$TMPD/out"
    fi
}

STRICT=(-Wall -Wextra -Wpedantic -Werror -Iinclude -fsyntax-only)
for cc in gcc clang; do
    command -v $cc >/dev/null || { problem "$cc is not installed"; continue; }
    try "C11 ($cc)" $cc -std=c11 -pedantic-errors "${STRICT[@]}" -Wstrict-prototypes \
        -Wmissing-prototypes -Wshadow -Wconversion "$TMPD/t.c"
done
for cxx in g++ clang++; do
    command -v $cxx >/dev/null || { problem "$cxx is not installed"; continue; }
    for std in c++11 c++17; do
        try "C++ $std ($cxx)" $cxx -x c++ -std=$std -pedantic-errors "${STRICT[@]}" "$TMPD/t.cc"
    done
done

# Macros the header adds beyond those of its own includes.
printf '#include <stddef.h>\n#include <stdint.h>\n' >"$TMPD/base.c"
gcc -std=c11 -dM -E "$TMPD/base.c" | awk '{ print $2 }' | sed 's/(.*//' | sort -u >"$TMPD/base"
gcc -std=c11 -Iinclude -dM -E "$TMPD/t.c" | awk '{ print $2 }' | sed 's/(.*//' | sort -u >"$TMPD/all"
comm -13 "$TMPD/base" "$TMPD/all" | while read -r m; do
    case $m in
    WCACHE_* | WATCHCACHE_H) ;;
    *) echo "$m" ;;
    esac
done >"$TMPD/badmacros"
while read -r m; do problem "the header defines macro $m, outside WCACHE_*"; done <"$TMPD/badmacros"

# Type names and struct/enum tags the header declares.
gcc -std=c11 -Iinclude -E -P "$HDR" 2>/dev/null | tr '\n' ' ' |
    grep -oE '(typedef [^;{]*[ *]|(struct|enum|union) )[A-Za-z_][A-Za-z0-9_]*[[:space:]]*[;{]' |
    grep -oE '[A-Za-z_][A-Za-z0-9_]*[[:space:]]*[;{]$' | tr -d ' ;{' | sort -u >"$TMPD/types" || true
# Typedefs of structs name the type after the closing brace.
gcc -std=c11 -Iinclude -E -P "$HDR" 2>/dev/null | tr '\n' ' ' |
    grep -oE '\}[[:space:]]*[A-Za-z_][A-Za-z0-9_]*[[:space:]]*;' | tr -d '} ;' >>"$TMPD/types" || true
# Only names this header introduced (not those of stddef.h / stdint.h).
gcc -std=c11 -E -P "$TMPD/base.c" >"$TMPD/base.i"
sort -u "$TMPD/types" | while read -r t; do
    case $t in
    wcache_* | WCACHE_*) ;;
    *) grep -qw -- "$t" "$TMPD/base.i" || echo "$t" ;;
    esac
done >"$TMPD/badtypes"
while read -r t; do problem "the header declares type or tag $t, outside wcache_*"; done <"$TMPD/badtypes"

# Version macros agree with each other.
printf '#include <watchcache.h>\n#include <stdio.h>\n#include <string.h>\nint main(void) {\n char s[32];\n snprintf(s, sizeof s, "%%d.%%d.%%d", WCACHE_VERSION_MAJOR, WCACHE_VERSION_MINOR, WCACHE_VERSION_PATCH);\n if (strcmp(s, WCACHE_VERSION_STRING) != 0) { printf("string %%s != %%s\\n", WCACHE_VERSION_STRING, s); return 1; }\n if (WCACHE_VERSION_NUMBER != WCACHE_VERSION_MAJOR * 10000 + WCACHE_VERSION_MINOR * 100 + WCACHE_VERSION_PATCH) { printf("number\\n"); return 1; }\n return 0;\n}\n' >"$TMPD/v.c"
if gcc -std=c11 -Iinclude -o "$TMPD/v" "$TMPD/v.c" >"$TMPD/out" 2>&1; then
    "$TMPD/v" >"$TMPD/out" 2>&1 || { problem "version macros disagree"; cat "$TMPD/out"; }
else
    problem "version check program does not compile"
    cat "$TMPD/out"
fi

finish
