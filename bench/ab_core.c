/*
 * ab_core - the core workload on two builds of libwatchcache in one process,
 * interleaved, for A/B comparisons on a shared machine (bench/ab_core.sh
 * builds the two libraries from git revisions and runs this).
 *
 * Usage: ab_core A.so B.so N UPDATES ROUNDS [PHASES]
 *   Both libraries are loaded with dlopen (RTLD_LOCAL, so their symbols stay
 *   apart) and fed the same N pods (podgen.h, keys in random order), then
 *   UPDATES updates of uniformly random keys in chunks of 4096, every other
 *   chunk one wcache_ingest_put per event and the others
 *   wcache_ingest_changes of 64, each chunk applied to A then B.  PHASES
 *   (default "ugl") then measures, ROUNDS times each, alternating which
 *   library goes first: u(pdate) ns/event (the timed chunks above),
 *   g(et) ns per wcache_view_get of 200,000 random keys with one view held
 *   (and per key of wcache_view_get_many, 64 keys a call),
 *   l(ist) ns/item of a LIST of everything and of the prefix /registry/pods/
 *   at the latest revision and at one 5,000 revisions back.
 *   Times are the thread's CPU time (time spent descheduled does not count;
 *   cache and memory interference from other processes still does, equally
 *   for A and B).  Prints min and median of each side and B/A of medians.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "podgen.h"
#include "watchcache.h"

typedef struct lib {
    void *h;
    wcache_code (*create)(wcache_cache **, const wcache_allocator *);
    wcache_code (*set_param)(wcache_cache *, wcache_param, int64_t);
    wcache_code (*open)(wcache_cache *);
    wcache_code (*put)(wcache_cache *, const void *, size_t, const void *, size_t, int64_t);
    wcache_code (*changes)(wcache_cache *, const wcache_change *, size_t, size_t *);
    wcache_code (*vcreate)(wcache_cache *, wcache_view **);
    wcache_code (*vbegin)(wcache_view *, int64_t);
    wcache_code (*vget)(wcache_view *, const void *, size_t, wcache_kv *);
    wcache_code (*vget_many)(wcache_view *, const void *const *, const size_t *, size_t,
                             wcache_kv *, wcache_code *);
    wcache_code (*vlist)(wcache_view *, const wcache_list_opts *, wcache_kv *, size_t,
                         wcache_list_result *);
    int64_t (*rev)(const wcache_cache *);
    wcache_cache *c;
} lib;

#define SYM(f, n)                          \
    do {                                   \
        *(void **)&L->f = dlsym(L->h, n);  \
        if (!L->f) {                       \
            fprintf(stderr, "no %s\n", n); \
            exit(1);                       \
        }                                  \
    } while (0)

static void fail(const char *what)
{
    fprintf(stderr, "ab_core: %s failed\n", what);
    exit(1);
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    if (!p)
        fail("malloc");
    return p;
}

static void load(lib *L, const char *path)
{
    L->h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!L->h) {
        fprintf(stderr, "%s\n", dlerror());
        exit(1);
    }
    SYM(create, "wcache_cache_create");
    SYM(set_param, "wcache_cache_set_param");
    SYM(open, "wcache_cache_open");
    SYM(put, "wcache_ingest_put");
    SYM(changes, "wcache_ingest_changes");
    SYM(vcreate, "wcache_view_create");
    SYM(vbegin, "wcache_view_begin");
    SYM(vget, "wcache_view_get");
    SYM(vget_many, "wcache_view_get_many");
    SYM(vlist, "wcache_view_list");
    SYM(rev, "wcache_cache_revision");
    /* as bench_core: the last 10,000 revisions kept, no age bound */
    if (L->create(&L->c, NULL) || L->set_param(L->c, WCACHE_P_RETAIN_REVISIONS, 10000) ||
        L->set_param(L->c, WCACHE_P_RETAIN_SECONDS, 0) || L->open(L->c))
        fail("opening a cache");
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int dcmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

#define CH 4096
static char *arena;
static size_t koff[CH], klen[CH], voff[CH], vlen[CH];

