/*
 * check_model.c - model-based randomized test of the core cache.
 *
 * A deliberately naive reference model (every version of every key kept in
 * an array, looked up by binary search on the revision) is driven by the
 * same random stream of puts, deletes, batches (some built to fail),
 * progress notifications, compactions, long-held views and paused
 * paginations as the library.  At intervals every read the library offers
 * is compared with the model at random revisions inside the readable window,
 * and reads outside it must fail with ECOMPACTED / EFUTURE.
 *
 * The key space is small (200 keys of 1-4 bytes over an alphabet with NUL,
 * 0x7f, 0x80 and 0xff) so that re-creations, deletes of absent keys, shared
 * prefixes and byte-order corner cases are frequent.
 *
 * A failure prints the seed and step; WCACHE_SEED=<seed> replays the run.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <watchcache.h>

#include "testutil.h"

#define NK 200
#define KMAX 4
#define MAX_HELD 4
#define MAX_PENDING 4

typedef struct mver {
    int64_t rev, create, ver;
    int deleted;
    unsigned char *val;
    size_t vlen;
} mver;

typedef struct mkey {
    unsigned char k[KMAX];
    size_t klen;
    mver *v;
    size_t n, cap;
} mkey;

/* A LIST range: everything, a prefix, or [start, end) (empty = open). */
typedef struct mrange {
    int kind; /* 0 all, 1 prefix, 2 range */
    unsigned char a[KMAX + 1], b[KMAX + 1];
    size_t alen, blen;
} mrange;

typedef struct pending {
    char *tok;
    int64_t rev;
    mrange rg;
    size_t consumed;
    size_t cap;
} pending;

typedef struct held {
    wcache_view *w;
    int64_t rev;
} held;

/* The whole run's state; one per test, reset in model_setup. */
static struct {
    mkey keys[NK];
    int64_t cur, comp;
    uint64_t seed;
    long step;
    tu_rng rng;
    wcache_cache *c;
    wcache_view *w; /* scratch view for checks */
    held held[MAX_HELD];
    pending pend[MAX_PENDING];
    int auto_keep; /* RETAIN_REVISIONS under auto compaction, 0 = off */
    int loaded;    /* the run started with wcache_ingest_load() */
    uint64_t last_compactions;
    /* Every applied change in order, for the watchers that follow the run:
     * key, index of the new version (put) and of the previous live one. */
    struct mev {
        int64_t rev;
        int key, type;
        long now, prev; /* version indexes in keys[key].v; -1: none */
    } * log;
    size_t nlog, caplog;
    int log_events;
    struct mwatch {
        wcache_watch *w;
        mrange rg;
        size_t next;   /* first log entry not yet fully delivered */
        uint32_t done; /* entries of next's revision already delivered */
        long delivered, reopened, relisted;
        int live_only; /* opened at the current revision: nothing to replay */
        int64_t from;  /* start_revision it was opened with */
    } watch[2];
    /* Variant 3: random allocation failures around every write. */
    int chaos;
    tu_alloc_state al;
    long n_enomem;
    long n_auto; /* automatic compactions observed */
    /* Variant 2: age-based retention on a fake clock. */
    int age_s; /* RETAIN_SECONDS, 0 = not this variant */
    tu_clock clk;
    int64_t *rev_time; /* ingest time of each revision (index = revision) */
    int64_t rev_time_cap;
    long n_ok_puts, n_ok_dels, n_batches, n_fail_batches, n_verifies, n_compacts;
    long n_changes, n_fail_changes;
} M;

#define MCHECK(cond, ...)                                                                \
    do {                                                                                 \
        if (!(cond)) {                                                                   \
            char msg_[512];                                                              \
            snprintf(msg_, sizeof msg_, __VA_ARGS__);                                    \
            ck_abort_msg("seed %llu step %ld (replay with WCACHE_SEED=%llu): %s",        \
                         (unsigned long long)M.seed, M.step, (unsigned long long)M.seed, \
                         msg_);                                                          \
        }                                                                                \
    } while (0)

#define MRC(expr, want)                                                                        \
    do {                                                                                       \
        int g_ = (int)(expr), w_ = (int)(want);                                                \
        MCHECK(g_ == w_, "%s = %s, want %s", #expr, wcache_strerror(g_), wcache_strerror(w_)); \
    } while (0)

/* ------------------------------------------------------------------------ */
/* The model                                                                 */
/* ------------------------------------------------------------------------ */

static int key_order(const void *a, const void *b)
{
    const mkey *x = a, *y = b;
    return tu_keycmp(x->k, x->klen, y->k, y->klen);
}

/* 200 distinct keys, sorted, so that key index order is the LIST order. */
static void make_keys(void)
{
    static const unsigned char alpha[] = {0x00, 0x01, 'a', 'b', 0x7f, 0x80, 0xfe, 0xff};
    int n = 0;
    while (n < NK) {
        mkey k;
        memset(&k, 0, sizeof k);
        k.klen = 1 + tu_below(&M.rng, KMAX);
        for (size_t i = 0; i < k.klen; i++)
            k.k[i] = alpha[tu_below(&M.rng, sizeof alpha)];
        int dup = 0;
        for (int j = 0; j < n && !dup; j++)
            dup = tu_keycmp(k.k, k.klen, M.keys[j].k, M.keys[j].klen) == 0;
        if (!dup)
            M.keys[n++] = k;
    }
    qsort(M.keys, NK, sizeof M.keys[0], key_order);
}

/* The version of key i visible at rev; NULL when absent. */
static const mver *m_at(int i, int64_t rev)
{
    const mkey *k = &M.keys[i];
    size_t lo = 0, hi = k->n; /* first entry with rev > target */
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (k->v[mid].rev <= rev)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0 || k->v[lo - 1].deleted)
        return NULL;
    return &k->v[lo - 1];
}

static int m_live(int i)
{
    return m_at(i, INT64_MAX) != NULL;
}

static mver *m_append(int i, int64_t rev)
{
    mkey *k = &M.keys[i];
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 8;
        k->v = realloc(k->v, k->cap * sizeof *k->v);
        ck_assert_ptr_nonnull(k->v);
    }
    mver *v = &k->v[k->n++];
    memset(v, 0, sizeof *v);
    v->rev = rev;
    return v;
}

static void m_log(int i, int type, long now, long prev, int64_t rev)
{
    if (!M.log_events)
        return;
    if (M.nlog == M.caplog) {
        M.caplog = M.caplog ? M.caplog * 2 : 1024;
        M.log = realloc(M.log, M.caplog * sizeof *M.log);
        ck_assert_ptr_nonnull(M.log);
    }
    M.log[M.nlog++] =
        (struct mev){.rev = rev, .key = i, .type = type, .now = now, .prev = prev};
}

