/*
 * slabsim.c - how much memory the version slab's placement leaves unused,
 * simulated on bench_core's workload in seconds instead of a 1M-object run.
 *
 * It replays bench_core's sequence (N podgen pods loaded, U uniform random
 * updates, the last W revisions kept) on counts only: each size class has a
 * count of free objects, a version takes one of its class (or, with fit, of
 * up to `fit` classes above) or new memory, and compaction frees the version
 * each event superseded W events later.  It prints the heap (every object
 * ever made, which is what RSS sees) and what of it is free at the end, in
 * bytes per object, beside the versions' own bytes.
 *
 *   slabsim [-n N] [-u U] [GRAIN ROOM FIT GROW]...
 *
 * GRAIN: the slab's grain; ROOM: a key's first version gets size/ROOM more
 * (0: none); FIT: classes above its own a version may take; GROW: bytes
 * added to every updated pod beyond what podgen's grow (~13 at the first
 * update), to see how the placement copes with objects that grow more.
 * The defaults compare the slab before (64 0 0) and after (16 64 4).
 */
#define _POSIX_C_SOURCE 200809L
#include "podgen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HDR 40     /* sizeof(wci_ver) */
#define W 10000    /* revisions kept, as bench_core's RETAIN */
#define NCLS 8192

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        perror("slabsim");
        exit(1);
    }
    return p;
}

int main(int argc, char **argv)
{
    uint64_t n = 1000000, u = 0;
    int opt;
    while ((opt = getopt(argc, argv, "n:u:")) != -1) {
        if (opt == 'n')
            n = strtoull(optarg, NULL, 10);
        else if (opt == 'u')
            u = strtoull(optarg, NULL, 10);
        else {
            fprintf(stderr, "usage: slabsim [-n N] [-u U] [GRAIN ROOM FIT GROW]...\n");
            return 2;
        }
    }
    if (n < 1000 || n > PODGEN_MAX_PODS) {
        fprintf(stderr, "slabsim: N must be in [1000, %u]\n", PODGEN_MAX_PODS);
        return 2;
    }
    if (!u)
        u = 2 * n; /* bench_core's two update phases */
    static const char *dflt[] = {"64", "0", "0", "0", "16", "64", "4", "0"};
    char **cfg = optind < argc ? argv + optind : (char **)dflt;
    int ncfg = optind < argc ? argc - optind : 8;
    if (ncfg % 4) {
        fprintf(stderr, "slabsim: configurations come in fours: GRAIN ROOM FIT GROW\n");
        return 2;
    }

    /* The pods' sizes: the same (seed, pod, version, revision) as bench_core
     * (load: version 1 at revision i + 1; updates: their revision), the
     * keys of the updates from its SEED_WORKLOAD stream. */
    podgen g;
    podgen_init(&g, 42);
    (void)podgen_key; /* the sizes are the pods' */
    static char buf[PODGEN_POD_MAX];
    uint16_t *first = xmalloc(n * sizeof *first), *upd = xmalloc(u * sizeof *upd);
    uint32_t *key = xmalloc(u * sizeof *key);
    double value = 0;
    for (uint64_t i = 0; i < n; i++)
        first[i] = (uint16_t)podgen_pod(&g, i, 1, (int64_t)i + 1, buf, sizeof buf);
    podgen_rng r = {0x5eed0f10adull};
    for (uint64_t k = 0; k < u; k++) {
        key[k] = (uint32_t)(podgen_next(&r) % n);
        int64_t rev = (int64_t)(n + k + 1);
        upd[k] = (uint16_t)podgen_pod(&g, key[k], (uint64_t)rev, rev, buf, sizeof buf);
    }

    uint32_t *cur = xmalloc(n * sizeof *cur), *cursz = xmalloc(n * sizeof *cursz);
    uint32_t *ring = xmalloc(W * sizeof *ring);
    static long nfree[NCLS];
    printf("grain room fit grow  heap_B/obj  free_B/obj  versions_B/obj\n");
    for (int a = 0; a < ncfg; a += 4) {
        long grain = atol(cfg[a]), room = atol(cfg[a + 1]), fit = atol(cfg[a + 2]);
        long grow = atol(cfg[a + 3]);
        if (grain < 8 || grain > 256 || room < 0 || fit < 0 || fit > 64 || grow < -64) {
            fprintf(stderr, "slabsim: bad configuration\n");
            return 2;
        }
        memset(nfree, 0, sizeof nfree);
        double heap = 0;
        value = 0;
        for (uint64_t i = 0; i < n; i++) {
            long need = HDR + first[i], want = need + (room ? need / room : 0);
            cur[i] = (uint32_t)((want + grain - 1) / grain);
            cursz[i] = (uint32_t)need;
            heap += (double)cur[i] * (double)grain;
        }
        for (uint64_t k = 0; k < u; k++) {
            if (k >= W)
                nfree[ring[k % W]]++;
            long need = HDR + upd[k] + grow;
            long lo = (need + grain - 1) / grain, cls = lo;
            while (cls <= lo + fit && cls < NCLS && !nfree[cls])
                cls++;
            if (cls <= lo + fit && cls < NCLS)
                nfree[cls]--;
            else
                cls = lo, heap += (double)lo * (double)grain;
            ring[k % W] = cur[key[k]];
            cur[key[k]] = (uint32_t)cls;
            cursz[key[k]] = (uint32_t)need;
        }
        double fr = 0;
        for (long c = 0; c < NCLS; c++)
            fr += (double)nfree[c] * (double)c * (double)grain;
        for (uint64_t i = 0; i < n; i++)
            value += cursz[i];
        printf("%5ld %4ld %3ld %4ld  %10.1f  %10.1f  %14.1f\n", grain, room, fit, grow,
               heap / (double)n, fr / (double)n, value / (double)n);
    }
    free(first), free(upd), free(key), free(cur), free(cursz), free(ring);
    return 0;
}
