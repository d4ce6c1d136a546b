/*
 * alloc.c - allocation through the embedder's allocator.
 */
#include "alloc.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static void *libc_alloc(size_t n, void *ud)
{
    (void)ud;
    return malloc(n ? n : 1);
}

static void libc_free(void *p, void *ud)
{
    (void)ud;
    free(p);
}

const wci_alloc wci_libc_alloc = {libc_alloc, libc_free, NULL};

void *wci_malloc(const wci_alloc *a, size_t n)
{
    return a->alloc(n ? n : 1, a->userdata);
}

bool wci_array_grow(const wci_alloc *a, void *pp, size_t *cap, size_t n, size_t size,
                    size_t first)
{
    size_t nc = *cap ? *cap * 2 : first;
    if (nc < *cap || (size && nc > SIZE_MAX / size))
        return false;
    void *old, *p = wci_malloc(a, nc * size);
    if (!p)
        return false;
    memcpy(&old, pp, sizeof old);
    if (n)
        memcpy(p, old, n * size);
    wci_free(a, old);
    memcpy(pp, &p, sizeof p);
    *cap = nc;
    return true;
}

void *wci_calloc(const wci_alloc *a, size_t n, size_t size)
{
    if (size && n > SIZE_MAX / size)
        return NULL;
    void *p = wci_malloc(a, n * size);
    if (p)
        memset(p, 0, n * size);
    return p;
}

void *wci_memdup(const wci_alloc *a, const void *p, size_t n)
{
    if (n == SIZE_MAX)
        return NULL;
    char *q = wci_malloc(a, n + 1);
    if (!q)
        return NULL;
    if (n)
        memcpy(q, p, n);
    q[n] = 0;
    return q;
}

void wci_free(const wci_alloc *a, void *p)
{
    if (p)
        a->free(p, a->userdata);
}

/* ---- size classes ----
 *
 * glibc's heap does badly with what a cache does all day: free a ~1 KiB
 * version and allocate one about as large.  Each free consolidates with its
 * neighbours (a cache miss on memory nobody else touches) and takes a
 * locked instruction that waits for every miss in flight.  Here every size
 * rounded up to the slab's grain has its own LIFO free list, carved from blocks of
 * BLOCK bytes with no per-object header, so a freed version's memory (still
 * in cache) is what the next version of about that size reuses.
 *
 * The writer allocates and frees almost everything, without a lock, from
 * lists only it touches (it is one thread at a time by the API's contract).
 * Other threads (watchers dropping the last reference to a version, batches
 * filled on the caller's thread) use a second set of lists under a mutex;
 * the writer adopts a whole shared list when its own is empty.  An object
 * may move between the two freely: memory of one class is interchangeable.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <stdbool.h>

#include "memcheck.h"

#ifdef WCI_HAVE_VALGRIND
bool wci_vg;

__attribute__((constructor)) static void vg_init(void)
{
    wci_vg = RUNNING_ON_VALGRIND;
}
#endif

/* The grain is the caller's choice (see alloc.h); this is the least: objects
 * are 8-aligned, enough for keys (pointers and 64-bit fields) and for the
 * three tag bits hash.c keeps in a key pointer. */
#define GRAIN_MIN 8
#define NCLASS (WCI_SLAB_MAX / GRAIN_MIN + 1)
#define BLOCK_HDR 64 /* a block's first bytes: the next block, then its allocation */
/* 4 MiB, so that a block holds at least one whole 2 MiB huge page
 * wherever the allocator places it. */
#define BLOCK ((size_t)4 << 20)
#define HUGE ((size_t)2 << 20)

typedef struct pool {
    char *cur;   /* unused tail of the newest block */
    size_t left; /* its bytes */
    void *free[NCLASS];
} pool;

/* A run of free memory that reclaim() found, for the writer to carve. */
typedef struct region {
    char *p;
    size_t n;
} region;

struct wci_slab {
    wci_alloc a;
    size_t grain;
    bool huge; /* ask the kernel for huge pages under blocks */
    pool w;    /* the writer's */
    pthread_mutex_t mu;
    pool s;                         /* everyone else's, under mu */
    _Atomic size_t nshared[NCLASS]; /* objects on s.free[]: a hint, read unlocked */
    void *blocks;                   /* under mu */
    /* the writer's: */
    _Atomic size_t heap; /* bytes of blocks */
    size_t next_reclaim; /* heap at which reclaim() may run again */
    region *rg;          /* runs to carve before a new block, a stack */
    size_t nrg, rgcap;
    size_t reclaimed; /* bytes turned into runs */
};

