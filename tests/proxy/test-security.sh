#!/usr/bin/env bash
# test-security.sh - the rules for listening off loopback (tested on
# loopback through the WCACHE_PROXY_ASSUME_REMOTE seam), bearer tokens,
# TLS client certificates, per-identity allow-lists, watches per client.
. "$(dirname "$0")/lib.sh"

start_etcd
for ns in team-a team-b; do
    eput "/registry/namespaces/$ns" "$(ns_json $ns)"
    eput "/registry/pods/$ns/p1" "$(pod_json $ns p1 n1 Running '')"
    eput "/registry/configmaps/$ns/c1" "$(cm_json $ns c1)"
done

# off loopback: refused without TLS and authentication
if WCACHE_PROXY_ASSUME_REMOTE=1 "$PROXY" --listen 127.0.0.1:0 --etcd "$E" >"$T/o" 2>"$T/e"; then rc=0; else rc=$?; fi
eq "not loopback, no TLS/auth: refused (exit 2)" "$rc" 2
check "... saying why" grep -q 'refusing to listen on 127.0.0.1:0 (not loopback) without TLS and authentication' "$T/e"
WCACHE_PROXY_ASSUME_REMOTE=1 start_proxy --etcd "$E" --insecure-allow-remote
wait_ready
check "--insecure-allow-remote: serves, with a warning" grep -q 'WARNING: serving plain HTTP' "$T/proxy.err"
stop_proxy

# tokens and allow-lists
printf 'tok-alice,alice\ntok-bob,bob,1001\ntok-mallory,mallory\n' >"$T/tokens"
cat >"$T/conf.yaml" <<YAML
sources:
  etcd: $E
auth:
  tokenFile: $T/tokens
  users:
    - name: alice
      resources: [pods]
      namespaces: [team-a]
    - name: bob
limits:
  maxWatchesPerClient: 2
YAML
start_proxy --config "$T/conf.yaml"
wait_ready
U=http://$P/api/v1
A=(-H "Authorization: Bearer tok-alice")
B=(-H "Authorization: Bearer tok-bob")
eq "no credentials: 401" "$(code $U/namespaces/team-a/pods)" 401
eq "a wrong token: 401" "$(code -H 'Authorization: Bearer nope' $U/namespaces/team-a/pods)" 401
eq "/healthz needs none" "$(code http://$P/healthz)" 200
eq "alice: pods in team-a" "$(code "${A[@]}" $U/namespaces/team-a/pods)" 200
eq "alice: one pod in team-a" "$(code "${A[@]}" $U/namespaces/team-a/pods/p1)" 200
eq "alice: not team-b (403 Forbidden)" "$(code "${A[@]}" $U/namespaces/team-b/pods)" 403
eq "alice: not every namespace" "$(code "${A[@]}" $U/pods)" 403
eq "alice: not configmaps" "$(code "${A[@]}" $U/namespaces/team-a/configmaps)" 403
eq "alice: not a watch of team-b" "$(code "${A[@]}" "$U/namespaces/team-b/pods?watch=1")" 403
eq "bob: everything" "$(code "${B[@]}" $U/configmaps)" 200
eq "mallory (no allow-list entry): 403" "$(code -H 'Authorization: Bearer tok-mallory' $U/namespaces/team-a/pods)" 403
# watches per client
curl -sN -m 10 "${B[@]}" "$U/pods?watch=1&timeoutSeconds=5" >/dev/null &
curl -sN -m 10 "${B[@]}" "$U/pods?watch=1&timeoutSeconds=5" >/dev/null &
wait_for "two watches" sh -c "curl -s -H 'Authorization: Bearer tok-bob' http://$P/metrics | grep -q '^wcache_proxy_watchers 2'"
eq "a third watch of the same client: 429" "$(code -D "$T/h" "${B[@]}" "$U/pods?watch=1&timeoutSeconds=1")" 429
eq "another client may still watch" "$(code -m 3 "${A[@]}" "$U/namespaces/team-a/pods?watch=1&timeoutSeconds=1")" 200
stop_proxy

# TLS with client certificates; the certificate's CN is the identity
if command -v openssl >/dev/null; then
    cd "$T"
    ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
    openssl req -x509 "${ec[@]}" -keyout ca-key.pem -out ca.pem -days 1 -subj /CN=test-ca 2>/dev/null
    openssl req "${ec[@]}" -keyout srv-key.pem -out srv.csr -subj /CN=127.0.0.1 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\n' >srv.ext
    openssl x509 -req -in srv.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out srv.pem -days 1 -extfile srv.ext 2>/dev/null
    openssl req "${ec[@]}" -keyout cli-key.pem -out cli.csr -subj /CN=alice 2>/dev/null
    printf 'extendedKeyUsage=clientAuth\n' >cli.ext
    openssl x509 -req -in cli.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -out cli.pem -days 1 -extfile cli.ext 2>/dev/null
    cd - >/dev/null
    cat >"$T/conf2.yaml" <<YAML
sources:
  etcd: $E
tls:
  cert: $T/srv.pem
  key: $T/srv-key.pem
  clientCA: $T/ca.pem
auth:
  tokenFile: $T/tokens
  users:
    - name: alice
      namespaces: [team-a]
YAML
    lines=$(wc -l <"$T/proxy.err")
    WCACHE_PROXY_ASSUME_REMOTE=1 start_proxy --config "$T/conf2.yaml"
    wait_for "https readyz" curl -sf --cacert "$T/ca.pem" "https://$P/readyz"
    S=https://$P/api/v1
    C=(--cacert "$T/ca.pem" --cert "$T/cli.pem" --key "$T/cli-key.pem")
    check "off loopback with TLS + client CA: no warning needed" sh -c "! tail -n +$((lines + 1)) $T/proxy.err | grep -q WARNING"
    eq "https, no client certificate: 401" "$(code --cacert "$T/ca.pem" $S/namespaces/team-a/pods)" 401
    eq "https, alice's certificate: 200" "$(code "${C[@]}" $S/namespaces/team-a/pods)" 200
    eq "https, alice's certificate: team-b 403" "$(code "${C[@]}" $S/namespaces/team-b/pods)" 403
    # kubectl sends credentials only over https: a kubeconfig with the CA,
    # then a token (alice) and a client certificate (CN=alice)
    kubeconf
    sed -i "s|server: http://|certificate-authority: $T/ca.pem\n    server: https://|; s|  user: {}|  user:\n    token: tok-alice|" "$T/kubeconfig"
    eq "kubectl, token over https: get pods -n team-a" "$(kc get pods -n team-a -o name 2>&1)" "pod/p1"
    kc get pods -n team-b >"$T/k" 2>&1 || true
    check "kubectl, token: team-b is Forbidden" grep -q 'Error from server (Forbidden)' "$T/k"
    kubeconf
    sed -i "s|server: http://|certificate-authority: $T/ca.pem\n    server: https://|; s|  user: {}|  user:\n    client-certificate: $T/cli.pem\n    client-key: $T/cli-key.pem|" "$T/kubeconfig"
    eq "kubectl, client certificate: get pods -n team-a" "$(kc get pods -n team-a -o name 2>&1)" "pod/p1"
    eq "plain http to the TLS port fails" "$(curl -s -o /dev/null -w '%{http_code}' http://$P/healthz || true)" 000
else
    nok "openssl missing: TLS not tested"
fi
finish
