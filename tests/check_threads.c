/*
 * check_threads.c - one writer against concurrent readers (run under TSan).
 *
 * The writer ingests puts, deletes, group batches, progress notifications,
 * a failing batch now and then, explicit compactions, and is subject to
 * automatic compaction; readers pin views at the latest or at an exact
 * revision inside the window and check that everything they read belongs
 * to exactly that one revision:
 *
 *  - group keys g<G>/k<K> are only ever written by batches covering the
 *    whole group, with value = the batch's revision (or deleted as a
 *    group), so a LIST at R must show each group all present with one value,
 *    or all absent;
 *  - every key's history (revision, value, create_revision, version,
 *    deleted) is published by the writer before it ingests that revision,
 *    so a reader pinned at R can compute what GET at R must return.
 *
 * How the history is shared race-free: per key, the writer fills an entry
 * and then publishes the entry count with a release store, before calling
 * the library; a reader loads that count with acquire after pinning R.  The
 * library's own synchronisation makes the ingest of R happen before the pin
 * at R, so every entry with revision <= R is visible.  Readers never look
 * at entries they did not acquire.
 *
 * Failures in threads are recorded (Check's assertions are only safe on
 * the test's main thread) and asserted after the join.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <watchcache.h>

#include "testutil.h"

#define NGROUPS 8
#define GROUP_KEYS 4
#define NSOLO 16
#define NKEYS (NGROUPS * GROUP_KEYS + NSOLO)
#define NREADERS 3
#define RETAIN 64

typedef struct hent {
    int64_t rev;
    int64_t create, ver;
    int deleted;
} hent; /* the value of a live version is its revision, in decimal */

typedef struct hkey {
    char name[16];
    size_t len;
    hent *h;             /* capacity nrevs + 1, never reallocated */
    _Atomic size_t n;    /* entries published */
    int64_t create, ver; /* writer-private: current incarnation */
    int live;            /* writer-private */
} hkey;

static struct {
    wcache_cache *c;
    hkey keys[NKEYS];
    long nrevs;
    atomic_int writer_done;
    atomic_int failed;
    pthread_mutex_t mu;
    char msg[1024];
    atomic_long reads, exact_reads, compacted_races;
    atomic_long rounds; /* reader rounds started, for pacing */
    /* "Fresh" keys n/<j>, each created once (value = its revision) and maybe
     * deleted once: they make the index and tree grow and shrink under
     * readers.  created[j] is written before nfresh is released past j;
     * deleted[j] (0 = live) is released before the delete is ingested. */
    _Atomic int64_t *created, *deleted;
    atomic_long nfresh;
    atomic_long changes; /* key changes applied, for the watcher's count */
    int pace;            /* writer waits for a reader round every PACE revisions */
} T;

#define PACE 128

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

static long scaled(long base)
{
    if (tu_long())
        return base * 10;
    if (getenv("WCACHE_VALGRIND"))
        return base / 8;
    if (getenv("WCACHE_TSAN"))
        return base / 3;
    return base;
}

/* ------------------------------------------------------------------------ */
/* The writer                                                                */
/* ------------------------------------------------------------------------ */

static void hist_push(int i, int64_t rev, int deleted)
{
    hkey *k = &T.keys[i];
    size_t n = atomic_load_explicit(&k->n, memory_order_relaxed);
    if (deleted) {
        k->live = 0;
    } else if (k->live) {
        k->ver++;
    } else {
        k->live = 1;
        k->create = rev;
        k->ver = 1;
    }
    k->h[n] = (hent){.rev = rev, .create = k->create, .ver = k->ver, .deleted = deleted};
    atomic_store_explicit(&k->n, n + 1, memory_order_release);
}

static void init_keys(long nrevs)
{
    for (int i = 0; i < NKEYS; i++) {
        hkey *k = &T.keys[i];
        if (i < NGROUPS * GROUP_KEYS)
            snprintf(k->name, sizeof k->name, "g%d/k%d", i / GROUP_KEYS, i % GROUP_KEYS);
        else
            snprintf(k->name, sizeof k->name, "s/%02d", i - NGROUPS * GROUP_KEYS);
        k->len = strlen(k->name);
        k->h = calloc((size_t)nrevs + 2, sizeof *k->h);
        ck_assert_ptr_nonnull(k->h);
        atomic_init(&k->n, 0);
        k->live = 0;
    }
    T.created = calloc((size_t)nrevs + 1, sizeof *T.created);
    T.deleted = calloc((size_t)nrevs + 1, sizeof *T.deleted);
    ck_assert_ptr_nonnull((void *)T.created);
    ck_assert_ptr_nonnull((void *)T.deleted);
    atomic_init(&T.nfresh, 0);
}

