/*
 * index.c - secondary indexes registered by the embedder.
 *
 * Per index: a lock-free table value -> wci_vlist (readers probe it as
 * they probe hash.c's), each list an append-only array of postings; a
 * writer-only table key -> its open posting, so that a change finds what
 * to close in O(1); and a FIFO of closed postings, which closes fill in
 * revision order, so compaction to P pops exactly the postings it may drop
 * without looking at the others.
 *
 * A change moves a key between values: its open posting gets to = rev and
 * a new one opens in the new value's list.  Phase one of a commit runs the
 * extractors and allocates every posting, list and array slot the change
 * needs; phase two only stores.  Arrays grow by copy: the new one is
 * published with one release store and the old one retired, as hash.c does
 * with its tables.  A reader that loaded the old array still sees every
 * posting closed at or below its revision: those closes happened before
 * that revision was published, and so before the reader pinned it.
 *
 * Postings are stored in the arrays themselves (no allocation per change,
 * one cache miss less per match on reads); the writer finds an open one by
 * list and position.  Compaction rebuilds the lists its popped postings
 * belong to without the postings closed at or below P (no reader is below
 * P), retires the old arrays, and drops a list left empty, so memory
 * follows the readable window.
 */
#include "index.h"
#include "jsonpath.h"

#include <jansson.h>
#include <string.h>
#include <xxhash.h>

/* Where a key's open posting is: list and position (writer only). */
typedef struct spos {
    wci_key *key; /* NULL: empty slot */
    wci_vlist *vl;
    uint32_t idx;
} spos;

/* Writer-only open addressing of open postings, by their key. */
typedef struct side {
    spos *s;
    size_t mask, used;
} side;

/* A posting closed at `to` in list vl. */
typedef struct closed {
    wci_vlist *vl;
    int64_t to;
} closed;

typedef struct fifo {
    closed *p;
    size_t mask;
    uint64_t head, tail;
} fifo;

typedef struct vtab {
    size_t mask;
    _Atomic uintptr_t s[];
} vtab;

#define VT_DEL ((uintptr_t)1)

typedef struct wci_index {
    char *name;
    size_t nlen;
    wcache_index_fn fn;
    void *ud;
    const wci_alloc *al;
    char **path; /* built-in JSON extractor: path components */
    size_t npath;
    char *jbuf; /* ... and the value it last returned */
    size_t jcap;
    vtab *_Atomic vt;
    size_t vused, vlive;
    side sd;
    fifo closed;
    wci_vlist **dirty;
    size_t ndirty, capdirty;
    _Atomic uint64_t st_values, st_posts, st_open;
} wci_index;

/* What phase one decided for one change in one index. */
typedef struct ixrec {
    spos cur;        /* open posting to close (cur.key NULL: none) */
    wci_vlist *neu;  /* list to open a posting in, or NULL */
    wci_vlist *same; /* unchanged value: its list; else NULL */
} ixrec;

typedef struct wci_ixreg {
    wci_index *ix[WCI_INDEX_MAX];
    int n;
    ixrec *rec; /* n changes x n indexes, for the commit in progress */
    size_t caprec, nops;
    const ixrec *at; /* the change being linked, for dispatch */
} wci_ixreg;

int wci_index_count(const wcache_cache *c)
{
    return c->ix ? c->ix->n : 0;
}

/* ---- value table (lock-free readers) ---- */

static vtab *vt_new(const wci_alloc *al, size_t cap)
{
    vtab *t = wci_calloc(al, 1, sizeof *t + cap * sizeof(t->s[0]));
    if (t)
        t->mask = cap - 1;
    return t;
}

static wci_vlist *vt_find(const vtab *t, const void *val, size_t len, uint64_t hv)
{
    for (size_t i = hv & t->mask;; i = (i + 1) & t->mask) {
        uintptr_t s = atomic_load_explicit(&((vtab *)t)->s[i], memory_order_acquire);
        if (!s)
            return NULL;
        wci_vlist *l = (wci_vlist *)s;
        if (s != VT_DEL && l->hash == hv && l->vlen == len && !memcmp(l->val, val, len))
            return l;
    }
}

static void vt_place(vtab *t, wci_vlist *l)
{
    size_t i = l->hash & t->mask;
    while (atomic_load_explicit(&t->s[i], memory_order_relaxed))
        i = (i + 1) & t->mask;
    atomic_store_explicit(&t->s[i], (uintptr_t)l, memory_order_release);
}

static int vt_reserve(wcache_cache *c, wci_index *ix, size_t more)
{
    vtab *old = atomic_load_explicit(&ix->vt, memory_order_relaxed);
    if ((ix->vused + more) * 4 <= (old->mask + 1) * 3)
        return 0;
    size_t cap = 64;
    while (cap < (ix->vlive + more) * 2)
        cap *= 2;
    vtab *t = vt_new(&c->al, cap);
    if (!t)
        return -1;
    if (wci_retire(c, old, WCI_RETIRE_RAW) != 0) {
        wci_free(&c->al, t);
        return -1;
    }
    for (size_t i = 0; i <= old->mask; i++) {
        uintptr_t s = atomic_load_explicit(&old->s[i], memory_order_relaxed);
        if (s && s != VT_DEL)
            vt_place(t, (wci_vlist *)s);
    }
    atomic_store_explicit(&ix->vt, t, memory_order_release);
    ix->vused = ix->vlive;
    return 0;
}

