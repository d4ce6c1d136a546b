/*
 * bench_grow - what the heap does when every object grows for good, as a
 * pod does when its status is written: N objects are put, then every one
 * is updated three times with a value GROW bytes larger than at the load
 * (10,000 revisions kept), and RSS is read after the load and at the end.
 *
 * Usage: bench_grow [N [GROW]]   (defaults 1000000 and 200)
 * Build: cc -std=c11 -O2 -Iinclude -o bench/build/bench_grow bench/bench_grow.c \
 *            lib/libwatchcache.a -lzstd -lcurl -ljansson -lyaml -lxxhash -lpthread -lm
 *
 * Output: "metric<TAB>N<TAB>value<TAB>unit" lines, as bench_core's.  Raw
 * bytes are the keys and values live at the end.  Values are ~1,000-1,063
 * bytes of filler (sizes vary with the key, so that many size classes are
 * in use); their content does not matter to the heap.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "watchcache.h"

static long rss_bytes(void)
{
    long pages = 0, res = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &res) != 2)
            res = 0;
        fclose(f);
    }
    return res * 4096;
}

static void check(wcache_code rc, const char *what)
{
    if (rc != WCACHE_OK) {
        fprintf(stderr, "bench_grow: %s: %s\n", what, wcache_strerror(rc));
        exit(1);
    }
}

static int key_of(char *key, size_t cap, int i)
{
    return snprintf(key, cap, "/registry/pods/ns-%03d/pod-%07d", i % 100, i);
}

int main(int argc, char **argv)
{
    int n = argc > 1 ? atoi(argv[1]) : 1000000;
    int grow = argc > 2 ? atoi(argv[2]) : 200;
    if (n < 1 || grow < 0 || grow > 2000) {
        fprintf(stderr, "usage: bench_grow [N [GROW (0-2000)]]\n");
        return 2;
    }
    wcache_cache *c;
    check(wcache_cache_create(&c, NULL), "cache_create");
    check(wcache_cache_set_param(c, WCACHE_P_RETAIN_REVISIONS, 10000), "retain");
    check(wcache_cache_set_param(c, WCACHE_P_RETAIN_SECONDS, 0), "retain seconds");
    check(wcache_cache_open(c), "cache_open");
    static char val[4096];
    for (size_t i = 0; i < sizeof val; i++)
        val[i] = (char)('a' + i * 7 % 26);
    char key[64];
    int64_t rev = 0;
    double raw = 0;
    for (int i = 0; i < n; i++) {
        int kl = key_of(key, sizeof key, i);
        check(wcache_ingest_put(c, key, (size_t)kl, val, 1000 + (size_t)(i % 64), ++rev), "put");
    }
    long loaded = rss_bytes();
    for (int round = 0; round < 3; round++)
        for (int i = 0; i < n; i++) {
            int kl = key_of(key, sizeof key, i);
            size_t vl = 1000 + (size_t)grow + (size_t)(i % 64);
            val[0] = (char)('A' + round);
            check(wcache_ingest_put(c, key, (size_t)kl, val, vl, ++rev), "update");
            if (round == 2)
                raw += (double)kl + (double)vl;
        }
    long end = rss_bytes();
    printf("rss_after_load\t%d\t%ld\tbytes\n", n, loaded);
    printf("rss_end\t%d\t%ld\tbytes\n", n, end);
    printf("raw_bytes\t%d\t%.0f\tbytes\n", n, raw);
    printf("rss_over_raw\t%d\t%.3f\tratio\n", n, (double)end / raw);
    wcache_cache_close(c);
    return 0;
}
