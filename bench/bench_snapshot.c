/*
 * bench_snapshot.c - snapshot write and restore on N pod objects from
 * podgen.h, beside `zstd -1 -T0` on the same uncompressed bytes.
 *
 *   bench_snapshot [N] [DIR]        default N 100000, DIR $TMPDIR or /tmp
 *
 * Prints one line per figure:  metric<TAB>N<TAB>value<TAB>unit
 *   stream_mbps_wW     the same bytes to a sink that drops them (no file I/O,
 *                      no fsync): listing + encoding + compression alone
 *   write_mbps_wW      snapshot write of the whole cache with W compression
 *                      workers, MB/s of key+value bytes (the "raw
 *                      object bytes"), fsync and rename included;
 *                      _paced: while one thread ingests at a steady
 *                      BENCH_SNAP_RATE events/s (default 100000);
 *                      _ingest_max: while one thread ingests flat out
 *   *_cpu_wW*          the writer's CPU seconds per GB of key+value bytes
 *                      (the process's CPU time less the ingest thread's)
 *   *_sync_s_wW*       of the write's wall time, the fsync/rename/dir fsync
 *   ingest_wW*         events/s the ingest thread applied during the write;
 *                      ingest_cpu_*: its CPU microseconds per event (the
 *                      library's put: the events are made beforehand, and
 *                      feed_gen_us says what podgen took per event);
 *                      ingest_cpu_cold: the feed during the first write
 *                      with ingest (a warm-up to a null sink, whose pinned
 *                      view makes the slab take fresh pages from the
 *                      kernel; later writes reuse what compaction freed);
 *                      ingest_lag_*: the most the
 *                      paced feed fell behind its schedule; ingest_kept_*:
 *                      1 when it applied >= 99% of its rate
 *   ingest_alone       the feed flat out for a second with no write beside
 *                      it: events/s, and ingest_cpu_alone its CPU per event
 *   zstd_mbps          zstd -1 -T0 over the uncompressed record stream, MB/s
 *                      of the same key+value bytes (our practical limit);
 *                      zstd_cpu_s_per_gb: its CPU seconds per GB of them
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
 * /registry/pods/ are replaced.  BENCH_SNAP_WRITE_ONLY=1 stops after the
 * writes (for A/B runs of the writer); BENCH_SNAP_ONLY=paced|stream runs
 * that one case four times (profiles, A/B runs); BENCH_SNAP_BLOCK sets
 * block_bytes; BENCH_SNAP_RETAIN the revisions the cache keeps (default
 * 100000: 1 s of the paced feed).
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
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
    /* A window of revisions, not of time, so that the history is as long
     * on a slow run as on a fast one.  Not both bounds 0: that keeps every
     * version forever, and each event would then take fresh memory from the
     * kernel (page faults, zeroing) as no long-running cache does. */
    const char *rr = getenv("BENCH_SNAP_RETAIN");
    check(wcache_cache_set_param(c, WCACHE_P_RETAIN_SECONDS, 0), "param", NULL);
    check(wcache_cache_set_param(c, WCACHE_P_RETAIN_REVISIONS,
                                 rr && *rr ? strtoll(rr, NULL, 10) : 100000),
          "param", NULL);
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

static int null_sink(const void *buf, size_t len, void *ud)
{
    (void)buf;
    *(uint64_t *)ud += len;
    return WCACHE_OK;
}

/* The feed's events, generated before any clock starts: a deployment's
 * events arrive from a socket already made, so only the library's ingest
 * is measured, not podgen.  FEED_EVENTS distinct random pods (about 300 MB)
 * outlast a paced write at 100,000 events/s; a longer feed cycles through
 * them again at later revisions. */
#define FEED_EVENTS (1u << 18)

typedef struct events {
    char *buf;        /* key then value of each event, back to back */
    size_t *off;      /* FEED_EVENTS + 1 offsets into buf */
    uint32_t *klen;   /* key length of each event */
    double gen_us;    /* podgen's CPU microseconds per event, for the record */
} events;

