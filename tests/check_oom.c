/*
 * check_oom.c - allocation failure ("chaos allocator") tests.
 *
 * jansson's method: run an operation with allocation number N failing, for
 * N = 0, 1, 2, ... until the operation succeeds.  Each refused attempt must
 * return WCACHE_ENOMEM (or, for calls whose documentation lists no ENOMEM,
 * must not fail at all) and must leave everything observable as it was.
 * When the cache is closed, every block it allocated must have been freed
 * (the allocator counts live blocks and rejects foreign or double frees).
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <watchcache.h>

#include "testutil.h"

/* No operation of the core should need more allocations than this. */
#define MAX_FAIL_POINTS 2000

static tu_alloc_state ST;
static wcache_allocator AL;
static wcache_cache *C;
static int64_t REV;

static void oom_setup(void)
{
    memset(&ST, 0, sizeof ST);
    ST.fail_at = -1;
    AL = tu_allocator(&ST);
    ck_assert_ok(wcache_cache_create(&C, &AL));
    ck_assert_ok(wcache_cache_set_param(C, WCACHE_P_AUTO_COMPACT, 0));
    ck_assert_ok(wcache_cache_open(C));
    REV = 0;
}

static void oom_teardown(void)
{
    wcache_cache_close(C);
    C = NULL;
    ck_assert_msg(ST.live == 0, "%ld blocks leaked at close", ST.live);
    ck_assert_int_eq(ST.bad_frees, 0);
}

/* A text of everything readable at rev (latest when 0); allocator disarmed. */
static char *dump(int64_t rev)
{
    long saved = ST.fail_at;
    ST.fail_at = -1;
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    ck_assert_ptr_nonnull(out);
    n += (size_t)snprintf(out, cap, "rev %lld compacted %lld\n",
                          (long long)wcache_cache_revision(C),
                          (long long)wcache_cache_compacted_revision(C));
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, rev));
    static wcache_kv items[2048];
    wcache_list_opts o = {.size = sizeof o};
    wcache_list_result r = {.size = sizeof r};
    ck_assert_ok(wcache_view_list(w, &o, items, 2048, &r));
    ck_assert_int_eq(r.more, 0);
    for (size_t i = 0; i < r.count; i++) {
        if (cap - n < 256 + 2 * (items[i].key_len + items[i].value_len)) {
            cap = cap * 2 + 2 * (items[i].key_len + items[i].value_len);
            out = realloc(out, cap);
            ck_assert_ptr_nonnull(out);
        }
        n += (size_t)snprintf(out + n, cap - n, "%.*s=%.*s c%lld m%lld v%lld\n",
                              (int)items[i].key_len, (const char *)items[i].key,
                              (int)items[i].value_len, (const char *)items[i].value,
                              (long long)items[i].create_revision,
                              (long long)items[i].mod_revision, (long long)items[i].version);
    }
    wcache_view_free(w);
    ST.fail_at = saved;
    return out;
}

static wcache_code put_s(const char *k, const char *v, int64_t rev)
{
    return wcache_ingest_put(C, k, strlen(k), v, strlen(v), rev);
}

static void fill(int n)
{
    for (int i = 0; i < n; i++) {
        char k[16];
        snprintf(k, sizeof k, "base/%04d", i);
        ck_assert_ok(put_s(k, k, ++REV));
    }
}

/*
 * The walk.  OP is evaluated with allocation N failing; a refusal must be
 * ENOMEM caused by an allocation that really failed, with the state dump
 * unchanged; the loop ends at the first success.
 */
