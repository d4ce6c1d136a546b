/*
 * wcache_int.h - structures shared inside lib/ (never installed).
 *
 * The data model is etcd's: each key has a chain of versions, newest first,
 * each stamped with the revision that wrote it.  A reader pinned at
 * revision R walks the chain to the first version with mod_rev <= R.  A
 * value is stored once, inline in its version, however many revisions see
 * it.  Keys are found by a hash table (GET, ingest) and ordered by a
 * copy-on-write B+tree (LIST).  Neither structure is versioned: only the
 * chains are, so the writer can publish a new version with one atomic store.
 *
 * Concurrency: one writer, any number of readers, no locks on either path.
 * Readers pin an epoch (for memory of tree nodes, hash tables and removed
 * keys, freed by epoch-based reclamation) and a revision (which bounds how
 * far chains may be truncated) in a reader slot owned by their view; see
 * reclaim.c.
 */
#ifndef WCACHE_INT_H
#define WCACHE_INT_H

#include "alloc.h"
#include "watchcache.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#define WCI_CACHE_MAGIC 0x77636163u /* "wcac" */
#define WCI_VIEW_MAGIC 0x77637677u
#define WCI_BATCH_MAGIC 0x77636274u

/* One version of a key.  Immutable once published, except `next`, which
 * the writer clears when it truncates history below this version.  The
 * cache's chain holds one reference; watch events that carry the version
 * hold more, so a version a slow watcher still has to deliver outlives its
 * compaction. */
typedef struct wci_ver {
    struct wci_ver *_Atomic next; /* older version, or NULL */
    int64_t mod_rev;
    int64_t create_rev; /* 0 for a tombstone */
    /* The version (modification count; 0 for a tombstone) above 8 bits
     * saying how many grains the version's memory has beyond what its
     * value needs (ingest.c, ver_new_x); see the accessors below. */
    uint64_t vx;
    uint32_t vlen : 31;
    uint32_t flags : 1;
    _Atomic uint32_t refs;
    char value[];
} wci_ver;

#define WCI_VER_TOMBSTONE 1u
/* The grain of the version slab (cache.c): a version's memory is at most 7
 * bytes more than it needs, beyond the grains it was given (ingest.c).
 * 8 rather than 16 saves ~4 bytes per object (bench/slabsim.c). */
#define WCI_VER_GRAIN 8u
/* A version count fits 56 bits: it is at most the number of revisions. */
#define WCI_VERSION_MAX (INT64_MAX >> 8)

static inline int64_t wci_ver_version(const wci_ver *v)
{
    return (int64_t)(v->vx >> 8);
}

static inline void wci_ver_set_version(wci_ver *v, int64_t n)
{
    v->vx = (uint64_t)n << 8 | (v->vx & 0xffu);
}

/* Versions start at any multiple of WCI_VER_GRAIN, so a header may span two
 * cache lines: a read that is about to need one asks for both. */
static inline void wci_prefetch_ver(const void *v)
{
    __builtin_prefetch(v);
    /* v may be NULL or stale (a hint): no pointer arithmetic on it */
    __builtin_prefetch((const void *)((uintptr_t)v + sizeof(wci_ver) - 1));
}

/* The size its memory was allocated with, as the slab's free calls want. */
static inline size_t wci_ver_size(const wci_ver *v)
{
    return sizeof *v + v->vlen + (size_t)(v->vx & 0xffu) * WCI_VER_GRAIN;
}

/* A key.  Lives while it is in the tree; removed keys are retired. */
typedef struct wci_key {
    wci_ver *_Atomic head; /* newest version, or NULL: invisible */
    /* The copy of head in the key's slot of its current tree leaf (tree.c),
     * which the writer updates with head.  Writer only; NULL until the key
     * is in a published leaf. */
    wci_ver *_Atomic *lslot;
    uint32_t klen; /* the hash is not kept: wci_hash_bytes(key, klen) */
    uint32_t flags;
    char key[];
} wci_key;

#define WCI_KEY_REMOVED 1u

/* ---- reclaim.c: reader slots and epoch-based reclamation ---- */

typedef struct wci_slot {
    _Atomic uint64_t epoch; /* 0 = free; WCI_SLOT_CLAIMED = taken, not pinned */
    _Atomic int64_t rev;    /* pinned revision; INT64_MAX = none */
    char pad[48];
} wci_slot;

#define WCI_SLOT_CLAIMED UINT64_MAX

typedef enum { WCI_RETIRE_RAW, WCI_RETIRE_KEY, WCI_RETIRE_VER } wci_retire_kind;