static int fresh_op(tu_rng *rng, int64_t rev, const char *val, int vl)
{
    char name[24];
    long n = atomic_load_explicit(&T.nfresh, memory_order_relaxed);
    if (n == 0 || tu_below(rng, 4) != 0) {
        snprintf(name, sizeof name, "n/%06ld", n);
        atomic_store_explicit(&T.created[n], rev, memory_order_relaxed);
        atomic_store_explicit(&T.nfresh, n + 1, memory_order_release);
        return wcache_ingest_put(T.c, name, strlen(name), val, (size_t)vl, rev);
    }
    for (int tries = 0; tries < 8; tries++) {
        long j = (long)tu_below(rng, (uint64_t)n);
        if (atomic_load_explicit(&T.deleted[j], memory_order_relaxed))
            continue;
        snprintf(name, sizeof name, "n/%06ld", j);
        atomic_store_explicit(&T.deleted[j], rev, memory_order_release);
        return wcache_ingest_delete(T.c, name, strlen(name), rev);
    }
    return -1; /* every try hit a deleted key: no write this time */
}

static void free_keys(void)
{
    for (int i = 0; i < NKEYS; i++)
        free(T.keys[i].h);
    free((void *)T.created);
    free((void *)T.deleted);
}

static int64_t explicit_comp; /* writer-private: last explicit compaction */

static int write_one(tu_rng *rng, wcache_batch *b, int64_t *cur)
{
    char val[24];
    int64_t rev = *cur + 1;
    int vl = snprintf(val, sizeof val, "%lld", (long long)rev);
    unsigned r = (unsigned)tu_below(rng, 100);
    wcache_code rc;
    long nchg = 1;
    if (r < 45) { /* a whole group */
        nchg = GROUP_KEYS;
        int g = (int)tu_below(rng, NGROUPS);
        int first = g * GROUP_KEYS;
        int del = T.keys[first].live && tu_below(rng, 6) == 0;
        wcache_batch_clear(b);
        for (int j = 0; j < GROUP_KEYS; j++) {
            hkey *k = &T.keys[first + j];
            rc = del ? wcache_batch_delete(b, k->name, k->len)
                     : wcache_batch_put(b, k->name, k->len, val, (size_t)vl);
            if (rc != WCACHE_OK)
                return tfail("batch add: %s", wcache_strerror(rc)), -1;
        }
        for (int j = 0; j < GROUP_KEYS; j++)
            hist_push(first + j, rev, del);
        rc = wcache_ingest_batch(T.c, b, rev);
    } else if (r < 62) {
        int i = NGROUPS * GROUP_KEYS + (int)tu_below(rng, NSOLO);
        hist_push(i, rev, 0);
        rc = wcache_ingest_put(T.c, T.keys[i].name, T.keys[i].len, val, (size_t)vl, rev);
    } else if (r < 70) {
        int i = NGROUPS * GROUP_KEYS + (int)tu_below(rng, NSOLO);
        int del = T.keys[i].live;
        hist_push(i, rev, del);
        rc = del ? wcache_ingest_delete(T.c, T.keys[i].name, T.keys[i].len, rev)
                 : wcache_ingest_put(T.c, T.keys[i].name, T.keys[i].len, val, (size_t)vl, rev);
    } else if (r < 80) {
        int frc = fresh_op(rng, rev, val, vl);
        if (frc < 0)
            return 0;
        rc = (wcache_code)frc;
    } else if (r < 85) {
        rev = *cur + 1 + (int64_t)tu_below(rng, 3);
        rc = wcache_ingest_progress(T.c, rev);
        nchg = 0;
    } else if (r < 93) {
        /* A batch that must be refused whole: group 0's first key twice. */
        wcache_batch_clear(b);
        wcache_batch_put(b, "s/00", 4, "x", 1);
        wcache_batch_put(b, T.keys[0].name, T.keys[0].len, "x", 1);
        wcache_batch_put(b, T.keys[0].name, T.keys[0].len, "y", 1);
        rc = wcache_ingest_batch(T.c, b, rev);
        if (rc != WCACHE_EEXIST)
            return tfail("bad batch: %s", wcache_strerror(rc)), -1;
        return 0;
    } else {
        int64_t target = *cur - RETAIN / 2;
        if (target > wcache_cache_compacted_revision(T.c)) {
            explicit_comp = target;
            rc = wcache_cache_compact(T.c, target);
            if (rc != WCACHE_OK)
                return tfail("compact(%lld): %s", (long long)target, wcache_strerror(rc)), -1;
        }
        return 0;
    }
    if (rc != WCACHE_OK)
        return tfail("writer at %lld: %s", (long long)rev, wcache_strerror(rc)), -1;
    *cur = rev;
    atomic_fetch_add(&T.changes, nchg);
    /* Auto compaction must keep RETAIN revisions below the current one;
     * only an explicit compaction may go further. */
    int64_t comp = wcache_cache_compacted_revision(T.c);
    if (comp > explicit_comp && comp > rev - RETAIN && comp > 0)
        return tfail("auto compaction to %lld at %lld keeps fewer than %d", (long long)comp,
                     (long long)rev, RETAIN),
               -1;
    return 0;
}

