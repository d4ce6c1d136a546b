/*
 * ingest.c - the writer: puts, deletes, batches, progress and bulk load.
 *
 * Every change is applied in two phases.  The first does everything that
 * can fail (allocate versions and keys, reserve ring, hash and retire
 * capacity, insert new keys into the tree and hash with no version, which
 * readers treat as absent) and undoes it on failure.  The second cannot
 * fail: it links each new version at the head of its chain and pushes the
 * event, then one release store of the revision makes the whole change
 * visible to readers at the latest revision.  So a failed call changes
 * nothing a reader can see, and a batch is seen whole or not at all.
 */
#include "index.h"
#include "wcache_int.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* ---- versions and keys ---- */

static void ver_init(wci_ver *v, const void *val, size_t vlen)
{
    atomic_init(&v->next, NULL);
    v->mod_rev = v->create_rev = 0;
    v->vlen = (uint32_t)vlen & 0x7fffffffu;
    v->flags = 0;
    atomic_init(&v->refs, 1);
    if (vlen)
        memcpy(v->value, val, vlen);
}

/*
 * Where a version's memory comes from decides how much of the heap is
 * left over.  Objects grow after they are created (status is filled in,
 * counters and timestamps gain digits), and a version freed by compaction
 * can only be reused by one no larger.  If every key's first version were
 * exactly as large as it needs, the memory of first versions would suit
 * none of the larger versions that replace them, and stay unused: with
 * podgen's pods, which grow ~13 bytes at their first update, 5-25% of the
 * heap (bench/slabsim.c).  So a key's first version gets 1/64 more room
 * (its successor then fits where it lived), and any version may take a
 * free object up to FIT_GRAINS larger than its own size rounds to.
 */
#define FIT_GRAINS 8
#define FIRST_ROOM(n) ((n) / 64)

/* The sizes ver_new_x asks the slab for: n needed, want (n plus the
 * first version's room), max (the largest free object it may take). */
typedef struct ver_sizes {
    size_t n, want, max;
} ver_sizes;

static ver_sizes sizes_of(size_t vlen, bool first)
{
    ver_sizes z;
    z.n = sizeof(wci_ver) + vlen;
    z.want = z.n + (first ? FIRST_ROOM(z.n) : 0);
    z.max = (z.want + WCI_VER_GRAIN - 1) / WCI_VER_GRAIN * WCI_VER_GRAIN +
            FIT_GRAINS * WCI_VER_GRAIN;
    return z;
}

/* w: called by the writer (see alloc.h).  first: the key's first version
 * (a create, or the first after a delete). */
static wci_ver *ver_new_x(wcache_cache *c, const void *val, size_t vlen, bool w, bool first)
{
    ver_sizes z = sizes_of(vlen, first);
    size_t got;
    wci_ver *v = w ? wci_slab_fit_w(c->slab, z.n, z.want, z.max, &got)
                   : wci_slab_fit(c->slab, z.n, z.want, z.max, &got);
    if (v) {
        ver_init(v, val, vlen);
        v->vx = (got - z.n) / WCI_VER_GRAIN; /* grains beyond n's class (wci_ver_size) */
    }
    return v;
}

/*
 * The memory a new version will take was freed long ago, so copying the
 * value into it misses on every line, and those stores all have to reach
 * the cache before the revision's publishing store (seq_cst: a locked
 * instruction) can complete.  Asking for the lines, for writing, before
 * the hash lookup lets their misses overlap the lookup's (one put per
 * call at 1M pods: 750 -> 610 ns, bench/ab_core.sh).  An update's size is
 * assumed; a create's larger object is then simply not prefetched.
 */
static void ver_prefetch(wcache_cache *c, size_t vlen)
{
    ver_sizes z = sizes_of(vlen, false);
    wci_slab_fit_prefetch_w(c->slab, z.n, z.want, z.max);
}

static wci_ver *ver_new(wcache_cache *c, const void *val, size_t vlen, bool first)
{
    return ver_new_x(c, val, vlen, true, first);
}

/* A version not (or no longer) referenced by anything. */
static void ver_del_x(wcache_cache *c, wci_ver *v, bool w)
{
    if (!v)
        return;
    if (w)
        wci_slab_free_w(c->slab, v, wci_ver_size(v));
    else
        wci_slab_free(c->slab, v, wci_ver_size(v));
}

static void ver_del(wcache_cache *c, wci_ver *v)
{
    ver_del_x(c, v, true);
}

static wci_ver *ver_copy(wcache_cache *c, const wci_ver *src, bool first)
{
    wci_ver *v = ver_new(c, src->value, src->vlen, first);
    if (v) {
        v->create_rev = src->create_rev;
        v->mod_rev = src->mod_rev;
        wci_ver_set_version(v, wci_ver_version(src));
        v->flags = src->flags;
    }
    return v;
}

/* w: called by the writer. */
static wci_key *key_new(wcache_cache *c, const void *key, size_t klen, bool w)
{
    size_t n = sizeof(wci_key) + klen;
    wci_key *k = w ? wci_slab_alloc_w(c->kslab, n) : wci_slab_alloc(c->kslab, n);
    if (!k)
        return NULL;
    atomic_init(&k->head, NULL);
    k->lslot = NULL;
    k->klen = (uint32_t)klen;
    k->flags = 0;
    memcpy(k->key, key, klen);
    return k;
}