static void vt_remove(wci_index *ix, wci_vlist *l)
{
    vtab *t = atomic_load_explicit(&ix->vt, memory_order_relaxed);
    for (size_t i = l->hash & t->mask;; i = (i + 1) & t->mask) {
        uintptr_t s = atomic_load_explicit(&t->s[i], memory_order_relaxed);
        if (!s)
            return;
        if (s == (uintptr_t)l) {
            atomic_store_explicit(&t->s[i], VT_DEL, memory_order_release);
            ix->vlive--;
            atomic_fetch_sub_explicit(&ix->st_values, 1, memory_order_relaxed);
            return;
        }
    }
}

/* ---- open postings by key (writer only) ---- */

/* Keyed by the key's address: keys do not keep their hash. */
static size_t side_home(const side *s, const wci_key *k)
{
    uint64_t x = (uint64_t)(uintptr_t)k;
    x ^= x >> 33; /* murmur3's finaliser: allocator addresses share low bits */
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return (size_t)x & s->mask;
}

static size_t side_slot(const side *s, const wci_key *k)
{
    size_t i = side_home(s, k);
    while (s->s[i].key && s->s[i].key != k)
        i = (i + 1) & s->mask;
    return i;
}

static spos side_find(const side *s, const wci_key *k)
{
    return s->s ? s->s[side_slot(s, k)] : (spos){NULL, NULL, 0};
}

static int side_reserve(wcache_cache *c, side *s, size_t more)
{
    size_t cap = s->s ? s->mask + 1 : 0;
    if ((s->used + more) * 4 <= cap * 3)
        return 0;
    size_t ncap = 64;
    while (ncap * 3 < (s->used + more) * 4)
        ncap *= 2;
    side n = {wci_calloc(&c->al, ncap, sizeof *n.s), ncap - 1, s->used};
    if (!n.s)
        return -1;
    for (size_t i = 0; i < cap; i++)
        if (s->s[i].key)
            n.s[side_slot(&n, s->s[i].key)] = s->s[i];
    wci_free(&c->al, s->s);
    *s = n;
    return 0;
}

/* Backward-shift deletion: no markers, probes stay short. */
static void side_del(side *s, size_t i)
{
    s->s[i].key = NULL;
    s->used--;
    for (size_t j = (i + 1) & s->mask; s->s[j].key; j = (j + 1) & s->mask) {
        size_t home = side_home(s, s->s[j].key);
        if (((j - home) & s->mask) >= ((j - i) & s->mask)) {
            s->s[i] = s->s[j];
            s->s[j].key = NULL;
            i = j;
        }
    }
}

/* ---- closed postings, in the order of their `to` ---- */

static int fifo_reserve(wcache_cache *c, fifo *f, size_t more)
{
    size_t cap = f->p ? f->mask + 1 : 0, used = (size_t)(f->tail - f->head);
    if (used + more <= cap)
        return 0;
    size_t ncap = cap ? cap : 256;
    while (ncap < used + more)
        ncap *= 2;
    closed *p = wci_malloc(&c->al, ncap * sizeof *p);
    if (!p)
        return -1;
    for (uint64_t i = f->head; i < f->tail; i++)
        p[i & (ncap - 1)] = f->p[i & f->mask];
    wci_free(&c->al, f->p);
    f->p = p;
    f->mask = ncap - 1;
    return 0;
}

/* ---- posting arrays ---- */

/* Only the writer stores `to`, so its relaxed load here races nothing. */
static void post_copy(wci_post *dst, const wci_post *src)
{
    dst->key = src->key;
    dst->from = src->from;
    atomic_init(&dst->to, atomic_load_explicit(&((wci_post *)src)->to, memory_order_relaxed));
}

static wci_parr *arr_new(const wci_alloc *al, uint32_t cap)
{
    wci_parr *a = wci_malloc(al, sizeof *a + (size_t)cap * sizeof a->p[0]);
    if (a) {
        a->cap = cap;
        atomic_init(&a->n, 0);
    }
    return a;
}

/* Room for `need` postings, by a copy published over the old array. */
static int arr_reserve(wcache_cache *c, wci_vlist *l, size_t need)
{
    wci_parr *old = atomic_load_explicit(&l->arr, memory_order_relaxed);
    if (old && old->cap >= need)
        return 0;
    if (need > UINT32_MAX / 2)
        return -1;
    uint32_t cap = old ? old->cap * 2 : 4;
    while (cap < need)
        cap *= 2;
    wci_parr *a = arr_new(&c->al, cap);
    if (!a)
        return -1;
    uint32_t n = old ? atomic_load_explicit(&old->n, memory_order_relaxed) : 0;
    for (uint32_t i = 0; i < n; i++)
        post_copy(&a->p[i], &old->p[i]);
    atomic_store_explicit(&a->n, n, memory_order_relaxed);
    if (old && wci_retire(c, old, WCI_RETIRE_RAW) != 0) {
        wci_free(&c->al, a);
        return -1;
    }
    atomic_store_explicit(&l->arr, a, memory_order_release);
    return 0;
}