static void *writer_main(void *arg)
{
    (void)arg;
    tu_rng rng = {tu_seed(0x7772697465ULL)};
    wcache_batch *b = NULL;
    if (wcache_batch_create(T.c, &b) != WCACHE_OK) {
        tfail("batch_create");
        atomic_store(&T.writer_done, 1);
        return NULL;
    }
    int64_t cur = 0;
    explicit_comp = 0;
    for (long i = 0; i < T.nrevs && !atomic_load(&T.failed); i++) {
        if (write_one(&rng, b, &cur) != 0)
            break;
        if (T.pace && i % PACE == 0) {
            /* Make sure readers interleave with the writer even when the
             * scheduler would let it run to the end alone: wait (yielding)
             * for one more reader round.  Not a sleep: it waits on an event. */
            long want = atomic_load(&T.rounds) + 1;
            while (atomic_load(&T.rounds) < want && !atomic_load(&T.failed))
                sched_yield();
        } else if (i % 64 == 0) {
            sched_yield();
        }
    }
    wcache_batch_free(b);
    atomic_store(&T.writer_done, 1);
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* Readers                                                                   */
/* ------------------------------------------------------------------------ */

/* What GET of key i at rev must return; NULL for absent. */
static const hent *model_at(int i, int64_t rev)
{
    const hkey *k = &T.keys[i];
    size_t n = atomic_load_explicit(&k->n, memory_order_acquire);
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (k->h[mid].rev <= rev)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0 || k->h[lo - 1].deleted)
        return NULL;
    return &k->h[lo - 1];
}

static int check_kv(const wcache_kv *kv, int i, int64_t R, const char *what)
{
    const hent *e = model_at(i, R);
    const hkey *k = &T.keys[i];
    TCHECK(e != NULL, "%s %s@%lld: present, model says absent", what, k->name, (long long)R);
    char want[24];
    int wl = snprintf(want, sizeof want, "%lld", (long long)e->rev);
    TCHECK(kv->key_len == k->len && memcmp(kv->key, k->name, k->len) == 0,
           "%s %s@%lld: wrong key", what, k->name, (long long)R);
    TCHECK(kv->value_len == (size_t)wl && memcmp(kv->value, want, (size_t)wl) == 0,
           "%s %s@%lld: value %.*s, want %s", what, k->name, (long long)R, (int)kv->value_len,
           (const char *)kv->value, want);
    TCHECK(kv->mod_revision == e->rev && kv->create_revision == e->create &&
               kv->version == e->ver,
           "%s %s@%lld: mod/create/version %lld/%lld/%lld, want %lld/%lld/%lld", what, k->name,
           (long long)R, (long long)kv->mod_revision, (long long)kv->create_revision,
           (long long)kv->version, (long long)e->rev, (long long)e->create, (long long)e->ver);
    TCHECK(kv->mod_revision <= R, "%s %s: mod_revision %lld above the view's %lld", what,
           k->name, (long long)kv->mod_revision, (long long)R);
    return 0;
}

/* Index j of a fresh key n/<j>, or -1. */
static long fresh_index(const wcache_kv *kv)
{
    if (kv->key_len != 8 || memcmp(kv->key, "n/", 2) != 0)
        return -1;
    long j = 0;
    for (int q = 2; q < 8; q++) {
        char ch = ((const char *)kv->key)[q];
        if (ch < '0' || ch > '9')
            return -1;
        j = j * 10 + (ch - '0');
    }
    return j;
}

/* Whether fresh key j is live at R; acquires what the writer published. */
static int fresh_live_at(long j, int64_t R)
{
    int64_t c = atomic_load_explicit(&T.created[j], memory_order_relaxed);
    int64_t d = atomic_load_explicit(&T.deleted[j], memory_order_acquire);
    return c <= R && (d == 0 || d > R);
}

static int check_fresh_kv(const wcache_kv *kv, long j, long n, int64_t R, const char *what)
{
    TCHECK(j >= 0 && j < n, "%s@%lld: fresh key %ld not created yet (%ld so far)", what,
           (long long)R, j, n);
    TCHECK(fresh_live_at(j, R), "%s@%lld: fresh key %ld is not live there", what, (long long)R,
           j);
    int64_t c = atomic_load_explicit(&T.created[j], memory_order_relaxed);
    char want[24];
    int wl = snprintf(want, sizeof want, "%lld", (long long)c);
    TCHECK(kv->value_len == (size_t)wl && memcmp(kv->value, want, (size_t)wl) == 0 &&
               kv->mod_revision == c && kv->create_revision == c && kv->version == 1,
           "%s@%lld: fresh key %ld: value/mod/create/version wrong", what, (long long)R, j);
    return 0;
}

static int key_index(const wcache_kv *kv)
{
    for (int i = 0; i < NKEYS; i++)
        if (kv->key_len == T.keys[i].len && memcmp(kv->key, T.keys[i].name, kv->key_len) == 0)
            return i;
    return -1;
}