void wci_key_release(wcache_cache *c, wci_key *k, bool w)
{
    if (!k)
        return;
    if (w)
        wci_slab_free_w(c->kslab, k, sizeof *k + k->klen);
    else
        wci_slab_free(c->kslab, k, sizeof *k + k->klen);
}

/* Whoever holds the only reference can free without a locked decrement:
 * references are only ever added by a holder (the writer, for watch
 * events, from the chain's), so nobody can add one meanwhile.  The acquire
 * load orders the free after the other holders' last use. */
static bool sole_ref(wci_ver *v)
{
    return atomic_load_explicit(&v->refs, memory_order_acquire) == 1;
}

/* al is always the al member of the version's cache (watch.c passes
 * &event->c->al), which leads to the cache's slab.  Any thread. */
void wci_ver_unref(const wci_alloc *al, wci_ver *v)
{
    if (sole_ref(v) || atomic_fetch_sub_explicit(&v->refs, 1, memory_order_acq_rel) == 1)
        ver_del_x((wcache_cache *)((char *)(uintptr_t)al - offsetof(wcache_cache, al)), v,
                  false);
}

void wci_ver_free(wcache_cache *c, wci_ver *v)
{
    wci_stat_add(&c->st_versions, -1);
    wci_stat_add(&c->st_value_bytes, -(int64_t)v->vlen);
    if (sole_ref(v))
        ver_del(c, v);
    else
        wci_ver_unref(&c->al, v);
}

static bool live(const wci_key *k)
{
    const wci_ver *h = k ? atomic_load_explicit(&k->head, memory_order_relaxed) : NULL;
    return h && !(h->flags & WCI_VER_TOMBSTONE);
}

static wci_key *find(wcache_cache *c, const void *key, size_t klen, uint64_t hv)
{
    return wci_hash_find(atomic_load_explicit(&c->hash.tab, memory_order_relaxed), key, klen,
                         hv);
}

/* ---- argument checks ---- */

static wcache_code check_key(wcache_cache *c, const void *key, size_t klen)
{
    if (!key || klen == 0)
        return wci_err(c, WCACHE_EINVAL, "empty key");
    if (klen > (size_t)c->params[WCACHE_P_MAX_KEY_BYTES])
        return wci_err(c, WCACHE_ETOOBIG, "key of %zu bytes is over the limit of %lld", klen,
                       (long long)c->params[WCACHE_P_MAX_KEY_BYTES]);
    return WCACHE_OK;
}

static wcache_code check_value(wcache_cache *c, const void *val, size_t vlen)
{
    if (!val && vlen)
        return wci_err(c, WCACHE_EINVAL, "NULL value with length %zu", vlen);
    if (vlen > (size_t)c->params[WCACHE_P_MAX_VALUE_BYTES])
        return wci_err(c, WCACHE_ETOOBIG, "value of %zu bytes is over the limit of %lld", vlen,
                       (long long)c->params[WCACHE_P_MAX_VALUE_BYTES]);
    return WCACHE_OK;
}

static wcache_code check_rev(wcache_cache *c, int64_t rev)
{
    int64_t cur = atomic_load_explicit(&c->rev, memory_order_relaxed);
    if (rev <= cur)
        return wci_err(c, WCACHE_EORDER, "revision %lld is not above the current %lld",
                       (long long)rev, (long long)cur);
    return WCACHE_OK;
}

static wcache_code check_writer(wcache_cache *c)
{
    if (!wci_cache_ok(c))
        return WCACHE_EINVAL;
    if (!c->open)
        return WCACHE_ESTATE;
    if (wci_in_callback(c))
        return WCACHE_ERECURSIVE;
    return WCACHE_OK;
}

/* ---- the two-phase commit shared by every change ---- */

typedef struct prep {
    wci_key *k;
    wci_ver *v;  /* with flags set; revisions filled in at link time */
    uint64_t hv; /* wci_hash_bytes of k's key */
    bool isnew;  /* k was allocated here and is not yet in the cache */
    bool meta;   /* v carries the metadata to report (a re-list's put_meta) */
} prep;

static void prep_free(wcache_cache *c, prep *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        ver_del(c, p[i].v);
        if (p[i].isnew)
            wci_key_release(c, p[i].k, true);
    }
}

static int reserve_zombies(wcache_cache *c, size_t more)
{
    if (c->nzombies + more <= c->capzombies)
        return 0;
    size_t cap = c->capzombies ? c->capzombies : 16;
    while (cap < c->nzombies + more)
        cap *= 2;
    wci_key **z = wci_malloc(&c->al, cap * sizeof *z);
    if (!z)
        return -1;
    if (c->nzombies)
        memcpy(z, c->zombies, c->nzombies * sizeof *z);
    wci_free(&c->al, c->zombies);
    c->zombies = z;
    c->capzombies = cap;
    return 0;
}

/* Phase one's last step: put new keys into the tree and hash, empty. */
static int insert_new_keys(wcache_cache *c, prep *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!p[i].isnew)
            continue;
        if (wci_tree_insert(c, p[i].k) != 0) {
            /* keys already inserted stay, empty and invisible */
            for (size_t j = 0; j < i; j++) {
                if (p[j].isnew) {
                    c->zombies[c->nzombies++] = p[j].k;
                    p[j].isnew = false;
                }
            }
            return -1;
        }
        wci_hash_insert(&c->hash, p[i].k, p[i].hv);
        wci_stat_add(&c->st_key_bytes, p[i].k->klen);
    }
    return 0;
}

