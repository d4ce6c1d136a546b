/*
 * bench_store.c - snapshots of N pod objects (podgen.h) for the store
 * benchmark (bench/s3.sh).
 *
 *   bench_store gen N FILE          write the snapshot of N pods to FILE
 *   bench_store putsnap N URL       write it straight into a store
 *                                   (wcache_store_put_snapshot, the path of
 *                                   `wcache sync --out s3://...`)
 *   bench_store restore N URL TMP   restore the object URL into an empty
 *                                   cache, streamed (wcache_store_restore)
 *                                   and, alternating with it, the way it was
 *                                   before: download to the file TMP, then
 *                                   wcache_snapshot_restore; 3 of each
 *
 * putsnap prints  putsnap_mbps<TAB>N<TAB>value<TAB>MB/s  (file bytes per
 * second of the upload alone; building the cache is not timed); restore
 * prints restore_stream_mbps and restore_file_mbps lines, file bytes per
 * second from the call to a cache that serves.  Store options come from
 * the environment (AWS_*, WCACHE_BENCH_ENDPOINT).
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <watchcache.h>

#include "podgen.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void check(int rc, const char *what, const char *eb)
{
    if (rc != WCACHE_OK) {
        fprintf(stderr, "bench_store: %s: %s%s%s\n", what, wcache_strerror(rc),
                eb && *eb ? ": " : "", eb ? eb : "");
        exit(1);
    }
}

static wcache_cache *fill(uint64_t n)
{
    podgen g;
    podgen_init(&g, 1);
    wcache_cache *c = NULL;
    check(wcache_cache_create(&c, NULL), "create", NULL);
    check(wcache_cache_set_param(c, WCACHE_P_AUTO_COMPACT, 0), "param", NULL);
    check(wcache_cache_open(c), "open", NULL);
    wcache_batch *b;
    char key[PODGEN_KEY_MAX], pod[PODGEN_POD_MAX];
    check(wcache_batch_create(c, &b), "batch", NULL);
    for (uint64_t i = 0; i < n; i++) {
        size_t kl = podgen_key(&g, i, key, sizeof key);
        size_t vl = podgen_pod(&g, i, 1, (int64_t)i + 1, pod, sizeof pod);
        check(wcache_batch_put_meta(b, key, kl, pod, vl, (int64_t)i + 1, (int64_t)i + 1, 1),
              "put_meta", NULL);
    }
    check(wcache_ingest_load(c, b, (int64_t)n), "load", NULL);
    wcache_batch_free(b);
    return c;
}

static wcache_cache *empty(void)
{
    wcache_cache *c = NULL;
    check(wcache_cache_create(&c, NULL), "create", NULL);
    check(wcache_cache_open(c), "open", NULL);
    return c;
}

/* One restore, streamed or through a file; its seconds. */
static double restore_once(wcache_store *st, const char *tmp, int streamed, uint64_t *bytes,
                           char *eb)
{
    wcache_cache *c = empty();
    wcache_snapshot_read_opts ro = {.size = sizeof ro, .errbuf = eb, .errbuf_len = 512};
    wcache_snapshot_info in = {.size = sizeof in};
    double t0 = now();
    if (streamed) {
        check(wcache_store_restore(st, "", c, &ro, &in), "store_restore", eb);
    } else {
        check(wcache_store_get_file(st, "", tmp, 0, NULL), "get_file", eb);
        check(wcache_snapshot_restore(c, tmp, &ro, &in), "restore", eb);
    }
    double dt = now() - t0;
    *bytes = in.file_bytes;
    wcache_cache_close(c);
    remove(tmp);
    return dt;
}

static int bench_restore(uint64_t n, const char *url, const char *tmp)
{
    char eb[512] = "";
    wcache_store_opts o = {.size = sizeof o};
    o.endpoint = getenv("WCACHE_BENCH_ENDPOINT");
    o.errbuf = eb;
    o.errbuf_len = sizeof eb;
    wcache_store *st = NULL;
    check(wcache_store_open(&st, url, &o), "store", eb);
    double best[2] = {1e9, 1e9};
    uint64_t bytes = 0;
    for (int i = 0; i < 6; i++) {
        double t = restore_once(st, tmp, i % 2 == 0, &bytes, eb);
        if (t < best[i % 2])
            best[i % 2] = t;
    }
    printf("restore_stream_mbps\t%llu\t%.1f\tMB/s\n", (unsigned long long)n,
           (double)bytes / 1e6 / best[0]);
    printf("restore_file_mbps\t%llu\t%.1f\tMB/s\n", (unsigned long long)n,
           (double)bytes / 1e6 / best[1]);
    wcache_store_close(st);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "restore"))
        return bench_restore(strtoull(argv[2], NULL, 10), argv[3], argv[4]);
    if (argc != 4) {
        fprintf(stderr, "usage: bench_store gen N FILE | putsnap N URL | restore N URL TMP\n");
        return 2;
    }
    uint64_t n = strtoull(argv[2], NULL, 10);
    wcache_cache *c = fill(n);
    char eb[512] = "";
    wcache_snapshot_write_opts w = {.size = sizeof w};
    w.source_id = "bench:/registry/pods/";
    w.source_id_len = strlen(w.source_id);
    w.workers = 1;
    w.errbuf = eb;
    w.errbuf_len = sizeof eb;
    wcache_snapshot_info in = {.size = sizeof in};
    if (!strcmp(argv[1], "gen")) {
        check(wcache_snapshot_write(c, argv[3], &w, &in), "write", eb);
    } else {
        wcache_store_opts o = {.size = sizeof o};
        o.endpoint = getenv("WCACHE_BENCH_ENDPOINT");
        o.errbuf = eb;
        o.errbuf_len = sizeof eb;
        wcache_store *st = NULL;
        check(wcache_store_open(&st, argv[3], &o), "store", eb);
        double t0 = now();
        check(wcache_store_put_snapshot(st, "", c, &w, 0, &in), "put_snapshot", eb);
        double dt = now() - t0;
        printf("putsnap_mbps\t%llu\t%.1f\tMB/s\n", (unsigned long long)n,
               (double)in.file_bytes / 1e6 / dt);
        wcache_store_close(st);
    }
    wcache_cache_close(c);
    return 0;
}
