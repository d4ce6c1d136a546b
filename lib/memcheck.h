/*
 * memcheck.h - telling ASan and valgrind about objects carved from blocks
 * (alloc.c's slabs), so that both see each object's bounds and its use
 * after free as they would with malloc.
 */
#ifndef WCI_MEMCHECK_H
#define WCI_MEMCHECK_H

#include <stdbool.h>

#if defined(__has_include)
#if __has_include(<valgrind/memcheck.h>)
#include <valgrind/memcheck.h>
#define WCI_HAVE_VALGRIND 1
#endif
#endif

/* A client request costs a few stores and a dozen instructions even
 * outside valgrind, and the allocators make several per call: they are
 * made only under valgrind (wci_vg is set once, when the library loads). */
#ifdef WCI_HAVE_VALGRIND
extern bool wci_vg;
#define VG(req)     \
    do {            \
        if (wci_vg) \
            req;    \
    } while (0)
#else
#define VG(req) ((void)0)
#endif
#define VG_MALLOCLIKE(p, n) VG(VALGRIND_MALLOCLIKE_BLOCK(p, n, 0, 0))
#define VG_FREELIKE(p) VG(VALGRIND_FREELIKE_BLOCK(p, 0))
#define VG_NOACCESS(p, n) VG(VALGRIND_MAKE_MEM_NOACCESS(p, n))
#define VG_DEFINED(p, n) VG(VALGRIND_MAKE_MEM_DEFINED(p, n))
#define VG_UNDEFINED(p, n) VG(VALGRIND_MAKE_MEM_UNDEFINED(p, n))

#if defined(__SANITIZE_ADDRESS__)
#define WCI_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WCI_ASAN 1
#endif
#endif
#ifdef WCI_ASAN
#include <sanitizer/asan_interface.h>
#else
#define ASAN_POISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#define ASAN_UNPOISON_MEMORY_REGION(p, n) ((void)(p), (void)(n))
#endif

#endif
