/*
 * bench_etcd.c - the etcd source against a real etcd (bench/etcd.sh runs
 * it beside etcdctl on the same keys).
 *
 *   bench_etcd load EP N             put pods 0..N-1 of bench/podgen.h under
 *                                    /registry/pods/ (transactions of up to
 *                                    128 puts, etcd's default
 *                                    --max-txn-ops, 4 connections)
 *   bench_etcd sync EP N [PAGE]      time an initial sync of the N keys into
 *                                    a fresh cache (create .. synced), best
 *                                    of BENCH_REPS (default 1) runs
 *   bench_etcd ingest EP N SECS W    W writer threads update random pods for
 *                                    SECS seconds while a synced cache
 *                                    follows; the rate etcd accepted and
 *                                    the rate the cache applied, and how far
 *                                    behind the cache ended
 *   bench_etcd currev EP N [T]       T (16) threads, and 1, 2, 4 ... below it,
 *                                    each asking N times for etcd's current
 *                                    revision as consistent reads do: calls/s
 *                                    and the etcd ranges sent per call
 *
 * Output: one "name value unit" line per figure, on stdout.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <watchcache.h>

#include "podgen.h"

#define PREFIX "/registry/pods/"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t b64(const void *p, size_t n, char *out)
{
    const unsigned char *s = p;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t x = (uint32_t)s[i] << 16 | (uint32_t)s[i + 1] << 8 | s[i + 2];
        out[o++] = B64[x >> 18];
        out[o++] = B64[(x >> 12) & 63];
        out[o++] = B64[(x >> 6) & 63];
        out[o++] = B64[x & 63];
    }
    if (i < n) {
        uint32_t x = (uint32_t)s[i] << 16 | (i + 1 < n ? (uint32_t)s[i + 1] << 8 : 0);
        out[o++] = B64[x >> 18];
        out[o++] = B64[(x >> 12) & 63];
        out[o++] = i + 1 < n ? B64[(x >> 6) & 63] : '=';
        out[o++] = '=';
    }
    out[o] = 0;
    return o;
}

static size_t sink(char *d, size_t sz, size_t nm, void *ud)
{
    (void)d, (void)ud;
    return sz * nm;
}

static const char *EP;
static podgen G;

/* What etcd answered, for the error message of a request that failed. */
typedef struct reply {
    char text[512];
    size_t n;
} reply;

static size_t keep(char *d, size_t sz, size_t nm, void *ud)
{
    reply *r = ud;
    size_t len = sz * nm, room = sizeof r->text - 1 - r->n;
    memcpy(r->text + r->n, d, len < room ? len : room);
    r->n += len < room ? len : room;
    r->text[r->n] = 0;
    return len;
}

/* POST body to EP+path: the HTTP status (0: no answer), etcd's answer in
 * *r when r is not NULL. */
static long post_status(CURL *e, const char *path, const char *body, reply *r)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", EP, path);
    curl_easy_setopt(e, CURLOPT_URL, url);
    curl_easy_setopt(e, CURLOPT_POSTFIELDS, body);
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, r ? keep : sink);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    if (r)
        r->n = r->text[0] = 0;
    long st = 0;
    if (curl_easy_perform(e) != CURLE_OK)
        return 0;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &st);
    return st;
}

/* POST body to EP+path; 0 on HTTP 200. */
static int post(CURL *e, const char *path, const char *body)
{
    return post_status(e, path, body, NULL) == 200 ? 0 : -1;
}

/* A transaction putting pods [a, b) at generation gen. */
static char *txn_body(uint64_t a, uint64_t b, uint64_t gen, size_t *cap)
{
    size_t need = (b - a) * (4 * (PODGEN_KEY_MAX + PODGEN_POD_MAX) / 3 + 64) + 64;
    char *body = malloc(need), *p = body;
    char key[PODGEN_KEY_MAX], pod[PODGEN_POD_MAX];
    p += sprintf(p, "{\"success\":[");
    for (uint64_t i = a; i < b; i++) {
        size_t kl = podgen_key(&G, i, key, sizeof key);
        size_t pl = podgen_pod(&G, i, gen, 0, pod, sizeof pod);
        p += sprintf(p, "%s{\"request_put\":{\"key\":\"", i > a ? "," : "");
        p += b64(key, kl, p);
        p += sprintf(p, "\",\"value\":\"");
        p += b64(pod, pl, p);
        p += sprintf(p, "\"}}");
    }
    sprintf(p, "]}");
    *cap = need;
    return body;
}

/* ---- load ---- */

