/*
 * read.c - read views: GET, LIST and COUNT at one pinned revision.
 *
 * A view pins its revision and an epoch in a reader slot (reclaim.c) and
 * then reads without locks.  Every answer is computed from version chains
 * alone: the first version with mod_rev <= the view's revision is the one
 * it sees, a tombstone or no version means absent.  Because the writer
 * publishes the revision only after linking every version of it, a view
 * sees each revision whole.
 */
#include "wcache_int.h"

#include <string.h>

wcache_code wcache_view_create(wcache_cache *c, wcache_view **out)
{
    if (!wci_cache_ok(c) || !out)
        return WCACHE_EINVAL;
    wcache_view *v = wci_calloc(&c->al, 1, sizeof *v);
    if (!v)
        return WCACHE_ENOMEM;
    v->magic = WCI_VIEW_MAGIC;
    v->c = c;
    *out = v;
    return WCACHE_OK;
}

static bool view_ok(const wcache_view *v)
{
    return v && v->magic == WCI_VIEW_MAGIC;
}

void wcache_view_end(wcache_view *v)
{
    if (!view_ok(v) || !v->slot)
        return;
    wci_slot_release(v->slot);
    v->slot = NULL;
    v->rev = 0;
}

void wcache_view_free(wcache_view *v)
{
    if (!view_ok(v))
        return;
    wcache_view_end(v);
    wci_free(&v->c->al, v->tok);
    wci_free(&v->c->al, v->scratch);
    wci_free(&v->c->al, v->ixbuf);
    v->magic = 0;
    wci_free(&v->c->al, v);
}

/* Pin rev (0: latest).  The compacted revision is read after the pin, so
 * either compaction sees this view or this view sees the compaction. */
static wcache_code pin(wcache_view *v, int64_t rev)
{
    wcache_cache *c = v->c;
    for (;;) {
        int64_t r = rev;
        int64_t cur = atomic_load_explicit(&c->rev, memory_order_acquire);
        if (rev == WCACHE_REV_LATEST)
            r = cur;
        else if (rev > cur)
            return WCACHE_EFUTURE;
        wci_slot_pin(v->slot, atomic_load_explicit(&c->rc.epoch, memory_order_acquire), r);
        int64_t cr = atomic_load_explicit(&c->compact_rev, memory_order_seq_cst);
        if (r >= cr) {
            v->rev = r;
            return WCACHE_OK;
        }
        if (rev != WCACHE_REV_LATEST)
            return WCACHE_ECOMPACTED;
        /* the writer compacted past the latest we saw: look again */
    }
}

wcache_code wcache_view_begin(wcache_view *v, int64_t rev)
{
    if (!view_ok(v) || rev < 0)
        return WCACHE_EINVAL;
    wcache_view_end(v);
    if (!v->c->open)
        return WCACHE_ESTATE;
    v->slot = wci_slot_claim(&v->c->rc, v->last);
    if (!v->slot)
        return WCACHE_EBUSY;
    v->last = v->slot;
    wcache_code rc = pin(v, rev);
    if (rc != WCACHE_OK) {
        wci_slot_release(v->slot);
        v->slot = NULL;
    }
    return rc;
}

int64_t wcache_view_revision(const wcache_view *v)
{
    return view_ok(v) && v->slot ? v->rev : 0;
}

const wci_ver *wci_visible(const wci_key *k, int64_t rev)
{
    const wci_ver *w = atomic_load_explicit(&((wci_key *)k)->head, memory_order_acquire);
    while (w && w->mod_rev > rev)
        w = atomic_load_explicit(&((wci_ver *)w)->next, memory_order_acquire);
    if (!w || (w->flags & WCI_VER_TOMBSTONE))
        return NULL;
    return w;
}

static void fill(wcache_kv *out, const wci_key *k, const wci_ver *w)
{
    out->key = k->key;
    out->key_len = k->klen;
    out->value = w->value;
    out->value_len = w->vlen;
    out->create_revision = w->create_rev;
    out->mod_revision = w->mod_rev;
    out->version = wci_ver_version(w);
}