static int check_list_in(wcache_view *w, int64_t R, uint64_t *fp, wcache_kv *items, size_t cap);

/* A full LIST at the view's revision, checked; fingerprint for re-reads. */
static int check_list(wcache_view *w, int64_t R, uint64_t *fp)
{
    /* Room for every key that can exist at R, and one more. */
    size_t cap = (size_t)(NKEYS + atomic_load_explicit(&T.nfresh, memory_order_acquire) + 1);
    wcache_kv *items = malloc(cap * sizeof *items);
    TCHECK(items != NULL, "out of memory in the test");
    int rc = check_list_in(w, R, fp, items, cap);
    free(items);
    return rc;
}

static int check_list_in(wcache_view *w, int64_t R, uint64_t *fp, wcache_kv *items, size_t cap)
{
    wcache_list_opts o = {.size = sizeof o};
    wcache_list_result res = {.size = sizeof res};
    wcache_code rc = wcache_view_list(w, &o, items, cap, &res);
    TCHECK(rc == WCACHE_OK, "list@%lld: %s", (long long)R, wcache_strerror(rc));
    TCHECK(res.revision == R && !res.more, "list@%lld: revision %lld more %d", (long long)R,
           (long long)res.revision, res.more);
    uint64_t cnt = 0;
    rc = wcache_view_count(w, &o, &cnt);
    TCHECK(rc == WCACHE_OK && cnt == res.count, "count@%lld: %s, %llu vs list %zu",
           (long long)R, wcache_strerror(rc), (unsigned long long)cnt, res.count);
    int seen[NKEYS] = {0};
    uint64_t h = 1469598103934665603ULL;
    long n = atomic_load_explicit(&T.nfresh, memory_order_acquire);
    long nf = 0;
    for (size_t j = 0; j < res.count; j++) {
        long f = fresh_index(&items[j]);
        if (f >= 0) {
            if (check_fresh_kv(&items[j], f, n, R, "list") != 0)
                return -1;
            nf++;
            h = (h ^ (uint64_t)items[j].mod_revision ^ ((uint64_t)(NKEYS + f) << 40)) *
                1099511628211ULL;
            continue;
        }
        int i = key_index(&items[j]);
        TCHECK(i >= 0, "list@%lld: unknown key", (long long)R);
        if (check_kv(&items[j], i, R, "list") != 0)
            return -1;
        seen[i] = 1;
        h = (h ^ (uint64_t)items[j].mod_revision ^ ((uint64_t)i << 40)) * 1099511628211ULL;
    }
    long nf_want = 0;
    for (long f = 0; f < n; f++)
        nf_want += fresh_live_at(f, R);
    TCHECK(nf == nf_want, "list@%lld: %ld fresh keys, model %ld", (long long)R, nf, nf_want);
    for (int i = 0; i < NKEYS; i++)
        TCHECK(seen[i] == (model_at(i, R) != NULL), "list@%lld: %s %s", (long long)R,
               T.keys[i].name, seen[i] ? "listed but absent in the model" : "missing");
    /* A group is atomic: all keys present with one revision, or none. */
    for (int g = 0; g < NGROUPS; g++) {
        int first = g * GROUP_KEYS;
        for (int j = 1; j < GROUP_KEYS; j++) {
            TCHECK(seen[first + j] == seen[first], "list@%lld: group %d torn", (long long)R, g);
            if (seen[first]) {
                const hent *a = model_at(first, R), *b = model_at(first + j, R);
                TCHECK(a->rev == b->rev, "list@%lld: group %d mixes %lld and %lld",
                       (long long)R, g, (long long)a->rev, (long long)b->rev);
            }
        }
    }
    *fp = h ^ res.count;
    return 0;
}

static int check_gets(wcache_view *w, int64_t R, tu_rng *rng)
{
    long n = atomic_load_explicit(&T.nfresh, memory_order_acquire);
    for (int q = 0; q < 4 && n > 0; q++) {
        long j = (long)tu_below(rng, (uint64_t)n);
        char name[24];
        snprintf(name, sizeof name, "n/%06ld", j);
        wcache_kv kv;
        wcache_code rc = wcache_view_get(w, name, 8, &kv);
        if (fresh_live_at(j, R)) {
            TCHECK(rc == WCACHE_OK, "get %s@%lld: %s", name, (long long)R, wcache_strerror(rc));
            if (check_fresh_kv(&kv, j, n, R, "get") != 0)
                return -1;
        } else {
            TCHECK(rc == WCACHE_ENOTFOUND, "get %s@%lld: %s, model: absent", name, (long long)R,
                   wcache_strerror(rc));
        }
    }
    for (int q = 0; q < 8; q++) {
        int i = (int)tu_below(rng, NKEYS);
        wcache_kv kv;
        wcache_code rc = wcache_view_get(w, T.keys[i].name, T.keys[i].len, &kv);
        if (model_at(i, R)) {
            TCHECK(rc == WCACHE_OK, "get %s@%lld: %s", T.keys[i].name, (long long)R,
                   wcache_strerror(rc));
            if (check_kv(&kv, i, R, "get") != 0)
                return -1;
        } else {
            TCHECK(rc == WCACHE_ENOTFOUND, "get %s@%lld: %s, model: absent", T.keys[i].name,
                   (long long)R, wcache_strerror(rc));
        }
    }
    return 0;
}

