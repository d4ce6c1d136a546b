#!/usr/bin/env bash
# sync.sh - wcache sync and wcache check against a real etcd started here by
# tests/peers/etcd-local on 127.0.0.1 (and stopped, whatever happens).
# Expects tools/wcache on PATH (make check-cli puts it there).
set -u
cd "$(dirname "$0")/../.." || exit 1
T=$(mktemp -d "${TMPDIR:-/tmp}/wcache-sync.XXXXXX")
cleanup() {
    [ -f "$T/etcd/pids" ] && tests/peers/etcd-local stop "$T/etcd" >/dev/null 2>&1
    rm -rf "$T"
}
trap cleanup EXIT
. tests/cli/common.inc

command -v wcache >/dev/null || { echo "FAIL: wcache is not on PATH"; exit 1; }

# --- usage (no etcd needed) ------------------------------------------------------
expect 1 wcache sync --prefix /a/ --out "$T/x.wcsnap" && has_err "required"
expect 1 wcache sync --etcd http://127.0.0.1:1 --prefix /a/ && has_err "--out"
expect 1 wcache sync --etcd http://127.0.0.1:1 --prefix /a/ --out "$T/x" --until-revision 0
expect 1 wcache sync --etcd http://127.0.0.1:1 --prefix /a/ --out "$T/x" --timeout x
expect 2 wcache check --etcd http://127.0.0.1:1 --prefix /a/ && has_err "snapshot file"
expect 2 wcache check --etcd http://127.0.0.1:1 --prefix /a/ "$T/missing.wcsnap"
expect 2 wcache check --etcd http://127.0.0.1:1 --prefix /a/ tests/data/golden-v1.1-delta.wcsnap &&
    has_err "a delta"
# Nothing listens on port 1: unreachable within --timeout, nothing written.
expect 1 wcache sync --etcd http://127.0.0.1:1 --prefix /a/ --out "$T/x.wcsnap" --timeout 1 &&
    has_err "unreachable"
[ ! -e "$T/x.wcsnap" ] && ok || fail "a failed sync left a file"

export ETCD_LOCAL_EXTRA_ARGS="--experimental-watch-progress-notify-interval 1s"
if ! tests/peers/etcd-local start "$T/etcd" >"$T/env" 2>"$T/etcd.log"; then
    if ! command -v etcd >/dev/null; then
        echo "sync.sh: SKIPPED the etcd part: etcd is not installed"
        echo "sync.sh: $pass passed, $fails failed"
        [ "$fails" -eq 0 ]
        exit
    fi
    echo "FAIL: etcd-local start: $(tail -5 "$T/etcd.log")"
    exit 1
fi
E=$(sed -n 's/^ETCD_ENDPOINTS=//p' "$T/env")

# put KEY VALUE: one write through the JSON gateway; prints the revision.
put() {
    local k v
    k=$(printf %s "$1" | base64 -w0)
    v=$(printf %s "$2" | base64 -w0)
    curl -fsS "$E/v3/kv/put" -d "{\"key\":\"$k\",\"value\":\"$v\"}" |
        sed -n 's/.*"revision":"\([0-9]*\)".*/\1/p'
}

for i in $(seq 1 30); do put "/reg/pods/p$i" "{\"n\":$i}" >/dev/null; done
R1=$(put /reg/pods/p1 '{"n":"one again"}')
put /other/x 1 >/dev/null
R2=$(put /reg/pods/p2 '{"n":"two again"}')

# --- sync at a revision the source already passed: a list at exactly R ------------
expect 0 wcache sync --etcd "$E" --prefix /reg/ --out "$T/r1.wcsnap" --until-revision "$R1" &&
    has_err "at revision $R1"
expect 0 wcache inspect "$T/r1.wcsnap" -o json
python3 - "$T/out" "$R1" <<'PY' && ok || fail "sync --until-revision: header"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["revision"] == int(sys.argv[2]) and d["objects"] == 30, d
assert d["source_id"].startswith("etcd:") and d["source_id"].count(":") == 3, d
PY
expect 0 wcache get "$T/r1.wcsnap" /reg/pods/p1 -o value && has "one again"
expect 0 wcache get "$T/r1.wcsnap" /reg/pods/p2 -o value && has '"n":2}'
expect 0 wcache check --etcd "$E" --prefix /reg/ "$T/r1.wcsnap" && has "^consistent at revision $R1"

# --- a future revision on an idle prefix: reached through etcd's revision --------
R3=$((R2 + 5))
(for i in 1 2 3 4 5 6; do put "/other/y$i" x >/dev/null; done) &
expect 0 wcache sync --etcd "$E" --prefix /reg/ --out "$T/r3.wcsnap" --until-revision "$R3" \
    --timeout 20 && has_err "at revision $R3"
wait
expect 0 wcache check --etcd "$E" --prefix /reg/ "$T/r3.wcsnap" && has "consistent"
expect 0 wcache get "$T/r3.wcsnap" /reg/pods/p2 -o value && has "two again"
# ...and one that never comes: the timeout, exit 1, no file.
expect 1 wcache sync --etcd "$E" --prefix /reg/ --out "$T/never.wcsnap" \
    --until-revision 999999 --timeout 2 && has_err "not reached"
[ ! -e "$T/never.wcsnap" ] && ok || fail "a timed out sync left a file"