/*
 * Versions are spread over gigabytes and read at random (GET, LIST,
 * compaction): with 4 KiB pages nearly every such read also misses the
 * TLB, and a prefetch cannot hide a page walk.  Transparent huge pages
 * under the blocks make the whole version heap fit the TLB.  Only for
 * memory the C library gave us (the embedder's allocator may hand out
 * anything), and only where the kernel honours the advice.
 */
void wci_advise_huge(void *p, size_t n)
{
#if defined(MADV_HUGEPAGE) && !defined(WCI_NO_HUGE) /* WCI_NO_HUGE: for A/B runs */
    uintptr_t lo = ((uintptr_t)p + HUGE - 1) & ~(uintptr_t)(HUGE - 1);
    uintptr_t hi = ((uintptr_t)p + n) & ~(uintptr_t)(HUGE - 1);
    if (hi > lo)
        (void)madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#else
    (void)p, (void)n;
#endif
}

wci_slab *wci_slab_create(const wci_alloc *a, bool huge, size_t grain)
{
    wci_slab *s = wci_calloc(a, 1, sizeof *s);
    if (!s)
        return NULL;
    if (pthread_mutex_init(&s->mu, NULL) != 0) {
        wci_free(a, s);
        return NULL;
    }
    s->a = *a;
    s->huge = huge;
    s->grain = grain < GRAIN_MIN ? GRAIN_MIN : grain;
    return s;
}

void wci_slab_destroy(wci_slab *s)
{
    if (!s)
        return;
    wci_free(&s->a, s->rg);
    for (char *b = s->blocks; b;) {
        void *next, *raw;
        ASAN_UNPOISON_MEMORY_REGION(b, BLOCK);
        VG_DEFINED(b, 2 * sizeof next);
        memcpy(&next, b, sizeof next);
        memcpy(&raw, b + sizeof next, sizeof raw);
        wci_free(&s->a, raw);
        b = next;
    }
    pthread_mutex_destroy(&s->mu);
    wci_alloc al = s->a;
    wci_free(&al, s);
}

static bool slabbed(size_t n)
{
    return n && n <= WCI_SLAB_MAX;
}

static size_t class_of(const wci_slab *s, size_t n)
{
    return (n + s->grain - 1) / s->grain;
}

/* The free object under the head was freed long ago (by compaction, a
 * whole history window back) and is out of the CPU's caches: reading its
 * link was most of an ingest's allocation cost.  So each pop prefetches
 * the new head, for write since the caller will fill it, and the next pop
 * of the class (a few events later) finds it in cache. */
static void *pop(void **head)
{
    void *p = *head;
    if (p) {
        ASAN_UNPOISON_MEMORY_REGION(p, sizeof(void *));
        VG_DEFINED(p, sizeof(void *));
        memcpy(head, p, sizeof(void *));
        if (*head)
            __builtin_prefetch(*head, 1);
    }
    return p;
}

static void push(void **head, void *p, size_t sz)
{
    VG_FREELIKE(p);
    VG_UNDEFINED(p, sizeof(void *));
    memcpy(p, head, sizeof(void *));
    *head = p;
    ASAN_POISON_MEMORY_REGION(p, sz);
    VG_NOACCESS(p, sz);
}

/*
 * Reclaiming runs of free memory.  A free object can only be reused by a
 * version of about its size, so when objects grow for good (a pod gets
 * its status), the memory of their old versions waits for versions of the
 * old size that may never come, and the heap grows by all of it (after 1M
 * objects grew by 200 bytes: 2.0x their raw bytes, 1.18x with this).  When the
 * writer needs a new block while much of the heap is free, it sorts every
 * free object by address and merges neighbours: runs of REGION_MIN bytes
 * or more become memory to carve new objects from, of any size; the rest
 * go back to their lists.  The writer looks (a walk of the free lists,
 * holding mu: other threads' frees wait) only when the heap has grown by
 * a 32nd since it last looked, or at the next block after a pass that
 * turned at least half of what was free into runs (objects are growing:
 * their old memory keeps coming free).  So nothing is counted per
 * allocation, and a heap that does not grow is never looked at.  A pass
 * (O(F log F) for F free objects: at most 7 ms at 1M objects) runs only
 * when at least RECLAIM_MIN and a 32nd of the heap is free.
 */