/* Index of key i's live version, or -1. */
static long m_live_idx(int i)
{
    const mkey *k = &M.keys[i];
    return k->n && !k->v[k->n - 1].deleted ? (long)k->n - 1 : -1;
}

static void m_put(int i, const unsigned char *val, size_t vlen, int64_t rev)
{
    long pidx = m_live_idx(i);
    m_log(i, pidx >= 0 ? WCACHE_EV_MODIFIED : WCACHE_EV_ADDED, (long)M.keys[i].n, pidx, rev);
    const mver *prev = m_at(i, INT64_MAX);
    int64_t create = prev ? prev->create : rev;
    int64_t ver = prev ? prev->ver + 1 : 1;
    mver *v = m_append(i, rev);
    v->create = create;
    v->ver = ver;
    v->val = malloc(vlen ? vlen : 1);
    memcpy(v->val, val, vlen);
    v->vlen = vlen;
}

static void m_del(int i, int64_t rev)
{
    m_log(i, WCACHE_EV_DELETED, -1, m_live_idx(i), rev);
    m_append(i, rev)->deleted = 1;
}

static int in_range(const mrange *r, int i)
{
    const mkey *k = &M.keys[i];
    switch (r->kind) {
    case 1: return k->klen >= r->alen && memcmp(k->k, r->a, r->alen) == 0;
    case 2:
        if (r->alen && tu_keycmp(k->k, k->klen, r->a, r->alen) < 0)
            return 0;
        if (r->blen && tu_keycmp(k->k, k->klen, r->b, r->blen) >= 0)
            return 0;
        return 1;
    default: return 1;
    }
}

/* Key indexes live at rev inside r, in order; returns how many. */
static size_t m_list(const mrange *r, int64_t rev, int *out)
{
    size_t n = 0;
    for (int i = 0; i < NK; i++)
        if (in_range(r, i) && m_at(i, rev))
            out[n++] = i;
    return n;
}

/* ------------------------------------------------------------------------ */
/* Comparing the library with the model                                      */
/* ------------------------------------------------------------------------ */

static void expect_kv(const wcache_kv *kv, int i, int64_t rev, const char *what)
{
    char b1[64], b2[64];
    const mkey *k = &M.keys[i];
    const mver *v = m_at(i, rev);
    MCHECK(v != NULL, "%s@%lld: model has no %s", what, (long long)rev,
           tu_hex(k->k, k->klen, b1, sizeof b1));
    MCHECK(kv->key_len == k->klen && memcmp(kv->key, k->k, k->klen) == 0,
           "%s@%lld: key %s, want %s", what, (long long)rev,
           tu_hex(kv->key, kv->key_len, b1, sizeof b1), tu_hex(k->k, k->klen, b2, sizeof b2));
    MCHECK(kv->value_len == v->vlen &&
               (v->vlen == 0 || memcmp(kv->value, v->val, v->vlen) == 0),
           "%s@%lld key %s: value %s, want %s", what, (long long)rev,
           tu_hex(k->k, k->klen, b1, sizeof b1),
           tu_hex(kv->value, kv->value_len, b2, sizeof b2), "(model value)");
    MCHECK(kv->create_revision == v->create && kv->mod_revision == v->rev &&
               kv->version == v->ver,
           "%s@%lld key %s: create/mod/version %lld/%lld/%lld, want %lld/%lld/%lld", what,
           (long long)rev, tu_hex(k->k, k->klen, b1, sizeof b1), (long long)kv->create_revision,
           (long long)kv->mod_revision, (long long)kv->version, (long long)v->create,
           (long long)v->rev, (long long)v->ver);
}

static wcache_list_opts opts_for(const mrange *r)
{
    wcache_list_opts o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    if (r->kind == 1) {
        o.prefix = r->a;
        o.prefix_len = r->alen;
    } else if (r->kind == 2) {
        o.start = r->alen ? r->a : NULL;
        o.start_len = r->alen;
        o.end = r->blen ? r->b : NULL;
        o.end_len = r->blen;
    }
    return o;
}

static wcache_watch_opts opts_for_watch(const mrange *r)
{
    wcache_list_opts l = opts_for(r);
    wcache_watch_opts o;
    memset(&o, 0, sizeof o);
    o.size = sizeof o;
    o.prefix = l.prefix;
    o.prefix_len = l.prefix_len;
    o.start = l.start;
    o.start_len = l.start_len;
    o.end = l.end;
    o.end_len = l.end_len;
    o.prev_value = 1;
    /* Drained at least every 97 steps of at most 24 changes each: 16384
     * slots are never "slow", and overflow would fail the run, not hide.
     * Not more: the queue is allocated (and zeroed) at every re-open. */
    o.queue_size = 1 << 14;
    return o;
}

static void random_bytes(unsigned char *p, size_t *len, size_t max)
{
    static const unsigned char alpha[] = {0x00, 0x01, 'a', 'b', 0x7f, 0x80, 0xfe, 0xff};
    *len = tu_below(&M.rng, max + 1);
    for (size_t i = 0; i < *len; i++)
        p[i] = tu_below(&M.rng, 4) ? alpha[tu_below(&M.rng, sizeof alpha)]
                                   : (unsigned char)tu_below(&M.rng, 256);
}

static void random_range(mrange *r)
{
    memset(r, 0, sizeof *r);
    r->kind = (int)tu_below(&M.rng, 3);
    if (r->kind == 1) {
        if (tu_below(&M.rng, 2)) { /* the prefix of a real key: never empty */
            const mkey *k = &M.keys[tu_below(&M.rng, NK)];
            r->alen = 1 + tu_below(&M.rng, k->klen);
            memcpy(r->a, k->k, r->alen);
        } else {
            do
                random_bytes(r->a, &r->alen, 2);
            while (r->alen == 0);
        }
    } else if (r->kind == 2) {
        random_bytes(r->a, &r->alen, KMAX);
        random_bytes(r->b, &r->blen, KMAX);
    }
}

