#!/usr/bin/env bash
# man-errors.sh - every WCACHE_E* status code is explained in
# man/man3/libwatchcache-errors.3, and the page names no code that the
# header lacks (a renamed or invented code).
. "$(dirname "$0")/common.inc"

PAGE=man/man3/libwatchcache-errors.3
[ -f "$PAGE" ] || { echo "FAIL: $PAGE does not exist"; exit 1; }

# roff may write the name in font escapes (\fBWCACHE_EINVAL\fR), which grep
# -w still finds; a code hyphenated by \- or split by \& would not be, and
# should not be written that way anyway.
n=0
while read -r code; do
    n=$((n + 1))
    grep -qw -- "$code" "$PAGE" || problem "$code is not described in $PAGE"
done < <(header_error_codes)

codes=$(header_error_codes)
while read -r code; do
    grep -qx -- "$code" <<<"$codes" ||
        problem "$PAGE names $code, which include/watchcache.h does not define"
done < <(grep -o 'WCACHE_E[A-Z0-9_]*' "$PAGE" | sort -u)

finish "$n codes"
