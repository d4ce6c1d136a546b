/*
 * check_watch_threads.c - thousands of watchers, readers and one writer
 * (run under TSan, ASan and valgrind).
 *
 * One writer ingests puts, deletes, multi-key batches and progress
 * notifications over keys /p/<PPPP>/k<J> with automatic compaction, and
 * logs every operation before it ingests it.  Meanwhile:
 *
 *  - ~2,000 watchers (more under WCACHE_LONG): one per fine prefix
 *    /p/<PPPP>/ (distinct prefixes), coarse ones /p/<PP>, some on
 *    everything, some on [start, end) ranges; some with label selectors
 *    (whose transitions turn puts into ADDED / DELETED), some asking for
 *    the previous object, some for bookmarks;
 *  - consumer threads, each serving many watchers: two sweep theirs with
 *    wcache_watch_next() (wcache_watch_next_borrowed() for every third
 *    watcher), one poll()s their wcache_watch_fd()s; while the
 *    writer runs they also open watchers from past revisions (replay, some
 *    of them deliberately slow so that compaction may overtake them), with
 *    initial events, and close some early;
 *  - a few watchers with tiny queues are never read while the writer runs:
 *    they must end with WCACHE_EOVERFLOW after exactly their queue's worth;
 *  - reader threads pin views at random revisions of the window and check
 *    LIST / GET / count against the writer's log.
 *
 * After the join every watcher's deliveries are compared with what the log
 * says it must have seen: the same events (revision, key, type, the version
 * shown with its create revision and version, the previous object), in
 * revision order, none missing, none twice; bookmarks never ahead of an
 * event still to come; and an ended watcher ended only with a code the
 * header documents for its situation (WCACHE_EOVERFLOW for the never-read
 * ones and slow replayers, WCACHE_ECOMPACTED for replays overtaken by
 * compaction), having received a gap-free prefix of its stream.  Values are
 * compared byte for byte as they are taken out.  Every event reference is
 * released (a counting allocator must be back to zero blocks after close;
 * valgrind's leak check agrees).
 *
 * The log is shared race-free as in check_threads.c: an operation's entry
 * is written, then the key's head index is stored with release, before the
 * ingest; a reader pinned at R acquires the head after pinning, so every
 * entry with revision <= R is visible to it.  Consumers check values
 * without the log: a value is a pure function of (key, revision).
 *
 * Failures in threads are recorded and asserted after the join.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include <watchcache.h>

#include "testutil.h"

#define KPP 3          /* keys per fine prefix */
#define RETAIN 192     /* revisions kept by automatic compaction */
#define LAG 128        /* the writer stays at most this far ahead of a consumer */
#define NCONS 3        /* consumer threads: 0 and 1 sweep, 2 polls */
#define NREAD 2        /* reader threads */
#define BATCH_MAX 6    /* keys in one batch */
#define NSLOW 6        /* never-read watchers */
#define SLOW_QUEUE 8   /* ... and their queue */
#define BIG_QUEUE 4096 /* queue of the watchers that must never overflow */
#define EVCAP 64       /* deliveries taken per call */

/* ------------------------------------------------------------------------ */
/* Sizes                                                                     */
/* ------------------------------------------------------------------------ */

static struct {
    int nprefix; /* fine prefixes = fine watchers */
    long nrevs;  /* revisions the writer makes */
    int ndyn;    /* watchers opened by the consumers during the run */
} Z;

static void size_run(void)
{
    Z.nprefix = 1900, Z.nrevs = 20000, Z.ndyn = 300;
    if (tu_long()) {
        Z.nprefix = 6000, Z.nrevs = 200000, Z.ndyn = 2000;
    } else if (getenv("WCACHE_VALGRIND")) {
        /* every watcher still opens, fans and drains; 2 minutes at 4000 */
        Z.nprefix = 1900, Z.nrevs = 2000, Z.ndyn = 100;
    } else if (getenv("WCACHE_TSAN")) {
        Z.nprefix = 1900, Z.nrevs = 10000, Z.ndyn = 200;
    }
}

static int nkeys(void)
{
    return Z.nprefix * KPP;
}

/* ------------------------------------------------------------------------ */
/* Values and labels: pure functions of (key, revision)                     */
/* ------------------------------------------------------------------------ */

static uint64_t mix(uint64_t a, uint64_t b)
{
    tu_rng r = {a * 0x9e3779b97f4a7c15ULL ^ b};
    return tu_next(&r);
}

typedef struct labels {
    int app, tier, canary;
} labels;

static labels labels_of(int k, int64_t rev)
{
    uint64_t h = mix((uint64_t)k, (uint64_t)rev);
    return (labels){(int)(h % 4), (int)((h >> 8) % 3), (h >> 16) % 5 == 0};
}

static int key_name(int k, char *buf, size_t cap)
{
    return snprintf(buf, cap, "/p/%04d/k%d", k / KPP, k % KPP);
}

static int render(int k, int64_t rev, char *buf, size_t cap)
{
    char key[32];
    labels l = labels_of(k, rev);
    key_name(k, key, sizeof key);
    return snprintf(buf, cap,
                    "{\"metadata\":{\"labels\":{\"app\":\"a%d\",\"tier\":\"t%d\"%s}},"
                    "\"key\":\"%s\",\"rev\":%lld}",
                    l.app, l.tier, l.canary ? ",\"canary\":\"y\"" : "", key, (long long)rev);
}

/* Selectors by number (0: none) and their meaning on labels. */
static const char *const SELECTORS[] = {NULL,
                                        "app=a1",
                                        "tier in (t0,t2)",
                                        "app!=a0,canary",
                                        "!canary",
                                        "tier notin (t1),app in (a2,a3)"};
#define NSEL 6

static int sel_match(int sel, labels l)
{
    switch (sel) {
    case 0: return 1;
    case 1: return l.app == 1;
    case 2: return l.tier != 1;
    case 3: return l.app != 0 && l.canary;
    case 4: return !l.canary;
    default: return l.tier != 1 && l.app >= 2;
    }
}

/* ------------------------------------------------------------------------ */
/* The writer's log                                                          */
/* ------------------------------------------------------------------------ */

typedef struct op {
    int64_t rev;
    int k;
    int del;
    int64_t create, ver; /* of the new version (put) */
    long prev_live;      /* op that made the version replaced, if live; else -1 */
    long prev_key;       /* previous op on the same key, or -1 */
} op;