#define CHAOS_WALK(OP, WHAT)                                                                   \
    do {                                                                                       \
        char *before_ = dump(0);                                                               \
        long n_;                                                                               \
        for (n_ = 0;; n_++) {                                                                  \
            ck_assert_msg(n_ < MAX_FAIL_POINTS, "%s: no success after %ld failures", WHAT,     \
                          n_);                                                                 \
            tu_alloc_arm(&ST, n_);                                                             \
            long failed0_ = ST.failed;                                                         \
            int rc_ = (int)(OP);                                                               \
            tu_alloc_arm(&ST, -1);                                                             \
            if (rc_ == WCACHE_OK)                                                              \
                break;                                                                         \
            ck_assert_msg(rc_ == WCACHE_ENOMEM, "%s with allocation %ld failing: %s", WHAT,    \
                          n_, wcache_strerror(rc_));                                           \
            ck_assert_msg(ST.failed > failed0_, "%s: ENOMEM with no failed allocation", WHAT); \
            char *after_ = dump(0);                                                            \
            ck_assert_msg(strcmp(before_, after_) == 0,                                        \
                          "%s: state changed by a refused call (allocation %ld):\n"            \
                          "before:\n%.2000s\nafter:\n%.2000s",                                 \
                          WHAT, n_, before_, after_);                                          \
            free(after_);                                                                      \
        }                                                                                      \
        free(before_);                                                                         \
        walk_points += n_;                                                                     \
    } while (0)

static long walk_points; /* failure points visited, to prove the walk ran */

START_TEST(test_oom_create_open)
{
    tu_alloc_state st;
    long n;
    for (n = 0; n < MAX_FAIL_POINTS; n++) {
        memset(&st, 0, sizeof st);
        wcache_allocator a = tu_allocator(&st);
        tu_alloc_arm(&st, n);
        wcache_cache *c = NULL;
        int rc = wcache_cache_create(&c, &a);
        if (rc != WCACHE_OK) {
            ck_assert_wc(rc, WCACHE_ENOMEM);
            ck_assert_msg(st.live == 0, "create failing at %ld leaked %ld blocks", n, st.live);
            continue;
        }
        rc = wcache_cache_open(c);
        int failed = st.failed > 0;
        tu_alloc_arm(&st, -1);
        if (rc != WCACHE_OK) {
            ck_assert_wc(rc, WCACHE_ENOMEM);
            ck_assert_int_eq(wcache_cache_revision(c), 0);
            /* Nothing changed: the cache is still configurable and opens. */
            ck_assert_ok(wcache_cache_set_param(c, WCACHE_P_READER_SLOTS, 8));
            ck_assert_ok(wcache_cache_open(c));
        }
        ck_assert_ok(wcache_ingest_put(c, "k", 1, "v", 1, 1));
        wcache_view *w = NULL;
        ck_assert_ok(wcache_view_create(c, &w));
        ck_assert_ok(wcache_view_begin(w, 1));
        wcache_kv kv;
        ck_assert_ok(wcache_view_get(w, "k", 1, &kv));
        wcache_view_free(w);
        wcache_cache_close(c);
        ck_assert_msg(st.live == 0, "create+open (failing at %ld) leaked %ld blocks", n,
                      st.live);
        ck_assert_int_eq(st.bad_frees, 0);
        if (!failed)
            break; /* the walk went past the last allocation of create+open */
    }
    ck_assert_int_lt(n, MAX_FAIL_POINTS);
    ck_assert_int_gt(n, 0); /* create must allocate something */
}
END_TEST

