#!/usr/bin/env bash
# store.sh - wcache push, pull and ls for file:// and s3:// URLs, and
# wcache sync --out s3://PREFIX, against the S3 server of tests/peers/s3-local
# (s3rver behind a SigV4-verifying gate) and, for sync, a real etcd from
# tests/peers/etcd-local, both on 127.0.0.1 and stopped whatever happens.
# Expects tools/wcache on PATH (make check-cli puts it there).
set -u
cd "$(dirname "$0")/../.." || exit 1
T=$(mktemp -d "${TMPDIR:-/tmp}/wcache-store.XXXXXX")
cleanup() {
    [ -f "$T/s3/pids" ] && tests/peers/s3-local stop "$T/s3" >/dev/null 2>&1
    [ -f "$T/etcd/pids" ] && tests/peers/etcd-local stop "$T/etcd" >/dev/null 2>&1
    rm -rf "$T"
}
trap cleanup EXIT
. tests/cli/common.inc

command -v wcache >/dev/null || { echo "FAIL: wcache is not on PATH"; exit 1; }
build_gensnap
"$T/gensnap" "$T/a.wcsnap" 500 || { echo "FAIL: gensnap"; exit 1; }

# --- usage and file:// (no server) -------------------------------------------
expect 1 wcache push "$T/a.wcsnap" && has_err "usage"
expect 1 wcache pull s3://b/k "$T/x" --part-size 1M && has_err "part-size"
expect 1 wcache ls ftp://x/y && has_err "not supported"
expect 1 wcache ls gs://b/x
expect 0 wcache push "$T/a.wcsnap" "file://$T/store/one.wcsnap"
expect 0 wcache ls "file://$T/store" && has "one.wcsnap"
expect 0 wcache pull "file://$T/store/one.wcsnap" "$T/b.wcsnap" && cmp -s "$T/a.wcsnap" "$T/b.wcsnap" && ok
expect 3 wcache pull "file://$T/store/none.wcsnap" "$T/c.wcsnap"
printf 'not a snapshot' >"$T/store/bad.wcsnap"
expect 2 wcache pull "file://$T/store/bad.wcsnap" "$T/c.wcsnap"
if [ -e "$T/c.wcsnap" ]; then fail "a damaged pull left a file"; else ok; fi

# --- s3:// ---------------------------------------------------------------------
if ! tests/peers/s3-local start "$T/s3" --bucket snaps >"$T/s3env" 2>"$T/s3.log"; then
    echo "FAIL: s3-local start (needs node and npm): $(tail -5 "$T/s3.log")"
    exit 1
fi
S3=$(sed -n 's/^S3_ENDPOINT=//p' "$T/s3env")
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER AWS_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
unset AWS_PROFILE AWS_SESSION_TOKEN
expect 0 wcache push "$T/a.wcsnap" "s3://snaps/p/a b.wcsnap" --endpoint "$S3" &&
    has_err "pushed"
# Not a terminal: no progress bar (no carriage return) on stderr.
if grep -q $'\r' "$T/err"; then fail "progress drawn on a non-terminal"; else ok; fi
expect 0 wcache ls s3://snaps/p --endpoint "$S3" && has "a b.wcsnap"
expect 0 wcache pull "s3://snaps/p/a b.wcsnap" "$T/d.wcsnap" --endpoint "$S3" &&
    cmp -s "$T/a.wcsnap" "$T/d.wcsnap" && ok
expect 3 wcache pull s3://snaps/p/none "$T/e.wcsnap" --endpoint "$S3"
expect 1 wcache ls s3://nobucket --endpoint "$S3" && has_err "NoSuchBucket"
AWS_SECRET_ACCESS_KEY=cli-secret-4d1f expect 1 wcache ls s3://snaps --endpoint "$S3" &&
    has_err "SignatureDoesNotMatch"
if grep -q cli-secret-4d1f "$T/err" "$T/out"; then fail "the secret was printed"; else ok; fi
# The endpoint from the environment, as awscli takes it.
AWS_ENDPOINT_URL=$S3 expect 0 wcache ls s3://snaps/p && has "a b.wcsnap"

# --- sync --out s3://PREFIX ----------------------------------------------------
if ! tests/peers/etcd-local start "$T/etcd" >"$T/etcdenv" 2>"$T/etcd.log"; then
    if ! command -v etcd >/dev/null; then
        echo "store.sh: SKIPPED sync --out: etcd is not installed"
        echo "store.sh: $pass passed, $fails failed"
        [ "$fails" -eq 0 ]
        exit
    fi
    echo "FAIL: etcd-local start: $(tail -5 "$T/etcd.log")"
    exit 1
fi
E=$(sed -n 's/^ETCD_ENDPOINTS=//p' "$T/etcdenv")
R=0
for i in $(seq 1 20); do
    k=$(printf %s "/reg/p$i" | base64 -w0)
    R=$(curl -fsS "$E/v3/kv/put" -d "{\"key\":\"$k\",\"value\":\"eyJuIjoxfQ==\"}" |
        sed -n 's/.*"revision":"\([0-9]*\)".*/\1/p')
done
expect 0 wcache sync --etcd "$E" --prefix /reg/ --out s3://snaps/synced --endpoint "$S3" \
    --until-revision "$R" && has_err "uploaded s3://snaps/synced/"
key=$(sed -n 's|.*uploaded s3://snaps/synced/||p' "$T/err")
case $key in */$(printf '%020d' "$R").wcsnap) ok ;; *) fail "layout key '$key'" ;; esac
expect 0 wcache ls s3://snaps/synced --endpoint "$S3" && has "$(printf '%020d' "$R").wcsnap"
expect 0 wcache pull "s3://snaps/synced/$key" "$T/s.wcsnap" --endpoint "$S3"
expect 0 wcache inspect "$T/s.wcsnap" -o json && has "\"revision\": *$R\|\"revision\":$R"
expect 0 wcache check --etcd "$E" --prefix /reg/ "$T/s.wcsnap" && has consistent

echo "store.sh: $pass passed, $fails failed"
[ "$fails" -eq 0 ]
