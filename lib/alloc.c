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
