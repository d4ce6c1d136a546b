#!/usr/bin/env bash
# test-asan.sh - the HTTP cases of test-http.sh and the TLS/auth cases of
# test-security.sh again, against wcache-proxy built with ASan + UBSan
# (VARIANT=asan): every request path, error path and the shutdown run
# under the sanitizers, and LeakSanitizer checks the exit.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
make -C "$root" --no-print-directory -s VARIANT=asan proxy >/dev/null
export WCACHE_PROXY=$root/build/asan/examples/proxy/wcache-proxy
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
rc=0
"$(dirname "$0")/test-http.sh" || rc=1
"$(dirname "$0")/test-security.sh" || rc=1
exit $rc
