#!/usr/bin/env bash
# install.sh - `make install` produces a usable installation.
#
# Installs into a temporary DESTDIR, then builds a small program the way a
# user would, with `pkg-config --cflags --libs watchcache` (PKG_CONFIG_PATH
# and PKG_CONFIG_SYSROOT_DIR pointing into the DESTDIR), runs it against the
# installed shared library, links it statically through `pkg-config
# --static` as well, and finally checks that `make uninstall` removes every
# file it installed.
. "$(dirname "$0")/common.inc"
make_tmpdir

PREFIX=/usr/local
D=$TMPD/root
MAKE=${MAKE:-make}
# The build is done by now; a jobserver inherited from make check is not.
unset MAKEFLAGS MFLAGS
if ! $MAKE --no-print-directory install DESTDIR="$D" PREFIX="$PREFIX" >"$TMPD/install.log" 2>&1; then
    cat "$TMPD/install.log"
    echo "FAIL: make install failed"
    exit 1
fi

LIBDIR=$D$PREFIX/lib
for f in include/watchcache.h lib/libwatchcache.a lib/libwatchcache.so lib/pkgconfig/watchcache.pc; do
    [ -e "$D$PREFIX/$f" ] || problem "not installed: $PREFIX/$f"
done
real=$(ls "$LIBDIR"/libwatchcache.so.*.*.* 2>/dev/null | head -n 1)
[ -n "$real" ] || problem "no libwatchcache.so.MAJOR.MINOR.PATCH installed"
soname=$(readelf -d "$LIBDIR/libwatchcache.so" 2>/dev/null | sed -n 's/.*(SONAME).*\[\(.*\)\].*/\1/p')
[ -n "$soname" ] && [ -L "$LIBDIR/$soname" ] || problem "the soname link $soname is not installed"
if ls tools/*.c >/dev/null 2>&1; then
    [ -x "$D$PREFIX/bin/wcache" ] || problem "tools/wcache not installed in $PREFIX/bin"
fi
for p in man/man*/*.[0-9]; do
    [ -e "$p" ] || continue
    [ -f "$D$PREFIX/share/man/${p#man/}" ] || problem "man page $p not installed"
done

cat >"$TMPD/prog.c" <<'PROG'
#include <stdio.h>
#include <string.h>
#include <watchcache.h>

int main(void)
{
    if (wcache_version_number() != WCACHE_VERSION_NUMBER) {
        printf("runtime version %u, header %d\n", wcache_version_number(),
               WCACHE_VERSION_NUMBER);
        return 1;
    }
    const char *s = wcache_strerror(WCACHE_ENOMEM);
    if (s == NULL || strcmp(s, wcache_strerror(WCACHE_OK)) == 0) {
        printf("wcache_strerror does not name WCACHE_ENOMEM\n");
        return 1;
    }
    wcache_cache *c = NULL;
    if (wcache_cache_create(&c, NULL) != WCACHE_OK || wcache_cache_open(c) != WCACHE_OK) {
        printf("cannot create and open a cache\n");
        return 1;
    }
    wcache_cache_close(c);
    printf("ok %s\n", wcache_version_string());
    return 0;
}
PROG

export PKG_CONFIG_PATH=$LIBDIR/pkgconfig PKG_CONFIG_SYSROOT_DIR=$D
unset PKG_CONFIG_LIBDIR
if ! pkg-config --exists watchcache; then
    problem "pkg-config does not find watchcache in $PKG_CONFIG_PATH"
    finish
fi
ver=$(pkg-config --modversion watchcache)
hver=$(sed -n 's/^#define WCACHE_VERSION_STRING "\(.*\)"/\1/p' "$HDR")
[ "$ver" = "$hver" ] || problem "watchcache.pc says version $ver, the header $hver"

cflags=$(pkg-config --cflags watchcache)
libs=$(pkg-config --libs watchcache)
# shellcheck disable=SC2086
if cc -std=c11 -Wall -Wextra -Werror $cflags -o "$TMPD/prog" "$TMPD/prog.c" $libs 2>"$TMPD/cc.log"; then
    out=$(LD_LIBRARY_PATH=$LIBDIR "$TMPD/prog" 2>&1) || problem "dynamically linked program failed: $out"
    # Into a file first: grep -q closing the pipe early would fail pipefail.
    LD_LIBRARY_PATH=$LIBDIR ldd "$TMPD/prog" >"$TMPD/ldd" 2>&1 || true
    grep -q "$LIBDIR/libwatchcache.so" "$TMPD/ldd" ||
        problem "the program did not load the installed library: $(cat "$TMPD/ldd")"
else
    problem "cannot build against the installed library with: cc $cflags ... $libs"
    cat "$TMPD/cc.log"
fi

# Static: the archive by path, then the packages named in Requires.private
# (their shared libraries: Debian ships no static libcurl dependencies) and
# Libs.private.  An incomplete Requires.private shows up as an undefined
# reference here.
priv=$(pkg-config --print-requires-private watchcache | awk '{ print $1 }' | tr '\n' ' ')
slibs="$(pkg-config --libs $priv) -lpthread -lm"
# shellcheck disable=SC2086
if cc -std=c11 $cflags -o "$TMPD/prog-static" "$TMPD/prog.c" "$LIBDIR/libwatchcache.a" $slibs \
    2>"$TMPD/cc.log"; then
    out=$("$TMPD/prog-static" 2>&1) || problem "statically linked program failed: $out"
else
    problem "cannot link libwatchcache.a with Requires.private ($priv): $slibs"
    cat "$TMPD/cc.log"
fi

if $MAKE --no-print-directory uninstall DESTDIR="$D" PREFIX="$PREFIX" >"$TMPD/uninstall.log" 2>&1; then
    left=$(find "$D" -not -type d | sed "s|^$D||")
    [ -z "$left" ] || problem "make uninstall left files behind: $left"
else
    cat "$TMPD/uninstall.log"
    problem "make uninstall failed"
fi

finish