/* meta: v carries the source's own metadata (wcache_ingest_relist checked
 * it), which is kept: only the versions the cache numbers itself get it
 * from rev and the chain. */
static void link_version(wcache_cache *c, wci_key *k, uint64_t hv, wci_ver *v, int64_t rev,
                         bool meta)
{
    wci_ver *head = atomic_load_explicit(&k->head, memory_order_relaxed);
    bool was_live = head && !(head->flags & WCI_VER_TOMBSTONE);
    if (!meta) {
        v->mod_rev = rev;
        if (v->flags & WCI_VER_TOMBSTONE) {
            v->create_rev = 0;
            wci_ver_set_version(v, 0);
        } else if (was_live) {
            v->create_rev = head->create_rev;
            wci_ver_set_version(v, wci_ver_version(head) + 1);
        } else {
            v->create_rev = rev;
            wci_ver_set_version(v, 1);
        }
    }
    atomic_store_explicit(&v->next, head, memory_order_relaxed);
    atomic_store_explicit(&k->head, v, memory_order_release);
    if (k->lslot) /* set for every key in the tree, which a linked key is */
        atomic_store_explicit(k->lslot, v, memory_order_release);
    wci_hash_hint(&c->hash, k, hv, v);
    bool now_live = !(v->flags & WCI_VER_TOMBSTONE);
    if (now_live != was_live) {
        if (now_live)
            wci_stat_add(&c->st_objects, 1);
        else
            wci_stat_add(&c->st_objects, -1);
    }
    wci_stat_add(&c->st_versions, 1);
    wci_stat_add(&c->st_value_bytes, v->vlen);
}

/* Phase one of the secondary indexes (index.c): run the extractors and
 * allocate every posting the changes need.  p NULL: a bulk load of keys
 * whose heads are set.  0, or -1 with nothing changed. */
static int index_prep(wcache_cache *c, size_t n, const prep *p, wci_key **keys)
{
    if (!c->ix)
        return 0;
    int rc = wci_index_begin(c, n);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        wci_key *k = p ? p[i].k : keys[i];
        const wci_ver *v = p ? p[i].v : atomic_load_explicit(&k->head, memory_order_relaxed);
        rc = wci_index_prep(c, i, k, v, p ? p[i].isnew : true);
    }
    if (rc == 0)
        rc = wci_index_reserve(c);
    if (rc != 0)
        wci_index_abort(c);
    return rc;
}

/* Under wmu: make rev visible, then compact what it pushed out. */
static void publish(wcache_cache *c, int64_t rev, int64_t now)
{
    atomic_store_explicit(&c->rev, rev, memory_order_seq_cst);
    c->ingests++;
    wci_auto_compact(c, now);
    wci_reclaim_poll(c, 0);
}

static bool need_time(const wcache_cache *c)
{
    return c->params[WCACHE_P_RETAIN_SECONDS] && c->params[WCACHE_P_AUTO_COMPACT];
}

/* Apply p[0..n) at rev, all or nothing, under wmu (the caller's).  Takes
 * ownership of p's memory.  0, or -1 (ENOMEM) with nothing changed, p
 * still the caller's to free, and the error not yet reported.  pub: make
 * rev visible; else the caller publishes it (or a later revision) before
 * it lets go of wmu. */
static int commit_locked(wcache_cache *c, prep *p, size_t n, int64_t rev, bool pub)
{
    size_t nnew = 0;
    for (size_t i = 0; i < n; i++)
        nnew += p[i].isnew;
    bool ixok = false;
    if (wci_ring_reserve(c, n) != 0 ||
        (nnew && (wci_hash_reserve(c, nnew) != 0 || reserve_zombies(c, nnew) != 0)) ||
        !(ixok = index_prep(c, n, p, NULL) == 0) || insert_new_keys(c, p, n) != 0) {
        if (ixok && c->ix)
            wci_index_abort(c); /* the keys its postings name are going */
        return -1;
    }
    int64_t now = need_time(c) ? wci_now(c) : 0;
    for (size_t i = 0; i < n; i++) {
        wci_ver *prev = atomic_load_explicit(&p[i].k->head, memory_order_relaxed);
        link_version(c, p[i].k, p[i].hv, p[i].v, rev, p[i].meta);
        if (c->ix)
            wci_index_link(c, i, p[i].k, rev); /* before dispatch: it reads the values */
        wci_ring_push(c, rev, now, p[i].k, p[i].v);
        wci_dispatch(c, p[i].k, p[i].v, prev, rev);
    }
    if (c->ix)
        wci_index_end(c);
    wci_stat_add(&c->st_events, n);
    if (pub)
        publish(c, rev, now);
    return 0;
}

static wcache_code commit_failed(wcache_cache *c, prep *p, size_t n, int64_t rev)
{
    prep_free(c, p, n);
    return wci_err(c, WCACHE_ENOMEM, "out of memory applying revision %lld", (long long)rev);
}

/* The whole commit runs under wmu, so a watcher replaying history sees the
 * ring and the revision move together. */
static wcache_code commit(wcache_cache *c, prep *p, size_t n, int64_t rev)
{
    pthread_mutex_lock(&c->wmu);
    int rc = commit_locked(c, p, n, rev, true);
    pthread_mutex_unlock(&c->wmu);
    if (rc != 0)
        return commit_failed(c, p, n, rev);
    wci_fresh_wake(c);
    return WCACHE_OK;
}

/* p's key: found, the key the hash holds for these bytes (NULL: none), or a
 * new (not yet inserted) one. */
