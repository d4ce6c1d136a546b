/*
 * wb_slab.c - where versions' memory comes from (lib/alloc.c, lib/ingest.c).
 *
 * wci_slab_fit_w may hand out a free object larger than asked for, and a
 * key's first version is given room to grow.  What matters is that the
 * size the memory was taken with is the size it is freed with (or an
 * object would go back to the wrong list and later be handed out larger
 * than it is), and that the room really lets the next version reuse it.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wcache_int.h" /* before testutil.h: its wci_alloc helpers */
#include "testutil.h"

static tu_alloc_state ST;
static wci_alloc AL;

static void setup(void)
{
    AL = tu_wci_alloc(&ST);
}

static void teardown(void)
{
    tu_wci_alloc_done(&ST);
}

START_TEST(test_fit_exact_then_larger)
{
    wci_slab *s = wci_slab_create(&AL, false, 16);
    ck_assert_ptr_nonnull(s);
    size_t got;
    /* nothing free: a new object of `want` bytes, rounded to the grain */
    void *a = wci_slab_fit_w(s, 100, 110, 170, &got);
    ck_assert_ptr_nonnull(a);
    ck_assert_uint_eq(got, 112);
    void *b = wci_slab_fit_w(s, 100, 100, 100, &got);
    ck_assert_uint_eq(got, 112);
    void *big = wci_slab_alloc_w(s, 160);
    wci_slab_free_w(s, big, 160);
    /* free: one of 160; a request for 100..150 does not reach it */
    void *c = wci_slab_fit_w(s, 100, 100, 150, &got);
    ck_assert_ptr_ne(c, big);
    ck_assert_uint_eq(got, 112);
    /* ... and one for 100..160 takes it, and says how large it is */
    void *d = wci_slab_fit_w(s, 100, 100, 160, &got);
    ck_assert_ptr_eq(d, big);
    ck_assert_uint_eq(got, 160);
    memset(d, 0xab, got); /* all of it is the caller's (ASan checks) */
    /* smallest first: with 112 and 160 both free, 112 is taken */
    wci_slab_free_w(s, d, got);
    wci_slab_free_w(s, c, 112);
    void *e = wci_slab_fit_w(s, 100, 100, 160, &got);
    ck_assert_ptr_eq(e, c);
    ck_assert_uint_eq(got, 112);
    wci_slab_free_w(s, e, got);
    wci_slab_free_w(s, a, 112);
    wci_slab_free_w(s, b, 112);
    wci_slab_destroy(s);
}
END_TEST

/* Objects freed by other threads' calls are found too. */
START_TEST(test_fit_shared)
{
    wci_slab *s = wci_slab_create(&AL, false, 16);
    ck_assert_ptr_nonnull(s);
    size_t got;
    void *x = wci_slab_alloc(s, 200);
    wci_slab_free(s, x, 200); /* on the shared lists */
    void *y = wci_slab_fit_w(s, 180, 180, 240, &got);
    ck_assert_ptr_eq(y, x);
    ck_assert_uint_eq(got, 208);
    void *z = wci_slab_fit(s, 180, 180, 240, &got); /* nothing free: new */
    ck_assert_ptr_ne(z, x);
    ck_assert_uint_eq(got, 192);
    wci_slab_free(s, y, 208);
    void *w = wci_slab_fit(s, 180, 180, 240, &got);
    ck_assert_ptr_eq(w, x);
    ck_assert_uint_eq(got, 208);
    wci_slab_free_w(s, w, got);
    wci_slab_free(s, z, 192);
    wci_slab_destroy(s);
}
END_TEST

/* Sizes above the slab's are the allocator's own: got is n, no room. */
START_TEST(test_fit_large)
{
    wci_slab *s = wci_slab_create(&AL, false, 16);
    ck_assert_ptr_nonnull(s);
    size_t got;
    void *p = wci_slab_fit_w(s, WCI_SLAB_MAX - 8, WCI_SLAB_MAX + 200, WCI_SLAB_MAX + 300, &got);
    ck_assert_ptr_nonnull(p);
    ck_assert_uint_eq(got, WCI_SLAB_MAX); /* no room, rounded to the grain */
    wci_slab_free_w(s, p, got);
    void *q = wci_slab_fit_w(s, WCI_SLAB_MAX + 1, WCI_SLAB_MAX + 1, WCI_SLAB_MAX + 99, &got);
    ck_assert_uint_eq(got, WCI_SLAB_MAX + 1);
    wci_slab_free_w(s, q, got);
    wci_slab_destroy(s);
}
END_TEST

