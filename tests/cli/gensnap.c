/*
 * gensnap.c - writes small snapshots for the CLI tests (the tests/cli
 * scripts compile it against lib/libwatchcache.a).
 *
 *   gensnap OUT N [VARIANT]
 *
 * N pod-like objects "/registry/pods/ns/pod-NNNNN", one key and one value
 * that are not UTF-8, one empty value.  VARIANT 1 is the same state later:
 * pod-00003 changed, pod-00005 deleted, "/registry/zz-new" added.
 *
 *   gensnap OUT 0 2 SOURCE_ID REV FROM
 *
 * VARIANT 2 copies the snapshot FROM (for the check tests of sync.sh) with
 * "/reg/pods/p5" altered, "/reg/pods/p6" left out and "/reg/zz-extra"
 * added, as a snapshot of SOURCE_ID at REV.
 *
 *   gensnap OUT N 3 DELTA
 *
 * VARIANT 3 writes the VARIANT 0 state to OUT and then the VARIANT 1
 * changes as a delta on it to DELTA.
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

static int later(wcache_cache *c, int64_t *rev);

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
    return bad || (variant == 1 && later(c, rev));
}

static int later(wcache_cache *c, int64_t *rev)
{
    int bad = put(c, "/registry/pods/ns/pod-00003", 27, "changed", 7, rev);
    bad |= wcache_ingest_delete(c, "/registry/pods/ns/pod-00005", 27, ++*rev) != WCACHE_OK;
    bad |= put(c, "/registry/zz-new", 16, "new", 3, rev);
    return bad;
}

static int copy_altered(wcache_cache *c, const char *from, int64_t rev)
{
    wcache_snapshot *s;
    wcache_batch *b;
    wcache_kv kv;
    int rc;
    if (wcache_snapshot_open(&s, from, NULL) != WCACHE_OK || wcache_batch_create(c, &b))
        return 1;
    while ((rc = wcache_snapshot_next(s, &kv)) == WCACHE_OK) {
        if (kv.key_len == 12 && memcmp(kv.key, "/reg/pods/p6", 12) == 0)
            continue;
        if (kv.key_len == 12 && memcmp(kv.key, "/reg/pods/p5", 12) == 0)
            kv.value = "altered", kv.value_len = 7;
        if (wcache_batch_put_meta(b, kv.key, kv.key_len, kv.value, kv.value_len,
                                  kv.create_revision, kv.mod_revision, kv.version))
            return 1;
    }
    rc = rc != WCACHE_ENOTFOUND ||
         wcache_batch_put_meta(b, "/reg/zz-extra", 13, "x", 1, rev, rev, 1) ||
         wcache_ingest_load(c, b, rev);
    wcache_batch_free(b);
    wcache_snapshot_close(s);
    return rc;
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
    int variant = argc > 3 ? atoi(argv[3]) : 0;
    if (variant == 2 && argc != 7) {
        fprintf(stderr, "usage: gensnap OUT 0 2 SOURCE_ID REV FROM\n");
        return 2;
    }
    if (wcache_cache_create(&c, NULL) != WCACHE_OK || wcache_cache_open(c) != WCACHE_OK ||
        (variant == 2 ? copy_altered(c, argv[6], atoll(argv[5]))
                      : feed(c, atoi(argv[2]), variant, &rev))) {
        fprintf(stderr, "gensnap: could not fill the cache\n");
        return 1;
    }
    wcache_snapshot_write_opts o = {.size = sizeof o};
    o.source_id = variant == 2 ? argv[4] : "test:/registry/";
    o.source_id_len = strlen(o.source_id);
    o.block_bytes = 4096;
    o.errbuf = eb;
    o.errbuf_len = sizeof eb;
    wcache_code rc = wcache_snapshot_write(c, argv[1], &o, NULL);
    wcache_snapshot *base = NULL;
    if (rc == WCACHE_OK && variant == 3) {
        rc = argc == 5 && !later(c, &rev) ? wcache_snapshot_open(&base, argv[1], NULL)
                                          : WCACHE_EINVAL;
        o.base = base;
        if (rc == WCACHE_OK)
            rc = wcache_snapshot_write(c, argv[4], &o, NULL);
        wcache_snapshot_close(base);
    }
    if (rc != WCACHE_OK)
        fprintf(stderr, "gensnap: %s: %s\n", wcache_strerror(rc), eb);
    wcache_cache_close(c);
    return rc != WCACHE_OK;
}
