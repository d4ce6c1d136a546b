/*
 * watch.c - watch subscriptions and fresh (consistent) reads.
 *
 * A watcher goes through up to three phases:
 *
 *   INITIAL  (optional) the state at one revision R, read through a view
 *            pinned at R, handed out as ADDED events in key order, then an
 *            INITIAL_END event.  The pin also keeps compaction from
 *            dropping the history after R that the next phase replays.
 *   REPLAY   history after the start revision, copied from the writer's
 *            ring by the consumer itself, under wmu, a bounded batch per
 *            call: a watcher far behind costs the writer nothing.
 *   LIVE     caught up: the writer pushes each matching change into the
 *            watcher's queue as it commits it; or, for plain watchers
 *            (no selector, no index) sharing a prefix, once into the
 *            prefix's fan, which each of them reads at its own position
 *            (see watch.h), once their own queue is empty.
 *
 * The queue is single-producer (whoever holds wmu: the writer, or the
 * consumer replaying) and single-consumer (the watch's thread).  The writer
 * never waits for a consumer: when a live queue is full the watcher is
 * ended with WCACHE_EOVERFLOW and must re-list, as Kubernetes ends a
 * watcher that cannot keep up; nothing is skipped silently.
 *
 * An event is made once per change and shared: every watcher's queue slot
 * holds a reference and the type that watcher sees (a selector can turn a
 * MODIFIED into an ADDED or a DELETED for one watcher and not another).
 * It holds references on the versions it shows, so compaction cannot free
 * them under a slow consumer.
 *
 * Finding the watchers a key concerns costs one hash probe per distinct
 * prefix length in use, not one test per watcher: 10,000 watchers on
 * namespace prefixes share a handful of lengths (podgen's pod prefixes
 * about 20), and a bit filter answers most of those probes.
 */
#include "watch.h"

#include "index.h"
#include "selector.h"

#include <errno.h>
#include <poll.h>
#include <stddef.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_QUEUE 1024
#define REPLAY_BATCH 256
#define FRESH_TIMEOUT_MS 3000
#define PROGRESS_EVERY_NS 100000000 /* Kubernetes' progressRequestPeriod */

enum { PHASE_INITIAL = 1, PHASE_REPLAY, PHASE_LIVE };
enum { EVK_PUT = 1, EVK_DELETE, EVK_BOOKMARK, EVK_INITIAL_END };

/* What consumers read comes first, the count they all write on its own
 * line after it: 100 watchers' unrefs from two cores would otherwise take
 * the line away from every reader of the same event. */
struct wcache_event {
    uint32_t kind;
    uint32_t klen;
    int64_t rev;
    wcache_cache *c;
    wci_ver *ver;  /* the new version (put) or tombstone (delete) */
    wci_ver *prev; /* the version it replaced, if live, else NULL */
    char pad[64 - 2 * sizeof(uint32_t) - sizeof(int64_t) - 3 * sizeof(void *)];
    _Atomic uint32_t refs;
    char key[];
};

/* ---- events ---- */

static wcache_event *event_new(wcache_cache *c, uint32_t kind, int64_t rev, const char *key,
                               size_t klen, wci_ver *ver, wci_ver *prev)
{
    wcache_event *e = wci_malloc(&c->al, sizeof *e + klen);
    if (!e)
        return NULL;
    atomic_init(&e->refs, 1);
    e->kind = kind;
    e->rev = rev;
    e->c = c;
    e->ver = ver;
    e->prev = prev;
    e->klen = (uint32_t)klen;
    if (klen)
        memcpy(e->key, key, klen);
    if (ver)
        atomic_fetch_add_explicit(&ver->refs, 1, memory_order_relaxed);
    if (prev)
        atomic_fetch_add_explicit(&prev->refs, 1, memory_order_relaxed);
    return e;
}

void wcache_event_unref(wcache_event *e)
{
    if (!e || atomic_fetch_sub_explicit(&e->refs, 1, memory_order_acq_rel) != 1)
        return;
    const wci_alloc *al = &e->c->al;
    if (e->ver)
        wci_ver_unref(al, e->ver);
    if (e->prev)
        wci_ver_unref(al, e->prev);
    wci_free(al, e);
}

static bool ver_live(const wci_ver *v)
{
    return v && !(v->flags & WCI_VER_TOMBSTONE);
}

/* ---- labels, computed at most once per version per dispatch ---- */

typedef struct lazy_labels {
    const wci_ver *v;
    int state; /* 0 not yet, 1 ready, -1 failed */
    wci_labels l;
    const wci_ixval *ix; /* v's value per index; NULL: not needed */
} lazy_labels;

static const wci_labels *labels_of(wcache_cache *c, lazy_labels *ll)
{
    if (ll->state == 0)
        ll->state =
            wci_labels_from_json(&c->al, ll->v->value, ll->v->vlen, &ll->l) == 0 ? 1 : -1;
    return ll->state == 1 ? &ll->l : NULL;
}

static void labels_done(wcache_cache *c, lazy_labels *ll)
{
    if (ll->state == 1)
        wci_labels_free(&c->al, &ll->l);
    ll->state = 0;
}

/* ---- filters ---- */

static bool key_in(const wcache_watch *w, const char *key, size_t klen)
{
    if (w->plen)
        return klen >= w->plen && !memcmp(key, w->prefix, w->plen);
    if (w->slen && wci_keycmp(key, klen, w->start, w->slen) < 0)
        return false;
    return !w->elen || wci_keycmp(key, klen, w->end, w->elen) < 0;
}

/* An index watcher takes an object only with its value; ix NULL means the
 * object was found through the index (initial events). */
static bool ix_ok(const wcache_watch *w, const lazy_labels *ll)
{
    if (!w->has_ix || !ll->ix)
        return true;
    const wci_ixval *x = &ll->ix[w->ix_id];
    return x->has && x->n == w->ixlen && (!x->n || !memcmp(x->p, w->ixval, x->n));
}

static bool sel_match(wcache_cache *c, const wcache_watch *w, lazy_labels *ll)
{
    if (!ll->v || !ver_live(ll->v) || !ix_ok(w, ll))
        return false;
    if (!w->sel)
        return true;
    const wci_labels *l = labels_of(c, ll);
    return l && wci_selector_match(w->sel, l);
}

/* The type this watcher sees for a change, or 0 for none (section 5.3 of
 * the semantics notes: selector transitions become ADDED / DELETED). */
static uint32_t classify(wcache_cache *c, const wcache_watch *w, lazy_labels *cur,
                         lazy_labels *old)
{
    bool now = sel_match(c, w, cur), was = sel_match(c, w, old);
    if (now)
        return was ? WCACHE_EV_MODIFIED : WCACHE_EV_ADDED;
    return was ? WCACHE_EV_DELETED : 0;
}

/* ---- the queue ---- */

static void efd_signal(wcache_watch *w);
static void to_delivery(const wcache_watch *w, wci_qslot s, wcache_watch_event *out);

static void wake(wcache_watch *w)
{
    atomic_thread_fence(memory_order_seq_cst);
    if (atomic_exchange(&w->armed, 0))
        efd_signal(w);
}

/* The fd wakes whatever armed says: the consumer must see the end. */
static void end_watch(wcache_watch *w, wcache_code why)
{
    int expect = 0;
    atomic_compare_exchange_strong(&w->end_code, &expect, (int)why);
    atomic_thread_fence(memory_order_seq_cst);
    efd_signal(w);
}

/* Logical fullness, against queue_size: the array grows below it. */
static bool queue_full(const wcache_watch *w)
{
    uint64_t h = atomic_load_explicit(&w->qhead, memory_order_acquire);
    return atomic_load_explicit(&w->qtail, memory_order_relaxed) - h >= w->qcap;
}

static wcache_event *slot_event(wci_qslot s)
{
    return (wcache_event *)(s & ~(uintptr_t)WCI_QSLOT_TYPE);
}

#define QUEUE_FIRST 32u /* slots of a first array: 256 bytes */
/* An array this large is given back when the consumer drains it after a
 * round whose backlog used at most an eighth of it: after a burst (a
 * relist, a bulk update) every watcher that fell behind would otherwise
 * keep the array it grew, up to queue_size slots, for as long as it
 * lives.  A watcher whose rounds keep needing the array keeps it, so
 * steady bursts do not make it shrink and grow again each time.  The
 * array goes at the producer's next push: a watcher that never gets
 * another event keeps it. */
#define QUEUE_SHRINK_AT (8 * QUEUE_FIRST)

/* The producer: move the queue to a new array of cap slots (a power of
 * two, >= the backlog).  The slots from the consumer's head on are
 * copied; the old array stays readable until the consumer frees it
 * (queue_cur()). */
static bool queue_move(wcache_watch *w, uint32_t cap)
{
    wci_qarr *a = atomic_load_explicit(&w->q, memory_order_relaxed);
    wci_qarr *na = wci_malloc(&w->c->al, sizeof *na + (size_t)cap * sizeof na->s[0]);
    if (!na)
        return false;
    na->old = a;
    na->cap = cap;
    uint64_t t = atomic_load_explicit(&w->qtail, memory_order_relaxed);
    uint64_t h = atomic_load_explicit(&w->qhead, memory_order_acquire);
    for (uint64_t p = h; p < t; p++)
        na->s[p & (cap - 1)] = a->s[p & (w->qpcap - 1)];
    w->qhead_seen = h;
    w->qpcap = cap;
    atomic_store_explicit(&w->q, na, memory_order_release);
    return true;
}

/* An array of at least need slots (need <= qcap), doubling. */
static bool queue_grow(wcache_watch *w, uint64_t need)
{
    uint32_t cap = w->qpcap ? w->qpcap * 2 : QUEUE_FIRST;
    while (cap < need)
        cap *= 2;
    return queue_move(w, cap < w->qcap ? cap : w->qcap);
}

/* The consumer asked for a smaller array: take one with room for twice
 * the backlog plus need, if that is at most a quarter of the current one
 * (a queue that is busy again keeps its array).  Failing to allocate
 * keeps the old array, which still works. */
static void queue_shrink(wcache_watch *w, uint64_t need)
{
    atomic_store_explicit(&w->qshrink, false, memory_order_relaxed);
    uint64_t t = atomic_load_explicit(&w->qtail, memory_order_relaxed);
    w->qhead_seen = atomic_load_explicit(&w->qhead, memory_order_acquire);
    uint64_t want = 2 * (t - w->qhead_seen + need);
    uint32_t cap = QUEUE_FIRST;
    while (cap < want)
        cap *= 2;
    if (cap <= w->qpcap / 4)
        (void)queue_move(w, cap);
}

/* The producer (under wmu, or the consumer itself while INITIAL): room
 * for n more slots?  1 yes (the array grown if it had to), 0 the queue is
 * at queue_size, -1 no memory to grow it.  Reads the consumer's index
 * only when the room it saw last time is used up, or to shrink. */
