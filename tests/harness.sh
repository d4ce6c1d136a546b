#!/usr/bin/env bash
# harness.sh - step bookkeeping for `make check` and `make check-long`.
#
#   harness.sh begin                 forget the results of an earlier run
#   harness.sh step NAME CMD [ARG]...  run CMD, log it, record pass/fail
#   harness.sh exec SCRIPT [ARG]...  run SCRIPT by its #! line, or with bash
#                                    when it is not executable
#   harness.sh summary               print "N passed, N failed" last; exit 1
#                                    if any step failed
#
# A step never stops the run: CI wants to see every failure at once.  The
# output of a passing step goes only to its log (build/check/logs/NAME.log);
# a failing step's log is printed, so CI output is enough to diagnose it.
# Set CHECK_VERBOSE=1 to stream every step's output as it runs.
# A step that runs longer than STEP_TIMEOUT seconds (default 2400) is killed
# and fails, so a hung test cannot hold CI until its global limit.
set -uo pipefail

DIR=${CHECK_DIR:-build/check}
LOGS=$DIR/logs
RESULTS=$DIR/results

# Name to a file name: meta/exports -> meta_exports.
slug() { printf '%s' "$1" | tr -c 'A-Za-z0-9_.+-' '_'; }

cmd_begin() {
    rm -rf "$DIR"
    mkdir -p "$LOGS"
    : >"$RESULTS"
    date +%s >"$DIR/started"
}

cmd_step() {
    local name=$1
    shift
    mkdir -p "$LOGS"
    [ -f "$RESULTS" ] || : >"$RESULTS"
    local log
    log=$LOGS/$(slug "$name").log
    local t0 t1 rc
    t0=$(date +%s)
    [ -t 1 ] && printf '%-28s ...\n' "$name"
    local limit=${STEP_TIMEOUT:-2400}
    if [ "${CHECK_VERBOSE:-0}" = 1 ]; then
        timeout -k 10 "$limit" "$@" 2>&1 </dev/null | tee "$log"
        rc=${PIPESTATUS[0]}
    else
        timeout -k 10 "$limit" "$@" >"$log" 2>&1 </dev/null
        rc=$?
    fi
    [ "$rc" -eq 124 ] && echo "harness: $name killed after ${limit}s" >>"$log"
    t1=$(date +%s)
    if [ "$rc" -eq 0 ]; then
        printf '%-28s PASS  %4ss\n' "$name" $((t1 - t0))
        printf 'PASS %s %s\n' "$name" $((t1 - t0)) >>"$RESULTS"
    else
        if [ "${CHECK_VERBOSE:-0}" != 1 ]; then
            printf -- '----- %s: last 150 lines of %s -----\n' "$name" "$log"
            tail -n 150 "$log"
            printf -- '----- end of %s -----\n' "$name"
        fi
        printf '%-28s FAIL  %4ss  (exit %s, log %s)\n' "$name" $((t1 - t0)) "$rc" "$log"
        printf 'FAIL %s %s\n' "$name" $((t1 - t0)) >>"$RESULTS"
    fi
    # The step's own status is recorded, not returned: make must go on.
    return 0
}

cmd_summary() {
    [ -f "$RESULTS" ] || : >"$RESULTS"
    local pass fail total=""
    pass=$(grep -c '^PASS ' "$RESULTS")
    fail=$(grep -c '^FAIL ' "$RESULTS")
    if [ -f "$DIR/started" ]; then
        total=$(($(date +%s) - $(cat "$DIR/started")))
    fi
    if [ "$fail" -gt 0 ]; then
        echo "failed steps:"
        sed -n 's/^FAIL \([^ ]*\) .*/  \1/p' "$RESULTS"
    fi
    [ -n "$total" ] && echo "total time: ${total}s"
    echo "$pass passed, $fail failed"
    [ "$fail" -eq 0 ]
}

case ${1:-} in
begin) cmd_begin ;;
step)
    shift
    [ $# -ge 2 ] || { echo "usage: $0 step NAME CMD [ARG]..." >&2; exit 2; }
    cmd_step "$@"
    ;;
summary) cmd_summary ;;
exec)
    shift
    if [ -x "$1" ]; then exec "$@"; else exec bash "$@"; fi
    ;;
*)
    echo "usage: $0 begin | step NAME CMD [ARG]... | exec SCRIPT [ARG]... | summary" >&2
    exit 2
    ;;
esac