wcache_code wcache_view_get(wcache_view *v, const void *key, size_t klen, wcache_kv *out)
{
    if (!view_ok(v) || !out || (!key && klen))
        return WCACHE_EINVAL;
    if (!v->slot)
        return WCACHE_ESTATE;
    const wci_htab *t = atomic_load_explicit(&v->c->hash.tab, memory_order_acquire);
    const wci_key *k = wci_hash_find(t, key, klen, wci_hash_bytes(key, klen));
    const wci_ver *w = k ? wci_visible(k, v->rev) : NULL;
    if (!w)
        return WCACHE_ENOTFOUND;
    fill(out, k, w);
    return WCACHE_OK;
}

/* A GET waits on three misses in a row: the hash slot, the key, its newest
 * version.  Keys further on go through those steps as prefetches while
 * the current one is read (the view's epoch keeps whatever a slot names
 * alive, so the look-ahead may load keys). */
#define GET_SLOT 12 /* hash and fetch the slot */
#define GET_KEY 8   /* fetch the keys the slot names */
#define GET_HEAD 4  /* find the key, fetch its newest version */
#define GET_RING 16

wcache_code wcache_view_get_many(wcache_view *v, const void *const *keys,
                                 const size_t *key_lens, size_t n, wcache_kv *out,
                                 wcache_code *codes)
{
    if (!view_ok(v) || (n && (!keys || !key_lens || !out || !codes)))
        return WCACHE_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!keys[i] && key_lens[i])
            return WCACHE_EINVAL;
    if (!v->slot)
        return WCACHE_ESTATE;
    const wci_htab *t = atomic_load_explicit(&v->c->hash.tab, memory_order_acquire);
    uint64_t hv[GET_RING];
    const wci_key *kp[GET_RING];
    for (size_t j = 0; j < n && j < GET_SLOT; j++) {
        hv[j] = wci_hash_bytes(keys[j], key_lens[j]);
        __builtin_prefetch(&t->s[hv[j] & t->mask]);
    }
    for (size_t i = 0; i < n; i++) {
        size_t j = i + GET_SLOT;
        if (j < n) {
            hv[j % GET_RING] = wci_hash_bytes(keys[j], key_lens[j]);
            __builtin_prefetch(&t->s[hv[j % GET_RING] & t->mask]);
        }
        if ((j = i + GET_KEY) < n)
            wci_hash_prefetch(t, hv[j % GET_RING]);
        if ((j = i + GET_HEAD) < n) {
            /* Kept for when key j is read: whatever the writer does to t
             * meanwhile, the key found now is what the view sees (a key
             * it re-creates after removing this one is newer than the
             * view's revision). */
            const wci_key *k = wci_hash_find(t, keys[j], key_lens[j], hv[j % GET_RING]);
            kp[j % GET_RING] = k;
            if (k)
                wci_prefetch_ver(
                    atomic_load_explicit(&((wci_key *)k)->head, memory_order_relaxed));
        }
        const wci_key *k = i >= GET_HEAD
                               ? kp[i % GET_RING]
                               : wci_hash_find(t, keys[i], key_lens[i], hv[i % GET_RING]);
        const wci_ver *w = k ? wci_visible(k, v->rev) : NULL;
        codes[i] = w ? WCACHE_OK : WCACHE_ENOTFOUND;
        if (w)
            fill(&out[i], k, w);
    }
    return WCACHE_OK;
}

/* ---- ranges ---- */