static int queue_room_n(wcache_watch *w, uint64_t n)
{
    if (atomic_load_explicit(&w->qshrink, memory_order_relaxed))
        queue_shrink(w, n);
    uint64_t t = atomic_load_explicit(&w->qtail, memory_order_relaxed);
    if (t - w->qhead_seen + n <= w->qpcap)
        return 1;
    w->qhead_seen = atomic_load_explicit(&w->qhead, memory_order_acquire);
    uint64_t used = t - w->qhead_seen;
    if (used + n <= w->qpcap)
        return 1;
    if (used + n > w->qcap)
        return 0;
    return queue_grow(w, used + n) ? 1 : -1;
}

static int queue_room(wcache_watch *w)
{
    return queue_room_n(w, 1);
}

/* Producer side; the caller holds wmu (or is INITIAL's consumer) and
 * made room with queue_room(). */
static void queue_push(wcache_watch *w, wcache_event *e, uint32_t type)
{
    uint64_t t = atomic_load_explicit(&w->qtail, memory_order_relaxed);
    wci_qarr *a = atomic_load_explicit(&w->q, memory_order_relaxed);
    a->s[t & (w->qpcap - 1)] = (uintptr_t)e | type; /* qpcap: a's header is a line away */
    atomic_store_explicit(&w->qtail, t + 1, memory_order_release);
}

/* The consumer's array, read after qtail (acquire), so that it holds
 * every slot up to that tail.  Arrays the producer replaced are freed
 * here: the consumer is the only thread that could still be reading
 * them, and it holds no slot pointer between two looks. */
static wci_qarr *queue_cur(wcache_watch *w)
{
    wci_qarr *a = atomic_load_explicit(&w->q, memory_order_acquire);
    if (a && a->old) {
        for (wci_qarr *o = a->old, *n; o; o = n) {
            n = o->old;
            wci_free(&w->c->al, o);
        }
        a->old = NULL;
    }
    return a;
}

static void queue_free(wcache_watch *w)
{
    for (wci_qarr *o = atomic_load_explicit(&w->q, memory_order_relaxed), *n; o; o = n) {
        n = o->old;
        wci_free(&w->c->al, o);
    }
    atomic_store_explicit(&w->q, NULL, memory_order_relaxed);
}

/* ---- registry: watchers by key prefix ---- */

/*
 * Prefix hashes are FNV-1a over the bytes, finished by a mix with the
 * length, so that dispatch can hash every registered prefix of a key in
 * one pass over it (the state after n bytes is the state of the n-byte
 * prefix) instead of once per distinct prefix length.
 */
#define FNV_BASIS 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv_step(uint64_t h, unsigned char b)
{
    return (h ^ b) * FNV_PRIME;
}

static uint64_t fnv_finish(uint64_t h, size_t n)
{
    h ^= (uint64_t)n * 0x9E3779B97F4A7C15ull;
    h ^= h >> 32;
    h *= 0xD6E8FEB86659FD93ull;
    return h ^ (h >> 32);
}

static uint64_t prefix_hash(const char *p, size_t n)
{
    uint64_t h = FNV_BASIS;
    for (size_t i = 0; i < n; i++)
        h = fnv_step(h, (unsigned char)p[i]);
    return fnv_finish(h, n);
}

static wci_bucket *bucket_in(wci_bucket *const *tab, size_t mask, const char *p, size_t n,
                             uint64_t hv)
{
    for (wci_bucket *b = tab[hv & mask]; b; b = b->next)
        if (b->hash == hv && b->plen == n && (!n || !memcmp(b->prefix, p, n)))
            return b;
    return NULL;
}

static wci_bucket *bucket_find(wci_wreg *r, const char *p, size_t n, uint64_t hv)
{
    return bucket_in(r->tab, r->mask, p, n, hv);
}

/* The filter's hot part is one bit per counter, 1 when the counter is
 * not 0: dispatch reads 2 KB per thousand buckets, which stays in L1. */
static bool pfilt_maybe(const wci_wreg *r, uint64_t hv)
{
    size_t i = (hv >> 32) & r->pfmask;
    return r->pfbits[i / 64] >> (i % 64) & 1;
}

static void pfilt_add(wci_wreg *r, uint64_t hv)
{
    size_t i = (hv >> 32) & r->pfmask;
    r->pfilt[i] += r->pfilt[i] < UINT8_MAX;
    r->pfbits[i / 64] |= (uint64_t)1 << (i % 64);
}

static void pfilt_del(wci_wreg *r, uint64_t hv)
{
    size_t i = (hv >> 32) & r->pfmask;
    if (r->pfilt[i] < UINT8_MAX && --r->pfilt[i] == 0)
        r->pfbits[i / 64] &= ~((uint64_t)1 << (i % 64));
}

/* 8 counters per table slot: about 1 probe in 8 without a bucket passes. */
static int pfilt_build(wcache_cache *c, wci_wreg *r)
{
    size_t n = (r->mask + 1) * 8;
    uint8_t *f = wci_calloc(&c->al, n, 1);
    uint64_t *bits = wci_calloc(&c->al, n / 64, sizeof *bits);
    if (!f || !bits) {
        wci_free(&c->al, f);
        wci_free(&c->al, bits);
        return -1;
    }
    wci_free(&c->al, r->pfilt);
    wci_free(&c->al, r->pfbits);
    r->pfilt = f;
    r->pfbits = bits;
    r->pfmask = n - 1;
    for (size_t i = 0; i <= r->mask; i++)
        for (wci_bucket *b = r->tab[i]; b; b = b->next)
            pfilt_add(r, b->hash);
    return 0;
}

/* Equal values of two indexes differ in hash, so (hash, bytes) names
 * (index, value) without storing the id. */
static uint64_t ix_hash(int id, const void *val, size_t n)
{
    return wci_hash_bytes(val, n) ^ ((uint64_t)id + 1) * 0xD6E8FEB86659FD93ull;
}

static int vec_push(const wci_alloc *al, wcache_watch ***v, size_t *n, size_t *cap,
                    wcache_watch *w)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4;
        wcache_watch **nv = wci_malloc(al, nc * sizeof *nv);
        if (!nv)
            return -1;
        if (*n)
            memcpy(nv, *v, *n * sizeof *nv);
        wci_free(al, *v);
        *v = nv;
        *cap = nc;
    }
    (*v)[(*n)++] = w;
    return 0;
}

static void vec_remove(wcache_watch **v, size_t *n, wcache_watch *w)
{
    for (size_t i = 0; i < *n; i++)
        if (v[i] == w) {
            v[i] = v[--*n];
            return;
        }
}

static int lens_add(wcache_cache *c, wci_wreg *r, size_t len)
{
    for (size_t i = 0; i < r->nlens; i++)
        if (r->lens[i].len == len) {
            r->lens[i].users++;
            return 0;
        }
    if (r->nlens == r->caplens) {
        size_t nc = r->caplens ? r->caplens * 2 : 8;
        wci_len *nl = wci_malloc(&c->al, nc * sizeof *nl);
        if (!nl)
            return -1;
        if (r->nlens)
            memcpy(nl, r->lens, r->nlens * sizeof *nl);
        wci_free(&c->al, r->lens);
        r->lens = nl;
        r->caplens = nc;
    }
    size_t i = r->nlens++;
    while (i > 0 && r->lens[i - 1].len > len) { /* kept sorted: stop at the key length */
        r->lens[i] = r->lens[i - 1];
        i--;
    }
    r->lens[i] = (wci_len){len, 1};
    return 0;
}

static void lens_drop(wci_wreg *r, size_t len)
{
    for (size_t i = 0; i < r->nlens; i++)
        if (r->lens[i].len == len && --r->lens[i].users == 0) {
            memmove(&r->lens[i], &r->lens[i + 1], (r->nlens - i - 1) * sizeof *r->lens);
            r->nlens--;
            return;
        }
}

/* Keep prefix chains short: 10,000 namespace watchers are normal. */
static void grow_prefix_table(wcache_cache *c, wci_wreg *r)
{
    size_t nmask = r->mask * 2 + 1;
    wci_bucket **t = wci_calloc(&c->al, nmask + 1, sizeof *t);
    if (!t)
        return;
    for (size_t i = 0; i <= r->mask; i++) {
        for (wci_bucket *b = r->tab[i], *n; b; b = n) {
            n = b->next;
            b->next = t[b->hash & nmask];
            t[b->hash & nmask] = b;
        }
    }
    wci_free(&c->al, r->tab);
    r->tab = t;
    r->mask = nmask;
    (void)pfilt_build(c, r); /* on failure the smaller filter stays valid */
}

/* ---- fans: one shared ring per prefix bucket (see watch.h) ---- */

/* Below this queue_size a watcher keeps its own queue: the writer finds a
 * fan watcher's overflow only when it scans, which it arranges to do at
 * the exact position; a small queue would make it scan at every change. */
#define FAN_MIN_QUEUE 256

static void fd_signal(int fd)
{
    uint64_t one = 1;
    ssize_t r = write(fd, &one, sizeof one);
    (void)r; /* a full counter is still readable: nothing is lost */
}

/* Put w on its set's ready list; write the set's fd only if its consumer
 * sleeps.  seq_cst on both sides: the consumer arms, then looks at ready. */
static void set_push(wcache_watchset *s, wcache_watch *w)
{
    if (atomic_exchange(&w->sready, 1))
        return; /* listed already, and not yet handed out */
    wcache_watch *h = atomic_load_explicit(&s->ready, memory_order_relaxed);
    do
        w->rnext = h;
    while (!atomic_compare_exchange_weak(&s->ready, &h, w));
    if (atomic_load(&s->armed) && atomic_exchange(&s->armed, 0))
        fd_signal(s->efd);
}

/* The caller holds wmu or rmu, or is the watch's thread: set is stable.
 * Every caller made its wake-up visible (armed cleared or end_code set,
 * seq_cst) before this load of efd: see watch_efd() for the other side. */
static void efd_signal(wcache_watch *w)
{
    if (w->set) {
        set_push(w->set, w);
        return;
    }
    int fd = atomic_load(&w->efd);
    if (fd >= 0)
        fd_signal(fd);
}

/*
 * The watch's own fd, made when first asked for: a watch served through a
 * watch set, or only ever polled with next(), holds none (10,000 eventfds
 * would need RLIMIT_NOFILE raised above the usual 1024).  A wake-up that
 * came while there was no fd left armed at 0 or end_code set, and a
 * producer loads efd only after making that store (seq_cst both sides):
 * either it saw the fd or this sees its store.  -1: no fd (errno).
 * Any thread, but not under rmu.
 */