/* Page through everything in pages of 3; must equal the one-page list. */
static int check_paging(wcache_view *w, int64_t R, uint64_t fp)
{
    wcache_list_opts o = {.size = sizeof o};
    char tok[512];
    uint64_t h = 1469598103934665603ULL;
    size_t total = 0;
    long n = atomic_load_explicit(&T.nfresh, memory_order_acquire);
    for (long page = 0; page < NKEYS + n + 2; page++) {
        wcache_kv items[3];
        wcache_list_result res = {.size = sizeof res};
        wcache_code rc = wcache_view_list(w, &o, items, 3, &res);
        TCHECK(rc == WCACHE_OK, "page %ld@%lld: %s", page, (long long)R, wcache_strerror(rc));
        for (size_t j = 0; j < res.count; j++) {
            long f = fresh_index(&items[j]);
            long i = f >= 0 ? NKEYS + f : key_index(&items[j]);
            TCHECK(i >= 0, "page: unknown key");
            h = (h ^ (uint64_t)items[j].mod_revision ^ ((uint64_t)i << 40)) * 1099511628211ULL;
        }
        total += res.count;
        if (!res.more)
            break;
        TCHECK(res.token && res.token_len < sizeof tok, "page %ld: no usable token", page);
        memcpy(tok, res.token, res.token_len + 1);
        o.token = tok;
        o.token_len = res.token_len;
    }
    TCHECK((h ^ total) == fp, "paging@%lld differs from the one-page list", (long long)R);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* A watcher following the writer                                            */
/* ------------------------------------------------------------------------ */

/* Key i's history entry at exactly rev, or NULL. */
static const hent *hist_exact(int i, int64_t rev)
{
    const hkey *k = &T.keys[i];
    size_t n = atomic_load_explicit(&k->n, memory_order_acquire);
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (k->h[mid].rev < rev)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && k->h[lo].rev == rev ? &k->h[lo] : NULL;
}

static int value_is(const wcache_kv *kv, int64_t v)
{
    char want[24];
    int wl = snprintf(want, sizeof want, "%lld", (long long)v);
    return kv->value_len == (size_t)wl && memcmp(kv->value, want, (size_t)wl) == 0;
}

/* One delivered event against what the writer published for its revision. */
static int check_event(const wcache_watch_event *e)
{
    int64_t R = e->revision;
    long f = fresh_index(&e->kv);
    if (f >= 0) {
        long n = atomic_load_explicit(&T.nfresh, memory_order_acquire);
        TCHECK(f < n, "event for fresh key %ld not created yet", f);
        int64_t c = atomic_load_explicit(&T.created[f], memory_order_relaxed);
        int64_t d = atomic_load_explicit(&T.deleted[f], memory_order_acquire);
        if (e->type == WCACHE_EV_ADDED)
            TCHECK(R == c && value_is(&e->kv, c) && e->kv.version == 1,
                   "ADDED n/%ld@%lld: created at %lld", f, (long long)R, (long long)c);
        else
            TCHECK(e->type == WCACHE_EV_DELETED && R == d && value_is(&e->kv, c),
                   "event %d n/%ld@%lld: created %lld deleted %lld", (int)e->type, f,
                   (long long)R, (long long)c, (long long)d);
        return 0;
    }
    int i = key_index(&e->kv);
    TCHECK(i >= 0, "event for an unknown key");
    const hent *h = hist_exact(i, R);
    TCHECK(h != NULL, "event %d %s@%lld: the key did not change there", (int)e->type,
           T.keys[i].name, (long long)R);
    if (h->deleted) {
        TCHECK(e->type == WCACHE_EV_DELETED, "event %d %s@%lld: it was deleted there",
               (int)e->type, T.keys[i].name, (long long)R);
        const hent *p = model_at(i, R - 1);
        TCHECK(p && value_is(&e->kv, p->rev) && e->kv.mod_revision == p->rev,
               "DELETED %s@%lld: wrong last object", T.keys[i].name, (long long)R);
    } else {
        TCHECK((int)e->type == (h->ver == 1 ? WCACHE_EV_ADDED : WCACHE_EV_MODIFIED),
               "event %d %s@%lld: version %lld", (int)e->type, T.keys[i].name, (long long)R,
               (long long)h->ver);
        TCHECK(value_is(&e->kv, R) && e->kv.mod_revision == R &&
                   e->kv.create_revision == h->create && e->kv.version == h->ver,
               "event %s@%lld: wrong object", T.keys[i].name, (long long)R);
    }
    return 0;
}

typedef struct watcher_arg {
    wcache_watch *w;
    long got;
} watcher_arg;

static void *watcher_main(void *arg)
{
    watcher_arg *wa = arg;
    wcache_watch_event evs[64];
    int64_t last = 0;
    int idle = 0;
    while (!atomic_load(&T.failed)) {
        size_t n = 0;
        /* Blocks on the watch's eventfd; the timeout only bounds a hang. */
        wcache_code rc = wcache_watch_wait(wa->w, evs, 64, &n, 100);
        if (rc != WCACHE_OK) {
            tfail("watcher ended with %s after %ld events", wcache_strerror(rc), wa->got);
            break;
        }
        for (size_t i = 0; i < n; i++) {
            if (evs[i].type != WCACHE_EV_BOOKMARK && evs[i].type != WCACHE_EV_INITIAL_END) {
                if (evs[i].revision < last) {
                    tfail("event at %lld after one at %lld", (long long)evs[i].revision,
                          (long long)last);
                } else {
                    last = evs[i].revision;
                    wa->got++;
                    check_event(&evs[i]);
                }
            }
            wcache_event_unref(evs[i].ev);
        }
        if (atomic_load(&T.writer_done) && wa->got >= atomic_load(&T.changes))
            break;
        idle = n ? 0 : idle + 1;
        if (idle > 300) { /* 30 s without a delivery */
            tfail("watcher stalled at %ld of %ld events", wa->got, atomic_load(&T.changes));
            break;
        }
    }
    return NULL;
}

typedef struct reader_arg {
    int id;
    long iterations;
} reader_arg;

static int reader_round(wcache_view *w, tu_rng *rng)
{
    int64_t R;
    atomic_fetch_add(&T.rounds, 1);
    if (tu_below(rng, 3) == 0) {
        wcache_code rc = wcache_view_begin(w, WCACHE_REV_LATEST);
        TCHECK(rc == WCACHE_OK, "begin latest: %s", wcache_strerror(rc));
        R = wcache_view_revision(w);
    } else {
        int64_t lo = wcache_cache_compacted_revision(T.c);
        int64_t hi = wcache_cache_revision(T.c);
        if (lo < 1)
            lo = 1;
        if (hi < lo)
            return 0; /* nothing written yet */
        R = tu_range(rng, lo, hi);
        wcache_code rc = wcache_view_begin(w, R);
        if (rc == WCACHE_ECOMPACTED) {
            /* Compaction won the race; it only ever moves up. */
            TCHECK(wcache_cache_compacted_revision(T.c) > R,
                   "ECOMPACTED at %lld but compacted revision is %lld", (long long)R,
                   (long long)wcache_cache_compacted_revision(T.c));
            atomic_fetch_add(&T.compacted_races, 1);
            return 0;
        }
        TCHECK(rc == WCACHE_OK, "begin(%lld) in [%lld, %lld]: %s", (long long)R, (long long)lo,
               (long long)hi, wcache_strerror(rc));
        TCHECK(wcache_view_revision(w) == R, "view at %lld, asked %lld",
               (long long)wcache_view_revision(w), (long long)R);
        atomic_fetch_add(&T.exact_reads, 1);
    }
    if (R == 0) {
        wcache_view_end(w);
        return 0;
    }
    /* Stats are "any thread": consistent enough to never go backwards. */
    wcache_stat st = {.size = sizeof st};
    wcache_code src = wcache_cache_stat(T.c, &st);
    TCHECK(src == WCACHE_OK && st.revision >= R && st.views_open >= 1,
           "stat while pinned at %lld: %s, revision %lld, views_open %llu", (long long)R,
           wcache_strerror(src), (long long)st.revision, (unsigned long long)st.views_open);
    uint64_t fp = 0, fp2 = 0;
    if (check_list(w, R, &fp) != 0 || check_gets(w, R, rng) != 0 || check_paging(w, R, fp) != 0)
        return -1;
    /* Hold the pin while the writer moves on (and compacts past R), then
     * read again: the view must not change under us. */
    for (int y = 0; y < 4; y++)
        sched_yield();
    if (check_list(w, R, &fp2) != 0)
        return -1;
    TCHECK(fp == fp2, "list@%lld changed while pinned", (long long)R);
    wcache_view_end(w);
    atomic_fetch_add(&T.reads, 1);
    return 0;
}

static void *reader_main(void *arg)
{
    reader_arg *ra = arg;
    tu_rng rng = {tu_seed(0x7265616400ULL) + (uint64_t)ra->id};
    wcache_view *w = NULL;
    if (wcache_view_create(T.c, &w) != WCACHE_OK) {
        tfail("view_create");
        return NULL;
    }
    long after_done = 0;
    while (!atomic_load(&T.failed) && after_done < 20) {
        if (atomic_load(&T.writer_done))
            after_done++;
        if (reader_round(w, &rng) != 0)
            break;
        ra->iterations++;
    }
    wcache_view_free(w);
    return NULL;
}

static void open_cache(long nrevs)
{
    memset(&T, 0, sizeof T);
    pthread_mutex_init(&T.mu, NULL);
    T.nrevs = nrevs;
    ck_assert_ok(wcache_cache_create(&T.c, NULL));
    ck_assert_ok(wcache_cache_set_param(T.c, WCACHE_P_RETAIN_REVISIONS, RETAIN));
    ck_assert_ok(wcache_cache_set_param(T.c, WCACHE_P_RETAIN_SECONDS, 0));
    ck_assert_ok(wcache_cache_open(T.c));
    init_keys(nrevs);
}

static void close_cache(void)
{
    wcache_stat st = {.size = sizeof st};
    ck_assert_ok(wcache_cache_stat(T.c, &st));
    ck_assert_uint_eq(st.views_open, 0);
    wcache_cache_close(T.c);
    free_keys();
    pthread_mutex_destroy(&T.mu);
}

START_TEST(test_writer_vs_readers)
{
    open_cache(scaled(30000));
    T.pace = 1;
    /* A live watcher on every key, consumed on its own thread; its queue is
     * large enough that it never counts as slow. */
    wcache_watch_opts wo = {.size = sizeof wo, .queue_size = 1u << 22};
    watcher_arg wa = {0};
    ck_assert_ok(wcache_watch_open(T.c, &wo, &wa.w));
    pthread_t wt, rt[NREADERS], vt;
    ck_assert_int_eq(pthread_create(&vt, NULL, watcher_main, &wa), 0);
    reader_arg ra[NREADERS];
    for (int i = 0; i < NREADERS; i++) {
        ra[i] = (reader_arg){.id = i};
        ck_assert_int_eq(pthread_create(&rt[i], NULL, reader_main, &ra[i]), 0);
    }
    ck_assert_int_eq(pthread_create(&wt, NULL, writer_main, NULL), 0);
    pthread_join(wt, NULL);
    for (int i = 0; i < NREADERS; i++)
        pthread_join(rt[i], NULL);
    pthread_join(vt, NULL);
    wcache_watch_close(wa.w);
    ck_assert_msg(!atomic_load(&T.failed), "%s", T.msg);
    ck_assert_int_eq(wa.got, atomic_load(&T.changes)); /* each change exactly once */
    if (getenv("WCACHE_VERBOSE"))
        fprintf(stderr,
                "threads: %ld revisions, %ld reads (%ld exact, %ld lost to compaction), "
                "compacted to %lld\n",
                T.nrevs, atomic_load(&T.reads), atomic_load(&T.exact_reads),
                atomic_load(&T.compacted_races),
                (long long)wcache_cache_compacted_revision(T.c));
    for (int i = 0; i < NREADERS; i++)
        ck_assert_int_ge(ra[i].iterations, 20);
    ck_assert_int_gt(atomic_load(&T.exact_reads), 0);
    /* The writer really compacted while readers were pinned. */
    ck_assert_int_gt(wcache_cache_compacted_revision(T.c), 0);
    close_cache();
}
END_TEST

/* ------------------------------------------------------------------------ */
/* A view moves between threads                                              */
/* ------------------------------------------------------------------------ */

typedef struct handoff {
    wcache_view *w;
    int64_t R;
    int end_it;
} handoff;

static void *use_and_end(void *arg)
{
    handoff *h = arg;
    tu_rng rng = {(uint64_t)h->R};
    uint64_t fp;
    if (wcache_view_revision(h->w) != h->R) {
        tfail("handed view at %lld, want %lld", (long long)wcache_view_revision(h->w),
              (long long)h->R);
        return NULL;
    }
    if (check_list(h->w, h->R, &fp) == 0 && check_gets(h->w, h->R, &rng) == 0)
        (void)check_paging(h->w, h->R, fp);
    if (h->end_it)
        wcache_view_end(h->w);
    return NULL;
}

static void *begin_only(void *arg)
{
    handoff *h = arg;
    wcache_code rc = wcache_view_begin(h->w, h->R);
    if (rc != WCACHE_OK && rc != WCACHE_ECOMPACTED)
        tfail("begin(%lld) on a helper thread: %s", (long long)h->R, wcache_strerror(rc));
    if (rc != WCACHE_OK)
        h->R = 0;
    return NULL;
}

START_TEST(test_view_moves_between_threads)
{
    open_cache(scaled(10000));
    pthread_t wt;
    ck_assert_int_eq(pthread_create(&wt, NULL, writer_main, NULL), 0);
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(T.c, &w));
    tu_rng rng = {tu_seed(99)};
    long moved = 0;
    /* Until the writer is done, and at least 50 hand-overs happened.  Rounds
     * that find nothing to read yet yield instead of counting, so a writer
     * the scheduler starts late cannot make the test fail. */
    long tries = 0;
    for (long round = 0; (!atomic_load(&T.writer_done) || moved < 50) &&
                         !atomic_load(&T.failed) && tries < 1000000;
         round++) {
        handoff h = {.w = w};
        if (round % 2 == 0) {
            /* Begun here, used and ended there. */
            int64_t lo = wcache_cache_compacted_revision(T.c), hi = wcache_cache_revision(T.c);
            lo = lo < 1 ? 1 : lo;
            if (hi < lo) {
                sched_yield();
                continue;
            }
            tries++;
            h.R = tu_range(&rng, lo, hi);
            if (wcache_view_begin(w, h.R) != WCACHE_OK)
                continue; /* compacted meanwhile */
            h.end_it = 1;
            pthread_t t;
            ck_assert_int_eq(pthread_create(&t, NULL, use_and_end, &h), 0);
            pthread_join(t, NULL);
            ck_assert_int_eq(wcache_view_revision(w), 0);
        } else {
            /* Begun there, used and ended here. */
            int64_t hi = wcache_cache_revision(T.c);
            if (hi < 1) {
                sched_yield();
                continue;
            }
            tries++;
            h.R = hi;
            pthread_t t;
            ck_assert_int_eq(pthread_create(&t, NULL, begin_only, &h), 0);
            pthread_join(t, NULL);
            if (h.R == 0)
                continue;
            h.end_it = 0;
            use_and_end(&h);
            wcache_view_end(w);
        }
        moved++;
    }
    pthread_join(wt, NULL);
    ck_assert_msg(!atomic_load(&T.failed), "%s", T.msg);
    ck_assert_int_ge(moved, 50);
    wcache_view_free(w);
    close_cache();
}
END_TEST