wcache_code wci_range_parse(const wcache_list_opts *o, wci_range *r)
{
    memset(r, 0, sizeof *r);
    if (!o)
        return WCACHE_OK;
    if (o->size < sizeof *o || (!o->prefix && o->prefix_len) || (!o->start && o->start_len) ||
        (!o->end && o->end_len) || (!o->token && o->token_len))
        return WCACHE_EINVAL;
    if (o->prefix_len) {
        r->prefix = o->prefix;
        r->plen = o->prefix_len;
        r->lo = o->prefix;
        r->lolen = o->prefix_len;
        return WCACHE_OK;
    }
    r->lo = o->start;
    r->lolen = o->start_len;
    if (o->end_len) {
        r->hi = o->end;
        r->hilen = o->end_len;
    }
    return WCACHE_OK;
}

/* For a key reached by seeking to r->lo: only the end needs checking. */
static bool below_end(const wci_range *r, const wci_key *k)
{
    if (r->prefix)
        return k->klen >= r->plen && !memcmp(k->key, r->prefix, r->plen);
    return !r->hi || wci_keycmp(k->key, k->klen, r->hi, r->hilen) < 0;
}

bool wci_range_has(const wci_range *r, const wci_key *k)
{
    if (!r->prefix && r->lolen && wci_keycmp(k->key, k->klen, r->lo, r->lolen) < 0)
        return false;
    return below_end(r, k);
}

/* Iterator positioned at the range start, or just after a token's key. */
static wcache_code start(wcache_view *v, const wcache_list_opts *o, const wci_range *r,
                         wci_iter *it)
{
    if (!o || !o->token_len) {
        wci_tree_seek(&v->c->tree, it, r->lo, r->lolen);
        return WCACHE_OK;
    }
    int64_t rev;
    uint64_t rh;
    const char *key;
    size_t klen;
    wcache_code rc = wci_token_decode(v, o->token, o->token_len, &rev, &rh, &key, &klen);
    if (rc != WCACHE_OK)
        return rc;
    if (rev != v->rev || rh != wci_range_hash(o))
        return WCACHE_EBADTOKEN;
    if (wci_keycmp(key, klen, r->lo, r->lolen) < 0)
        return WCACHE_EBADTOKEN; /* a key before the range: not ours */
    wci_tree_seek(&v->c->tree, it, key, klen);
    /* resume strictly after the token's key */
    wci_iter peek = *it;
    const wci_key *k = wci_iter_next(&peek);
    if (k && wci_keycmp(k->key, k->klen, key, klen) == 0)
        *it = peek;
    return WCACHE_OK;
}

/*
 * A range scan takes entries from the leaves LB at a time into one of two
 * buffers: while it reads one, the versions of the other are fetched, one
 * per item read, so that LB items' misses are in flight without a chain of
 * loads to find their addresses (the leaves hold them, see wcache_int.h).
 * The range's end is tested on a buffer's last key; only the buffer where
 * the range ends tests each key.
 */
#define LB 32

typedef struct lscan {
    wci_iter it; /* where the next take starts */
    const wci_range *r;
    int64_t rev;
    bool bounded, done;
    int c;       /* the buffer being read */
    size_t pos;  /* in buf[c] */
    size_t n[2]; /* entries in each buffer */
    bool in[2];  /* every key of the buffer is before the range's end */
    wci_ent buf[2][LB];
} lscan;

/* The last key, tested when the scan comes to the buffer, is fetched now. */
static void ls_take(lscan *s, int b)
{
    size_t n = s->n[b] = s->done ? 0 : wci_iter_take(&s->it, s->buf[b], LB);
    if (s->bounded && n)
        __builtin_prefetch(s->buf[b][n - 1].k);
}

static void ls_enter(lscan *s, int b)
{
    size_t n = s->n[b];
    s->in[b] = !s->bounded || (n && below_end(s->r, s->buf[b][n - 1].k));
}

static void ls_init(lscan *s, const wci_iter *it, const wci_range *r, int64_t rev)
{
    s->it = *it;
    s->r = r;
    s->rev = rev;
    s->bounded = r->prefix || r->hi;
    s->done = false;
    s->c = 0;
    s->pos = 0;
    ls_take(s, 0);
    ls_enter(s, 0);
    for (size_t j = 0; j < s->n[0]; j++)
        wci_prefetch_ver(s->buf[0][j].v);
    ls_take(s, 1);
}

