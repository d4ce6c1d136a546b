#!/usr/bin/env bash
# suites.sh - every test file is actually run.
#
# The runners register the suites make finds by the pattern
# "Suite *NAME_suite(void)" at the start of a line (see tests/check_main.c).
# A test file written another way (say, the return type on its own line)
# would compile, link and silently never run; this test says so instead.
# The TSan and valgrind passes select suites by their suite_create("NAME")
# literal, so every file must name its suites that way.  It also catches two
# files defining the same suite function or suite name.
. "$(dirname "$0")/common.inc"

RE='^Suite[[:space:]]*\*[[:space:]]*[A-Za-z_][A-Za-z0-9_]*_suite[[:space:]]*\([[:space:]]*void[[:space:]]*\)'
n=0
for f in tests/check_*.c tests/wb_*.c; do
    [ -f "$f" ] || continue
    [ "$f" = tests/check_main.c ] && continue
    n=$((n + 1))
    grep -Eq "$RE" "$f" ||
        problem "$f defines no 'Suite *NAME_suite(void)' at the start of a line: its tests never run"
    grep -Eq 'suite_create\("[^"]+"\)' "$f" ||
        problem "$f has no suite_create(\"NAME\") with a literal name: the TSan and valgrind passes would skip it"
done
dupnames=$(sed -n 's/.*suite_create("\([^"]*\)").*/\1/p' tests/check_*.c tests/wb_*.c 2>/dev/null | sort | uniq -d || true)
[ -z "$dupnames" ] || problem "suite names used twice: $dupnames"

for set in "tests/check_*.c" "tests/wb_*.c"; do
    # shellcheck disable=SC2086
    dups=$(grep -Eho "$RE" $set 2>/dev/null | sed 's/[[:space:]]//g' | sort | uniq -d || true)
    [ -z "$dups" ] || problem "suite functions defined twice in $set: $dups"
done
finish "$n files"