/* One LIST of the whole range at the view's revision, in one page. */
static void check_full_list(wcache_view *w, const mrange *r, int64_t rev)
{
    static wcache_kv items[NK + 1];
    static int want[NK];
    size_t n = m_list(r, rev, want);
    wcache_list_opts o = opts_for(r);
    wcache_list_result res = {.size = sizeof res};
    MRC(wcache_view_list(w, &o, items, NK + 1, &res), WCACHE_OK);
    MCHECK(res.count == n, "list@%lld (kind %d): %zu items, model %zu", (long long)rev, r->kind,
           res.count, n);
    MCHECK(res.more == 0 && res.token == NULL, "list@%lld: more with a page of %d",
           (long long)rev, NK + 1);
    MCHECK(res.revision == rev, "list revision %lld, want %lld", (long long)res.revision,
           (long long)rev);
    for (size_t j = 0; j < n; j++)
        expect_kv(&items[j], want[j], rev, "list");
    uint64_t cnt = UINT64_MAX;
    MRC(wcache_view_count(w, &o, &cnt), WCACHE_OK);
    MCHECK(cnt == n, "count@%lld = %llu, model %zu", (long long)rev, (unsigned long long)cnt,
           n);
}

/*
 * Page through r at the view's revision from token tok (NULL: the start),
 * having already seen `consumed` items, and compare with the model.
 * Stops after max_pages pages (0: run to the end); returns the token to
 * resume from (malloc'ed) or NULL at the end.
 */
static char *check_pages(wcache_view *w, const mrange *r, int64_t rev, char *tok,
                         size_t *consumed, size_t cap, int max_pages)
{
    static wcache_kv items[32];
    static int want[NK];
    size_t n = m_list(r, rev, want);
    wcache_list_opts o = opts_for(r);
    for (int page = 0; max_pages == 0 || page < max_pages; page++) {
        wcache_list_result res = {.size = sizeof res};
        o.token = tok;
        o.token_len = tok ? strlen(tok) : 0;
        o.count_remaining = (int)tu_below(&M.rng, 2);
        MRC(wcache_view_list(w, &o, items, cap, &res), WCACHE_OK);
        free(tok);
        tok = NULL;
        size_t left = n - *consumed;
        size_t expect = left < cap ? left : cap;
        MCHECK(res.count == expect, "page@%lld after %zu: %zu items, model %zu (cap %zu)",
               (long long)rev, *consumed, res.count, expect, cap);
        MCHECK(res.revision == rev, "page revision %lld, want %lld", (long long)res.revision,
               (long long)rev);
        for (size_t j = 0; j < res.count; j++)
            expect_kv(&items[j], want[*consumed + j], rev, "page");
        *consumed += res.count;
        MCHECK(res.more == (*consumed < n), "page@%lld: more=%d with %zu of %zu",
               (long long)rev, res.more, *consumed, n);
        if (o.count_remaining)
            MCHECK(res.remaining == (int64_t)(n - *consumed), "remaining %lld, model %zu",
                   (long long)res.remaining, n - *consumed);
        else /* "0 on the last page and otherwise -1 unless count_remaining" */
            MCHECK(res.remaining == (*consumed == n ? 0 : -1),
                   "remaining %lld without count_remaining, model %zu left",
                   (long long)res.remaining, n - *consumed);
        if (!res.more) {
            MCHECK(res.token == NULL, "token on the last page");
            return NULL;
        }
        MCHECK(res.token && res.token_len == strlen(res.token), "bad token on a full page");
        int64_t trev = -1;
        MRC(wcache_token_revision(res.token, res.token_len, &trev), WCACHE_OK);
        MCHECK(trev == rev, "token revision %lld, view %lld", (long long)trev, (long long)rev);
        tok = strdup(res.token);
    }
    return tok;
}

/* Everything readable through a view already pinned at rev. */
static void check_view(wcache_view *w, int64_t rev, int thorough)
{
    MCHECK(wcache_view_revision(w) == rev, "view at %lld, want %lld",
           (long long)wcache_view_revision(w), (long long)rev);
    int step = thorough ? 1 : 7;
    for (int i = (int)tu_below(&M.rng, (uint64_t)step); i < NK; i += step) {
        wcache_kv kv;
        int rc = wcache_view_get(w, M.keys[i].k, M.keys[i].klen, &kv);
        if (m_at(i, rev)) {
            MRC(rc, WCACHE_OK);
            expect_kv(&kv, i, rev, "get");
        } else {
            char b[64];
            MCHECK(rc == WCACHE_ENOTFOUND, "get %s@%lld = %s, model: absent",
                   tu_hex(M.keys[i].k, M.keys[i].klen, b, sizeof b), (long long)rev,
                   wcache_strerror(rc));
        }
    }
    mrange all = {0};
    check_full_list(w, &all, rev);
    mrange r;
    random_range(&r);
    check_full_list(w, &r, rev);
    size_t consumed = 0;
    char *t = check_pages(w, &r, rev, NULL, &consumed, 1 + tu_below(&M.rng, 24), 0);
    MCHECK(t == NULL, "paging did not finish");
}

static int64_t rand_rev_in_window(void)
{
    /* Revision 0 means "latest", so the exact empty state before revision 1
     * cannot be asked for: the window starts at 1 once anything happened. */
    int64_t lo = M.comp > 0 || M.cur == 0 ? M.comp : 1;
    /* Bias to the edges, where off-by-one bugs live. */
    switch (tu_below(&M.rng, 4)) {
    case 0: return lo;
    case 1: return M.cur;
    default: return tu_range(&M.rng, lo, M.cur);
    }
}

/* ------------------------------------------------------------------------ */
/* Watchers following the run                                                */
/* ------------------------------------------------------------------------ */

static int kv_is_version(const wcache_kv *kv, int i, const mver *v)
{
    const mkey *k = &M.keys[i];
    return kv->key_len == k->klen && memcmp(kv->key, k->k, k->klen) == 0 &&
           kv->value_len == v->vlen &&
           (v->vlen == 0 || memcmp(kv->value, v->val, v->vlen) == 0) &&
           kv->mod_revision == v->rev && kv->create_revision == v->create &&
           kv->version == v->ver;
}

static void watch_open_from(struct mwatch *mw, int64_t from)
{
    wcache_watch_opts o = opts_for_watch(&mw->rg);
    o.start_revision = from;
    int rc = wcache_watch_open(M.c, &o, &mw->w);
    if (rc == WCACHE_ECOMPACTED && from > 0) {
        MCHECK(from < M.comp, "watch from %lld refused as compacted (compacted %lld)",
               (long long)from, (long long)M.comp);
        /* A Kubernetes client re-lists; here: follow from the current revision. */
        mw->relisted++;
        from = 0;
        o.start_revision = 0;
        rc = wcache_watch_open(M.c, &o, &mw->w);
    }
    MRC(rc, WCACHE_OK);
    /* Expect every change above from (0: above the current revision). */
    int64_t after = from ? from : M.cur;
    size_t lo = 0, hi = M.nlog;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (M.log[mid].rev <= after)
            lo = mid + 1;
        else
            hi = mid;
    }
    mw->next = lo;
    mw->done = 0;
    mw->live_only = after == M.cur;
    mw->from = from;
}