START_TEST(test_oom_put_delete)
{
    fill(40);
    /* New keys, in numbers that make a growing index resize at some point. */
    for (int i = 0; i < 200; i++) {
        char k[16];
        snprintf(k, sizeof k, "new/%04d", (i * 7) % 200);
        int64_t rev = ++REV;
        CHAOS_WALK(put_s(k, "value", rev), "put of a new key");
    }
    /* Existing keys: a new version. */
    for (int i = 0; i < 20; i++) {
        char k[16];
        snprintf(k, sizeof k, "base/%04d", i);
        int64_t rev = ++REV;
        CHAOS_WALK(put_s(k, "v2", rev), "put of an existing key");
    }
    /* Deletes, then re-creation of the deleted keys. */
    for (int i = 0; i < 20; i++) {
        char k[16];
        snprintf(k, sizeof k, "base/%04d", i);
        int64_t rev = ++REV;
        CHAOS_WALK(wcache_ingest_delete(C, k, strlen(k), rev), "delete");
    }
    for (int i = 0; i < 20; i++) {
        char k[16];
        snprintf(k, sizeof k, "base/%04d", i);
        int64_t rev = ++REV;
        CHAOS_WALK(put_s(k, "v3", rev), "put re-creating a key");
    }
    ck_assert_int_gt(walk_points, 0);
    /* Everything landed exactly once, with the right metadata. */
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    wcache_kv kv;
    ck_assert_ok(wcache_view_get(w, "base/0003", 9, &kv));
    ck_assert_int_eq(kv.version, 1);
    ck_assert_int_eq(kv.create_revision, kv.mod_revision);
    ck_assert_ok(wcache_view_get(w, "base/0030", 9, &kv));
    ck_assert_int_eq(kv.version, 1);
    ck_assert_int_eq(kv.mod_revision, 31);
    ck_assert_ok(wcache_view_get(w, "new/0123", 8, &kv));
    ck_assert_int_eq(kv.version, 1);
    wcache_list_opts o = {.size = sizeof o};
    uint64_t cnt;
    ck_assert_ok(wcache_view_count(w, &o, &cnt));
    ck_assert_uint_eq(cnt, 240);
    wcache_view_free(w);
    ck_assert_int_eq(wcache_cache_revision(C), REV);
}
END_TEST

START_TEST(test_oom_batch)
{
    fill(60); /* every base/ key the batch deletes exists */
    /* Building a batch: a refused add leaves the batch as it was. */
    wcache_batch *b = NULL;
    long n;
    for (n = 0; n < MAX_FAIL_POINTS; n++) {
        long live0 = ST.live;
        tu_alloc_arm(&ST, n);
        int rc = wcache_batch_create(C, &b);
        tu_alloc_arm(&ST, -1);
        if (rc == WCACHE_OK)
            break;
        ck_assert_wc(rc, WCACHE_ENOMEM);
        ck_assert_int_eq(ST.live, live0);
    }
    ck_assert_ptr_nonnull(b);
    for (int i = 0; i < 60; i++) {
        char k[16];
        snprintf(k, sizeof k, "%s/%04d", i % 3 == 0 ? "base" : "bnew", i);
        for (n = 0; n < MAX_FAIL_POINTS; n++) {
            size_t cnt = wcache_batch_count(b);
            tu_alloc_arm(&ST, n);
            int rc = i % 6 == 3 ? wcache_batch_delete(b, k, strlen(k))
                                : wcache_batch_put(b, k, strlen(k), "bv", 2);
            tu_alloc_arm(&ST, -1);
            if (rc == WCACHE_OK)
                break;
            ck_assert_wc(rc, WCACHE_ENOMEM);
            ck_assert_uint_eq(wcache_batch_count(b), cnt);
        }
    }
    ck_assert_uint_eq(wcache_batch_count(b), 60);
    int64_t rev = ++REV;
    CHAOS_WALK(wcache_ingest_batch(C, b, rev), "ingest_batch");
    /* A refused batch did not half-apply, and the winner applied it all. */
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    wcache_kv kv;
    ck_assert_ok(wcache_view_get(w, "bnew/0001", 9, &kv));
    ck_assert_int_eq(kv.mod_revision, rev);
    ck_assert_wc(wcache_view_get(w, "base/0003", 9, &kv), WCACHE_ENOTFOUND);
    ck_assert_ok(wcache_view_get(w, "base/0006", 9, &kv));
    ck_assert_int_eq(kv.version, 2);
    wcache_view_free(w);

    /* A second, failing-by-design batch under chaos: ENOTFOUND or ENOMEM,
     * never a partial apply. */
    wcache_batch_clear(b);
    ck_assert_ok(wcache_batch_put(b, "x1", 2, "v", 1));
    ck_assert_ok(wcache_batch_delete(b, "absent", 6));
    char *before = dump(0);
    for (n = 0; n < 50; n++) {
        tu_alloc_arm(&ST, n);
        int rc = wcache_ingest_batch(C, b, REV + 1);
        tu_alloc_arm(&ST, -1);
        ck_assert_msg(rc == WCACHE_ENOTFOUND || rc == WCACHE_ENOMEM, "bad batch: %s",
                      wcache_strerror(rc));
        char *after = dump(0);
        ck_assert_str_eq(before, after);
        free(after);
    }
    free(before);
    wcache_batch_free(b);
}
END_TEST

