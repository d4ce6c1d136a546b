#!/usr/bin/env bash
# exports.sh - the shared library exports exactly the public API.
#
# Every dynamic symbol is ^wcache_ and declared WCACHE_API in the header, and
# every WCACHE_API function is exported (curl test 1167, jansson
# check-exports).  The static archive must not claim global names outside
# wcache_* / wci_*, or static linking could clash with the embedder.
. "$(dirname "$0")/common.inc"

SO=lib/libwatchcache.so
AR=lib/libwatchcache.a
need_file "$SO"
need_file "$AR"
make_tmpdir

header_functions >"$TMPD/declared"
nm -D --defined-only "$SO" | awk '{ print $NF }' | sed 's/@.*//' | sort -u >"$TMPD/exported"

while read -r s; do
    case $s in
    wcache_*) grep -qx "$s" "$TMPD/declared" || problem "$SO exports $s, which the header does not declare" ;;
    *) problem "$SO exports $s, which is not ^wcache_" ;;
    esac
done <"$TMPD/exported"

while read -r f; do
    grep -qx "$f" "$TMPD/exported" || problem "$f is declared WCACHE_API but not exported by $SO"
done <"$TMPD/declared"

# Global definitions (T, D, B, R, ...) in the archive.
nm -g --defined-only "$AR" 2>/dev/null | awk 'NF == 3 { print $3 }' | sort -u >"$TMPD/archive"
while read -r s; do
    case $s in
    wcache_* | wci_*) ;;
    *) problem "$AR defines global $s: name it wci_* (internal) or make it static" ;;
    esac
done <"$TMPD/archive"

# The soname is what the dynamic loader records in programs.
soname=$(readelf -d "$SO" | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
major=$(sed -n 's/^#define WCACHE_VERSION_MAJOR[[:space:]]*\([0-9]*\).*/\1/p' "$HDR")
[ "$soname" = "libwatchcache.so.$major" ] || problem "soname is '$soname', expected libwatchcache.so.$major"

finish "$(wc -l <"$TMPD/declared") functions"