static struct {
    wcache_cache *c;
    op *ops;
    long nops, capops;  /* writer-private until the join */
    _Atomic long *head; /* per key: latest op, released before the ingest */
    long *live_op;      /* writer-private: op of the live version, or -1 */
    atomic_int writer_done;
    _Atomic int64_t final_rev;
    atomic_int failed;
    pthread_mutex_t mu;
    char msg[1024];
    _Atomic int64_t progress[NCONS]; /* revision each consumer caught up to */
    atomic_long reads, compacted_opens, dyn_opened;
    atomic_long live_blocks; /* counting allocator */
    atomic_long total_blocks;
} T;

static void tfail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void tfail(const char *fmt, ...)
{
    pthread_mutex_lock(&T.mu);
    if (!atomic_load(&T.failed)) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(T.msg, sizeof T.msg, fmt, ap);
        va_end(ap);
        atomic_store(&T.failed, 1);
    }
    pthread_mutex_unlock(&T.mu);
}

#define TCHECK(cond, ...)       \
    do {                        \
        if (!(cond)) {          \
            tfail(__VA_ARGS__); \
            return -1;          \
        }                       \
    } while (0)

/* A thread-safe counting allocator: after close, no block may be left. */
typedef union blk {
    size_t n;
    max_align_t a;
} blk;

static void *count_alloc(size_t n, void *ud)
{
    (void)ud;
    blk *b = malloc(sizeof *b + n);
    if (!b)
        return NULL;
    atomic_fetch_add_explicit(&T.live_blocks, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&T.total_blocks, 1, memory_order_relaxed);
    return b + 1;
}

static void count_free(void *p, void *ud)
{
    (void)ud;
    if (!p)
        return;
    atomic_fetch_sub_explicit(&T.live_blocks, 1, memory_order_relaxed);
    free((blk *)p - 1);
}

/* Append an op and publish it to readers (before the ingest). */
static void log_op(int k, int64_t rev, int del)
{
    op *o = &T.ops[T.nops];
    long prev_key = atomic_load_explicit(&T.head[k], memory_order_relaxed);
    long pl = T.live_op[k];
    *o = (op){.rev = rev, .k = k, .del = del, .prev_live = pl, .prev_key = prev_key};
    if (!del) {
        o->create = pl >= 0 ? T.ops[pl].create : rev;
        o->ver = pl >= 0 ? T.ops[pl].ver + 1 : 1;
    }
    T.live_op[k] = del ? -1 : T.nops;
    atomic_store_explicit(&T.head[k], T.nops, memory_order_release);
    T.nops++;
}

/* The op that made key k's version visible at R, or NULL (absent at R). */
static const op *state_at(int k, int64_t R)
{
    long i = atomic_load_explicit(&T.head[k], memory_order_acquire);
    while (i >= 0 && T.ops[i].rev > R)
        i = T.ops[i].prev_key;
    return i >= 0 && !T.ops[i].del ? &T.ops[i] : NULL;
}

static int cmp_int(const void *a, const void *b)
{
    return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}

/* One revision's writes; returns the revision used. */
static int64_t write_rev(tu_rng *rng, wcache_batch *b, int64_t rev)
{
    char key[32], val[160];
    unsigned r = (unsigned)tu_below(rng, 100);
    int n = nkeys();
    wcache_code rc;
    if (r < 5) {
        rc = wcache_ingest_progress(T.c, rev);
        if (rc != WCACHE_OK)
            tfail("progress(%lld): %s", (long long)rev, wcache_strerror(rc));
        return rev;
    }
    if (r < 25) { /* a batch over distinct keys, logged in key order */
        int ks[BATCH_MAX], m = 2 + (int)tu_below(rng, BATCH_MAX - 1);
        for (int i = 0; i < m; i++) {
            int dup;
            do {
                ks[i] = (int)tu_below(rng, (uint64_t)n);
                dup = 0;
                for (int j = 0; j < i; j++)
                    dup |= ks[j] == ks[i];
            } while (dup);
        }
        qsort(ks, (size_t)m, sizeof *ks, cmp_int);
        wcache_batch_clear(b);
        for (int i = 0; i < m; i++) {
            int del = T.live_op[ks[i]] >= 0 && tu_below(rng, 3) == 0;
            int kl = key_name(ks[i], key, sizeof key);
            if (del) {
                rc = wcache_batch_delete(b, key, (size_t)kl);
            } else {
                int vl = render(ks[i], rev, val, sizeof val);
                rc = wcache_batch_put(b, key, (size_t)kl, val, (size_t)vl);
            }
            if (rc != WCACHE_OK)
                tfail("batch add: %s", wcache_strerror(rc));
            log_op(ks[i], rev, del);
        }
        rc = wcache_ingest_batch(T.c, b, rev);
    } else {
        /* a put (some on a few hot prefixes) or a delete of a live key */
        int k = r < 32 ? (int)tu_below(rng, 10 * KPP) : (int)tu_below(rng, (uint64_t)n);
        int del = r >= 80 && T.live_op[k] >= 0;
        int kl = key_name(k, key, sizeof key);
        log_op(k, rev, del);
        if (del) {
            rc = wcache_ingest_delete(T.c, key, (size_t)kl, rev);
        } else {
            int vl = render(k, rev, val, sizeof val);
            rc = wcache_ingest_put(T.c, key, (size_t)kl, val, (size_t)vl, rev);
        }
    }
    if (rc != WCACHE_OK)
        tfail("writer at %lld: %s", (long long)rev, wcache_strerror(rc));
    return rev;
}

/* The oldest revision a consumer has caught up to. */
static int64_t slowest_consumer(void)
{
    int64_t m = INT64_MAX;
    for (int i = 0; i < NCONS; i++) {
        int64_t p = atomic_load(&T.progress[i]);
        m = p < m ? p : m;
    }
    return m;
}