/* Skip log entries the watcher's range does not select. */
static void watch_skip(struct mwatch *mw)
{
    while (mw->next < M.nlog && !mw->done && !in_range(&mw->rg, M.log[mw->next].key))
        mw->next++;
}

static void watch_check_event(struct mwatch *mw, const wcache_watch_event *e)
{
    char b[64];
    watch_skip(mw);
    MCHECK(mw->next < M.nlog, "watcher got %d@%lld %s that no write made", (int)e->type,
           (long long)e->revision, tu_hex(e->kv.key, e->kv.key_len, b, sizeof b));
    int64_t X = M.log[mw->next].rev;
    MCHECK(e->revision == X, "watcher got an event at %lld, want the next change at %lld",
           (long long)e->revision, (long long)X);
    /* Keys within one revision may come in any order. */
    size_t j, end = mw->next;
    while (end < M.nlog && M.log[end].rev == X)
        end++;
    for (j = mw->next; j < end; j++) {
        const struct mev *m = &M.log[j];
        if (!in_range(&mw->rg, m->key) || (mw->done >> (j - mw->next) & 1))
            continue;
        const mkey *k = &M.keys[m->key];
        if (e->kv.key_len == k->klen && memcmp(e->kv.key, k->k, k->klen) == 0)
            break;
    }
    MCHECK(j < end, "watcher got %s at %lld: not changed there, or twice",
           tu_hex(e->kv.key, e->kv.key_len, b, sizeof b), (long long)X);
    const struct mev *m = &M.log[j];
    const mkey *k = &M.keys[m->key];
    MCHECK((int)e->type == m->type, "watcher: %s@%lld type %d, want %d",
           tu_hex(k->k, k->klen, b, sizeof b), (long long)X, (int)e->type, m->type);
    /* ADDED/MODIFIED carry the new version, DELETED the last one. */
    const mver *shown = &k->v[m->type == WCACHE_EV_DELETED ? m->prev : m->now];
    MCHECK(kv_is_version(&e->kv, m->key, shown), "watcher: %s@%lld type %d: wrong object",
           tu_hex(k->k, k->klen, b, sizeof b), (long long)X, m->type);
    if (m->type == WCACHE_EV_MODIFIED)
        MCHECK(kv_is_version(&e->prev, m->key, &k->v[m->prev]),
               "watcher: %s@%lld: wrong previous object", tu_hex(k->k, k->klen, b, sizeof b),
               (long long)X);
    else if (m->type == WCACHE_EV_ADDED)
        MCHECK(e->prev.key_len == 0 && e->prev.value_len == 0,
               "watcher: ADDED %s@%lld with a previous object",
               tu_hex(k->k, k->klen, b, sizeof b), (long long)X);
    mw->done |= 1u << (j - mw->next);
    mw->delivered++;
    /* The revision is complete when every selected entry was delivered. */
    int complete = 1;
    for (size_t q = mw->next; q < end; q++)
        if (in_range(&mw->rg, M.log[q].key) && !(mw->done >> (q - mw->next) & 1))
            complete = 0;
    if (complete) {
        mw->next = end;
        mw->done = 0;
    }
}

static void watch_drain(struct mwatch *mw)
{
    wcache_watch_event evs[32];
    size_t n;
    int rc;
    for (;;) {
        rc = wcache_watch_next(mw->w, evs, 32, &n);
        for (size_t i = 0; i < n; i++) {
            if (evs[i].type != WCACHE_EV_BOOKMARK && evs[i].type != WCACHE_EV_INITIAL_END)
                watch_check_event(mw, &evs[i]);
            wcache_event_unref(evs[i].ev);
        }
        if (rc != WCACHE_OK || n == 0)
            break;
    }
    if (rc == WCACHE_OK) {
        /* Delivery keeps up with ingest: nothing applied may be missing. */
        watch_skip(mw);
        MCHECK(mw->next == M.nlog && !mw->done, "watcher is %zu changes behind after draining",
               M.nlog - mw->next);
        return;
    }
    /* Ended: ECOMPACTED only with history still to replay; ENOMEM only
     * when allocations were made to fail. */
    MCHECK((rc == WCACHE_ECOMPACTED && !mw->live_only) || (M.chaos && rc == WCACHE_ENOMEM),
           "watcher (%s, opened from %lld) ended with %s",
           mw->live_only ? "nothing to replay" : "replaying", (long long)mw->from,
           wcache_strerror(rc));
    wcache_watch_close(mw->w);
    mw->w = NULL;
    mw->reopened++;
    /* Resume after the last revision delivered completely. */
    int64_t from = mw->next < M.nlog ? M.log[mw->next].rev - 1 : M.cur;
    watch_open_from(mw, from > 0 ? from : 0);
    watch_drain(mw);
}

/* Re-open a watcher from a random revision inside the window. */
static void op_rewatch(void)
{
    struct mwatch *mw = &M.watch[tu_below(&M.rng, 2)];
    watch_drain(mw);
    wcache_watch_close(mw->w);
    int64_t from = tu_below(&M.rng, 4) == 0 ? 0 : rand_rev_in_window();
    watch_open_from(mw, from);
}

static void verify(int thorough)
{
    M.n_verifies++;
    for (int k = 0; k < 2; k++) {
        int64_t rev = rand_rev_in_window();
        MRC(wcache_view_begin(M.w, rev), WCACHE_OK);
        check_view(M.w, rev, thorough);
        wcache_view_end(M.w);
    }
    MRC(wcache_view_begin(M.w, WCACHE_REV_LATEST), WCACHE_OK);
    check_view(M.w, M.cur, 0);
    if (M.comp > 1) { /* revision 0 means "latest": the lowest exact one is 1 */
        MRC(wcache_view_begin(M.w, M.comp - 1), WCACHE_ECOMPACTED);
        MRC(wcache_view_begin(M.w, tu_range(&M.rng, 1, M.comp - 1)), WCACHE_ECOMPACTED);
    }
    for (int i = 0; i < 2; i++)
        if (M.watch[i].w)
            watch_drain(&M.watch[i]);
    MRC(wcache_view_begin(M.w, M.cur + 1), WCACHE_EFUTURE);
    MRC(wcache_view_begin(M.w, M.cur + 1 + (int64_t)tu_below(&M.rng, 1000)), WCACHE_EFUTURE);
    MCHECK(wcache_view_revision(M.w) == 0, "refused begin left the view pinned");

    wcache_stat st = {.size = sizeof st};
    MRC(wcache_cache_stat(M.c, &st), WCACHE_OK);
    uint64_t live = 0;
    for (int i = 0; i < NK; i++)
        live += (uint64_t)m_live(i);
    MCHECK(st.revision == M.cur && st.compacted_revision == M.comp,
           "stat revision %lld/%lld, model %lld/%lld", (long long)st.revision,
           (long long)st.compacted_revision, (long long)M.cur, (long long)M.comp);
    uint64_t pinned = 0;
    for (int i = 0; i < MAX_HELD; i++)
        pinned += M.held[i].rev != 0;
    MCHECK(st.views_open == pinned, "stat views_open %llu, held %llu",
           (unsigned long long)st.views_open, (unsigned long long)pinned);
    MCHECK(st.compactions >= M.last_compactions, "stat compactions went down");
    M.last_compactions = st.compactions;
    MCHECK(st.history_events <= st.events || M.loaded, "history_events %llu > events %llu",
           (unsigned long long)st.history_events, (unsigned long long)st.events);
    MCHECK(st.objects == live, "stat objects %llu, model %llu", (unsigned long long)st.objects,
           (unsigned long long)live);
    /* Whether a load counts as events is not specified: skip after a load. */
    if (!M.loaded)
        MCHECK(st.events == (uint64_t)(M.n_ok_puts + M.n_ok_dels),
               "stat events %llu, model %ld", (unsigned long long)st.events,
               M.n_ok_puts + M.n_ok_dels);
}

