/*
 * snap_delta.c - what changed between two revisions of a cache, for the
 * delta writer of snapshot.c.
 *
 * The history ring already lists every key written after B, so a delta
 * costs O(changes log changes), not a scan of the cache: the keys of the
 * ring's events in (B, S] are gathered under the writer's lock, sorted and
 * deduplicated, and each is read at S (a put) and, when gone at S, at B (a
 * tombstone only for a key the base held).  Both revisions are pinned by
 * the caller's views first: a pinned revision keeps its ring events and
 * its chain versions from physical compaction (compact.c stops at the
 * oldest pin), and the pinned epoch keeps removed keys from being freed
 * while their pointers are held here.
 */
#include "snapshot.h"
#include "wcache_int.h"

#include <stdlib.h>
#include <string.h>

typedef struct change {
    const wci_key *k;
    const wci_ver *v; /* visible at S, or NULL: a tombstone at del_rev */
    int64_t del_rev;
} change;

struct wci_changes {
    wci_alloc a;
    change *v;
    size_t n;
    uint64_t tombstones;
};

wci_alloc wci_cache_alloc(wcache_cache *c)
{
    return c->al;
}

static int by_key(const void *a, const void *b)
{
    const wci_key *x = ((const change *)a)->k, *y = ((const change *)b)->k;
    int c = wci_keycmp(x->key, x->klen, y->key, y->klen);
    /* The same key object twice sorts together; equal bytes mean one key. */
    return c ? c : (x > y) - (x < y);
}

/* The version of k at rev, tombstones included (NULL: none). */
static const wci_ver *raw_at(const wci_key *k, int64_t rev)
{
    const wci_ver *w = atomic_load_explicit(&((wci_key *)k)->head, memory_order_acquire);
    while (w && w->mod_rev > rev)
        w = atomic_load_explicit(&((wci_ver *)w)->next, memory_order_acquire);
    return w;
}

/* The keys of the ring's events in (from, to]. */
static int gather(wcache_cache *c, int64_t from, int64_t to, wci_changes *ch)
{
    pthread_mutex_lock(&c->wmu);
    const wci_ring *r = &c->ring;
    uint64_t i = wci_ring_after(r, from), end = i;
    while (end < r->tail && r->ev[end & r->mask].rev <= to)
        end++;
    int rc = WCACHE_OK;
    if (end > i) {
        ch->v = wci_calloc(&ch->a, (size_t)(end - i), sizeof *ch->v);
        if (!ch->v)
            rc = WCACHE_ENOMEM;
        for (; ch->v && i < end; i++)
            ch->v[ch->n++].k = r->ev[i & r->mask].key;
    }
    pthread_mutex_unlock(&c->wmu);
    return rc;
}

int wci_changes_collect(wcache_view *from, wcache_view *to, wci_changes **out)
{
    wcache_cache *c = from->c;
    int64_t b = from->rev, s = to->rev;
    wci_changes *ch = wci_calloc(&c->al, 1, sizeof *ch);
    if (!ch)
        return WCACHE_ENOMEM;
    ch->a = c->al;
    int rc = gather(c, b, s, ch);
    if (rc) {
        wci_changes_free(ch);
        return rc;
    }
    if (ch->n > 1)
        qsort(ch->v, ch->n, sizeof *ch->v, by_key);
    size_t keep = 0;
    for (size_t i = 0; i < ch->n; i++) {
        const wci_key *k = ch->v[i].k;
        if (keep && ch->v[keep - 1].k == k)
            continue;
        const wci_ver *at_s = raw_at(k, s);
        change e = {.k = k};
        if (at_s && !(at_s->flags & WCI_VER_TOMBSTONE)) {
            e.v = at_s;
        } else if (wci_visible(k, b)) {
            e.del_rev = at_s ? at_s->mod_rev : s;
            ch->tombstones++;
        } else {
            continue; /* created and deleted after the base: nothing to say */
        }
        ch->v[keep++] = e;
    }
    ch->n = keep;
    *out = ch;
    return WCACHE_OK;
}

static int by_addr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (wci_key *const *)a, y = (uintptr_t) * (wci_key *const *)b;
    return (x > y) - (x < y);
}

/*
 * The live keys at v's revision S without a pass over the cache: the
 * cache's count at its latest revision L (kept by the writer, read under
 * wmu with L and the ring, so the three agree), corrected for the keys the
 * ring says were written in (S, L].  A writer that lists S afterwards
 * checks the count against what it listed, so a wrong one could not go
 * unnoticed.
 */
int wci_count_at(wcache_view *v, uint64_t *out)
{
    wcache_cache *c = v->c;
    int64_t s = v->rev;
    wci_key **keys = NULL;
    size_t n = 0;
    pthread_mutex_lock(&c->wmu);
    int64_t latest = atomic_load_explicit(&c->rev, memory_order_relaxed);
    int64_t objs = (int64_t)atomic_load_explicit(&c->st_objects, memory_order_relaxed);
    const wci_ring *r = &c->ring;
    uint64_t i = wci_ring_after(r, s);
    if (r->tail > i) {
        keys = wci_malloc(&c->al, (size_t)(r->tail - i) * sizeof *keys);
        for (; keys && i < r->tail; i++)
            keys[n++] = r->ev[i & r->mask].key;
    }
    int failed = r->tail > wci_ring_after(r, s) && !keys;
    pthread_mutex_unlock(&c->wmu);
    if (failed)
        return WCACHE_ENOMEM;
    if (n > 1)
        qsort(keys, n, sizeof *keys, by_addr);
    for (size_t j = 0; j < n; j++) {
        if (j && keys[j] == keys[j - 1])
            continue;
        objs += (wci_visible(keys[j], s) != NULL) - (wci_visible(keys[j], latest) != NULL);
    }
    wci_free(&c->al, keys);
    *out = objs < 0 ? 0 : (uint64_t)objs;
    return WCACHE_OK;
}

size_t wci_changes_count(const wci_changes *ch)
{
    return ch->n;
}

uint64_t wci_changes_tombstones(const wci_changes *ch)
{
    return ch->tombstones;
}

void wci_changes_get(const wci_changes *ch, size_t i, wcache_kv *kv)
{
    const change *e = &ch->v[i];
    memset(kv, 0, sizeof *kv);
    kv->key = e->k->key;
    kv->key_len = e->k->klen;
    if (e->v) {
        kv->value = e->v->value;
        kv->value_len = e->v->vlen;
        kv->create_revision = e->v->create_rev;
        kv->mod_revision = e->v->mod_rev;
        kv->version = wci_ver_version(e->v);
    } else {
        kv->value = "";
        kv->mod_revision = e->del_rev;
    }
}

void wci_changes_free(wci_changes *ch)
{
    if (!ch)
        return;
    wci_alloc a = ch->a;
    wci_free(&a, ch->v);
    wci_free(&a, ch);
}