START_TEST(test_oom_load)
{
    /* The load needs an empty cache: reopen a fresh one per attempt is not
     * needed, since a refused load must leave it empty. */
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(C, &b));
    for (int i = 0; i < 300; i++) {
        int j = (i * 101) % 300; /* unsorted */
        char k[16];
        snprintf(k, sizeof k, "load/%04d", j);
        ck_assert_ok(wcache_batch_put_meta(b, k, strlen(k), k, strlen(k), 1 + j, 1 + j * 2, 1));
    }
    CHAOS_WALK(wcache_ingest_load(C, b, 1000), "ingest_load");
    wcache_batch_free(b);
    ck_assert_int_eq(wcache_cache_revision(C), 1000);
    ck_assert_int_eq(wcache_cache_compacted_revision(C), 1000);
    char *d = dump(0);
    size_t cap = 64 + 300 * 64, n = 0;
    char *want = malloc(cap);
    n += (size_t)snprintf(want, cap, "rev 1000 compacted 1000\n");
    for (int j = 0; j < 300; j++)
        n += (size_t)snprintf(want + n, cap - n, "load/%04d=load/%04d c%d m%d v1\n", j, j,
                              1 + j, 1 + j * 2);
    ck_assert_msg(strcmp(d, want) == 0, "after load:\n%.400s", d);
    free(want);
    free(d);
    /* Writes on top of the loaded state still work under chaos. */
    REV = 1000;
    int64_t rev = ++REV;
    CHAOS_WALK(put_s("load/0005", "new", rev), "put after load");
}
END_TEST