/* ------------------------------------------------------------------------ */
/* The random operations                                                     */
/* ------------------------------------------------------------------------ */

static int64_t next_rev(void)
{
    /* Gaps are normal: a cache for one resource sees a shared counter. */
    return M.cur + (tu_below(&M.rng, 4) ? 1 : 1 + (int64_t)tu_below(&M.rng, 5));
}

/*
 * Advance the model's revision.  For the age variant, remember when each
 * event revision was applied; progress revisions get no time of their own
 * (whether a bookmark starts a new "age" is not specified), which keeps the
 * retention bound below conservative.
 */
static void set_cur(int64_t rev, int is_event)
{
    if (M.age_s && is_event && rev != M.cur) {
        MCHECK(rev < M.rev_time_cap, "revision %lld beyond the test's time table",
               (long long)rev);
        M.rev_time[rev] = M.clk.now_ns;
    }
    M.cur = rev;
}

/* Turn random allocation failures on around a write (variant 3 only). */
static void chaos(int on)
{
    if (M.chaos)
        M.al.fail_per_mille = on ? 30 : 0;
}

/* Under chaos a write may be refused for memory; the model then stays. */
static int refused_for_memory(int rc)
{
    if (M.chaos && rc == WCACHE_ENOMEM) {
        M.n_enomem++;
        return 1;
    }
    return 0;
}

/* Observe an auto compaction, checking the retention bound. */
static void after_ingest(void)
{
    int64_t c = wcache_cache_compacted_revision(M.c);
    M.n_auto += c > M.comp;
    MCHECK(wcache_cache_revision(M.c) == M.cur, "revision %lld, model %lld",
           (long long)wcache_cache_revision(M.c), (long long)M.cur);
    if (M.age_s) {
        /* Every revision applied less than age_s ago must stay readable: the
         * compacted revision may not pass the oldest such one. */
        int64_t young = M.cur;
        for (int64_t r = M.cur; r >= 1 && r > M.comp; r--)
            if (M.rev_time[r] >= 0 && M.clk.now_ns - M.rev_time[r] < M.age_s * TU_NS_PER_S)
                young = r;
        MCHECK(c >= M.comp && c <= (young > M.comp ? young : M.comp),
               "age compaction to %lld (was %lld, oldest young revision %lld)", (long long)c,
               (long long)M.comp, (long long)young);
        M.comp = c;
    } else if (M.auto_keep) {
        int64_t bound = M.cur - M.auto_keep > 0 ? M.cur - M.auto_keep : 0;
        MCHECK(c >= M.comp && c <= (bound > M.comp ? bound : M.comp),
               "auto compaction to %lld (was %lld, current %lld, keep %d)", (long long)c,
               (long long)M.comp, (long long)M.cur, M.auto_keep);
        M.comp = c;
    } else {
        MCHECK(c == M.comp, "compacted revision moved to %lld without a compaction",
               (long long)c);
    }
}

static void op_put(void)
{
    int i = (int)tu_below(&M.rng, NK);
    unsigned char val[16];
    size_t vlen;
    random_bytes(val, &vlen, sizeof val);
    if (tu_below(&M.rng, 20) == 0) { /* out of order */
        int64_t bad = M.cur - (int64_t)tu_below(&M.rng, 3);
        bad = bad < 0 ? 0 : bad; /* negative revisions may be EINVAL instead */
        MRC(wcache_ingest_put(M.c, M.keys[i].k, M.keys[i].klen, val, vlen, bad), WCACHE_EORDER);
        after_ingest();
        return;
    }
    int64_t rev = next_rev();
    chaos(1);
    int rc = wcache_ingest_put(M.c, M.keys[i].k, M.keys[i].klen, val, vlen, rev);
    chaos(0);
    if (refused_for_memory(rc)) {
        after_ingest();
        return;
    }
    MRC(rc, WCACHE_OK);
    m_put(i, val, vlen, rev);
    set_cur(rev, 1);
    M.n_ok_puts++;
    after_ingest();
}

static void op_delete(void)
{
    int i = (int)tu_below(&M.rng, NK);
    int64_t rev = next_rev();
    if (m_live(i)) {
        if (tu_below(&M.rng, 20) == 0) {
            MRC(wcache_ingest_delete(M.c, M.keys[i].k, M.keys[i].klen, M.cur), WCACHE_EORDER);
        } else {
            chaos(1);
            int rc = wcache_ingest_delete(M.c, M.keys[i].k, M.keys[i].klen, rev);
            chaos(0);
            if (!refused_for_memory(rc)) {
                MRC(rc, WCACHE_OK);
                m_del(i, rev);
                set_cur(rev, 1);
                M.n_ok_dels++;
            }
        }
    } else {
        MRC(wcache_ingest_delete(M.c, M.keys[i].k, M.keys[i].klen, rev), WCACHE_ENOTFOUND);
    }
    after_ingest();
}

/*
 * A batch of distinct keys; with fault != 0 one flaw is planted:
 * 1 a key twice (EEXIST), 2 a delete of an absent key (ENOTFOUND),
 * 3 a revision not above the current one (EORDER).
 */