static int prep_key(wcache_cache *c, prep *p, wci_key *found, const void *key, size_t klen,
                    uint64_t hv)
{
    p->k = found;
    p->hv = hv;
    p->isnew = found == NULL;
    if (p->isnew)
        p->k = key_new(c, key, klen, true);
    return p->k ? 0 : -1;
}

wcache_code wcache_ingest_put(wcache_cache *c, const void *key, size_t klen, const void *val,
                              size_t vlen, int64_t rev)
{
    wcache_code rc = check_writer(c);
    if (rc == WCACHE_OK)
        rc = check_key(c, key, klen);
    if (rc == WCACHE_OK)
        rc = check_value(c, val, vlen);
    if (rc == WCACHE_OK)
        rc = check_rev(c, rev);
    if (rc != WCACHE_OK)
        return rc;
    prep p = {0};
    uint64_t hv = wci_hash_bytes(key, klen);
    ver_prefetch(c, vlen);
    wci_key *found = find(c, key, klen, hv);
    if (found && found->lslot) /* the leaf slot linking stores the new version in */
        __builtin_prefetch(found->lslot, 1);
    p.v = ver_new(c, val, vlen, !live(found));
    if (!p.v || prep_key(c, &p, found, key, klen, hv) != 0) {
        ver_del(c, p.v);
        return wci_err(c, WCACHE_ENOMEM, "out of memory for a put at %lld", (long long)rev);
    }
    return commit(c, &p, 1, rev);
}

wcache_code wcache_ingest_delete(wcache_cache *c, const void *key, size_t klen, int64_t rev)
{
    wcache_code rc = check_writer(c);
    if (rc == WCACHE_OK)
        rc = check_key(c, key, klen);
    if (rc == WCACHE_OK)
        rc = check_rev(c, rev);
    if (rc != WCACHE_OK)
        return rc;
    uint64_t hv = wci_hash_bytes(key, klen);
    prep p = {.k = find(c, key, klen, hv), .hv = hv};
    if (!live(p.k))
        return wci_err(c, WCACHE_ENOTFOUND, "delete at %lld of a key that is not present",
                       (long long)rev);
    p.v = ver_new(c, NULL, 0, false);
    if (!p.v)
        return wci_err(c, WCACHE_ENOMEM, "out of memory for a delete at %lld", (long long)rev);
    p.v->flags = WCI_VER_TOMBSTONE;
    return commit(c, &p, 1, rev);
}

/* ---- many changes, each at its own revision ----
 *
 * Applying a change waits on up to three cache misses in a row: the hash
 * slot, the key it names, and the key's newest version (whose metadata the
 * new version continues).  Here the next changes go through those steps
 * ahead of time as prefetches, so that while one change is applied the
 * misses of the next few are in flight.  Only the hash (a pure function of
 * the key) is kept from the look-ahead; what memory holds is looked up again
 * when the change is applied, since applying changes moves it. */
#define AHEAD_SLOT 12   /* hash the key and fetch its slot */
#define AHEAD_KEY 8     /* fetch the keys the slot names */
#define AHEAD_HEAD 4    /* find the key and fetch its newest version */
#define AHEAD_RING 16   /* > AHEAD_SLOT, a power of two */
#define CHANGE_GROUP 64 /* changes applied per hold of wmu */

static bool change_key_ok(const wcache_cache *c, const wcache_change *x)
{
    return x->key && x->key_len && x->key_len <= (size_t)c->params[WCACHE_P_MAX_KEY_BYTES];
}

static void ahead_slot(const wcache_cache *c, const wcache_change *x, uint64_t *hv)
{
    if (!change_key_ok(c, x))
        return;
    *hv = wci_hash_bytes(x->key, x->key_len);
    const wci_htab *t = atomic_load_explicit(&c->hash.tab, memory_order_relaxed);
    __builtin_prefetch(&t->s[*hv & t->mask]);
}

static void ahead_key(const wcache_cache *c, const wcache_change *x, uint64_t hv)
{
    if (!change_key_ok(c, x))
        return;
    const wci_htab *t = atomic_load_explicit(&c->hash.tab, memory_order_relaxed);
    wci_hash_prefetch(t, hv);
}

static wci_key *ahead_head(wcache_cache *c, const wcache_change *x, uint64_t hv)
{
    if (!change_key_ok(c, x))
        return NULL;
    wci_key *k = find(c, x->key, x->key_len, hv);
    if (k) {
        wci_prefetch_ver(atomic_load_explicit(&k->head, memory_order_relaxed));
        if (k->lslot) /* the leaf slot linking stores the new version in */
            __builtin_prefetch(k->lslot, 1);
    }
    return k;
}

/* Everything a single call checks, without reporting; last: the revision
 * applied last. */
static bool change_ok(const wcache_cache *c, const wcache_change *x, int64_t last)
{
    if (!change_key_ok(c, x))
        return false;
    if (x->type == WCACHE_CHANGE_PUT) {
        if ((!x->value && x->value_len) ||
            x->value_len > (size_t)c->params[WCACHE_P_MAX_VALUE_BYTES])
            return false;
    } else if (x->type != WCACHE_CHANGE_DELETE) {
        return false;
    }
    return x->rev > last;
}