/* Open a posting of k at rev; its position. */
static uint32_t arr_append(wci_vlist *l, wci_key *k, int64_t rev)
{
    wci_parr *a = atomic_load_explicit(&l->arr, memory_order_relaxed);
    uint32_t n = atomic_load_explicit(&a->n, memory_order_relaxed);
    a->p[n].key = k;
    a->p[n].from = rev;
    atomic_store_explicit(&a->p[n].to, INT64_MAX, memory_order_relaxed);
    atomic_store_explicit(&a->n, n + 1, memory_order_release);
    return n;
}

/* ---- registration ---- */

static wcache_code reg_get(wcache_cache *c, wci_ixreg **out)
{
    if (!c->ix) {
        c->ix = wci_calloc(&c->al, 1, sizeof *c->ix);
        if (!c->ix)
            return WCACHE_ENOMEM;
    }
    *out = c->ix;
    return WCACHE_OK;
}

static wcache_code check_add(wcache_cache *c, const char *name, size_t nlen, int *id)
{
    if (!wci_cache_ok(c) || !name || !nlen || !id)
        return WCACHE_EINVAL;
    if (c->open)
        return WCACHE_ESTATE;
    int n = wci_index_count(c);
    if (n == WCI_INDEX_MAX)
        return wci_err(c, WCACHE_EBUSY, "add_index: already %d indexes", WCI_INDEX_MAX);
    for (int i = 0; i < n; i++)
        if (c->ix->ix[i]->nlen == nlen && !memcmp(c->ix->ix[i]->name, name, nlen))
            return wci_err(c, WCACHE_EEXIST, "add_index: %.*s is registered already",
                           (int)(nlen > 200 ? 200 : nlen), name);
    return WCACHE_OK;
}

static void index_free(const wci_alloc *al, wci_index *ix)
{
    if (!ix)
        return;
    for (size_t i = 0; i < ix->npath; i++)
        wci_free(al, ix->path[i]);
    wci_free(al, ix->path);
    wci_free(al, ix->name);
    wci_free(al, ix->jbuf);
    wci_free(al, atomic_load_explicit(&ix->vt, memory_order_relaxed));
    wci_free(al, ix);
}

static wci_index *index_new(wcache_cache *c, const char *name, size_t nlen)
{
    wci_index *ix = wci_calloc(&c->al, 1, sizeof *ix);
    if (!ix)
        return NULL;
    ix->al = &c->al;
    ix->name = wci_memdup(&c->al, name, nlen);
    ix->nlen = nlen;
    atomic_init(&ix->vt, vt_new(&c->al, 64));
    if (!ix->name || !atomic_load_explicit(&ix->vt, memory_order_relaxed)) {
        index_free(&c->al, ix);
        return NULL;
    }
    return ix;
}

static wcache_code add(wcache_cache *c, wci_index *ix, int *id)
{
    wci_ixreg *r;
    if (reg_get(c, &r) != WCACHE_OK) {
        index_free(&c->al, ix);
        return WCACHE_ENOMEM;
    }
    *id = r->n;
    r->ix[r->n++] = ix;
    return WCACHE_OK;
}

wcache_code wcache_cache_add_index(wcache_cache *c, const char *name, size_t name_len,
                                   wcache_index_fn fn, void *userdata, int *id)
{
    wcache_code rc = check_add(c, name, name_len, id);
    if (rc != WCACHE_OK)
        return rc;
    if (!fn)
        return WCACHE_EINVAL;
    wci_index *ix = index_new(c, name, name_len);
    if (!ix)
        return WCACHE_ENOMEM;
    ix->fn = fn;
    ix->ud = userdata;
    return add(c, ix, id);
}

/* ---- the built-in JSON extractor ---- */

static int json_keep(wci_index *ix, const char *s, size_t n, const void **out, size_t *olen)
{
    if (n + 1 > ix->jcap) {
        char *b = wci_malloc(ix->al, n + 1);
        if (!b)
            return -1;
        wci_free(ix->al, ix->jbuf);
        ix->jbuf = b;
        ix->jcap = n + 1;
    }
    memcpy(ix->jbuf, s, n);
    *out = ix->jbuf;
    *olen = n;
    return 1;
}

/* Calls run under wmu, one at a time, so one buffer per index will do. */
static int json_extract(const void *key, size_t klen, const void *val, size_t vlen,
                        const void **out, size_t *olen, void *ud)
{
    (void)key, (void)klen;
    wci_index *ix = ud;
    /* the common case without jansson's parse and allocations */
    int fast = wci_jsonpath_scan(ix->path, ix->npath, val, vlen, out, olen);
    if (fast != WCI_JP_JANSSON)
        return fast;
    json_error_t e;
    json_t *root = json_loadb(val, vlen, JSON_ALLOW_NUL, &e);
    if (!root)
        return json_error_code(&e) == json_error_out_of_memory ? -1 : 0;
    json_t *j = root;
    for (size_t i = 0; i < ix->npath && j; i++)
        j = json_object_get(j, ix->path[i]);
    int rc = json_is_string(j)
                 ? json_keep(ix, json_string_value(j), json_string_length(j), out, olen)
                 : 0;
    json_decref(root);
    return rc;
}

