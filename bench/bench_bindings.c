/*
 * bench_bindings - the C side of the binding overhead benchmark: GET and
 * LIST per call, the same workloads as examples/go/bench_test.go
 * (TestCPUCost) and examples/rust/examples/bench_bindings.rs, so that the
 * figures compare.  bench/bindings.sh runs the three and prints the ratios.
 *
 * Usage: bench_bindings SECONDS [PODS_FILE N...]
 *
 * Two workloads, each measured as GET with the value copied out (what the
 * bindings' copying GETs do), GET borrowed, and LIST of a page of 100, in
 * process CPU time per call, best of 3 runs of SECONDS:
 *
 * - "hot": 10000 keys "/registry/pods/ns-XX/pod-NNNNNN" with 256-byte
 *   values, GET of keys in a fixed pseudo-random order (a 64-bit LCG, the
 *   same on every side).  Everything sits in the CPU caches, so this is the
 *   pure per-call overhead.
 * - pods, for each N (ascending): the first N lines of PODS_FILE, which
 *   `podgen_dump 1 COUNT 1` wrote once ("key TAB pod" lines, ~1 KiB pods of
 *   bench/podgen.h).  The three sides read the same file rather than each
 *   porting the generator, so their bytes are the same by construction.
 *   The cache grows from one N to the next (each line is put once per
 *   process, in file order, which is random key order).  GETs walk a
 *   request stream: STREAM_KEYS keys picked uniformly at random with the
 *   LCG (index (x >> 33) % N), copied end to end before the clock starts,
 *   so the harness reads its keys sequentially and the misses measured are
 *   the cache's.  LIST starts from the stream's keys.
 *
 * Output: "workload TAB metric TAB value" lines; values are CPU ns per
 * call, except "check", an FNV-1a hash of every key and value loaded and of
 * the request stream, which bindings.sh compares across the three sides.
 */
#define _POSIX_C_SOURCE 200809L

#include <inttypes.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "watchcache.h"

#define HOT_N 10000
#define HOT_VALUE 256
#define PAGE 100
#define KEY_MAX 128
#define VALUE_MAX 4096
#define STREAM_KEYS (1u << 20)

/* Process CPU time, not wall time: the figures are compared across three
 * programs on a machine that may be shared, and CPU time leaves out the
 * time other processes take (the Go and Rust sides measure the same). */
static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void check(int rc, const char *what)
{
    if (rc != WCACHE_OK) {
        fprintf(stderr, "bench_bindings: %s: %s\n", what, wcache_strerror(rc));
        exit(1);
    }
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n);
    if (!p) {
        fprintf(stderr, "bench_bindings: out of memory\n");
        exit(1);
    }
    return p;
}

static uint64_t lcg(uint64_t *x)
{
    *x = *x * 6364136223846793005ull + 1442695040888963407ull;
    return *x >> 33;
}

static uint64_t fnv(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}

/* The keys of a workload, in the order the GETs ask for them: n keys packed
 * end to end in buf, key q at off[q], off[q + 1] - off[q] bytes. */
typedef struct stream {
    char *buf;
    size_t *off;
    size_t n;
} stream;

static volatile size_t sink;

/* One call of the measured operation, i counting calls. */
typedef void (*op_fn)(wcache_view *v, const stream *s, size_t i);

static void op_get(wcache_view *v, const stream *s, size_t i)
{
    static char buf[VALUE_MAX];
    wcache_kv kv;
    size_t q = i % s->n;
    check(wcache_view_get(v, s->buf + s->off[q], s->off[q + 1] - s->off[q], &kv), "get");
    memcpy(buf, kv.value, kv.value_len);
    sink += (unsigned char)buf[i % kv.value_len];
}

/*
 * The C GET and copy bracketed by the locked read-modify-writes a cgo call
 * makes (Go 1.19: entersyscall's casgstatus and P status store, then
 * exitsyscall's P status CAS and casgstatus; x86 `lock` instructions).
 * Each is a full barrier: the core cannot start the next GET's cache
 * misses while the previous GET's are outstanding, which plain C, with
 * nothing between two GETs, does.  The row shows what the barriers alone
 * cost at each N, beside the bare cgo call's cost in the hot row.
 */
static void op_get_fenced(wcache_view *v, const stream *s, size_t i)
{
    static _Atomic unsigned long word;
    unsigned long e = atomic_load_explicit(&word, memory_order_relaxed);
    atomic_compare_exchange_strong(&word, &e, e + 1);
    atomic_exchange(&word, e + 2);
    op_get(v, s, i);
    e = e + 2;
    atomic_compare_exchange_strong(&word, &e, e + 1);
    e = e + 1;
    atomic_compare_exchange_strong(&word, &e, e + 1);
}

static void op_get_borrow(wcache_view *v, const stream *s, size_t i)
{
    wcache_kv kv;
    size_t q = i % s->n;
    check(wcache_view_get(v, s->buf + s->off[q], s->off[q + 1] - s->off[q], &kv), "get");
    sink += kv.value_len;
}

static void op_list(wcache_view *v, const stream *s, size_t i)
{
    static wcache_kv items[PAGE];
    size_t q = i % s->n;
    wcache_list_opts o = {
        .size = sizeof o, .start = s->buf + s->off[q], .start_len = s->off[q + 1] - s->off[q]};
    wcache_list_result res = {.size = sizeof res};
    check(wcache_view_list(v, &o, items, PAGE, &res), "list");
    sink += res.count;
}