static double cpu_now(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Updates of random pods (generation 2).  The resourceVersion inside a pod
 * is the event's index, not the revision the cache will give it: the cache
 * never reads values, so that costs nothing and changes nothing. */
static void events_make(events *e, const podgen *g, uint64_t n)
{
    podgen_rng r = {42};
    size_t cap = (size_t)FEED_EVENTS * (PODGEN_KEY_MAX + PODGEN_POD_MAX), at = 0;
    e->buf = malloc(cap);
    e->off = malloc(((size_t)FEED_EVENTS + 1) * sizeof *e->off);
    e->klen = malloc((size_t)FEED_EVENTS * sizeof *e->klen);
    if (!e->buf || !e->off || !e->klen) {
        fprintf(stderr, "bench_snapshot: out of memory for the feed's events\n");
        exit(1);
    }
    double c0 = cpu_now(CLOCK_THREAD_CPUTIME_ID);
    for (uint32_t j = 0; j < FEED_EVENTS; j++) {
        uint64_t i = podgen_next(&r) % n;
        e->off[j] = at;
        e->klen[j] = (uint32_t)podgen_key(g, i, e->buf + at, PODGEN_KEY_MAX);
        at += e->klen[j];
        at += podgen_pod(g, i, 2, (int64_t)j + 1, e->buf + at, PODGEN_POD_MAX);
    }
    e->off[FEED_EVENTS] = at;
    e->gen_us = (cpu_now(CLOCK_THREAD_CPUTIME_ID) - c0) * 1e6 / FEED_EVENTS;
}

static void events_free(events *e)
{
    free(e->buf);
    free(e->off);
    free(e->klen);
}

typedef struct feeder {
    wcache_cache *c;
    const events *ev;
    double rate; /* events/s; 0: flat out */
    atomic_int stop, measuring;
    atomic_ullong puts;
    double max_lag; /* seconds the paced feed fell behind its schedule */
} feeder;

/* The one ingest thread: applies the pre-made events one put each, as a
 * source does, until told to stop, flat out or at f->rate events/s.  A
 * paced feed sleeps until its next event is due and then applies every
 * event that is due, the way a source drains what its socket holds after a
 * late wakeup; its lag is how far it fell behind. */
static void *feed(void *arg)
{
    feeder *f = arg;
    const events *e = f->ev;
    prctl(PR_SET_NAME, "feed"); /* for perf and top */
    int64_t rev = wcache_cache_revision(f->c);
    double t0 = now();
    uint64_t done = 0;
    while (!atomic_load(&f->stop)) {
        if (f->rate > 0) {
            double due = t0 + (double)done / f->rate, t = now();
            if (t < due) {
                struct timespec ts = {0, (long)((due - t) * 1e9)};
                nanosleep(&ts, NULL);
                continue;
            }
            if (atomic_load(&f->measuring) && t - due > f->max_lag)
                f->max_lag = t - due;
        }
        uint32_t j = (uint32_t)(done % FEED_EVENTS);
        const char *k = e->buf + e->off[j];
        size_t kl = e->klen[j], vl = e->off[j + 1] - e->off[j] - kl;
        check(wcache_ingest_put(f->c, k, kl, k + kl, vl, ++rev), "put", NULL);
        atomic_store(&f->puts, ++done);
    }
    return NULL;
}

/* What one write measured. */
typedef struct run {
    double mbps;       /* key+value MB per wall second */
    double cpu_per_gb; /* the writer's CPU seconds (the ingest thread's left
                          out) per GB of key+value bytes */
    double ingest;     /* events/s applied during the write */
    double lag_ms;     /* paced feed: the most it fell behind, ms */
    double ingest_us;  /* the ingest thread's CPU microseconds per event */
    double sync_s;     /* the file's fsync, rename and directory fsync */
} run;

/* Marks when the durable part of a write (fsync onwards) begins. */
static int on_step(int step, uint64_t bytes, uint64_t objects, uint64_t total, void *ud)
{
    (void)bytes, (void)objects, (void)total;
    if (step == WCACHE_SNAP_STEP_SYNC)
        *(double *)ud = now();
    return 0;
}

/* A write of the whole cache to path (or to a sink that drops the bytes
 * when path is NULL) with W workers; ingest < 0: none, 0: a feed thread
 * flat out, > 0: a feed at that many events/s. */
static run write_snap(wcache_cache *c, const char *path, int workers, double ingest,
                      const events *ev, wcache_snapshot_info *in)
{
    char eb[256] = "";
    uint64_t sunk = 0;
    wcache_snapshot_write_opts o = {.size = sizeof o};
    o.workers = workers;
    const char *bb = getenv("BENCH_SNAP_BLOCK");
    o.block_bytes = bb && *bb ? (uint32_t)strtoul(bb, NULL, 10) : 0;
    o.source_id = "bench:/registry/pods/";
    o.source_id_len = strlen(o.source_id);
    o.errbuf = eb;
    o.errbuf_len = sizeof eb;
    double sync_at = 0;
    o.progress = on_step;
    o.userdata = &sync_at;
    feeder f = {.c = c, .ev = ev, .rate = ingest > 0 ? ingest : 0};
    pthread_t th;
    clockid_t fcpu = CLOCK_PROCESS_CPUTIME_ID;
    if (ingest >= 0) {
        pthread_create(&th, NULL, feed, &f);
        pthread_getcpuclockid(th, &fcpu);
        /* Let the feed reach its pace before the clock starts. */
        double t = now();
        while (atomic_load(&f.puts) < 1000 && now() - t < 5) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    in->size = sizeof *in;
    double f0 = ingest >= 0 ? cpu_now(fcpu) : 0, p0 = cpu_now(CLOCK_PROCESS_CPUTIME_ID);
    uint64_t puts0 = atomic_load(&f.puts);
    atomic_store(&f.measuring, 1);
    double t = now();
    if (path)
        check(wcache_snapshot_write(c, path, &o, in), "write", eb);
    else
        check(wcache_snapshot_write_to(c, null_sink, &sunk, &o, in), "write_to", eb);
    double end = now();
    t = end - t;
    atomic_store(&f.measuring, 0);
    double puts = (double)(atomic_load(&f.puts) - puts0);
    double fcs = ingest >= 0 ? cpu_now(fcpu) - f0 : 0;
    double pcs = cpu_now(CLOCK_PROCESS_CPUTIME_ID) - p0;
    if (ingest >= 0) {
        atomic_store(&f.stop, 1);
        pthread_join(th, NULL);
    }
    return (run){.mbps = (double)in->kv_bytes / 1e6 / t,
                 .cpu_per_gb = (pcs - fcs) / ((double)in->kv_bytes / 1e9),
                 .ingest = puts / t,
                 .lag_ms = f.max_lag * 1e3,
                 .ingest_us = puts > 0 ? fcs * 1e6 / puts : 0,
                 .sync_s = sync_at > 0 ? end - sync_at : 0};
}

/* One write's lines: kind_mbps_wW<tag>, its writer CPU per GB and, with a
 * feed thread, the events/s applied meanwhile; a paced feed also prints
 * how far it fell behind and whether it kept within 1% of its rate. */
static void report(const char *kind, int w, const char *tag, run r, double rate,
                   unsigned long long n)
{
    printf("%s_mbps_w%d%s\t%llu\t%.0f\tMB/s\n", kind, w, tag, n, r.mbps);
    printf("%s_cpu_w%d%s\t%llu\t%.3f\tcpu-s/GB\n", kind, w, tag, n, r.cpu_per_gb);
    if (r.sync_s > 0)
        printf("%s_sync_s_w%d%s\t%llu\t%.3f\ts\n", kind, w, tag, n, r.sync_s);
    if (rate < 0)
        return;
    printf("ingest_w%d%s\t%llu\t%.0f\tevents/s\n", w, tag, n, r.ingest);
    printf("ingest_cpu_w%d%s\t%llu\t%.2f\tcpu-us/event\n", w, tag, n, r.ingest_us);
    if (rate > 0) {
        printf("ingest_lag_w%d%s\t%llu\t%.1f\tms\n", w, tag, n, r.lag_ms);
        printf("ingest_kept_w%d%s\t%llu\t%d\tbool\n", w, tag, n, r.ingest >= 0.99 * rate);
    }
}

/* The feed flat out for about a second with no write beside it: what an
 * event costs the ingest thread alone (pod generation included). */
static void ingest_alone(wcache_cache *c, const events *ev, unsigned long long N)
{
    feeder f = {.c = c, .ev = ev};
    pthread_t th;
    clockid_t fcpu;
    pthread_create(&th, NULL, feed, &f);
    pthread_getcpuclockid(th, &fcpu);
    double c0 = cpu_now(fcpu), t = now();
    uint64_t p0 = atomic_load(&f.puts);
    struct timespec ts = {1, 0};
    nanosleep(&ts, NULL);
    double puts = (double)(atomic_load(&f.puts) - p0), cs = cpu_now(fcpu) - c0;
    t = now() - t;
    atomic_store(&f.stop, 1);
    pthread_join(th, NULL);
    printf("ingest_alone\t%llu\t%.0f\tevents/s\n", N, puts / t);
    printf("ingest_cpu_alone\t%llu\t%.2f\tcpu-us/event\n", N, puts > 0 ? cs * 1e6 / puts : 0);
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

static double child_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_CHILDREN, &ru);
    return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
           (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

/* zstd -1 -T0 over the raw stream: MB/s of kv_bytes, and its CPU seconds
 * per GB of them in *cpu_per_gb (user + system of zstd and its shell). */
static double zstd_mbps(const char *raw, uint64_t kv_bytes, double *cpu_per_gb)
{
    char cmd[2048];
    /* Warm the page cache first so both sides read from memory. */
    snprintf(cmd, sizeof cmd, "cat '%s' > /dev/null && zstd -1 -T0 -q -c '%s' > /dev/null", raw,
             raw);
    if (system(cmd) != 0)
        return 0;
    snprintf(cmd, sizeof cmd, "zstd -1 -T0 -q -c '%s' > /dev/null", raw);
    double c0 = child_cpu(), t = now();
    if (system(cmd) != 0)
        return 0;
    t = now() - t;
    *cpu_per_gb = (child_cpu() - c0) / ((double)kv_bytes / 1e9);
    return (double)kv_bytes / 1e6 / t;
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
    const char *rs_env = getenv("BENCH_SNAP_RATE");
    double rate = rs_env && *rs_env ? strtod(rs_env, NULL) : 100000;
    printf("ingest_rate_target\t%llu\t%.0f\tevents/s\n", N, rate);
    events ev;
    events_make(&ev, &g, n);
    printf("feed_gen_us\t%llu\t%.2f\tcpu-us/event\n", N, ev.gen_us);
    ingest_alone(c, &ev, N);
    /* The first write with ingest beside it takes fresh memory for the
     * versions its pinned view holds back; later ones reuse what the
     * compaction after the previous write freed, as in a cache that writes
     * snapshots periodically.  That first write, to a null sink, is the
     * warm-up; its feed's cost is printed apart. */
    run cold = write_snap(c, NULL, 2, rate, &ev, &in);
    printf("ingest_cpu_cold\t%llu\t%.2f\tcpu-us/event\n", N, cold.ingest_us);
    /* For profiles and A/B runs of one case: "paced" is case (a) four
     * times, "stream" the no-worker write to a null sink (the writer's CPU
     * per byte, no disk) four times. */
    const char *only = getenv("BENCH_SNAP_ONLY");
    if (only && *only) {
        int paced = strcmp(only, "paced") == 0;
        for (int k = 0; k < 4; k++)
            report(paced ? "write" : "stream", paced ? 2 : 0, paced ? "_paced" : "",
                   write_snap(c, paced ? path : NULL, paced ? 2 : 0, paced ? rate : -1, &ev, &in),
                   paced ? rate : -1, N);
        printf("ratio\t%llu\t%.3f\tx\n", N, (double)in.raw_bytes / (double)in.file_bytes);
        unlink(path);
        return 0;
    }
    for (int w = 0; w <= 2; w += 2)
        report("stream", w, "", write_snap(c, NULL, w, -1, &ev, &in), -1, N);
    for (int w = 0; w <= 2; w++)
        report("write", w, "", write_snap(c, path, w, -1, &ev, &in), -1, N);
    /* (a) ingest at a steady rate, as a source delivers it; (b) a feed
     * thread flat out, which takes one of the two cores for itself. */
    for (int w = 2; w >= 1; w--)
        report("write", w, "_paced", write_snap(c, path, w, rate, &ev, &in), rate, N);
    for (int w = 2; w >= 1; w--)
        report("write", w, "_ingest_max", write_snap(c, path, w, 0, &ev, &in), 0, N);
    printf("kv_bytes\t%llu\t%llu\tbytes\n", N, (unsigned long long)in.kv_bytes);
    printf("ratio\t%llu\t%.2f\tx\n", N, (double)in.raw_bytes / (double)in.file_bytes);
    events_free(&ev);
    const char *wo = getenv("BENCH_SNAP_WRITE_ONLY");
    if (wo && *wo == '1') { /* A/B runs of the writer alone */
        wcache_cache_close(c);
        unlink(path);
        return 0;
    }
    wcache_cache_close(c);
    dump_raw(path, raw);
    double zcpu = 0;
    printf("zstd_mbps\t%llu\t%.0f\tMB/s\n", N, zstd_mbps(raw, in.kv_bytes, &zcpu));
    printf("zstd_cpu_s_per_gb\t%llu\t%.3f\tcpu-s/GB\n", N, zcpu);
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