static int watch_efd(wcache_watch *w)
{
    int fd = atomic_load(&w->efd);
    if (fd >= 0)
        return fd;
    int nfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (nfd < 0)
        return -1;
    if (!atomic_compare_exchange_strong(&w->efd, &fd, nfd)) {
        close(nfd); /* another thread made it first */
        return fd;
    }
    /* under rmu, w->set is stable: a set's member leaves its fd quiet
     * (wcache_watchset_remove() wakes it) */
    pthread_mutex_lock(&w->rmu);
    bool due = !w->set && (!atomic_load(&w->armed) || atomic_load(&w->end_code));
    pthread_mutex_unlock(&w->rmu);
    if (due)
        fd_signal(nfd);
    return nfd;
}

static wci_seg *seg_new(wcache_cache *c, wci_fan *f, uint64_t base)
{
    wci_seg *s = f->spare;
    if (s)
        f->spare = NULL;
    else if (!(s = wci_malloc(&c->al, sizeof *s)))
        return NULL;
    atomic_store_explicit(&s->next, NULL, memory_order_relaxed);
    s->base = base;
    return s;
}

static wci_fan *fan_new(wcache_cache *c)
{
    wci_fan *f = wci_calloc(&c->al, 1, sizeof *f);
    if (!f)
        return NULL;
    f->head = f->last = seg_new(c, f, 0);
    if (!f->head) {
        wci_free(&c->al, f);
        return NULL;
    }
    f->scan_at = UINT64_MAX;
    return f;
}

/* Every watcher detached: the cache or the bucket is going. */
static void seg_release(const wci_seg *s, uint64_t end)
{
    for (uint64_t p = s->base; p < end && p - s->base < WCI_SEG_SLOTS; p++)
        wcache_event_unref(slot_event(s->s[p - s->base]));
}

static void fan_free(wcache_cache *c, wci_fan *f)
{
    if (!f)
        return;
    for (wci_seg *s = f->head, *n; s; s = n) {
        n = atomic_load_explicit(&s->next, memory_order_relaxed);
        seg_release(s, f->wtail);
        wci_free(&c->al, s);
    }
    wci_free(&c->al, f->spare);
    wci_free(&c->al, f->w);
    wci_free(&c->al, f);
}

/* Cut w's stream at position p: it gets nothing at or after it. */
static void fan_cut(wcache_watch *w, uint64_t p)
{
    uint64_t cur = atomic_load_explicit(&w->rcut, memory_order_relaxed);
    while (p < cur && !atomic_compare_exchange_weak(&w->rcut, &cur, p))
        ;
}

static uint64_t queued_own(const wcache_watch *w)
{
    return atomic_load_explicit(&w->qtail, memory_order_relaxed) -
           atomic_load_explicit(&w->qhead, memory_order_acquire);
}

/* Under wmu, nobody attached: drop every slot and start over at wtail
 * in one segment, so that no event stays pinned by a fan nobody reads. */
static void fan_reset(wcache_cache *c, wci_fan *f)
{
    for (wci_seg *s = f->head, *n; s; s = n) {
        n = atomic_load_explicit(&s->next, memory_order_relaxed);
        seg_release(s, f->wtail);
        if (s != f->last)
            wci_free(&c->al, s);
    }
    f->head = f->last;
    atomic_store_explicit(&f->last->next, NULL, memory_order_relaxed);
    f->last->base = f->wtail;
    f->scan_at = UINT64_MAX;
}

/* Under wmu and w->rmu: take w off the fan.  Its backlog before the cut
 * goes to its own queue when copy is set (and fits); what it has lent
 * keeps references in w->hold until its next call.  false: no memory for
 * those, try again later. */
static bool fan_detach(wcache_cache *c, wci_fan *f, wcache_watch *w, bool copy)
{
    uint64_t pos = atomic_load_explicit(&w->rpos, memory_order_relaxed), t = f->wtail;
    uint64_t cut = atomic_load_explicit(&w->rcut, memory_order_relaxed);
    wci_seg *s = w->rseg;
    if (copy) { /* room for the whole copy first: nothing half done */
        uint64_t from = w->lent_fan && w->lent_pos > pos ? w->lent_pos : pos;
        uint64_t end = t < cut ? t : cut, used = queued_own(w);
        uint64_t n = end > from ? end - from : 0;
        n = used + n > w->qcap ? w->qcap - used : n;
        if (n && queue_room_n(w, n) < 0)
            return false;
    }
    if (w->lent_fan && w->lent_pos > pos) {
        w->hold = wci_malloc(&c->al, (size_t)(w->lent_pos - pos) * sizeof *w->hold);
        if (!w->hold)
            return false;
        for (; pos < w->lent_pos; pos++) {
            if (pos - s->base == WCI_SEG_SLOTS)
                s = atomic_load_explicit(&s->next, memory_order_relaxed);
            wcache_event *e = slot_event(s->s[pos - s->base]);
            atomic_fetch_add_explicit(&e->refs, 1, memory_order_relaxed);
            w->hold[w->nhold++] = e;
        }
    }
    w->lent_fan = 0;
    for (; copy && pos < t && pos < cut && !queue_full(w); pos++) {
        if (pos - s->base == WCI_SEG_SLOTS)
            s = atomic_load_explicit(&s->next, memory_order_relaxed);
        wci_qslot q = s->s[pos - s->base];
        atomic_fetch_add_explicit(&slot_event(q)->refs, 1, memory_order_relaxed);
        queue_push(w, slot_event(q), (uint32_t)(q & WCI_QSLOT_TYPE));
    }
    vec_remove(f->w, &f->n, w);
    w->fan = NULL;
    w->rseg = NULL;
    if (atomic_exchange(&w->armed, 0)) { /* asleep: what was copied must wake it */
        atomic_fetch_sub(&f->narmed, 1);
        efd_signal(w);
    }
    if (f->n == 0)
        fan_reset(c, f);
    return true;
}

/* Under wmu: attach w (LIVE, nothing queued, every change from the next
 * one on is for it) at the current end of its bucket's fan. */
static bool fan_attach(wcache_cache *c, wci_bucket *b, wcache_watch *w)
{
    if (!b->fan && !(b->fan = fan_new(c)))
        return false;
    wci_fan *f = b->fan;
    if (f->n == f->cap && !wci_array_grow(&c->al, &f->w, &f->cap, f->n, sizeof *f->w, 8))
        return false;
    if (pthread_mutex_trylock(&w->rmu) != 0)
        return false;                /* its consumer is in next(): another time */
    if (atomic_load(&w->end_code)) { /* stopped meanwhile: stays off */
        pthread_mutex_unlock(&w->rmu);
        return false;
    }
    w->rseg = f->last;
    atomic_store_explicit(&w->rpos, f->wtail, memory_order_relaxed);
    atomic_store_explicit(&w->rcut, UINT64_MAX, memory_order_relaxed);
    w->fan = f;
    if (atomic_load(&w->armed))
        atomic_fetch_add(&f->narmed, 1);
    pthread_mutex_unlock(&w->rmu);
    f->w[f->n++] = w;
    if (f->wtail + w->qcap < f->scan_at)
        f->scan_at = f->wtail + w->qcap;
    return true;
}

/* Under wmu, before a push at f->wtail: end the watchers whose backlog is
 * full, detach the ended ones, and find the next position worth a scan. */
static void fan_scan(wcache_cache *c, wci_fan *f)
{
    uint64_t t = f->wtail, next = UINT64_MAX;
    atomic_store_explicit(&f->rescan, 0, memory_order_relaxed);
    for (size_t i = 0; i < f->n;) {
        wcache_watch *w = f->w[i];
        uint64_t pos = atomic_load_explicit(&w->rpos, memory_order_acquire);
        uint64_t own = queued_own(w);
        bool ended = atomic_load(&w->end_code) != 0;
        if (!ended && t - pos + own >= w->qcap) {
            atomic_fetch_add_explicit(&c->st_overflows, 1, memory_order_relaxed);
            fan_cut(w, t);
            end_watch(w, WCACHE_EOVERFLOW);
            ended = true;
        }
        if (ended) {
            if (pthread_mutex_trylock(&w->rmu) == 0) {
                bool done = fan_detach(c, f, w, true); /* f->w[i] is now another one */
                pthread_mutex_unlock(&w->rmu);
                if (done)
                    continue;
            }
            next = t + 1; /* its consumer is reading: try again */
        } else if (pos + w->qcap - own < next) {
            next = pos + w->qcap - own;
        }
        i++;
    }
    f->scan_at = next;
}

/* Under wmu: drop the segments every attached watcher is past.  A reader
 * at exactly a segment's end may still hold it: strictly past only. */
static void fan_reclaim(wcache_cache *c, wci_fan *f)
{
    uint64_t min = f->wtail;
    for (size_t i = 0; i < f->n; i++) {
        uint64_t p = atomic_load_explicit(&f->w[i]->rpos, memory_order_acquire);
        min = p < min ? p : min;
    }
    while (f->head != f->last && f->head->base + WCI_SEG_SLOTS < min) {
        wci_seg *s = f->head;
        f->head = atomic_load_explicit(&s->next, memory_order_relaxed);
        seg_release(s, f->wtail);
        if (!f->spare)
            f->spare = s;
        else
            wci_free(&c->al, s);
    }
}

/* Under wmu: the change cannot reach f's watchers; end them all. */
static void fan_fail(wci_fan *f, wcache_code why)
{
    for (size_t i = 0; i < f->n; i++) {
        fan_cut(f->w[i], f->wtail);
        end_watch(f->w[i], why);
    }
    atomic_store_explicit(&f->rescan, 1, memory_order_relaxed);
}

/* Under wmu: room for one more slot, and the watchers that get it are the
 * attached ones.  false: nobody left to get it. */
static bool fan_prepare(wcache_cache *c, wci_fan *f)
{
    if (f->wtail >= f->scan_at || atomic_load_explicit(&f->rescan, memory_order_relaxed))
        fan_scan(c, f);
    if (f->n == 0)
        return false;
    if (f->wtail - f->last->base == WCI_SEG_SLOTS) {
        wci_seg *s = seg_new(c, f, f->wtail);
        if (!s) {
            fan_fail(f, WCACHE_ENOMEM);
            return false;
        }
        atomic_store_explicit(&f->last->next, s, memory_order_release);
        f->last = s;
        fan_reclaim(c, f);
    }
    return true;
}

static void fan_push(wci_fan *f, wcache_event *e, uint32_t type)
{
    uint64_t t = f->wtail;
    f->last->s[t - f->last->base] = (uintptr_t)e | type;
    f->wtail = t + 1;
    atomic_store_explicit(&f->tail, t + 1, memory_order_release);
}

/* After the writer's fence: wake the attached watchers that sleep. */
static void fan_wake(wci_fan *f)
{
    if (!atomic_load_explicit(&f->narmed, memory_order_acquire))
        return;
    for (size_t i = 0; i < f->n; i++) {
        wcache_watch *w = f->w[i];
        if (atomic_load_explicit(&w->armed, memory_order_relaxed) &&
            atomic_exchange(&w->armed, 0)) {
            atomic_fetch_sub(&f->narmed, 1);
            efd_signal(w);
        }
    }
}

