/*
 * compact.c - the event history and compaction.
 *
 * Every applied put or delete appends (revision, key, version) to a ring,
 * oldest first.  The ring is what makes compaction cheap: compacting to
 * revision P only needs the events at or below P: it pops them and frees
 * the version each one superseded, instead of scanning a million keys.
 * (The watch subsystem replays the same ring.)
 *
 * Two compaction revisions exist.  The logical one (compact_rev) is what
 * reads are checked against and moves as soon as compaction is asked for.
 * The physical one (phys_rev) is how far chains were really truncated; it
 * stops at the oldest revision a view still pins, and catches up later.
 *
 * Freeing truncated versions at once is safe: a reader at R >= P stops at
 * the version visible at P and never loads the `next` pointer below it, and
 * no reader is below P.  A key whose newest version is a tombstone at or
 * below P is removed from the tree and hash and retired, since readers may
 * still hold it.
 */
#include "index.h"
#include "wcache_int.h"

#include <string.h>

int wci_ring_reserve(wcache_cache *c, size_t more)
{
    wci_ring *r = &c->ring;
    size_t cap = r->ev ? r->mask + 1 : 0;
    size_t used = (size_t)(r->tail - r->head);
    if (used + more <= cap)
        return 0;
    size_t ncap = cap ? cap : 1024;
    while (ncap < used + more)
        ncap *= 2;
    wci_event *ev = wci_malloc(&c->al, ncap * sizeof *ev);
    if (!ev)
        return -1;
    for (uint64_t i = r->head; i < r->tail; i++)
        ev[i & (ncap - 1)] = r->ev[i & r->mask];
    wci_free(&c->al, r->ev);
    r->ev = ev;
    r->mask = ncap - 1;
    return 0;
}

void wci_ring_push(wcache_cache *c, int64_t rev, int64_t now, wci_key *k, wci_ver *v)
{
    wci_ring *r = &c->ring;
    r->ev[r->tail & r->mask] = (wci_event){rev, now, k, v};
    r->tail++;
    wci_stat_add(&c->st_history, 1);
}

static void free_chain(wcache_cache *c, wci_ver *v)
{
    while (v) {
        wci_ver *n = atomic_load_explicit(&v->next, memory_order_relaxed);
        wci_ver_free(c, v);
        v = n;
    }
}

/* Unlink and retire a key whose last word is a delete at or below P. */
static void remove_key(wcache_cache *c, wci_key *k)
{
    if (wci_retire_reserve(c, 1) != 0)
        return; /* stays, invisible; a later compaction retries via zombies */
    if (wci_tree_remove(c, k) != 0)
        return;
    wci_hash_remove(&c->hash, k);
    k->flags |= WCI_KEY_REMOVED;
    c->keys_removed++;
    wci_retire(c, k, WCI_RETIRE_KEY);
}

/*
 * Compact one event at or below P.  What it superseded (the version below
 * the one it wrote) no revision >= P can see, and nothing else frees it:
 * each version is freed by the event that superseded it, so a pass in ring
 * order frees every version below what P sees, and touches only the
 * event's own version and the one below it, never the key (but for a
 * delete).  The event's version is alive here: only its successor's event
 * frees it, and that comes later in the ring.  The version below may be a
 * tombstone: no reader at or above P reaches it, so it is freed at once.
 */
static void truncate_event(wcache_cache *c, const wci_event *e)
{
    wci_ver *v = e->ver;
    wci_ver *below = atomic_load_explicit(&v->next, memory_order_relaxed);
    if (below) {
        atomic_store_explicit(&v->next, NULL, memory_order_release);
        free_chain(c, below);
    }
    if (!(v->flags & WCI_VER_TOMBSTONE))
        return;
    wci_key *k = e->key; /* a delete that is still the key's last word ends it */
    if (!(k->flags & WCI_KEY_REMOVED) &&
        atomic_load_explicit(&k->head, memory_order_relaxed) == v)
        remove_key(c, k);
}

/* Keys left empty by a failed batch hold nothing; drop them. */
static void drop_zombies(wcache_cache *c)
{
    size_t keep = 0;
    for (size_t i = 0; i < c->nzombies; i++) {
        wci_key *k = c->zombies[i];
        if (atomic_load_explicit(&k->head, memory_order_relaxed) != NULL)
            continue; /* a later put adopted it */
        remove_key(c, k);
        if (!(k->flags & WCI_KEY_REMOVED))
            c->zombies[keep++] = k;
    }
    c->nzombies = keep;
}

/* Compacting an event waits on two misses in a row: its version, and the
 * version below it, which is freed.  Events a few positions ahead go
 * through the same steps as prefetches; both versions are alive until
 * their event is compacted (see truncate_event). */