static void gen(const podgen *g, const uint64_t *idx, const uint64_t *gn, int64_t rev0,
                size_t m)
{
    size_t off = 0;
    for (size_t k = 0; k < m; k++) {
        koff[k] = off;
        klen[k] = podgen_key(g, idx[k], arena + off, PODGEN_KEY_MAX);
        off += klen[k];
        voff[k] = off;
        vlen[k] = podgen_pod(g, idx[k], gn[k], rev0 + (int64_t)k, arena + off, PODGEN_POD_MAX);
        off += vlen[k];
    }
}

static double apply(lib *L, size_t m, int64_t rev0, int batch)
{
    double t = now();
    if (!batch) {
        for (size_t k = 0; k < m; k++)
            if (L->put(L->c, arena + koff[k], klen[k], arena + voff[k], vlen[k],
                       rev0 + (int64_t)k))
                fail("wcache_ingest_put");
    } else {
        static wcache_change x[CH];
        for (size_t k = 0; k < m; k++)
            x[k] = (wcache_change){WCACHE_CHANGE_PUT, arena + koff[k], klen[k],
                                   arena + voff[k],   vlen[k],         rev0 + (int64_t)k};
        t = now();
        for (size_t k = 0; k < m; k += 64) {
            size_t done;
            if (L->changes(L->c, x + k, m - k < 64 ? m - k : 64, &done))
                fail("wcache_ingest_changes");
        }
    }
    return now() - t;
}