typedef struct wci_retired {
    void *p;
    uint64_t epoch;
    uint32_t kind;
} wci_retired;

typedef struct wci_reclaim {
    wci_slot *slots;
    uint32_t nslots;
    _Atomic uint32_t hwm;  /* slots[0..hwm) may be in use */
    _Atomic uint32_t hint; /* where the next claim starts looking */
    _Atomic uint64_t epoch;
    wci_retired *ret; /* writer only */
    size_t nret, capret;
} wci_reclaim;

/* ---- hash.c: key -> wci_key, open addressing, lock-free readers ---- */

/* A slot holds 0 (empty), WCI_HT_DEL, or a key pointer whose low three
 * bits carry a tag from the hash, so that a probe skips most other keys
 * without loading them (a cache miss saved per collision). */
/* Beside each key, a hint: its newest version when the writer last stored
 * it.  A GET fetches it together with the key, instead of after it (one
 * cache miss less in a row); it is never read through, only prefetched, so
 * it may be stale or name freed memory. */
typedef struct wci_hslot {
    _Atomic uintptr_t k;
    void *_Atomic hint;
} wci_hslot;

typedef struct wci_htab {
    size_t mask; /* capacity - 1 */
    wci_hslot s[];
} wci_htab;

#define WCI_HT_DEL ((uintptr_t)1)

typedef struct wci_hash {
    wci_htab *_Atomic tab;
    size_t used; /* live + deleted slots (writer only) */
    size_t live;
} wci_hash;

/* ---- tree.c: copy-on-write B+tree of wci_key, byte-wise order ---- */

#define WCI_LEAF_MAX 64
#define WCI_INNER_MAX 64
#define WCI_TREE_DEPTH_MAX 16

typedef struct wci_node {
    uint16_t n;
    uint8_t leaf;
} wci_node;

/* A leaf keeps, beside each key, a copy of its newest version and its
 * length, so that a scan reads leaves in order and then only the versions
 * (one cache miss per item, whose address is known a whole leaf ahead)
 * instead of a key and then its version (two misses in a row).  The
 * writer stores ver[i] in place, right after the key's head. */
#define WCI_KLEN_FAR UINT16_MAX /* a longer key: read its length from the key */
typedef struct wci_leaf {
    wci_node h;
    uint16_t klen[WCI_LEAF_MAX];
    wci_key *ent[WCI_LEAF_MAX];
    wci_ver *_Atomic ver[WCI_LEAF_MAX];
} wci_leaf;

typedef struct wci_tree {
    wci_node *_Atomic root;
    size_t nkeys;
} wci_tree;

/* A position for ordered iteration (reader side). */
typedef struct wci_iter {
    const wci_node *stack[WCI_TREE_DEPTH_MAX];
    uint16_t idx[WCI_TREE_DEPTH_MAX];
    int depth; /* -1 when exhausted */
} wci_iter;

/* ---- history: the ring of applied events, oldest first ---- */

typedef struct wci_event {
    int64_t rev;
    int64_t time_ns;
    wci_key *key;
    wci_ver *ver; /* the version this event wrote (tombstone for delete) */
} wci_event;

typedef struct wci_ring {
    wci_event *ev;
    size_t mask;
    uint64_t head, tail; /* [head, tail) live */
} wci_ring;

/* ---- the cache ---- */

struct wcache_cache {
    uint32_t magic;
    int open;
    wci_alloc al;
    wci_slab *slab;  /* versions (alloc.c) */
    wci_slab *kslab; /* keys */
    bool libc_al;    /* al is the C library's malloc: huge pages may be advised */
    int64_t params[WCACHE_P_LAST];
    wcache_log_fn log_fn;
    int log_level;
    void *log_ud;
    wcache_clock_fn clock_fn;
    void *clock_ud;
    char *errbuf;
    size_t errlen;
    int last_errno;

    _Atomic int64_t rev;         /* latest applied revision */
    _Atomic int64_t compact_rev; /* logical: reads below fail */
    int64_t phys_rev;            /* chains truncated up to here (writer) */
    uint64_t age_pos;            /* ring position known older than the age bound */
    int64_t age_rev;
    uint64_t ingests; /* calls that applied something (writer) */

    wci_hash hash;
    wci_tree tree;
    wci_ring ring;
    wci_reclaim rc;
    wci_key **zombies; /* empty keys left by a failed batch (writer) */
    size_t nzombies, capzombies;
    uint64_t keys_removed; /* remove_key() calls (writer): see wcache_ingest_changes */

