/*
 * gen_golden.c - writes golden-v1.wcsnap, the format 1.0 golden file that
 * check_snapshot.c's golden_v1 test reads back.  Run it only to create a
 * new golden file for a new format version: a committed golden file is
 * never regenerated, since its point is that old bytes keep reading.
 *
 *   cc -Iinclude tests/data/gen_golden.c -Llib -lwatchcache -o gen_golden
 *   ./gen_golden tests/data/golden-v1.wcsnap
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

int main(int argc, char **argv)
{
    wcache_cache *c = NULL;
    char eb[256] = "";
    if (argc != 2) {
        fprintf(stderr, "usage: gen_golden OUT.wcsnap\n");
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
    wcache_cache_close(c);
    return rc != WCACHE_OK;
}
