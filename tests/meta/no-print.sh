#!/usr/bin/env bash
# no-print.sh - the library never prints, exits or aborts: messages go to
# the log callback, failures are returned as codes.  Checked on the compiled
# objects of lib/ (undefined references), so macros cannot hide a call.
# assert() (__assert_fail) stays allowed for debug-build invariant checks.
. "$(dirname "$0")/common.inc"

BANNED='printf|vprintf|fprintf|vfprintf|dprintf|vdprintf|puts|putchar|fputs|fputc|putc|perror|abort|exit|_exit|_Exit|quick_exit|__printf_chk|__fprintf_chk|__vfprintf_chk|__vprintf_chk|__dprintf_chk|stdout|stderr|err|errx|warn|warnx|error|syslog'

ls build/default/obj/lib/*.o >/dev/null 2>&1 || { echo "FAIL: lib objects not built (run make)"; exit 1; }
n=0
# Objects of current sources only: a deleted file's object may linger.
for f in $(find lib -name '*.c' | sort); do
    o=build/default/obj/${f%.c}.o
    [ -f "$o" ] || { problem "$o not built (run make)"; continue; }
    n=$((n + 1))
    while read -r s; do
        problem "$o references $s: the library must not print, exit or abort"
    done < <(nm -u "$o" | awk '{ print $NF }' | sed 's/@.*//' | grep -xE "$BANNED" || true)
done
finish "$n objects"