/* The next entry in range visible at the scan's revision (its version in
 * *w), or NULL at the end. */
static inline __attribute__((always_inline)) const wci_ent *ls_next(lscan *s, const wci_ver **w)
{
    for (;;) {
        int c = s->c;
        if (s->pos == s->n[c]) {
            if (s->done || !s->n[1 - c])
                return NULL;
            s->c = c = 1 - c;
            s->pos = 0;
            ls_enter(s, c);
            ls_take(s, 1 - c);
        }
        const wci_ent *e = &s->buf[c][s->pos];
        if (s->pos < s->n[1 - c])
            wci_prefetch_ver(s->buf[1 - c][s->pos].v);
        s->pos++;
        if (!s->in[c] && !below_end(s->r, e->k)) {
            s->done = true;
            s->pos = s->n[c];
            s->n[1 - c] = 0;
            return NULL;
        }
        const wci_ver *v = e->v;
        while (v && v->mod_rev > s->rev)
            v = atomic_load_explicit(&((wci_ver *)v)->next, memory_order_acquire);
        if (v && !(v->flags & WCI_VER_TOMBSTONE)) {
            *w = v;
            return e;
        }
    }
}

static int64_t count_rest(lscan *s)
{
    int64_t n = 0;
    const wci_ver *w;
    while (ls_next(s, &w))
        n++;
    return n;
}

wcache_code wcache_view_list(wcache_view *v, const wcache_list_opts *o, wcache_kv *items,
                             size_t cap, wcache_list_result *res)
{
    if (!view_ok(v) || !items || !cap || !res || res->size < sizeof *res)
        return WCACHE_EINVAL;
    if (!v->slot)
        return WCACHE_ESTATE;
    wci_range r;
    wci_iter it;
    wcache_code rc = wci_range_parse(o, &r);
    if (rc == WCACHE_OK)
        rc = start(v, o, &r, &it);
    if (rc != WCACHE_OK)
        return rc;
    size_t n = 0;
    const wci_key *last = NULL;
    const wci_ent *e;
    const wci_ver *w;
    lscan sc;
    ls_init(&sc, &it, &r, v->rev);
    while (n < cap && (e = ls_next(&sc, &w)) != NULL) {
        wcache_kv *out = &items[n++];
        out->key = e->k->key;
        out->key_len = e->klen;
        out->value = w->value;
        out->value_len = w->vlen;
        out->create_revision = w->create_rev;
        out->mod_revision = w->mod_rev;
        out->version = wci_ver_version(w);
        last = e->k;
    }
    res->count = n;
    res->revision = v->rev;
    res->more = 0;
    res->remaining = -1;
    res->token = NULL;
    res->token_len = 0;
    if (n < cap) {
        res->remaining = 0;
        return WCACHE_OK;
    }
    if (!ls_next(&sc, &w)) {
        res->remaining = 0;
        return WCACHE_OK;
    }
    res->more = 1;
    if (o && o->count_remaining)
        res->remaining = 1 + count_rest(&sc);
    if ((rc = wci_token_encode(v, wci_range_hash(o), last)) != WCACHE_OK)
        return rc;
    res->token = v->tok;
    res->token_len = strlen(v->tok);
    return WCACHE_OK;
}

wcache_code wcache_view_count(wcache_view *v, const wcache_list_opts *o, uint64_t *count)
{
    if (!view_ok(v) || !count)
        return WCACHE_EINVAL;
    if (!v->slot)
        return WCACHE_ESTATE;
    wci_range r;
    wci_iter it;
    wcache_code rc = wci_range_parse(o, &r);
    if (rc == WCACHE_OK)
        rc = start(v, o, &r, &it);
    if (rc != WCACHE_OK)
        return rc;
    lscan sc;
    ls_init(&sc, &it, &r, v->rev);
    *count = (uint64_t)count_rest(&sc);
    return WCACHE_OK;
}