/* Many views pinned and ended concurrently with few reader slots. */
static void *slot_churn(void *arg)
{
    int *ok = arg;
    wcache_view *w = NULL;
    if (wcache_view_create(T.c, &w) != WCACHE_OK) {
        tfail("view_create");
        return NULL;
    }
    tu_rng rng = {(uint64_t)(uintptr_t)arg};
    for (int i = 0; i < 2000 && !atomic_load(&T.failed); i++) {
        /* Half latest, half an exact revision at the window's low edge,
         * where a pin races with the writer's compaction. */
        int64_t want = WCACHE_REV_LATEST;
        if (i % 2) {
            int64_t lo = wcache_cache_compacted_revision(T.c);
            want = lo + (int64_t)tu_below(&rng, 3);
            if (want < 1 || want > wcache_cache_revision(T.c))
                want = WCACHE_REV_LATEST;
        }
        wcache_code rc = wcache_view_begin(w, want);
        if (rc == WCACHE_EBUSY)
            continue;
        if (rc == WCACHE_ECOMPACTED && want != WCACHE_REV_LATEST &&
            wcache_cache_compacted_revision(T.c) > want)
            continue;
        if (rc != WCACHE_OK) {
            tfail("churn begin(%lld): %s", (long long)want, wcache_strerror(rc));
            break;
        }
        int64_t R = wcache_view_revision(w);
        if (R > 0) {
            if (check_gets(w, R, &rng) != 0)
                break;
        }
        (*ok)++;
        wcache_view_end(w);
    }
    wcache_view_free(w);
    return NULL;
}

