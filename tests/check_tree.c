/*
 * check_tree.c - the ordered index at depth, black-box.
 *
 * The model suite keeps its key space small so that collisions are common;
 * that leaves the B+tree one or two levels deep.  Here tens of thousands of
 * keys grow, shrink and churn (compaction removing deleted keys as it goes),
 * so leaves and inner nodes split, empty and disappear, and every so often
 * a whole LIST and a paged LIST must equal the set of live keys.
 */
#define _POSIX_C_SOURCE 200809L
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <watchcache.h>

#include "testutil.h"

static int key_of(int k, char *buf, size_t cap)
{
    return snprintf(buf, cap, "/k/%07d", k);
}

/* Whole LIST and pages of 97 against the live set; each item must be its
 * key's last put (its revision, also its value), as the leaves keep a copy
 * of every key's newest version that splits and removals carry along. */
static void check_list(wcache_view *v, const unsigned char *live, const int64_t *last, int nk,
                       long nlive, wcache_kv *items)
{
    wcache_list_result r = {.size = sizeof r};
    ck_assert_ok(wcache_view_list(v, NULL, items, (size_t)nk + 1, &r));
    ck_assert_int_eq((long)r.count, nlive);
    long j = 0;
    for (int k = 0; k < nk; k++) {
        if (!live[k])
            continue;
        char key[32];
        int kl = key_of(k, key, sizeof key);
        ck_assert_msg(items[j].key_len == (size_t)kl && !memcmp(items[j].key, key, (size_t)kl),
                      "item %ld is not key %d", j, k);
        char val[24];
        int vl = snprintf(val, sizeof val, "%lld", (long long)last[k]);
        ck_assert_int_eq(items[j].mod_revision, last[k]);
        ck_assert_msg(items[j].value_len == (size_t)vl &&
                          !memcmp(items[j].value, val, (size_t)vl),
                      "item %ld has not the value of revision %lld", j, (long long)last[k]);
        j++;
    }
    wcache_list_opts o = {.size = sizeof o};
    char tok[256];
    long seen = 0;
    for (;;) {
        wcache_list_result p = {.size = sizeof p};
        ck_assert_ok(wcache_view_list(v, &o, items, 97, &p));
        seen += (long)p.count;
        if (!p.more)
            break;
        ck_assert_uint_lt(p.token_len, sizeof tok);
        memcpy(tok, p.token, p.token_len + 1);
        o.token = tok;
        o.token_len = p.token_len;
    }
    ck_assert_int_eq(seen, nlive);
}

START_TEST(test_tree_grow_shrink_churn)
{
    int slow = getenv("WCACHE_VALGRIND") || getenv("WCACHE_TSAN");
    int nk = tu_long() ? 200000 : slow ? 6000 : 40000;
    long ops = (long)nk * 6;
    unsigned char *live = calloc((size_t)nk, 1);
    int64_t *last = calloc((size_t)nk, sizeof *last);
    wcache_kv *items = malloc(sizeof *items * ((size_t)nk + 1));
    ck_assert(live && last && items);
    wcache_cache *c;
    ck_assert_ok(wcache_cache_create(&c, NULL));
    ck_assert_ok(wcache_cache_set_param(c, WCACHE_P_RETAIN_REVISIONS, 5));
    ck_assert_ok(wcache_cache_set_param(c, WCACHE_P_RETAIN_SECONDS, 0));
    ck_assert_ok(wcache_cache_open(c));
    wcache_view *v;
    ck_assert_ok(wcache_view_create(c, &v));
    tu_rng rng = {tu_seed(0x74726565)};
    int64_t rev = 0;
    long nlive = 0;
    for (long op = 0; op < ops; op++) {
        int k = (int)tu_below(&rng, (uint64_t)nk);
        char key[32];
        int kl = key_of(k, key, sizeof key);
        int phase = (int)(op / (ops / 6)) % 3; /* grow, shrink, churn */
        uint64_t d = tu_below(&rng, 10);
        int del = phase == 0 ? d < 1 : phase == 1 ? d < 8 : d < 5;
        if (del && live[k]) {
            ck_assert_ok(wcache_ingest_delete(c, key, (size_t)kl, ++rev));
            live[k] = 0;
            nlive--;
        } else if (!del) {
            char val[24];
            int vl = snprintf(val, sizeof val, "%lld", (long long)++rev);
            ck_assert_ok(wcache_ingest_put(c, key, (size_t)kl, val, (size_t)vl, rev));
            last[k] = rev;
            nlive += !live[k];
            live[k] = 1;
        }
        if (op % (ops / 12) == ops / 12 - 1) {
            ck_assert_ok(wcache_view_begin(v, WCACHE_REV_LATEST));
            check_list(v, live, last, nk, nlive, items);
            wcache_view_end(v);
            wcache_stat st = {.size = sizeof st};
            ck_assert_ok(wcache_cache_stat(c, &st));
            /* compaction really removes deleted keys: thousands were
             * deleted, and only the window's versions and a small batch
             * waiting for deferred freeing come on top of the live ones */
            ck_assert_uint_le(st.versions, (uint64_t)nlive + 256);
        }
    }
    wcache_view_free(v);
    wcache_cache_close(c);
    free(live);
    free(last);
    free(items);
}
END_TEST

Suite *tree_suite(void)
{
    Suite *s = suite_create("tree");
    TCase *tc = tcase_create("depth");
    tcase_add_test(tc, test_tree_grow_shrink_churn);
    tcase_set_timeout(tc, tu_timeout(240));
    suite_add_tcase(s, tc);
    return s;
}