static const void *value_of(wcache_cache *c, const char *key, int64_t rev, size_t *len)
{
    wcache_view *v;
    wcache_kv kv;
    ck_assert_int_eq(wcache_view_create(c, &v), WCACHE_OK);
    ck_assert_int_eq(wcache_view_begin(v, rev), WCACHE_OK);
    ck_assert_int_eq(wcache_view_get(v, key, strlen(key), &kv), WCACHE_OK);
    const void *p = kv.value;
    *len = kv.value_len;
    wcache_view_free(v);
    return p;
}

static wcache_cache *open_cache(void)
{
    wcache_cache *c;
    ck_assert_int_eq(wcache_cache_create(&c, NULL), WCACHE_OK);
    ck_assert_int_eq(wcache_cache_set_param(c, WCACHE_P_AUTO_COMPACT, 0), WCACHE_OK);
    ck_assert_int_eq(wcache_cache_open(c), WCACHE_OK);
    return c;
}

/* A first version has room for a slightly larger successor: the memory
 * it leaves at compaction is what another key's grown version reuses. */
START_TEST(test_first_version_room)
{
    static char val[4096];
    memset(val, 'v', sizeof val);
    wcache_cache *c = open_cache();
    size_t len;
    ck_assert_int_eq(wcache_ingest_put(c, "a", 1, val, 1000, 1), WCACHE_OK);
    ck_assert_int_eq(wcache_ingest_put(c, "b", 1, val, 1000, 2), WCACHE_OK);
    const void *a1 = value_of(c, "a", 2, &len);
    ck_assert_uint_eq(len, 1000);
    ck_assert_int_eq(wcache_ingest_put(c, "a", 1, val, 1013, 3), WCACHE_OK);
    ck_assert_int_eq(wcache_cache_compact(c, 3), WCACHE_OK); /* frees a's first */
    /* b grows by 13 bytes: too large for what a first version needs,
     * not for what it was given */
    ck_assert_int_eq(wcache_ingest_put(c, "b", 1, val, 1013, 4), WCACHE_OK);
    ck_assert_ptr_eq(value_of(c, "b", 4, &len), a1);
    ck_assert_uint_eq(len, 1013);
    /* and round trips of every size class keep the lists straight */
    for (int r = 0; r < 2000; r++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", r % 97);
        size_t n = (size_t)(r * 37 % 3000);
        ck_assert_int_eq(wcache_ingest_put(c, k, strlen(k), val, n, 5 + r), WCACHE_OK);
        if (r % 50 == 49)
            ck_assert_int_eq(wcache_cache_compact(c, 5 + r), WCACHE_OK);
    }
    for (int r = 2000 - 97; r < 2000; r++) {
        char k[16];
        snprintf(k, sizeof k, "k%d", r % 97);
        const char *p = value_of(c, k, WCACHE_REV_LATEST, &len);
        ck_assert_uint_eq(len, (size_t)(r * 37 % 3000));
        ck_assert(len == 0 || (p[0] == 'v' && p[len - 1] == 'v'));
    }
    wcache_cache_close(c);
}
END_TEST

/* The version count shares its field with the room: both survive. */
START_TEST(test_version_beside_room)
{
    static char val[2048];
    wcache_cache *c = open_cache();
    for (int64_t r = 1; r <= 300; r++)
        ck_assert_int_eq(wcache_ingest_put(c, "x", 1, val, (size_t)(500 + r), r), WCACHE_OK);
    wcache_view *v;
    wcache_kv kv;
    ck_assert_int_eq(wcache_view_create(c, &v), WCACHE_OK);
    ck_assert_int_eq(wcache_view_begin(v, WCACHE_REV_LATEST), WCACHE_OK);
    ck_assert_int_eq(wcache_view_get(v, "x", 1, &kv), WCACHE_OK);
    ck_assert_int_eq(kv.version, 300);
    ck_assert_int_eq(kv.create_revision, 1);
    wcache_view_free(v);
    /* a source's version above what the field holds is refused */
    wcache_batch *b;
    ck_assert_int_eq(wcache_batch_create(c, &b), WCACHE_OK);
    ck_assert_int_eq(wcache_batch_put_meta(b, "y", 1, val, 3, 5, 7, WCI_VERSION_MAX + 1),
                     WCACHE_EINVAL);
    ck_assert_int_eq(wcache_batch_put_meta(b, "y", 1, val, 3, 5, 7, WCI_VERSION_MAX),
                     WCACHE_OK);
    wcache_batch_free(b);
    wcache_cache_close(c);
}
END_TEST

/*
 * Objects that grow for good leave their old versions' memory free in
 * sizes nothing asks for any more.  When the writer needs a new block
 * while much of the heap is free, the slab merges neighbouring free
 * objects into runs it carves objects of any size from.
 */
enum { NOBJ = 20000 };
static void *OBJ[NOBJ];