/* The consumer: take from the fan, up to the cut.  lend: no reference
 * per delivery; the position moves at the next call (settle()). */
static size_t fan_pop(wcache_watch *w, wcache_watch_event *evs, size_t cap, bool lend)
{
    size_t n = 0;
    pthread_mutex_lock(&w->rmu);
    wci_fan *f = w->fan;
    if (f) {
        uint64_t pos = atomic_load_explicit(&w->rpos, memory_order_relaxed);
        uint64_t end = atomic_load_explicit(&f->tail, memory_order_acquire);
        uint64_t cut = atomic_load_explicit(&w->rcut, memory_order_relaxed);
        end = cut < end ? cut : end;
        wci_seg *s = w->rseg;
        for (; pos < end && n < cap; pos++) {
            if (pos - s->base == WCI_SEG_SLOTS)
                s = atomic_load_explicit(&s->next, memory_order_acquire);
            wcache_watch_event *out = &evs[n++];
            to_delivery(w, s->s[pos - s->base], out);
            if (lend)
                out->ev = NULL;
            else
                atomic_fetch_add_explicit(&out->ev->refs, 1, memory_order_relaxed);
        }
        if (lend) {
            w->lent_fan = w->lent_mine = n > 0;
            w->lent_pos = pos;
            w->lent_seg = s;
        } else {
            w->rseg = s;
            atomic_store_explicit(&w->rpos, pos, memory_order_release);
        }
    }
    pthread_mutex_unlock(&w->rmu);
    return n;
}

/* Give back what the last wcache_watch_next_borrowed() lent. */
static void settle(wcache_watch *w)
{
    if (w->lent_own) {
        uint64_t h = atomic_load_explicit(&w->qhead, memory_order_relaxed);
        const wci_qarr *a = queue_cur(w); /* holds the slots it lent */
        for (size_t i = 0; i < w->lent_own; i++)
            wcache_event_unref(slot_event(a->s[(h + i) & (a->cap - 1)]));
        atomic_store_explicit(&w->qhead, h + w->lent_own, memory_order_release);
        w->lent_own = 0;
    }
    if (!w->lent_mine) /* nothing lent, so nothing held for it either */
        return;
    w->lent_mine = 0;
    pthread_mutex_lock(&w->rmu);
    if (w->lent_fan && w->fan) {
        w->rseg = w->lent_seg;
        atomic_store_explicit(&w->rpos, w->lent_pos, memory_order_release);
    }
    w->lent_fan = 0;
    for (size_t i = 0; i < w->nhold; i++)
        wcache_event_unref(w->hold[i]);
    wci_free(&w->c->al, w->hold);
    w->hold = NULL;
    w->nhold = 0;
    pthread_mutex_unlock(&w->rmu);
}

/* Under rmu (or wmu): nothing left for the consumer in the fan. */
static bool fan_empty(const wcache_watch *w)
{
    if (!w->fan)
        return true;
    uint64_t end = atomic_load(&w->fan->tail), cut = atomic_load(&w->rcut);
    return atomic_load(&w->rpos) >= (cut < end ? cut : end);
}

static int reg_add_prefix(wcache_cache *c, wcache_watch *w)
{
    wci_wreg *r = c->wreg;
    uint64_t hv = prefix_hash(w->prefix, w->plen);
    wci_bucket *b = bucket_find(r, w->prefix, w->plen, hv);
    if (!b) {
        b = wci_calloc(&c->al, 1, sizeof *b + w->plen);
        if (!b)
            return -1;
        if (lens_add(c, r, w->plen) != 0) {
            wci_free(&c->al, b);
            return -1;
        }
        b->hash = hv;
        b->plen = w->plen;
        if (w->plen)
            memcpy(b->prefix, w->prefix, w->plen);
        b->next = r->tab[hv & r->mask];
        r->tab[hv & r->mask] = b;
        pfilt_add(r, hv);
        if (++r->nbuckets > r->mask + 1)
            grow_prefix_table(c, r); /* on failure chains just get longer */
    }
    if (vec_push(&c->al, &b->w, &b->n, &b->cap, w) != 0)
        return -1;
    w->bucket = b;
    b->nfan_ok += (size_t)w->fan_ok;
    return 0;
}

static void reg_del_prefix(wcache_cache *c, wcache_watch *w)
{
    wci_wreg *r = c->wreg;
    uint64_t hv = prefix_hash(w->prefix, w->plen);
    wci_bucket **pp = &r->tab[hv & r->mask];
    for (wci_bucket *b = *pp; b; pp = &b->next, b = b->next) {
        if (b->hash != hv || b->plen != w->plen ||
            (w->plen && memcmp(b->prefix, w->prefix, w->plen)))
            continue;
        if (w->fan) {
            pthread_mutex_lock(&w->rmu);           /* its consumer is not in next(): no wait */
            (void)fan_detach(c, w->fan, w, false); /* settled: nothing lent */
            pthread_mutex_unlock(&w->rmu);
        } else {
            vec_remove(b->w, &b->n, w);
        }
        b->nfan_ok -= (size_t)w->fan_ok;
        w->bucket = NULL;
        if (b->n == 0 && (!b->fan || b->fan->n == 0)) {
            *pp = b->next;
            r->nbuckets--;
            pfilt_del(r, hv);
            lens_drop(r, b->plen);
            fan_free(c, b->fan);
            wci_free(&c->al, b->w);
            wci_free(&c->al, b);
        }
        return;
    }
}

static int reg_add_ix(wcache_cache *c, wcache_watch *w)
{
    wci_wreg *r = c->wreg;
    uint64_t hv = ix_hash(w->ix_id, w->ixval, w->ixlen);
    wci_bucket *b = bucket_in(r->ixtab, r->ixmask, w->ixval, w->ixlen, hv);
    if (!b) {
        b = wci_calloc(&c->al, 1, sizeof *b + w->ixlen);
        if (!b)
            return -1;
        b->hash = hv;
        b->plen = w->ixlen;
        if (w->ixlen)
            memcpy(b->prefix, w->ixval, w->ixlen);
        b->next = r->ixtab[hv & r->ixmask];
        r->ixtab[hv & r->ixmask] = b;
    }
    if (vec_push(&c->al, &b->w, &b->n, &b->cap, w) != 0)
        return -1;
    r->nixwatch++;
    return 0;
}

static void reg_del_ix(wcache_cache *c, wcache_watch *w)
{
    wci_wreg *r = c->wreg;
    uint64_t hv = ix_hash(w->ix_id, w->ixval, w->ixlen);
    wci_bucket **pp = &r->ixtab[hv & r->ixmask];
    for (wci_bucket *b = *pp; b; pp = &b->next, b = b->next) {
        if (b->hash != hv || b->plen != w->ixlen ||
            (w->ixlen && memcmp(b->prefix, w->ixval, w->ixlen)))
            continue;
        vec_remove(b->w, &b->n, w);
        r->nixwatch--;
        if (b->n == 0) {
            *pp = b->next;
            wci_free(&c->al, b->w);
            wci_free(&c->al, b);
        }
        return;
    }
}

/* Range watchers are rare: kept in a list tested one by one. */
static int reg_add(wcache_cache *c, wcache_watch *w)
{
    wci_wreg *r = c->wreg;
    if (w->has_ix)
        return reg_add_ix(c, w);
    if (w->slen || w->elen)
        return vec_push(&c->al, &r->ranged, &r->nranged, &r->capranged, w);
    return reg_add_prefix(c, w);
}

static void reg_del(wcache_cache *c, wcache_watch *w)
{
    if (w->has_ix)
        reg_del_ix(c, w);
    else if (w->slen || w->elen)
        vec_remove(c->wreg->ranged, &c->wreg->nranged, w);
    else
        reg_del_prefix(c, w);
}

int wci_watch_init(wcache_cache *c)
{
    wci_wreg *r = wci_calloc(&c->al, 1, sizeof *r);
    if (!r)
        return -1;
    r->mask = 4095;
    r->tab = wci_calloc(&c->al, r->mask + 1, sizeof *r->tab);
    if (r->tab && pfilt_build(c, r) != 0) {
        wci_free(&c->al, r->tab);
        r->tab = NULL;
    }
    r->ixmask = 1023;
    if (c->ix) /* indexes are registered before open: none later */
        r->ixtab = wci_calloc(&c->al, r->ixmask + 1, sizeof *r->ixtab);
    pthread_condattr_t ca;
    if (!r->tab || (c->ix && !r->ixtab) || pthread_condattr_init(&ca) != 0) {
        wci_free(&c->al, r->pfilt);
        wci_free(&c->al, r->pfbits);
        wci_free(&c->al, r->ixtab);
        wci_free(&c->al, r->tab);
        wci_free(&c->al, r);
        return -1;
    }
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&c->wmu, NULL);
    pthread_mutex_init(&c->fmu, NULL);
    pthread_cond_init(&c->fcv, &ca);
    pthread_condattr_destroy(&ca);
    c->wreg = r;
    return 0;
}

/* Every watch was closed before the cache: only the registry is left. */
void wci_watch_fini(wcache_cache *c)
{
    wci_wreg *r = c->wreg;
    if (!r)
        return;
    for (size_t i = 0; i <= r->mask; i++) {
        for (wci_bucket *b = r->tab[i], *n; b; b = n) {
            n = b->next;
            fan_free(c, b->fan);
            wci_free(&c->al, b->w);
            wci_free(&c->al, b);
        }
    }
    for (size_t i = 0; r->ixtab && i <= r->ixmask; i++) {
        for (wci_bucket *b = r->ixtab[i], *n; b; b = n) {
            n = b->next;
            wci_free(&c->al, b->w);
            wci_free(&c->al, b);
        }
    }
    wci_free(&c->al, r->ixtab);
    wci_free(&c->al, r->tab);
    wci_free(&c->al, r->pfilt);
    wci_free(&c->al, r->pfbits);
    wci_free(&c->al, r->lens);
    wci_free(&c->al, r->ranged);
    wci_free(&c->al, r->cand);
    wci_free(&c->al, r->fcand);
    wci_free(&c->al, r);
    c->wreg = NULL;
    pthread_mutex_destroy(&c->wmu);
    pthread_mutex_destroy(&c->fmu);
    pthread_cond_destroy(&c->fcv);
}

/* ---- dispatch (the writer, under wmu) ---- */

/* One change being dispatched: what every watcher's decision needs,
 * computed at most once per change. */
typedef struct dctx {
    int64_t rev;
    uint32_t plain_type; /* what a plain watcher sees; 0: nothing */
    lazy_labels cur, old;
} dctx;