START_TEST(test_oom_views)
{
    fill(100);
    int64_t mid = REV;
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof k, "base/%04d", i * 2);
        ck_assert_ok(wcache_ingest_delete(C, k, strlen(k), ++REV));
    }
    wcache_view *w = NULL;
    long n;
    for (n = 0; n < MAX_FAIL_POINTS; n++) {
        long live0 = ST.live;
        tu_alloc_arm(&ST, n);
        int rc = wcache_view_create(C, &w);
        tu_alloc_arm(&ST, -1);
        if (rc == WCACHE_OK)
            break;
        ck_assert_wc(rc, WCACHE_ENOMEM);
        ck_assert_int_eq(ST.live, live0);
    }
    ck_assert_ptr_nonnull(w);

    /* begin, get and count document no ENOMEM: they must not fail. */
    for (n = 0; n < 64; n++) {
        tu_alloc_arm(&ST, n);
        int rc = wcache_view_begin(w, mid);
        wcache_kv kv;
        int rg = rc == WCACHE_OK ? (int)wcache_view_get(w, "base/0002", 9, &kv) : -1;
        uint64_t cnt = 0;
        wcache_list_opts o = {.size = sizeof o};
        int rcnt = rc == WCACHE_OK ? (int)wcache_view_count(w, &o, &cnt) : -1;
        tu_alloc_arm(&ST, -1);
        ck_assert_msg(rc == WCACHE_OK, "view_begin with allocation %ld failing: %s", n,
                      wcache_strerror(rc));
        ck_assert_msg(rg == WCACHE_OK, "view_get with allocation %ld failing: %s", n,
                      wcache_strerror(rg));
        ck_assert_msg(rcnt == WCACHE_OK && cnt == 100,
                      "view_count with allocation %ld "
                      "failing: %s, %llu",
                      n, wcache_strerror(rcnt), (unsigned long long)cnt);
        wcache_view_end(w);
    }

    /* Paging with tokens: any page may be refused; the retry (without
     * failures) must return exactly the page the refused call would have. */
    for (int64_t rev = mid; rev <= REV; rev += REV - mid) {
        ck_assert_ok(wcache_view_begin(w, rev));
        size_t seen = 0;
        char *tok = NULL;
        long fail = 0;
        for (int page = 0; page < 1000; page++) {
            wcache_kv items[7];
            wcache_list_opts o = {.size = sizeof o, .prefix = "base/", .prefix_len = 5};
            o.token = tok;
            o.token_len = tok ? strlen(tok) : 0;
            o.count_remaining = page % 2;
            wcache_list_result r = {.size = sizeof r};
            tu_alloc_arm(&ST, fail);
            int rc = wcache_view_list(w, &o, items, 7, &r);
            tu_alloc_arm(&ST, -1);
            if (rc != WCACHE_OK) {
                ck_assert_wc(rc, WCACHE_ENOMEM);
                fail++;
                continue; /* retry the same page with the next failure point */
            }
            fail = 0;
            for (size_t i = 0; i < r.count; i++) {
                char k[16];
                size_t idx = rev == mid ? seen + i : 2 * (seen + i) + 1;
                snprintf(k, sizeof k, "base/%04zu", idx);
                ck_assert_uint_eq(items[i].key_len, 9);
                ck_assert_msg(memcmp(items[i].key, k, 9) == 0,
                              "page %d item %zu: %.9s, want %s", page, i,
                              (const char *)items[i].key, k);
            }
            seen += r.count;
            free(tok);
            tok = r.more ? strdup(r.token) : NULL;
            if (!r.more)
                break;
        }
        ck_assert_uint_eq(seen, rev == mid ? 100 : 50);
        if (rev == REV)
            break;
    }
    wcache_view_free(w);
}
END_TEST

START_TEST(test_oom_compact)
{
    fill(50);
    for (int i = 0; i < 50; i++) {
        char k[16];
        snprintf(k, sizeof k, "base/%04d", i);
        ck_assert_ok(put_s(k, "v2", ++REV));
    }
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    ck_assert_ok(wcache_view_begin(w, 10)); /* pinned below the compactions */
    /* compact documents no ENOMEM: with any allocation failing, it works. */
    for (long n = 0; n < 30; n++) {
        int64_t target = 10 + n * 3;
        tu_alloc_arm(&ST, n);
        int rc = wcache_cache_compact(C, target);
        tu_alloc_arm(&ST, -1);
        ck_assert_msg(rc == WCACHE_OK, "compact(%lld) with allocation %ld failing: %s",
                      (long long)target, n, wcache_strerror(rc));
        ck_assert_int_eq(wcache_cache_compacted_revision(C), target);
    }
    wcache_kv kv;
    ck_assert_ok(wcache_view_get(w, "base/0009", 9, &kv));
    ck_assert_int_eq(kv.mod_revision, 10);
    ck_assert_wc(wcache_view_get(w, "base/0010", 9, &kv), WCACHE_ENOTFOUND);
    wcache_view_free(w);
    /* The progress call documents no ENOMEM either. */
    for (long n = 0; n < 10; n++) {
        tu_alloc_arm(&ST, n);
        int rc = wcache_ingest_progress(C, REV + 1);
        tu_alloc_arm(&ST, -1);
        ck_assert_msg(rc == WCACHE_OK, "progress with allocation %ld failing: %s", n,
                      wcache_strerror(rc));
        REV++;
    }
}
END_TEST

