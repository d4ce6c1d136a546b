/*
 * gensnap.c - writes small snapshots for the CLI tests (the tests/cli
 * scripts compile it against lib/libwatchcache.a).
 *
 *   gensnap OUT N [VARIANT]
 *
 * N pod-like objects "/registry/pods/ns/pod-NNNNN", one key and one value
 * that are not UTF-8, one empty value.  VARIANT 1 is the same state later:
 * pod-00003 changed, pod-00005 deleted, "/registry/zz-new" added.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <watchcache.h>

static int put(wcache_cache *c, const char *k, size_t kl, const char *v, size_t vl,
               int64_t *rev)
{
    return wcache_ingest_put(c, k, kl, v, vl, ++*rev) != WCACHE_OK;
}

static int feed(wcache_cache *c, int n, int variant, int64_t *rev)
{
    char k[64], v[128];
    int bad = 0;
    for (int i = 0; i < n; i++) {
        int kl = snprintf(k, sizeof k, "/registry/pods/ns/pod-%05d", i);
        int vl =
            snprintf(v, sizeof v, "{\"kind\":\"Pod\",\"metadata\":{\"name\":\"pod-%05d\"}}", i);
        bad |= put(c, k, (size_t)kl, v, (size_t)vl, rev);
    }
    bad |= put(c, "/registry/bin\xff\x01", 15, "\xc3\x28\x00", 3, rev);
    bad |= put(c, "/registry/empty", 15, "", 0, rev);
    if (variant == 1) {
        bad |= put(c, "/registry/pods/ns/pod-00003", 27, "changed", 7, rev);
        bad |= wcache_ingest_delete(c, "/registry/pods/ns/pod-00005", 27, ++*rev) != WCACHE_OK;
        bad |= put(c, "/registry/zz-new", 16, "new", 3, rev);
    }
    return bad;
}

int main(int argc, char **argv)
{
    wcache_cache *c = NULL;
    int64_t rev = 0;
    char eb[256] = "";
    if (argc < 3) {
        fprintf(stderr, "usage: gensnap OUT N [VARIANT]\n");
        return 2;
    }
    if (wcache_cache_create(&c, NULL) != WCACHE_OK || wcache_cache_open(c) != WCACHE_OK ||
        feed(c, atoi(argv[2]), argc > 3 ? atoi(argv[3]) : 0, &rev)) {
        fprintf(stderr, "gensnap: could not fill the cache\n");
        return 1;
    }
    wcache_snapshot_write_opts o = {.size = sizeof o};
    o.source_id = "test:/registry/";
    o.source_id_len = strlen(o.source_id);
    o.block_bytes = 4096;
    o.errbuf = eb;
    o.errbuf_len = sizeof eb;
    wcache_code rc = wcache_snapshot_write(c, argv[1], &o, NULL);
    if (rc != WCACHE_OK)
        fprintf(stderr, "gensnap: %s: %s\n", wcache_strerror(rc), eb);
    wcache_cache_close(c);
    return rc != WCACHE_OK;
}