static void op_batch(wcache_batch *b, int fault)
{
    int idx[8], ops[8];
    unsigned char vals[8][16];
    size_t vlens[8];
    int n = 1 + (int)tu_below(&M.rng, 8);
    for (int j = 0; j < n; j++) {
        int i, dup;
        do {
            i = (int)tu_below(&M.rng, NK);
            dup = 0;
            for (int q = 0; q < j; q++)
                dup |= idx[q] == i;
        } while (dup);
        idx[j] = i;
        ops[j] = m_live(i) && tu_below(&M.rng, 3) == 0; /* 1 = delete */
        random_bytes(vals[j], &vlens[j], 16);
    }
    wcache_batch_clear(b);
    for (int j = 0; j < n; j++) {
        const mkey *k = &M.keys[idx[j]];
        if (ops[j])
            MRC(wcache_batch_delete(b, k->k, k->klen), WCACHE_OK);
        else
            MRC(wcache_batch_put(b, k->k, k->klen, vals[j], vlens[j]), WCACHE_OK);
    }
    int64_t rev = next_rev();
    wcache_code want = WCACHE_OK;
    if (fault == 1) {
        const mkey *k = &M.keys[idx[tu_below(&M.rng, (uint64_t)n)]];
        MRC(wcache_batch_put(b, k->k, k->klen, "dup", 3), WCACHE_OK);
        want = WCACHE_EEXIST;
    } else if (fault == 2) {
        int i, used;
        do {
            i = (int)tu_below(&M.rng, NK);
            used = m_live(i);
            for (int q = 0; q < n; q++)
                used |= idx[q] == i;
        } while (used);
        MRC(wcache_batch_delete(b, M.keys[i].k, M.keys[i].klen), WCACHE_OK);
        want = WCACHE_ENOTFOUND;
    } else if (fault == 3) {
        rev = M.cur - (int64_t)tu_below(&M.rng, 2);
        rev = rev < 0 ? 0 : rev;
        want = WCACHE_EORDER;
    }
    size_t cnt = wcache_batch_count(b);
    chaos(want == WCACHE_OK);
    int rc = wcache_ingest_batch(M.c, b, rev);
    chaos(0);
    if (want == WCACHE_OK && refused_for_memory(rc))
        want = WCACHE_ENOMEM;
    MRC(rc, want);
    MCHECK(wcache_batch_count(b) == cnt, "ingest changed the batch count");
    if (want == WCACHE_OK) {
        for (int j = 0; j < n; j++) {
            if (ops[j])
                m_del(idx[j], rev);
            else
                m_put(idx[j], vals[j], vlens[j], rev);
            if (ops[j])
                M.n_ok_dels++;
            else
                M.n_ok_puts++;
        }
        set_cur(rev, 1);
        M.n_batches++;
    } else if (want != WCACHE_ENOMEM) {
        M.n_fail_batches++;
    }
    after_ingest();
}

/*
 * wcache_ingest_changes: up to 24 puts and deletes, each at its own
 * revision, keys may repeat.  With fault != 0 one change at a random
 * position is flawed: 1 a delete of a key not live at that point
 * (ENOTFOUND), 2 a revision not above the one before (EORDER), 3 an unknown
 * type (EINVAL).  The changes before the flaw (or before one refused for
 * memory) must be applied, it and the rest not.
 */
static void op_changes(int fault)
{
    enum { MAXC = 24 };
    wcache_change ch[MAXC];
    int idx[MAXC];
    unsigned char vals[MAXC][16];
    int live[NK];
    int n = 1 + (int)tu_below(&M.rng, MAXC);
    int bad = fault ? (int)tu_below(&M.rng, (uint64_t)n) : -1;
    wcache_code want = WCACHE_OK;
    int64_t rev = M.cur;
    for (int i = 0; i < NK; i++)
        live[i] = m_live(i);
    for (int j = 0; j < n; j++) {
        int i = (int)tu_below(&M.rng, NK);
        size_t vlen;
        random_bytes(vals[j], &vlen, 16);
        int del = live[i] && tu_below(&M.rng, 3) == 0;
        int64_t r = rev + (tu_below(&M.rng, 4) ? 1 : 1 + (int64_t)tu_below(&M.rng, 5));
        if (j == bad && fault == 1) {
            int ndead = 0;
            for (int q = 0; q < NK; q++)
                ndead += !live[q];
            if (ndead == 0)
                fault = 2; /* every key is live: plant a revision flaw instead */
        }
        if (j == bad && fault == 1) {
            while (live[i])
                i = (int)tu_below(&M.rng, NK);
            del = 1;
            want = WCACHE_ENOTFOUND;
        } else if (j == bad && fault == 2) {
            r = rev - (int64_t)tu_below(&M.rng, 2);
            want = WCACHE_EORDER;
        }
        idx[j] = i;
        ch[j] = (wcache_change){del ? WCACHE_CHANGE_DELETE : WCACHE_CHANGE_PUT,
                                M.keys[i].k,
                                M.keys[i].klen,
                                del ? NULL : vals[j],
                                del ? 0 : vlen,
                                r};
        if (j == bad && fault == 3) {
            ch[j].type = 7;
            want = WCACHE_EINVAL;
        }
        if (j != bad) {
            live[i] = !del;
            rev = r;
        }
    }
    size_t applied = 99;
    chaos(1);
    int rc = wcache_ingest_changes(M.c, ch, (size_t)n, &applied);
    chaos(0);
    size_t expect = bad >= 0 ? (size_t)bad : (size_t)n;
    if (M.chaos && rc == WCACHE_ENOMEM && applied <= expect) {
        M.n_enomem++;
        expect = applied;
    } else {
        MRC(rc, want);
    }
    MCHECK(applied == expect, "ingest_changes applied %zu of %d, want %zu (%s)", applied, n,
           expect, wcache_strerror(rc));
    for (size_t j = 0; j < applied; j++) {
        if (ch[j].type == WCACHE_CHANGE_DELETE) {
            m_del(idx[j], ch[j].rev);
            M.n_ok_dels++;
        } else {
            m_put(idx[j], ch[j].value, ch[j].value_len, ch[j].rev);
            M.n_ok_puts++;
        }
        set_cur(ch[j].rev, 1);
    }
    if (rc != WCACHE_OK && rc != WCACHE_ENOMEM)
        M.n_fail_changes++;
    else if (rc == WCACHE_OK)
        M.n_changes++;
    after_ingest();
}

static void op_progress(void)
{
    if (M.cur > 0 && tu_below(&M.rng, 8) == 0) {
        int64_t bad = M.cur - 1 - (int64_t)tu_below(&M.rng, 3);
        MRC(wcache_ingest_progress(M.c, bad < 0 ? 0 : bad), WCACHE_EORDER);
        after_ingest();
        return;
    }
    int64_t rev = M.cur + (int64_t)tu_below(&M.rng, 4); /* equal is a no-op */
    MRC(wcache_ingest_progress(M.c, rev), WCACHE_OK);
    set_cur(rev, 0);
    after_ingest();
}