static int ptr_cmp(const void *x, const void *y)
{
    uintptr_t a = (uintptr_t) * (void *const *)x, b = (uintptr_t) * (void *const *)y;
    return a < b ? -1 : a > b;
}

/* NOBJ objects of sz bytes, filled, in OBJ; fails if two overlap. */
static void alloc_all(wci_slab *s, size_t sz)
{
    for (int i = 0; i < NOBJ; i++) {
        OBJ[i] = wci_slab_alloc_w(s, sz);
        ck_assert_ptr_nonnull(OBJ[i]);
        memset(OBJ[i], i & 0xff, sz); /* all of it is the caller's (ASan checks) */
    }
    static void *sorted[NOBJ];
    memcpy(sorted, OBJ, sizeof OBJ);
    qsort(sorted, NOBJ, sizeof sorted[0], ptr_cmp);
    for (int i = 1; i < NOBJ; i++)
        ck_assert_msg((char *)sorted[i - 1] + sz <= (char *)sorted[i], "objects overlap");
    for (int i = 0; i < NOBJ; i++) /* and nothing wrote over them */
        ck_assert_int_eq(((unsigned char *)OBJ[i])[sz - 1], i & 0xff);
}

START_TEST(test_reclaim_runs)
{
    wci_slab *s = wci_slab_create(&AL, false, 8);
    ck_assert_ptr_nonnull(s);
    alloc_all(s, 1000); /* ~20 MB: five blocks */
    long long heap = ST.live_bytes;
    /* all freed, half by the writer and half by other threads */
    for (int i = 0; i < NOBJ; i++)
        if (i % 2)
            wci_slab_free_w(s, OBJ[i], 1000);
        else
            wci_slab_free(s, OBJ[i], 1000);
    /* every object grows by 200 bytes: without reclaiming, 24 MB more */
    alloc_all(s, 1200);
    long long grew = ST.live_bytes - heap;
    ck_assert_msg(grew <= 3 * (4 << 20), "the heap grew by %lld bytes", grew);
    for (int i = 0; i < NOBJ; i++)
        wci_slab_free_w(s, OBJ[i], 1200);
    wci_slab_destroy(s);
}
END_TEST

START_TEST(test_reclaim_keeps_scattered)
{
    wci_slab *s = wci_slab_create(&AL, false, 8);
    ck_assert_ptr_nonnull(s);
    alloc_all(s, 1000);
    /* every other object freed: ~10 MB free, but no two free neighbours */
    static void *freed[NOBJ / 2];
    for (int i = 0; i < NOBJ; i += 2) {
        freed[i / 2] = OBJ[i];
        wci_slab_free_w(s, OBJ[i], 1000);
        OBJ[i] = NULL;
    }
    qsort(freed, NOBJ / 2, sizeof freed[0], ptr_cmp);
    /* larger objects need new blocks: the pass finds no run, and the
     * scattered objects stay on their list for objects of their size */
    static void *big[2000];
    for (int i = 0; i < 2000; i++) {
        big[i] = wci_slab_alloc_w(s, 5000);
        ck_assert_ptr_nonnull(big[i]);
        memset(big[i], 0x5a, 5000);
    }
    long long heap = ST.live_bytes;
    for (int i = 0; i < NOBJ; i += 2) {
        OBJ[i] = wci_slab_alloc_w(s, 1000);
        ck_assert_ptr_nonnull(bsearch(&OBJ[i], freed, NOBJ / 2, sizeof freed[0], ptr_cmp));
        memset(OBJ[i], 0x33, 1000);
    }
    ck_assert_int_eq(ST.live_bytes, heap);
    for (int i = 0; i < 2000; i++)
        wci_slab_free_w(s, big[i], 5000);
    for (int i = 0; i < NOBJ; i++)
        wci_slab_free_w(s, OBJ[i], 1000);
    wci_slab_destroy(s);
}
END_TEST

/* Random allocations and frees (by the writer and by other threads) whose
 * sizes drift upwards, so that free memory keeps being stranded and
 * reclaimed: every live object keeps the bytes it was filled with, and the
 * heap stays within 2.2 times the most memory ever live (2.85 without
 * reclaiming, 1.6 with it, at the default seed). */
typedef struct robj {
    unsigned char *p;
    size_t n;
} robj;

static void check_fill(const robj *o)
{
    unsigned char t = (unsigned char)((uintptr_t)o->p >> 4);
    ck_assert(o->p[0] == t && o->p[o->n / 2] == t && o->p[o->n - 1] == t);
}