#define REGION_MIN ((size_t)64 << 10)
#define RECLAIM_MIN (2 * BLOCK)

typedef struct fobj {
    char *p;
    size_t sz;
} fobj;

static int fobj_cmp(const void *x, const void *y)
{
    uintptr_t a = (uintptr_t)((const fobj *)x)->p, b = (uintptr_t)((const fobj *)y)->p;
    return a < b ? -1 : a > b;
}

/* The link of a free object, read without handing the object out. */
static void *link_of(void *p)
{
    void *next;
    ASAN_UNPOISON_MEMORY_REGION(p, sizeof(void *));
    VG_DEFINED(p, sizeof(void *));
    memcpy(&next, p, sizeof(void *));
    ASAN_POISON_MEMORY_REGION(p, sizeof(void *));
    VG_NOACCESS(p, sizeof(void *));
    return next;
}

/* Empty list *head into f[*n...]; the objects stay poisoned. */
static void take_list(void **head, size_t sz, fobj *f, size_t *n)
{
    for (void *p = *head; p; p = link_of(p))
        f[(*n)++] = (fobj){p, sz};
    *head = NULL;
}

/* Put a free object (already freed: no valgrind free) back on a list. */
static void relink(void **head, void *p, size_t sz)
{
    ASAN_UNPOISON_MEMORY_REGION(p, sizeof(void *));
    VG_UNDEFINED(p, sizeof(void *));
    memcpy(p, head, sizeof(void *));
    *head = p;
    ASAN_POISON_MEMORY_REGION(p, sz);
    VG_NOACCESS(p, sz);
}

static size_t list_len(void *head)
{
    size_t n = 0;
    for (void *p = head; p; p = link_of(p))
        n++;
    return n;
}

static void reclaim(wci_slab *s)
{
    size_t heap = atomic_load_explicit(&s->heap, memory_order_relaxed);
    s->next_reclaim = heap + heap / 32;
    pthread_mutex_lock(&s->mu);
    size_t n = 0, bytes = 0;
    for (size_t c = 1; c < NCLASS; c++) {
        /* walked, not taken from nshared: f must hold every object */
        size_t k = list_len(s->s.free[c]) + list_len(s->w.free[c]);
        n += k;
        bytes += k * c * s->grain;
    }
    fobj *f =
        bytes >= RECLAIM_MIN && bytes >= heap / 32 ? wci_malloc(&s->a, n * sizeof *f) : NULL;
    if (!f) {
        pthread_mutex_unlock(&s->mu);
        return;
    }
    size_t m = 0;
    for (size_t c = 1; c < NCLASS; c++) {
        take_list(&s->w.free[c], c * s->grain, f, &m);
        take_list(&s->s.free[c], c * s->grain, f, &m);
        atomic_store_explicit(&s->nshared[c], 0, memory_order_relaxed);
    }
    pthread_mutex_unlock(&s->mu);
    qsort(f, m, sizeof *f, fobj_cmp);
    size_t before = s->reclaimed;
    for (size_t i = 0, j; i < m; i = j) {
        size_t run = f[i].sz;
        for (j = i + 1; j < m && f[j].p == f[j - 1].p + f[j - 1].sz; j++)
            run += f[j].sz;
        if (run >= REGION_MIN &&
            (s->nrg < s->rgcap ||
             wci_array_grow(&s->a, &s->rg, &s->rgcap, s->nrg, sizeof *s->rg, 16))) {
            s->rg[s->nrg++] = (region){f[i].p, run};
            s->reclaimed += run;
            ASAN_POISON_MEMORY_REGION(f[i].p, run);
            VG_NOACCESS(f[i].p, run);
            continue;
        }
        for (size_t k = i; k < j; k++)
            relink(&s->w.free[f[k].sz / s->grain], f[k].p, f[k].sz);
    }
    if (s->reclaimed - before >= bytes / 2)
        s->next_reclaim = 0; /* productive: look again at the next block */
    wci_free(&s->a, f);
}

