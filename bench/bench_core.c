/*
 * bench_core - the core workload of libwatchcache: load, update, GET, LIST
 * and memory, on N pod objects from podgen.h.
 *
 * Usage: bench_core [-u UPDATES] [-t SECONDS] [-s SEED] [-p PHASES] [N]
 *   N        objects (default 1000000)
 *   UPDATES  update events (default max(N, 50000))
 *   SECONDS  duration of each GET and LIST measurement, best of 3 (default 0.5)
 *   PHASES   letters of the phases to run after the load by puts, for
 *            profiling one at a time: u(pdate, one put per call)
 *            U(pdate, UPDATE_BATCH events per wcache_ingest_changes call)
 *            m(emory) g(et) l(ist) b(ulk load); default "uUmglb"
 *
 * Output: one line per metric on stdout, "metric<TAB>N<TAB>value<TAB>unit";
 * bench/peers/go-btree prints the same metrics, so bench/run.sh can put
 * the two side by side.  Notes go to stderr.
 *
 * Method (the same on both sides):
 *  - Events are generated in chunks of CHUNK ahead of a timed run of the
 *    chunk, so the rates measure the cache, not the JSON generator.
 *  - The cache keeps RETAIN revisions readable (RETAIN_SECONDS 0: no age
 *    bound) with automatic compaction, while loading and updating.
 *  - Peak RSS is read right after the updates, before the GET and LIST
 *    phases allocate their key and result arrays, so it is the cache plus
 *    two chunk buffers (about 2 MiB) plus the program; raw is the key and
 *    value bytes live at the latest revision.
 *  - wcache_ingest_load runs last, into a fresh cache, from a batch of all
 *    N objects sorted by key; only the load call is timed.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "podgen.h"
#include "watchcache.h"

#define BENCH_NAME "bench_core"
#include "bench.h"

#define RETAIN 10000
#define CHUNK 1024
#define SEED_WORKLOAD 0x5eed0f10adull /* the key sequence; same as the Go peer */
#define UPDATE_BATCH 64               /* events per wcache_ingest_changes() call */
#define GET_BATCH 4096
#define GET_MANY 64 /* keys per wcache_view_get_many() call */
#define REPEATS 3   /* GET and LIST measurements keep the best of this many */

/* BENCH_CLOCK=cpu: each thread's CPU time instead of wall time, for A/B
 * comparisons on a shared machine (time a thread spends descheduled does
 * not count; cache interference still does).  GET rates are then the sum
 * of each thread's GETs per second of its CPU time. */
static clockid_t bench_clock = CLOCK_MONOTONIC;

