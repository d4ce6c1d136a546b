#!/usr/bin/env bash
# bootstrap-deps.sh - install the Debian packages watchcache needs.
#
#   tools/bootstrap-deps.sh build   libraries and headers to build (make all)
#   tools/bootstrap-deps.sh check   also the tools `make check` runs
#                                   (clang + sanitizer runtimes, valgrind, ...)
#   tools/bootstrap-deps.sh ci      also the test peers (etcd, zstd, gnuplot)
#   tools/bootstrap-deps.sh bench   what make bench needs beyond the build (wrk,
#                                   etcd, gnuplot, Go and google/btree for the peer)
#   tools/bootstrap-deps.sh go | rust   the toolchain of examples/go or
#                                   examples/rust, only when its command is
#                                   missing (a rustup or upstream Go install
#                                   counts); `check` does the same for both
#   tools/bootstrap-deps.sh --list PROFILE   print the packages, install nothing
#
# Only packages that are missing are installed, with apt-get, as root or
# through sudo.  Without either, the script prints the command to run and
# exits 1.  Targets Debian 12 (bookworm); on other systems it says which
# packages to look for.
set -euo pipefail

BUILD_PKGS=(build-essential pkg-config libzstd-dev libcurl4-openssl-dev libmicrohttpd-dev
    libjansson-dev libyaml-dev libxxhash-dev libexpat1-dev libssl-dev check)
CHECK_PKGS=(clang libclang-rt-14-dev llvm valgrind binutils clang-format groff-base python3
    python3-yaml mandoc)
# Toolchains wanted by command rather than by package: "command:package".
GO_CMDS=(go:golang-go)
RUST_CMDS=(cargo:cargo rustc:rustc cargo-clippy:rust-clippy)
# The S3 tests: tests/peers/s3-local runs s3rver (from npm) on node, and
# awscli cross-checks what the library writes and reads.  A newer node or
# aws already on PATH is kept.
S3_CMDS=(node:nodejs npm:npm aws:awscli)
# The proxy tests drive kubectl; Debian 12's kubernetes-client (1.20) passes
# tests/proxy/test-kubectl.sh as the image's newer one does.
KUBE_CMDS=(kubectl:kubernetes-client)
# make bench: wrk drives the proxy's GET/LIST rates (bench/proxy.sh).
BENCH_PKGS=(wrk etcd-server etcd-client curl python3 gnuplot-nox golang-go golang-github-google-btree-dev)
CI_PKGS=(zstd etcd-server etcd-client openssl gnuplot-nox curl ca-certificates git golang-go)

# The packages of the toolchains whose command is missing.
by_command() {
    local cp
    for cp in "$@"; do
        command -v "${cp%%:*}" >/dev/null 2>&1 || printf '%s\n' "${cp#*:}"
    done
}

packages() {
    case $1 in
    build) printf '%s\n' "${BUILD_PKGS[@]}" ;;
    check)
        printf '%s\n' "${BUILD_PKGS[@]}" "${CHECK_PKGS[@]}"
        by_command "${GO_CMDS[@]}" "${RUST_CMDS[@]}" "${S3_CMDS[@]}" "${KUBE_CMDS[@]}"
        ;;
    go) by_command "${GO_CMDS[@]}" ;;
    rust) by_command "${RUST_CMDS[@]}" ;;
    ci)
        printf '%s\n' "${BUILD_PKGS[@]}" "${CHECK_PKGS[@]}" "${CI_PKGS[@]}"
        by_command "${S3_CMDS[@]}" "${KUBE_CMDS[@]}"
        ;;
    bench) printf '%s\n' "${BUILD_PKGS[@]}" "${BENCH_PKGS[@]}" ;;
    *)
        echo "bootstrap-deps.sh: unknown profile '$1' (build, check, ci, bench, go, rust)" >&2
        exit 2
        ;;
    esac
}

installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

main() {
    local list_only=0
    if [ "${1:-}" = --list ]; then
        list_only=1
        shift
    fi
    local profile=${1:-build}
    if [ "$list_only" = 1 ]; then
        packages "$profile"
        return 0
    fi
    if ! command -v dpkg-query >/dev/null || ! command -v apt-get >/dev/null; then
        echo "bootstrap-deps.sh: not a Debian system; install the equivalents of:" >&2
        packages "$profile" | tr '\n' ' ' >&2
        echo >&2
        return 1
    fi
    local missing=()
    local p
    for p in $(packages "$profile"); do
        installed "$p" || missing+=("$p")
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "bootstrap-deps.sh: all $profile dependencies are installed"
        return 0
    fi
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
            sudo=(sudo)
        elif command -v sudo >/dev/null && [ -t 0 ]; then
            sudo=(sudo) # sudo will ask for the password on the terminal
        else
            echo "bootstrap-deps.sh: need root to install packages; run as root:" >&2
            echo "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
            return 1
        fi
    fi
    echo "bootstrap-deps.sh: installing: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -q
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"
}

main "$@"