/* The error a change that failed change_ok() gets, reported. */
static wcache_code change_err(wcache_cache *c, const wcache_change *x)
{
    if (x->type != WCACHE_CHANGE_PUT && x->type != WCACHE_CHANGE_DELETE)
        return wci_err(c, WCACHE_EINVAL, "change of unknown type %u at %lld", x->type,
                       (long long)x->rev);
    wcache_code rc = check_key(c, x->key, x->key_len);
    if (rc == WCACHE_OK && x->type == WCACHE_CHANGE_PUT)
        rc = check_value(c, x->value, x->value_len);
    if (rc == WCACHE_OK)
        rc = check_rev(c, x->rev);
    return rc;
}

wcache_code wcache_ingest_changes(wcache_cache *c, const wcache_change *ch, size_t n,
                                  size_t *applied)
{
    if (applied)
        *applied = 0;
    wcache_code rc = check_writer(c);
    if (rc != WCACHE_OK)
        return rc;
    if (!ch && n)
        return wci_err(c, WCACHE_EINVAL, "NULL changes");
    uint64_t hv[AHEAD_RING] = {0};
    /* The key the look-ahead found for a change, and c->keys_removed then:
     * still the change's key when it is applied unless a compaction
     * removed a key meanwhile (it may have been this one, and freed).  A
     * key the look-ahead did not find may be created by a change in
     * between, so that is looked up again. */
    wci_key *kp[AHEAD_RING] = {0};
    uint64_t kgen[AHEAD_RING] = {0};
    for (size_t j = 0; j < n && j < AHEAD_SLOT; j++)
        ahead_slot(c, &ch[j], &hv[j % AHEAD_RING]);
    /* The revision is published once per group, not per change: its
     * store must be sequentially consistent (fresh reads wait on it), and
     * such a store waits for every cache miss in flight.  Readers may see
     * any revision in between anyway. */
    int64_t last = atomic_load_explicit(&c->rev, memory_order_relaxed);
    bool held = false;
    size_t i, group = 0;
    for (i = 0; i < n; i++) {
        if (i + AHEAD_SLOT < n)
            ahead_slot(c, &ch[i + AHEAD_SLOT], &hv[(i + AHEAD_SLOT) % AHEAD_RING]);
        if (i + AHEAD_KEY < n)
            ahead_key(c, &ch[i + AHEAD_KEY], hv[(i + AHEAD_KEY) % AHEAD_RING]);
        if (i + AHEAD_HEAD < n) {
            size_t j = (i + AHEAD_HEAD) % AHEAD_RING;
            kp[j] = ahead_head(c, &ch[i + AHEAD_HEAD], hv[j]);
            kgen[j] = c->keys_removed;
        }
        if (i + 1 < n && ch[i + 1].type == WCACHE_CHANGE_PUT)
            ver_prefetch(c, ch[i + 1].value_len);
        const wcache_change *x = &ch[i];
        if (!change_ok(c, x, last)) {
            rc = WCACHE_EINVAL; /* reported below, outside wmu */
            break;
        }
        uint64_t h = hv[i % AHEAD_RING];
        wci_key *k = i >= AHEAD_HEAD && kgen[i % AHEAD_RING] == c->keys_removed
                         ? kp[i % AHEAD_RING]
                         : NULL;
        if (!k)
            k = find(c, x->key, x->key_len, h);
        prep p = {0};
        if (x->type == WCACHE_CHANGE_DELETE) {
            p.k = k;
            p.hv = h;
            if (!live(p.k)) {
                rc = WCACHE_ENOTFOUND;
                break;
            }
            if ((p.v = ver_new(c, NULL, 0, false)) != NULL)
                p.v->flags = WCI_VER_TOMBSTONE;
        } else if ((p.v = ver_new(c, x->value, x->value_len, !live(k))) != NULL &&
                   prep_key(c, &p, k, x->key, x->key_len, h) != 0) {
            ver_del(c, p.v);
            p.v = NULL;
        }
        if (!p.v) {
            rc = WCACHE_ENOMEM;
            break;
        }
        if (!held)
            pthread_mutex_lock(&c->wmu), held = true;
        if (commit_locked(c, &p, 1, x->rev, false) != 0) {
            rc = WCACHE_ENOMEM;
            prep_free(c, &p, 1);
            break;
        }
        last = x->rev;
        if (++group == CHANGE_GROUP) {
            /* let watchers register and fresh reads wake between groups */
            publish(c, last, need_time(c) ? wci_now(c) : 0);
            pthread_mutex_unlock(&c->wmu), held = false;
            wci_fresh_wake(c);
            group = 0;
        }
    }
    if (held) {
        if (group)
            publish(c, last, need_time(c) ? wci_now(c) : 0);
        pthread_mutex_unlock(&c->wmu);
        wci_fresh_wake(c);
    }
    if (applied)
        *applied = i;
    if (i == n)
        return WCACHE_OK;
    const wcache_change *x = &ch[i];
    if (rc == WCACHE_EINVAL)
        return change_err(c, x);
    if (rc == WCACHE_ENOTFOUND)
        return wci_err(c, WCACHE_ENOTFOUND, "delete at %lld of a key that is not present",
                       (long long)x->rev);
    return wci_err(c, WCACHE_ENOMEM, "out of memory for a change at %lld", (long long)x->rev);
}

