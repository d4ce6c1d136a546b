/*
 * bench_index - indexed LIST of one node's pods among N (issue 3's target:
 * 30 pods among 1M in under 5 us), on pod objects from podgen.h.
 *
 * Usage: bench_index [-x] [-q QUERIES] [-s SEED] [N]
 *   N        pods (default 1000000)
 *   QUERIES  timed LISTs per index (default 20000), each of a random value
 *   -x       no index: the load rate and peak RSS to compare with
 *
 * Build (as bench/run.sh builds bench_core):
 *   make lib && cc -std=c11 -O2 -g -Iinclude -Ibench -o bench/build/bench_index \
 *     bench/bench_index.c lib/libwatchcache.a -lzstd -lcurl -ljansson -lyaml \
 *     -lxxhash -lpthread -lm
 *
 * Two indexes are measured on the same cache:
 *   node  wcache_cache_add_index_json on spec.nodeName.  podgen spreads pods
 *         over 2000 nodes, so at 1M pods a node has ~500 of them, not 30.
 *   slot  a custom extractor giving each pod one of N/30 synthetic node
 *         names (a hash of its key), ~30 pods per value (Poisson): the
 *         issue's case of a cluster with 30 pods per node.
 * Pods are ingested one put per revision (the index is maintained on the
 * write path); then, through one view kept pinned at the latest revision,
 * each query LISTs every object of a random value in one page (limit
 * 4096) and is timed alone with CLOCK_MONOTONIC.  Output: one line per
 * metric, "metric<TAB>N<TAB>value<TAB>unit", as bench_core prints.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "podgen.h"
#include "watchcache.h"

#define BENCH_NAME "bench_index"
#include "bench.h"

#define SEED_PODS 0x5eed0f10adull
#define PAGE 4096
#define PER_SLOT 30

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t fnv1a(const void *p, size_t n)
{
    const unsigned char *s = p;
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ s[i]) * 0x100000001b3ull;
    return h;
}

/* "slot-<hash of the key mod slots>": the value lives in a static buffer,
 * valid until the next call (calls never overlap: see wcache_index_fn). */
static int slot_of(const void *key, size_t klen, const void *val, size_t vlen, const void **out,
                   size_t *olen, void *ud)
{
    static char buf[32];
    (void)val, (void)vlen;
    uint64_t slots = *(const uint64_t *)ud;
    int n =
        snprintf(buf, sizeof buf, "slot-%llu", (unsigned long long)(fnv1a(key, klen) % slots));
    *out = buf;
    *olen = (size_t)n;
    return 1;
}

/* The nodeName podgen writes for node number node (see podgen_pod). */
static size_t node_name(uint64_t node, char *buf, size_t cap)
{
    podgen_buf b = {buf, 0, cap};
    pg_str(&b, "ip-10-");
    pg_u64(&b, node / 250), pg_str(&b, "-");
    pg_u64(&b, node % 250), pg_str(&b, "-");
    pg_u64(&b, 1 + node % PG_COUNT(podgen_zones));
    pg_str(&b, ".ec2.internal");
    return b.len;
}