START_TEST(test_oom_auto_compact)
{
    /* Automatic compaction runs inside ingest; a put that triggers it under
     * chaos is refused whole or applied whole. */
    wcache_cache_close(C);
    ck_assert_int_eq(ST.live, 0);
    ck_assert_ok(wcache_cache_create(&C, &AL));
    ck_assert_ok(wcache_cache_set_param(C, WCACHE_P_RETAIN_REVISIONS, 5));
    ck_assert_ok(wcache_cache_set_param(C, WCACHE_P_RETAIN_SECONDS, 0));
    ck_assert_ok(wcache_cache_open(C));
    for (int i = 0; i < 60; i++) {
        char k[16];
        snprintf(k, sizeof k, "ac/%02d", i % 7);
        int64_t rev = ++REV;
        CHAOS_WALK(put_s(k, "v", rev), "put with auto compaction");
        ck_assert_int_le(wcache_cache_compacted_revision(C), REV - 5 > 0 ? REV - 5 : 0);
    }
    ck_assert_int_gt(wcache_cache_compacted_revision(C), 0);
}
END_TEST

START_TEST(test_oom_everything_fails)
{
    /* From some point on every allocation fails: nothing may crash, loop or
     * half-apply; afterwards the cache works normally. */
    fill(20);
    char *before = dump(0);
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(C, &b));
    ck_assert_ok(wcache_batch_put(b, "bx", 2, "v", 1));
    ck_assert_ok(wcache_batch_delete(b, "base/0001", 9));
    wcache_view *w = NULL;
    ck_assert_ok(wcache_view_create(C, &w));
    tu_alloc_arm(&ST, 0);
    ST.fail_all = 1;
    int rc = put_s("zz", "v", REV + 1);
    ck_assert_wc(rc, WCACHE_ENOMEM);
    /* A version may come from memory the cache already holds (alloc.c's
     * free lists); then the put needs no allocation and applies. */
    rc = put_s("base/0002", "v", REV + 1);
    ck_assert_msg(rc == WCACHE_ENOMEM || rc == WCACHE_OK, "put: %s", wcache_strerror(rc));
    if (rc == WCACHE_OK)
        REV++;
    rc = wcache_ingest_delete(C, "base/0003", 9, REV + 1);
    ck_assert_msg(rc == WCACHE_ENOMEM || rc == WCACHE_OK, "delete: %s", wcache_strerror(rc));
    if (rc == WCACHE_OK)
        REV++; /* a delete may need no memory; then it applied */
    rc = wcache_ingest_batch(C, b, REV + 1);
    ck_assert_wc(rc, WCACHE_ENOMEM);
    /* Its key and version too may come from the slabs' free memory. */
    rc = wcache_batch_put(b, "by", 2, "v", 1);
    ck_assert_msg(rc == WCACHE_ENOMEM || rc == WCACHE_OK, "batch put: %s", wcache_strerror(rc));
    ck_assert_uint_eq(wcache_batch_count(b), rc == WCACHE_OK ? 3 : 2);
    ck_assert_ok(wcache_view_begin(w, WCACHE_REV_LATEST));
    wcache_kv items[4];
    wcache_list_opts o = {.size = sizeof o};
    wcache_list_result r = {.size = sizeof r};
    rc = wcache_view_list(w, &o, items, 4, &r);
    ck_assert_msg(rc == WCACHE_OK || rc == WCACHE_ENOMEM, "list: %s", wcache_strerror(rc));
    wcache_view_end(w);
    ck_assert_ok(wcache_cache_compact(C, 5));
    tu_alloc_arm(&ST, -1);
    ST.fail_all = 0;
    char *after = dump(0);
    if (wcache_cache_revision(C) == 20) {
        /* Only the compaction happened. */
        ck_assert_int_eq(wcache_cache_compacted_revision(C), 5);
        ck_assert_str_eq(after + strcspn(after, "\n"), before + strcspn(before, "\n"));
    }
    free(after);
    free(before);
    ck_assert_ok(wcache_ingest_batch(C, b, REV + 1));
    REV++;
    ck_assert_ok(put_s("zz", "v", ++REV));
    wcache_batch_free(b);
    wcache_view_free(w);
}
END_TEST

