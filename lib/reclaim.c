/*
 * reclaim.c - reader slots and deferred freeing.
 *
 * Readers take no locks and the writer never waits for them, so the writer
 * cannot know when a reader has stopped looking at a tree node, a hash
 * table or a removed key unless readers say so.  They say so in a slot of
 * a fixed table, as LMDB's readers do in its lock file: a view claims a
 * slot when it begins and writes two numbers there:
 *
 *   epoch  the global epoch it saw when it began.  Memory the writer
 *          unlinks is tagged with the epoch current at unlink time and the
 *          writer then advances the epoch; the memory is freed when every
 *          pinned slot shows a later epoch (classic epoch-based reclamation).
 *   rev    the revision the view reads at.  Version chains are truncated
 *          only down to the smallest pinned revision, so a view keeps its
 *          revision readable even after a logical compaction past it.
 *
 * The slot belongs to the view, not the thread (LMDB's MDB_NOTLS), which is
 * what lets Go move a goroutine holding a view between threads.
 *
 * Ordering: a reader stores its slot and then issues a seq_cst fence before
 * it loads any shared pointer; the writer unlinks, advances the epoch (or
 * stores the compacted revision), fences, and only then scans the slots.
 * Either the writer sees the reader's slot, or the reader sees the unlink.
 */
#include "wcache_int.h"

#include <string.h>

int wci_reclaim_init(wci_reclaim *r, const wci_alloc *al, uint32_t nslots)
{
    memset(r, 0, sizeof *r);
    r->slots = wci_calloc(al, nslots, sizeof *r->slots);
    if (!r->slots)
        return -1;
    r->nslots = nslots;
    for (uint32_t i = 0; i < nslots; i++)
        atomic_init(&r->slots[i].rev, INT64_MAX);
    atomic_init(&r->epoch, 1);
    return 0;
}

static bool try_claim(wci_reclaim *r, uint32_t j)
{
    uint64_t expect = 0;
    if (atomic_load_explicit(&r->slots[j].epoch, memory_order_relaxed) != 0)
        return false;
    if (!atomic_compare_exchange_strong(&r->slots[j].epoch, &expect, WCI_SLOT_CLAIMED))
        return false;
    uint32_t h = atomic_load(&r->hwm);
    while (h < j + 1 && !atomic_compare_exchange_weak(&r->hwm, &h, j + 1))
        ;
    return true;
}

/* A view that begins again usually finds its previous slot free, and that
 * slot's cache line is likely still its own: try it before the shared hint. */
wci_slot *wci_slot_claim(wci_reclaim *r, wci_slot *prefer)
{
    if (prefer && try_claim(r, (uint32_t)(prefer - r->slots)))
        return prefer;
    uint32_t start = atomic_fetch_add_explicit(&r->hint, 1, memory_order_relaxed);
    for (uint32_t i = 0; i < r->nslots; i++) {
        uint32_t j = (start + i) % r->nslots;
        if (try_claim(r, j))
            return &r->slots[j];
    }
    return NULL;
}

/* Publish the pin; the caller re-checks whatever it validated after this. */
void wci_slot_pin(wci_slot *s, uint64_t epoch, int64_t rev)
{
    atomic_store_explicit(&s->rev, rev, memory_order_relaxed);
    atomic_store_explicit(&s->epoch, epoch, memory_order_relaxed);
    atomic_thread_fence(memory_order_seq_cst);
}

/* Release ordering: the view's reads of chains and nodes happen before
 * the writer, loading this slot with acquire, frees what they touched. */
void wci_slot_release(wci_slot *s)
{
    atomic_store_explicit(&s->rev, INT64_MAX, memory_order_release);
    atomic_store_explicit(&s->epoch, 0, memory_order_release);
}

int64_t wci_min_pinned_rev(wci_reclaim *r)
{
    atomic_thread_fence(memory_order_seq_cst);
    uint32_t n = atomic_load(&r->hwm);
    int64_t m = INT64_MAX;
    for (uint32_t i = 0; i < n; i++) {
        int64_t v = atomic_load_explicit(&r->slots[i].rev, memory_order_acquire);
        if (v < m)
            m = v;
    }
    return m;
}