#define MAXR 64
static void report(const char *what, double a[][MAXR], int r, const char *unit)
{
    qsort(a[0], r, sizeof(double), dcmp);
    qsort(a[1], r, sizeof(double), dcmp);
    printf("%-14s A min %8.2f med %8.2f | B min %8.2f med %8.2f %s | B/A med %.3f\n", what,
           a[0][0], a[0][r / 2], a[1][0], a[1][r / 2], unit, a[1][r / 2] / a[0][r / 2]);
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc < 6) {
        fprintf(stderr, "usage: ab_core A.so B.so N UPDATES ROUNDS [PHASES]\n");
        return 2;
    }
    lib L[2];
    uint64_t n = strtoull(argv[3], 0, 10), u = strtoull(argv[4], 0, 10);
    int rounds = atoi(argv[5]);
    const char *what = argc > 6 ? argv[6] : "ugl";
    if (rounds > MAXR)
        rounds = MAXR;
    load(&L[0], argv[1]);
    load(&L[1], argv[2]);
    podgen g;
    podgen_init(&g, 42);
    arena = xmalloc((size_t)CH * (PODGEN_KEY_MAX + PODGEN_POD_MAX));
    uint64_t idx[CH], gn[CH];
    double lt[2] = {0, 0};
    for (uint64_t b = 0; b < n; b += CH) {
        size_t m = n - b < CH ? n - b : CH;
        for (size_t k = 0; k < m; k++)
            idx[k] = b + k, gn[k] = 1;
        gen(&g, idx, gn, (int64_t)b + 1, m);
        for (int l = 0; l < 2; l++)
            lt[l] += apply(&L[l], m, (int64_t)b + 1, 0);
    }
    printf("load ns        A %8.2f | B %8.2f ns | B/A %.3f\n", lt[0] * 1e9 / n, lt[1] * 1e9 / n,
           lt[1] / lt[0]);
    podgen_rng r = {0x5eed0f10adull};
    double res[2][MAXR];
    int ru = 0, rb = 0;
    double resb[2][MAXR];
    for (uint64_t d = 0; d < u; d += CH) {
        size_t m = u - d < CH ? (size_t)(u - d) : CH;
        int64_t cur = L[0].rev(L[0].c);
        for (size_t k = 0; k < m; k++)
            idx[k] = podgen_next(&r) % n, gn[k] = (uint64_t)(cur + (int64_t)k + 1);
        gen(&g, idx, gn, cur + 1, m);
        int batch = (d / CH) & 1;
        double t[2];
        for (int l = 0; l < 2; l++)
            t[l] = apply(&L[l], m, cur + 1, batch);
        if (!batch && ru < MAXR) {
            res[0][ru] = t[0] * 1e9 / m, res[1][ru] = t[1] * 1e9 / m;
            ru++;
        } else if (batch && rb < MAXR) {
            resb[0][rb] = t[0] * 1e9 / m, resb[1][rb] = t[1] * 1e9 / m;
            rb++;
        }
    }
    if (strchr(what, 'u') && ru) {
        report("update ns", res, ru, "ns");
        report("update64 ns", resb, rb, "ns");
    }
    wcache_view *v[2];
    wcache_kv *items = xmalloc((n + 1) * sizeof *items);
    if (strchr(what, 'g')) {
        for (int l = 0; l < 2; l++)
            L[l].vcreate(L[l].c, &v[l]), L[l].vbegin(v[l], 0);
        char **kp = xmalloc(200000 * sizeof *kp);
        size_t *kl = xmalloc(200000 * sizeof *kl);
        for (int i = 0; i < 200000; i++) {
            uint64_t j = podgen_next(&r) % n;
            kp[i] = xmalloc(PODGEN_KEY_MAX);
            kl[i] = podgen_key(&g, j, kp[i], PODGEN_KEY_MAX);
        }
        for (int q = 0; q < rounds; q++)
            for (int l0 = 0; l0 < 2; l0++) {
                int l = (q & 1) ? 1 - l0 : l0;
                double t = now();
                uint64_t sum = 0;
                for (int i = 0; i < 200000; i++) {
                    wcache_kv kv;
                    if (L[l].vget(v[l], kp[i], kl[i], &kv))
                        fail("wcache_view_get");
                    sum += kv.value_len;
                }
                res[l][q] = (now() - t) * 1e9 / 200000;
                if (!sum)
                    fail("GET read no bytes");
            }
        report("get ns", res, rounds, "ns");
        for (int q = 0; q < rounds; q++) /* wcache_view_get_many, 64 keys a call */
            for (int l0 = 0; l0 < 2; l0++) {
                int l = (q & 1) ? 1 - l0 : l0;
                double t = now();
                uint64_t sum = 0;
                for (int i = 0; i + 64 <= 200000; i += 64) {
                    wcache_kv kv[64];
                    wcache_code codes[64];
                    if (L[l].vget_many(v[l], (const void *const *)(kp + i), kl + i, 64, kv,
                                       codes))
                        fail("wcache_view_get_many");
                    for (int j = 0; j < 64; j++)
                        sum += codes[j] == WCACHE_OK ? kv[j].value_len : 0;
                }
                res[l][q] = (now() - t) * 1e9 / (200000 / 64 * 64);
                if (!sum)
                    fail("get_many read no bytes");
            }
        report("get_many ns", res, rounds, "ns");
    }
    if (strchr(what, 'l')) {
        for (int old = 0; old < 2; old++) {
            int64_t rv = old ? L[0].rev(L[0].c) - 5000 : 0;
            for (int l = 0; l < 2; l++)
                L[l].vcreate(L[l].c, &v[l]), L[l].vbegin(v[l], rv);
            for (int q = 0; q < rounds; q++)
                for (int l0 = 0; l0 < 2; l0++) {
                    int l = (q & 1) ? 1 - l0 : l0;
                    wcache_list_opts o = {.size = sizeof o};
                    wcache_list_result lr = {.size = sizeof lr};
                    double t = now();
                    if (L[l].vlist(v[l], &o, items, n + 1, &lr) || lr.count != n)
                        fail("LIST of everything");
                    res[l][q] = (now() - t) * 1e9 / n;
                }
            report(old ? "list old ns" : "list latest ns", res, rounds, "ns");
            /* prefix list */
            for (int q = 0; q < rounds; q++)
                for (int l0 = 0; l0 < 2; l0++) {
                    int l = (q & 1) ? 1 - l0 : l0;
                    wcache_list_opts o = {
                        .size = sizeof o, .prefix = "/registry/pods/", .prefix_len = 15};
                    wcache_list_result lr = {.size = sizeof lr};
                    double t = now();
                    if (L[l].vlist(v[l], &o, items, n + 1, &lr) || lr.count != n)
                        fail("LIST of the prefix");
                    res[l][q] = (now() - t) * 1e9 / n;
                }
            report(old ? "plist old ns" : "plist latest ns", res, rounds, "ns");
        }
    }
    return 0;
}