START_TEST(test_reader_slot_churn)
{
    memset(&T, 0, sizeof T);
    pthread_mutex_init(&T.mu, NULL);
    T.nrevs = scaled(10000);
    ck_assert_ok(wcache_cache_create(&T.c, NULL));
    ck_assert_ok(wcache_cache_set_param(T.c, WCACHE_P_READER_SLOTS, 2));
    ck_assert_ok(wcache_cache_set_param(T.c, WCACHE_P_RETAIN_REVISIONS, RETAIN));
    ck_assert_ok(wcache_cache_set_param(T.c, WCACHE_P_RETAIN_SECONDS, 0));
    ck_assert_ok(wcache_cache_open(T.c));
    init_keys(T.nrevs);
    pthread_t wt, rt[4];
    int ok[4] = {0};
    ck_assert_int_eq(pthread_create(&wt, NULL, writer_main, NULL), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&rt[i], NULL, slot_churn, &ok[i]), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(rt[i], NULL);
    pthread_join(wt, NULL);
    ck_assert_msg(!atomic_load(&T.failed), "%s", T.msg);
    ck_assert_int_gt(ok[0] + ok[1] + ok[2] + ok[3], 0);
    close_cache();
}
END_TEST

Suite *threads_suite(void)
{
    Suite *s = suite_create("threads");
    TCase *tc = tcase_create("stress");
    tcase_add_test(tc, test_writer_vs_readers);
    tcase_add_test(tc, test_view_moves_between_threads);
    tcase_add_test(tc, test_reader_slot_churn);
    tcase_set_timeout(tc, tu_timeout(300));
    suite_add_tcase(s, tc);
    return s;
}