/*
 * Ingest with watchers attached: a write refused for lack of memory must not
 * reach any watcher, and a write that succeeds must reach each watcher
 * exactly once, in order.  A watcher the library ends with ENOMEM (which
 * wcache_watch_next documents) is re-opened from the last revision it got
 * completely, as a Kubernetes client re-watches from its last resource
 * version; the history replay must then fill the gap exactly.
 */
typedef struct expect_ev {
    int64_t rev;
    int type;
    char key[16];
} expect_ev;

typedef struct twatch {
    const char *name;
    wcache_watch_opts opts;
    wcache_watch *w;
    expect_ev want[256];
    size_t nwant, got;
    int64_t base; /* revision before the first expected event */
    int reopened;
} twatch;

static void tw_open(twatch *t, int64_t from)
{
    t->opts.start_revision = from;
    ck_assert_ok(wcache_watch_open(C, &t->opts, &t->w));
}

static void tw_drain(twatch *t)
{
    wcache_watch_event evs[16];
    size_t n;
    wcache_code rc;
    for (;;) {
        rc = wcache_watch_next(t->w, evs, 16, &n);
        for (size_t i = 0; i < n; i++) {
            ck_assert_msg(t->got < t->nwant, "%s: an event no write made (%d@%lld)", t->name,
                          (int)evs[i].type, (long long)evs[i].revision);
            /* The order of keys inside one revision is not specified: find
             * the matching event of this revision and move it forward. */
            for (size_t q = t->got; q < t->nwant && t->want[q].rev == t->want[t->got].rev;
                 q++) {
                if (evs[i].kv.key_len == strlen(t->want[q].key) &&
                    memcmp(evs[i].kv.key, t->want[q].key, evs[i].kv.key_len) == 0) {
                    expect_ev tmp = t->want[q];
                    t->want[q] = t->want[t->got];
                    t->want[t->got] = tmp;
                    break;
                }
            }
            const expect_ev *e = &t->want[t->got];
            ck_assert_msg(evs[i].revision == e->rev && (int)evs[i].type == e->type &&
                              evs[i].kv.key_len == strlen(e->key) &&
                              memcmp(evs[i].kv.key, e->key, evs[i].kv.key_len) == 0,
                          "%s: event %zu is %d@%lld %.*s, want %d@%lld %s", t->name, t->got,
                          (int)evs[i].type, (long long)evs[i].revision, (int)evs[i].kv.key_len,
                          (const char *)evs[i].kv.key, e->type, (long long)e->rev, e->key);
            wcache_event_unref(evs[i].ev);
            t->got++;
        }
        if (rc != WCACHE_OK || n == 0)
            break;
    }
    if (rc == WCACHE_OK)
        return;
    ck_assert_msg(rc == WCACHE_ENOMEM, "%s ended with %s", t->name, wcache_strerror(rc));
    /* Resume after the last revision delivered completely. */
    while (t->got > 0 && t->got < t->nwant && t->want[t->got].rev == t->want[t->got - 1].rev)
        t->got--;
    int64_t from = t->got ? t->want[t->got - 1].rev : t->base;
    wcache_watch_close(t->w);
    tw_open(t, from);
    t->reopened++;
    tw_drain(t);
}