static int split_path(wcache_cache *c, wci_index *ix, const char *path, size_t len)
{
    size_t n = 1;
    for (size_t i = 0; i < len; i++)
        n += path[i] == '.';
    ix->path = wci_calloc(&c->al, n, sizeof *ix->path);
    if (!ix->path)
        return -1;
    for (size_t i = 0, s = 0; i <= len; i++) {
        if (i < len && path[i] != '.')
            continue;
        if (!(ix->path[ix->npath++] = wci_memdup(&c->al, path + s, i - s)))
            return -1;
        s = i + 1;
    }
    return 0;
}

static bool path_ok(const char *path, size_t len)
{
    if (!path || !len || path[0] == '.' || path[len - 1] == '.' || memchr(path, 0, len))
        return false;
    for (size_t i = 1; i < len; i++)
        if (path[i] == '.' && path[i - 1] == '.')
            return false;
    return true;
}

wcache_code wcache_cache_add_index_json(wcache_cache *c, const char *name, size_t name_len,
                                        const char *path, size_t path_len, int *id)
{
    wcache_code rc = check_add(c, name, name_len, id);
    if (rc != WCACHE_OK)
        return rc;
    if (!path_ok(path, path_len))
        return wci_err(c, WCACHE_EINVAL, "add_index_json: bad path");
    wci_index *ix = index_new(c, name, name_len);
    if (!ix || split_path(c, ix, path, path_len) != 0) {
        index_free(&c->al, ix);
        return WCACHE_ENOMEM;
    }
    ix->fn = json_extract;
    ix->ud = ix;
    return add(c, ix, id);
}

/* ---- teardown ---- */

static void vlist_free(const wci_alloc *al, wci_vlist *l)
{
    wci_free(al, atomic_load_explicit(&l->arr, memory_order_relaxed));
    wci_free(al, l);
}

/* Retired arrays and lists are reclaim.c's to free. */
void wci_index_fini(wcache_cache *c)
{
    wci_ixreg *r = c->ix;
    if (!r)
        return;
    for (int i = 0; i < r->n; i++) {
        wci_index *ix = r->ix[i];
        vtab *t = atomic_load_explicit(&ix->vt, memory_order_relaxed);
        for (size_t j = 0; j <= t->mask; j++) {
            uintptr_t s = atomic_load_explicit(&t->s[j], memory_order_relaxed);
            if (s && s != VT_DEL)
                vlist_free(&c->al, (wci_vlist *)s);
        }
        wci_free(&c->al, ix->sd.s);
        wci_free(&c->al, ix->closed.p);
        wci_free(&c->al, ix->dirty);
        index_free(&c->al, ix);
    }
    wci_free(&c->al, r->rec);
    wci_free(&c->al, r);
    c->ix = NULL;
}

/* ---- phase one ---- */

int wci_index_begin(wcache_cache *c, size_t n)
{
    wci_ixreg *r = c->ix;
    size_t need = n * (size_t)r->n;
    if (need > r->caprec) {
        ixrec *rec = wci_malloc(&c->al, need * sizeof *rec);
        if (!rec)
            return -1;
        wci_free(&c->al, r->rec);
        r->rec = rec;
        r->caprec = need;
    }
    memset(r->rec, 0, need * sizeof *r->rec);
    r->nops = n;
    return 0;
}

static int extract(const wci_index *ix, const wci_key *k, const wci_ver *v, const void **out,
                   size_t *len)
{
    if (!v || (v->flags & WCI_VER_TOMBSTONE))
        return 0;
    *out = NULL;
    *len = 0;
    return ix->fn(k->key, k->klen, v->value, v->vlen, out, len, ix->ud);
}

static wci_vlist *vlist_get(wcache_cache *c, wci_index *ix, const void *val, size_t len)
{
    uint64_t hv = wci_hash_bytes(val, len);
    wci_vlist *l = vt_find(atomic_load_explicit(&ix->vt, memory_order_relaxed), val, len, hv);
    if (l)
        return l;
    if (len > UINT32_MAX || vt_reserve(c, ix, 1) != 0)
        return NULL;
    l = wci_calloc(&c->al, 1, sizeof *l + len);
    if (!l)
        return NULL;
    l->hash = hv;
    l->vlen = (uint32_t)len;
    if (len)
        memcpy(l->val, val, len);
    vt_place(atomic_load_explicit(&ix->vt, memory_order_relaxed), l);
    ix->vused++;
    ix->vlive++;
    atomic_fetch_add_explicit(&ix->st_values, 1, memory_order_relaxed);
    return l;
}

static int prep_one(wcache_cache *c, wci_index *ix, ixrec *rec, wci_key *k, const wci_ver *v,
                    bool isnew)
{
    const void *val;
    size_t len;
    const wcache_cache *outer = wci_cb_cache;
    wci_cb_cache = c;
    int has = extract(ix, k, v, &val, &len);
    wci_cb_cache = outer;
    if (has < 0 || (has && !val && len))
        return -1;
    spos cur = isnew ? (spos){NULL, NULL, 0} : side_find(&ix->sd, k);
    if (cur.key && has && cur.vl->vlen == len && !memcmp(cur.vl->val, val, len)) {
        rec->same = cur.vl;
        return 0;
    }
    rec->cur = cur;
    if (!has)
        return 0;
    if (!(rec->neu = vlist_get(c, ix, val, len)))
        return -1;
    rec->neu->pend++;
    return 0;
}