static int cand_grow(wcache_cache *c, wci_wreg *r)
{
    size_t nc = r->capcand ? r->capcand * 2 : 64;
    wci_cand *n = wci_malloc(&c->al, nc * sizeof *n);
    if (!n)
        return -1;
    if (r->ncand)
        memcpy(n, r->cand, r->ncand * sizeof *n);
    wci_free(&c->al, r->cand);
    r->cand = n;
    r->capcand = nc;
    return 0;
}

static bool takes_live(const wcache_watch *w, int64_t rev)
{
    return w->phase == PHASE_LIVE && rev > w->start_rev &&
           atomic_load_explicit(&w->end_code, memory_order_relaxed) == 0;
}

/* Decide the type w sees; keep it as a recipient if it gets the event. */
static void consider(wcache_cache *c, dctx *d, wcache_watch *w)
{
    wci_wreg *r = c->wreg;
    if (!takes_live(w, d->rev))
        return;
    uint32_t t = w->plain ? d->plain_type : classify(c, w, &d->cur, &d->old);
    if (!t)
        return;
    int room = queue_room(w);
    if (room <= 0) {
        if (!room)
            atomic_fetch_add_explicit(&c->st_overflows, 1, memory_order_relaxed);
        end_watch(w, room ? WCACHE_ENOMEM : WCACHE_EOVERFLOW); /* must re-list */
        return;
    }
    if (r->ncand == r->capcand && cand_grow(c, r) != 0) {
        end_watch(w, WCACHE_ENOMEM); /* cannot deliver: must re-list */
        return;
    }
    r->cand[r->ncand++] = (wci_cand){w, t};
}

/* The watchers of one index value whose key filter takes key. */
static void ix_bucket(wcache_cache *c, dctx *d, int id, const wci_ixval *x, const char *key,
                      size_t klen)
{
    wci_wreg *r = c->wreg;
    if (!x->has)
        return;
    wci_bucket *b = bucket_in(r->ixtab, r->ixmask, x->p, x->n, ix_hash(id, x->p, x->n));
    for (size_t j = 0; b && j < b->n; j++)
        if (key_in(b->w[j], key, klen))
            consider(c, d, b->w[j]);
}

/* Watchers of the value the object left and of the one it took: one
 * bucket lookup each per index, whatever the number of watchers. */
static void ix_candidates(wcache_cache *c, dctx *d, const char *key, size_t klen,
                          const wci_ixval *old, const wci_ixval *neu)
{
    for (int id = 0; id < wci_index_count(c); id++) {
        ix_bucket(c, d, id, &old[id], key, klen);
        bool same = old[id].has && neu[id].has && old[id].n == neu[id].n &&
                    (!old[id].n || !memcmp(old[id].p, neu[id].p, old[id].n));
        if (!same)
            ix_bucket(c, d, id, &neu[id], key, klen);
    }
}

/* Under wmu: w would take this change and every later one, and has
 * nothing queued: from now on it can read the bucket's fan. */
static bool may_attach(const wci_bucket *b, const wcache_watch *w, const dctx *d)
{
    return w->fan_ok && b->nfan_ok >= 2 && d->plain_type && takes_live(w, d->rev) &&
           queued_own(w) == 0;
}

static void bucket_recipients(wcache_cache *c, dctx *d, wci_bucket *b)
{
    wci_wreg *r = c->wreg;
    for (size_t j = b->n; j-- > 0;) { /* backwards: attaching moves the last to j */
        wcache_watch *w = b->w[j];
        if (may_attach(b, w, d) && fan_attach(c, b, w))
            b->w[j] = b->w[--b->n];
        else
            consider(c, d, w);
    }
    wci_fan *f = b->fan;
    if (!f || !f->n || !d->plain_type || !fan_prepare(c, f))
        return;
    if (r->nfcand == r->capfcand) {
        size_t nc = r->capfcand ? r->capfcand * 2 : 8;
        wci_fan **nf = wci_malloc(&c->al, nc * sizeof *nf);
        if (!nf) {
            fan_fail(f, WCACHE_ENOMEM);
            return;
        }
        if (r->nfcand)
            memcpy(nf, r->fcand, r->nfcand * sizeof *nf);
        wci_free(&c->al, r->fcand);
        r->fcand = nf;
        r->capfcand = nc;
    }
    r->fcand[r->nfcand++] = f;
}

/* Collect into r->cand the watchers that get the change, with their types
 * (old / neu: the index values of the change, when index watchers exist). */
static void recipients(wcache_cache *c, dctx *d, const char *key, size_t klen,
                       const wci_ixval *old, const wci_ixval *neu)
{
    wci_wreg *r = c->wreg;
    r->ncand = r->nfcand = 0;
    uint64_t h = FNV_BASIS;
    size_t at = 0;
    for (size_t i = 0; i < r->nlens && r->lens[i].len <= klen; i++) {
        size_t n = r->lens[i].len;
        for (; at < n; at++)
            h = fnv_step(h, (unsigned char)key[at]);
        uint64_t hv = fnv_finish(h, n);
        wci_bucket *b = pfilt_maybe(r, hv) ? bucket_find(r, key, n, hv) : NULL;
        if (b)
            bucket_recipients(c, d, b);
    }
    for (size_t j = 0; j < r->nranged; j++)
        if (key_in(r->ranged[j], key, klen))
            consider(c, d, r->ranged[j]);
    if (old)
        ix_candidates(c, d, key, klen, old, neu);
}

void wci_dispatch(wcache_cache *c, wci_key *k, wci_ver *v, wci_ver *prev, int64_t rev)
{
    wci_wreg *r = c->wreg;
    if (r->nwatch == 0)
        return;
    wci_ixval ixo[WCI_INDEX_MAX], ixn[WCI_INDEX_MAX];
    bool ix = r->nixwatch > 0;
    if (ix)
        wci_index_change(c, ixo, ixn);
    bool now = ver_live(v), was = ver_live(prev);
    dctx d = {rev,
              now ? (was ? WCACHE_EV_MODIFIED : WCACHE_EV_ADDED)
                  : (was ? WCACHE_EV_DELETED : 0),
              {v, 0, {0}, ix ? ixn : NULL},
              {was ? prev : NULL, 0, {0}, ix ? ixo : NULL}};
    recipients(c, &d, k->key, k->klen, ix ? ixo : NULL, ix ? ixn : NULL);
    labels_done(c, &d.cur);
    labels_done(c, &d.old);
    size_t m = r->ncand, refs = m + r->nfcand, deliveries = m;
    for (size_t i = 0; i < r->nfcand; i++)
        deliveries += r->fcand[i]->n;
    if (refs == 0)
        return;
    wcache_event *e =
        event_new(c, now ? EVK_PUT : EVK_DELETE, rev, k->key, k->klen, v, was ? prev : NULL);
    if (!e) {
        for (size_t i = 0; i < m; i++)
            end_watch(r->cand[i].w, WCACHE_ENOMEM);
        for (size_t i = 0; i < r->nfcand; i++)
            fan_fail(r->fcand[i], WCACHE_ENOMEM);
        return;
    }
    /* all references first: a consumer may release its one at once */
    atomic_fetch_add_explicit(&e->refs, (uint32_t)refs, memory_order_relaxed);
    for (size_t i = 0; i < m; i++)
        queue_push(r->cand[i].w, e, r->cand[i].type);
    for (size_t i = 0; i < r->nfcand; i++)
        fan_push(r->fcand[i], e, d.plain_type);
    /* one fence for all: a consumer arms, fences, then re-checks its queue */
    atomic_thread_fence(memory_order_seq_cst);
    for (size_t i = 0; i < m; i++)
        if (atomic_load_explicit(&r->cand[i].w->armed, memory_order_relaxed))
            wake(r->cand[i].w);
    for (size_t i = 0; i < r->nfcand; i++)
        fan_wake(r->fcand[i]);
    atomic_fetch_add_explicit(&c->st_deliveries, deliveries, memory_order_relaxed);
    wcache_event_unref(e);
}

/* ---- opening ---- */

static char *dup_opt(wcache_cache *c, const void *p, size_t n, size_t *out_n, int *err)
{
    *out_n = n;
    if (!n)
        return NULL;
    char *d = wci_memdup(&c->al, p, n);
    if (!d)
        *err = 1;
    return d;
}

/* The index fields are the last ones: an older caller's size ends before. */
static bool ix_opts(const wcache_watch_opts *o)
{
    return o && o->size >= offsetof(wcache_watch_opts, index_value_len) + sizeof(size_t) &&
           o->index_value;
}

static wcache_code check_opts(wcache_cache *c, const wcache_watch_opts *o)
{
    if (!o)
        return WCACHE_OK;
    if (ix_opts(o) && (o->index_id < 0 || o->index_id >= wci_index_count(c)))
        return wci_err(c, WCACHE_EINVAL, "watch: no index %d", o->index_id);
    if (o->size < offsetof(wcache_watch_opts, index_id) || o->start_revision < 0 ||
        o->bookmark_interval_ms < 0 || (!o->prefix && o->prefix_len) ||
        (!o->start && o->start_len) || (!o->end && o->end_len) ||
        (!o->label_selector && o->label_selector_len))
        return wci_err(c, WCACHE_EINVAL, "watch: invalid options");
    if (o->queue_size > (1u << 24))
        return wci_err(c, WCACHE_EINVAL, "watch: queue_size above 16M");
    return WCACHE_OK;
}

static uint32_t pow2_at_least(uint32_t n)
{
    uint32_t p = 1;
    while (p < n)
        p <<= 1;
    return p;
}

static void watch_free(wcache_watch *w)
{
    wcache_cache *c = w->c;
    int fd = atomic_load(&w->efd);
    if (fd >= 0)
        close(fd);
    wcache_view_free(w->iview);
    wci_free(&c->al, w->im);
    wci_free(&c->al, w->ixval);
    wci_selector_free(&c->al, w->sel);
    wci_free(&c->al, w->prefix);
    wci_free(&c->al, w->start);
    wci_free(&c->al, w->end);
    queue_free(w);
    if (w->rmu_ok)
        pthread_mutex_destroy(&w->rmu);
    w->magic = 0;
    wci_free(&c->al, w);
}

static wcache_code watch_alloc(wcache_cache *c, const wcache_watch_opts *o, wcache_watch **out)
{
    wcache_watch *w = wci_calloc(&c->al, 1, sizeof *w);
    if (!w)
        return WCACHE_ENOMEM;
    w->magic = WCI_WATCH_MAGIC;
    w->c = c;
    atomic_init(&w->efd, -1);
    atomic_init(&w->rcut, UINT64_MAX);
    if (pthread_mutex_init(&w->rmu, NULL) != 0) {
        *out = w;
        return WCACHE_ENOMEM;
    }
    w->rmu_ok = 1;
    /* Armed from the start: a consumer that only polls the fd must be
     * woken by the first change, before it ever called next(). */
    atomic_init(&w->armed, 1);
    int err = 0;
    if (o && o->prefix_len)
        w->prefix = dup_opt(c, o->prefix, o->prefix_len, &w->plen, &err);
    else if (o) {
        w->start = dup_opt(c, o->start, o->start_len, &w->slen, &err);
        w->end = dup_opt(c, o->end, o->end_len, &w->elen, &err);
    }
    if (ix_opts(o)) {
        w->has_ix = 1;
        w->ix_id = o->index_id;
        w->ixval = dup_opt(c, o->index_value, o->index_value_len, &w->ixlen, &err);
    }
    w->qcap = pow2_at_least(o && o->queue_size ? o->queue_size : DEFAULT_QUEUE);
    *out = w;
    return err ? WCACHE_ENOMEM : WCACHE_OK;
}