/* Point the writer's pool at a run of reclaimed memory, reclaiming first
 * if there is none and it is time. */
static bool take_region(wci_slab *s, pool *p)
{
    if (!s->nrg) {
        if (atomic_load_explicit(&s->heap, memory_order_relaxed) < s->next_reclaim)
            return false;
        reclaim(s);
        if (!s->nrg)
            return false;
    }
    region r = s->rg[--s->nrg];
    p->cur = r.p;
    p->left = r.n;
    return true;
}

/* Pool p's current run is too short for the next object: move on to a run
 * from reclaim() (the writer's pool) or a new block.  false: out of
 * memory.  Out of line: the common path of bump() is three instructions. */
__attribute__((noinline, cold)) static bool refill(wci_slab *s, pool *p, bool locked)
{
    if (p == &s->w) {
        if (p->left >= s->grain) {
            /* the tail goes to a list, not to waste: runs from reclaim()
             * are short enough for that to matter */
            size_t tc = p->left / s->grain;
            relink(&s->w.free[tc], p->cur, tc * s->grain);
            p->left = 0;
        }
        if (take_region(s, p))
            return true;
    }
    /* With huge pages, a block is placed on a HUGE boundary inside a
     * larger allocation, or only part of it could be backed by huge
     * pages; the pages around it are never touched, so they cost
     * address space, not memory. */
    size_t extra = s->huge ? HUGE : 0;
    char *raw = s->a.alloc(BLOCK + extra, s->a.userdata);
    if (!raw)
        return false;
    char *b = raw;
    if (s->huge) {
        b = (char *)(((uintptr_t)raw + HUGE - 1) & ~(uintptr_t)(HUGE - 1));
        wci_advise_huge(b, BLOCK);
    }
    /* the block's header: the next block, then raw */
    memcpy(b + sizeof(void *), &raw, sizeof raw);
    if (!locked)
        pthread_mutex_lock(&s->mu);
    memcpy(b, &s->blocks, sizeof(void *));
    s->blocks = b;
    atomic_fetch_add_explicit(&s->heap, BLOCK, memory_order_relaxed);
    if (!locked)
        pthread_mutex_unlock(&s->mu);
    p->cur = b + BLOCK_HDR;
    p->left = BLOCK - BLOCK_HDR;
    ASAN_POISON_MEMORY_REGION(b, BLOCK);
    VG_NOACCESS(b, BLOCK);
    return true;
}

/* A new object from pool p's block, NULL when out of memory.  Objects are
 * grain-aligned: blocks are aligned for any type, sizes are grain multiples. */
static void *bump(wci_slab *s, pool *p, size_t cls, bool locked)
{
    size_t sz = cls * s->grain;
    if (p->left < sz && !refill(s, p, locked))
        return NULL;
    void *o = p->cur;
    p->cur += sz;
    p->left -= sz;
    return o;
}

static void *handed_out(const wci_slab *s, void *o, size_t cls)
{
    if (o) {
        ASAN_UNPOISON_MEMORY_REGION(o, cls * s->grain);
        VG_MALLOCLIKE(o, cls * s->grain);
    }
    return o;
}

void *wci_slab_alloc_w(wci_slab *s, size_t n)
{
    if (!slabbed(n))
        return wci_malloc(&s->a, n);
    size_t cls = class_of(s, n);
    void *o = pop(&s->w.free[cls]);
    if (!o && atomic_load_explicit(&s->nshared[cls], memory_order_relaxed)) {
        pthread_mutex_lock(&s->mu); /* adopt what the others freed */
        s->w.free[cls] = s->s.free[cls];
        s->s.free[cls] = NULL;
        atomic_store_explicit(&s->nshared[cls], 0, memory_order_relaxed);
        pthread_mutex_unlock(&s->mu);
        o = pop(&s->w.free[cls]);
    }
    if (!o)
        o = bump(s, &s->w, cls, false);
    return handed_out(s, o, cls);
}

void wci_slab_free_w(wci_slab *s, void *p, size_t n)
{
    if (!p)
        return;
    if (!slabbed(n)) {
        wci_free(&s->a, p);
        return;
    }
    push(&s->w.free[class_of(s, n)], p, class_of(s, n) * s->grain);
}

