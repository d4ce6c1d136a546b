/*
 * cache.c - the wcache_cache handle: lifecycle, parameters, statistics.
 *
 * Thin on purpose: it wires hash.c, tree.c, compact.c and reclaim.c
 * together.  Configuration happens only before open, so every parameter is
 * read without synchronisation afterwards.
 */
#include "index.h"
#include "wcache_int.h"

#include <string.h>

typedef struct pdef {
    int64_t lo, hi, dflt;
} pdef;

static const pdef PARAMS[WCACHE_P_LAST] = {
    [WCACHE_P_RETAIN_REVISIONS] = {0, (int64_t)1 << 40, 0},
    /* 75 s is the Kubernetes watch cache's event window (eventFreshDuration). */
    [WCACHE_P_RETAIN_SECONDS] = {0, (int64_t)1 << 32, 75},
    [WCACHE_P_AUTO_COMPACT] = {0, 1, 1},
    [WCACHE_P_READER_SLOTS] = {1, 1 << 20, 1024},
    [WCACHE_P_MAX_KEY_BYTES] = {1, 1 << 20, 65536},
    [WCACHE_P_MAX_VALUE_BYTES] = {0, 1 << 30, 16 << 20}, /* fits wci_ver.vlen */
};

static int param_known(int p)
{
    return p > 0 && p < WCACHE_P_LAST;
}

wcache_code wcache_param_bounds(wcache_param p, int64_t *lo, int64_t *hi, int64_t *dflt)
{
    if (!param_known(p))
        return WCACHE_EINVAL;
    if (lo)
        *lo = PARAMS[p].lo;
    if (hi)
        *hi = PARAMS[p].hi;
    if (dflt)
        *dflt = PARAMS[p].dflt;
    return WCACHE_OK;
}

static void *libc_alloc(size_t n, void *ud)
{
    return wci_libc_alloc.alloc(n, ud);
}

static void libc_free(void *p, void *ud)
{
    wci_libc_alloc.free(p, ud);
}

wcache_code wcache_cache_create(wcache_cache **out, const wcache_allocator *alloc)
{
    if (!out)
        return WCACHE_EINVAL;
    *out = NULL;
    wci_alloc al = {libc_alloc, libc_free, NULL};
    if (alloc) {
        if (alloc->size < sizeof *alloc || !alloc->alloc || !alloc->free)
            return WCACHE_EINVAL;
        al = (wci_alloc){alloc->alloc, alloc->free, alloc->userdata};
    }
    wcache_cache *c = wci_calloc(&al, 1, sizeof *c);
    if (!c)
        return WCACHE_ENOMEM;
    c->magic = WCI_CACHE_MAGIC;
    c->al = al;
    c->libc_al = !alloc;
    /* Versions: 64, since values drift (a pod grows a little after it is
     * created) and a version freed in one class serves only that class;
     * finer classes strand more freed memory than they save in rounding
     * (measured: 16 and 32 cost 13% and 8% more peak RSS at 1M pods).
     * Keys never change size, so they take the finest grain (8: 4.4 bytes
     * less per key than 16 at 1M pods), and a slab of their own puts them
     * on huge pages too (a GET reads one at random). */
    c->slab = wci_slab_create(&al, c->libc_al, WCI_VER_GRAIN);
    c->kslab = c->slab ? wci_slab_create(&al, c->libc_al, 8) : NULL;
    if (!c->kslab) {
        wci_slab_destroy(c->slab);
        wci_free(&al, c);
        return WCACHE_ENOMEM;
    }
    for (int p = 1; p < WCACHE_P_LAST; p++)
        c->params[p] = PARAMS[p].dflt;
    c->log_level = WCACHE_LOG_INFO;
    wci_tree_init(&c->tree);
    *out = c;
    return WCACHE_OK;
}

wcache_code wcache_cache_set_param(wcache_cache *c, wcache_param p, int64_t value)
{
    if (!wci_cache_ok(c) || !param_known(p))
        return WCACHE_EINVAL;
    if (c->open)
        return WCACHE_ESTATE;
    if (value < PARAMS[p].lo || value > PARAMS[p].hi)
        return WCACHE_EINVAL;
    c->params[p] = value;
    return WCACHE_OK;
}

wcache_code wcache_cache_get_param(const wcache_cache *c, wcache_param p, int64_t *value)
{
    if (!wci_cache_ok(c) || !param_known(p) || !value)
        return WCACHE_EINVAL;
    *value = c->params[p];
    return WCACHE_OK;
}