static wcache_code parse_selector(wcache_cache *c, const wcache_watch_opts *o, wcache_watch *w)
{
    if (!o || !o->label_selector_len)
        return WCACHE_OK;
    char msg[256] = "";
    wcache_code rc = wci_selector_parse(&c->al, o->label_selector, o->label_selector_len,
                                        &w->sel, msg, sizeof msg);
    if (rc != WCACHE_OK)
        return wci_err(c, rc, "watch: label selector: %s", msg);
    if (wci_selector_empty(w->sel)) {
        wci_selector_free(&c->al, w->sel);
        w->sel = NULL;
    }
    return WCACHE_OK;
}

/* First ring position whose revision is above rev (binary search). */
uint64_t wci_ring_after(const wci_ring *r, int64_t rev)
{
    uint64_t lo = r->head, hi = r->tail;
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo) / 2;
        if (r->ev[mid & r->mask].rev <= rev)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Under wmu: decide the phase and the start point. */
static wcache_code start_locked(wcache_cache *c, const wcache_watch_opts *o, wcache_watch *w)
{
    int64_t want = o ? o->start_revision : 0;
    int64_t cur = atomic_load_explicit(&c->rev, memory_order_relaxed);
    int64_t comp = atomic_load_explicit(&c->compact_rev, memory_order_relaxed);
    if (want && want < comp)
        return wci_err(c, WCACHE_ECOMPACTED, "watch: revision %lld is compacted (oldest %lld)",
                       (long long)want, (long long)comp);
    if (o && o->initial_events) {
        if (want > cur)
            return wci_err(c, WCACHE_EFUTURE,
                           "watch: initial events at %lld, above the current %lld",
                           (long long)want, (long long)cur);
        wcache_code rc = wcache_view_create(c, &w->iview);
        if (rc == WCACHE_OK)
            rc = wcache_view_begin(w->iview, cur);
        if (rc == WCACHE_OK && w->has_ix) /* the initial state from the index too */
            rc = wci_index_collect(w->iview, w->ix_id, w->ixval, w->ixlen, &w->im, &w->imcap,
                                   &w->imn);
        if (rc != WCACHE_OK)
            return rc;
        if (!w->has_ix)
            wci_tree_seek(&c->tree, &w->iit, w->plen ? w->prefix : w->start,
                          w->plen ? w->plen : w->slen);
        w->phase = PHASE_INITIAL;
        w->start_rev = cur;
    } else if (want == 0) {
        w->phase = PHASE_LIVE;
        w->start_rev = cur;
    } else {
        w->phase = PHASE_REPLAY;
        w->start_rev = want;
    }
    w->cursor = wci_ring_after(&c->ring, w->start_rev);
    /* Nothing to replay: live at once, or changes made before the first
     * next() would be left to the ring, where compaction may drop them. */
    if (w->phase == PHASE_REPLAY && w->cursor == c->ring.tail)
        w->phase = PHASE_LIVE;
    w->last_rev = w->start_rev;
    return WCACHE_OK;
}

wcache_code wcache_watch_open(wcache_cache *c, const wcache_watch_opts *o, wcache_watch **out)
{
    if (!wci_cache_ok(c) || !out)
        return WCACHE_EINVAL;
    *out = NULL;
    if (!c->open)
        return WCACHE_ESTATE;
    wcache_code rc = check_opts(c, o);
    wcache_watch *w = NULL;
    if (rc == WCACHE_OK)
        rc = watch_alloc(c, o, &w);
    if (rc == WCACHE_OK)
        rc = parse_selector(c, o, w);
    if (rc == WCACHE_OK) {
        w->prev_value = o ? o->prev_value : 0;
        w->plain = !w->sel && !w->has_ix;
        w->fan_ok = w->plain && w->qcap >= FAN_MIN_QUEUE && !w->slen && !w->elen;
        w->bm_ns = o ? o->bookmark_interval_ms * 1000000 : 0;
        pthread_mutex_lock(&c->wmu);
        rc = start_locked(c, o, w);
        if (rc == WCACHE_OK && reg_add(c, w) != 0)
            rc = WCACHE_ENOMEM;
        if (rc == WCACHE_OK) {
            w->registered = 1;
            c->wreg->nwatch++;
            wci_bucket *b = w->bucket;
            if (w->phase == PHASE_LIVE && b && w->fan_ok && b->nfan_ok >= 2 &&
                w->start_rev <= atomic_load_explicit(&c->rev, memory_order_relaxed) &&
                fan_attach(c, b, w))
                vec_remove(b->w, &b->n, w);
        }
        pthread_mutex_unlock(&c->wmu);
    }
    if (rc != WCACHE_OK) {
        if (w)
            watch_free(w);
        return rc;
    }
    atomic_fetch_add_explicit(&c->st_watchers, 1, memory_order_relaxed);
    if (w->phase != PHASE_LIVE) /* readable until caught up: a wake-up is due */
        atomic_store(&w->armed, 0);
    w->next_bm = w->bm_ns ? wci_now(c) + w->bm_ns : 0;
    *out = w;
    return WCACHE_OK;
}

/* ---- consuming ---- */

static void fill_kv(wcache_kv *kv, const char *key, size_t klen, const wci_ver *v)
{
    kv->key = key;
    kv->key_len = klen;
    kv->value = v->value;
    kv->value_len = v->vlen;
    kv->create_revision = v->create_rev;
    kv->mod_revision = v->mod_rev;
    kv->version = wci_ver_version(v);
}

static void to_delivery(const wcache_watch *w, wci_qslot s, wcache_watch_event *out)
{
    wcache_event *e = slot_event(s);
    uint32_t type = (uint32_t)(s & WCI_QSLOT_TYPE);
    out->type = (wcache_event_type)type;
    out->revision = e->rev;
    out->ev = e;
    out->kv = (wcache_kv){0};
    out->prev = (wcache_kv){0};
    if (e->kind == EVK_BOOKMARK || e->kind == EVK_INITIAL_END)
        return;
    /* DELETED shows the last state: the previous version */
    bool gone = type == WCACHE_EV_DELETED;
    const wci_ver *shown = gone ? e->prev : e->ver;
    if (shown)
        fill_kv(&out->kv, e->key, e->klen, shown);
    else
        out->kv.key = e->key, out->kv.key_len = e->klen;
    if (w->prev_value && e->prev && !gone)
        fill_kv(&out->prev, e->key, e->klen, e->prev);
}

/* lend: the slots (and their references) stay until the next call. */
static size_t queue_pop(wcache_watch *w, wcache_watch_event *evs, size_t cap, bool lend)
{
    uint64_t h = atomic_load_explicit(&w->qhead, memory_order_relaxed);
    uint64_t t = atomic_load_explicit(&w->qtail, memory_order_acquire);
    const wci_qarr *a = queue_cur(w);
    if (t - h > w->qhw)
        w->qhw = t - h;
    size_t n = 0;
    while (h < t && n < cap) {
        to_delivery(w, a->s[h & (a->cap - 1)], &evs[n]);
        if (lend)
            evs[n].ev = NULL;
        n++;
        h++;
    }
    if (lend)
        w->lent_own = n;
    else
        atomic_store_explicit(&w->qhead, h, memory_order_release);
    if (n && h == t) { /* drained: was the array far too large for this round? */
        if (a && a->cap >= QUEUE_SHRINK_AT && w->qhw <= a->cap / 8 &&
            !atomic_load_explicit(&w->qshrink, memory_order_relaxed))
            atomic_store_explicit(&w->qshrink, true, memory_order_relaxed);
        w->qhw = 0;
    }
    return n;
}

/* A one-watcher event (initial object, bookmark) straight into the queue. */
static int push_own(wcache_watch *w, uint32_t kind, uint32_t type, int64_t rev,
                    const wci_key *k, wci_ver *v)
{
    if (queue_room(w) <= 0) /* the callers saw room: no memory to grow */
        return -1;
    wcache_event *e = event_new(w->c, kind, rev, k ? k->key : NULL, k ? k->klen : 0, v, NULL);
    if (!e)
        return -1;
    queue_push(w, e, type);
    return 0;
}

/* The next candidate of the initial state: from the tree, or from the
 * index matches (key order too) of an index watcher. */
static const wci_key *initial_next(wcache_watch *w)
{
    if (!w->has_ix)
        return wci_iter_next(&w->iit);
    while (w->impos < w->imn) {
        const wci_key *k = w->im[w->impos++].k;
        if (key_in(w, k->key, k->klen))
            return k;
    }
    return NULL;
}

static bool initial_more(const wcache_watch *w)
{
    return w->has_ix ? w->impos < w->imn : w->iit.depth >= 0;
}

/*
 * How full INITIAL and REPLAY fill the queue: half of it.  Catching up
 * ends inside a next() call, and from then on the writer pushes every
 * change; a queue the catch-up had filled to the brim would overflow at
 * the first few changes, however promptly the consumer reads.  Half
 * leaves queue_size / 2 changes of slack at the switch to LIVE.
 */
static bool catchup_full(const wcache_watch *w)
{
    return queued_own(w) >= w->qcap - w->qcap / 2;
}

/* INITIAL: the next objects of the pinned view, as ADDED. */
static wcache_code initial_step(wcache_watch *w)
{
    wcache_cache *c = w->c;
    int64_t rev = w->start_rev;
    const wci_key *k;
    while (!catchup_full(w) && (k = initial_next(w)) != NULL) {
        if (!key_in(w, k->key, k->klen)) {
            if (w->plen || w->elen) {
                w->iit.depth = -1; /* past the range: the tree is ordered */
                break;
            }
            continue;
        }
        wci_ver *v = (wci_ver *)wci_visible(k, rev);
        lazy_labels ll = {v, 0, {0}, NULL};
        bool take = v && sel_match(c, w, &ll);
        labels_done(c, &ll);
        if (take && push_own(w, EVK_PUT, WCACHE_EV_ADDED, v->mod_rev, k, v) != 0)
            return WCACHE_ENOMEM;
    }
    if (initial_more(w) || queue_full(w))
        return WCACHE_OK;
    if (push_own(w, EVK_INITIAL_END, WCACHE_EV_INITIAL_END, rev, NULL, NULL) != 0)
        return WCACHE_ENOMEM;
    wcache_view_free(w->iview); /* history after rev stays: the ring has it */
    w->iview = NULL;
    wci_free(&c->al, w->im);
    w->im = NULL;
    w->imn = w->impos = w->imcap = 0;
    pthread_mutex_lock(&c->wmu);
    w->phase = PHASE_REPLAY;
    pthread_mutex_unlock(&c->wmu);
    return WCACHE_OK;
}

