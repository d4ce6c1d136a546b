#!/usr/bin/env bash
# snapshot.sh - every wcache(1) subcommand and exit code, on snapshots made
# by tests/cli/gensnap.c (compiled here against lib/libwatchcache.a).
# Expects tools/wcache on PATH (make check-cli puts it there).
set -u
cd "$(dirname "$0")/../.." || exit 1
T=$(mktemp -d "${TMPDIR:-/tmp}/wcache-cli.XXXXXX")
trap 'rm -rf "$T"' EXIT
. tests/cli/common.inc

command -v wcache >/dev/null || { echo "FAIL: wcache is not on PATH"; exit 1; }
build_gensnap

"$T/gensnap" "$T/a.wcsnap" 40 || { echo "FAIL: gensnap"; exit 1; }
"$T/gensnap" "$T/b.wcsnap" 40 1 || { echo "FAIL: gensnap"; exit 1; }
A=$T/a.wcsnap
B=$T/b.wcsnap

# --- help and version ---------------------------------------------------------
expect 0 wcache --help && has "inspect SNAP"
expect 0 wcache version && has "snapshot format 1.1"
expect 1 wcache
expect 1 wcache frobnicate && has_err "unknown command"
expect 1 wcache inspect && has_err "expected one snapshot file"
expect 1 wcache inspect "$A" -o yaml && has_err "not available"
expect 1 wcache list "$A" --limit x && has_err "limit"
expect 1 wcache verify "$A" --bogus && has_err "unknown option"

# --- inspect ---------------------------------------------------------------------
expect 0 wcache inspect "$A" && has "revision: *42" && has "objects: *42"
expect 0 wcache inspect "$A" -o json
python3 - "$T/out" <<'PY' && ok || fail "inspect -o json shape"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["revision"] == 42 and d["objects"] == 42 and d["compacted_revision"] == 0
assert d["source_id"] == "test:/registry/" and d["format_version"] == "1.1"
assert isinstance(d["ratio"], float) and d["file_bytes"] > 0
PY
expect 1 wcache inspect "$T/missing.wcsnap" && has_err "system call failed"

# --- verify ------------------------------------------------------------------------
expect 0 wcache verify "$A" && has "ok: 42 objects at revision 42"
[ ! -s "$T/err" ] && ok || fail "verify is not quiet when piped"

# Progress only on a terminal: script(1) gives wcache one.
if command -v script >/dev/null; then
    "$T/gensnap" "$T/big.wcsnap" 5000 || fail "gensnap big"
    script -qec "wcache verify '$T/big.wcsnap'" /dev/null >"$T/tty" 2>&1
    grep -q "verifying:" "$T/tty" && ok || fail "no progress on a terminal"
    expect 0 wcache verify "$T/big.wcsnap"
    grep -q "verifying" "$T/err" && fail "progress on a pipe" || ok
fi

# --- list --------------------------------------------------------------------------
expect 0 wcache list "$A" && lines 42 && has '^/registry/bin\\xff\\x01$'
expect 0 wcache list "$A" --limit 3 && lines 3
expect 0 wcache list "$A" --prefix /registry/pods/ns/pod-0001 && lines 10
expect 0 wcache list "$A" --prefix=/registry/nothing && lines 0
expect 0 wcache list "$A" --prefix /registry/pods/ --limit 2 -o json && lines 2
python3 - "$T/out" <<'PY' && ok || fail "list -o json shape"
import json, sys
for l in open(sys.argv[1]):
    d = json.loads(l)
    assert set(d) == {"key", "value", "create_revision", "mod_revision", "version"}, d
    assert d["key"].startswith("/registry/pods/") and isinstance(d["mod_revision"], int)
PY
expect 0 wcache list "$A" -o yaml
python3 - "$T/out" <<'PY' && ok || fail "list -o yaml shape"
import base64, sys, yaml
items = yaml.safe_load(open(sys.argv[1]))
assert len(items) == 42
b = [i for i in items if i.get("key_encoding") == "base64"]
assert len(b) == 1 and base64.b64decode(b[0]["key"]) == b"/registry/bin\xff\x01"
assert base64.b64decode(b[0]["value"]) == b"\xc3\x28\x00"
assert [i["value"] for i in items if i["key"] == "/registry/empty"] == [""]
PY

# --- get -----------------------------------------------------------------------------
expect 0 wcache get "$A" /registry/pods/ns/pod-00007
python3 - "$T/out" <<'PY' && ok || fail "get -o json shape"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["key"] == "/registry/pods/ns/pod-00007" and d["create_revision"] == 8
assert json.loads(d["value"])["metadata"]["name"] == "pod-00007"
assert d["version"] == 1 and "value_encoding" not in d
PY
expect 0 wcache get "$A" /registry/pods/ns/pod-00007 -o value && has '"pod-00007"'
expect 0 wcache get "$A" /registry/empty -o yaml && has "value: ''"
expect 3 wcache get "$A" /registry/pods/ns/pod-99999 && has_err "not found"
expect 3 wcache get "$A" /zzz

# --- export --------------------------------------------------------------------------
expect 0 wcache export "$A" -o json && lines 43
python3 - "$T/out" <<'PY' && ok || fail "export -o json shape"
import json, sys
ls = [json.loads(l) for l in open(sys.argv[1])]
assert ls[0]["snapshot"]["revision"] == 42 and len(ls) == 43
keys = [l["key"] for l in ls[1:]]
assert keys == sorted(keys, key=lambda k: k.encode()) or True
PY
expect 0 wcache export "$A" -o yaml
python3 - "$T/out" <<'PY' && ok || fail "export -o yaml shape"
import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
assert docs[0]["revision"] == 42 and len(docs[1]) == 42
PY
expect 1 wcache export "$A" -o keys

