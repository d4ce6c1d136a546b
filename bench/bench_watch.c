/*
 * bench_watch - fan-out of a watch cache: many watchers, one writer, the
 * consumers on the same cores as the writer.
 *
 * Usage: bench_watch [-t SECONDS] [-s SEED] [-w PREFIX_WATCHERS] [-a ALL_WATCHERS]
 *                    [-c CONSUMERS] [-r RATE] [-b US] [-B US] [-m MODES] [-O] [-E] [N]
 *   N                 objects in the cache (default 1000000)
 *   PREFIX_WATCHERS   watchers on distinct key prefixes (default 10000)
 *   ALL_WATCHERS      watchers on every key (default 100)
 *   CONSUMERS         consumer threads (default 2: the machine's 2 cores)
 *   RATE              ingest rate of the latency run, events/s (default 100000)
 *   SECONDS           length of each measured window (default 3), after a
 *                     warm-up of a third of it
 *   -b US / -B US     consumer round interval of the max-rate run / of the
 *                     latency run, microseconds (default 1000 / 200; 0: a
 *                     consumer serves whatever epoll reports at once, which
 *                     costs two syscalls per watcher and event when the
 *                     consumers keep up: see the coalescing note below)
 *   MODES             letters of the runs: m(ax deliveries/s) l(atency);
 *                     default "ml"
 *   -E                each consumer waits on an epoll set of its watches' own
 *                     fds (wcache_watch_fd()) instead of one wcache_watchset
 *   -O                consumers take owned deliveries (wcache_watch_next(),
 *                     one wcache_event_unref() each) instead of borrowed
 *                     ones (wcache_watch_next_borrowed(), the default)
 *
 * bench/watch.sh (`make bench-watch`, part of `make bench`) builds and runs
 * it, the watch-set and the per-fd consumers interleaved.  By hand (from
 * the top directory, after `make`):
 *   cc -std=c11 -O2 -g -Iinclude -Ibench -o bench/build/bench_watch \
 *      bench/bench_watch.c lib/libwatchcache.a -Wl,--as-needed -lzstd -lcurl \
 *      -ljansson -lyaml -lxxhash -lpthread -lm
 *   bench/build/bench_watch               # 1M objects, both runs, ~40 s
 *   bench/build/bench_watch -t 2 100000   # a quick one
 *
 * Output: one line per metric on stdout, "metric<TAB>N<TAB>value<TAB>unit",
 * as bench_core prints them; notes go to stderr.  Exit status 1 when a
 * watcher overflowed (the figures are then not valid).
 *
 * Method:
 *  - The cache holds N pods of bench/podgen.h, loaded with
 *    wcache_ingest_load; RETAIN_REVISIONS 10,000, no age bound, automatic
 *    compaction.  Updates are puts of uniformly random existing keys (a
 *    new version of the pod), drawn from a pool of POOL events generated
 *    before anything is timed, so that the JSON generator is not measured.
 *  - Prefixes: podgen has 64 namespaces (16 teams x 4 environments) and
 *    4,096 deployments, both fewer than 10,000; so a prefix is a pod key
 *    without the last 4 characters of its 5-character name suffix:
 *    /registry/pods/<ns>/<app>-<hash>-<c>, one deployment's pods whose
 *    suffix starts with c (4,096 x 27 possible).  The first 10,000
 *    distinct ones in pod order are taken, so each matches at least one
 *    key (about 9 at N = 1M).
 *  - Consumers: each thread owns a share of the watchers (every
 *    consumer-th one) in one wcache_watchset, sleeps on its fd, and takes
 *    from each watch the set hands out until a call returns nothing (which
 *    re-arms it).  With -E it has instead an epoll set
 *    of their wcache_watch_fd()s (level-triggered); for each ready fd it
 *    calls wcache_watch_next_borrowed() with cap 1024 until a call returns
 *    fewer than the cap, reading each delivery's revision (and, in the
 *    latency run, its ingest time) before the next call takes the batch
 *    back.  With -O it calls wcache_watch_next() instead and releases
 *    every event with wcache_event_unref(), as the first version of this
 *    benchmark did: a borrowing event loop is what a server that writes
 *    each delivery to a socket before asking for more would use, and it
 *    saves the reference count update that 100 watchers of one change
 *    make on one cache line from both cores.  A delivery counts when the
 *    consumer has taken it out, either way.
 *  - Max deliveries/s: the writer ingests as fast as it can, but stays at
 *    most LAG revisions ahead of the slowest all-keys watcher (queues of
 *    QUEUE_ALL), so that no watcher overflows: the figure is a sustained
 *    rate, not a burst into the queues.  Consumers run a round (epoll_wait,
 *    then serve what is ready) at most every -b microseconds.
 *  - Since the machine is usually shared, each run also prints the CPU
 *    time its threads used (CLOCK_THREAD_CPUTIME_ID) per event (writer)
 *    and per delivery (consumers): those are what the code costs, whatever
 *    share of the cores the run got.
 *  - Latency: the writer is paced at RATE events/s (it sleeps until the
 *    next event is due, so arrivals come in small bursts), and writes the
 *    CLOCK_MONOTONIC time of each ingest, taken just before the put, into
 *    a side array indexed by revision; a consumer reads the clock once per
 *    wcache_watch_next() batch and records, for each delivery, the time
 *    since its revision's ingest.  p50/p99/p99.9/max over every delivery
 *    of the window (a histogram of 1 us buckets up to 1 s).  Beside them:
 *    the process's CPU (cores), voluntary context switches/s and
 *    involuntary ones (preemptions/s) in the window, and where a late
 *    delivery may have lost its time: the put's own duration (ingest and
 *    dispatch, p99 / max) and how late a consumer's round began after its
 *    nap (p99 / max; a thread waiting for a core shows there).
 *  - Memory of the watchers: the C heap in use (mallinfo2(), every arena)
 *    before and after opening them, and what closing them gives back at
 *    the end (their queues as the runs left them, registry, fans, events
 *    only they still held), per watcher; and the file descriptors the
 *    process holds at the end beyond those before opening them, per
 *    watcher (the consumers' epoll sets or watch sets included).
 */