uint64_t wci_views_open(wci_reclaim *r)
{
    uint32_t n = atomic_load(&r->hwm);
    uint64_t cnt = 0;
    for (uint32_t i = 0; i < n; i++)
        cnt += atomic_load_explicit(&r->slots[i].rev, memory_order_relaxed) != INT64_MAX;
    return cnt;
}

/* Smallest epoch pinned by any slot; UINT64_MAX when none. */
static uint64_t min_pinned_epoch(wci_reclaim *r)
{
    atomic_thread_fence(memory_order_seq_cst);
    uint32_t n = atomic_load(&r->hwm);
    uint64_t m = UINT64_MAX;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t e = atomic_load_explicit(&r->slots[i].epoch, memory_order_acquire);
        if (e != 0 && e < m)
            m = e; /* a claimed, unpinned slot (UINT64_MAX) holds nothing */
    }
    return m;
}

void wci_free_key(wcache_cache *c, wci_key *k)
{
    wci_ver *v = atomic_load_explicit(&k->head, memory_order_relaxed);
    while (v) {
        wci_ver *n = atomic_load_explicit(&v->next, memory_order_relaxed);
        wci_ver_free(c, v);
        v = n;
    }
    wci_stat_add(&c->st_key_bytes, -(int64_t)k->klen);
    wci_key_release(c, k, true);
}

static void free_retired(wcache_cache *c, wci_retired *r)
{
    if (r->kind == WCI_RETIRE_KEY)
        wci_free_key(c, r->p);
    else if (r->kind == WCI_RETIRE_VER)
        wci_ver_unref(&c->al, r->p);
    else
        wci_free(&c->al, r->p);
}

int wci_retire_reserve(wcache_cache *c, size_t more)
{
    wci_reclaim *r = &c->rc;
    if (r->nret + more <= r->capret)
        return 0;
    size_t ncap = r->capret ? r->capret : 256;
    while (ncap < r->nret + more)
        ncap *= 2;
    wci_retired *n = wci_malloc(&c->al, ncap * sizeof *n);
    if (!n)
        return -1;
    if (r->nret)
        memcpy(n, r->ret, r->nret * sizeof *n);
    wci_free(&c->al, r->ret);
    r->ret = n;
    r->capret = ncap;
    return 0;
}

int wci_retire(wcache_cache *c, void *p, wci_retire_kind kind)
{
    wci_reclaim *r = &c->rc;
    if (wci_retire_reserve(c, 1) != 0)
        return -1;
    uint64_t e = atomic_load_explicit(&r->epoch, memory_order_relaxed);
    r->ret[r->nret++] = (wci_retired){p, e, kind};
    return 0;
}

/*
 * Free what no reader can reach any more.  Scanning the slots costs
 * O(slots in use), so without `force` it runs only once enough is retired.
 */
void wci_reclaim_poll(wcache_cache *c, int force)
{
    wci_reclaim *r = &c->rc;
    if (r->nret == 0 || (!force && r->nret < 128))
        return;
    atomic_fetch_add_explicit(&r->epoch, 1, memory_order_seq_cst);
    uint64_t min = min_pinned_epoch(r);
    size_t keep = 0;
    for (size_t i = 0; i < r->nret; i++) {
        if (r->ret[i].epoch < min)
            free_retired(c, &r->ret[i]);
        else
            r->ret[keep++] = r->ret[i];
    }
    r->nret = keep;
}

/* At close no reader may exist: everything retired is freed. */
void wci_reclaim_fini(wcache_cache *c)
{
    wci_reclaim *r = &c->rc;
    for (size_t i = 0; i < r->nret; i++)
        free_retired(c, &r->ret[i]);
    wci_free(&c->al, r->ret);
    wci_free(&c->al, r->slots);
    memset(r, 0, sizeof *r);
}