static void load(wcache_cache *c, const podgen *g, uint64_t n)
{
    char key[PODGEN_KEY_MAX], pod[PODGEN_POD_MAX];
    double t0 = now();
    for (uint64_t i = 0; i < n; i++) {
        size_t kl = podgen_key(g, i, key, sizeof key);
        size_t vl = podgen_pod(g, i, 1, (int64_t)i + 1, pod, sizeof pod);
        check(wcache_ingest_put(c, key, kl, pod, vl, (int64_t)i + 1), "ingest_put");
    }
    metric("index_load_rate", (double)n / (now() - t0), "puts/s");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef void (*value_fn)(uint64_t pick, char *buf, size_t *len);

static uint64_t SLOTS;

static void pick_node(uint64_t pick, char *buf, size_t *len)
{
    *len = node_name(pick % 2000, buf, 64);
}

static void pick_slot(uint64_t pick, char *buf, size_t *len)
{
    *len = (size_t)snprintf(buf, 64, "slot-%llu", (unsigned long long)(pick % SLOTS));
}

/* Time q LISTs of random values of index id through view v. */
static void list_bench(wcache_view *v, int id, const char *name, value_fn pick, uint64_t q)
{
    wcache_kv *items = malloc(PAGE * sizeof *items);
    double *ns = malloc(q * sizeof *ns);
    podgen_rng r = {SEED_PODS ^ (uint64_t)id};
    uint64_t matched = 0;
    if (!items || !ns)
        exit(1);
    for (uint64_t i = 0; i < q; i++) {
        char val[64];
        size_t len;
        pick(podgen_next(&r), val, &len);
        wcache_list_result res = {.size = sizeof res};
        double t0 = now();
        check(wcache_view_list_index(v, id, val, len, NULL, items, PAGE, &res), "list_index");
        ns[i] = (now() - t0) * 1e9;
        if (res.more) {
            fprintf(stderr, "bench_index: a value has more than %d objects\n", PAGE);
            exit(1);
        }
        matched += res.count;
    }
    qsort(ns, q, sizeof *ns, cmp_double);
    char m[64];
    snprintf(m, sizeof m, "index_list_%s_p50", name);
    metric(m, ns[q / 2] / 1000, "us");
    snprintf(m, sizeof m, "index_list_%s_p99", name);
    metric(m, ns[q * 99 / 100] / 1000, "us");
    snprintf(m, sizeof m, "index_list_%s_matches", name);
    metric(m, (double)matched / (double)q, "objects");
    free(items);
    free(ns);
}

int main(int argc, char **argv)
{
    uint64_t q = 20000, seed = 1;
    int opt, noindex = 0;
    while ((opt = getopt(argc, argv, "xq:s:")) != -1) {
        if (opt == 'x')
            noindex = 1;
        else if (opt == 'q')
            q = strtoull(optarg, NULL, 10);
        else if (opt == 's')
            seed = strtoull(optarg, NULL, 10);
        else
            return 2;
    }
    n_objects = optind < argc ? strtoull(argv[optind], NULL, 10) : 1000000;
    SLOTS = n_objects / PER_SLOT ? n_objects / PER_SLOT : 1;
    podgen g;
    podgen_init(&g, seed);

    wcache_cache *c;
    int node_id, slot_id;
    check(wcache_cache_create(&c, NULL), "cache_create");
    check(wcache_cache_set_param(c, WCACHE_P_RETAIN_REVISIONS, 10000), "retain");
    check(wcache_cache_set_param(c, WCACHE_P_RETAIN_SECONDS, 0), "retain seconds");
    if (!noindex) {
        check(wcache_cache_add_index_json(c, "node", 4, "spec.nodeName", 13, &node_id),
              "index");
        check(wcache_cache_add_index(c, "slot", 4, slot_of, &SLOTS, &slot_id), "index");
    }
    check(wcache_cache_open(c), "cache_open");
    load(c, &g, n_objects);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    metric("index_peak_rss", (double)ru.ru_maxrss / 1024.0, "MiB");
    if (noindex) {
        wcache_cache_close(c);
        return 0;
    }
    wcache_index_stat st = {.size = sizeof st};
    check(wcache_cache_index_stat(c, node_id, &st), "index_stat");
    metric("index_node_values", (double)st.values, "values");
    check(wcache_cache_index_stat(c, slot_id, &st), "index_stat");
    metric("index_slot_values", (double)st.values, "values");

    wcache_view *v;
    check(wcache_view_create(c, &v), "view_create");
    check(wcache_view_begin(v, WCACHE_REV_LATEST), "view_begin");
    list_bench(v, slot_id, "slot", pick_slot, q);
    list_bench(v, node_id, "node", pick_node, q);
    wcache_view_free(v);
    wcache_cache_close(c);
    return 0;
}