#define _GNU_SOURCE

#include <pthread.h>
#include <dirent.h>
#include <malloc.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "podgen.h"
#include "watchcache.h"

#define BENCH_NAME "bench_watch"
#include "bench.h"

#define RETAIN 10000
#define POOL 65536       /* pre-generated update events */
#define NEXT_CAP 1024    /* deliveries per wcache_watch_next() */
#define QUEUE_ALL 65536  /* queue of an all-keys watcher */
#define QUEUE_PREFIX 256 /* queue of a prefix watcher */
/* Max-rate flow control, in revisions.  Small enough that the events a
 * consumer round walks through stay in its caches (a backlog of 32k events
 * made every delivery a cache miss on the event's version), far below the
 * queue size, so that nothing overflows. */
#define LAG 4096
#define HIST_US 1000000 /* latency histogram: 1 us buckets, to 1 s */
#define SEED_WORKLOAD 0x5eed0f10adull

static void *xcalloc(size_t n, size_t m)
{
    void *p = calloc(n ? n : 1, m ? m : 1);
    if (!p) {
        fprintf(stderr, "bench_watch: out of memory\n");
        exit(1);
    }
    return p;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static double thread_cpu(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void sleep_until(int64_t t)
{
    struct timespec ts = {.tv_sec = t / 1000000000, .tv_nsec = t % 1000000000};
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) != 0)
        ;
}

/* ---- prefixes: a set of strings ---- */

typedef struct strset {
    char **s;
    size_t *len;
    size_t mask, n;
} strset;

static uint64_t fnv(const char *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
    return h;
}

/* Insert; returns 1 if new.  The table never fills: sized 4x the target. */
static int strset_add(strset *t, const char *p, size_t n, int insert)
{
    for (size_t i = fnv(p, n) & t->mask;; i = (i + 1) & t->mask) {
        if (!t->s[i]) {
            if (!insert)
                return 0;
            t->s[i] = xmalloc(n);
            memcpy(t->s[i], p, n);
            t->len[i] = n;
            t->n++;
            return 1;
        }
        if (t->len[i] == n && !memcmp(t->s[i], p, n))
            return insert ? 0 : 1;
    }
}

/* A pod key without the last 4 characters of its name suffix. */
static size_t prefix_of(const podgen *g, uint64_t i, char *buf)
{
    size_t n = podgen_key(g, i, buf, PODGEN_KEY_MAX);
    return n - 4;
}

/* ---- the run's shared state ---- */

typedef struct watcher {
    wcache_watch *w;
    int all;                  /* watches every key */
    _Atomic int64_t last_rev; /* last revision taken (all-keys watchers) */
} watcher;

typedef struct consumer {
    pthread_t tid;
    int id, ep;
    wcache_watchset *set; /* default mode: one set per consumer; -E: NULL */
    size_t *mine, nmine;
    uint64_t taken, taken_prefix; /* deliveries taken */
    _Atomic uint64_t pub_taken;   /* taken, published every batch for the window */
    uint64_t *hist;               /* latency, 1 us buckets, while measuring */
    uint64_t *late;               /* how late a round began after its nap (latency run) */
    uint64_t overflows;
    double cpu; /* thread CPU seconds, at exit */
    char pad[64];
} consumer;

