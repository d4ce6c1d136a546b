#!/usr/bin/env bash
# test-config.sh - watchcache.conf(5): a bad file is an error naming the
# file, the line and the field; flags override the file; configured
# resources and indexes are what the proxy serves; with no source the
# built-in synthetic stream is served.
. "$(dirname "$0")/lib.sh"

bad() { # bad DESC EXPECTED-STDERR-TEXT YAML
    printf '%s\n' "$3" >"$T/bad.yaml"
    if "$PROXY" --config "$T/bad.yaml" --listen 127.0.0.1:0 >"$T/o" 2>"$T/e"; then rc=0; else rc=$?; fi
    if [ "$rc" = 2 ] && grep -qF "$2" "$T/e"; then ok "$1"; else nok "$1: rc $rc, stderr: $(cat "$T/e")"; fi
}
bad "YAML syntax error: file and line" "$T/bad.yaml:2:" $'listen: [1\nthreads: 2'
bad "unknown top-level field" "$T/bad.yaml:2: bogus: unknown field" $'listen: 127.0.0.1:0\nbogus: 1'
bad "unknown nested field" "$T/bad.yaml:3: limits.nope: unknown field" $'limits:\n  threads: 2\n  nope: 1'
bad "integer out of range" "$T/bad.yaml:2: limits.threads: 0 is out of range 1..256" $'limits:\n  threads: 0'
bad "not an integer" "$T/bad.yaml:2: snapshots.interval: expected an integer" $'snapshots:\n  interval: soon'
bad "resource without kind" "$T/bad.yaml:2: resources[0].kind: required" $'resources:\n  - name: widgets'
bad "resource list not a list" "$T/bad.yaml:1: resources: expected a list" $'resources: pods'
bad "a bad boolean" "$T/bad.yaml:3: resources[0].namespaced: expected true or false" $'resources:\n  - name: nodes\n    namespaced: maybe\n    kind: Node'
bad "a user without a name" "$T/bad.yaml:3: auth.users[0].name: required" $'auth:\n  users:\n    - namespaces: [a]'
if "$PROXY" --config "$T/none.yaml" >"$T/o" 2>"$T/e"; then rc=0; else rc=$?; fi
check "a missing file is named" grep -q "$T/none.yaml: No such file" "$T/e"
printf 'tok\n' >"$T/tokens"
if "$PROXY" --token-file "$T/tokens" >"$T/o" 2>"$T/e"; then rc=0; else rc=$?; fi
check "a bad token file names its line" grep -q "$T/tokens:1: expected TOKEN,USER" "$T/e"

# configured resources, flags over the file, the synthetic default
cat >"$T/conf.yaml" <<YAML
listen: 127.0.0.1:1
resources:
  - name: pods
    kind: Pod
    shortNames: [po]
    indexes: [spec.nodeName, status.phase]
YAML
start_proxy --config "$T/conf.yaml" --seed 7
wait_ready
check "--listen overrides listen" test "${P##*:}" != 1
eq "only the configured resources are discovered" "$(curl -s "http://$P/api/v1" | python3 -c 'import json,sys; print([r["name"] for r in json.load(sys.stdin)["resources"]])')" "['pods']"
n=$(curl -s "http://$P/api/v1/pods" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["items"]))')
check "the synthetic stream is served ($n pods)" test "$n" -gt 100
r=$(curl -s "http://$P/api/v1/pods?fieldSelector=status.phase%3DRunning" | python3 -c 'import json,sys; d=json.load(sys.stdin)["items"]; print(len(d), all(i["status"]["phase"]=="Running" for i in d))')
check "a configured index serves a field selector ($r)" test "${r#* }" = True
eq "an unconfigured resource: 404" "$(code "http://$P/api/v1/configmaps")" 404
finish