/* wci_slab_fit (alloc.h): a version that outgrows its key's previous one
 * would otherwise leave that one's memory to versions of exactly its old
 * size, which may never come: taking a free object a few grains too large
 * costs those grains while it lives, a new one costs all of it for good.
 * fit_classes: the classes it may take from, lowest first; false: n is not
 * slabbed.  Room that would leave the slab is not given. */
static bool fit_classes(const wci_slab *s, size_t n, size_t want, size_t max, size_t *lo,
                        size_t *hi)
{
    if (!slabbed(n))
        return false;
    if (!slabbed(want))
        want = max = n;
    *lo = class_of(s, want);
    *hi = (slabbed(max) ? max : WCI_SLAB_MAX) / s->grain;
    if (*hi < *lo)
        *hi = *lo;
    return true;
}

/* The lowest class in [lo, hi] the writer has a free object of (on its own
 * lists, or with shared: on the others' too), else hi + 1. */
static size_t fit_class_w(const wci_slab *s, size_t lo, size_t hi, bool shared)
{
    size_t cls = lo;
    while (cls <= hi && !s->w.free[cls] &&
           !(shared && atomic_load_explicit(&s->nshared[cls], memory_order_relaxed)))
        cls++;
    return cls;
}

void *wci_slab_fit_w(wci_slab *s, size_t n, size_t want, size_t max, size_t *got)
{
    size_t lo, hi;
    if (!fit_classes(s, n, want, max, &lo, &hi)) {
        *got = n;
        return wci_slab_alloc_w(s, n);
    }
    size_t cls = fit_class_w(s, lo, hi, true);
    *got = (cls <= hi ? cls : lo) * s->grain;
    return wci_slab_alloc_w(s, *got);
}

void wci_slab_fit_prefetch_w(const wci_slab *s, size_t n, size_t want, size_t max)
{
    size_t lo, hi;
    if (!fit_classes(s, n, want, max, &lo, &hi))
        return;
    size_t cls = fit_class_w(s, lo, hi, false);
    if (cls > hi)
        return; /* from the shared list or the block: not worth finding here */
    /* The first lines only of a large object: the copy into the rest is
     * long enough for the hardware's own prefetching to keep ahead. */
    const char *o = s->w.free[cls];
    size_t sz = cls * s->grain < 4096 ? cls * s->grain : 4096;
    for (size_t off = 0; off < sz; off += 64)
        __builtin_prefetch(o + off, 1);
}

void *wci_slab_fit(wci_slab *s, size_t n, size_t want, size_t max, size_t *got)
{
    size_t lo, hi;
    if (!fit_classes(s, n, want, max, &lo, &hi)) {
        *got = n;
        return wci_slab_alloc(s, n);
    }
    size_t cls = lo;
    pthread_mutex_lock(&s->mu);
    while (cls <= hi && !s->s.free[cls])
        cls++;
    pthread_mutex_unlock(&s->mu);
    /* if another thread took it meanwhile, this makes a new one */
    *got = (cls <= hi ? cls : lo) * s->grain;
    return wci_slab_alloc(s, *got);
}

void *wci_slab_alloc(wci_slab *s, size_t n)
{
    if (!slabbed(n))
        return wci_malloc(&s->a, n);
    size_t cls = class_of(s, n);
    pthread_mutex_lock(&s->mu);
    void *o = pop(&s->s.free[cls]);
    if (o)
        atomic_store_explicit(&s->nshared[cls],
                              atomic_load_explicit(&s->nshared[cls], memory_order_relaxed) - 1,
                              memory_order_relaxed);
    else
        o = bump(s, &s->s, cls, true);
    pthread_mutex_unlock(&s->mu);
    return handed_out(s, o, cls);
}

void wci_slab_free(wci_slab *s, void *p, size_t n)
{
    if (!p)
        return;
    if (!slabbed(n)) {
        wci_free(&s->a, p);
        return;
    }
    size_t cls = class_of(s, n);
    pthread_mutex_lock(&s->mu);
    push(&s->s.free[cls], p, cls * s->grain);
    atomic_store_explicit(&s->nshared[cls],
                          atomic_load_explicit(&s->nshared[cls], memory_order_relaxed) + 1,
                          memory_order_relaxed);
    pthread_mutex_unlock(&s->mu);
}