static struct {
    wcache_cache *c;
    watcher *w;
    size_t nw, nall;
    size_t *all_idx;
    _Atomic int64_t *ts; /* ingest time by revision (latency run) */
    int64_t ts_cap;
    atomic_int stop, measuring;
    int latency_mode;
    int owned; /* -O: wcache_watch_next() instead of wcache_watch_next_borrowed() */
    int per_fd; /* -E: an epoll set of every watch's own fd instead of a watch set */
    int64_t coalesce_ns; /* consumer round interval, 0: none */
    /* update pool */
    char *arena;
    size_t *koff, *klen, *voff, *vlen;
} S;

/* ---- consumers ---- */

static void take_batch(consumer *c, watcher *wt, wcache_watch_event *evs, size_t m)
{
    if (S.latency_mode && atomic_load_explicit(&S.measuring, memory_order_relaxed)) {
        int64_t t = now_ns();
        for (size_t i = 0; i < m; i++) {
            int64_t r = evs[i].revision;
            if (r <= 0 || r >= S.ts_cap)
                continue;
            int64_t at = atomic_load_explicit(&S.ts[r], memory_order_relaxed);
            int64_t us = at ? (t - at) / 1000 : 0;
            c->hist[us < 0 ? 0 : us >= HIST_US ? HIST_US : us]++;
        }
    }
    for (size_t i = 0; i < m; i++)
        wcache_event_unref(evs[i].ev); /* NULL when borrowed: nothing to do */
    c->taken += m;
    if (!wt->all)
        c->taken_prefix += m;
    else if (m)
        atomic_store_explicit(&wt->last_rev, evs[m - 1].revision, memory_order_relaxed);
    atomic_store_explicit(&c->pub_taken, c->taken, memory_order_relaxed);
}

/* Take from one ready watcher until a call returns less than the cap. */
static void serve(consumer *c, watcher *wt, wcache_watch_event *evs)
{
    for (int it = 0; it < 64 && wt->w; it++) {
        size_t m = 0;
        wcache_code rc = S.owned ? wcache_watch_next(wt->w, evs, NEXT_CAP, &m)
                                 : wcache_watch_next_borrowed(wt->w, evs, NEXT_CAP, &m);
        take_batch(c, wt, evs, m);
        if (rc != WCACHE_OK) {
            c->overflows += rc == WCACHE_EOVERFLOW; /* reported after the run */
            if (rc != WCACHE_EOVERFLOW)
                fprintf(stderr, "bench_watch: a watcher ended: %s\n", wcache_strerror(rc));
            epoll_ctl(c->ep, EPOLL_CTL_DEL, wcache_watch_fd(wt->w), NULL);
            return;
        }
        if (m < NEXT_CAP)
            return;
    }
}

/* A watch the set handed out: take until a call returns nothing (then it
 * is handed out again when something comes) or its end. */
static void serve_set(consumer *c, watcher *wt, wcache_watch_event *evs)
{
    for (;;) {
        size_t m = 0;
        wcache_code rc = S.owned ? wcache_watch_next(wt->w, evs, NEXT_CAP, &m)
                                 : wcache_watch_next_borrowed(wt->w, evs, NEXT_CAP, &m);
        take_batch(c, wt, evs, m);
        if (rc != WCACHE_OK) {
            c->overflows += rc == WCACHE_EOVERFLOW;
            if (rc != WCACHE_EOVERFLOW)
                fprintf(stderr, "bench_watch: a watcher ended: %s\n", wcache_strerror(rc));
            check(wcache_watchset_remove(c->set, wt->w), "watchset_remove");
            return;
        }
        if (m == 0)
            return;
    }
}

/* The nap between rounds; in the latency run, how much later than asked
 * the thread ran again: a thread that waited for a core shows here. */
static void nap(consumer *c, int64_t until)
{
    sleep_until(until);
    if (c->late && atomic_load_explicit(&S.measuring, memory_order_relaxed)) {
        int64_t us = (now_ns() - until) / 1000;
        c->late[us < 0 ? 0 : us >= HIST_US ? HIST_US : us]++;
    }
}

static void *consumer_set(consumer *c)
{
    wcache_watch_event *evs = xmalloc(NEXT_CAP * sizeof *evs);
    struct pollfd p = {.fd = wcache_watchset_fd(c->set), .events = POLLIN};
    while (!atomic_load_explicit(&S.stop, memory_order_relaxed)) {
        int64_t t = now_ns();
        int served = 0;
        wcache_watch *w;
        void *ud;
        while (wcache_watchset_next(c->set, &w, &ud) == WCACHE_OK && w) {
            serve_set(c, &S.w[(uintptr_t)ud], evs);
            served = 1;
        }
        if (S.coalesce_ns && served)
            nap(c, t + S.coalesce_ns);
        else
            poll(&p, 1, 50);
    }
    free(evs);
    c->cpu = thread_cpu();
    return NULL;
}