static void op_compact(void)
{
    switch (tu_below(&M.rng, 6)) {
    case 0:
        MRC(wcache_cache_compact(M.c, M.cur + 1 + (int64_t)tu_below(&M.rng, 5)),
            WCACHE_EFUTURE);
        break;
    case 1: /* at or below: a no-op */
        MRC(wcache_cache_compact(M.c, tu_range(&M.rng, 0, M.comp)), WCACHE_OK);
        break;
    default: {
        /* Mostly small steps so the window stays wide enough to test. */
        int64_t lo = M.comp, hi = M.cur;
        int64_t target = tu_below(&M.rng, 4) ? tu_range(&M.rng, lo, lo + (hi - lo) / 3)
                                             : tu_range(&M.rng, lo, hi);
        /* compact documents no ENOMEM: under chaos it must still work */
        chaos(1);
        int rc = wcache_cache_compact(M.c, target);
        chaos(0);
        MRC(rc, WCACHE_OK);
        if (target > M.comp)
            M.comp = target;
        M.n_compacts++;
    }
    }
    MCHECK(wcache_cache_compacted_revision(M.c) == M.comp, "compacted %lld, model %lld",
           (long long)wcache_cache_compacted_revision(M.c), (long long)M.comp);
}

/* Pin a view and keep it across later writes and compactions. */
static void op_hold(void)
{
    int s = (int)tu_below(&M.rng, MAX_HELD);
    held *h = &M.held[s];
    if (h->rev) {
        /* Whatever was compacted meanwhile, the view still reads h->rev. */
        check_view(h->w, h->rev, 0);
        wcache_view_end(h->w);
        h->rev = 0;
        return;
    }
    int64_t rev = rand_rev_in_window();
    if (rev == 0)
        return; /* view_revision() cannot tell "pinned at 0" from unpinned */
    MRC(wcache_view_begin(h->w, rev), WCACHE_OK);
    h->rev = rev;
}

/* Start a pagination, or resume one started steps ago. */
static void op_paginate(void)
{
    pending *p = &M.pend[tu_below(&M.rng, MAX_PENDING)];
    if (!p->tok) {
        memset(p, 0, sizeof *p);
        p->rev = rand_rev_in_window();
        random_range(&p->rg);
        p->cap = 1 + tu_below(&M.rng, 6);
        MRC(wcache_view_begin(M.w, p->rev), WCACHE_OK);
        p->tok = check_pages(M.w, &p->rg, p->rev, NULL, &p->consumed, p->cap, 1);
        wcache_view_end(M.w);
        return;
    }
    int64_t trev = -1;
    MRC(wcache_token_revision(p->tok, strlen(p->tok), &trev), WCACHE_OK);
    MCHECK(trev == p->rev, "token revision %lld, issued at %lld", (long long)trev,
           (long long)p->rev);
    if (trev < M.comp) {
        MRC(wcache_view_begin(M.w, trev), WCACHE_ECOMPACTED);
        free(p->tok);
        p->tok = NULL;
        return;
    }
    MRC(wcache_view_begin(M.w, trev), WCACHE_OK);
    p->tok = check_pages(M.w, &p->rg, p->rev, p->tok, &p->consumed, p->cap,
                         (int)tu_below(&M.rng, 3));
    wcache_view_end(M.w);
}

static void model_run(int variant)
{
    memset(&M, 0, sizeof M);
    M.seed = tu_seed(0x5eed0000ULL + (uint64_t)variant);
    M.rng.s = M.seed;
    make_keys();
    M.auto_keep = variant == 1 ? 50 : 0;
    M.age_s = variant == 2 ? 30 : 0;
    M.chaos = variant == 3;
    /* valgrind runs the model ~25x slower: a third of the steps keep its
     * five runs near 100 s; the plain and ASan passes run them all. */
    long steps = tu_long() ? 600000 : getenv("WCACHE_VALGRIND") ? 20000 : 60000;

    M.al.fail_at = -1;
    M.al.fail_rng = M.seed;
    wcache_allocator al = tu_allocator(&M.al);
    ck_assert_ok(wcache_cache_create(&M.c, M.chaos ? &al : NULL));
    if (M.age_s) {
        M.rev_time_cap = steps * 6 + 16; /* revisions grow by at most 5 per step */
        M.rev_time = malloc((size_t)M.rev_time_cap * sizeof *M.rev_time);
        ck_assert_ptr_nonnull(M.rev_time);
        for (int64_t r = 0; r < M.rev_time_cap; r++)
            M.rev_time[r] = -1;
        M.clk.now_ns = 1000 * TU_NS_PER_S;
        ck_assert_ok(wcache_cache_set_param(M.c, WCACHE_P_RETAIN_REVISIONS, 0));
        ck_assert_ok(wcache_cache_set_param(M.c, WCACHE_P_RETAIN_SECONDS, M.age_s));
        ck_assert_ok(wcache_cache_set_clock(M.c, tu_clock_fn, &M.clk));
    } else if (M.auto_keep) {
        ck_assert_ok(wcache_cache_set_param(M.c, WCACHE_P_RETAIN_REVISIONS, M.auto_keep));
        ck_assert_ok(wcache_cache_set_param(M.c, WCACHE_P_RETAIN_SECONDS, 0));
    } else {
        ck_assert_ok(wcache_cache_set_param(M.c, WCACHE_P_AUTO_COMPACT, 0));
    }
    ck_assert_ok(wcache_cache_open(M.c));
    ck_assert_ok(wcache_view_create(M.c, &M.w));
    for (int i = 0; i < MAX_HELD; i++)
        ck_assert_ok(wcache_view_create(M.c, &M.held[i].w));
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(M.c, &b));
    /* Two watchers follow the whole run: every key, and a range. */
    M.log_events = 1;
    M.watch[0].rg.kind = 0;
    do
        random_range(&M.watch[1].rg);
    while (M.watch[1].rg.kind == 0);
    watch_open_from(&M.watch[0], 0);
    watch_open_from(&M.watch[1], 0);

    for (M.step = 0; M.step < steps; M.step++) {
        unsigned r = (unsigned)tu_below(&M.rng, 100);
        if (M.age_s) /* 0-2 s per step, and now and then a long pause */
            M.clk.now_ns += tu_below(&M.rng, 50) ? (int64_t)tu_below(&M.rng, 2 * TU_NS_PER_S)
                                                 : 40 * TU_NS_PER_S;
        if (r < 35)
            op_put();
        else if (r < 50)
            op_delete();
        else if (r < 68)
            op_batch(b, 0);
        else if (r < 74)
            op_batch(b, 1 + (int)tu_below(&M.rng, 3));
        else if (r < 77)
            op_changes(tu_below(&M.rng, 3) ? 0 : 1 + (int)tu_below(&M.rng, 3));
        else if (r < 80)
            op_progress();
        else if (r < 84)
            op_compact();
        else if (r < 88)
            op_hold();
        else if (r < 92)
            op_paginate();
        else if (r < 94)
            op_rewatch();
        /* else: a step without a write, so revisions sit still a while */
        if (M.step % 97 == 0)
            verify(M.step % (97 * 16) == 0);
    }
    verify(1);
    for (int i = 0; i < MAX_HELD; i++) {
        if (M.held[i].rev)
            check_view(M.held[i].w, M.held[i].rev, 1);
        wcache_view_free(M.held[i].w);
    }
    for (int i = 0; i < MAX_PENDING; i++)
        free(M.pend[i].tok);
    wcache_view_free(M.w);
    wcache_batch_free(b);
    long delivered = 0;
    for (int i = 0; i < 2; i++) {
        watch_drain(&M.watch[i]);
        delivered += M.watch[i].delivered;
        if (getenv("WCACHE_VERBOSE"))
            fprintf(stderr, "watcher %d: %ld events, %ld re-opened, %ld re-listed\n", i,
                    M.watch[i].delivered, M.watch[i].reopened, M.watch[i].relisted);
        wcache_watch_close(M.watch[i].w);
    }
    ck_assert_int_gt(delivered, steps / 2);
    free(M.log);
    wcache_cache_close(M.c);
    if (M.chaos) {
        ck_assert_msg(M.al.live == 0, "%ld blocks leaked", M.al.live);
        ck_assert_int_eq(M.al.bad_frees, 0);
        ck_assert_int_gt(M.n_enomem, steps / 100);
    }
    /* The run must have exercised what it claims to. */
    ck_assert_int_gt(M.n_ok_dels, steps / 20);
    ck_assert_int_gt(M.n_fail_batches, steps / 50);
    ck_assert_int_gt(M.n_changes, steps / 100);
    ck_assert_int_gt(M.n_fail_changes, steps / 400);
    ck_assert_int_gt(M.n_verifies, steps / 100);
    if (!M.auto_keep && !M.age_s)
        ck_assert_int_gt(M.n_compacts, steps / 100);
    else
        ck_assert_int_gt(M.n_auto, 10);
    free(M.rev_time);
    ck_assert_int_gt(M.comp, 0);
    for (int i = 0; i < NK; i++) {
        for (size_t j = 0; j < M.keys[i].n; j++)
            free(M.keys[i].v[j].val);
        free(M.keys[i].v);
    }
}

