/*
 * bench_snapshot.c - snapshot write and restore on N pod objects from
 * podgen.h, beside `zstd -1 -T0` on the same uncompressed bytes.
 *
 *   bench_snapshot [N] [DIR]        default N 100000, DIR $TMPDIR or /tmp
 *
 * Prints one line per figure:  metric<TAB>N<TAB>value<TAB>unit
 *   stream_mbps_w0     the same bytes to a sink that drops them (no file I/O,
 *                      no fsync): listing + encoding + compression alone
 *   write_mbps_wW      snapshot write of the whole cache with W compression
 *                      workers, MB/s of key+value bytes (the "raw
 *                      object bytes"); _ingest: while a thread keeps putting
 *   zstd_mbps          zstd -1 -T0 over the uncompressed record stream, MB/s
 *                      of the same key+value bytes (our practical limit)
 *   verify_s           open + verify the whole file
 *   restore_s          wcache_snapshot_restore into an empty cache, until
 *                      a GET is served
 *   ratio              uncompressed / file bytes
 *   etcd_load_s        (with $BENCH_ETCD) putting the same N pods into etcd
 *   etcd_sync_s        the cache's initial sync from that etcd: an etcd
 *                      source started on an empty cache, until it has listed
 *                      the N pods (what a restore from a snapshot replaces)
 *   sync_over_restore  etcd_sync_s / restore_s
 * The snapshot file is read from the page cache (written just before).
 * BENCH_ETCD: the endpoints of an etcd started for the run (bench/snapshot.sh
 * starts one with a large --quota-backend-bytes); its keys under
 * /registry/pods/ are replaced.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
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
        fprintf(stderr, "bench_snapshot: %s: %s %s\n", what, wcache_strerror(rc), eb ? eb : "");
        exit(1);
    }
}

static wcache_cache *open_cache(void)
{
    wcache_cache *c;
    check(wcache_cache_create(&c, NULL), "create", NULL);
    check(wcache_cache_set_param(c, WCACHE_P_RETAIN_SECONDS, 0), "param", NULL);
    check(wcache_cache_open(c), "open", NULL);
    return c;
}

/* N pods loaded at revision N, keys in any order (load sorts). */
static wcache_cache *fill(const podgen *g, uint64_t n)
{
    wcache_cache *c = open_cache();
    wcache_batch *b;
    char key[PODGEN_KEY_MAX], pod[PODGEN_POD_MAX];
    check(wcache_batch_create(c, &b), "batch", NULL);
    for (uint64_t i = 0; i < n; i++) {
        size_t kl = podgen_key(g, i, key, sizeof key);
        size_t vl = podgen_pod(g, i, 1, (int64_t)i + 1, pod, sizeof pod);
        check(wcache_batch_put_meta(b, key, kl, pod, vl, (int64_t)i + 1, (int64_t)i + 1, 1),
              "put_meta", NULL);
    }
    check(wcache_ingest_load(c, b, (int64_t)n), "load", NULL);
    wcache_batch_free(b);
    return c;
}

typedef struct feeder {
    wcache_cache *c;
    const podgen *g;
    uint64_t n;
    atomic_int stop;
    uint64_t puts;
} feeder;

/* The one writer thread: updates random pods until told to stop. */
static void *feed(void *arg)
{
    feeder *f = arg;
    char key[PODGEN_KEY_MAX], pod[PODGEN_POD_MAX];
    podgen_rng r = {42};
    int64_t rev = wcache_cache_revision(f->c);
    while (!atomic_load(&f->stop)) {
        uint64_t i = podgen_next(&r) % f->n;
        size_t kl = podgen_key(f->g, i, key, sizeof key);
        size_t vl = podgen_pod(f->g, i, 2, rev + 1, pod, sizeof pod);
        check(wcache_ingest_put(f->c, key, kl, pod, vl, ++rev), "put", NULL);
        f->puts++;
    }
    return NULL;
}

static double write_snap(wcache_cache *c, const char *path, int workers, int ingest,
                         const podgen *g, uint64_t n, wcache_snapshot_info *in)
{
    char eb[256] = "";
    wcache_snapshot_write_opts o = {.size = sizeof o};
    o.workers = workers;
    o.source_id = "bench:/registry/pods/";
    o.source_id_len = strlen(o.source_id);
    o.errbuf = eb;
    o.errbuf_len = sizeof eb;
    feeder f = {.c = c, .g = g, .n = n};
    pthread_t th;
    if (ingest)
        pthread_create(&th, NULL, feed, &f);
    in->size = sizeof *in;
    double t = now();
    check(wcache_snapshot_write(c, path, &o, in), "write", eb);
    t = now() - t;
    if (ingest) {
        atomic_store(&f.stop, 1);
        pthread_join(th, NULL);
        fprintf(stderr, "bench_snapshot: %llu puts applied during the write\n",
                (unsigned long long)f.puts);
    }
    return (double)in->kv_bytes / 1e6 / t;
}