/* An index watcher's view of a ring event: whether the new and the
 * previous object have its value (only entry ix_id is filled). */
static int ix_replay(wcache_watch *w, const wci_event *e, const wci_ver *prev, wci_ixval *old,
                     wci_ixval *neu)
{
    int now = wci_index_match(w->c, w->ix_id, e->key, e->ver, w->ixval, w->ixlen);
    int was = wci_index_match(w->c, w->ix_id, e->key, prev, w->ixval, w->ixlen);
    if (now < 0 || was < 0)
        return -1;
    neu[w->ix_id] = (wci_ixval){w->ixval, w->ixlen, now};
    old[w->ix_id] = (wci_ixval){w->ixval, w->ixlen, was};
    return 0;
}

/* REPLAY, under wmu: copy a batch of history; go live once caught up. */
static wcache_code replay_locked(wcache_watch *w)
{
    wcache_cache *c = w->c;
    wci_ring *r = &c->ring;
    if (w->cursor < r->head)
        return WCACHE_ECOMPACTED; /* history it needed is gone: re-list */
    int room = 1;
    for (int n = 0; w->cursor < r->tail && n < REPLAY_BATCH && !catchup_full(w) &&
                    (room = queue_room(w)) > 0;
         n++) {
        wci_event *e = &r->ev[w->cursor & r->mask];
        w->cursor++;
        if (e->rev <= w->start_rev || !key_in(w, e->key->key, e->key->klen))
            continue;
        wci_ver *prev = atomic_load_explicit(&e->ver->next, memory_order_relaxed);
        prev = ver_live(prev) ? prev : NULL;
        wci_ixval ixo[WCI_INDEX_MAX], ixn[WCI_INDEX_MAX];
        if (w->has_ix && ix_replay(w, e, prev, ixo, ixn) != 0)
            return WCACHE_ENOMEM;
        lazy_labels cur = {e->ver, 0, {0}, w->has_ix ? ixn : NULL},
                    old = {prev, 0, {0}, w->has_ix ? ixo : NULL};
        uint32_t t = classify(c, w, &cur, &old);
        labels_done(c, &cur);
        labels_done(c, &old);
        if (!t)
            continue;
        wcache_event *ev = event_new(c, ver_live(e->ver) ? EVK_PUT : EVK_DELETE, e->rev,
                                     e->key->key, e->key->klen, e->ver, prev);
        if (!ev)
            return WCACHE_ENOMEM;
        queue_push(w, ev, t);
    }
    if (room < 0)
        return WCACHE_ENOMEM;
    if (w->cursor == r->tail)
        w->phase = PHASE_LIVE;
    return WCACHE_OK;
}

/* Move INITIAL / REPLAY forward so that the queue has something. */
static wcache_code advance(wcache_watch *w)
{
    wcache_code rc = WCACHE_OK;
    if (w->phase == PHASE_INITIAL)
        rc = initial_step(w);
    if (rc == WCACHE_OK && w->phase == PHASE_REPLAY && !queue_full(w)) {
        pthread_mutex_lock(&w->c->wmu);
        rc = replay_locked(w);
        pthread_mutex_unlock(&w->c->wmu);
    }
    if (rc != WCACHE_OK)
        end_watch(w, rc);
    return rc;
}

/* Idle and due: a bookmark at the latest revision, all of it delivered. */
static void maybe_bookmark(wcache_watch *w)
{
    if (!w->bm_ns || w->phase != PHASE_LIVE)
        return;
    int64_t now = wci_now(w->c);
    if (now < w->next_bm)
        return;
    w->next_bm = now + w->bm_ns;
    /* Under wmu the writer can neither push nor publish: an empty queue
     * then means every change up to the current revision was handed out. */
    pthread_mutex_lock(&w->c->wmu);
    int64_t rev = atomic_load_explicit(&w->c->rev, memory_order_relaxed);
    bool idle = atomic_load_explicit(&w->qtail, memory_order_relaxed) ==
                    atomic_load_explicit(&w->qhead, memory_order_acquire) &&
                fan_empty(w);
    if (idle && rev > w->last_rev)
        push_own(w, EVK_BOOKMARK, WCACHE_EV_BOOKMARK, rev, NULL, NULL);
    pthread_mutex_unlock(&w->c->wmu);
}

static bool watch_ok(const wcache_watch *w)
{
    return w && w->magic == WCI_WATCH_MAGIC;
}

/* Nothing to hand out: let the fd sleep until a producer wakes it.  Under
 * rmu, so that the fan cannot change: an attached watcher's armed counts
 * in its fan's narmed, which the writer reads before looking at anyone's. */
static bool arm(wcache_watch *w)
{
    uint64_t drain;
    if (w->phase != PHASE_LIVE) { /* more to replay: stay readable */
        if (w->set)
            set_push(w->set, w); /* a set hands it out again instead */
        return false;
    }
    int fd = atomic_load(&w->efd);
    if (!w->set && fd >= 0) {
        ssize_t r = read(fd, &drain, sizeof drain);
        (void)r;
    }
    pthread_mutex_lock(&w->rmu);
    wci_fan *f = w->fan;
    if (!atomic_exchange(&w->armed, 1) && f)
        atomic_fetch_add(&f->narmed, 1);
    atomic_thread_fence(memory_order_seq_cst);
    bool idle = atomic_load(&w->qtail) == atomic_load(&w->qhead) && fan_empty(w) &&
                !atomic_load(&w->end_code);
    /* Something came in meanwhile and its producer saw us unarmed: make the
     * fd readable again, or it would sleep with deliveries left. */
    if (!idle && atomic_exchange(&w->armed, 0)) {
        if (f)
            atomic_fetch_sub(&f->narmed, 1);
        efd_signal(w);
    }
    pthread_mutex_unlock(&w->rmu);
    return idle;
}

static wcache_code take(wcache_watch *w, wcache_watch_event *evs, size_t cap, size_t *n,
                        bool lend)
{
    if (!watch_ok(w) || !evs || !cap || !n)
        return WCACHE_EINVAL;
    *n = 0;
    settle(w);
    if (w->end_out) /* the end was handed out: it stays the last word */
        return (wcache_code)w->end_out;
    for (int round = 0; round < 2; round++) {
        /* The end is read before the queues: whatever was queued when it
         * came (stop() and an overflow cut between two changes) is all
         * there now, and is handed out before it. */
        int end = atomic_load(&w->end_code);
        if (!end)
            advance(w);
        *n = queue_pop(w, evs, cap, lend);
        if (*n < cap) /* what its own queue holds is older than the fan */
            *n += fan_pop(w, evs + *n, cap - *n, lend);
        if (*n == 0 && !end) {
            maybe_bookmark(w);
            *n = queue_pop(w, evs, cap, lend);
        }
        /* The writer may have moved the fan's backlog to the queue (an
         * ended watcher's detach) after the first look at the queue and
         * before fan_pop() found it gone: fan_pop()'s rmu makes it visible. */
        if (*n == 0 && end)
            *n = queue_pop(w, evs, cap, lend);
        if (*n) {
            w->last_rev =
                evs[*n - 1].revision > w->last_rev ? evs[*n - 1].revision : w->last_rev;
            return WCACHE_OK;
        }
        if (end) {
            w->end_out = end;
            return (wcache_code)end;
        }
        if (arm(w))
            return WCACHE_OK;
    }
    return WCACHE_OK;
}

wcache_code wcache_watch_next(wcache_watch *w, wcache_watch_event *evs, size_t cap, size_t *n)
{
    return take(w, evs, cap, n, false);
}