wcache_code wcache_ingest_progress(wcache_cache *c, int64_t rev)
{
    wcache_code rc = check_writer(c);
    if (rc != WCACHE_OK)
        return rc;
    int64_t cur = atomic_load_explicit(&c->rev, memory_order_relaxed);
    if (rev == cur)
        return WCACHE_OK;
    if (rev < cur)
        return wci_err(c, WCACHE_EORDER, "progress to %lld is below the current %lld",
                       (long long)rev, (long long)cur);
    pthread_mutex_lock(&c->wmu);
    publish(c, rev, need_time(c) ? wci_now(c) : 0);
    pthread_mutex_unlock(&c->wmu);
    wci_fresh_wake(c);
    return WCACHE_OK;
}

/* ---- batches ---- */

wcache_code wcache_batch_create(wcache_cache *c, wcache_batch **out)
{
    if (!wci_cache_ok(c) || !out)
        return WCACHE_EINVAL;
    wcache_batch *b = wci_calloc(&c->al, 1, sizeof *b);
    if (!b)
        return WCACHE_ENOMEM;
    b->magic = WCI_BATCH_MAGIC;
    b->c = c;
    *out = b;
    return WCACHE_OK;
}

static bool batch_ok(const wcache_batch *b)
{
    return b && b->magic == WCI_BATCH_MAGIC;
}

void wcache_batch_clear(wcache_batch *b)
{
    if (!batch_ok(b))
        return;
    for (size_t i = 0; i < b->n; i++) {
        wci_key_release(b->c, b->ops[i].k, false);
        ver_del_x(b->c, b->ops[i].v, false);
    }
    b->n = b->nmeta = 0;
}

void wcache_batch_free(wcache_batch *b)
{
    if (!batch_ok(b))
        return;
    wcache_batch_clear(b);
    wci_free(&b->c->al, b->ops);
    b->magic = 0;
    wci_free(&b->c->al, b);
}

size_t wcache_batch_count(const wcache_batch *b)
{
    return batch_ok(b) ? b->n : 0;
}

static wcache_code batch_add(wcache_batch *b, uint32_t type, const void *key, size_t klen,
                             const void *val, size_t vlen)
{
    wcache_cache *c = b->c;
    wcache_code rc = check_key(c, key, klen);
    if (rc == WCACHE_OK && type != WCI_OP_DELETE)
        rc = check_value(c, val, vlen);
    if (rc != WCACHE_OK)
        return rc;
    if (b->n == b->cap && !wci_array_grow(&c->al, &b->ops, &b->cap, b->n, sizeof *b->ops, 16))
        return WCACHE_ENOMEM;
    wci_op op = {type, key_new(c, key, klen, false), NULL, wci_hash_bytes(key, klen)};
    if (op.k && type != WCI_OP_DELETE) /* room: load_sorted takes it as a first version */
        op.v = ver_new_x(c, val, vlen, false, true);
    if (!op.k || (type != WCI_OP_DELETE && !op.v)) {
        wci_key_release(c, op.k, false);
        return WCACHE_ENOMEM;
    }
    b->ops[b->n++] = op;
    b->nmeta += type == WCI_OP_META;
    return WCACHE_OK;
}

wcache_code wcache_batch_put(wcache_batch *b, const void *key, size_t klen, const void *val,
                             size_t vlen)
{
    if (!batch_ok(b))
        return WCACHE_EINVAL;
    return batch_add(b, WCI_OP_PUT, key, klen, val, vlen);
}

wcache_code wcache_batch_delete(wcache_batch *b, const void *key, size_t klen)
{
    if (!batch_ok(b))
        return WCACHE_EINVAL;
    return batch_add(b, WCI_OP_DELETE, key, klen, NULL, 0);
}

wcache_code wcache_batch_put_meta(wcache_batch *b, const void *key, size_t klen,
                                  const void *val, size_t vlen, int64_t create_rev,
                                  int64_t mod_rev, int64_t version)
{
    if (!batch_ok(b) || create_rev < 1 || mod_rev < create_rev || version < 1 ||
        version > WCI_VERSION_MAX)
        return WCACHE_EINVAL;
    wcache_code rc = batch_add(b, WCI_OP_META, key, klen, val, vlen);
    if (rc == WCACHE_OK) {
        wci_ver *v = b->ops[b->n - 1].v;
        v->create_rev = create_rev;
        v->mod_rev = mod_rev;
        wci_ver_set_version(v, version);
    }
    return rc;
}

/* Order op pointers by key so duplicates sit side by side. */
static int cmp_ops(const void *a, const void *b)
{
    const wci_key *x = (*(const wci_op *const *)a)->k, *y = (*(const wci_op *const *)b)->k;
    return wci_keycmp(x->key, x->klen, y->key, y->klen);
}

/* Sorted pointers to b's ops, or NULL (ENOMEM).  *dup: a repeated op. */
static const wci_op **sorted_ops(wcache_cache *c, const wcache_batch *b, const wci_op **dup)
{
    const wci_op **s = wci_malloc(&c->al, b->n * sizeof *s);
    if (!s)
        return NULL;
    bool sorted = true;
    for (size_t i = 0; i < b->n; i++) {
        s[i] = &b->ops[i];
        if (i && cmp_ops(&s[i - 1], &s[i]) >= 0)
            sorted = false;
    }
    if (!sorted)
        qsort(s, b->n, sizeof *s, cmp_ops);
    *dup = NULL;
    for (size_t i = 1; i < b->n && !*dup; i++)
        if (cmp_ops(&s[i - 1], &s[i]) == 0)
            *dup = s[i];
    return s;
}