    /* Watchers and the history ring they replay from.  The writer holds
     * wmu for a whole commit (ring, dispatch, publication, compaction); a
     * watcher takes it to register and to replay history.  Views never do. */
    pthread_mutex_t wmu;
    struct wci_wreg *wreg;

    /* Secondary indexes (index.c); NULL when none is registered, so a
     * cache without indexes pays nothing for them. */
    struct wci_ixreg *ix;

    /* Fresh reads wait on fcv until the revision they need is applied. */
    pthread_mutex_t fmu;
    pthread_cond_t fcv;
    _Atomic uint32_t fwaiters;
    wcache_current_rev_fn cur_fn;
    wcache_progress_fn prog_fn;
    void *src_ud;
    _Atomic uint64_t st_fresh_reads, st_fresh_waits, st_fresh_timeouts, st_wait_ns;
    _Atomic uint64_t st_max_wait_ns, st_watchers, st_deliveries, st_overflows;

    /* statistics; written by the writer only, read by anyone */
    _Atomic uint64_t st_objects, st_versions, st_value_bytes, st_key_bytes;
    _Atomic uint64_t st_events, st_compactions, st_history;
};

struct wcache_view {
    uint32_t magic;
    wcache_cache *c;
    wci_slot *slot; /* NULL when not pinned */
    wci_slot *last; /* the slot of the previous pin, tried first */
    int64_t rev;
    char *tok; /* last continue token */
    size_t tokcap;
    char *scratch; /* a decoded incoming token */
    size_t scratchcap;
    struct wci_ixmatch *ixbuf; /* matches of an index LIST (index.c) */
    size_t ixcap;
};

typedef struct wci_op {
    uint32_t type; /* WCI_OP_* */
    wci_key *k;    /* key bytes (head unused) */
    wci_ver *v;    /* value and metadata; NULL for a delete */
    uint64_t hv;   /* wci_hash_bytes of the key */
} wci_op;

enum { WCI_OP_PUT = 1, WCI_OP_DELETE = 2, WCI_OP_META = 3 };

struct wcache_batch {
    uint32_t magic;
    wcache_cache *c;
    wci_op *ops;
    size_t n, cap;
    size_t nmeta; /* how many ops are WCI_OP_META */
};

/* ---- cross-file internals ---- */