START_TEST(test_reclaim_random)
{
    wci_slab *s = wci_slab_create(&AL, false, 8);
    ck_assert_ptr_nonnull(s);
    uint64_t seed = tu_seed(0x5eed51ab);
    tu_rng r = {seed};
    enum { SLOTS = 20000 };
    static robj live[SLOTS];
    memset(live, 0, sizeof live);
    long ops = tu_long() ? 4000000 : getenv("WCACHE_VALGRIND") ? 150000 : 600000;
    size_t now = 0, most = 0;
    long long heap_most = 0;
    for (long i = 0; i < ops; i++) {
        robj *o = &live[tu_below(&r, SLOTS)];
        if (o->p) {
            check_fill(o);
            if (tu_below(&r, 2))
                wci_slab_free_w(s, o->p, o->n);
            else
                wci_slab_free(s, o->p, o->n);
            now -= o->n;
            o->p = NULL;
            continue;
        }
        /* 300..1300 bytes at the start, 3,300..4,300 at the end */
        o->n = 300 + (size_t)(3000 * i / ops) + tu_below(&r, 1000);
        o->p = wci_slab_alloc_w(s, o->n);
        ck_assert_ptr_nonnull(o->p);
        memset(o->p, (unsigned char)((uintptr_t)o->p >> 4), o->n);
        now += o->n;
        most = now > most ? now : most;
        heap_most = ST.live_bytes > heap_most ? ST.live_bytes : heap_most;
    }
    for (int i = 0; i < SLOTS; i++)
        if (live[i].p) {
            check_fill(&live[i]);
            wci_slab_free_w(s, live[i].p, live[i].n);
        }
    ck_assert_msg(heap_most < (long long)most * 22 / 10,
                  "seed %#llx: heap %lld for %zu live at most", (unsigned long long)seed,
                  heap_most, most);
    wci_slab_destroy(s);
}
END_TEST

/* Through a cache: every object grows by 200 bytes, three times over;
 * the heap grows by far less than the new versions, and every value reads
 * back as written. */
START_TEST(test_reclaim_cache_growth)
{
    tu_alloc_state st = {.fail_at = -1};
    wcache_allocator al = tu_allocator(&st);
    wcache_cache *c;
    ck_assert_ok(wcache_cache_create(&c, &al));
    ck_assert_ok(wcache_cache_set_param(c, WCACHE_P_RETAIN_REVISIONS, 1000));
    ck_assert_ok(wcache_cache_set_param(c, WCACHE_P_RETAIN_SECONDS, 0));
    ck_assert_ok(wcache_cache_open(c));
    enum { N = 40000 };
    static char val[2048];
    char key[32];
    int64_t rev = 0;
    for (int i = 0; i < N; i++) {
        int kl = snprintf(key, sizeof key, "/p/%06d", i);
        memset(val, 'a' + i % 26, 1000);
        ck_assert_ok(wcache_ingest_put(c, key, (size_t)kl, val, 1000, ++rev));
    }
    long long loaded = st.live_bytes;
    for (int round = 1; round <= 3; round++)
        for (int i = 0; i < N; i++) {
            int kl = snprintf(key, sizeof key, "/p/%06d", i);
            size_t vl = 1000 + 200 * (size_t)round;
            memset(val, 'a' + (i + round) % 26, vl);
            ck_assert_ok(wcache_ingest_put(c, key, (size_t)kl, val, vl, ++rev));
        }
    /* without reclaiming, each round's versions took new memory: 4.2x the
     * heap after the load; with it 1.8x */
    ck_assert_msg(st.live_bytes < loaded * 2, "%lld bytes after the load, %lld after", loaded,
                  st.live_bytes);
    wcache_view *v;
    ck_assert_ok(wcache_view_create(c, &v));
    ck_assert_ok(wcache_view_begin(v, 0));
    for (int i = 0; i < N; i++) {
        int kl = snprintf(key, sizeof key, "/p/%06d", i);
        wcache_kv kv;
        ck_assert_ok(wcache_view_get(v, key, (size_t)kl, &kv));
        ck_assert_uint_eq(kv.value_len, 1600);
        const char *b = kv.value;
        ck_assert(b[0] == 'a' + (i + 3) % 26 && b[1599] == b[0]);
    }
    wcache_view_free(v);
    wcache_cache_close(c);
    ck_assert_int_eq(st.live, 0);
}
END_TEST

Suite *slab_suite(void)
{
    Suite *s = suite_create("slab");
    TCase *tc = tcase_create("fit");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_fit_exact_then_larger);
    tcase_add_test(tc, test_fit_shared);
    tcase_add_test(tc, test_fit_large);
    tcase_add_test(tc, test_first_version_room);
    tcase_add_test(tc, test_version_beside_room);
    suite_add_tcase(s, tc);
    tc = tcase_create("reclaim");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_reclaim_runs);
    tcase_add_test(tc, test_reclaim_keeps_scattered);
    tcase_add_test(tc, test_reclaim_cache_growth);
    tcase_add_test(tc, test_reclaim_random);
    suite_add_tcase(s, tc);
    return s;
}