int wci_index_prep(wcache_cache *c, size_t i, wci_key *k, const wci_ver *v, bool isnew)
{
    wci_ixreg *r = c->ix;
    for (int j = 0; j < r->n; j++)
        if (prep_one(c, r->ix[j], &r->rec[i * (size_t)r->n + (size_t)j], k, v, isnew) != 0)
            return -1;
    return 0;
}

static int reserve_one(wcache_cache *c, wci_index *ix, const ixrec *rec, size_t stride,
                       size_t nops)
{
    size_t ins = 0, closes = 0;
    for (size_t i = 0; i < nops; i++, rec += stride) {
        closes += rec->cur.key != NULL;
        ins += rec->neu && !rec->cur.key;
        if (!rec->neu)
            continue;
        wci_parr *a = atomic_load_explicit(&rec->neu->arr, memory_order_relaxed);
        size_t n = a ? atomic_load_explicit(&a->n, memory_order_relaxed) : 0;
        if (arr_reserve(c, rec->neu, n + rec->neu->pend) != 0)
            return -1;
    }
    if (side_reserve(c, &ix->sd, ins) != 0 || fifo_reserve(c, &ix->closed, closes) != 0)
        return -1;
    return 0;
}

int wci_index_reserve(wcache_cache *c)
{
    wci_ixreg *r = c->ix;
    for (int j = 0; j < r->n; j++)
        if (reserve_one(c, r->ix[j], r->rec + j, (size_t)r->n, r->nops) != 0)
            return -1;
    return 0;
}

static int dirty_add(wcache_cache *c, wci_index *ix, wci_vlist *l)
{
    if (l->dirty)
        return 0;
    if (ix->ndirty == ix->capdirty) {
        size_t cap = ix->capdirty ? ix->capdirty * 2 : 64;
        wci_vlist **d = wci_malloc(&c->al, cap * sizeof *d);
        if (!d)
            return -1;
        if (ix->ndirty)
            memcpy(d, ix->dirty, ix->ndirty * sizeof *d);
        wci_free(&c->al, ix->dirty);
        ix->dirty = d;
        ix->capdirty = cap;
    }
    ix->dirty[ix->ndirty++] = l;
    l->dirty = 1;
    return 0;
}

/* Lists this commit created stay, empty; queue them so that compaction
 * drops them (best effort: an unqueued one is freed at close). */
void wci_index_abort(wcache_cache *c)
{
    wci_ixreg *r = c->ix;
    for (size_t i = 0; i < r->nops * (size_t)r->n; i++) {
        wci_vlist *l = r->rec[i].neu;
        if (!l)
            continue;
        wci_parr *a = atomic_load_explicit(&l->arr, memory_order_relaxed);
        l->pend = 0;
        if (!a || atomic_load_explicit(&a->n, memory_order_relaxed) == 0)
            (void)dirty_add(c, r->ix[i % (size_t)r->n], l);
    }
    r->nops = 0;
}

/* ---- phase two ---- */

static void link_one(wci_index *ix, const ixrec *rec, wci_key *k, int64_t rev)
{
    if (rec->same)
        return;
    side *s = &ix->sd;
    size_t slot = rec->cur.key || rec->neu ? side_slot(s, k) : 0;
    if (rec->cur.key) {
        wci_parr *a = atomic_load_explicit(&rec->cur.vl->arr, memory_order_relaxed);
        atomic_store_explicit(&a->p[rec->cur.idx].to, rev, memory_order_relaxed);
        fifo *f = &ix->closed;
        f->p[f->tail++ & f->mask] = (closed){rec->cur.vl, rev};
        atomic_fetch_sub_explicit(&ix->st_open, 1, memory_order_relaxed);
        if (!rec->neu)
            side_del(s, slot);
    }
    if (rec->neu) {
        s->used += !rec->cur.key;
        s->s[slot] = (spos){k, rec->neu, arr_append(rec->neu, k, rev)};
        atomic_fetch_add_explicit(&ix->st_posts, 1, memory_order_relaxed);
        atomic_fetch_add_explicit(&ix->st_open, 1, memory_order_relaxed);
    }
}

void wci_index_link(wcache_cache *c, size_t i, wci_key *k, int64_t rev)
{
    wci_ixreg *r = c->ix;
    const ixrec *rec = &r->rec[i * (size_t)r->n];
    for (int j = 0; j < r->n; j++)
        link_one(r->ix[j], &rec[j], k, rev);
    r->at = rec;
}

void wci_index_end(wcache_cache *c)
{
    wci_ixreg *r = c->ix;
    for (size_t i = 0; i < r->nops * (size_t)r->n; i++)
        if (r->rec[i].neu)
            r->rec[i].neu->pend = 0;
    r->nops = 0;
    r->at = NULL;
}

/* ---- what dispatch needs ---- */

static wci_ixval val_of(const wci_vlist *l)
{
    return l ? (wci_ixval){l->val, l->vlen, 1} : (wci_ixval){NULL, 0, 0};
}