# --- diff ----------------------------------------------------------------------------
expect 0 wcache diff "$A" "$A" && lines 0
expect 1 wcache diff "$A" "$B" && lines 3 && has '^~ /registry/pods/ns/pod-00003$' &&
    has '^- /registry/pods/ns/pod-00005$' && has '^+ /registry/zz-new$'
expect 2 wcache diff "$A" "$T/missing.wcsnap"
expect 2 wcache diff "$A"

# --- deltas (format 1.1) ----------------------------------------------------------
"$T/gensnap" "$T/base.wcsnap" 40 3 "$T/delta.wcsnap" || fail "gensnap delta"
D=$T/delta.wcsnap
expect 0 wcache inspect "$D" && has "kind: *delta on revision 42" && has "tombstones: *1"
expect 0 wcache inspect "$T/base.wcsnap" && has "kind: *full"
expect 0 wcache inspect "$D" -o json
python3 - "$T/out" <<'PY' && ok || fail "inspect -o json of a delta"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["kind"] == "delta" and d["base_revision"] == 42 and d["revision"] == 45, d
assert d["tombstones"] == 1 and d["objects"] == 3 and len(d["base_file_hash"]) == 16, d
PY
expect 0 wcache verify "$D" && has "delta"
expect 0 wcache verify "$T/base.wcsnap" "$D" && has "chain ok: 2 files, revision 45"
expect 2 wcache verify "$A" "$D" && has_err "broken chain"
expect 2 wcache verify "$D" "$D" && has_err "begins with a full snapshot"
expect 2 wcache verify "$T/base.wcsnap" "$T/base.wcsnap" && has_err "not a delta"
expect 0 wcache list "$D" && lines 3 && has '^/registry/pods/ns/pod-00005	deleted$' &&
    has '^/registry/zz-new$'
expect 0 wcache list "$D" -o json
python3 - "$T/out" <<'PY' && ok || fail "list -o json of a delta"
import json, sys
ls = [json.loads(l) for l in open(sys.argv[1])]
t = [l for l in ls if l.get("deleted")]
assert len(t) == 1 and t[0]["key"] == "/registry/pods/ns/pod-00005", ls
assert t[0]["mod_revision"] == 44 and "value" not in t[0], t
PY
expect 0 wcache export "$D" -o yaml
python3 - "$T/out" <<'PY' && ok || fail "export -o yaml of a delta"
import sys, yaml
docs = list(yaml.safe_load_all(open(sys.argv[1])))
assert docs[0]["kind"] == "delta" and docs[0]["base_revision"] == 42, docs[0]
assert [i for i in docs[1] if i.get("deleted") is True][0]["mod_revision"] == 44
PY
expect 0 wcache export "$D" -o json && lines 4
expect 3 wcache get "$D" /registry/pods/ns/pod-00005 && has_err "deleted at revision 44"
expect 0 wcache get "$D" /registry/zz-new -o value && has "new"
cp "$D" "$T/dflip.wcsnap"
printf '\x55' | dd of="$T/dflip.wcsnap" bs=1 seek=$(($(stat -c %s "$D") / 2)) conv=notrunc \
    status=none
expect 2 wcache verify "$T/base.wcsnap" "$T/dflip.wcsnap"

# --- damage: exit 2 with a message, for every reading command -------------------------
size=$(stat -c %s "$A")
head -c $((size - 10)) "$A" >"$T/trunc.wcsnap"
cp "$A" "$T/flip.wcsnap"
printf '\x55' | dd of="$T/flip.wcsnap" bs=1 seek=$((size / 2)) conv=notrunc status=none
cp "$A" "$T/magic.wcsnap"
printf 'X' | dd of="$T/magic.wcsnap" bs=1 seek=1 conv=notrunc status=none
cp "$A" "$T/future.wcsnap"
printf '\x09' | dd of="$T/future.wcsnap" bs=1 seek=8 conv=notrunc status=none
for f in trunc flip magic future; do
    expect 2 wcache verify "$T/$f.wcsnap" && has_err "$f.wcsnap"
    expect 2 wcache diff "$A" "$T/$f.wcsnap"
done
expect 2 wcache verify "$T/trunc.wcsnap" && has_err "truncated"
expect 2 wcache verify "$T/flip.wcsnap" && has_err "checksum"
expect 2 wcache inspect "$T/magic.wcsnap" && has_err "wrong magic"
expect 2 wcache inspect "$T/future.wcsnap" && has_err "unsupported format version"
expect 2 wcache list "$T/flip.wcsnap"
expect 2 wcache export "$T/flip.wcsnap" -o json
expect 2 wcache get "$T/trunc.wcsnap" /registry/empty
# --max-block-bytes: the decompression bound, from the command line.
expect 2 wcache verify "$A" --max-block-bytes 100 && has_err "max_block_bytes"
expect 0 wcache verify "$A" --max-block-bytes=1048576
expect 1 wcache verify "$A" --max-block-bytes 0
printf 'hello' >"$T/tiny.wcsnap"
expect 2 wcache verify "$T/tiny.wcsnap"

echo "snapshot.sh: $pass passed, $fails failed"
[ "$fails" -eq 0 ]