wcache_code wcache_watch_next_borrowed(wcache_watch *w, wcache_watch_event *evs, size_t cap,
                                       size_t *n)
{
    return take(w, evs, cap, n, true);
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

wcache_code wcache_watch_wait(wcache_watch *w, wcache_watch_event *evs, size_t cap, size_t *n,
                              int64_t timeout_ms)
{
    if (watch_ok(w) && w->set) {
        if (n)
            *n = 0;
        return wci_err(w->c, WCACHE_ESTATE, "watch: in a watch set: wait on the set's fd");
    }
    int64_t deadline = timeout_ms < 0 ? INT64_MAX : mono_ms() + timeout_ms;
    for (;;) {
        wcache_code rc = wcache_watch_next(w, evs, cap, n);
        if (rc != WCACHE_OK || *n)
            return rc;
        int64_t left = deadline == INT64_MAX ? -1 : deadline - mono_ms();
        if (deadline != INT64_MAX && left <= 0)
            return WCACHE_OK;
        if (w->bm_ns) { /* wake for the next bookmark too */
            int64_t bm = (w->next_bm - wci_now(w->c)) / 1000000 + 1;
            left = left < 0 || bm < left ? (bm > 0 ? bm : 1) : left;
        }
        struct pollfd p = {.fd = watch_efd(w), .events = POLLIN};
        if (p.fd < 0) {
            w->c->last_errno = errno;
            return wci_err(w->c, WCACHE_ESYS, "watch: eventfd: %s", strerror(errno));
        }
        if (poll(&p, 1, left > INT32_MAX ? INT32_MAX : (int)left) < 0 && errno != EINTR) {
            w->c->last_errno = errno;
            return WCACHE_ESYS;
        }
    }
}

int wcache_watch_fd(const wcache_watch *w)
{
    /* const for the caller: the fd made on first use is not its state */
    return watch_ok(w) ? watch_efd((wcache_watch *)(uintptr_t)w) : -1;
}

void wcache_watch_stop(wcache_watch *w)
{
    if (!watch_ok(w))
        return;
    /* Under wmu no change is half dispatched: the end falls between two
     * changes, every one applied before this call is queued (or on the
     * fan before the cut) and none applied after it is.  The writer holds
     * wmu for a bounded group of changes, never while it waits for anyone;
     * rmu is only ever held briefly. */
    wcache_cache *c = w->c;
    pthread_mutex_lock(&c->wmu);
    pthread_mutex_lock(&w->rmu);
    int expect = 0;
    atomic_compare_exchange_strong(&w->end_code, &expect, (int)WCACHE_ESTOPPED);
    if (w->fan) {
        fan_cut(w, w->fan->wtail);
        atomic_store_explicit(&w->fan->rescan, 1, memory_order_relaxed);
    }
    atomic_thread_fence(memory_order_seq_cst);
    efd_signal(w);
    pthread_mutex_unlock(&w->rmu);
    pthread_mutex_unlock(&c->wmu);
}

void wcache_watch_close(wcache_watch *w)
{
    if (!watch_ok(w))
        return;
    wcache_cache *c = w->c;
    settle(w);
    if (w->set)
        (void)wcache_watchset_remove(w->set, w);
    pthread_mutex_lock(&c->wmu);
    if (w->registered) {
        reg_del(c, w);
        c->wreg->nwatch--;
    }
    pthread_mutex_unlock(&c->wmu);
    uint64_t h = atomic_load(&w->qhead), t = atomic_load(&w->qtail);
    const wci_qarr *a = queue_cur(w);
    for (; h < t; h++)
        wcache_event_unref(slot_event(a->s[h & (a->cap - 1)]));
    atomic_fetch_sub_explicit(&c->st_watchers, 1, memory_order_relaxed);
    watch_free(w);
}

/* ---- watch sets ---- */

static bool set_ok(const wcache_watchset *s)
{
    return s && s->magic == WCI_WSET_MAGIC;
}

wcache_code wcache_watchset_create(wcache_cache *c, wcache_watchset **out)
{
    if (!wci_cache_ok(c) || !out)
        return WCACHE_EINVAL;
    *out = NULL;
    wcache_watchset *s = wci_calloc(&c->al, 1, sizeof *s);
    if (!s)
        return WCACHE_ENOMEM;
    s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (s->efd < 0) {
        c->last_errno = errno;
        wci_free(&c->al, s);
        return wci_err(c, WCACHE_ESYS, "watch set: eventfd: %s", strerror(errno));
    }
    s->magic = WCI_WSET_MAGIC;
    s->c = c;
    atomic_init(&s->ready, NULL);
    atomic_init(&s->armed, 1); /* the first wake-up writes the fd */
    *out = s;
    return WCACHE_OK;
}

wcache_code wcache_watchset_add(wcache_watchset *s, wcache_watch *w, void *userdata)
{
    if (!set_ok(s) || !watch_ok(w) || w->c != s->c)
        return WCACHE_EINVAL;
    wcache_cache *c = s->c;
    if (w->set)
        return wci_err(c, WCACHE_EBUSY, "watch set: the watch is in a set already");
    size_t at = s->n;
    if (vec_push(&c->al, &s->m, &s->n, &s->cap, w) != 0)
        return WCACHE_ENOMEM;
    pthread_mutex_lock(&c->wmu);
    pthread_mutex_lock(&w->rmu);
    w->set = s;
    w->set_idx = at;
    w->set_ud = userdata;
    set_push(s, w); /* it may hold deliveries already: handed out once */
    pthread_mutex_unlock(&w->rmu);
    pthread_mutex_unlock(&c->wmu);
    return WCACHE_OK;
}

/* The consumer: everything pushed so far, oldest first, after the batch. */
static void set_collect(wcache_watchset *s)
{
    wcache_watch *l = atomic_exchange(&s->ready, NULL), *rev = NULL;
    while (l) {
        wcache_watch *nx = l->rnext;
        l->rnext = rev;
        rev = l;
        l = nx;
    }
    wcache_watch **tail = &s->batch;
    while (*tail)
        tail = &(*tail)->rnext;
    *tail = rev;
}

wcache_code wcache_watchset_remove(wcache_watchset *s, wcache_watch *w)
{
    if (!set_ok(s) || !watch_ok(w))
        return WCACHE_EINVAL;
    if (w->set != s)
        return wci_err(s->c, WCACHE_ENOTFOUND, "watch set: the watch is not in this set");
    wcache_cache *c = s->c;
    pthread_mutex_lock(&c->wmu);
    pthread_mutex_lock(&w->rmu);
    w->set = NULL; /* every pusher holds one of the locks: none of w now */
    /* a wake-up is due: on the fd if it has one, else when it is made */
    if (atomic_exchange(&w->armed, 0) && w->fan)
        atomic_fetch_sub(&w->fan->narmed, 1);
    s->m[w->set_idx] = s->m[--s->n];
    s->m[w->set_idx]->set_idx = w->set_idx;
    pthread_mutex_unlock(&w->rmu);
    pthread_mutex_unlock(&c->wmu);
    set_collect(s);
    for (wcache_watch **p = &s->batch; *p; p = &(*p)->rnext)
        if (*p == w) {
            *p = w->rnext;
            break;
        }
    atomic_store(&w->sready, 0);
    int fd = atomic_load(&w->efd); /* back on its own fd, which may have missed one */
    if (fd >= 0)
        fd_signal(fd);
    return WCACHE_OK;
}

int wcache_watchset_fd(const wcache_watchset *s)
{
    return set_ok(s) ? s->efd : -1;
}

wcache_code wcache_watchset_next(wcache_watchset *s, wcache_watch **w, void **userdata)
{
    if (!set_ok(s) || !w)
        return WCACHE_EINVAL;
    *w = NULL;
    if (userdata)
        *userdata = NULL;
    if (!s->batch)
        set_collect(s);
    if (!s->batch) {
        /* Sleep: drain the fd, arm, then look once more (a pusher that saw
         * armed 0 has pushed where this look finds it). */
        uint64_t drain;
        ssize_t r = read(s->efd, &drain, sizeof drain);
        (void)r;
        atomic_store(&s->armed, 1);
        atomic_thread_fence(memory_order_seq_cst);
        if (!atomic_load(&s->ready))
            return WCACHE_OK;
        (void)atomic_exchange(&s->armed,
                              0); /* 0: a pusher writes the fd: one spurious wake-up */
        set_collect(s);
    }
    wcache_watch *x = s->batch;
    s->batch = x->rnext;
    /* after the link is read: from here a wake-up may push it again */
    atomic_store(&x->sready, 0);
    *w = x;
    if (userdata)
        *userdata = x->set_ud;
    return WCACHE_OK;
}

void wcache_watchset_free(wcache_watchset *s)
{
    if (!set_ok(s))
        return;
    while (s->n)
        (void)wcache_watchset_remove(s, s->m[s->n - 1]);
    wcache_cache *c = s->c;
    close(s->efd);
    wci_free(&c->al, s->m);
    s->magic = 0;
    wci_free(&c->al, s);
}

/* ---- fresh reads (KEP-2340) ---- */

wcache_code wcache_cache_set_source(wcache_cache *c, wcache_current_rev_fn current,
                                    wcache_progress_fn progress, void *ud)
{
    if (!wci_cache_ok(c))
        return WCACHE_EINVAL;
    if (c->open)
        return WCACHE_ESTATE;
    c->cur_fn = current;
    c->prog_fn = progress;
    c->src_ud = ud;
    return WCACHE_OK;
}

void wci_fresh_wake(wcache_cache *c)
{
    if (atomic_load_explicit(&c->fwaiters, memory_order_seq_cst) == 0)
        return;
    pthread_mutex_lock(&c->fmu);
    pthread_cond_broadcast(&c->fcv);
    pthread_mutex_unlock(&c->fmu);
}

static void note_wait(wcache_cache *c, int64_t ns)
{
    atomic_fetch_add_explicit(&c->st_wait_ns, (uint64_t)ns, memory_order_relaxed);
    uint64_t m = atomic_load_explicit(&c->st_max_wait_ns, memory_order_relaxed);
    while ((uint64_t)ns > m &&
           !atomic_compare_exchange_weak(&c->st_max_wait_ns, &m, (uint64_t)ns))
        ;
}

/* Wait until the cache has applied rev, asking the source for progress
 * every 100 ms meanwhile (a quiet source sends none unasked). */
static bool wait_for(wcache_cache *c, int64_t rev, int64_t timeout_ns)
{
    int64_t t0 = wci_now(c), deadline = t0 + timeout_ns;
    atomic_fetch_add_explicit(&c->st_fresh_waits, 1, memory_order_relaxed);
    pthread_mutex_lock(&c->fmu);
    atomic_fetch_add_explicit(&c->fwaiters, 1, memory_order_seq_cst);
    bool ok;
    while (!(ok = atomic_load_explicit(&c->rev, memory_order_seq_cst) >= rev)) {
        int64_t now = wci_now(c);
        if (now >= deadline)
            break;
        if (c->prog_fn) {
            pthread_mutex_unlock(&c->fmu);
            c->prog_fn(c->src_ud);
            pthread_mutex_lock(&c->fmu);
            if (atomic_load_explicit(&c->rev, memory_order_seq_cst) >= rev)
                continue;
        }
        int64_t until = now + PROGRESS_EVERY_NS < deadline ? now + PROGRESS_EVERY_NS : deadline;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t abs = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec + (until - now);
        ts.tv_sec = abs / 1000000000;
        ts.tv_nsec = abs % 1000000000;
        pthread_cond_timedwait(&c->fcv, &c->fmu, &ts);
    }
    atomic_fetch_sub_explicit(&c->fwaiters, 1, memory_order_seq_cst);
    pthread_mutex_unlock(&c->fmu);
    note_wait(c, wci_now(c) - t0);
    if (!ok)
        atomic_fetch_add_explicit(&c->st_fresh_timeouts, 1, memory_order_relaxed);
    return ok;
}

wcache_code wcache_view_begin_fresh(wcache_view *v, int64_t min_rev, int64_t timeout_ms)
{
    if (!v || v->magic != WCI_VIEW_MAGIC || !wci_cache_ok(v->c))
        return WCACHE_EINVAL;
    wcache_cache *c = v->c;
    if (!c->open)
        return WCACHE_ESTATE;
    atomic_fetch_add_explicit(&c->st_fresh_reads, 1, memory_order_relaxed);
    int64_t need = min_rev;
    if (need < 0 && (!c->cur_fn || c->cur_fn(&need, c->src_ud) != 0 || need < 0))
        return WCACHE_ENOTREADY;
    int64_t to = (timeout_ms > 0 ? timeout_ms : FRESH_TIMEOUT_MS) * 1000000;
    if (atomic_load_explicit(&c->rev, memory_order_acquire) < need && !wait_for(c, need, to))
        return WCACHE_ETIMEDOUT;
    return wcache_view_begin(v, WCACHE_REV_LATEST);
}

wcache_code wcache_cache_wait_stat(const wcache_cache *c, wcache_wait_stat *st)
{
    if (!wci_cache_ok(c) || !st || st->size < sizeof *st)
        return WCACHE_EINVAL;
    wcache_wait_stat s = {.size = sizeof s};
    s.reads = atomic_load(&c->st_fresh_reads);
    s.waits = atomic_load(&c->st_fresh_waits);
    s.timeouts = atomic_load(&c->st_fresh_timeouts);
    s.wait_ns = atomic_load(&c->st_wait_ns);
    s.max_wait_ns = atomic_load(&c->st_max_wait_ns);
    s.watchers = atomic_load(&c->st_watchers);
    s.deliveries = atomic_load(&c->st_deliveries);
    s.overflows = atomic_load(&c->st_overflows);
    *st = s;
    return WCACHE_OK;
}