static double now(void)
{
    struct timespec ts;
    clock_gettime(bench_clock, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* GET runs several threads: always wall time. */
static double wall(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- chunks of pre-generated events ---- */

typedef struct chunk {
    char *arena;
    size_t koff[CHUNK], klen[CHUNK], voff[CHUNK], vlen[CHUNK];
    int64_t rev[CHUNK];
    size_t count;
} chunk;

static void chunk_init(chunk *ch)
{
    ch->arena = xmalloc((size_t)CHUNK * (PODGEN_KEY_MAX + PODGEN_POD_MAX));
    ch->count = 0;
}

/* Event k: version gen[k] of pod idx[k] at revision rev[k]. */
static void chunk_fill(chunk *ch, const podgen *g, const uint64_t *idx, const uint64_t *gen,
                       const int64_t *rev, size_t m)
{
    size_t off = 0;
    for (size_t k = 0; k < m; k++) {
        ch->koff[k] = off;
        ch->klen[k] = podgen_key(g, idx[k], ch->arena + off, PODGEN_KEY_MAX);
        off += ch->klen[k];
        ch->voff[k] = off;
        ch->vlen[k] = podgen_pod(g, idx[k], gen[k], rev[k], ch->arena + off, PODGEN_POD_MAX);
        off += ch->vlen[k];
        ch->rev[k] = rev[k];
    }
    ch->count = m;
}

/* Apply the chunk, one put per revision; returns the seconds it took. */
static double chunk_apply(const chunk *ch, wcache_cache *c)
{
    double t0 = now();
    for (size_t k = 0; k < ch->count; k++)
        check(wcache_ingest_put(c, ch->arena + ch->koff[k], ch->klen[k],
                                ch->arena + ch->voff[k], ch->vlen[k], ch->rev[k]),
              "ingest_put");
    return now() - t0;
}

/* Apply the chunk in calls of wcache_ingest_changes() of `batch` events
 * each, one revision per event; returns the seconds it took. */
static double chunk_apply_batched(const chunk *ch, wcache_cache *c, size_t batch)
{
    static wcache_change x[CHUNK];
    for (size_t k = 0; k < ch->count; k++)
        x[k] = (wcache_change){WCACHE_CHANGE_PUT, ch->arena + ch->koff[k],
                               ch->klen[k],       ch->arena + ch->voff[k],
                               ch->vlen[k],       ch->rev[k]};
    double t0 = now();
    for (size_t k = 0; k < ch->count; k += batch) {
        size_t m = ch->count - k < batch ? ch->count - k : batch, done;
        check(wcache_ingest_changes(c, x + k, m, &done), "ingest_changes");
    }
    return now() - t0;
}

/* ---- phases ---- */

static wcache_cache *open_cache(void)
{
    wcache_cache *c;
    check(wcache_cache_create(&c, NULL), "cache_create");
    check(wcache_cache_set_param(c, WCACHE_P_RETAIN_REVISIONS, RETAIN), "retain revisions");
    check(wcache_cache_set_param(c, WCACHE_P_RETAIN_SECONDS, 0), "retain seconds");
    check(wcache_cache_set_param(c, WCACHE_P_AUTO_COMPACT, 1), "auto compact");
    check(wcache_cache_open(c), "cache_open");
    return c;
}

/* N creates in index order (keys in random order), revisions 1..N. */
static double load_puts(wcache_cache *c, const podgen *g, uint64_t n, chunk *ch)
{
    uint64_t idx[CHUNK], gen[CHUNK];
    int64_t rev[CHUNK];
    double busy = 0;
    for (uint64_t base = 0; base < n; base += CHUNK) {
        size_t m = n - base < CHUNK ? (size_t)(n - base) : CHUNK;
        for (size_t k = 0; k < m; k++)
            idx[k] = base + k, gen[k] = 1, rev[k] = (int64_t)(base + k + 1);
        chunk_fill(ch, g, idx, gen, rev, m);
        busy += chunk_apply(ch, c);
    }
    return (double)n / busy;
}

/* u updates of uniformly random keys, one event per revision; batch 0:
 * one wcache_ingest_put() per event, else wcache_ingest_changes() of batch
 * events per call.  seed: the key sequence. */
static double updates(wcache_cache *c, const podgen *g, uint64_t n, uint64_t u, chunk *ch,
                      size_t batch, uint64_t seed)
{
    podgen_rng r = {seed};
    uint64_t idx[CHUNK], gen[CHUNK];
    int64_t rev[CHUNK];
    double busy = 0;
    for (uint64_t done = 0; done < u; done += CHUNK) {
        size_t m = u - done < CHUNK ? (size_t)(u - done) : CHUNK;
        int64_t cur = wcache_cache_revision(c);
        for (size_t k = 0; k < m; k++) {
            rev[k] = cur + (int64_t)k + 1;
            idx[k] = podgen_next(&r) % n, gen[k] = (uint64_t)rev[k];
        }
        chunk_fill(ch, g, idx, gen, rev, m);
        busy += batch ? chunk_apply_batched(ch, c, batch) : chunk_apply(ch, c);
    }
    return (double)u / busy;
}

static double peak_rss(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss * 1024.0;
}

/* List the whole cache at the view's revision into items (cap > N). */
static size_t list_all(wcache_view *v, wcache_kv *items, size_t cap)
{
    wcache_list_opts opts = {.size = sizeof opts};
    wcache_list_result res = {.size = sizeof res};
    check(wcache_view_list(v, &opts, items, cap, &res), "view_list");
    if (res.more) {
        fprintf(stderr, "bench_core: list of the whole cache did not fit\n");
        exit(1);
    }
    return res.count;
}

/* LIST repeatedly for secs seconds (at least 3 times); ns per item. */
static double list_bench(wcache_cache *c, int64_t rev, wcache_kv *items, size_t cap,
                         double secs)
{
    wcache_view *v;
    size_t total = 0, runs = 0;
    double t0;
    check(wcache_view_create(c, &v), "view_create");
    check(wcache_view_begin(v, rev), "view_begin (list)");
    t0 = now();
    while (runs < 3 || now() - t0 < secs) {
        size_t got = list_all(v, items, cap);
        if (got != n_objects) {
            fprintf(stderr, "bench_core: list returned %zu of %llu keys\n", got,
                    (unsigned long long)n_objects);
            exit(1);
        }
        total += got, runs++;
    }
    t0 = now() - t0;
    wcache_view_free(v);
    return t0 * 1e9 / (double)total;
}

/* All N keys, for GETs and the sorted load. */
typedef struct keyset {
    char *arena;
    size_t *off, *len;
} keyset;

static void keyset_make(keyset *ks, const podgen *g, uint64_t n)
{
    size_t used = 0;
    ks->arena = xmalloc((size_t)n * PODGEN_KEY_MAX);
    ks->off = xmalloc((size_t)n * sizeof *ks->off);
    ks->len = xmalloc((size_t)n * sizeof *ks->len);
    for (uint64_t i = 0; i < n; i++) {
        ks->off[i] = used;
        ks->len[i] = podgen_key(g, i, ks->arena + used, PODGEN_KEY_MAX);
        used += ks->len[i];
    }
}

static void keyset_free(keyset *ks)
{
    free(ks->arena), free(ks->off), free(ks->len);
}

/*
 * A stream of GET requests: uniformly random keys, copied one after the
 * other into one buffer before the clock starts, as a server holds the
 * keys of the requests it has just parsed.  Walking it is sequential, so
 * the measurement is the cache's work per GET and not the harness's own
 * random reads of a key table (which cost about two misses per GET that
 * no caller pays: its key is in hand).  One stream per thread, reused in a
 * loop; STREAM_KEYS random keys make the reuse no help to the cache.
 */
#define STREAM_KEYS (1u << 20)

typedef struct reqstream {
    char *buf;
    uint16_t *len;
    size_t bytes;
} reqstream;

static void reqstream_make(reqstream *rs, const keyset *ks, uint64_t seed)
{
    podgen_rng r = {seed};
    size_t used = 0;
    rs->buf = xmalloc((size_t)STREAM_KEYS * PODGEN_KEY_MAX);
    rs->len = xmalloc((size_t)STREAM_KEYS * sizeof *rs->len);
    for (size_t q = 0; q < STREAM_KEYS; q++) {
        uint64_t i = podgen_next(&r) % n_objects;
        memcpy(rs->buf + used, ks->arena + ks->off[i], ks->len[i]);
        rs->len[q] = (uint16_t)ks->len[i];
        used += ks->len[i];
    }
    rs->bytes = used;
}

static void reqstream_free(reqstream *rs)
{
    free(rs->buf), free(rs->len);
}

typedef struct get_job {
    wcache_cache *c;
    const reqstream *rs;
    int pinned;  /* 1: one view kept open; 0: begin and end per GET */
    size_t many; /* 0: wcache_view_get; else keys per wcache_view_get_many */
    double secs;
    pthread_barrier_t *start;
    uint64_t gets;
    double busy; /* the thread's own time for them (CPU time with BENCH_CLOCK=cpu) */
} get_job;

static void *get_thread(void *arg)
{
    get_job *j = arg;
    const reqstream *rs = j->rs;
    wcache_view *v;
    wcache_kv kv, kvs[GET_MANY];
    wcache_code codes[GET_MANY];
    const void *keys[GET_MANY];
    size_t lens[GET_MANY];
    uint64_t sum = 0;
    size_t q = 0, off = 0; /* the next request and its key's offset */
    double t0;
    check(wcache_view_create(j->c, &v), "view_create");
    if (j->pinned)
        check(wcache_view_begin(v, WCACHE_REV_LATEST), "view_begin");
    pthread_barrier_wait(j->start);
    t0 = wall();
    double c0 = now();
    while (wall() - t0 < j->secs) {
        for (int k = 0; k < GET_BATCH && j->many; k += (int)j->many) {
            for (size_t m = 0; m < j->many; m++) {
                keys[m] = rs->buf + off;
                lens[m] = rs->len[q];
                off += rs->len[q];
                if (++q == STREAM_KEYS)
                    q = 0, off = 0;
            }
            check(wcache_view_get_many(v, keys, lens, j->many, kvs, codes), "view_get_many");
            for (size_t m = 0; m < j->many; m++) {
                check(codes[m], "view_get_many (key)");
                sum += kvs[m].value_len;
            }
        }
        for (int k = 0; k < GET_BATCH && !j->many; k++) {
            if (!j->pinned)
                check(wcache_view_begin(v, WCACHE_REV_LATEST), "view_begin");
            check(wcache_view_get(v, rs->buf + off, rs->len[q], &kv), "view_get");
            sum += kv.value_len;
            if (!j->pinned)
                wcache_view_end(v);
            off += rs->len[q];
            if (++q == STREAM_KEYS)
                q = 0, off = 0;
        }
        j->gets += GET_BATCH;
    }
    j->busy = now() - c0;
    wcache_view_free(v);
    if (sum == 0)
        check(WCACHE_ENOTFOUND, "GET read no bytes");
    return NULL;
}

/* GETs of uniformly random keys on `threads` threads; total GETs/s. */
static double get_bench(wcache_cache *c, const reqstream *rs, unsigned threads, int pinned,
                        size_t many, double secs)
{
    pthread_t tid[2];
    get_job job[2];
    pthread_barrier_t start;
    uint64_t total = 0;
    double t0;
    pthread_barrier_init(&start, NULL, threads + 1);
    for (unsigned t = 0; t < threads; t++) {
        job[t] = (get_job){c, &rs[t], pinned, many, secs, &start, 0, 0};
        if (pthread_create(&tid[t], NULL, get_thread, &job[t]) != 0) {
            fprintf(stderr, "bench_core: pthread_create failed\n");
            exit(1);
        }
    }
    pthread_barrier_wait(&start);
    t0 = wall();
    for (unsigned t = 0; t < threads; t++) {
        pthread_join(tid[t], NULL);
        total += job[t].gets;
    }
    t0 = wall() - t0;
    pthread_barrier_destroy(&start);
    if (bench_clock != CLOCK_MONOTONIC) { /* the sum of each thread's rate */
        double r = 0;
        for (unsigned t = 0; t < threads; t++)
            r += (double)job[t].gets / job[t].busy;
        return r;
    }
    return (double)total / t0;
}

/* Best of REPEATS: the machine may be shared, and interference only ever
 * makes a run slower. */
static double best_get(wcache_cache *c, const reqstream *rs, unsigned threads, int pinned,
                       size_t many, double secs)
{
    double best = 0;
    for (int k = 0; k < REPEATS; k++) {
        double r = get_bench(c, rs, threads, pinned, many, secs);
        best = r > best ? r : best;
    }
    return best;
}

static double best_list(wcache_cache *c, int64_t rev, wcache_kv *items, size_t cap,
                        double secs)
{
    double best = 0;
    for (int k = 0; k < REPEATS; k++) {
        double r = list_bench(c, rev, items, cap, secs);
        best = k == 0 || r < best ? r : best;
    }
    return best;
}

static const keyset *sort_ks; /* qsort has no context argument */

static int key_cmp(const void *a, const void *b)
{
    size_t i = *(const size_t *)a, j = *(const size_t *)b;
    size_t li = sort_ks->len[i], lj = sort_ks->len[j];
    int d = memcmp(sort_ks->arena + sort_ks->off[i], sort_ks->arena + sort_ks->off[j],
                   li < lj ? li : lj);
    return d ? d : (li > lj) - (li < lj);
}

/* wcache_ingest_load of N objects sorted by key into a fresh cache. */
static double load_bulk(const podgen *g, const keyset *ks, uint64_t n)
{
    wcache_cache *c = open_cache();
    wcache_batch *b;
    size_t *order = xmalloc((size_t)n * sizeof *order);
    char pod[PODGEN_POD_MAX];
    double t;
    for (uint64_t i = 0; i < n; i++)
        order[i] = (size_t)i;
    sort_ks = ks;
    qsort(order, (size_t)n, sizeof *order, key_cmp);
    check(wcache_batch_create(c, &b), "batch_create");
    for (uint64_t k = 0; k < n; k++) {
        size_t i = order[k];
        int64_t rev = (int64_t)i + 1;
        size_t len = podgen_pod(g, i, 1, rev, pod, sizeof pod);
        check(wcache_batch_put_meta(b, ks->arena + ks->off[i], ks->len[i], pod, len, rev, rev,
                                    1),
              "batch_put_meta");
    }
    t = now();
    check(wcache_ingest_load(c, b, (int64_t)n), "ingest_load");
    t = now() - t;
    wcache_batch_free(b);
    free(order);
    wcache_cache_close(c);
    return (double)n / t;
}

static void note_stat(const wcache_cache *c)
{
    wcache_stat st = {.size = sizeof st};
    check(wcache_cache_stat(c, &st), "cache_stat");
    fprintf(stderr,
            "bench_core: rev %lld compacted %lld objects %llu versions %llu "
            "history %llu compactions %llu\n",
            (long long)st.revision, (long long)st.compacted_revision,
            (unsigned long long)st.objects, (unsigned long long)st.versions,
            (unsigned long long)st.history_events, (unsigned long long)st.compactions);
}

static uint64_t parse_u64(const char *s, const char *what)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end) {
        fprintf(stderr, "bench_core: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    uint64_t seed = 42, u = 0;
    double secs = 0.5, rss, raw = 0;
    podgen g;
    chunk ch;
    keyset ks;
    wcache_cache *c;
    wcache_view *v;
    wcache_kv *items;
    const char *phases = "uUmglb";
    int opt;

    n_objects = 1000000;
    if (getenv("BENCH_CLOCK") && !strcmp(getenv("BENCH_CLOCK"), "cpu"))
        bench_clock = CLOCK_THREAD_CPUTIME_ID;
    while ((opt = getopt(argc, argv, "u:t:s:p:")) != -1) {
        if (opt == 'u')
            u = parse_u64(optarg, "update count");
        else if (opt == 't')
            secs = strtod(optarg, NULL);
        else if (opt == 's')
            seed = parse_u64(optarg, "seed");
        else if (opt == 'p')
            phases = optarg;
        else {
            fprintf(stderr, "usage: %s [-u UPDATES] [-t SECONDS] [-s SEED] [-p PHASES] [N]\n",
                    argv[0]);
            return 2;
        }
    }
    if (optind < argc)
        n_objects = parse_u64(argv[optind], "N");
    if (n_objects < 1000 || n_objects > PODGEN_MAX_PODS) {
        fprintf(stderr, "bench_core: N must be in [1000, %u]\n", PODGEN_MAX_PODS);
        return 2;
    }
    if (u == 0)
        u = n_objects > 50000 ? n_objects : 50000;
    podgen_init(&g, seed);
    chunk_init(&ch);

    c = open_cache();
    metric("load_put_rate", load_puts(c, &g, n_objects, &ch), "events/s");
    if (strchr(phases, 'u'))
        metric("update_rate", updates(c, &g, n_objects, u, &ch, 0, SEED_WORKLOAD), "events/s");
    if (strchr(phases, 'U'))
        metric("update_rate_batch64",
               updates(c, &g, n_objects, u, &ch, UPDATE_BATCH, SEED_WORKLOAD + 1), "events/s");
    rss = peak_rss();
    note_stat(c);

    items = xmalloc(((size_t)n_objects + 1) * sizeof *items);
    if (strchr(phases, 'm')) {
        check(wcache_view_create(c, &v), "view_create");
        check(wcache_view_begin(v, WCACHE_REV_LATEST), "view_begin");
        for (size_t k = 0, got = list_all(v, items, n_objects + 1); k < got; k++)
            raw += (double)(items[k].key_len + items[k].value_len);
        wcache_view_free(v);
        metric("rss_peak", rss, "bytes");
        metric("raw_bytes", raw, "bytes");
        metric("rss_per_object", rss / (double)n_objects, "bytes");
        metric("rss_over_raw", rss / raw, "ratio");
    }

    keyset_make(&ks, &g, n_objects);
    if (strchr(phases, 'g')) {
        reqstream rs[2];
        for (unsigned t = 0; t < 2; t++)
            reqstream_make(&rs[t], &ks, SEED_WORKLOAD + t * 7919u);
        metric("get_1t_view_open", best_get(c, rs, 1, 1, 0, secs), "gets/s");
        metric("get_1t_view_per_get", best_get(c, rs, 1, 0, 0, secs), "gets/s");
        metric("get_2t_view_open", best_get(c, rs, 2, 1, 0, secs), "gets/s");
        metric("get_2t_view_per_get", best_get(c, rs, 2, 0, 0, secs), "gets/s");
        metric("get_1t_many64", best_get(c, rs, 1, 1, GET_MANY, secs), "gets/s");
        metric("get_2t_many64", best_get(c, rs, 2, 1, GET_MANY, secs), "gets/s");
        for (unsigned t = 0; t < 2; t++)
            reqstream_free(&rs[t]);
    }
    if (strchr(phases, 'l')) {
        /* The old revision is inside the window only after enough events. */
        int64_t old = wcache_cache_revision(c) - RETAIN / 2;
        metric("list_latest", best_list(c, WCACHE_REV_LATEST, items, n_objects + 1, secs),
               "ns/item");
        /* ... and holds every key only once the load is past it */
        if (old >= wcache_cache_compacted_revision(c) && old >= (int64_t)n_objects)
            metric("list_old_rev", best_list(c, old, items, n_objects + 1, secs), "ns/item");
    }
    free(items);
    wcache_cache_close(c);
    free(ch.arena);

    if (strchr(phases, 'b'))
        metric("load_bulk_rate", load_bulk(&g, &ks, n_objects), "objects/s");
    keyset_free(&ks);
    return 0;
}