void wci_index_change(const wcache_cache *c, wci_ixval *old, wci_ixval *neu)
{
    const wci_ixreg *r = c->ix;
    for (int j = 0; j < (r ? r->n : 0); j++) {
        const ixrec *rec = r->at ? &r->at[j] : NULL;
        if (!rec) {
            old[j] = neu[j] = val_of(NULL);
        } else if (rec->same) {
            old[j] = neu[j] = val_of(rec->same);
        } else {
            old[j] = val_of(rec->cur.key ? rec->cur.vl : NULL);
            neu[j] = val_of(rec->neu);
        }
    }
}

int wci_index_match(wcache_cache *c, int id, const wci_key *k, const wci_ver *v,
                    const void *val, size_t len)
{
    const void *got;
    size_t glen;
    int has = extract(c->ix->ix[id], k, v, &got, &glen);
    if (has <= 0)
        return has;
    return glen == len && (!len || !memcmp(got, val, len));
}

/* ---- compaction ---- */

/* Rebuild l without the postings closed at or below P; open postings that
 * move tell the side table where they went. */
static int prune_list(wcache_cache *c, wci_index *ix, wci_vlist *l, int64_t P)
{
    wci_parr *a = atomic_load_explicit(&l->arr, memory_order_relaxed);
    uint32_t n = a ? atomic_load_explicit(&a->n, memory_order_relaxed) : 0, keep = 0;
    for (uint32_t i = 0; i < n; i++)
        keep += atomic_load_explicit(&a->p[i].to, memory_order_relaxed) > P;
    if (keep == n && n)
        return 0;
    if (wci_retire_reserve(c, 2) != 0)
        return -1;
    wci_parr *na = NULL;
    if (keep && !(na = arr_new(&c->al, keep < 4 ? 4 : keep + keep / 4)))
        return -1;
    for (uint32_t i = 0, j = 0; i < n; i++) {
        int64_t to = atomic_load_explicit(&a->p[i].to, memory_order_relaxed);
        if (to <= P)
            continue;
        post_copy(&na->p[j], &a->p[i]);
        if (to == INT64_MAX)
            ix->sd.s[side_slot(&ix->sd, a->p[i].key)].idx = j;
        j++;
    }
    if (na)
        atomic_store_explicit(&na->n, keep, memory_order_relaxed);
    atomic_store_explicit(&l->arr, na, memory_order_release);
    if (a)
        wci_retire(c, a, WCI_RETIRE_RAW);
    atomic_fetch_sub_explicit(&ix->st_posts, n - keep, memory_order_relaxed);
    if (!keep) {
        vt_remove(ix, l);
        wci_retire(c, l, WCI_RETIRE_RAW);
    }
    return 0;
}

static void compact_one(wcache_cache *c, wci_index *ix, int64_t P)
{
    fifo *f = &ix->closed;
    while (f->head < f->tail) {
        closed *x = &f->p[f->head & f->mask];
        if (x->to > P || dirty_add(c, ix, x->vl) != 0)
            break;
        f->head++;
    }
    /* Only popped postings may go: the FIFO still points at the others. */
    int64_t q = P;
    if (f->head < f->tail) {
        int64_t t = f->p[f->head & f->mask].to;
        q = t - 1 < q ? t - 1 : q;
    }
    size_t keep = 0;
    for (size_t i = 0; i < ix->ndirty; i++) {
        wci_vlist *l = ix->dirty[i];
        l->dirty = 0;
        if (prune_list(c, ix, l, q) != 0) {
            l->dirty = 1; /* no memory now: try again next time */
            ix->dirty[keep++] = l;
        }
    }
    ix->ndirty = keep;
}

void wci_index_compact(wcache_cache *c, int64_t P)
{
    for (int j = 0; j < wci_index_count(c); j++)
        compact_one(c, c->ix->ix[j], P);
}

/* ---- reads ---- */

static bool view_ok(const wcache_view *v)
{
    return v && v->magic == WCI_VIEW_MAGIC;
}

/* Keys of one value often share a long prefix ("/registry/pods/ns/"):
 * comparing the 8 bytes after the common prefix as one integer sorts most
 * pairs without a memcmp. */
static uint64_t ord_at(const wci_key *k, size_t off)
{
    uint64_t o = 0;
    for (size_t i = 0; i < 8; i++)
        o = o << 8 | (off + i < k->klen ? (unsigned char)k->key[off + i] : 0);
    return o;
}

/* Key order, given that the keys agree before off and ord holds the 8
 * bytes from off (zero-padded). */
static int cmp_match(const wci_ixmatch *x, const wci_ixmatch *y, size_t off)
{
    if (x->ord != y->ord)
        return x->ord < y->ord ? -1 : 1;
    size_t o = off + 8, xl = x->k->klen, yl = y->k->klen;
    if (xl <= o || yl <= o) /* equal up to the end of the shorter (padding) */
        return xl < yl ? -1 : xl > yl;
    return wci_keycmp(x->k->key + o, xl - o, y->k->key + o, yl - o);
}