#define AHEAD_VER 16 /* compacting one event is quick: the look-ahead is long */
#define AHEAD_BELOW 8

static void ahead(const wci_ring *r, int64_t P)
{
    uint64_t h = r->head;
    const wci_event *e;
    if (h + AHEAD_VER < r->tail && (e = &r->ev[(h + AHEAD_VER) & r->mask])->rev <= P)
        __builtin_prefetch(e->ver);
    if (h + AHEAD_BELOW < r->tail && (e = &r->ev[(h + AHEAD_BELOW) & r->mask])->rev <= P) {
        wci_ver *b = atomic_load_explicit(&e->ver->next, memory_order_relaxed);
        if (b) {
            __builtin_prefetch(b, 1);
            wci_prefetch_ver(b); /* its size too: wci_ver_size */
        }
        if (e->ver->flags & WCI_VER_TOMBSTONE)
            __builtin_prefetch(e->key);
    }
}

void wci_compact_phys(wcache_cache *c)
{
    int64_t logical = atomic_load_explicit(&c->compact_rev, memory_order_relaxed);
    int64_t pinned = wci_min_pinned_rev(&c->rc);
    int64_t P = logical < pinned ? logical : pinned;
    if (P <= c->phys_rev)
        return;
    wci_ring *r = &c->ring;
    uint64_t n = 0;
    while (r->head < r->tail && r->ev[r->head & r->mask].rev <= P) {
        wci_event *e = &r->ev[r->head & r->mask];
        ahead(r, P);
        truncate_event(c, e);
        r->head++;
        n++;
    }
    wci_stat_add(&c->st_history, -(int64_t)n);
    if (c->ix)
        wci_index_compact(c, P); /* postings closed at or below P go too */
    c->phys_rev = P;
    if (c->nzombies)
        drop_zombies(c);
    wci_reclaim_poll(c, 0);
}

static void compact_to(wcache_cache *c, int64_t rev)
{
    atomic_store_explicit(&c->compact_rev, rev, memory_order_seq_cst);
    wci_stat_add(&c->st_compactions, 1);
    wci_compact_phys(c);
}

wcache_code wcache_cache_compact(wcache_cache *c, int64_t rev)
{
    if (!wci_cache_ok(c) || rev < 0)
        return WCACHE_EINVAL;
    if (!c->open)
        return WCACHE_ESTATE;
    if (wci_in_callback(c))
        return WCACHE_ERECURSIVE; /* a log callback inside a commit: wmu is held */
    int64_t cur = atomic_load_explicit(&c->rev, memory_order_relaxed);
    if (rev > cur)
        return wci_err(c, WCACHE_EFUTURE, "compact: revision %lld is above current %lld",
                       (long long)rev, (long long)cur);
    pthread_mutex_lock(&c->wmu);
    if (rev > atomic_load_explicit(&c->compact_rev, memory_order_relaxed))
        compact_to(c, rev);
    else
        wci_compact_phys(c); /* catch up what a pinned view held back */
    wci_reclaim_poll(c, 1);
    pthread_mutex_unlock(&c->wmu);
    return WCACHE_OK;
}

/* The newest revision whose events are all older than the age bound. */
static int64_t age_target(wcache_cache *c, int64_t now)
{
    wci_ring *r = &c->ring;
    int64_t cutoff = now - c->params[WCACHE_P_RETAIN_SECONDS] * 1000000000;
    if (c->age_pos < r->head)
        c->age_pos = r->head;
    while (c->age_pos < r->tail && r->ev[c->age_pos & r->mask].time_ns < cutoff) {
        c->age_rev = r->ev[c->age_pos & r->mask].rev;
        c->age_pos++;
    }
    return c->age_rev;
}

void wci_auto_compact(wcache_cache *c, int64_t now)
{
    int64_t keep = c->params[WCACHE_P_RETAIN_REVISIONS];
    int64_t secs = c->params[WCACHE_P_RETAIN_SECONDS];
    if (!c->params[WCACHE_P_AUTO_COMPACT] || (!keep && !secs))
        return;
    int64_t cur = atomic_load_explicit(&c->rev, memory_order_relaxed);
    int64_t target = INT64_MAX;
    if (keep)
        target = cur - keep;
    if (secs) {
        int64_t a = age_target(c, now);
        target = a < target ? a : target;
    }
    int64_t have = atomic_load_explicit(&c->compact_rev, memory_order_relaxed);
    /* Compact in steps of 1/64 of the window, so the cost of a pass (a
     * scan of the reader slots) is spread over many events. */
    int64_t step = keep / 64 > 1 ? keep / 64 : 1;
    if (target - have >= step)
        compact_to(c, target);
    else if (c->phys_rev < have && (c->ingests & 255) == 0)
        wci_compact_phys(c);
}