START_TEST(test_oom_with_watchers)
{
    fill(10);
    static twatch ta, tb;
    memset(&ta, 0, sizeof ta);
    memset(&tb, 0, sizeof tb);
    ta.name = "prefix watcher";
    ta.opts = (wcache_watch_opts){.size = sizeof ta.opts, .prefix = "w/", .prefix_len = 2};
    tb.name = "all-keys watcher";
    tb.opts = (wcache_watch_opts){.size = sizeof tb.opts, .prev_value = 1};
    ta.base = tb.base = REV;
    /* A refused open may leave shared watch tables allocated for the next
     * one (freed at close, which the teardown checks), so no per-call
     * block count here. */
    long n;
    for (n = 0; n < MAX_FAIL_POINTS; n++) {
        tu_alloc_arm(&ST, n);
        int rc = wcache_watch_open(C, &ta.opts, &ta.w);
        tu_alloc_arm(&ST, -1);
        if (rc == WCACHE_OK)
            break;
        ck_assert_wc(rc, WCACHE_ENOMEM);
    }
    tw_open(&tb, 0);

    enum { NOPS = 60 };
    static int live[12];
    memset(live, 0, sizeof live);
    wcache_batch *b = NULL;
    ck_assert_ok(wcache_batch_create(C, &b));
    for (int i = 0; i < NOPS; i++) {
        char k[16];
        int64_t rev = ++REV;
        int slot = i % 12;
        snprintf(k, sizeof k, "w/%02d", slot);
        int batch = i % 7 == 3;
        int del = !batch && live[slot] && i % 5 == 0;
        expect_ev e = {.rev = rev,
                       .type = del          ? WCACHE_EV_DELETED
                               : live[slot] ? WCACHE_EV_MODIFIED
                                            : WCACHE_EV_ADDED};
        snprintf(e.key, sizeof e.key, "%s", k);
        if (batch) {
            /* the w/ key and a base/ key at one revision */
            expect_ev e2 = {.rev = rev, .type = WCACHE_EV_MODIFIED};
            snprintf(e2.key, sizeof e2.key, "base/%04d", i % 10);
            wcache_batch_clear(b);
            ck_assert_ok(wcache_batch_put(b, k, strlen(k), "bv", 2));
            ck_assert_ok(wcache_batch_put(b, e2.key, strlen(e2.key), "bv", 2));
            CHAOS_WALK(wcache_ingest_batch(C, b, rev), "batch with watchers");
            tb.want[tb.nwant++] = e2;
        } else if (del) {
            CHAOS_WALK(wcache_ingest_delete(C, k, strlen(k), rev), "delete with watchers");
        } else {
            CHAOS_WALK(put_s(k, "v", rev), "put with watchers");
        }
        live[slot] = !del;
        ta.want[ta.nwant++] = e;
        tb.want[tb.nwant++] = e;
        tw_drain(&ta);
        tw_drain(&tb);
    }
    wcache_batch_free(b);
    ck_assert_uint_eq(ta.got, ta.nwant);
    ck_assert_uint_eq(tb.got, tb.nwant);
    if (getenv("WCACHE_VERBOSE"))
        fprintf(stderr, "watchers re-opened %d and %d times\n", ta.reopened, tb.reopened);
    wcache_watch_close(ta.w);
    wcache_watch_close(tb.w);
}
END_TEST

Suite *oom_suite(void)
{
    Suite *s = suite_create("oom");
    TCase *tc = tcase_create("chaos");
    tcase_add_checked_fixture(tc, oom_setup, oom_teardown);
    tcase_add_test(tc, test_oom_create_open);
    tcase_add_test(tc, test_oom_put_delete);
    tcase_add_test(tc, test_oom_batch);
    tcase_add_test(tc, test_oom_load);
    tcase_add_test(tc, test_oom_views);
    tcase_add_test(tc, test_oom_compact);
    tcase_add_test(tc, test_oom_auto_compact);
    tcase_add_test(tc, test_oom_everything_fails);
    tcase_add_test(tc, test_oom_with_watchers);
    tcase_set_timeout(tc, tu_timeout(300));
    suite_add_tcase(s, tc);
    return s;
}
