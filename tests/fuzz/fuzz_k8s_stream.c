/*
 * fuzz_k8s_stream.c - libFuzzer target for the Kubernetes watch stream
 * parser and applier (lib/source_k8s_stream.c).
 *
 * The first byte of the input chooses how the rest is cut into chunks (1 to
 * 256 bytes, as a pipe or libcurl would hand them over); the rest is fed to
 * a stream over a real cache.  When the stream asks to end it is handled
 * as the source does: a re-list resumes with the same bytes from the
 * cache's revision (here without a list: the cache is as the stream left
 * it), a reconnect begins a new stream on the same cache.  Beyond "no
 * crash, no leak, no undefined behaviour" it checks what the source relies
 * on: the cache's revision never goes back, the stream's idea of it stays
 * the cache's, a stream that ended says why with a wcache_code, a line over
 * the limit is never taken, and every key the cache holds begins with the
 * prefix.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "source_k8s.h"

#define MAX_LINE 2048
#define PREFIX "/registry/pods/"

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
    wci_kw w;
    if (wci_kw_init(&w, c, MAX_LINE, PREFIX, strlen(PREFIX)) != 0) {
        wcache_cache_close(c);
        return 0;
    }
    int64_t last = 0;
    for (size_t i = 0; i < size;) {
        size_t n = size - i < chunk ? size - i : chunk, used = 0;
        int st = wci_kw_feed(&w, (const char *)data + i, n, &used);
        if (used > n || (st == WCI_KW_GO && used != n))
            abort();
        i += used;
        int64_t rev = wcache_cache_revision(c);
        if (rev < last || w.applied != rev)
            abort();
        last = rev;
        if (st != WCI_KW_GO) {
            if (w.err[0] == 0 || w.code <= 0 || w.code >= WCACHE_CODE_LAST || st > WCI_KW_FATAL)
                abort();
            if (st == WCI_KW_FATAL)
                break;
            if (st == WCI_KW_RELIST) {
                wci_kw_resume(&w);
            } else {
                wci_kw_reset(&w); /* what follows starts mid-line: malformed, as it should */
            }
        } else if (w.len > MAX_LINE) {
            abort(); /* an oversized line was taken */
        }
    }
    wci_kw_end(&w);
    if (wcache_cache_revision(c) < last)
        abort();
    /* Every key is the prefix + namespace/name or name. */
    wcache_view *v;
    if (wcache_view_create(c, &v) == WCACHE_OK) {
        if (wcache_view_begin(v, WCACHE_REV_LATEST) == WCACHE_OK) {
            wcache_kv items[64];
            wcache_list_result res = {.size = sizeof res};
            if (wcache_view_list(v, NULL, items, 64, &res) == WCACHE_OK)
                for (size_t k = 0; k < res.count; k++)
                    if (items[k].key_len <= strlen(PREFIX) ||
                        memcmp(items[k].key, PREFIX, strlen(PREFIX)) != 0)
                        abort();
        }
        wcache_view_free(v);
    }
    wci_kw_fini(&w);
    wcache_cache_close(c);
    return 0;
}