static void *writer_main(void *arg)
{
    int64_t rev = *(int64_t *)arg;
    tu_rng rng = {tu_seed(0x77617463685754ULL)};
    wcache_batch *b = NULL;
    if (wcache_batch_create(T.c, &b) != WCACHE_OK) {
        tfail("batch_create");
        atomic_store(&T.writer_done, 1);
        return NULL;
    }
    for (long i = 0; i < Z.nrevs && !atomic_load(&T.failed); i++) {
        /* Flow control, not a sleep: stay within LAG revisions of the
         * slowest consumer, so that the watchers given big queues never
         * overflow however the threads are scheduled. */
        while (rev - slowest_consumer() > LAG && !atomic_load(&T.failed))
            sched_yield();
        rev = write_rev(&rng, b, rev + 1);
        if (i % 32 == 0)
            sched_yield();
    }
    wcache_batch_free(b);
    atomic_store(&T.final_rev, rev);
    atomic_store(&T.writer_done, 1);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Watchers                                                                  */
/* ------------------------------------------------------------------------ */

enum { F_FINE = 1, F_COARSE, F_ALL, F_RANGE };
enum {
    M_LIVE = 1,    /* opened before the writer started, from the current revision */
    M_REPLAY,      /* from a past revision, read promptly */
    M_SLOW_REPLAY, /* from a past revision, read one event now and then */
    M_INITIAL,     /* initial events, then live */
    M_NEVER_READ   /* tiny queue, not read until the writer is done */
};

#define REC_BOOKMARK (-1)
#define REC_INITIAL_END (-2)

typedef struct rec {
    int64_t rev;
    int k; /* key, or REC_BOOKMARK / REC_INITIAL_END */
    int type;
    int64_t mod, create, ver; /* the version shown in kv */
    int64_t prev_mod;         /* prev.mod_revision, 0 if none */
} rec;

typedef struct tw {
    wcache_watch *w;
    int filter, arg, arg2; /* fine: prefix arg; coarse: arg; range: [arg, arg2) */
    int sel, prev_value, bookmarks, mode;
    int64_t start; /* deliver revisions above this (M_INITIAL: from INITIAL_END) */
    int closed_early;
    int end;      /* code the watch ended with, 0 if it did not */
    int finished; /* drained to the end (or ended) */
    uint32_t qsize;
    long skip; /* M_SLOW_REPLAY: rounds until the next read */
    rec *r;
    size_t n, cap;
} tw;

static tw *W;          /* every watcher ever opened (fixed capacity) */
static atomic_long NW; /* ... published count; slots are owned by one thread */

static int in_filter(const tw *t, int k)
{
    int p = k / KPP;
    switch (t->filter) {
    case F_FINE: return p == t->arg;
    case F_COARSE: return p / 100 == t->arg;
    case F_RANGE: return p >= t->arg && p < t->arg2;
    default: return 1;
    }
}

static wcache_code tw_open(tw *t)
{
    char a[32], b[32];
    wcache_watch_opts o = {.size = sizeof o};
    o.start_revision = t->mode == M_REPLAY || t->mode == M_SLOW_REPLAY ? t->start : 0;
    if (t->filter == F_FINE || t->filter == F_COARSE) {
        int n = t->filter == F_FINE ? snprintf(a, sizeof a, "/p/%04d/", t->arg)
                                    : snprintf(a, sizeof a, "/p/%02d", t->arg);
        o.prefix = a;
        o.prefix_len = (size_t)n;
    } else if (t->filter == F_RANGE) {
        o.start = a;
        o.start_len = (size_t)snprintf(a, sizeof a, "/p/%04d/", t->arg);
        o.end = b;
        o.end_len = (size_t)snprintf(b, sizeof b, "/p/%04d/", t->arg2);
    }
    if (t->sel) {
        o.label_selector = SELECTORS[t->sel];
        o.label_selector_len = strlen(SELECTORS[t->sel]);
    }
    o.prev_value = t->prev_value;
    o.initial_events = t->mode == M_INITIAL;
    o.bookmark_interval_ms = t->bookmarks ? 1 : 0;
    o.queue_size = t->qsize;
    return wcache_watch_open(T.c, &o, &t->w);
}

/* Check a delivery's bytes against the pure function and record it. */
static int take(tw *t, const wcache_watch_event *e)
{
    if (t->n == t->cap) {
        size_t nc = t->cap ? t->cap * 2 : 16;
        rec *nr = realloc(t->r, nc * sizeof *nr);
        TCHECK(nr != NULL, "out of memory in the test");
        t->r = nr;
        t->cap = nc;
    }
    rec *r = &t->r[t->n++];
    memset(r, 0, sizeof *r);
    r->rev = e->revision;
    r->type = (int)e->type;
    if (e->type == WCACHE_EV_BOOKMARK || e->type == WCACHE_EV_INITIAL_END) {
        r->k = e->type == WCACHE_EV_BOOKMARK ? REC_BOOKMARK : REC_INITIAL_END;
        TCHECK(e->kv.key_len == 0 && e->kv.value_len == 0, "marker at %lld carries a key",
               (long long)e->revision);
        return 0;
    }
    char name[32], want[160];
    const char *kp = e->kv.key;
    TCHECK(e->kv.key_len > 3 && e->kv.key_len < sizeof name, "event at %lld: bad key length",
           (long long)e->revision);
    memcpy(name, kp, e->kv.key_len);
    name[e->kv.key_len] = 0;
    int p = -1, j = -1;
    TCHECK(sscanf(name, "/p/%4d/k%d", &p, &j) == 2 && p >= 0 && p < Z.nprefix && j >= 0 &&
               j < KPP,
           "event at %lld: unknown key %s", (long long)e->revision, name);
    r->k = p * KPP + j;
    r->mod = e->kv.mod_revision;
    r->create = e->kv.create_revision;
    r->ver = e->kv.version;
    int wl = render(r->k, r->mod, want, sizeof want);
    TCHECK(e->kv.value_len == (size_t)wl && memcmp(e->kv.value, want, (size_t)wl) == 0,
           "event %s@%lld: value is not the one written at %lld", name, (long long)e->revision,
           (long long)r->mod);
    if (e->prev.key || e->prev.value_len || e->prev.mod_revision) {
        r->prev_mod = e->prev.mod_revision;
        wl = render(r->k, r->prev_mod, want, sizeof want);
        TCHECK(e->prev.value_len == (size_t)wl && memcmp(e->prev.value, want, (size_t)wl) == 0,
               "event %s@%lld: prev value is not the one written at %lld", name,
               (long long)e->revision, (long long)r->prev_mod);
    }
    return 0;
}

/* One next() call: record and release what it hands out.  Returns the
 * number taken, or -1 once the watch has ended (t->end set).  Every third
 * watcher borrows instead (wcache_watch_next_borrowed): what it checks in
 * take() must still be there, and nothing is released. */
static long pull(tw *t, size_t cap)
{
    wcache_watch_event evs[EVCAP];
    size_t n = 0;
    int lend = (t - W) % 3 == 0;
    wcache_code rc = lend ? wcache_watch_next_borrowed(t->w, evs, cap, &n)
                          : wcache_watch_next(t->w, evs, cap, &n);
    for (size_t i = 0; i < n; i++) {
        if (!atomic_load(&T.failed))
            take(t, &evs[i]);
        if (lend && evs[i].ev)
            tfail("a borrowed delivery carries a reference");
        wcache_event_unref(evs[i].ev);
    }
    if (rc != WCACHE_OK) {
        if (n != 0)
            tfail("next returned %s with %zu deliveries", wcache_strerror(rc), n);
        t->end = (int)rc;
        t->finished = 1;
        return -1;
    }
    return (long)n;
}

/* Take everything there is until the watch is caught up and its fd is
 * quiet (no replay left, queue empty), or until it ends. */
static int drain_all(tw *t)
{
    for (long it = 0; it < 10000000; it++) {
        long n = pull(t, EVCAP);
        if (n < 0)
            return 0;
        if (n > 0)
            continue;
        struct pollfd p = {.fd = wcache_watch_fd(t->w), .events = POLLIN};
        if (poll(&p, 1, 0) == 0) {
            t->finished = 1;
            return 0;
        }
    }
    TCHECK(0, "a watcher never ran dry");
}

/* ------------------------------------------------------------------------ */
/* Consumers                                                                 */
/* ------------------------------------------------------------------------ */

typedef struct cons {
    int id;
    tu_rng rng;
    long *mine; /* indexes into W */
    size_t nmine, capmine;
    long opened, rounds;
    long took; /* deliveries taken, to see an empty round */
} cons;

static long W_CAP;

static int own(cons *c, long i)
{
    if (c->nmine == c->capmine) {
        size_t nc = c->capmine ? c->capmine * 2 : 64;
        long *nm = realloc(c->mine, nc * sizeof *nm);
        TCHECK(nm != NULL, "out of memory in the test");
        c->mine = nm;
        c->capmine = nc;
    }
    c->mine[c->nmine++] = i;
    return 0;
}

/* A random filter for a watcher opened during the run. */
static void random_filter(tw *t, tu_rng *rng)
{
    unsigned f = (unsigned)tu_below(rng, 10);
    if (f < 6) {
        t->filter = F_FINE, t->arg = (int)tu_below(rng, (uint64_t)Z.nprefix);
    } else if (f < 8) {
        t->filter = F_COARSE, t->arg = (int)tu_below(rng, (uint64_t)(Z.nprefix + 99) / 100);
    } else if (f < 9) {
        t->filter = F_RANGE, t->arg = (int)tu_below(rng, (uint64_t)Z.nprefix);
        t->arg2 = t->arg + 1 + (int)tu_below(rng, 40);
    } else {
        t->filter = F_ALL;
    }
    t->sel = tu_below(rng, 3) == 0 ? 1 + (int)tu_below(rng, NSEL - 1) : 0;
    t->prev_value = tu_below(rng, 2) == 0;
    t->qsize = t->filter == F_FINE ? 0 : BIG_QUEUE;
}

/* Open one more watcher from a past revision or with initial events. */
static int open_dynamic(cons *c)
{
    long i = atomic_load(&NW);
    if (i >= W_CAP)
        return 0;
    tw *t = &W[i];
    memset(t, 0, sizeof *t);
    random_filter(t, &c->rng);
    unsigned m = (unsigned)tu_below(&c->rng, 8);
    t->mode = m < 3 ? M_INITIAL : m < 6 ? M_REPLAY : M_SLOW_REPLAY;
    if (t->mode == M_SLOW_REPLAY)
        t->qsize = 4;
    if (t->mode != M_INITIAL) {
        int64_t lo = wcache_cache_compacted_revision(T.c);
        int64_t hi = wcache_cache_revision(T.c);
        t->start = tu_range(&c->rng, lo > 1 ? lo : 1, hi); /* 0 would mean "now" */
    }
    wcache_code rc = tw_open(t);
    if (rc == WCACHE_ECOMPACTED && t->mode != M_INITIAL) {
        /* compaction moved past the revision since we read it */
        TCHECK(wcache_cache_compacted_revision(T.c) > t->start,
               "open at %lld: ECOMPACTED below the compacted revision %lld",
               (long long)t->start, (long long)wcache_cache_compacted_revision(T.c));
        atomic_fetch_add(&T.compacted_opens, 1);
        return 0;
    }
    TCHECK(rc == WCACHE_OK, "open (mode %d, from %lld): %s", t->mode, (long long)t->start,
           wcache_strerror(rc));
    /* Some of the prompt replays are closed after a while. */
    t->closed_early = t->mode == M_REPLAY && tu_below(&c->rng, 4) == 0 ? -1 : 0;
    atomic_store(&NW, i + 1); /* only consumers open, under cons_mu */
    atomic_fetch_add(&T.dyn_opened, 1);
    c->opened++;
    return own(c, i);
}

static pthread_mutex_t cons_mu = PTHREAD_MUTEX_INITIALIZER;

static int serve(cons *c, tw *t)
{
    if (t->finished || t->closed_early > 0)
        return 0;
    if (t->mode == M_SLOW_REPLAY) {
        if (t->skip-- > 0)
            return 0;
        t->skip = 4;
        long n = pull(t, 1);
        c->took += n > 0 ? n : 0;
        return n < -1 ? -1 : 0;
    }
    /* Until the queue is empty (n < cap), so that everything up to the
     * revision read before this round is taken: the writer's flow control
     * counts on it.  Not a bounded number of pulls: a watcher with initial
     * events may replay a backlog of up to a full queue, go live with it,
     * and then overflow before the next round if it were left there.  It
     * ends: the backlog is finite and the writer stalls within LAG
     * revisions of the progress this consumer last stored. */
    for (;;) {
        long n = pull(t, EVCAP);
        c->took += n > 0 ? n : 0;
        if (n < EVCAP)
            break;
    }
    if (t->closed_early < 0 && t->n >= 20 + (size_t)tu_below(&c->rng, 40)) {
        wcache_watch_close(t->w);
        t->w = NULL;
        t->closed_early = 1;
    }
    return 0;
}

/* Sweep every watcher with next(). */
static int sweep(cons *c)
{
    for (size_t j = 0; j < c->nmine && !atomic_load(&T.failed); j++)
        if (serve(c, &W[c->mine[j]]) != 0)
            return -1;
    return 0;
}

/* poll() the fds, serve the readable ones; the slow replayers are swept. */
static int poll_round(cons *c, struct pollfd **pfd, long **idx, size_t *cap)
{
    if (*cap < c->nmine) {
        free(*pfd), free(*idx);
        *cap = c->nmine * 2;
        *pfd = malloc(*cap * sizeof **pfd);
        *idx = malloc(*cap * sizeof **idx);
        TCHECK(*pfd && *idx, "out of memory in the test");
    }
    size_t m = 0;
    for (size_t j = 0; j < c->nmine; j++) {
        tw *t = &W[c->mine[j]];
        if (t->finished || t->closed_early > 0)
            continue;
        if (t->mode == M_SLOW_REPLAY) {
            if (serve(c, t) != 0)
                return -1;
            continue;
        }
        (*pfd)[m] = (struct pollfd){.fd = wcache_watch_fd(t->w), .events = POLLIN};
        (*idx)[m++] = c->mine[j];
    }
    /* The timeout only bounds an idle wait; nothing depends on it. */
    int r = poll(*pfd, (nfds_t)m, 5);
    TCHECK(r >= 0, "poll failed");
    for (size_t j = 0; j < m && r > 0; j++)
        if ((*pfd)[j].revents && serve(c, &W[(*idx)[j]]) != 0)
            return -1;
    return 0;
}

static void *consumer_main(void *arg)
{
    cons *c = arg;
    struct pollfd *pfd = NULL;
    long *idx = NULL;
    size_t pcap = 0;
    long want_dyn = Z.ndyn / NCONS;
    for (;;) {
        int done = atomic_load(&T.writer_done);
        int64_t cur = wcache_cache_revision(T.c);
        long took = c->took;
        int rc = c->id == NCONS - 1 ? poll_round(c, &pfd, &idx, &pcap) : sweep(c);
        atomic_store(&T.progress[c->id], cur);
        /* An empty next() makes no system call (a watch without an fd
         * has none to drain): a sweep that found nothing yields, or under
         * valgrind, which runs one thread at a time and switches at system
         * calls, it would spin a whole time slice while the writer waits. */
        if (c->took == took)
            sched_yield();
        c->rounds++;
        if (rc != 0 || atomic_load(&T.failed))
            break;
        if (done)
            break;
        /* Spread the dynamic opens over the run. */
        if (c->opened < want_dyn && tu_below(&c->rng, 4) == 0) {
            pthread_mutex_lock(&cons_mu);
            int orc = open_dynamic(c);
            pthread_mutex_unlock(&cons_mu);
            if (orc != 0)
                break;
        }
    }
    atomic_store(&T.progress[c->id], INT64_MAX); /* the writer no longer waits for us */
    /* The writer is done: take everything that is left. */
    for (size_t j = 0; j < c->nmine && !atomic_load(&T.failed); j++) {
        tw *t = &W[c->mine[j]];
        if (!t->finished && t->closed_early <= 0 && drain_all(t) != 0)
            break;
    }
    free(pfd);
    free(idx);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Readers                                                                   */
/* ------------------------------------------------------------------------ */

static int check_list(wcache_view *v, int64_t R, int p)
{
    char pre[16];
    wcache_kv items[KPP + 1];
    wcache_list_opts o = {.size = sizeof o, .prefix = pre};
    o.prefix_len = (size_t)snprintf(pre, sizeof pre, "/p/%04d/", p);
    wcache_list_result res = {.size = sizeof res};
    wcache_code rc = wcache_view_list(v, &o, items, KPP + 1, &res);
    TCHECK(rc == WCACHE_OK && res.revision == R && !res.more, "list %s@%lld: %s", pre,
           (long long)R, wcache_strerror(rc));
    size_t got = 0;
    for (int j = 0; j < KPP; j++) {
        int k = p * KPP + j;
        const op *o2 = state_at(k, R);
        if (!o2)
            continue;
        char name[32], want[160];
        int nl = key_name(k, name, sizeof name), wl = render(k, o2->rev, want, sizeof want);
        TCHECK(got < res.count, "list %s@%lld: %s missing", pre, (long long)R, name);
        const wcache_kv *kv = &items[got++];
        TCHECK(kv->key_len == (size_t)nl && memcmp(kv->key, name, (size_t)nl) == 0,
               "list %s@%lld: %s missing", pre, (long long)R, name);
        TCHECK(kv->value_len == (size_t)wl && memcmp(kv->value, want, (size_t)wl) == 0 &&
                   kv->mod_revision == o2->rev && kv->create_revision == o2->create &&
                   kv->version == o2->ver,
               "list %s@%lld: %s is not the version of %lld", pre, (long long)R, name,
               (long long)o2->rev);
    }
    TCHECK(got == res.count, "list %s@%lld: %zu items, the log has %zu", pre, (long long)R,
           res.count, got);
    uint64_t cnt = 0;
    rc = wcache_view_count(v, &o, &cnt);
    TCHECK(rc == WCACHE_OK && cnt == got, "count %s@%lld: %s %llu, want %zu", pre, (long long)R,
           wcache_strerror(rc), (unsigned long long)cnt, got);
    return 0;
}

static void *reader_main(void *arg)
{
    tu_rng rng = {tu_seed(0x7265616465ULL) + (uint64_t)(uintptr_t)arg};
    wcache_view *v = NULL;
    if (wcache_view_create(T.c, &v) != WCACHE_OK) {
        tfail("view_create");
        return NULL;
    }
    while (!atomic_load(&T.writer_done) && !atomic_load(&T.failed)) {
        int64_t lo = wcache_cache_compacted_revision(T.c), hi = wcache_cache_revision(T.c);
        int64_t R = tu_range(&rng, lo > 1 ? lo : 1, hi); /* 0 would mean "latest" */
        wcache_code rc = wcache_view_begin(v, R);
        if (rc == WCACHE_ECOMPACTED) {
            if (wcache_cache_compacted_revision(T.c) <= R) {
                tfail("view at %lld: ECOMPACTED, compacted revision %lld", (long long)R,
                      (long long)wcache_cache_compacted_revision(T.c));
                break;
            }
            continue;
        }
        if (rc != WCACHE_OK) {
            tfail("view_begin(%lld): %s", (long long)R, wcache_strerror(rc));
            break;
        }
        for (int q = 0; q < 4; q++)
            if (check_list(v, R, (int)tu_below(&rng, (uint64_t)Z.nprefix)) != 0)
                break;
        wcache_view_end(v);
        atomic_fetch_add(&T.reads, 1);
        sched_yield();
    }
    wcache_view_free(v);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* The checker, after the join                                               */
/* ------------------------------------------------------------------------ */

/* The type watcher t must see for op o, or 0 for none. */
static int expect_type(const tw *t, const op *o)
{
    int now = !o->del && sel_match(t->sel, labels_of(o->k, o->rev));
    int was = o->prev_live >= 0 && sel_match(t->sel, labels_of(o->k, T.ops[o->prev_live].rev));
    if (now)
        return was ? WCACHE_EV_MODIFIED : WCACHE_EV_ADDED;
    return was ? WCACHE_EV_DELETED : 0;
}

/* Build the expected deliveries of t after revision `from`. */
static rec *expected(const tw *t, int64_t from, size_t *out_n)
{
    long lo = 0, hi = T.nops;
    while (lo < hi) { /* first op above `from` */
        long mid = (lo + hi) / 2;
        if (T.ops[mid].rev <= from)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t n = 0, cap = 64;
    rec *e = malloc(cap * sizeof *e);
    for (long i = lo; i < T.nops && e; i++) {
        const op *o = &T.ops[i];
        if (!in_filter(t, o->k))
            continue;
        int ty = expect_type(t, o);
        if (!ty)
            continue;
        if (n == cap) {
            cap *= 2;
            rec *ne = realloc(e, cap * sizeof *e);
            if (!ne) {
                free(e);
                return NULL;
            }
            e = ne;
        }
        const op *shown = ty == WCACHE_EV_DELETED ? &T.ops[o->prev_live] : o;
        e[n++] = (rec){.rev = o->rev,
                       .k = o->k,
                       .type = ty,
                       .mod = shown->rev,
                       .create = shown->create,
                       .ver = shown->ver,
                       .prev_mod = t->prev_value && ty != WCACHE_EV_DELETED && o->prev_live >= 0
                                       ? T.ops[o->prev_live].rev
                                       : 0};
    }
    *out_n = n;
    return e;
}

static void rec_str(const rec *r, char *buf, size_t cap)
{
    snprintf(buf, cap, "{rev %lld key %d type %d mod %lld create %lld ver %lld prev %lld}",
             (long long)r->rev, r->k, r->type, (long long)r->mod, (long long)r->create,
             (long long)r->ver, (long long)r->prev_mod);
}

static int rec_cmp(const void *a, const void *b)
{
    const rec *x = a, *y = b;
    if (x->rev != y->rev)
        return x->rev < y->rev ? -1 : 1;
    return (x->k > y->k) - (x->k < y->k);
}

/* Compare got[0..n) with want[0..nw): equal, or (prefix_ok) a prefix. */
static int same_stream(long wi, const tw *t, rec *got, size_t n, const rec *want, size_t nw,
                       int prefix_ok)
{
    char a[160], b[160];
    for (size_t i = 1; i < n; i++)
        TCHECK(got[i].rev >= got[i - 1].rev,
               "watcher %ld: revision %lld after %lld (mode %d filter %d/%d sel %d)", wi,
               (long long)got[i].rev, (long long)got[i - 1].rev, t->mode, t->filter, t->arg,
               t->sel);
    /* Events of one revision (a batch) may come in any order. */
    if (n > 1)
        qsort(got, n, sizeof *got, rec_cmp);
    for (size_t i = 0; i < n && i < nw; i++) {
        if (memcmp(&got[i], &want[i], sizeof got[i]) != 0) {
            rec_str(&got[i], a, sizeof a);
            rec_str(&want[i], b, sizeof b);
            TCHECK(0,
                   "watcher %ld (mode %d filter %d/%d sel %d prev %d from %lld): event %zu "
                   "of %zu/%zu is %s, want %s",
                   wi, t->mode, t->filter, t->arg, t->sel, t->prev_value, (long long)t->start,
                   i, n, nw, a, b);
        }
    }
    TCHECK(n <= nw, "watcher %ld (mode %d): %zu events, only %zu expected (extra: rev %lld)",
           wi, t->mode, n, nw, (long long)got[nw < n ? nw : 0].rev);
    TCHECK(prefix_ok || n == nw,
           "watcher %ld (mode %d filter %d/%d sel %d from %lld, end %d): %zu events, %zu "
           "expected; first missing at rev %lld",
           wi, t->mode, t->filter, t->arg, t->sel, (long long)t->start, t->end, n, nw,
           (long long)want[n < nw ? n : 0].rev);
    return 0;
}

/* Split off the initial part of an M_INITIAL watcher and check it against
 * the state at its revision; returns the index after INITIAL_END. */
static int check_initial(long wi, tw *t, size_t *after)
{
    size_t e = 0;
    while (e < t->n && t->r[e].k != REC_INITIAL_END)
        e++;
    TCHECK(e < t->n, "watcher %ld: no INITIAL_END among %zu deliveries", wi, t->n);
    int64_t R = t->r[e].rev;
    t->start = R;
    size_t g = 0;
    for (int k = 0; k < nkeys(); k++) {
        if (!in_filter(t, k))
            continue;
        const op *o = state_at(k, R);
        if (!o || !sel_match(t->sel, labels_of(k, o->rev)))
            continue;
        TCHECK(g < e, "watcher %ld: initial events at %lld miss key %d", wi, (long long)R, k);
        const rec *r = &t->r[g++];
        TCHECK(r->k == k && r->type == WCACHE_EV_ADDED && r->rev == o->rev &&
                   r->mod == o->rev && r->create == o->create && r->ver == o->ver &&
                   r->prev_mod == 0,
               "watcher %ld: initial event %zu at %lld is key %d type %d mod %lld, want key "
               "%d at %lld",
               wi, g - 1, (long long)R, r->k, r->type, (long long)r->mod, k, (long long)o->rev);
    }
    TCHECK(g == e, "watcher %ld: %zu initial events at %lld, want %zu", wi, e, (long long)R, g);
    *after = e + 1;
    return 0;
}

/* Take the bookmarks out of t's records, checking their revisions. */
static int strip_bookmarks(long wi, tw *t, size_t from)
{
    int64_t fin = atomic_load(&T.final_rev), last = 0, bm = 0;
    size_t o = from;
    for (size_t i = from; i < t->n; i++) {
        rec r = t->r[i];
        if (r.k == REC_BOOKMARK) {
            TCHECK(
                r.rev >= last && r.rev > bm && r.rev <= fin,
                "watcher %ld: bookmark at %lld after event %lld / bookmark %lld (final %lld)",
                wi, (long long)r.rev, (long long)last, (long long)bm, (long long)fin);
            bm = r.rev;
            continue;
        }
        TCHECK(r.k >= 0, "watcher %ld: a second INITIAL_END", wi);
        TCHECK(r.rev > bm, "watcher %ld: event at %lld after a bookmark at %lld", wi,
               (long long)r.rev, (long long)bm);
        last = r.rev;
        t->r[o++] = r;
    }
    t->n = o;
    return 0;
}

static int check_watcher(long wi, tw *t)
{
    size_t from = 0;
    if (t->mode == M_INITIAL && check_initial(wi, t, &from) != 0)
        return -1;
    if (strip_bookmarks(wi, t, from) != 0)
        return -1;
    size_t nw = 0;
    rec *want = expected(t, t->start, &nw);
    TCHECK(want != NULL, "out of memory in the checker");
    int prefix_ok = 0;
    switch (t->mode) {
    case M_NEVER_READ:
        if (nw > t->qsize) {
            TCHECK(t->end == WCACHE_EOVERFLOW,
                   "never-read watcher %ld: %zu events for a queue "
                   "of %u, ended with %d",
                   wi, nw, t->qsize, t->end);
            TCHECK(t->n - from == t->qsize, "never-read watcher %ld: %zu deliveries, queue %u",
                   wi, t->n - from, t->qsize);
            prefix_ok = 1;
        } else {
            TCHECK(t->end == 0, "never-read watcher %ld: ended with %d", wi, t->end);
        }
        break;
    case M_SLOW_REPLAY:
        TCHECK(t->end == 0 || t->end == WCACHE_ECOMPACTED || t->end == WCACHE_EOVERFLOW,
               "slow replay %ld ended with %s", wi, wcache_strerror(t->end));
        prefix_ok = t->end != 0;
        break;
    case M_REPLAY:
        TCHECK(t->end == 0 || t->end == WCACHE_ECOMPACTED, "replay %ld ended with %s", wi,
               wcache_strerror(t->end));
        prefix_ok = t->end != 0 || t->closed_early;
        break;
    default:
        TCHECK(t->end == 0, "watcher %ld (mode %d) ended with %s", wi, t->mode,
               wcache_strerror(t->end));
    }
    int rc = same_stream(wi, t, t->n ? t->r + from : NULL, t->n - from, want, nw, prefix_ok);
    free(want);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* The test                                                                  */
/* ------------------------------------------------------------------------ */

static long add_static(long i, int filter, int arg, int arg2, int sel, int mode)
{
    tw *t = &W[i];
    memset(t, 0, sizeof *t);
    t->filter = filter, t->arg = arg, t->arg2 = arg2, t->sel = sel, t->mode = mode;
    t->qsize = filter == F_FINE ? 0 : BIG_QUEUE;
    if (mode == M_NEVER_READ)
        t->qsize = SLOW_QUEUE;
    return i + 1;
}

/* One eventfd per watcher: make sure the process may hold them all. */
static void fit_fd_limit(void)
{
    struct rlimit rl;
    long need = 0;
    for (;;) {
        need = (long)Z.nprefix + Z.nprefix / 100 + 64 + Z.ndyn + 256;
        if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= (rlim_t)need)
            return;
        if (rl.rlim_max >= (rlim_t)need) {
            rl.rlim_cur = (rlim_t)need;
            if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
                return;
        }
        if (Z.nprefix <= 200)
            return; /* the opens will fail and say why */
        Z.nprefix /= 2, Z.ndyn /= 2;
    }
}

START_TEST(test_watchers_readers_writer)
{
    size_run();
    fit_fd_limit();
    memset(&T, 0, sizeof T);
    pthread_mutex_init(&T.mu, NULL);
    int n = nkeys();
    T.capops = Z.nrevs * BATCH_MAX + n + 16;
    T.ops = calloc((size_t)T.capops, sizeof *T.ops);
    T.head = calloc((size_t)n, sizeof *T.head);
    T.live_op = calloc((size_t)n, sizeof *T.live_op);
    ck_assert(T.ops && T.head && T.live_op);
    for (int k = 0; k < n; k++) {
        atomic_init(&T.head[k], -1);
        T.live_op[k] = -1;
    }
    wcache_allocator al = {.size = sizeof al, .alloc = count_alloc, .free = count_free};
    ck_assert_ok(wcache_cache_create(&T.c, &al));
    ck_assert_ok(wcache_cache_set_param(T.c, WCACHE_P_RETAIN_REVISIONS, RETAIN));
    ck_assert_ok(wcache_cache_set_param(T.c, WCACHE_P_RETAIN_SECONDS, 0));
    ck_assert_ok(wcache_cache_set_param(T.c, WCACHE_P_AUTO_COMPACT, 1));
    ck_assert_ok(wcache_cache_set_param(T.c, WCACHE_P_READER_SLOTS, 4096));
    ck_assert_ok(wcache_cache_open(T.c));

    /* Revision 1: half the keys exist before anyone watches. */
    wcache_batch *b;
    ck_assert_ok(wcache_batch_create(T.c, &b));
    for (int k = 0; k < n; k += 2) {
        char key[32], val[160];
        int kl = key_name(k, key, sizeof key), vl = render(k, 1, val, sizeof val);
        ck_assert_ok(wcache_batch_put(b, key, (size_t)kl, val, (size_t)vl));
        log_op(k, 1, 0);
    }
    ck_assert_ok(wcache_ingest_batch(T.c, b, 1));
    wcache_batch_free(b);

    /* The watchers opened before the writer starts. */
    int ncoarse = (Z.nprefix + 99) / 100;
    W_CAP = Z.nprefix + ncoarse + 16 + 8 + NSLOW + Z.ndyn;
    W = calloc((size_t)W_CAP, sizeof *W);
    ck_assert_ptr_nonnull(W);
    long i = 0;
    for (int p = 0; p < Z.nprefix; p++)
        i = add_static(i, F_FINE, p, 0, p % 5 == 1 ? 1 + p / 5 % (NSEL - 1) : 0, M_LIVE);
    for (int d = 0; d < ncoarse; d++)
        i = add_static(i, F_COARSE, d, 0, d % 3 == 2 ? 4 : 0, M_LIVE);
    for (int a = 0; a < 16; a++)
        i = add_static(i, F_ALL, 0, 0, a % NSEL, M_LIVE);
    for (int r = 0; r < 8; r++) {
        int lo = (int)((long)Z.nprefix * r / 8);
        i = add_static(i, F_RANGE, lo, lo + 50, r % 2 ? 2 : 0, M_LIVE);
    }
    for (int s = 0; s < NSLOW; s++)
        i = s % 2 ? add_static(i, F_ALL, 0, 0, 0, M_NEVER_READ)
                  : add_static(i, F_COARSE, s % ncoarse, 0, 0, M_NEVER_READ);
    long nstatic = i;
    for (long j = 0; j < nstatic; j++) {
        W[j].start = 1;
        W[j].prev_value = j % 7 == 3;
        W[j].bookmarks = W[j].filter == F_COARSE && W[j].mode == M_LIVE && j % 2;
        wcache_code rc = tw_open(&W[j]);
        ck_assert_msg(rc == WCACHE_OK, "open watcher %ld: %s", j, wcache_strerror(rc));
    }
    atomic_store(&NW, nstatic);

    cons cs[NCONS];
    memset(cs, 0, sizeof cs);
    for (int c = 0; c < NCONS; c++) {
        cs[c].id = c;
        cs[c].rng.s = tu_seed(0x636f6e73ULL) + (uint64_t)c;
        atomic_store(&T.progress[c], 1);
    }
    for (long j = 0; j < nstatic; j++)
        if (W[j].mode != M_NEVER_READ)
            ck_assert_int_eq(own(&cs[j % NCONS], j), 0);

    pthread_t wt, ct[NCONS], rt[NREAD];
    int64_t rev0 = 1;
    for (int c = 0; c < NCONS; c++)
        ck_assert_int_eq(pthread_create(&ct[c], NULL, consumer_main, &cs[c]), 0);
    for (int r = 0; r < NREAD; r++)
        ck_assert_int_eq(pthread_create(&rt[r], NULL, reader_main, (void *)(uintptr_t)r), 0);
    ck_assert_int_eq(pthread_create(&wt, NULL, writer_main, &rev0), 0);
    pthread_join(wt, NULL);
    for (int c = 0; c < NCONS; c++)
        pthread_join(ct[c], NULL);
    for (int r = 0; r < NREAD; r++)
        pthread_join(rt[r], NULL);
    ck_assert_msg(!atomic_load(&T.failed), "%s", T.msg);

    /* The never-read watchers: what they kept, then why they ended. */
    for (long j = 0; j < nstatic; j++)
        if (W[j].mode == M_NEVER_READ)
            ck_assert_int_eq(drain_all(&W[j]), 0);
    ck_assert_msg(!atomic_load(&T.failed), "%s", T.msg);

    long nw = atomic_load(&NW), overflowed = 0, compacted = 0, early = 0, still_open = 0;
    wcache_wait_stat ws = {.size = sizeof ws};
    ck_assert_ok(wcache_cache_wait_stat(T.c, &ws));
    for (long j = 0; j < nw; j++) {
        overflowed += W[j].end == WCACHE_EOVERFLOW;
        compacted += W[j].end == WCACHE_ECOMPACTED;
        early += W[j].closed_early > 0;
        still_open += W[j].w != NULL;
    }
    ck_assert_uint_eq(ws.watchers, (uint64_t)still_open);
    ck_assert_uint_eq(ws.overflows, (uint64_t)overflowed);
    for (long j = 0; j < nw; j++) {
        wcache_watch_close(W[j].w);
        W[j].w = NULL;
    }
    ck_assert_ok(wcache_cache_wait_stat(T.c, &ws));
    ck_assert_uint_eq(ws.watchers, 0);

    for (long j = 0; j < nw && !atomic_load(&T.failed); j++)
        check_watcher(j, &W[j]);
    ck_assert_msg(!atomic_load(&T.failed), "%s", T.msg);

    long total = 0;
    for (long j = 0; j < nw; j++)
        total += (long)W[j].n;
    if (getenv("WCACHE_VERBOSE"))
        fprintf(stderr,
                "watch_threads: %ld watchers (%ld opened during the run, %ld closed early, "
                "%ld opens lost to compaction), %ld ops over %lld revisions, %ld deliveries "
                "checked, %ld overflowed, %ld overtaken by compaction, %ld reads, "
                "compacted to %lld\n",
                nw, atomic_load(&T.dyn_opened), early, atomic_load(&T.compacted_opens), T.nops,
                (long long)atomic_load(&T.final_rev), total, overflowed, compacted,
                atomic_load(&T.reads), (long long)wcache_cache_compacted_revision(T.c));
    ck_assert_int_ge(nw, nstatic);
    ck_assert_int_gt(wcache_cache_compacted_revision(T.c), 1); /* auto compaction ran */
    ck_assert_int_ge(overflowed, NSLOW / 2); /* at least the never-read on everything */

    wcache_cache_close(T.c);
    /* Every event reference was released: nothing the cache allocated is left. */
    ck_assert_int_eq(atomic_load(&T.live_blocks), 0);
    for (long j = 0; j < nw; j++)
        free(W[j].r);
    for (int c = 0; c < NCONS; c++)
        free(cs[c].mine);
    free(W);
    free(T.ops);
    free((void *)T.head);
    free(T.live_op);
    pthread_mutex_destroy(&T.mu);
}
END_TEST

Suite *watch_threads_suite(void)
{
    Suite *s = suite_create("watch_threads");
    TCase *tc = tcase_create("stress");
    tcase_add_test(tc, test_watchers_readers_writer);
    tcase_set_timeout(tc, tu_timeout(300));
    suite_add_tcase(s, tc);
    return s;
}
