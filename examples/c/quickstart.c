/* quickstart.c - three writes to one key, then the key read at each revision. */
#include <stdio.h>
#include <watchcache.h>

int main(void)
{
    wcache_cache *c = NULL;
    wcache_view *v = NULL;
    wcache_kv kv;

    if (wcache_cache_create(&c, NULL) || wcache_cache_open(c) || wcache_view_create(c, &v))
        return 1;
    wcache_ingest_put(c, "/pods/web", 9, "v1", 2, 10); /* created at revision 10 */
    wcache_ingest_put(c, "/pods/web", 9, "v2", 2, 11); /* modified at 11 */
    wcache_ingest_delete(c, "/pods/web", 9, 12);       /* deleted at 12 */

    for (int64_t rev = 10; rev <= 12; rev++) {
        int rc = wcache_view_begin(v, rev); /* pin the view at revision rev */
        if (rc == WCACHE_OK && (rc = wcache_view_get(v, "/pods/web", 9, &kv)) == WCACHE_OK)
            printf("rev %lld: %.*s (version %lld)\n", (long long)rev, (int)kv.value_len,
                   (const char *)kv.value, (long long)kv.version);
        else
            printf("rev %lld: %s\n", (long long)rev, wcache_strerror(rc));
    }
    wcache_view_free(v); /* ends the view: kv's pointers are invalid from here on */
    wcache_cache_close(c);
    return 0;
}
