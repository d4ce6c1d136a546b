/*
 * fuzz_etcd_stream.c - libFuzzer target for the etcd watch stream parser
 * and applier (lib/etcd_stream.c).
 *
 * The first byte of the input chooses how the rest is cut into chunks (as
 * libcurl would hand it over: 1 to 256 bytes); the rest is fed to a
 * stream over a real cache.  When the stream asks to end (malformed,
 * oversized, compacted, diverged), a new stream is begun on the same cache
 * and the remaining bytes go on, as the source's reconnect would.
 * Beyond "no crash, no leak, no undefined behaviour" it checks what the
 * source relies on: the cache's revision never goes back, the stream's
 * idea of it stays the cache's, a stream that ended says why, and a
 * message over the size limit is always refused.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "etcd_stream.h"

#define MAX_MSG 2048

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    size_t chunk = (size_t)data[0] + 1;
    data++;
    size--;
    wcache_cache *c;
    if (wcache_cache_create(&c, NULL) != WCACHE_OK)
        return 0;
    if (wcache_cache_set_param(c, WCACHE_P_RETAIN_SECONDS, 0) != WCACHE_OK ||
        wcache_cache_open(c) != WCACHE_OK)
        abort();
    wci_ew w;
    if (wci_ew_init(&w, c, MAX_MSG) != 0) {
        wcache_cache_close(c);
        return 0;
    }
    w.ckey_watch = (int)(size & 1); /* messages of watch 1 are the compaction key's */
    int64_t last = 0;
    size_t since_nl = 0;
    for (size_t i = 0; i < size;) {
        size_t n = size - i < chunk ? size - i : chunk;
        for (size_t k = 0; k < n; k++)
            since_nl = data[i + k] == '\n' ? 0 : since_nl + 1;
        int st = wci_ew_feed(&w, (const char *)data + i, n);
        i += n;
        int64_t rev = wcache_cache_revision(c);
        if (rev < last || w.applied != rev)
            abort();
        last = rev;
        if (st != WCI_EW_GO) {
            if (w.err[0] == 0 || st > WCI_EW_FATAL)
                abort();
            if (st == WCI_EW_FATAL)
                break;
            wci_ew_reset(&w);
            since_nl = 0;
        } else if (since_nl > MAX_MSG) {
            abort(); /* an oversized message was taken */
        }
    }
    if (w.state == WCI_EW_GO && (wci_ew_end(&w) == WCI_EW_GO || w.err[0] == 0))
        abort();
    if (wcache_cache_revision(c) < last)
        abort();
    wci_ew_fini(&w);
    wcache_cache_close(c);
    return 0;
}
