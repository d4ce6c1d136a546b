/*
 * bench.h - what the C benchmarks of the core share: the metric line
 * (name, N, value, unit, tab-separated: what run.sh and its plots read)
 * and failures that end the run.  Define BENCH_NAME (the program's name,
 * for messages) before including.
 */
#ifndef WCACHE_BENCH_H
#define WCACHE_BENCH_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "watchcache.h"

static uint64_t n_objects; /* the N of every metric line */

static inline void metric(const char *name, double value, const char *unit)
{
    printf("%s\t%llu\t%.3f\t%s\n", name, (unsigned long long)n_objects, value, unit);
    fflush(stdout);
}

static inline void check(int rc, const char *what)
{
    if (rc != WCACHE_OK) {
        fprintf(stderr, BENCH_NAME ": %s: %s\n", what, wcache_strerror(rc));
        exit(1);
    }
}

static inline void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p) {
        fprintf(stderr, BENCH_NAME ": out of memory (%zu bytes)\n", n);
        exit(1);
    }
    return p;
}

#endif
