/*
 * gen_golden.c - writes the golden files that check_snapshot.c reads back:
 * golden-v1.wcsnap (format 1.0, written by the 0.1 library of that time),
 * golden-v1.1.wcsnap and golden-v1.1-delta.wcsnap (format 1.1: the same
 * state, and a delta on it).  Run it only to create the golden files of a
 * new format version: a committed golden file is never regenerated, since
 * its point is that old bytes keep reading.
 *
 *   cc -Iinclude tests/data/gen_golden.c -Llib -lwatchcache -o gen_golden
 *   ./gen_golden tests/data/golden-v1.wcsnap
 *   ./gen_golden tests/data/golden-v1.1.wcsnap tests/data/golden-v1.1-delta.wcsnap
 */
#include <stdio.h>
#include <string.h>

#include <watchcache.h>

static int step(wcache_code rc, const char *what)
{
    if (rc != WCACHE_OK)
        fprintf(stderr, "gen_golden: %s: %s\n", what, wcache_strerror(rc));
    return rc != WCACHE_OK;
}

static int feed(wcache_cache *c)
{
    int bad = 0;
    bad |= step(wcache_ingest_put(c, "/registry/a", 11, "alpha-1", 7, 1), "put a");
    bad |= step(wcache_ingest_put(c, "/registry/b\xff", 12, "\x00\x01\x02", 3, 2), "put b");
    bad |= step(wcache_ingest_put(c, "/registry/x", 11, "x", 1, 3), "put x");
    bad |= step(wcache_ingest_put(c, "/registry/d", 11, "d1", 2, 4), "put d");
    bad |= step(wcache_ingest_put(c, "/registry/d", 11, "d2", 2, 5), "put d");
    bad |= step(wcache_ingest_delete(c, "/registry/x", 11, 6), "delete x");
    bad |= step(wcache_ingest_put(c, "/registry/y", 11, "y", 1, 7), "put y");
    bad |= step(wcache_ingest_delete(c, "/registry/y", 11, 8), "delete y");
    bad |= step(wcache_ingest_put(c, "/registry/a", 11, "alpha-2", 7, 9), "put a");
    bad |= step(wcache_ingest_put(c, "/registry/c", 11, "", 0, 10), "put c");
    bad |= step(wcache_ingest_progress(c, 11), "progress");
    bad |= step(wcache_ingest_put(c, "/registry/d", 11, "{\"kind\":\"Pod\"}", 14, 12), "put d");
    return bad;
}

/* After the base at 12: a delete, an update, a key created and deleted
 * again (which the delta must not hold), a new key. */
static int feed_delta(wcache_cache *c)
{
    int bad = 0;
    bad |= step(wcache_ingest_delete(c, "/registry/a", 11, 13), "delete a");
    bad |= step(wcache_ingest_put(c, "/registry/d", 11, "d-4", 3, 14), "put d");
    bad |= step(wcache_ingest_put(c, "/registry/tmp", 13, "t", 1, 15), "put tmp");
    bad |= step(wcache_ingest_delete(c, "/registry/tmp", 13, 16), "delete tmp");
    bad |= step(wcache_ingest_put(c, "/registry/e", 11, "e", 1, 17), "put e");
    return bad;
}

int main(int argc, char **argv)
{
    wcache_cache *c = NULL;
    char eb[256] = "";
    if (argc != 2 && argc != 3) {
        fprintf(stderr, "usage: gen_golden OUT.wcsnap [DELTA.wcsnap]\n");
        return 2;
    }
    if (step(wcache_cache_create(&c, NULL), "create") || step(wcache_cache_open(c), "open") ||
        feed(c))
        return 1;
    wcache_snapshot_write_opts o = {.size = sizeof o};
    o.source_id = "golden:/registry/";
    o.source_id_len = strlen(o.source_id);
    o.compacted_revision = 3;
    o.created_unix_ns = 1700000000000000000LL;
    o.errbuf = eb;
    o.errbuf_len = sizeof eb;
    wcache_code rc = wcache_snapshot_write(c, argv[1], &o, NULL);
    if (rc != WCACHE_OK)
        fprintf(stderr, "gen_golden: write: %s: %s\n", wcache_strerror(rc), eb);
    wcache_snapshot *base = NULL;
    if (rc == WCACHE_OK && argc == 3) {
        rc = feed_delta(c) ? WCACHE_EINVAL : wcache_snapshot_open(&base, argv[1], NULL);
        o.base = base;
        o.source_id_len = 0; /* the base's */
        if (rc == WCACHE_OK)
            rc = wcache_snapshot_write(c, argv[2], &o, NULL);
        if (rc != WCACHE_OK)
            fprintf(stderr, "gen_golden: delta: %s: %s\n", wcache_strerror(rc), eb);
        wcache_snapshot_close(base);
    }
    wcache_cache_close(c);
    return rc != WCACHE_OK;
}