static int null_sink(const void *buf, size_t len, void *ud)
{
    (void)buf;
    *(uint64_t *)ud += len;
    return WCACHE_OK;
}

static double stream_snap(wcache_cache *c)
{
    uint64_t bytes = 0;
    wcache_snapshot_info in = {.size = sizeof in};
    double t = now();
    check(wcache_snapshot_write_to(c, null_sink, &bytes, NULL, &in), "write_to", NULL);
    return (double)in.kv_bytes / 1e6 / (now() - t);
}

/* The uncompressed record stream of the snapshot, for zstd(1) to chew. */
static void dump_raw(const char *snap, const char *raw)
{
    wcache_snapshot *s;
    wcache_kv kv;
    FILE *f = fopen(raw, "wb");
    unsigned char h[32] = {0};
    check(wcache_snapshot_open(&s, snap, NULL), "open", NULL);
    while (f && wcache_snapshot_next(s, &kv) == WCACHE_OK) {
        memcpy(h, &kv.key_len, 4);
        memcpy(h + 4, &kv.value_len, 4);
        memcpy(h + 8, &kv.create_revision, 24);
        fwrite(h, 1, sizeof h, f);
        fwrite(kv.key, 1, kv.key_len, f);
        fwrite(kv.value, 1, kv.value_len, f);
    }
    wcache_snapshot_close(s);
    if (!f || fclose(f) != 0) {
        fprintf(stderr, "bench_snapshot: cannot write %s\n", raw);
        exit(1);
    }
}

static double zstd_mbps(const char *raw, uint64_t kv_bytes)
{
    char cmd[2048];
    /* Warm the page cache first so both sides read from memory. */
    snprintf(cmd, sizeof cmd, "cat '%s' > /dev/null && zstd -1 -T0 -q -c '%s' > /dev/null", raw,
             raw);
    if (system(cmd) != 0)
        return 0;
    snprintf(cmd, sizeof cmd, "zstd -1 -T0 -q -c '%s' > /dev/null", raw);
    double t = now();
    if (system(cmd) != 0)
        return 0;
    return (double)kv_bytes / 1e6 / (now() - t);
}

static double restore(const char *path, int verify_only)
{
    char eb[256] = "";
    wcache_snapshot_read_opts o = {.size = sizeof o};
    o.errbuf = eb;
    o.errbuf_len = sizeof eb;
    double t = now();
    if (verify_only) {
        wcache_snapshot *s;
        check(wcache_snapshot_open(&s, path, &o), "open", eb);
        check(wcache_snapshot_verify(s), "verify", eb);
        wcache_snapshot_close(s);
        return now() - t;
    }
    wcache_cache *c = open_cache();
    t = now();
    check(wcache_snapshot_restore(c, path, &o, NULL), "restore", eb);
    wcache_view *v;
    wcache_kv kv;
    check(wcache_view_create(c, &v), "view", NULL);
    check(wcache_view_begin(v, WCACHE_REV_LATEST), "begin", NULL);
    int rc = wcache_view_get(v, "/registry/pods/x", 16, &kv);
    t = now() - t;
    if (rc != WCACHE_ENOTFOUND && rc != WCACHE_OK)
        check(rc, "get", NULL);
    wcache_view_free(v);
    wcache_cache_close(c);
    return t;
}

/* ---- the etcd side ---- */

static size_t drop(char *p, size_t sz, size_t nm, void *ud)
{
    (void)p, (void)ud;
    return sz * nm;
}

static void b64(const unsigned char *p, size_t n, char *o)
{
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) |
                     (i + 2 < n ? p[i + 2] : 0);
        *o++ = t[v >> 18];
        *o++ = t[(v >> 12) & 63];
        *o++ = i + 1 < n ? t[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? t[v & 63] : '=';
    }
    *o = 0;
}