/* Best of 3 runs of `secs` seconds each, in ns per call. */
static double measure(wcache_view *v, const stream *s, op_fn op, double secs)
{
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        size_t calls = 0;
        double t0 = now(), t;
        do {
            for (int j = 0; j < 1000; j++, calls++)
                op(v, s, calls);
            t = now();
        } while (t - t0 < secs);
        double ns = (t - t0) * 1e9 / (double)calls;
        if (ns < best)
            best = ns;
    }
    return best;
}

static void run(wcache_cache *c, const stream *s, const char *label, double secs)
{
    wcache_view *v = NULL;
    check(wcache_view_create(c, &v), "view create");
    check(wcache_view_begin(v, WCACHE_REV_LATEST), "view begin");
    printf("%s\tget\t%.1f\n", label, measure(v, s, op_get, secs));
    printf("%s\tget_fenced\t%.1f\n", label, measure(v, s, op_get_fenced, secs));
    printf("%s\tget_borrowed\t%.1f\n", label, measure(v, s, op_get_borrow, secs));
    printf("%s\tlist100\t%.1f\n", label, measure(v, s, op_list, secs));
    fflush(stdout);
    wcache_view_free(v);
}

static void hot(double secs)
{
    static char keys[HOT_N][KEY_MAX];
    static size_t key_len[HOT_N];
    wcache_cache *c = NULL;
    char value[HOT_VALUE];
    stream s = {xmalloc(HOT_N * KEY_MAX), xmalloc((HOT_N + 1) * sizeof(size_t)), HOT_N};
    uint64_t x = 1;

    for (int i = 0; i < HOT_VALUE; i++)
        value[i] = (char)('a' + i % 26);
    check(wcache_cache_create(&c, NULL), "create");
    check(wcache_cache_open(c), "open");
    for (int i = 0; i < HOT_N; i++) {
        key_len[i] =
            (size_t)snprintf(keys[i], KEY_MAX, "/registry/pods/ns-%02d/pod-%06d", i % 50, i);
        check(wcache_ingest_put(c, keys[i], key_len[i], value, HOT_VALUE, i + 1), "put");
    }
    s.off[0] = 0;
    for (size_t q = 0; q < HOT_N; q++) {
        uint64_t k = lcg(&x) % HOT_N;
        memcpy(s.buf + s.off[q], keys[k], key_len[k]);
        s.off[q + 1] = s.off[q] + key_len[k];
    }
    run(c, &s, "hot", secs);
    wcache_cache_close(c);
    free(s.buf), free(s.off);
}

static void pods(double secs, const char *path, int nc, char **nv)
{
    FILE *f = fopen(path, "r");
    wcache_cache *c = NULL;
    char *line = NULL;
    size_t line_cap = 0, loaded = 0, max_n = 0;
    uint64_t h = 0xcbf29ce484222325ull;
    size_t arena_cap = 1 << 20, arena_len = 0, *koff;
    char *arena;
    stream s = {xmalloc((size_t)STREAM_KEYS * KEY_MAX),
                xmalloc((STREAM_KEYS + 1) * sizeof(size_t)), STREAM_KEYS};

    if (!f) {
        perror(path);
        exit(1);
    }
    for (int a = 0; a < nc; a++)
        if ((size_t)strtoull(nv[a], NULL, 10) > max_n)
            max_n = (size_t)strtoull(nv[a], NULL, 10);
    arena = xmalloc(arena_cap);
    koff = xmalloc((max_n + 1) * sizeof *koff);
    koff[0] = 0;
    check(wcache_cache_create(&c, NULL), "create");
    check(wcache_cache_open(c), "open");
    for (int a = 0; a < nc; a++) {
        size_t n = (size_t)strtoull(nv[a], NULL, 10);
        char label[32];
        uint64_t x = 1, hs = h;
        for (; loaded < n; loaded++) {
            ssize_t len = getline(&line, &line_cap, f);
            char *tab = len > 0 ? memchr(line, '\t', (size_t)len) : NULL;
            if (!tab || line[len - 1] != '\n') {
                fprintf(stderr, "bench_bindings: %s: line %zu: not key TAB value\n", path,
                        loaded + 1);
                exit(1);
            }
            size_t kl = (size_t)(tab - line), vl = (size_t)(line + len - 1 - (tab + 1));
            h = fnv(fnv(h, line, kl), tab + 1, vl);
            check(wcache_ingest_put(c, line, kl, tab + 1, vl, (int64_t)loaded + 1), "put");
            if (arena_len + kl > arena_cap) {
                while (arena_len + kl > arena_cap)
                    arena_cap *= 2;
                if (!(arena = realloc(arena, arena_cap))) {
                    fprintf(stderr, "bench_bindings: out of memory\n");
                    exit(1);
                }
            }
            memcpy(arena + arena_len, line, kl);
            arena_len += kl;
            koff[loaded + 1] = arena_len;
        }
        s.off[0] = 0;
        for (size_t q = 0; q < STREAM_KEYS; q++) {
            uint64_t k = lcg(&x) % n;
            size_t kl = koff[k + 1] - koff[k];
            memcpy(s.buf + s.off[q], arena + koff[k], kl);
            s.off[q + 1] = s.off[q] + kl;
        }
        hs = fnv(h, s.buf, s.off[STREAM_KEYS]);
        snprintf(label, sizeof label, "%zu", n);
        printf("%s\tcheck\t%016" PRIx64 "\n", label, hs);
        run(c, &s, label, secs);
    }
    wcache_cache_close(c);
    fclose(f);
    free(line), free(arena), free(koff), free(s.buf), free(s.off);
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 1.0;
    hot(secs);
    if (argc > 3)
        pods(secs, argv[2], argc - 3, argv + 3);
    return 0;
}