/*
 * etcd refuses a transaction of more than --max-txn-ops operations (128 by
 * default) with HTTP 400 "too many operations in txn request", and one
 * larger than --max-request-bytes (1.5 MiB) likewise: bench/etcd.sh raises
 * both, a bare tests/peers/etcd-local does not.  So transactions start at
 * the default limit and halve while etcd says they are too big; any other
 * 4xx is final, and a 5xx or a lost connection is retried.
 */
#define LOAD_CHUNK 1024 /* keys a loader takes at a time */
static _Atomic uint64_t NEXT;
static _Atomic int TXN_OPS = 128;
static uint64_t N;

static int too_big(const reply *r)
{
    return strstr(r->text, "too many operations") || strstr(r->text, "too large");
}

static void *loader(void *ud)
{
    (void)ud;
    CURL *e = curl_easy_init();
    reply r;
    for (;;) {
        uint64_t a0 = atomic_fetch_add(&NEXT, LOAD_CHUNK);
        if (a0 >= N)
            break;
        uint64_t end = a0 + LOAD_CHUNK < N ? a0 + LOAD_CHUNK : N;
        for (uint64_t a = a0; a < end;) {
            int ops = atomic_load(&TXN_OPS);
            uint64_t b = a + (uint64_t)ops < end ? a + (uint64_t)ops : end;
            size_t cap;
            char *body = txn_body(a, b, 0, &cap);
            long st;
            for (int t = 0; (st = post_status(e, "/v3/kv/txn", body, &r)) != 200; t++) {
                if (st == 400 && too_big(&r) && ops > 1) {
                    /* Others may have halved it already. */
                    atomic_compare_exchange_strong(&TXN_OPS, &ops, ops / 2);
                    break;
                }
                if ((st >= 400 && st < 500) || t > 20) {
                    fprintf(stderr,
                            "bench_etcd: load failed at key %llu (a transaction of %llu puts): "
                            "HTTP %ld %s\n",
                            (unsigned long long)a, (unsigned long long)(b - a), st,
                            st ? r.text : "(no answer)");
                    exit(1);
                }
                usleep(100000);
            }
            free(body);
            if (st == 200)
                a = b;
        }
    }
    curl_easy_cleanup(e);
    return NULL;
}

static int cmd_load(void)
{
    double t0 = now_s();
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        pthread_create(&th[i], NULL, loader, NULL);
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    printf("load_seconds %.3f s\n", now_s() - t0);
    printf("load_txn_ops %d puts\n", atomic_load(&TXN_OPS));
    return 0;
}

/* ---- sync ---- */

static wcache_cache *C;
static wcache_etcd *S;

static void source_up(uint32_t page)
{
    if (wcache_cache_create(&C, NULL) != WCACHE_OK)
        exit(1);
    wcache_etcd_opts o = {.size = sizeof o, .endpoints = EP};
    o.prefix = PREFIX;
    o.prefix_len = strlen(PREFIX);
    o.page_limit = page;
    o.request_timeout_ms = 600000;
    if (wcache_etcd_create(&S, C, &o) != WCACHE_OK || wcache_cache_open(C) != WCACHE_OK ||
        wcache_etcd_start(S) != WCACHE_OK) {
        fprintf(stderr, "bench_etcd: cannot start the source\n");
        exit(1);
    }
}

static void source_down(void)
{
    wcache_etcd_free(S);
    wcache_cache_close(C);
}

static void wait_synced(double limit)
{
    double end = now_s() + limit;
    for (;;) {
        wcache_etcd_stats st = {.size = sizeof st};
        wcache_etcd_stat(S, &st);
        if (st.synced)
            return;
        if (now_s() > end) {
            fprintf(stderr, "bench_etcd: not synced after %.0f s (last error %d)\n", limit,
                    st.last_error);
            exit(1);
        }
        usleep(1000);
    }
}

static int cmd_sync(uint32_t page)
{
    int reps = getenv("BENCH_REPS") ? atoi(getenv("BENCH_REPS")) : 1;
    double best = 1e30;
    uint64_t objs = 0;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        source_up(page);
        wait_synced(1200);
        double t = now_s() - t0;
        wcache_stat cs = {.size = sizeof cs};
        wcache_cache_stat(C, &cs);
        objs = cs.objects;
        source_down();
        if (t < best)
            best = t;
    }
    if (objs != N) {
        fprintf(stderr, "bench_etcd: synced %llu keys, expected %llu\n",
                (unsigned long long)objs, (unsigned long long)N);
        return 1;
    }
    printf("sync_seconds %.3f s\n", best);
    printf("sync_keys_per_s %.0f keys/s\n", (double)N / best);
    return 0;
}

/* ---- ingest ---- */

static _Atomic int STOP;
static _Atomic uint64_t PUTS;