static wcache_code dup_err(wcache_cache *c, const wci_op *d)
{
    return wci_err(c, WCACHE_EEXIST, "key %.*s appears twice in the batch",
                   (int)(d->k->klen > 200 ? 200 : d->k->klen), d->k->key);
}

/* Phase one of a batch: look every key up and allocate its version. */
static wcache_code prep_batch(wcache_cache *c, const wcache_batch *b, prep *p)
{
    for (size_t i = 0; i < b->n; i++) {
        const wci_op *op = &b->ops[i];
        p[i].k = find(c, op->k->key, op->k->klen, op->hv);
        p[i].hv = op->hv;
        if (op->type == WCI_OP_DELETE && !live(p[i].k)) {
            prep_free(c, p, i);
            return wci_err(c, WCACHE_ENOTFOUND, "batch deletes absent key %.*s",
                           (int)(op->k->klen > 200 ? 200 : op->k->klen), op->k->key);
        }
        p[i].isnew = p[i].k == NULL;
        p[i].meta = op->type == WCI_OP_META;
        if (p[i].isnew)
            p[i].k = key_new(c, op->k->key, op->k->klen, true);
        p[i].v = op->v ? ver_copy(c, op->v, !live(p[i].k)) : ver_new(c, NULL, 0, false);
        if (p[i].v && op->type == WCI_OP_DELETE)
            p[i].v->flags = WCI_VER_TOMBSTONE;
        if (!p[i].k || !p[i].v) {
            prep_free(c, p, i + 1);
            return wci_err(c, WCACHE_ENOMEM, "out of memory preparing a batch");
        }
    }
    return WCACHE_OK;
}

/* Under wmu: the history below rev goes before rev is visible, so that no
 * reader ever sees the revisions in between, whose states the cache does
 * not know.  A reader asking for the latest meanwhile sees compact_rev
 * above the revision it loaded and looks again (read.c, pin()). */
static void publish_relist(wcache_cache *c, int64_t rev)
{
    atomic_store_explicit(&c->compact_rev, rev, memory_order_seq_cst);
    wci_stat_add(&c->st_compactions, 1);
    publish(c, rev, need_time(c) ? wci_now(c) : 0);
    wci_compact_phys(c);
}

static wcache_code commit_relist(wcache_cache *c, prep *p, size_t n, int64_t rev)
{
    pthread_mutex_lock(&c->wmu);
    int rc = n ? commit_locked(c, p, n, rev, false) : 0;
    if (rc == 0)
        publish_relist(c, rev);
    pthread_mutex_unlock(&c->wmu);
    if (rc != 0)
        return commit_failed(c, p, n, rev);
    wci_fresh_wake(c);
    return WCACHE_OK;
}

/* Apply b at rev, all or nothing, from checked arguments.  relist: rev
 * also becomes the compacted revision, published with it. */
static wcache_code apply_batch(wcache_cache *c, const wcache_batch *b, int64_t rev, bool relist)
{
    const wci_op *dup;
    const wci_op **s = sorted_ops(c, b, &dup);
    if (!s)
        return wci_err(c, WCACHE_ENOMEM, "out of memory checking a batch");
    wci_free(&c->al, s);
    if (dup)
        return dup_err(c, dup);
    prep *p = wci_calloc(&c->al, b->n, sizeof *p);
    if (!p)
        return wci_err(c, WCACHE_ENOMEM, "out of memory preparing a batch");
    wcache_code rc = prep_batch(c, b, p);
    if (rc == WCACHE_OK && !relist)
        rc = commit(c, p, b->n, rev);
    else if (rc == WCACHE_OK)
        rc = commit_relist(c, p, b->n, rev);
    wci_free(&c->al, p);
    return rc;
}

wcache_code wcache_ingest_batch(wcache_cache *c, const wcache_batch *b, int64_t rev)
{
    wcache_code rc = check_writer(c);
    if (rc != WCACHE_OK)
        return rc;
    if (!batch_ok(b) || b->c != c || b->n == 0 || b->nmeta)
        return wci_err(c, WCACHE_EINVAL, "batch is empty, foreign or holds put_meta entries");
    if ((rc = check_rev(c, rev)) != WCACHE_OK)
        return rc;
    return apply_batch(c, b, rev, false);
}

/* ---- re-list ---- */

/* A put_meta entry a re-list at rev may apply over a cache at cur: its
 * mod_revision is where readers find it in the chain, so it must lie
 * above every revision a reader may already hold (cur) and at or below
 * the one it becomes visible at (rev). */
static wcache_code check_relist_meta(wcache_cache *c, const wci_op *op, int64_t cur,
                                     int64_t rev)
{
    const wci_ver *v = op->v;
    int n = (int)(op->k->klen > 200 ? 200 : op->k->klen);
    if (v->create_rev < 1 || v->mod_rev < v->create_rev || wci_ver_version(v) < 1)
        return wci_err(c, WCACHE_EINVAL,
                       "re-list: key %.*s: create_revision %lld, mod_revision %lld, version "
                       "%lld",
                       n, op->k->key, (long long)v->create_rev, (long long)v->mod_rev,
                       (long long)wci_ver_version(v));
    if (v->mod_rev > rev || v->mod_rev <= cur)
        return wci_err(c, WCACHE_EINVAL,
                       "re-list at %lld: key %.*s: mod_revision %lld is not in (%lld, %lld]",
                       (long long)rev, n, op->k->key, (long long)v->mod_rev, (long long)cur,
                       (long long)rev);
    return WCACHE_OK;
}