/* log.c */
void wci_log(wcache_cache *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Record detail text in the errbuf (and log at WARN), return code. */
wcache_code wci_err(wcache_cache *c, wcache_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
int64_t wci_now(wcache_cache *c);

/* reclaim.c */
int wci_reclaim_init(wci_reclaim *r, const wci_alloc *al, uint32_t nslots);
void wci_reclaim_fini(wcache_cache *c);
wci_slot *wci_slot_claim(wci_reclaim *r, wci_slot *prefer);
void wci_slot_release(wci_slot *s);
void wci_slot_pin(wci_slot *s, uint64_t epoch, int64_t rev);
/* Retire p for freeing once no reader can hold it.  On ENOMEM the retire
 * list cannot grow: waits for readers is not an option, so it returns -1
 * and the caller keeps p reachable (it tries again later). */
int wci_retire(wcache_cache *c, void *p, wci_retire_kind kind);
/* Make room for n retirements so that the next n cannot fail. */
int wci_retire_reserve(wcache_cache *c, size_t n);
void wci_reclaim_poll(wcache_cache *c, int force);
uint64_t wci_views_open(wci_reclaim *r);
/* Smallest revision pinned by any view, or INT64_MAX. */
int64_t wci_min_pinned_rev(wci_reclaim *r);
void wci_free_key(wcache_cache *c, wci_key *k);
/* A key's memory back to the key slab; w: from the writer. */
void wci_key_release(wcache_cache *c, wci_key *k, bool w);

/* hash.c */
int wci_hash_init(wci_hash *h, const wci_alloc *al, size_t expect);
void wci_hash_fini(wci_hash *h, const wci_alloc *al);
uint64_t wci_hash_bytes(const void *key, size_t len);
wci_key *wci_hash_find(const wci_htab *t, const void *key, size_t len, uint64_t hv);
/* Prefetch the keys whose tags match hv (the first few slots of its probe):
 * touches the slots but never a key. */
void wci_hash_prefetch(const wci_htab *t, uint64_t hv);
/* Make room for `more` inserts without allocating later; may retire the
 * old table.  0 or -1 (ENOMEM, nothing changed). */
int wci_hash_reserve(wcache_cache *c, size_t more);
void wci_hash_insert(wci_hash *h, wci_key *k, uint64_t hv); /* after reserve */
void wci_hash_remove(wci_hash *h, wci_key *k);
/* Store k's hint (writer; k is in the table; hv its wci_hash_bytes). */
void wci_hash_hint(wci_hash *h, const wci_key *k, uint64_t hv, const wci_ver *v);

/* tree.c */
void wci_tree_init(wci_tree *t);
void wci_tree_fini(wcache_cache *c, wci_tree *t);
int wci_tree_insert(wcache_cache *c, wci_key *k); /* 0, -1 ENOMEM */
int wci_tree_remove(wcache_cache *c, wci_key *k); /* 0, -1 ENOMEM */
/* Build from keys sorted strictly ascending, into an empty tree. */
int wci_tree_build(wcache_cache *c, wci_key **keys, size_t n);
/* Position at the first key >= (key,len) (len 0 and key NULL: first). */
void wci_tree_seek(const wci_tree *t, wci_iter *it, const void *key, size_t len);
/* The key at the position and advance; NULL at the end. */
wci_key *wci_iter_next(wci_iter *it);
/* An entry as a scan of leaves sees it: the key, the newest version as the
 * leaf has it (acquire), the key's length. */
typedef struct wci_ent {
    const wci_key *k;
    const wci_ver *v;
    size_t klen;
} wci_ent;
/* Copy up to max entries from the position on, across leaves, and advance;
 * returns how many (fewer only at the end). */
size_t wci_iter_take(wci_iter *it, wci_ent *out, size_t max);

/* history / compaction (compact.c) */
int wci_ring_reserve(wcache_cache *c, size_t more);
void wci_ring_push(wcache_cache *c, int64_t rev, int64_t now, wci_key *k, wci_ver *v);
void wci_auto_compact(wcache_cache *c, int64_t now);
void wci_compact_phys(wcache_cache *c);
/* watch.c: the first ring position whose event is above rev (under wmu). */
uint64_t wci_ring_after(const wci_ring *r, int64_t rev);

/* ingest.c */
/* The cache lets go of v (unlinked from its chain): counted out of the
 * statistics now, freed when the last event holding it lets go too. */
void wci_ver_free(wcache_cache *c, wci_ver *v);
void wci_ver_unref(const wci_alloc *al, wci_ver *v);

/* watch.c */
int wci_watch_init(wcache_cache *c);
void wci_watch_fini(wcache_cache *c);
/* Offer a change to the watchers; under wmu, after the version is linked. */
void wci_dispatch(wcache_cache *c, wci_key *k, wci_ver *v, wci_ver *prev, int64_t rev);
/* After a revision is published: wake fresh reads waiting for it. */
void wci_fresh_wake(wcache_cache *c);

/* read.c */
const wci_ver *wci_visible(const wci_key *k, int64_t rev);
/* The key range of a LIST: a prefix (lo is the prefix too), or [lo, hi). */
typedef struct wci_range {
    const char *lo, *hi, *prefix; /* hi NULL: unbounded */
    size_t lolen, hilen, plen;
} wci_range;
/* opts NULL: every key.  WCACHE_EINVAL on a malformed opts. */
wcache_code wci_range_parse(const wcache_list_opts *o, wci_range *r);
bool wci_range_has(const wci_range *r, const wci_key *k);

/* token.c */
uint64_t wci_range_hash(const wcache_list_opts *o);
wcache_code wci_token_encode(wcache_view *v, uint64_t rh, const wci_key *last);
wcache_code wci_token_decode(wcache_view *v, const char *tok, size_t len, int64_t *rev,
                             uint64_t *rh, const char **key, size_t *klen);

int wci_keycmp(const void *a, size_t alen, const void *b, size_t blen);

/* Add d to a counter only the writer changes: a plain load and store, as a
 * locked read-modify-write would wait for every cache miss in flight. */
static inline void wci_stat_add(_Atomic uint64_t *x, int64_t d)
{
    atomic_store_explicit(x, atomic_load_explicit(x, memory_order_relaxed) + (uint64_t)d,
                          memory_order_relaxed);
}

static inline bool wci_cache_ok(const wcache_cache *c)
{
    return c && c->magic == WCI_CACHE_MAGIC;
}

/* The cache whose callback (log, index extractor) this thread is inside,
 * or NULL.  Per thread: a writer call made from inside a callback would
 * wait on the lock its own caller holds, so it fails with
 * WCACHE_ERECURSIVE, while any other thread simply waits its turn.  (A
 * counter in the cache refused every thread's writes while one thread
 * logged.) */
extern _Thread_local const wcache_cache *wci_cb_cache;

static inline bool wci_in_callback(const wcache_cache *c)
{
    return wci_cb_cache == c;
}

#endif
