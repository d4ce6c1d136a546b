/*
 * bench_bindings - the C side of the binding overhead benchmark: GET and
 * LIST per call, the same workload as examples/go/bench_test.go and
 * examples/rust/benches (bench_bindings.rs), so that the figures compare.
 *
 * Usage: bench_bindings [SECONDS]   (default 1; best of 3 runs per metric)
 *
 * Workload: 10000 keys "/registry/pods/ns-XX/pod-NNNNNN" with 256-byte
 * values, one put each; one view pinned at the latest revision; GET of keys
 * in a fixed pseudo-random order (a 64-bit LCG, the same on every side),
 * value copied out (what the bindings' copying Get does); LIST of a page
 * of 100 from a key of that order.
 *
 * Build and run (from the top of the tree, after make):
 *   cc -O2 -Iinclude bench/bench_bindings.c -Llib -lwatchcache \
 *      -Wl,-rpath,$PWD/lib -o bench/build/bench_bindings && bench/build/bench_bindings
 *
 * Output: "metric<TAB>ns/op" lines, in process CPU time per call.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "watchcache.h"

#define N 10000
#define VALUE_BYTES 256
#define PAGE 100
#define KEY_MAX 64

static char keys[N][KEY_MAX];
static size_t key_len[N];
static int order[N];

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

static volatile size_t sink;

/* One call of the measured operation, i counting calls. */
typedef void (*op_fn)(wcache_view *v, long i);

static void op_get(wcache_view *v, long i)
{
    static char buf[VALUE_BYTES];
    wcache_kv kv;
    int k = order[i % N];
    check(wcache_view_get(v, keys[k], key_len[k], &kv), "get");
    memcpy(buf, kv.value, kv.value_len);
    sink += buf[i % VALUE_BYTES];
}

static void op_get_borrow(wcache_view *v, long i)
{
    wcache_kv kv;
    int k = order[i % N];
    check(wcache_view_get(v, keys[k], key_len[k], &kv), "get");
    sink += kv.value_len;
}

static void op_list(wcache_view *v, long i)
{
    static wcache_kv items[PAGE];
    int k = order[i % N];
    wcache_list_opts o = {.size = sizeof o, .start = keys[k], .start_len = key_len[k]};
    wcache_list_result res = {.size = sizeof res};
    check(wcache_view_list(v, &o, items, PAGE, &res), "list");
    sink += res.count;
}

/* Best of 3 runs of `secs` seconds each, in ns per call. */
static double measure(wcache_view *v, op_fn op, double secs)
{
    double best = 1e30;
    for (int r = 0; r < 3; r++) {
        long calls = 0;
        double t0 = now(), t;
        do {
            for (int j = 0; j < 1000; j++, calls++)
                op(v, calls);
            t = now();
        } while (t - t0 < secs);
        double ns = (t - t0) * 1e9 / (double)calls;
        if (ns < best)
            best = ns;
    }
    return best;
}

int main(int argc, char **argv)
{
    double secs = argc > 1 ? atof(argv[1]) : 1.0;
    wcache_cache *c = NULL;
    wcache_view *v = NULL;
    char value[VALUE_BYTES];

    for (int i = 0; i < VALUE_BYTES; i++)
        value[i] = (char)('a' + i % 26);
    check(wcache_cache_create(&c, NULL), "create");
    check(wcache_cache_open(c), "open");
    for (int i = 0; i < N; i++) {
        key_len[i] = (size_t)snprintf(keys[i], KEY_MAX, "/registry/pods/ns-%02d/pod-%06d",
                                      i % 50, i);
        check(wcache_ingest_put(c, keys[i], key_len[i], value, VALUE_BYTES, i + 1), "put");
    }
    uint64_t x = 1;
    for (int i = 0; i < N; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        order[i] = (int)((x >> 33) % N);
    }
    check(wcache_view_create(c, &v), "view create");
    check(wcache_view_begin(v, WCACHE_REV_LATEST), "view begin");
    printf("get\t%.1f\n", measure(v, op_get, secs));
    printf("get_borrowed\t%.1f\n", measure(v, op_get_borrow, secs));
    printf("list100\t%.1f\n", measure(v, op_list, secs));
    wcache_view_free(v);
    wcache_cache_close(c);
    return 0;
}