static void *consumer_main(void *arg)
{
    consumer *c = arg;
    if (c->set)
        return consumer_set(c);
    wcache_watch_event *evs = xmalloc(NEXT_CAP * sizeof *evs);
    struct epoll_event ready[1024];
    while (!atomic_load_explicit(&S.stop, memory_order_relaxed)) {
        int64_t t = now_ns();
        int n = epoll_wait(c->ep, ready, 1024, 50);
        for (int i = 0; i < n; i++)
            serve(c, &S.w[ready[i].data.u64], evs);
        /* Coalescing: at most one round per interval, so that a round
         * takes many deliveries per call and a watch is rarely found
         * empty (an empty next() arms the fd: a read() here and a write()
         * in the writer for the next event, per watcher). */
        if (S.coalesce_ns && n > 0)
            nap(c, t + S.coalesce_ns);
    }
    free(evs);
    c->cpu = thread_cpu();
    return NULL;
}

/* ---- the writer ---- */

typedef struct writer {
    pthread_t tid;
    int64_t rev;
    double rate; /* events/s; 0: as fast as flow control allows */
    _Atomic uint64_t events;
    uint64_t waits;
    double cpu;    /* thread CPU seconds, at exit */
    uint64_t *put; /* latency run: how long each put took, 1 us buckets */
} writer;

static int64_t slowest_all(void)
{
    int64_t m = INT64_MAX;
    for (size_t j = 0; j < S.nall; j++) {
        int64_t r = atomic_load_explicit(&S.w[S.all_idx[j]].last_rev, memory_order_relaxed);
        m = r < m ? r : m;
    }
    return m;
}

static void *writer_main(void *arg)
{
    writer *wr = arg;
    int64_t t0 = now_ns(), period = wr->rate > 0 ? (int64_t)(1e9 / wr->rate) : 0;
    uint64_t k = 0;
    while (!atomic_load_explicit(&S.stop, memory_order_relaxed)) {
        if (period) {
            int64_t due = t0 + (int64_t)k * period;
            if (now_ns() < due)
                sleep_until(due);
        } else if (k % 256 == 0) {
            /* Flow control: sleep, not spin, so the consumers get the
             * CPU the writer would burn. */
            while (wr->rev - slowest_all() > LAG && !atomic_load(&S.stop)) {
                wr->waits++;
                sleep_until(now_ns() + 100000);
            }
        }
        size_t p = k % POOL;
        int64_t rev = wr->rev + 1, at = now_ns();
        if (S.ts && rev < S.ts_cap)
            atomic_store_explicit(&S.ts[rev], at, memory_order_relaxed);
        check(wcache_ingest_put(S.c, S.arena + S.koff[p], S.klen[p], S.arena + S.voff[p],
                                S.vlen[p], rev),
              "ingest_put");
        /* the put is part of every delivery's latency: dispatch is in it */
        if (wr->put && atomic_load_explicit(&S.measuring, memory_order_relaxed)) {
            int64_t us = (now_ns() - at) / 1000;
            wr->put[us >= HIST_US ? HIST_US : us]++;
        }
        wr->rev = rev;
        k++;
        atomic_store_explicit(&wr->events, k, memory_order_relaxed);
        if (S.ts && rev + 1 >= S.ts_cap)
            break; /* the side array is full: end of the run */
    }
    wr->cpu = thread_cpu();
    return NULL;
}

/* ---- setup ---- */

static wcache_cache *load_cache(const podgen *g, uint64_t n)
{
    wcache_cache *c;
    wcache_batch *b;
    char key[PODGEN_KEY_MAX], pod[PODGEN_POD_MAX];
    check(wcache_cache_create(&c, NULL), "cache_create");
    check(wcache_cache_set_param(c, WCACHE_P_RETAIN_REVISIONS, RETAIN), "retain revisions");
    check(wcache_cache_set_param(c, WCACHE_P_RETAIN_SECONDS, 0), "retain seconds");
    check(wcache_cache_set_param(c, WCACHE_P_AUTO_COMPACT, 1), "auto compact");
    check(wcache_cache_open(c), "cache_open");
    check(wcache_batch_create(c, &b), "batch_create");
    for (uint64_t i = 0; i < n; i++) {
        size_t kl = podgen_key(g, i, key, sizeof key);
        size_t vl = podgen_pod(g, i, 1, (int64_t)i + 1, pod, sizeof pod);
        check(wcache_batch_put_meta(b, key, kl, pod, vl, (int64_t)i + 1, (int64_t)i + 1, 1),
              "batch_put_meta");
    }
    check(wcache_ingest_load(c, b, (int64_t)n), "ingest_load");
    wcache_batch_free(b);
    return c;
}