static size_t common_prefix(const wci_ixmatch *m, size_t n)
{
    size_t lcp = n ? m[0].k->klen : 0;
    for (size_t i = 1; i < n && lcp; i++) {
        size_t j = 0, lim = lcp < m[i].k->klen ? lcp : m[i].k->klen;
        if (lim == lcp && !memcmp(m[i].k->key, m[0].k->key, lcp))
            continue; /* the usual case, without a loop per byte */
        while (j < lim && m[i].k->key[j] == m[0].k->key[j])
            j++;
        lcp = j;
    }
    return lcp;
}

static void insertion_sort(wci_ixmatch *m, size_t n, size_t off)
{
    for (size_t i = 1; i < n; i++) {
        wci_ixmatch x = m[i];
        size_t j = i;
        for (; j > 0 && cmp_match(&m[j - 1], &x, off) > 0; j--)
            m[j] = m[j - 1];
        m[j] = x;
    }
}

static void merge(const wci_ixmatch *a, size_t na, const wci_ixmatch *b, size_t nb,
                  wci_ixmatch *out, size_t off)
{
    size_t i = 0, j = 0, k = 0;
    while (i < na && j < nb)
        out[k++] = cmp_match(&b[j], &a[i], off) < 0 ? b[j++] : a[i++];
    while (i < na)
        out[k++] = a[i++];
    while (j < nb)
        out[k++] = b[j++];
}

#define RUN 16

/* Sorted runs of RUN, then bottom-up merges between m and tmp (n more
 * entries): no recursion, no comparator calls through a pointer. */
static void sort_matches(wci_ixmatch *m, wci_ixmatch *tmp, size_t n)
{
    size_t off = common_prefix(m, n);
    for (size_t i = 0; i < n; i++)
        m[i].ord = ord_at(m[i].k, off);
    for (size_t i = 0; i < n; i += RUN)
        insertion_sort(m + i, n - i < RUN ? n - i : RUN, off);
    wci_ixmatch *src = m, *dst = tmp;
    for (size_t w = RUN; w < n; w *= 2) {
        for (size_t i = 0; i < n; i += 2 * w) {
            size_t mid = i + w < n ? i + w : n, hi = i + 2 * w < n ? i + 2 * w : n;
            merge(src + i, mid - i, src + mid, hi - mid, dst + i, off);
        }
        wci_ixmatch *t = src;
        src = dst, dst = t;
    }
    if (src != m)
        memcpy(m, src, n * sizeof *m);
}

static const wci_parr *postings(const wcache_cache *c, int id, const void *val, size_t len)
{
    const wci_index *ix = c->ix->ix[id];
    const vtab *t = atomic_load_explicit(&((wci_index *)ix)->vt, memory_order_acquire);
    const wci_vlist *l = vt_find(t, val, len, wci_hash_bytes(val, len));
    return l ? atomic_load_explicit(&((wci_vlist *)l)->arr, memory_order_acquire) : NULL;
}

static bool visible(const wci_post *p, int64_t rev)
{
    return p->from <= rev &&
           rev < atomic_load_explicit(&((wci_post *)p)->to, memory_order_relaxed);
}

static int grow(wcache_cache *c, wci_ixmatch **buf, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 64;
    while (nc < need)
        nc *= 2;
    wci_ixmatch *b = wci_malloc(&c->al, nc * sizeof *b);
    if (!b)
        return -1;
    wci_free(&c->al, *buf);
    *buf = b;
    *cap = nc;
    return 0;
}

/* Passes that each prefetch what the next one loads (the keys, then their
 * newest versions), so that the cache misses of all matches overlap
 * instead of following one another. */
wcache_code wci_index_collect(wcache_view *v, int id, const void *val, size_t len,
                              wci_ixmatch **buf, size_t *cap, size_t *n)
{
    const wci_parr *a = postings(v->c, id, val, len);
    uint32_t np = a ? atomic_load_explicit(&((wci_parr *)a)->n, memory_order_acquire) : 0;
    *n = 0;
    if (grow(v->c, buf, cap, 2 * (size_t)np) != 0) /* the upper half: sort space */
        return WCACHE_ENOMEM;
    wci_ixmatch *m = *buf;
    size_t k = 0;
    for (uint32_t i = 0; i < np; i++) {
        if (visible(&a->p[i], v->rev)) {
            m[k++].k = a->p[i].key;
            __builtin_prefetch(a->p[i].key);
        }
    }
    for (size_t i = 0; i < k; i++)
        __builtin_prefetch(
            atomic_load_explicit(&((wci_key *)m[i].k)->head, memory_order_acquire));
    size_t j = 0;
    for (size_t i = 0; i < k; i++) {
        const wci_ver *w = wci_visible(m[i].k, v->rev);
        if (w)
            m[j++] = (wci_ixmatch){m[i].k, w, 0};
    }
    if (j > 1)
        sort_matches(m, m + j, j);
    *n = j;
    return WCACHE_OK;
}

static wcache_code check_read(const wcache_view *v, int id, const void *val, size_t len)
{
    if (!view_ok(v) || (!val && len))
        return WCACHE_EINVAL;
    if (id < 0 || id >= wci_index_count(v->c))
        return WCACHE_EINVAL;
    return v->slot ? WCACHE_OK : WCACHE_ESTATE;
}