/* The N pods into etcd, 100 per transaction; returns the seconds. */
static double etcd_load(const char *eps, const podgen *g, uint64_t n)
{
    char url[512], key[PODGEN_KEY_MAX], pod[PODGEN_POD_MAX];
    snprintf(url, sizeof url, "%.*s/v3/kv/txn", (int)strcspn(eps, ","), eps);
    size_t cap = 100 * (PODGEN_POD_MAX * 2 + 256) + 64;
    char *body = malloc(cap), *kb = malloc(PODGEN_KEY_MAX * 2), *vb = malloc(PODGEN_POD_MAX * 2);
    CURL *e = curl_easy_init();
    double t = now();
    for (uint64_t i = 0; i < n;) {
        size_t at = (size_t)snprintf(body, cap, "{\"success\":[");
        for (int k = 0; k < 100 && i < n; k++, i++) {
            size_t kl = podgen_key(g, i, key, sizeof key);
            size_t vl = podgen_pod(g, i, 1, (int64_t)i + 1, pod, sizeof pod);
            b64((unsigned char *)key, kl, kb);
            b64((unsigned char *)pod, vl, vb);
            at += (size_t)snprintf(body + at, cap - at,
                                   "%s{\"request_put\":{\"key\":\"%s\",\"value\":\"%s\"}}",
                                   k ? "," : "", kb, vb);
        }
        snprintf(body + at, cap - at, "]}");
        curl_easy_setopt(e, CURLOPT_URL, url);
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, drop);
        long st = 0;
        if (curl_easy_perform(e) != CURLE_OK ||
            (curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &st), st != 200)) {
            fprintf(stderr, "bench_snapshot: etcd txn failed (HTTP %ld)\n", st);
            exit(1);
        }
    }
    t = now() - t;
    curl_easy_cleanup(e);
    free(body);
    free(kb);
    free(vb);
    return t;
}

/* An empty cache fed by an etcd source until it has listed the pods. */
static double etcd_sync(const char *eps, uint64_t n)
{
    wcache_cache *c;
    wcache_etcd *src;
    wcache_etcd_opts o = {.size = sizeof o};
    o.endpoints = eps;
    o.prefix = "/registry/pods/";
    o.prefix_len = strlen(o.prefix);
    check(wcache_cache_create(&c, NULL), "create", NULL);
    check(wcache_etcd_create(&src, c, &o), "etcd", NULL);
    check(wcache_cache_open(c), "open", NULL);
    double t = now();
    check(wcache_etcd_start(src), "start", NULL);
    wcache_stat st = {.size = sizeof st};
    for (;;) {
        wcache_cache_stat(c, &st);
        if (wcache_cache_revision(c) > 0 && st.objects >= n)
            break;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
        if (now() - t > 3600) {
            fprintf(stderr, "bench_snapshot: the initial sync did not finish\n");
            exit(1);
        }
    }
    t = now() - t;
    wcache_etcd_free(src);
    wcache_cache_close(c);
    return t;
}

int main(int argc, char **argv)
{
    uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 10) : 100000;
    const char *tmp = getenv("TMPDIR");
    const char *dir = argc > 2 ? argv[2] : tmp && *tmp ? tmp : "/tmp";
    char path[512], raw[512];
    snprintf(path, sizeof path, "%s/bench-%d.wcsnap", dir, (int)getpid());
    snprintf(raw, sizeof raw, "%s/bench-%d.raw", dir, (int)getpid());
    podgen g;
    podgen_init(&g, 1);
    wcache_cache *c = fill(&g, n);
    wcache_snapshot_info in;
    unsigned long long N = (unsigned long long)n;
    printf("stream_mbps_w0\t%llu\t%.0f\tMB/s\n", N, stream_snap(c));
    for (int w = 0; w <= 2; w++)
        printf("write_mbps_w%d\t%llu\t%.0f\tMB/s\n", w, N,
               write_snap(c, path, w, 0, &g, n, &in));
    printf("write_mbps_w1_ingest\t%llu\t%.0f\tMB/s\n", N,
           write_snap(c, path, 1, 1, &g, n, &in));
    printf("write_mbps_w2_ingest\t%llu\t%.0f\tMB/s\n", N,
           write_snap(c, path, 2, 1, &g, n, &in));
    printf("kv_bytes\t%llu\t%llu\tbytes\n", N, (unsigned long long)in.kv_bytes);
    printf("ratio\t%llu\t%.2f\tx\n", N, (double)in.raw_bytes / (double)in.file_bytes);
    wcache_cache_close(c);
    dump_raw(path, raw);
    printf("zstd_mbps\t%llu\t%.0f\tMB/s\n", N, zstd_mbps(raw, in.kv_bytes));
    unlink(raw);
    printf("verify_s\t%llu\t%.3f\ts\n", N, restore(path, 1));
    double rs = restore(path, 0), r2 = restore(path, 0);
    rs = r2 < rs ? r2 : rs;
    printf("restore_s\t%llu\t%.3f\ts\n", N, rs);
    unlink(path);
    const char *eps = getenv("BENCH_ETCD");
    if (eps && *eps) {
        printf("etcd_load_s\t%llu\t%.1f\ts\n", N, etcd_load(eps, &g, n));
        double ss = etcd_sync(eps, n);
        printf("etcd_sync_s\t%llu\t%.3f\ts\n", N, ss);
        printf("sync_over_restore\t%llu\t%.1f\tx\n", N, ss / rs);
    }
    return 0;
}