START_TEST(test_model_random)
{
    model_run(_i);
}
END_TEST

/*
 * The model over a loaded start: load a random state at revision R, then
 * run writes on top; the loaded metadata must carry over exactly.
 */
START_TEST(test_model_after_load)
{
    memset(&M, 0, sizeof M);
    M.seed = tu_seed(0x10adULL);
    M.rng.s = M.seed;
    make_keys();
    ck_assert_ok(wcache_cache_create(&M.c, NULL));
    ck_assert_ok(wcache_cache_set_param(M.c, WCACHE_P_AUTO_COMPACT, 0));
    ck_assert_ok(wcache_cache_open(M.c));
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(M.c, &b));
    int64_t R = 5000;
    /* Add in reverse order half the time: unsorted input. */
    int rev_order = (int)tu_below(&M.rng, 2);
    for (int q = 0; q < NK; q++) {
        int i = rev_order ? NK - 1 - q : q;
        if (tu_below(&M.rng, 3) == 0)
            continue;
        int64_t mod = tu_range(&M.rng, 1, R);
        int64_t create = tu_range(&M.rng, 1, mod);
        int64_t ver = 1 + (mod - create) / 7;
        unsigned char val[16];
        size_t vlen;
        random_bytes(val, &vlen, sizeof val);
        MRC(wcache_batch_put_meta(b, M.keys[i].k, M.keys[i].klen, val, vlen, create, mod, ver),
            WCACHE_OK);
        /* The model only knows this version; it was stored at mod. */
        mver *v = m_append(i, mod);
        v->create = create;
        v->ver = ver;
        v->val = malloc(vlen ? vlen : 1);
        memcpy(v->val, val, vlen);
        v->vlen = vlen;
    }
    MRC(wcache_ingest_load(M.c, b, R), WCACHE_OK);
    M.cur = M.comp = R;
    M.loaded = 1;
    ck_assert_ok(wcache_view_create(M.c, &M.w));
    for (int i = 0; i < MAX_HELD; i++)
        ck_assert_ok(wcache_view_create(M.c, &M.held[i].w));
    verify(1);
    long steps = tu_long() ? 150000 : 15000;
    for (M.step = 0; M.step < steps; M.step++) {
        unsigned r = (unsigned)tu_below(&M.rng, 100);
        if (r < 40)
            op_put();
        else if (r < 60)
            op_delete();
        else if (r < 80)
            op_batch(b, tu_below(&M.rng, 5) ? 0 : 1 + (int)tu_below(&M.rng, 3));
        else if (r < 85)
            op_compact();
        else if (r < 90)
            op_paginate();
        else if (r < 95)
            op_hold();
        if (M.step % 97 == 0)
            verify(0);
    }
    verify(1);
    for (int i = 0; i < MAX_HELD; i++)
        wcache_view_free(M.held[i].w);
    for (int i = 0; i < MAX_PENDING; i++)
        free(M.pend[i].tok);
    wcache_view_free(M.w);
    wcache_batch_free(b);
    wcache_cache_close(M.c);
    for (int i = 0; i < NK; i++) {
        for (size_t j = 0; j < M.keys[i].n; j++)
            free(M.keys[i].v[j].val);
        free(M.keys[i].v);
    }
}
END_TEST

Suite *model_suite(void)
{
    Suite *s = suite_create("model");
    TCase *tc = tcase_create("random");
    /* 0: explicit compaction only; 1: automatic, RETAIN_REVISIONS = 50;
     * 2: automatic, RETAIN_SECONDS = 30 on a fake clock; 3: explicit, with
     * random allocation failures around every write. */
    tcase_add_loop_test(tc, test_model_random, 0, 4);
    tcase_add_test(tc, test_model_after_load);
    tcase_set_timeout(tc, tu_timeout(300));
    suite_add_tcase(s, tc);
    return s;
}