wcache_code wcache_ingest_relist(wcache_cache *c, const wcache_batch *b, int64_t rev)
{
    wcache_code rc = check_writer(c);
    if (rc != WCACHE_OK)
        return rc;
    if (!batch_ok(b) || b->c != c)
        return wci_err(c, WCACHE_EINVAL, "re-list: no batch, or a foreign one");
    if ((rc = check_rev(c, rev)) != WCACHE_OK)
        return rc;
    int64_t cur = atomic_load_explicit(&c->rev, memory_order_relaxed);
    for (size_t i = 0; i < b->n && rc == WCACHE_OK; i++)
        if (b->ops[i].type == WCI_OP_META)
            rc = check_relist_meta(c, &b->ops[i], cur, rev);
    if (rc != WCACHE_OK)
        return rc;
    if (b->n == 0)
        return commit_relist(c, NULL, 0, rev);
    return apply_batch(c, b, rev, true);
}

/* ---- bulk load ---- */

static wcache_code check_load(wcache_cache *c, const wcache_batch *b, int64_t rev)
{
    if (!batch_ok(b) || b->c != c || rev < 1 || b->nmeta != b->n)
        return wci_err(c, WCACHE_EINVAL, "load needs put_meta entries and a revision >= 1");
    if (atomic_load_explicit(&c->rev, memory_order_relaxed) != 0 || c->tree.nkeys ||
        c->nzombies)
        return wci_err(c, WCACHE_ESTATE, "load needs an empty cache");
    for (size_t i = 0; i < b->n; i++)
        if (b->ops[i].v->mod_rev > rev)
            return wci_err(c, WCACHE_EINVAL, "an entry's mod_revision %lld is above %lld",
                           (long long)b->ops[i].v->mod_rev, (long long)rev);
    return WCACHE_OK;
}

/* Take the batch's keys and versions into the (empty) cache. */
static wcache_code load_sorted(wcache_cache *c, wcache_batch *b, const wci_op **s, int64_t rev)
{
    wci_key **keys = wci_malloc(&c->al, b->n * sizeof *keys);
    if (!keys || wci_hash_reserve(c, b->n) != 0) {
        wci_free(&c->al, keys);
        return wci_err(c, WCACHE_ENOMEM, "out of memory loading %zu objects", b->n);
    }
    for (size_t i = 0; i < b->n; i++) {
        keys[i] = s[i]->k;
        atomic_store_explicit(&keys[i]->head, s[i]->v, memory_order_relaxed);
    }
    /* under wmu: extractors never run two at once (watch replay runs them) */
    pthread_mutex_lock(&c->wmu);
    int ixrc = index_prep(c, b->n, NULL, keys);
    pthread_mutex_unlock(&c->wmu);
    if (ixrc != 0 || wci_tree_build(c, keys, b->n) != 0) {
        if (ixrc == 0 && c->ix)
            wci_index_abort(c);
        for (size_t i = 0; i < b->n; i++)
            atomic_store_explicit(&keys[i]->head, NULL, memory_order_relaxed);
        wci_free(&c->al, keys);
        return wci_err(c, WCACHE_ENOMEM, "out of memory building the index");
    }
    uint64_t kb = 0, vb = 0;
    for (size_t i = 0; c->ix && i < b->n; i++)
        wci_index_link(c, i, keys[i], rev);
    if (c->ix)
        wci_index_end(c);
    for (size_t i = 0; i < b->n; i++) {
        wci_hash_insert(&c->hash, keys[i], s[i]->hv);
        kb += keys[i]->klen;
        vb += s[i]->v->vlen;
    }
    wci_free(&c->al, keys);
    atomic_store_explicit(&c->st_objects, b->n, memory_order_relaxed);
    atomic_store_explicit(&c->st_versions, b->n, memory_order_relaxed);
    atomic_store_explicit(&c->st_key_bytes, kb, memory_order_relaxed);
    atomic_store_explicit(&c->st_value_bytes, vb, memory_order_relaxed);
    atomic_store_explicit(&c->compact_rev, rev, memory_order_seq_cst);
    c->phys_rev = rev;
    b->n = b->nmeta = 0; /* the cache owns the entries now */
    pthread_mutex_lock(&c->wmu);
    atomic_store_explicit(&c->rev, rev, memory_order_seq_cst);
    pthread_mutex_unlock(&c->wmu);
    wci_fresh_wake(c);
    return WCACHE_OK;
}

wcache_code wcache_ingest_load(wcache_cache *c, wcache_batch *b, int64_t rev)
{
    wcache_code rc = check_writer(c);
    if (rc == WCACHE_OK)
        rc = check_load(c, b, rev);
    if (rc != WCACHE_OK || b->n == 0) {
        if (rc == WCACHE_OK) { /* an empty source is a valid state */
            pthread_mutex_lock(&c->wmu);
            atomic_store_explicit(&c->compact_rev, rev, memory_order_seq_cst);
            c->phys_rev = rev;
            atomic_store_explicit(&c->rev, rev, memory_order_seq_cst);
            pthread_mutex_unlock(&c->wmu);
            wci_fresh_wake(c);
        }
        return rc;
    }
    const wci_op *dup;
    const wci_op **s = sorted_ops(c, b, &dup);
    if (!s)
        return wci_err(c, WCACHE_ENOMEM, "out of memory sorting %zu objects", b->n);
    rc = dup ? dup_err(c, dup) : load_sorted(c, b, s, rev);
    wci_free(&c->al, s);
    return rc;
}