wcache_code wcache_view_count_index(wcache_view *v, int id, const void *value, size_t value_len,
                                    uint64_t *count)
{
    wcache_code rc = check_read(v, id, value, value_len);
    if (rc == WCACHE_OK && !count)
        rc = WCACHE_EINVAL;
    if (rc != WCACHE_OK)
        return rc;
    const wci_parr *a = postings(v->c, id, value, value_len);
    uint32_t np = a ? atomic_load_explicit(&((wci_parr *)a)->n, memory_order_acquire) : 0;
    uint64_t m = 0;
    for (uint32_t i = 0; i < np; i++)
        m += visible(&a->p[i], v->rev) && wci_visible(a->p[i].key, v->rev);
    *count = m;
    return WCACHE_OK;
}

/* ---- LIST by value, with the key range and token rules of view_list ---- */

/* The range hash of view_list, bound to the index and the value: a token
 * of one node's pods cannot be replayed on another node. */
static uint64_t index_hash(const wcache_list_opts *o, int id, const void *val, size_t len)
{
    uint64_t h[3] = {wci_range_hash(o), (uint64_t)id, wci_hash_bytes(val, len)};
    return XXH3_64bits(h, sizeof h);
}

/* Keep only the matches in the range, in place. */
static size_t filter(wci_ixmatch *m, size_t n, const wci_range *r)
{
    if (!r->lolen && !r->hi)
        return n; /* every key (a prefix sets lolen) */
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (wci_range_has(r, m[i].k))
            m[k++] = m[i];
    return k;
}

/* Position of the first match after the token's key. */
static wcache_code resume_at(wcache_view *v, const wcache_list_opts *o, uint64_t rh,
                             const wci_ixmatch *m, size_t n, size_t *pos)
{
    *pos = 0;
    if (!o || !o->token_len)
        return WCACHE_OK;
    int64_t rev;
    uint64_t th;
    const char *key;
    size_t klen;
    wcache_code rc = wci_token_decode(v, o->token, o->token_len, &rev, &th, &key, &klen);
    if (rc != WCACHE_OK)
        return rc;
    if (rev != v->rev || th != rh)
        return WCACHE_EBADTOKEN;
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (wci_keycmp(m[mid].k->key, m[mid].k->klen, key, klen) <= 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *pos = lo;
    return WCACHE_OK;
}

static void fill(wcache_kv *out, const wci_ixmatch *m)
{
    out->key = m->k->key;
    out->key_len = m->k->klen;
    out->value = m->w->value;
    out->value_len = m->w->vlen;
    out->create_revision = m->w->create_rev;
    out->mod_revision = m->w->mod_rev;
    out->version = wci_ver_version(m->w);
}

wcache_code wcache_view_list_index(wcache_view *v, int id, const void *value, size_t value_len,
                                   const wcache_list_opts *opts, wcache_kv *items, size_t cap,
                                   wcache_list_result *res)
{
    wcache_code rc = check_read(v, id, value, value_len);
    if (rc == WCACHE_OK && (!items || !cap || !res || res->size < sizeof *res))
        rc = WCACHE_EINVAL;
    wci_range r;
    if (rc == WCACHE_OK)
        rc = wci_range_parse(opts, &r);
    size_t n = 0, pos = 0;
    wci_ixmatch **m = &v->ixbuf;
    if (rc == WCACHE_OK)
        rc = wci_index_collect(v, id, value, value_len, m, &v->ixcap, &n);
    if (rc != WCACHE_OK)
        return rc;
    uint64_t rh = index_hash(opts, id, value, value_len);
    n = filter(*m, n, &r);
    if ((rc = resume_at(v, opts, rh, *m, n, &pos)) != WCACHE_OK)
        return rc;
    size_t take = n - pos < cap ? n - pos : cap;
    for (size_t i = 0; i < take; i++)
        fill(&items[i], &(*m)[pos + i]);
    size_t rest = n - pos - take;
    *res = (wcache_list_result){.size = res->size,
                                .count = take,
                                .revision = v->rev,
                                .more = rest > 0,
                                .remaining = rest ? -1 : 0};
    if (!rest)
        return WCACHE_OK;
    if (opts && opts->count_remaining)
        res->remaining = (int64_t)rest;
    if ((rc = wci_token_encode(v, rh, (*m)[pos + take - 1].k)) != WCACHE_OK)
        return rc;
    res->token = v->tok;
    res->token_len = strlen(v->tok);
    return WCACHE_OK;
}

/* ---- statistics ---- */

wcache_code wcache_cache_index_stat(const wcache_cache *c, int id, wcache_index_stat *st)
{
    if (!wci_cache_ok(c) || !st || st->size < sizeof *st || id < 0 || id >= wci_index_count(c))
        return WCACHE_EINVAL;
    const wci_index *ix = c->ix->ix[id];
    wcache_index_stat s = {.size = sizeof s};
    s.values = atomic_load_explicit(&((wci_index *)ix)->st_values, memory_order_relaxed);
    s.postings = atomic_load_explicit(&((wci_index *)ix)->st_posts, memory_order_relaxed);
    s.current = atomic_load_explicit(&((wci_index *)ix)->st_open, memory_order_relaxed);
    *st = s;
    return WCACHE_OK;
}
