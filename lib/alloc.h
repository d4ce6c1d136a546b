/*
 * alloc.h - the only way code in lib/ allocates memory.
 *
 * Every allocation goes through a wci_alloc so that an embedder's
 * wcache_allocator sees all of them (and a chaos allocator in the tests can
 * fail any one).  malloc/free are banned elsewhere in lib/ by a meta test.
 */
#ifndef WCI_ALLOC_H
#define WCI_ALLOC_H

#include <stdbool.h>
#include <stddef.h>

typedef struct wci_slab wci_slab;

typedef struct wci_alloc {
    void *(*alloc)(size_t n, void *userdata);
    void (*free)(void *p, void *userdata);
    void *userdata;
} wci_alloc;

/* libc's malloc/free, for code that runs without a cache (CLI readers). */
extern const wci_alloc wci_libc_alloc;

void *wci_malloc(const wci_alloc *a, size_t n);
/* Zeroed; NULL on overflow of n * size. */
void *wci_calloc(const wci_alloc *a, size_t n, size_t size);
/* Copy of p[0..n), NUL-terminated (one extra byte). */
void *wci_memdup(const wci_alloc *a, const void *p, size_t n);
void wci_free(const wci_alloc *a, void *p);
/* Room for more in an array of *cap elements of size bytes, n of them in
 * use, whose pointer is at pp (a T **): *cap doubled (first when 0), the n
 * copied, the old array freed.  false (ENOMEM): nothing changed. */
bool wci_array_grow(const wci_alloc *a, void *pp, size_t *cap, size_t n, size_t size,
                    size_t first);
/* Advise huge pages for the 2 MiB-aligned part of [p, p + n), memory from
 * the C library's allocator. */
void wci_advise_huge(void *p, size_t n);

/*
 * Size-class allocation for the many short-lived, similar-sized objects of
 * a cache (versions).  Memory comes from the wci_alloc in large blocks and
 * goes back to it only at wci_slab_destroy().  The _w calls are for the
 * cache's writer (one thread at a time, no lock); the others for any
 * thread.  An object may be freed by either kind of call, whoever allocated
 * it; the caller passes its size again.  Requests larger than WCI_SLAB_MAX
 * are plain calls of the wci_alloc.
 */
#define WCI_SLAB_MAX 16384
/* huge: a is the C library's; back blocks with huge pages where possible.
 * grain: sizes are rounded up to a multiple of it (at least 8). */
wci_slab *wci_slab_create(const wci_alloc *a, bool huge, size_t grain); /* NULL: ENOMEM */
void wci_slab_destroy(wci_slab *s); /* every object must be freed */
void *wci_slab_alloc_w(wci_slab *s, size_t n);
void wci_slab_free_w(wci_slab *s, void *p, size_t n);
void *wci_slab_alloc(wci_slab *s, size_t n);
void wci_slab_free(wci_slab *s, void *p, size_t n);
/* An object of at least n bytes: a free one whose size is in [want, max]
 * (want rounded up to the grain, smallest first), else a new one of want
 * bytes; n <= want <= max, and want is n where it would not be slabbed.
 * *got receives its size, which is what the free calls must be given. */
void *wci_slab_fit_w(wci_slab *s, size_t n, size_t want, size_t max, size_t *got);
void *wci_slab_fit(wci_slab *s, size_t n, size_t want, size_t max, size_t *got);
/* Prefetch, for writing, the object wci_slab_fit_w(s, n, want, max) would
 * hand out now, if it would come from the writer's free lists.  Writer. */
void wci_slab_fit_prefetch_w(const wci_slab *s, size_t n, size_t want, size_t max);

#endif