static void *writer(void *ud)
{
    uint64_t x = (uint64_t)(uintptr_t)ud * 0x9e3779b97f4a7c15ULL + 1;
    CURL *e = curl_easy_init();
    char key[PODGEN_KEY_MAX], pod[PODGEN_POD_MAX];
    char *body = malloc(4 * (PODGEN_KEY_MAX + PODGEN_POD_MAX) / 3 + 64), *p;
    uint64_t gen = 1;
    while (!atomic_load(&STOP)) {
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        uint64_t i = x % N;
        size_t kl = podgen_key(&G, i, key, sizeof key);
        size_t pl = podgen_pod(&G, i, gen++, 0, pod, sizeof pod);
        p = body + sprintf(body, "{\"key\":\"");
        p += b64(key, kl, p);
        p += sprintf(p, "\",\"value\":\"");
        p += b64(pod, pl, p);
        sprintf(p, "\"}");
        if (post(e, "/v3/kv/put", body) == 0)
            atomic_fetch_add(&PUTS, 1);
    }
    free(body);
    curl_easy_cleanup(e);
    return NULL;
}

static int cmd_ingest(double secs, int nw)
{
    source_up(0);
    wait_synced(1200);
    wcache_etcd_stats a = {.size = sizeof a}, b = {.size = sizeof b};
    wcache_etcd_stat(S, &a);
    pthread_t th[64];
    nw = nw < 1 ? 1 : nw > 64 ? 64 : nw;
    double t0 = now_s();
    for (int i = 0; i < nw; i++)
        pthread_create(&th[i], NULL, writer, (void *)(uintptr_t)(i + 1));
    usleep((useconds_t)(secs * 1e6));
    atomic_store(&STOP, 1);
    for (int i = 0; i < nw; i++)
        pthread_join(th[i], NULL);
    double t1 = now_s();
    uint64_t puts = atomic_load(&PUTS);
    wcache_etcd_stat(S, &b);
    uint64_t seen = b.events - a.events;
    /* then until the cache has them all */
    while (b.events - a.events < puts && now_s() < t1 + 60) {
        usleep(1000);
        wcache_etcd_stat(S, &b);
    }
    double t2 = now_s();
    printf("ingest_writers %d n\n", nw);
    printf("etcd_puts_per_s %.0f puts/s\n", (double)puts / (t1 - t0));
    printf("cache_events_per_s %.0f events/s\n", (double)seen / (t1 - t0));
    printf("cache_lag_at_end %llu events\n", (unsigned long long)(puts - seen));
    printf("cache_catchup_ms %.0f ms\n", (t2 - t1) * 1e3);
    source_down();
    return b.events - a.events >= puts ? 0 : 1;
}

/* ---- current revision (consistent reads) ---- */

static void *currev_thread(void *ud)
{
    (void)ud;
    int64_t r;
    for (uint64_t i = 0; i < N; i++)
        if (wcache_etcd_current_revision(S, &r) != WCACHE_OK) {
            fprintf(stderr, "bench_etcd: current revision failed\n");
            exit(1);
        }
    return NULL;
}

static int cmd_currev(int maxt)
{
    source_up(0);
    wait_synced(600);
    for (int t = 1; t <= maxt && t <= 256; t *= 2) {
        pthread_t th[256];
        wcache_etcd_stats a = {.size = sizeof a}, b = {.size = sizeof b};
        wcache_etcd_stat(S, &a);
        double t0 = now_s();
        for (int i = 0; i < t; i++)
            if (pthread_create(&th[i], NULL, currev_thread, NULL) != 0)
                exit(1);
        for (int i = 0; i < t; i++)
            pthread_join(th[i], NULL);
        double dt = now_s() - t0;
        wcache_etcd_stat(S, &b);
        printf("currev_calls_per_s_t%d %.0f calls/s\n", t, (double)t * (double)N / dt);
        printf("currev_ranges_per_call_t%d %.3f ranges\n", t,
               (double)(b.revision_probes - a.revision_probes) /
                   (double)(b.revision_reads - a.revision_reads));
    }
    source_down();
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: bench_etcd load|sync|ingest|currev ENDPOINT N [...]\n");
        return 2;
    }
    EP = argv[2];
    N = strtoull(argv[3], NULL, 10);
    podgen_init(&G, 42);
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = 2;
    if (strcmp(argv[1], "load") == 0)
        rc = cmd_load();
    else if (strcmp(argv[1], "sync") == 0)
        rc = cmd_sync(argc > 4 ? (uint32_t)atoi(argv[4]) : 0);
    else if (strcmp(argv[1], "ingest") == 0 && argc > 5)
        rc = cmd_ingest(atof(argv[4]), atoi(argv[5]));
    else if (strcmp(argv[1], "currev") == 0)
        rc = cmd_currev(argc > 4 ? atoi(argv[4]) : 16);
    curl_global_cleanup();
    return rc;
}