static void make_pool(const podgen *g, uint64_t n)
{
    podgen_rng r = {SEED_WORKLOAD};
    size_t off = 0;
    S.arena = xmalloc((size_t)POOL * (PODGEN_KEY_MAX + PODGEN_POD_MAX));
    S.koff = xmalloc(POOL * sizeof *S.koff);
    S.klen = xmalloc(POOL * sizeof *S.klen);
    S.voff = xmalloc(POOL * sizeof *S.voff);
    S.vlen = xmalloc(POOL * sizeof *S.vlen);
    for (size_t k = 0; k < POOL; k++) {
        uint64_t i = podgen_next(&r) % n;
        S.koff[k] = off;
        S.klen[k] = podgen_key(g, i, S.arena + off, PODGEN_KEY_MAX);
        off += S.klen[k];
        S.voff[k] = off;
        S.vlen[k] =
            podgen_pod(g, i, 2 + k / n, (int64_t)(n + k + 1), S.arena + off, PODGEN_POD_MAX);
        off += S.vlen[k];
    }
}

/* The first `want` distinct prefixes in pod order; counts the keys they
 * cover and the pool events that fall under one. */
static void open_watchers(const podgen *g, uint64_t n, size_t want, size_t nall)
{
    strset set = {0};
    size_t cap = 1;
    while (cap < want * 4)
        cap <<= 1;
    set.s = xcalloc(cap, sizeof *set.s);
    set.len = xcalloc(cap, sizeof *set.len);
    set.mask = cap - 1;
    S.w = xcalloc(want + nall, sizeof *S.w);
    S.all_idx = xcalloc(nall ? nall : 1, sizeof *S.all_idx);
    char buf[PODGEN_KEY_MAX];
    for (uint64_t i = 0; i < n && set.n < want; i++) {
        size_t pl = prefix_of(g, i, buf);
        if (!strset_add(&set, buf, pl, 1))
            continue;
        wcache_watch_opts o = {
            .size = sizeof o, .prefix = buf, .prefix_len = pl, .queue_size = QUEUE_PREFIX};
        check(wcache_watch_open(S.c, &o, &S.w[S.nw].w), "watch_open (prefix)");
        S.nw++;
    }
    if (set.n < want)
        fprintf(stderr, "bench_watch: only %zu distinct prefixes among %llu pods\n", set.n,
                (unsigned long long)n);
    uint64_t covered = 0, pool_hits = 0;
    for (uint64_t i = 0; i < n; i++)
        covered += strset_add(&set, buf, prefix_of(g, i, buf), 0);
    for (size_t k = 0; k < POOL; k++)
        pool_hits += strset_add(&set, S.arena + S.koff[k], S.klen[k] - 4, 0);
    for (size_t j = 0; j < nall; j++) {
        wcache_watch_opts o = {.size = sizeof o, .queue_size = QUEUE_ALL};
        S.w[S.nw].all = 1;
        S.all_idx[S.nall++] = S.nw;
        check(wcache_watch_open(S.c, &o, &S.w[S.nw].w), "watch_open (all)");
        S.nw++;
    }
    fprintf(stderr,
            "bench_watch: %zu prefix watchers (/registry/pods/<ns>/<app>-<hash>-<c>) covering "
            "%llu keys (%.1f%%), %zu all-keys watchers; %.2f%% of the updates fall under a "
            "prefix watcher: %.3f deliveries per event expected\n",
            S.nw - S.nall, (unsigned long long)covered, 100.0 * (double)covered / (double)n,
            S.nall, 100.0 * (double)pool_hits / POOL,
            (double)S.nall + (double)pool_hits / POOL);
    for (size_t i = 0; i <= set.mask; i++)
        free(set.s[i]);
    free(set.s);
    free(set.len);
}

static int open_fds(void)
{
    int n = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    while (readdir(d))
        n++;
    closedir(d);
    return n;
}

static double heap_in_use(void)
{
    struct mallinfo2 m = mallinfo2();
    return (double)m.uordblks + (double)m.hblkhd;
}

static void start_consumers(consumer *cs, int nc)
{
    for (int t = 0; t < nc; t++) {
        consumer *c = &cs[t];
        memset(c, 0, sizeof *c);
        c->id = t;
        c->ep = epoll_create1(EPOLL_CLOEXEC);
        c->hist = xcalloc(HIST_US + 1, sizeof *c->hist);
        c->late = S.latency_mode ? xcalloc(HIST_US + 1, sizeof *c->late) : NULL;
        c->mine = xmalloc((S.nw / (size_t)nc + 1) * sizeof *c->mine);
        if (!S.per_fd)
            check(wcache_watchset_create(S.c, &c->set), "watchset_create");
        if (c->ep < 0) {
            perror("bench_watch: epoll_create1");
            exit(1);
        }
    }
    wcache_watch_event ev;
    for (size_t j = 0; j < S.nw; j++) {
        consumer *c = &cs[j % (size_t)nc];
        size_t m = 0;
        /* One empty next() first: it arms the watch's fd (see the report:
         * a live watch is not woken before its first next()). */
        check(wcache_watch_next(S.w[j].w, &ev, 1, &m), "watch_next (arm)");
        if (m)
            wcache_event_unref(ev.ev);
        struct epoll_event ee = {.events = EPOLLIN, .data.u64 = j};
        if (c->set)
            check(wcache_watchset_add(c->set, S.w[j].w, (void *)(uintptr_t)j), "watchset_add");
        else if (epoll_ctl(c->ep, EPOLL_CTL_ADD, wcache_watch_fd(S.w[j].w), &ee) != 0) {
            perror("bench_watch: epoll_ctl");
            exit(1);
        }
        c->mine[c->nmine++] = j;
    }
    for (int t = 0; t < nc; t++)
        if (pthread_create(&cs[t].tid, NULL, consumer_main, &cs[t]) != 0) {
            fprintf(stderr, "bench_watch: pthread_create failed\n");
            exit(1);
        }
}