wcache_code wcache_cache_set_log(wcache_cache *c, wcache_log_fn fn, int max_level, void *ud)
{
    if (!wci_cache_ok(c) || max_level < WCACHE_LOG_ERROR || max_level > WCACHE_LOG_DEBUG)
        return WCACHE_EINVAL;
    if (c->open)
        return WCACHE_ESTATE;
    c->log_fn = fn;
    c->log_level = max_level;
    c->log_ud = ud;
    return WCACHE_OK;
}

wcache_code wcache_cache_set_clock(wcache_cache *c, wcache_clock_fn fn, void *ud)
{
    if (!wci_cache_ok(c))
        return WCACHE_EINVAL;
    if (c->open)
        return WCACHE_ESTATE;
    c->clock_fn = fn;
    c->clock_ud = ud;
    return WCACHE_OK;
}

wcache_code wcache_cache_set_errbuf(wcache_cache *c, char *buf, size_t len)
{
    if (!wci_cache_ok(c) || (buf && !len))
        return WCACHE_EINVAL;
    if (wci_in_callback(c))
        return WCACHE_ERECURSIVE;
    c->errbuf = buf;
    c->errlen = buf ? len : 0;
    return WCACHE_OK;
}

wcache_code wcache_cache_open(wcache_cache *c)
{
    if (!wci_cache_ok(c))
        return WCACHE_EINVAL;
    if (c->open)
        return WCACHE_ESTATE;
    if (wci_reclaim_init(&c->rc, &c->al, (uint32_t)c->params[WCACHE_P_READER_SLOTS]) != 0)
        return wci_err(c, WCACHE_ENOMEM, "open: cannot allocate reader slots");
    if (wci_hash_init(&c->hash, &c->al, 0) != 0) {
        wci_reclaim_fini(c);
        return wci_err(c, WCACHE_ENOMEM, "open: cannot allocate the key table");
    }
    if (wci_watch_init(c) != 0) {
        wci_hash_fini(&c->hash, &c->al);
        wci_reclaim_fini(c);
        return wci_err(c, WCACHE_ENOMEM, "open: cannot set up watchers");
    }
    c->open = 1;
    wci_log(c, WCACHE_LOG_DEBUG, "cache open: %u reader slots", c->rc.nslots);
    return WCACHE_OK;
}

void wcache_cache_close(wcache_cache *c)
{
    if (!wci_cache_ok(c))
        return;
    if (c->open) {
        /* frees every key and its versions, zombies too: they are in the tree */
        wci_tree_fini(c, &c->tree);
        wci_free(&c->al, c->zombies);
        wci_free(&c->al, c->ring.ev);
        wci_reclaim_fini(c);
        wci_hash_fini(&c->hash, &c->al);
        wci_watch_fini(c);
    }
    wci_index_fini(c); /* registered before open, so also when never opened */
    c->magic = 0;
    wci_slab_destroy(c->slab); /* after every version: keys, batches, events */
    wci_slab_destroy(c->kslab);
    wci_alloc al = c->al;
    wci_free(&al, c);
}

int wcache_cache_last_errno(const wcache_cache *c)
{
    return wci_cache_ok(c) ? c->last_errno : 0;
}

int64_t wcache_cache_revision(const wcache_cache *c)
{
    if (!wci_cache_ok(c))
        return 0;
    return atomic_load_explicit(&c->rev, memory_order_acquire);
}

int64_t wcache_cache_compacted_revision(const wcache_cache *c)
{
    if (!wci_cache_ok(c))
        return 0;
    return atomic_load_explicit(&c->compact_rev, memory_order_acquire);
}

#define LOAD(x) atomic_load_explicit(&(x), memory_order_relaxed)

wcache_code wcache_cache_stat(const wcache_cache *c, wcache_stat *st)
{
    if (!wci_cache_ok(c) || !st || st->size < sizeof *st)
        return WCACHE_EINVAL;
    wcache_stat s = {.size = sizeof s};
    s.revision = wcache_cache_revision(c);
    s.compacted_revision = wcache_cache_compacted_revision(c);
    s.objects = LOAD(c->st_objects);
    s.versions = LOAD(c->st_versions);
    s.value_bytes = LOAD(c->st_value_bytes);
    s.key_bytes = LOAD(c->st_key_bytes);
    s.events = LOAD(c->st_events);
    s.history_events = LOAD(c->st_history);
    s.views_open = c->open ? wci_views_open(&((wcache_cache *)c)->rc) : 0;
    s.compactions = LOAD(c->st_compactions);
    *st = s;
    return WCACHE_OK;
}