# --- follow until SIGTERM / SIGINT: the latest applied revision --------------------
# wait_for TEXT FILE: poll (bounded) until FILE holds TEXT.
wait_for() {
    local i
    for i in $(seq 1 300); do
        grep -q -- "$1" "$2" 2>/dev/null && return 0
        kill -0 "$P" 2>/dev/null || return 1
        sleep 0.1
    done
    return 1
}
wcache sync --etcd "$E" --prefix /reg/ --out "$T/f.wcsnap" >"$T/out" 2>"$T/ferr" &
P=$!
wait_for "following" "$T/ferr" && ok || fail "sync never said it was following: $(cat "$T/ferr")"
put /reg/pods/late '{"late":true}' >/dev/null
kill -TERM $P
wait $P
rc=$?
[ "$rc" -eq 0 ] && ok || fail "sync after SIGTERM exited $rc: $(cat "$T/ferr")"
grep -q "wrote $T/f.wcsnap" "$T/ferr" && ok || fail "sync did not say what it wrote"
expect 0 wcache check --etcd "$E" --prefix /reg/ "$T/f.wcsnap" && has "consistent"
expect 0 wcache inspect "$T/f.wcsnap" -o json
python3 - "$T/out" "$R2" <<'PY' && ok || fail "followed snapshot is not at a later revision"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["revision"] >= int(sys.argv[2]), d
PY
# SIGINT works the same.
wcache sync --etcd "$E" --prefix /reg/ --out "$T/g.wcsnap" >"$T/out" 2>"$T/ferr" &
P=$!
wait_for "following" "$T/ferr" && ok || fail "sync never said it was following"
kill -INT $P
wait $P && ok || fail "sync after SIGINT: $(cat "$T/ferr")"
[ -s "$T/g.wcsnap" ] && ok || fail "no snapshot after SIGINT"
# A signal before the list is done writes nothing and exits 1 (here the
# source is unreachable, so the list never starts).
wcache sync --etcd http://127.0.0.1:1 --prefix /reg/ --out "$T/h.wcsnap" --timeout 30 \
    >"$T/out" 2>"$T/ferr" &
P=$!
wait_for "syncing" "$T/ferr" && ok || fail "sync never started"
kill -TERM $P
wait $P
rc=$?
[ "$rc" -eq 1 ] && ok || fail "sync interrupted before its list exited $rc"
grep -q "nothing written" "$T/ferr" && ok || fail "no 'nothing written': $(cat "$T/ferr")"
[ ! -e "$T/h.wcsnap" ] && ok || fail "an interrupted sync left a file"

# --- progress bars on a terminal, none on a pipe ---------------------------------
if command -v script >/dev/null; then
    for b in $(seq 0 11); do # 1200 keys, 100 per transaction
        ops=""
        for i in $(seq 0 99); do
            k=$(printf '/bulk/k%05d' $((b * 100 + i)) | base64 -w0)
            ops="$ops${ops:+,}{\"request_put\":{\"key\":\"$k\",\"value\":\"eA==\"}}"
        done
        curl -fsS "$E/v3/kv/txn" -d "{\"success\":[$ops]}" >/dev/null || fail "bulk txn"
    done
    RB=$(put /bulk/zz x)
    script -qec "wcache sync --etcd '$E' --prefix /bulk/ --out '$T/bulk.wcsnap' \
        --until-revision $RB" /dev/null >"$T/tty" 2>&1
    grep -q "listing:" "$T/tty" && grep -q "writing:" "$T/tty" && ok ||
        fail "no progress bars on a terminal: $(head -c 300 "$T/tty")"
    expect 0 wcache sync --etcd "$E" --prefix /bulk/ --out "$T/bulk2.wcsnap" --until-revision "$RB"
    grep -q "listing:\|writing:" "$T/err" && fail "progress on a pipe" || ok
fi

# --- compaction: the revision is gone at the source --------------------------------
RC=$(put /reg/pods/p3 x)
curl -fsS "$E/v3/kv/compaction" -d "{\"revision\":$RC}" >/dev/null
expect 1 wcache sync --etcd "$E" --prefix /reg/ --out "$T/c.wcsnap" --until-revision "$R1" &&
    has_err "compacted"
[ ! -e "$T/c.wcsnap" ] && ok || fail "a refused sync left a file"
expect 2 wcache check --etcd "$E" --prefix /reg/ "$T/r1.wcsnap" && has_err "compacted"

# --- check finds differences: the same keys, other contents ------------------------
expect 0 wcache sync --etcd "$E" --prefix /reg/ --out "$T/now.wcsnap" --until-revision "$RC"
expect 0 wcache check --etcd "$E" --prefix /reg/ "$T/now.wcsnap"
put /reg/pods/p4 changed >/dev/null
put /reg/zz new >/dev/null
# The older snapshot against the newer source state at its own revision is
# still consistent; a snapshot made from a copy with one key altered is not.
expect 0 wcache check --etcd "$E" --prefix /reg/ "$T/now.wcsnap" && has "consistent"
ID=$(wcache inspect "$T/now.wcsnap" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["source_id"])')
REV=$(wcache inspect "$T/now.wcsnap" -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["revision"])')
build_gensnap
"$T/gensnap" "$T/bad.wcsnap" 0 2 "$ID" "$REV" "$T/now.wcsnap" || fail "gensnap from a copy"
expect 1 wcache check --etcd "$E" --prefix /reg/ "$T/bad.wcsnap" && has "^~ /reg/pods/p5$" &&
    has "^- /reg/zz-extra$" && has "^+ /reg/pods/p6$" && has "^differ"
# A snapshot of another prefix is refused, not compared.
expect 0 wcache sync --etcd "$E" --prefix /other/ --out "$T/other.wcsnap" --until-revision "$RC"
expect 2 wcache check --etcd "$E" --prefix /reg/ "$T/other.wcsnap" && has_err "not of this one"

echo "sync.sh: $pass passed, $fails failed"
[ "$fails" -eq 0 ]