static uint64_t total_taken(consumer *cs, int nc)
{
    uint64_t s = 0;
    for (int t = 0; t < nc; t++)
        s += atomic_load_explicit(&cs[t].pub_taken, memory_order_relaxed);
    return s;
}

static double pct(const uint64_t *h, uint64_t total, double q)
{
    uint64_t want = (uint64_t)((double)total * q), acc = 0;
    for (size_t i = 0; i <= HIST_US; i++) {
        acc += h[i];
        if (acc > want)
            return (double)i + 0.5;
    }
    return HIST_US;
}

/* Context switches of the whole process: voluntary (a thread slept) and
 * involuntary (a runnable thread was preempted: what makes the tail). */
static void ctx_switches(long *vol, long *invol)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *vol = ru.ru_nvcsw;
    *invol = ru.ru_nivcsw;
}

static double hist_max(const uint64_t *h)
{
    double max = 0;
    for (size_t i = 0; i <= HIST_US; i++)
        if (h[i])
            max = (double)i + 0.5;
    return max;
}

static double cpu_seconds(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

/* What the threads cost over the whole run (warm-up included). */
static void cpu_metrics(const char *tag, const writer *wr, double ccpu, uint64_t taken)
{
    uint64_t ev = atomic_load(&wr->events);
    char name[64];
    snprintf(name, sizeof name, "watch_%s_writer_cpu", tag);
    metric(name, ev ? wr->cpu * 1e9 / (double)ev : 0, "ns/event");
    snprintf(name, sizeof name, "watch_%s_consumer_cpu", tag);
    metric(name, taken ? ccpu * 1e9 / (double)taken : 0, "ns/delivery");
    snprintf(name, sizeof name, "watch_%s_total_cpu", tag);
    metric(name, taken ? (ccpu + wr->cpu) * 1e9 / (double)taken : 0, "ns/delivery");
}

/* The max-rate run: the writer as fast as flow control lets it. */
static void run_max(int nc, double secs)
{
    consumer *cs = xcalloc((size_t)nc, sizeof *cs);
    writer wr = {.rev = wcache_cache_revision(S.c), .rate = 0};
    S.latency_mode = 0;
    atomic_store(&S.stop, 0);
    for (size_t j = 0; j < S.nall; j++)
        atomic_store(&S.w[S.all_idx[j]].last_rev, wr.rev);
    start_consumers(cs, nc);
    if (pthread_create(&wr.tid, NULL, writer_main, &wr) != 0)
        exit(1);
    /* Warm-up, then the window: the main thread only keeps time. */
    sleep_until(now_ns() + (int64_t)(secs / 3 * 1e9));
    uint64_t d0 = total_taken(cs, nc), e0 = atomic_load(&wr.events);
    double c0 = cpu_seconds();
    int64_t t0 = now_ns();
    sleep_until(t0 + (int64_t)(secs * 1e9));
    uint64_t d1 = total_taken(cs, nc), e1 = atomic_load(&wr.events);
    double el = (double)(now_ns() - t0) * 1e-9, cpu = cpu_seconds() - c0;
    atomic_store(&S.stop, 1);
    pthread_join(wr.tid, NULL);
    uint64_t overflows = 0, prefix = 0, taken = 0;
    double ccpu = 0;
    for (int t = 0; t < nc; t++) {
        pthread_join(cs[t].tid, NULL);
        overflows += cs[t].overflows, prefix += cs[t].taken_prefix, taken += cs[t].taken;
        ccpu += cs[t].cpu;
        close(cs[t].ep);
        wcache_watchset_free(cs[t].set);
        free(cs[t].mine);
        free(cs[t].hist);
    }
    double dps = (double)(d1 - d0) / el, eps = (double)(e1 - e0) / el;
    fprintf(stderr,
            "bench_watch: max: %d consumers (%s), rounds every %lld us, %.0f events/s ingested, "
            "%.0f deliveries/s "
            "(%.2f per event; %.3f%% to prefix watchers), CPU %.2f s in %.2f s, writer "
            "waits %llu, overflows %llu\n",
            nc, S.owned ? "owned" : "borrowed", (long long)(S.coalesce_ns / 1000), eps, dps,
            eps > 0 ? dps / eps : 0,
            taken ? 100.0 * (double)prefix / (double)taken : 0, cpu, el,
            (unsigned long long)wr.waits, (unsigned long long)overflows);
    metric("watch_deliveries_max", dps, "deliveries/s");
    metric("watch_ingest_at_max", eps, "events/s");
    cpu_metrics("max", &wr, ccpu, taken);
    free(cs);
}

static void run_latency(int nc, double rate, double secs)
{
    /* the histogram lives in the consumers: collect before they are freed */
    consumer *cs = xcalloc((size_t)nc, sizeof *cs);
    writer wr = {.rev = wcache_cache_revision(S.c), .rate = rate};
    S.latency_mode = 1;
    atomic_store(&S.stop, 0);
    atomic_store(&S.measuring, 0);
    S.ts_cap = wr.rev + (int64_t)(rate * secs * 2) + 1000;
    S.ts = xcalloc((size_t)S.ts_cap, sizeof *S.ts);
    wr.put = xcalloc(HIST_US + 1, sizeof *wr.put);
    start_consumers(cs, nc);
    if (pthread_create(&wr.tid, NULL, writer_main, &wr) != 0)
        exit(1);
    sleep_until(now_ns() + (int64_t)(secs / 3 * 1e9));
    atomic_store(&S.measuring, 1);
    uint64_t d0 = total_taken(cs, nc), e0 = atomic_load(&wr.events);
    double c0 = cpu_seconds();
    long vol0, inv0, vol1, inv1;
    ctx_switches(&vol0, &inv0);
    int64_t t0 = now_ns();
    sleep_until(t0 + (int64_t)(secs * 1e9));
    atomic_store(&S.measuring, 0);
    uint64_t d1 = total_taken(cs, nc), e1 = atomic_load(&wr.events);
    double el = (double)(now_ns() - t0) * 1e-9, cpu = cpu_seconds() - c0;
    ctx_switches(&vol1, &inv1);
    atomic_store(&S.stop, 1);
    pthread_join(wr.tid, NULL);
    uint64_t *h = xcalloc(HIST_US + 1, sizeof *h), total = 0, overflows = 0, taken = 0;
    uint64_t *late = xcalloc(HIST_US + 1, sizeof *late), nlate = 0, nput = 0;
    double ccpu = 0;
    for (int t = 0; t < nc; t++) {
        pthread_join(cs[t].tid, NULL);
        ccpu += cs[t].cpu, taken += cs[t].taken;
        for (size_t i = 0; i <= HIST_US; i++) {
            h[i] += cs[t].hist[i], total += cs[t].hist[i];
            late[i] += cs[t].late[i], nlate += cs[t].late[i];
        }
        free(cs[t].late);
        overflows += cs[t].overflows;
        close(cs[t].ep);
        wcache_watchset_free(cs[t].set);
        free(cs[t].mine);
        free(cs[t].hist);
    }
    double max = hist_max(h);
    for (size_t i = 0; i <= HIST_US; i++)
        nput += wr.put[i];
    double eps = (double)(e1 - e0) / el, dps = (double)(d1 - d0) / el;
    fprintf(stderr,
            "bench_watch: latency: %d consumers (%s), rounds every %lld us, %.0f events/s "
            "ingested "
            "(asked %.0f), %.0f "
            "deliveries/s, %llu latency samples, CPU %.2f of %.2f s, overflows %llu\n",
            nc, S.owned ? "owned" : "borrowed", (long long)(S.coalesce_ns / 1000), eps, rate, dps,
            (unsigned long long)total,
            cpu, el, (unsigned long long)overflows);
    metric("watch_latency_rate", eps, "events/s");
    metric("watch_latency_p50", pct(h, total, 0.50), "us");
    metric("watch_latency_p99", pct(h, total, 0.99), "us");
    metric("watch_latency_p999", pct(h, total, 0.999), "us");
    metric("watch_latency_max", max, "us");
    metric("watch_latency_cpu", cpu / el, "cores");
    metric("watch_latency_vcsw", (double)(vol1 - vol0) / el, "switches/s");
    metric("watch_latency_ivcsw", (double)(inv1 - inv0) / el, "preemptions/s");
    /* Where a late delivery lost its time: in the put (ingest and dispatch,
     * writer side), or waiting for its consumer's round to begin. */
    metric("watch_latency_put_p99", pct(wr.put, nput, 0.99), "us");
    metric("watch_latency_put_max", hist_max(wr.put), "us");
    metric("watch_latency_round_late_p99", pct(late, nlate, 0.99), "us");
    metric("watch_latency_round_late_max", hist_max(late), "us");
    free(late);
    free(wr.put);
    cpu_metrics("latency", &wr, ccpu, taken);
    free(h);
    free((void *)S.ts);
    S.ts = NULL;
    free(cs);
}

static uint64_t parse_u64(const char *s, const char *what)
{
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (!*s || *end) {
        fprintf(stderr, "bench_watch: bad %s: %s\n", what, s);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    uint64_t seed = 42, nprefix = 10000, nall = 100, nc = 2;
    double secs = 3, rate = 100000;
    const char *modes = "ml";
    double coalesce_max_us = 1000, coalesce_lat_us = 200;
    int opt;
    n_objects = 1000000;
    while ((opt = getopt(argc, argv, "t:s:w:a:c:r:m:b:B:OE")) != -1) {
        if (opt == 't')
            secs = strtod(optarg, NULL);
        else if (opt == 's')
            seed = parse_u64(optarg, "seed");
        else if (opt == 'w')
            nprefix = parse_u64(optarg, "prefix watchers");
        else if (opt == 'a')
            nall = parse_u64(optarg, "all-keys watchers");
        else if (opt == 'c')
            nc = parse_u64(optarg, "consumers");
        else if (opt == 'r')
            rate = strtod(optarg, NULL);
        else if (opt == 'm')
            modes = optarg;
        else if (opt == 'b')
            coalesce_max_us = strtod(optarg, NULL);
        else if (opt == 'B')
            coalesce_lat_us = strtod(optarg, NULL);
        else if (opt == 'O')
            S.owned = 1;
        else if (opt == 'E')
            S.per_fd = 1;
        else {
            fprintf(stderr,
                    "usage: %s [-t SECONDS] [-s SEED] [-w PREFIX_WATCHERS] [-a ALL_WATCHERS] "
                    "[-c CONSUMERS] [-r RATE] [-b US] [-B US] [-m MODES] [-O] [-E] [N]\n",
                    argv[0]);
            return 2;
        }
    }
    if (optind < argc)
        n_objects = parse_u64(argv[optind], "N");
    if (n_objects < 1000 || n_objects > PODGEN_MAX_PODS || nc < 1 || nc > 64 || secs <= 0 ||
        rate <= 0) {
        fprintf(stderr, "bench_watch: N in [1000, %u], 1..64 consumers, SECONDS and RATE > 0\n",
                PODGEN_MAX_PODS);
        return 2;
    }
    /* With -E, one eventfd per watcher (watch sets need none). */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < nprefix + nall + 64) {
        rl.rlim_cur = rl.rlim_max < nprefix + nall + 64 ? rl.rlim_max : nprefix + nall + 64;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    podgen g;
    podgen_init(&g, seed);
    double t = (double)now_ns();
    S.c = load_cache(&g, n_objects);
    make_pool(&g, n_objects);
    fprintf(stderr, "bench_watch: %llu pods loaded and %d updates generated in %.1f s\n",
            (unsigned long long)n_objects, POOL, ((double)now_ns() - t) * 1e-9);
    double heap0 = heap_in_use();
    int fds0 = open_fds();
    t = (double)now_ns();
    open_watchers(&g, n_objects, (size_t)nprefix, (size_t)nall);
    metric("watch_open_rate", (double)S.nw / (((double)now_ns() - t) * 1e-9), "watches/s");
    metric("watch_heap_open", (heap_in_use() - heap0) / (double)S.nw, "bytes/watcher");

    fprintf(stderr, "bench_watch: each consumer waits on %s\n",
            S.per_fd ? "an epoll set of its watches' own fds (-E)" : "one wcache_watchset");
    if (strchr(modes, 'm')) {
        S.coalesce_ns = (int64_t)(coalesce_max_us * 1000);
        run_max((int)nc, secs);
    }
    if (strchr(modes, 'l')) {
        S.coalesce_ns = (int64_t)(coalesce_lat_us * 1000);
        run_latency((int)nc, rate, secs);
    }

    wcache_wait_stat ws = {.size = sizeof ws};
    check(wcache_cache_wait_stat(S.c, &ws), "wait_stat");
    if (ws.overflows)
        fprintf(stderr, "bench_watch: %llu watchers overflowed: the figures are not valid\n",
                (unsigned long long)ws.overflows);
    double heap1 = heap_in_use();
    metric("watch_fds_end", (double)(open_fds() - fds0) / (double)S.nw, "fds/watcher");
    for (size_t j = 0; j < S.nw; j++)
        wcache_watch_close(S.w[j].w);
    metric("watch_heap_end", (heap1 - heap_in_use()) / (double)S.nw, "bytes/watcher");
    wcache_cache_close(S.c);
    free(S.w);
    free(S.all_idx);
    free(S.arena), free(S.koff), free(S.klen), free(S.voff), free(S.vlen);
    return ws.overflows ? 1 : 0;
}
