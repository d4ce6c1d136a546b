/*
 * hash.c - the key -> wci_key map used by GET and by ingest.
 *
 * Open addressing with linear probing over an array of atomic pointers.
 * The writer is alone in changing it: an insert fills an empty slot with
 * one release store (the key is fully built before), a removal stores a
 * deletion marker.  Readers probe without locks; a probe sequence never
 * loses a key because slots only go empty -> key -> deleted.  Growing or
 * purging markers builds a new table and publishes it with one store; the
 * old table is retired through reclaim.c.
 *
 * XXH3 (libxxhash) hashes the keys: fast on short keys, good distribution
 * on the long shared prefixes of Kubernetes keys.
 */
#include "wcache_int.h"

#include <string.h>
#include <xxhash.h>

uint64_t wci_hash_bytes(const void *key, size_t len)
{
    return XXH3_64bits(key, len);
}

static wci_htab *htab_new(const wci_alloc *al, size_t cap, bool huge)
{
    size_t n = sizeof(wci_htab) + cap * sizeof(wci_hslot);
    wci_htab *t = wci_malloc(al, n);
    if (!t)
        return NULL;
    if (huge) /* every probe is a random access: see alloc.c */
        wci_advise_huge(t, n);
    memset(t, 0, n);
    t->mask = cap - 1;
    return t;
}

int wci_hash_init(wci_hash *h, const wci_alloc *al, size_t expect)
{
    size_t cap = 64;
    while (cap < expect * 2)
        cap *= 2;
    wci_htab *t = htab_new(al, cap, false);
    if (!t)
        return -1;
    atomic_init(&h->tab, t);
    h->used = h->live = 0;
    return 0;
}

void wci_hash_fini(wci_hash *h, const wci_alloc *al)
{
    wci_free(al, atomic_load_explicit(&h->tab, memory_order_relaxed));
    atomic_store_explicit(&h->tab, NULL, memory_order_relaxed);
}

/* Keys come from an allocator that aligns "for any type" (at least 8), so
 * the low three bits of a key pointer are free for a tag. */
#define TAG_MASK ((uintptr_t)7)

static uintptr_t tag_of(uint64_t hv)
{
    return (uintptr_t)(hv >> 61);
}

static uintptr_t encode(const wci_key *k, uint64_t hv)
{
    return (uintptr_t)k | tag_of(hv);
}

/* Keys do not keep their hash (8 bytes an object): what needs it again,
 * a rebuild, a removal or a hint, hashes the key again (XXH3 of a ~56-byte
 * key is a few ns) unless the caller has it. */
static uint64_t key_hash(const wci_key *k)
{
    return wci_hash_bytes(k->key, k->klen);
}

static wci_key *decode(uintptr_t s)
{
    return (wci_key *)(s & ~TAG_MASK);
}

wci_key *wci_hash_find(const wci_htab *t, const void *key, size_t len, uint64_t hv)
{
    uintptr_t want = tag_of(hv);
    for (size_t i = hv & t->mask;; i = (i + 1) & t->mask) {
        wci_hslot *x = &((wci_htab *)t)->s[i];
        uintptr_t s = atomic_load_explicit(&x->k, memory_order_acquire);
        if (!s)
            return NULL;
        if (s == WCI_HT_DEL)
            continue;
        if ((s & TAG_MASK) != want)
            continue;
        wci_prefetch_ver(atomic_load_explicit(&x->hint, memory_order_relaxed));
        wci_key *k = decode(s);
        if (k->klen == len && !memcmp(k->key, key, len))
            return k;
    }
}

void wci_hash_prefetch(const wci_htab *t, uint64_t hv)
{
    uintptr_t want = tag_of(hv);
    size_t i = hv & t->mask;
    for (int n = 0; n < 4; n++, i = (i + 1) & t->mask) {
        uintptr_t s = atomic_load_explicit(&((wci_htab *)t)->s[i].k, memory_order_relaxed);
        if (!s)
            return;
        if (s != WCI_HT_DEL && (s & TAG_MASK) == want)
            __builtin_prefetch(decode(s));
    }
}

static void place(wci_htab *t, wci_key *k, uint64_t hv)
{
    size_t i = hv & t->mask;
    while (atomic_load_explicit(&t->s[i].k, memory_order_relaxed))
        i = (i + 1) & t->mask;
    atomic_store_explicit(&t->s[i].hint, atomic_load_explicit(&k->head, memory_order_relaxed),
                          memory_order_relaxed);
    atomic_store_explicit(&t->s[i].k, encode(k, hv), memory_order_release);
}

/* Rebuild at a capacity fitting live + more at <= 50% load. */
static int rebuild(wcache_cache *c, size_t more)
{
    wci_hash *h = &c->hash;
    wci_htab *old = atomic_load_explicit(&h->tab, memory_order_relaxed);
    size_t cap = 64;
    while (cap < (h->live + more) * 2)
        cap *= 2;
    wci_htab *t = htab_new(&c->al, cap, c->libc_al);
    if (!t)
        return -1;
    if (wci_retire(c, old, WCI_RETIRE_RAW) != 0) {
        wci_free(&c->al, t);
        return -1;
    }
    for (size_t i = 0; i <= old->mask; i++) {
        uintptr_t x = atomic_load_explicit(&old->s[i].k, memory_order_relaxed);
        if (x && x != WCI_HT_DEL) {
            wci_key *k = decode(x);
            place(t, k, key_hash(k));
        }
    }
    atomic_store_explicit(&h->tab, t, memory_order_release);
    h->used = h->live;
    return 0;
}

/* Keep used slots (keys and markers) under 75% so probes stay short. */
int wci_hash_reserve(wcache_cache *c, size_t more)
{
    wci_hash *h = &c->hash;
    wci_htab *t = atomic_load_explicit(&h->tab, memory_order_relaxed);
    size_t cap = t->mask + 1;
    if ((h->used + more) * 4 <= cap * 3)
        return 0;
    return rebuild(c, more);
}

void wci_hash_insert(wci_hash *h, wci_key *k, uint64_t hv)
{
    place(atomic_load_explicit(&h->tab, memory_order_relaxed), k, hv);
    h->used++;
    h->live++;
}

void wci_hash_remove(wci_hash *h, wci_key *k)
{
    wci_htab *t = atomic_load_explicit(&h->tab, memory_order_relaxed);
    for (size_t i = key_hash(k) & t->mask;; i = (i + 1) & t->mask) {
        uintptr_t x = atomic_load_explicit(&t->s[i].k, memory_order_relaxed);
        if (!x)
            return;
        if (x != WCI_HT_DEL && decode(x) == k) {
            atomic_store_explicit(&t->s[i].k, WCI_HT_DEL, memory_order_release);
            h->live--;
            return;
        }
    }
}

void wci_hash_hint(wci_hash *h, const wci_key *k, uint64_t hv, const wci_ver *v)
{
    wci_htab *t = atomic_load_explicit(&h->tab, memory_order_relaxed);
    uintptr_t want = encode(k, hv);
    for (size_t i = hv & t->mask;; i = (i + 1) & t->mask) {
        uintptr_t x = atomic_load_explicit(&t->s[i].k, memory_order_relaxed);
        if (!x)
            return;
        if (x == want) {
            atomic_store_explicit(&t->s[i].hint, (void *)v, memory_order_relaxed);
            return;
        }
    }
}
