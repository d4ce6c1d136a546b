/*
 * alloc.h - the only way code in lib/ allocates memory.
 *
 * Every allocation goes through a wci_alloc so that an embedder's
 * wcache_allocator sees all of them (and a chaos allocator in the tests can
 * fail any one).  malloc/free are banned elsewhere in lib/ by a meta test.
 */
#ifndef WCI_ALLOC_H
#define WCI_ALLOC_H

#include <stddef.h>

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

#endif
